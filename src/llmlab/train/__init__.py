"""Training: objectives, optimizer and schedule, checkpoints with exact resume, the loop."""
