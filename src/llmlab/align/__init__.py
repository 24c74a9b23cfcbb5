"""Alignment: preference losses (DPO and friends), reward models, constitutional data, RL from rewards.

Components only: plain functions of log-probabilities and small helpers that run a model; the training
runs are recipes (`llmlab.recipes`).
"""
