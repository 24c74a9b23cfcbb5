"""Models: one decoder (`Transformer`) configured by `ModelConfig`; families are presets. Also the KV cache,
HF and GGUF weight files, and module surgery (`swap.py`) for the stages that change a model in place."""

from llmlab.models.config import PRESETS, ModelConfig, get_preset
from llmlab.models.gpt import Transformer
from llmlab.models.kv_cache import KVCache

__all__ = ["PRESETS", "KVCache", "ModelConfig", "Transformer", "get_preset"]
