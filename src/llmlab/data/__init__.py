"""Data: read raw text, split it, tokenise it into binary shards, sample training windows; SFT and labelled
datasets; the built-in task set."""
