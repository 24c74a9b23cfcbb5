"""Evaluation: held-out bits per byte and compressor baselines (more tasks come with the eval stage)."""
