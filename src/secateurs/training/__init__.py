"""Training and fine-tuning: the `Trainer` loop with callbacks and checkpoints, optimizers and
schedules, batch-norm re-estimation, mask consistency across ranks, and flow-based stopping.
"""
