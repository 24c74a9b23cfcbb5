"""Shared plumbing: errors, logging, constants, atomic files, checkpoint folders, devices, measurement.

The bottom layer: it imports nothing else from llmlab.
"""
