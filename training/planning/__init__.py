"""Planning a run before it starts: what it costs, whether it fits, what loss it reaches, whether it is ready.

    plan       tokens, FLOPs, GPU-days, dollars and days (python -m training.plan)
    memory     per-GPU memory and the largest micro-batch (python -m training.memory)
    sweep      small runs, a fitted power law, an extrapolation (python -m training.sweep)
    preflight  a checklist of a config before launch (python -m training.preflight)
"""
