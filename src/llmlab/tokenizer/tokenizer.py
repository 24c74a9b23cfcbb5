"""`Tokenizer`: a byte-level BPE vocabulary with training, encoding, decoding, padding and chat.

The data model is the same for tokenizers llmlab trains and for imported ones:

- `tokens[i]`: the bytes of id i (special tokens hold their UTF-8 text),
- `merges`: (a, b, new) id triples in priority order; BPE applies the earliest first,
- `pattern`: the regex that cuts text into chunks before BPE,
- `special_tokens`: name -> id, matched in text only when the caller allows it.

Encoding runs on tiktoken (Rust), built from the merges: tiktoken's rank of a
token is its merge priority, and ids are translated back when the model's ids
are not in merge order (Hugging Face and GGUF vocabularies). `encode_reference`
is the readable pure-Python encoder the fast path is tested against.

File formats other than llmlab's own live in `formats.py`; the BPE algorithm in
`bpe.py`; chat templates in `chat.py`.
"""

import base64
import os
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Literal

import numpy as np
import regex
import tiktoken

from llmlab.common import log
from llmlab.common.errors import UserError
from llmlab.common.io import write_json_atomic
from llmlab.tokenizer import bpe, chat
from llmlab.tokenizer.patterns import resolve_pattern
from llmlab.tokenizer.pretokenize import count_chunks, expand_inputs

FORMAT = "llmlab-bpe"
VERSION = 1
AllowedSpecial = Literal["none", "all"] | set[str]


class Tokenizer:
    def __init__(
        self,
        tokens: list[bytes],
        merges: list[tuple[int, int, int]],
        pattern: str,
        special_tokens: dict[str, int] | None = None,
        eos_id: int | None = None,
        bos_id: int | None = None,
        chat_template: str | None = None,
        name: str = "llmlab",
    ):
        self.tokens = tokens
        self.merges = merges
        self.pattern = pattern
        self.special_tokens = dict(special_tokens or {})
        self.eos_id = eos_id
        self.bos_id = bos_id
        self.chat_template = chat_template
        self.name = name
        self._compiled = regex.compile(pattern)
        self._ranks = {(a, b): (r, new) for r, (a, b, new) in enumerate(merges)}
        self._byte_ids = self._find_byte_ids()
        self._cache: dict[bytes, list[int]] = {}
        self._enc, self._to_id = self._build_tiktoken()

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        files_or_text: str | Path | Sequence[str | Path],
        vocab_size: int,
        pattern: str = "gpt4",
        special_tokens: Sequence[str] = ("<|endoftext|>",),
        progress: bool = False,
        trainer: Literal["fast", "reference"] = "fast",
        num_workers: int = 0,
    ) -> "Tokenizer":
        """Train byte-level BPE. `files_or_text`: a string that is not an existing path is the
        text itself; a path, or a list of paths (files or folders), is read from disk, streamed.
        Special tokens take the last ids; `vocab_size` counts them."""
        special_tokens = list(special_tokens)
        if len(set(special_tokens)) != len(special_tokens) or not all(special_tokens):
            raise UserError(f"special tokens {special_tokens}: must be distinct, non-empty strings")
        if vocab_size < 256 + len(special_tokens):
            raise UserError(
                f"vocab size {vocab_size} is too small: need at least 256 bytes + {len(special_tokens)} "
                f"special token(s) = {256 + len(special_tokens)}"
            )
        regex_str = resolve_pattern(pattern)
        if isinstance(files_or_text, str) and not os.path.exists(files_or_text):
            texts, files = [files_or_text], []
        else:
            items = [files_or_text] if isinstance(files_or_text, str | Path) else list(files_or_text)
            texts, files = [], expand_inputs(items)
        chunks = count_chunks(texts, files, regex_str, progress=progress, num_workers=num_workers)
        if not chunks:
            where = ", ".join(str(f) for f in files) or "the text given"
            raise UserError(f"{where}: no text to train on; pass a non-empty corpus")
        num_merges = vocab_size - 256 - len(special_tokens)
        if trainer == "fast":
            pairs = bpe.train_fast(chunks, num_merges, progress=progress)
        else:
            pairs = bpe.train_reference(chunks, num_merges)
        if len(pairs) < num_merges:
            log.info(f"tokenizer: corpus ran out of pairs after {len(pairs)} merges; vocab is smaller")
        tokens = [bytes([i]) for i in range(256)]
        merges = []
        for a, b in pairs:
            merges.append((a, b, len(tokens)))
            tokens.append(tokens[a] + tokens[b])
        specials = {s: len(tokens) + j for j, s in enumerate(special_tokens)}
        tokens += [s.encode("utf-8") for s in special_tokens]
        return cls(tokens, merges, regex_str, specials, eos_id=specials.get("<|endoftext|>"),
                   chat_template=chat.CHATML)

    def _find_byte_ids(self) -> list[int | None]:
        """Id of each single byte 0..255; None where the vocabulary lacks that byte (SmolLM2 lacks
        21 bytes that never occur in its data). Like HF tokenizers and llama.cpp, encoding drops
        such bytes."""
        special = set(self.special_tokens.values())
        found: dict[bytes, int] = {}
        for i, t in enumerate(self.tokens):
            if len(t) == 1 and i not in special:
                found.setdefault(t, i)
        return [found.get(bytes([b])) for b in range(256)]

    def _build_tiktoken(self) -> tuple[tiktoken.Encoding | None, np.ndarray | None]:
        """A tiktoken Encoding whose ranks follow merge priority, plus rank -> id when ids differ.

        tiktoken merges the adjacent pair whose joined bytes have the lowest rank, so a token's
        rank must be its merge's priority. When merge results have increasing ids (llmlab, GPT-2,
        tiktoken files) the ids are the ranks; otherwise ranks are 256 + priority and a lookup
        table turns them back into ids. Vocabularies tiktoken cannot express (two merges making
        the same bytes) get no fast path: `encode` then uses the reference encoder.
        """
        # A byte the vocabulary lacks still needs a tiktoken rank; it maps to id -1 and
        # `_translate` sends such texts to the reference encoder, which drops the byte.
        missing = [b for b, i in enumerate(self._byte_ids) if i is None]
        byte_ids = [i for i in self._byte_ids if i is not None]
        ordered = list(byte_ids)
        seen = {self.tokens[i] for i in ordered}
        for a, b, new in self.merges:
            t = self.tokens[new]
            if t in seen or t != self.tokens[a] + self.tokens[b]:
                log.info(f"tokenizer {self.name}: merges tiktoken cannot express; using the slow encoder")
                return None, None
            seen.add(t)
            ordered.append(new)
        results = [new for _, _, new in self.merges]
        in_order = all(x < y for x, y in pairwise(results)) and (
            not results or max(byte_ids) < results[0]
        )
        if in_order and not missing:
            ranks = {self.tokens[i]: i for i in ordered}
            specials = dict(self.special_tokens)
            to_id = None
        else:
            ranks = {self.tokens[i]: r for r, i in enumerate(ordered)}
            ranks.update({bytes([b]): len(ordered) + k for k, b in enumerate(missing)})
            specials = {s: len(ranks) + j for j, s in enumerate(self.special_tokens)}
            to_id = np.array(ordered + [-1] * len(missing) + list(self.special_tokens.values()))
        enc = tiktoken.Encoding(f"llmlab-{id(self)}", pat_str=self.pattern, mergeable_ranks=ranks,
                                special_tokens=specials)
        return enc, to_id

    # ---- encoding -----------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    @property
    def pad_id(self) -> int:
        """`<|pad|>` if the vocabulary has it, else the eos token, else 0."""
        pad = self.special_tokens.get("<|pad|>", self.eos_id)
        return 0 if pad is None else pad

    def _allowed(self, allowed_special: AllowedSpecial) -> set[str]:
        if allowed_special == "none":
            return set()
        if allowed_special == "all":
            return set(self.special_tokens)
        unknown = set(allowed_special) - set(self.special_tokens)
        if unknown:
            raise UserError(
                f"unknown special token(s) {sorted(unknown)}; this tokenizer has "
                f"{sorted(self.special_tokens)}"
            )
        return set(allowed_special)

    def encode(self, text: str, allowed_special: AllowedSpecial = "none") -> list[int]:
        """Text -> ids. Special-token strings in `text` are plain text unless allowed
        (`"all"` or a set of names): safe for untrusted text by default."""
        allowed = self._allowed(allowed_special)
        if self._enc is None:
            return self.encode_reference(text, allowed)
        if allowed:
            ids = self._enc.encode(text, allowed_special=allowed, disallowed_special=())
        else:
            ids = self._enc.encode_ordinary(text)
        return self._translate(ids, text, allowed)

    def _translate(self, ranks: list[int], text: str, allowed: set[str]) -> list[int]:
        """tiktoken ranks -> model ids (identity for llmlab's own vocabularies)."""
        if self._to_id is None:
            return ranks
        ids = self._to_id[ranks]
        if (ids < 0).any():  # a byte the vocabulary lacks: let the reference encoder drop it
            return self.encode_reference(text, allowed)
        return ids.tolist()

    def encode_batch(
        self, texts: list[str], allowed_special: AllowedSpecial = "none", num_threads: int = 0
    ) -> list[list[int]]:
        """Encode many texts on `num_threads` threads (0 = every core); tiktoken releases the GIL."""
        allowed = self._allowed(allowed_special)
        if self._enc is None:
            return [self.encode_reference(t, allowed) for t in texts]
        threads = num_threads or os.cpu_count() or 1
        if allowed:
            out = self._enc.encode_batch(texts, num_threads=threads, allowed_special=allowed,
                                         disallowed_special=())
        else:
            out = self._enc.encode_ordinary_batch(texts, num_threads=threads)
        if self._to_id is None:
            return out
        return [self._translate(r, t, allowed) for r, t in zip(out, texts, strict=True)]

    def encode_reference(self, text: str, allowed_special: AllowedSpecial = "none") -> list[int]:
        """The readable encoder: split off allowed special tokens, split the rest with the
        pattern, run `bpe.encode_chunk` on each chunk. Same ids as `encode`, much slower."""
        allowed = self._allowed(allowed_special)
        parts = [text]
        if allowed:
            special_re = "(" + "|".join(regex.escape(s) for s in sorted(allowed, key=len, reverse=True)) + ")"
            parts = regex.split(special_re, text)
        ids: list[int] = []
        for k, part in enumerate(parts):
            if k % 2 == 1:
                ids.append(self.special_tokens[part])
                continue
            for chunk in self._compiled.findall(part):
                b = chunk.encode("utf-8")
                if b not in self._cache:
                    self._cache[b] = bpe.encode_chunk(
                        [self._byte_ids[x] for x in b if self._byte_ids[x] is not None], self._ranks)
                ids.extend(self._cache[b])
        return ids

    # ---- decoding -----------------------------------------------------------------------

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        try:
            return b"".join([self.tokens[i] for i in ids])
        except (IndexError, TypeError):
            n = len(self.tokens)
            bad = next(i for i in ids if not isinstance(i, int | np.integer) or not 0 <= i < n)
            raise UserError(f"token id {bad!r} is out of range for a vocabulary of {n}") from None

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text; bytes that are not valid UTF-8 become U+FFFD, so any ids in range decode."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def id_to_token_bytes(self, i: int) -> bytes:
        return self.tokens[i]

    # ---- batches and chat ---------------------------------------------------------------

    def pad(
        self,
        batch: list[list[int]],
        side: Literal["right", "left"] = "right",
        max_length: int | None = None,
        truncation_side: Literal["right", "left"] = "right",
        pad_id: int | None = None,
        return_tensors: bool = True,
    ):
        """Pad (and truncate to `max_length`) a batch of id lists to one length.

        Returns `(ids, attention_mask)`, both (B, T): LongTensors, or lists when
        `return_tensors=False`. The mask is 1 on real tokens, 0 on padding. Left padding
        is what batched generation wants (the last column is every row's last token).

        >>> Tokenizer.train("ab", 258).pad([[1, 2, 3], [4]], return_tensors=False, pad_id=0)
        ([[1, 2, 3], [4, 0, 0]], [[1, 1, 1], [1, 0, 0]])
        """
        if side not in ("right", "left") or truncation_side not in ("right", "left"):
            raise UserError(f"pad: side and truncation_side must be 'right' or 'left', got {side!r}, "
                            f"{truncation_side!r}")
        pad_id = self.pad_id if pad_id is None else pad_id
        if max_length is not None:
            batch = [ids[:max_length] if truncation_side == "right" else ids[len(ids) - max_length:]
                     if len(ids) > max_length else ids for ids in batch]
        T = max_length if max_length is not None else max((len(ids) for ids in batch), default=0)
        out, mask = [], []
        for ids in batch:
            fill = T - len(ids)
            if side == "right":
                out.append(list(ids) + [pad_id] * fill)
                mask.append([1] * len(ids) + [0] * fill)
            else:
                out.append([pad_id] * fill + list(ids))
                mask.append([0] * fill + [1] * len(ids))
        if not return_tensors:
            return out, mask
        import torch

        return torch.tensor(out, dtype=torch.long), torch.tensor(mask, dtype=torch.long)

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        """Messages -> the prompt string, as transformers' `apply_chat_template(tokenize=False)`."""
        if not self.chat_template:
            raise UserError(f"tokenizer {self.name}: has no chat template")
        names = {"eos_token": self.eos_id, "bos_token": self.bos_id}
        variables = {k: self.tokens[v].decode("utf-8", "replace") for k, v in names.items() if v is not None}
        return chat.render(self.chat_template, messages, add_generation_prompt, **variables)

    # ---- llmlab's own file --------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "pattern": self.pattern,
            "special_tokens": self.special_tokens,
            "eos_id": self.eos_id,
            "bos_id": self.bos_id,
            "chat_template": self.chat_template,
            "tokens": [base64.b64encode(t).decode("ascii") for t in self.tokens],
            "merges": [list(m) for m in self.merges],
        }

    @classmethod
    def from_dict(cls, d: dict, name: str = "llmlab") -> "Tokenizer":
        if d.get("format") != FORMAT or d.get("version") != VERSION:
            raise UserError(f"{name}: not an llmlab tokenizer of version {VERSION}; re-save it with llmlab")
        try:
            tokens = [base64.b64decode(t, validate=True) for t in d["tokens"]]
            merges = [(int(a), int(b), int(c)) for a, b, c in d["merges"]]
            specials = {str(k): int(v) for k, v in d["special_tokens"].items()}
            ids = [x for m in merges for x in m] + list(specials.values())
            if any(not 0 <= i < len(tokens) for i in ids):
                raise ValueError("an id is out of range")
            return cls(tokens, merges, d["pattern"], specials, d.get("eos_id"), d.get("bos_id"),
                       d.get("chat_template"), name=name)
        except (KeyError, ValueError, TypeError, regex.error) as e:
            raise UserError(f"{name}: corrupt llmlab tokenizer file ({e!r}); re-train or "
                            "re-save it") from None

    def save(self, path: str | Path) -> None:
        """Write llmlab's JSON format (atomically)."""
        write_json_atomic(path, self.to_dict())

    def save_hf(self, directory: str | Path) -> None:
        """Write `tokenizer.json` + `tokenizer_config.json` that Hugging Face `tokenizers` loads."""
        from llmlab.tokenizer.formats import save_hf

        save_hf(self, directory)

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        """Load llmlab's file, a HF tokenizer.json (or its folder), a GGUF file, a folder with
        vocab.json + merges.txt, or a tiktoken rank file."""
        from llmlab.tokenizer.formats import load_any

        return load_any(path)

    def __repr__(self) -> str:
        return (f"Tokenizer({self.name!r}, vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"special_tokens={len(self.special_tokens)})")
