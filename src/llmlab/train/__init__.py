"""Training: objectives (losses), AdamW and its schedule, the loop, and pretraining on shards.

Checkpoint folders are `llmlab.common.checkpoint`'s; held-out evaluation is `llmlab.eval`'s.
"""
