"""Evaluation: held-out loss, bits per byte, exact match by generation, classification accuracy.

It sits below training so that training can call it; nothing here trains.
"""
