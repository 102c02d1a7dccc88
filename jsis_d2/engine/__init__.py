"""Training engine: Trainer (DefaultTrainer with JSIS-Net build_* overrides) and hooks."""
