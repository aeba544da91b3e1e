"""The data a run trains on: sources pinned to a version (sources), one global sample order (order),
remote shards cached on local disk (cache), a rank's streamed batches (loader), instruction data
(finetune, reading JSONL with jsonl) and a config's data resolved for the trainer and the tools (resolve)."""
