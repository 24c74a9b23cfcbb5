"""llmlab: LLM engineering from raw text to a served model, written from scratch on PyTorch."""

__version__ = "0.1.0"
