"""llmlab: LLM engineering from raw text to a served model, written from scratch on PyTorch."""

__version__ = "0.1.0"

# `llmlab.load` and `llmlab.save_pretrained` are imported on first use, so `import llmlab` stays free of torch
_LAZY = {"load": "llmlab.loading", "save_pretrained": "llmlab.loading"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'llmlab' has no attribute {name!r}")
