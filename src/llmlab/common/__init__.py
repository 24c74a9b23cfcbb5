"""Shared plumbing: errors, logging, atomic files, checkpoints, devices."""
