"""Data: read raw text, split it, tokenise it into binary shards, and sample training windows."""
