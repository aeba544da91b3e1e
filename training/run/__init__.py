"""What keeps a training run going and on record: checkpoints, the hang watchdog, the journal, metrics
and the sample ledger."""
