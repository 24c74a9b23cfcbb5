"""`Pretrained`: a loaded model with its tokenizer, ready to generate, chat or classify.

`llmlab.load` returns one of these whatever made the model (a GGUF file, a
Hugging Face folder, pretraining, any fine-tuning method). It holds the model,
the tokenizer and where they came from; text goes in and out through the
tokenizer, and the token-level work is `llmlab.infer.generate`'s. A model with
a classification head also knows its class names and offers `classify`.
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from llmlab.common.constants import CHAT_ROLES
from llmlab.common.errors import UserError
from llmlab.infer.classify import class_probabilities


@dataclass
class Pretrained:
    """A loaded model: `.model`, `.tokenizer`, `.generate`, `.stream`, `.chat_ids`, `.classify`."""

    model: torch.nn.Module  # a Transformer, possibly with adapters, quantised layers or a head swapped in
    tokenizer: Any  # llmlab.tokenizer.Tokenizer, or None when the source had none
    source: str
    classes: list[str] | None = None  # class names, for a model with a classification head

    @property
    def config(self):
        return self.model.config

    def encode(self, text: str) -> list[int]:
        return self._tokenizer().encode(text, allowed_special="all")

    def _tokenizer(self):
        if self.tokenizer is None:
            raise UserError(f"{self.source}: has no tokenizer; pass token ids instead of text")
        return self.tokenizer

    def stream(self, ids_or_text: str | list[int] | torch.Tensor, max_new_tokens: int = 128, *,
               text: bool | None = None, stop: list[str] | None = None, **kwargs) -> Iterator[str] | Iterator[int]:
        """Yield text pieces (for text in, or text=True) or token ids; stop strings end text, unsaid.

        Keywords as in `llmlab.infer.generate.stream`; eos_id defaults to the tokenizer's.
        """
        from llmlab.infer.generate import stream
        from llmlab.infer.text import stream_text

        if self.classes is not None:
            raise UserError(f"{self.source}: has a classification head, not a language-model head; use classify")
        outputs = getattr(getattr(self.model, "lm_head", None), "out_features", None)
        if outputs is not None and outputs < self.model.config.vocab_size:  # a reward model's scalar head
            raise UserError(f"{self.source}: its head gives {outputs} output(s), not the vocabulary; it scores "
                            "text (a reward model) and cannot generate")
        if self.tokenizer is not None:
            kwargs.setdefault("eos_id", self.tokenizer.eos_id)
        ids = self.encode(ids_or_text) if isinstance(ids_or_text, str) else ids_or_text
        tokens = stream(self.model, ids, max_new_tokens, **kwargs)
        if text if text is not None else isinstance(ids_or_text, str):
            return stream_text(tokens, self._tokenizer(), stop=stop or [])
        if stop:
            raise UserError("stop strings need text output; pass text=True or stop_ids instead")
        return tokens

    def generate(self, ids_or_text: str | list[int] | torch.Tensor, max_new_tokens: int = 128, **kwargs
                 ) -> str | list[int]:
        """The continuation: text for text, new token ids for ids (temperature=0 is greedy).

        Keywords as in `stream`: min_new_tokens, temperature, top_k, top_p, min_p, repetition_penalty,
        seed, eos_id, stop_ids, stop (strings), truncate, text.
        """
        text = kwargs.pop("text", None)
        text = isinstance(ids_or_text, str) if text is None else text
        pieces = list(self.stream(ids_or_text, max_new_tokens, text=text, **kwargs))
        return "".join(pieces) if text else pieces

    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of a conversation rendered with the model's own chat template, ready for its reply."""
        if self.tokenizer is None or not getattr(self.tokenizer, "chat_template", None):
            raise UserError(f"{self.source}: has no chat template; use `llmlab generate` with a plain prompt")
        for i, m in enumerate(messages):
            if m.get("role") not in CHAT_ROLES:
                raise UserError(f"message {i}: unknown chat role {m.get('role')!r}; use one of {', '.join(CHAT_ROLES)}")
        return self.encode(self.tokenizer.render(messages, add_generation_prompt=True))

    def classify(self, texts: list[str], batch_size: int = 16) -> tuple[list[str], torch.Tensor]:
        """(predicted label per text, class probabilities (N, K) in the order of `.classes`)."""
        if self.classes is None:
            raise UserError(f"{self.source}: has no classification head; train one with `llmlab finetune classify`")
        if isinstance(texts, str):
            texts = [texts]
        probs = class_probabilities(self.model, self._tokenizer(), list(texts), self.model.config.seq_len,
                                    batch_size)
        return [self.classes[i] for i in probs.argmax(-1).tolist()], probs

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write the Hugging Face format (config.json, model.safetensors, tokenizer)."""
        from llmlab.models.pretrained import save_pretrained

        save_pretrained(self.model, directory, self.tokenizer)
