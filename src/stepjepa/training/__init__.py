"""Fine-tuning: the ``train`` command, its config, the Trainer subclass and its arguments, the run directory (outputs,
checkpoints, the lock)."""
