"""Training: the loop, the optimizer and schedule, checkpoints, data batches, distributed setup."""
