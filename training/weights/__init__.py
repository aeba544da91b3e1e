"""Model weights on disk: reading training checkpoints, the consolidated folder, and Hugging Face MPT.

    layout             the consolidated folder (config.json, model.safetensors, tokenizer.json), written and read
    checkpoint_reader  a sharded training checkpoint's model weights, one tensor at a time
    consolidate        a training checkpoint -> a consolidated folder (python -m training.consolidate)
    inference          load_model and open_weights: either kind of checkpoint, for generation and evaluation
    hf_convert         our MPT <-> transformers' MptForCausalLM (names, config, what it cannot express)
    import_hf          a Hugging Face MPT folder -> a consolidated folder (python -m training.import_hf)
    export_hf          a checkpoint -> a Hugging Face MPT folder (python -m training.export_hf)
    init_from          a run's starting weights (init_from: PATH), read into the sharded model
"""
