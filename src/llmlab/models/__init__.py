"""Models: one decoder (`Transformer`) configured by `ModelConfig`; families are presets."""

from llmlab.models.config import PRESETS, ModelConfig, get_preset
from llmlab.models.gpt import Transformer
from llmlab.models.kv_cache import KVCache

__all__ = ["PRESETS", "KVCache", "ModelConfig", "Transformer", "get_preset"]
