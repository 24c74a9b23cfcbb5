"""WordPiece, as BERT tokenises: normalise, split on spaces and punctuation, then greedy longest-match pieces.

The steps are those of Hugging Face `tokenizers` (BertNormalizer, BertPreTokenizer,
WordPiece model, TemplateProcessing, WordPiece decoder), so ids equal theirs:

1. special tokens written in the text ([CLS], [MASK]) are cut out first, when allowed;
2. `normalize`: drop NUL, U+FFFD and control characters, turn whitespace into spaces, put spaces
   around CJK ideographs, strip accents (NFD, drop non-spacing marks) and lower-case, as configured;
3. `pre_split`: split on whitespace, and make every punctuation character a word of its own;
4. `wordpiece`: each word becomes the longest vocabulary prefix, then the longest `##`-continuation,
   and so on; a word with no complete cover, or longer than `max_input_chars_per_word`, is [UNK];
5. [CLS] ... [SEP] around the ids (`add_special_tokens`).

References: Wu et al. 2016 (WordPiece in GNMT), Devlin et al. 2018 (BERT, basic tokenisation).
This file reads and writes only the WordPiece flavour of `tokenizer.json`; it does not train a vocabulary.
Byte-level BPE is `tokenizer.py`; the format dispatch is `formats.load_any`.
"""

import json
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import regex

from llmlab.common.errors import UserError
from llmlab.common.io import write_json_atomic

FORMAT = "llmlab-wordpiece"
VERSION = 1
# Rust's `char::is_whitespace` (Unicode White_Space), which `tokenizers` uses; Python's isspace() also counts
# U+001C..U+001F, which BERT treats as control characters and drops.
WHITESPACE = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000" +
                       "".join(chr(c) for c in range(0x2000, 0x200B)))
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
              (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def is_control(c: str) -> bool:
    """Unicode "other" (Cc, Cf, Cn, Co, Cs) except tab, newline and carriage return, which count as spaces."""
    return c not in "\t\n\r" and unicodedata.category(c).startswith("C")


def is_cjk(c: str) -> bool:
    cp = ord(c)
    return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


def is_punctuation(c: str) -> bool:
    """ASCII punctuation (which includes symbols such as $ + < = > ^ ` | ~) or Unicode category P*."""
    return (c.isascii() and not c.isalnum() and c.isprintable() and c != " ") or \
        unicodedata.category(c).startswith("P")


def normalize(text: str, lowercase: bool = True, strip_accents: bool | None = None, clean_text: bool = True,
              handle_chinese_chars: bool = True) -> str:
    """BertNormalizer. strip_accents None follows lowercase, as in BERT's uncased models.

    >>> normalize("Héllo\\tWORLD 你好")
    'hello world  你  好 '
    """
    if clean_text:
        text = "".join(" " if c in WHITESPACE else c for c in text
                       if c != "\x00" and c != "\ufffd" and not is_control(c))
    if handle_chinese_chars:
        text = "".join(f" {c} " if is_cjk(c) else c for c in text)
    if lowercase if strip_accents is None else strip_accents:
        text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    if lowercase:
        text = "".join(c.lower() for c in text)  # per character, as Rust's char::to_lowercase (no final sigma)
    return text


def pre_split(text: str) -> list[str]:
    """BertPreTokenizer: words between whitespace, each punctuation character a word of its own.

    >>> pre_split("don't stop-me now!")
    ['don', "'", 't', 'stop', '-', 'me', 'now', '!']
    """
    words: list[str] = []
    current: list[str] = []
    for c in text:
        if c in WHITESPACE or is_punctuation(c):
            if current:
                words.append("".join(current))
                current = []
            if c not in WHITESPACE:
                words.append(c)
        else:
            current.append(c)
    if current:
        words.append("".join(current))
    return words


def wordpiece(word: str, vocab: dict[str, int], unk_id: int, prefix: str = "##", max_chars: int = 100) -> list[int]:
    """Greedy longest-match-first pieces of one word; [UNK] for the whole word when no cover exists.

    >>> wordpiece("unaffable", {"un": 0, "##aff": 1, "##able": 2, "[UNK]": 3}, unk_id=3)
    [0, 1, 2]
    """
    if len(word) > max_chars:
        return [unk_id]
    ids, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else prefix + word[start:end]
            if piece in vocab:
                ids.append(vocab[piece])
                break
            end -= 1
        else:
            return [unk_id]
        start = end
    return ids


class WordPieceTokenizer:
    """A BERT vocabulary with its normaliser settings; the same surface as llmlab's BPE `Tokenizer`."""

    def __init__(self, vocab: dict[str, int], special_tokens: dict[str, int], unk_token: str = "[UNK]",
                 cls_token: str | None = "[CLS]", sep_token: str | None = "[SEP]", pad_token: str = "[PAD]",
                 mask_token: str | None = "[MASK]", prefix: str = "##", max_input_chars_per_word: int = 100,
                 lowercase: bool = True, strip_accents: bool | None = None, clean_text: bool = True,
                 handle_chinese_chars: bool = True, name: str = "wordpiece"):
        self.vocab = dict(vocab)
        self.special_tokens = dict(special_tokens)
        for token in (unk_token, cls_token, sep_token, pad_token, mask_token):
            if token is not None and token not in self.vocab:
                raise UserError(f"{name}: special token {token!r} is not in the vocabulary")
        self.unk_token, self.cls_token, self.sep_token = unk_token, cls_token, sep_token
        self.pad_token, self.mask_token = pad_token, mask_token
        self.prefix, self.max_input_chars_per_word = prefix, max_input_chars_per_word
        self.norm = dict(lowercase=lowercase, strip_accents=strip_accents, clean_text=clean_text,
                         handle_chinese_chars=handle_chinese_chars)
        self.name = name
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        self.eos_id = self.vocab.get(sep_token) if sep_token else None  # BERT ends a sequence with [SEP]
        self.bos_id = self.vocab.get(cls_token) if cls_token else None
        self.chat_template = None
        self._cache: dict[str, list[int]] = {}

    # ---- ids of the special tokens --------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return max(self.vocab.values()) + 1

    @property
    def pad_id(self) -> int:
        return self.vocab[self.pad_token]

    @property
    def unk_id(self) -> int:
        return self.vocab[self.unk_token]

    @property
    def cls_id(self) -> int | None:
        return self.bos_id

    @property
    def sep_id(self) -> int | None:
        return self.eos_id

    @property
    def mask_id(self) -> int | None:
        return self.vocab.get(self.mask_token) if self.mask_token else None

    # ---- encoding -------------------------------------------------------------------------

    def _allowed(self, allowed_special) -> list[str]:
        if allowed_special == "none":
            return []
        names = list(self.special_tokens) if allowed_special == "all" else list(allowed_special)
        unknown = sorted(set(names) - set(self.special_tokens))
        if unknown:
            raise UserError(f"unknown special token(s) {unknown}; this tokenizer has {sorted(self.special_tokens)}")
        return names

    def encode(self, text: str, allowed_special="none", add_special_tokens: bool = True) -> list[int]:
        """Text -> ids, with [CLS] ... [SEP] around them unless add_special_tokens=False. Special-token strings
        in `text` are plain text unless allowed (`"all"`, as `tokenizers` does, or a set of names)."""
        allowed = self._allowed(allowed_special)
        parts = [text]
        if allowed:
            parts = regex.split("(" + "|".join(regex.escape(s) for s in sorted(allowed, key=len, reverse=True))
                                + ")", text)
        ids: list[int] = []
        for k, part in enumerate(parts):
            if k % 2 == 1:
                ids.append(self.special_tokens[part])
                continue
            for word in pre_split(normalize(part, **self.norm)):
                if word not in self._cache:
                    self._cache[word] = wordpiece(word, self.vocab, self.unk_id, self.prefix,
                                                  self.max_input_chars_per_word)
                ids.extend(self._cache[word])
        return self.add_special(ids) if add_special_tokens else ids

    def add_special(self, ids: list[int]) -> list[int]:
        """[CLS] ids [SEP], as BERT's post-processor (either end left out when the tokenizer has none)."""
        head = [self.cls_id] if self.cls_id is not None else []
        tail = [self.sep_id] if self.sep_id is not None else []
        return head + list(ids) + tail

    def encode_batch(self, texts: list[str], allowed_special="none", num_threads: int = 0,
                     add_special_tokens: bool = True) -> list[list[int]]:
        return [self.encode(t, allowed_special, add_special_tokens) for t in texts]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Ids -> text as `tokenizers`' WordPiece decoder: `##` pieces join the previous word, spaces
        elsewhere, then the English clean-ups (" ." -> ".", " n't" -> "n't", ...)."""
        special = set(self.special_tokens.values())
        pieces = []
        for i in ids:
            if i not in self.id_to_token:
                raise UserError(f"token id {i!r} is out of range for a vocabulary of {self.vocab_size}")
            if not (skip_special_tokens and i in special):
                pieces.append(self.id_to_token[i])
        out = []
        for k, token in enumerate(pieces):
            if k:
                token = token[len(self.prefix):] if token.startswith(self.prefix) else " " + token
            for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                         (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
                token = token.replace(a, b)
            out.append(token)
        return "".join(out)

    def pad(self, batch: list[list[int]], side: str = "right", max_length: int | None = None,
            pad_id: int | None = None, return_tensors: bool = True):
        """Pad a batch to one length -> (ids, attention_mask), as `Tokenizer.pad` (truncation keeps the left)."""
        pad_id = self.pad_id if pad_id is None else pad_id
        if max_length is not None:
            batch = [ids[:max_length] for ids in batch]
        T = max_length if max_length is not None else max((len(ids) for ids in batch), default=0)
        out = [list(ids) + [pad_id] * (T - len(ids)) if side == "right" else [pad_id] * (T - len(ids)) + list(ids)
               for ids in batch]
        mask = [[1] * len(ids) + [0] * (T - len(ids)) if side == "right" else [0] * (T - len(ids)) + [1] * len(ids)
                for ids in batch]
        if not return_tensors:
            return out, mask
        import torch

        return torch.tensor(out, dtype=torch.long), torch.tensor(mask, dtype=torch.long)

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        raise UserError(f"tokenizer {self.name}: a WordPiece (BERT) tokenizer has no chat template")

    # ---- files ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "vocab": self.vocab, "special_tokens": self.special_tokens,
                "unk_token": self.unk_token, "cls_token": self.cls_token, "sep_token": self.sep_token,
                "pad_token": self.pad_token, "mask_token": self.mask_token, "prefix": self.prefix,
                "max_input_chars_per_word": self.max_input_chars_per_word, **self.norm}

    @classmethod
    def from_dict(cls, d: dict[str, Any], name: str = "wordpiece") -> "WordPieceTokenizer":
        if d.get("format") != FORMAT or d.get("version") != VERSION:
            raise UserError(f"{name}: not an llmlab WordPiece tokenizer of version {VERSION}")
        try:
            kwargs = {k: v for k, v in d.items() if k not in ("format", "version")}
            return cls(name=name, **kwargs)
        except TypeError as e:
            raise UserError(f"{name}: corrupt llmlab WordPiece tokenizer file ({e})") from None

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())

    def save_hf(self, directory: str | Path) -> None:
        """Write a `tokenizer.json` that `tokenizers` loads (BertNormalizer, BertPreTokenizer, WordPiece)."""
        directory = Path(directory)
        added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                  "normalized": False, "special": True} for s, i in sorted(self.special_tokens.items(),
                                                                            key=lambda kv: kv[1])]
        single = [{"Sequence": {"id": "A", "type_id": 0}}]
        specials = {}
        for token in (self.cls_token, self.sep_token):
            if token is not None:
                specials[token] = {"id": token, "ids": [self.vocab[token]], "tokens": [token]}
        if self.cls_token is not None:
            single.insert(0, {"SpecialToken": {"id": self.cls_token, "type_id": 0}})
        if self.sep_token is not None:
            single.append({"SpecialToken": {"id": self.sep_token, "type_id": 0}})
        data = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
                "normalizer": {"type": "BertNormalizer", "clean_text": self.norm["clean_text"],
                               "handle_chinese_chars": self.norm["handle_chinese_chars"],
                               "strip_accents": self.norm["strip_accents"], "lowercase": self.norm["lowercase"]},
                "pre_tokenizer": {"type": "BertPreTokenizer"},
                "post_processor": {"type": "TemplateProcessing", "single": single, "pair": single,
                                   "special_tokens": specials},
                "decoder": {"type": "WordPiece", "prefix": self.prefix, "cleanup": True},
                "model": {"type": "WordPiece", "unk_token": self.unk_token, "continuing_subword_prefix": self.prefix,
                          "max_input_chars_per_word": self.max_input_chars_per_word, "vocab": self.vocab}}
        write_json_atomic(directory / "tokenizer.json", data)

    def __repr__(self) -> str:
        return f"WordPieceTokenizer({self.name!r}, vocab_size={self.vocab_size})"


def _template_token(steps: list[dict], first: bool) -> str | None:
    """The special token a TemplateProcessing `single` template puts before (first) or after the text."""
    names = [s["SpecialToken"]["id"] for s in steps if "SpecialToken" in s]
    seq = next((k for k, s in enumerate(steps) if "Sequence" in s), 0)
    before = [s["SpecialToken"]["id"] for s in steps[:seq] if "SpecialToken" in s]
    after = [s["SpecialToken"]["id"] for s in steps[seq + 1:] if "SpecialToken" in s]
    if len(before) > 1 or len(after) > 1 or len(names) != len(before) + len(after):
        raise UserError(f"post-processor template {steps}: only [CLS] A [SEP]-style templates are supported")
    chosen = before if first else after
    return chosen[0] if chosen else None


def from_hf_json(d: dict, name: str, config: dict | None = None) -> WordPieceTokenizer:
    """A parsed `tokenizer.json` whose model type is WordPiece (+ `tokenizer_config.json`, for token names)."""
    model, norm = d["model"], d.get("normalizer") or {}
    config = config or {}
    if norm and norm.get("type") != "BertNormalizer":
        raise UserError(f"{name}: normalizer {norm.get('type')!r} is not supported with WordPiece; "
                        "llmlab reads BertNormalizer")
    pre = (d.get("pre_tokenizer") or {}).get("type")
    if pre != "BertPreTokenizer":
        raise UserError(f"{name}: pre-tokenizer {pre!r} is not supported with WordPiece; llmlab reads "
                        "BertPreTokenizer")
    post = d.get("post_processor") or {}
    if post.get("type") == "TemplateProcessing":
        cls_token, sep_token = _template_token(post["single"], True), _template_token(post["single"], False)
    elif post.get("type") == "BertProcessing":
        cls_token, sep_token = post["cls"][0], post["sep"][0]
    elif not post:
        cls_token = sep_token = None
    else:
        raise UserError(f"{name}: post-processor {post.get('type')!r} is not supported with WordPiece")
    specials = {t["content"]: t["id"] for t in d.get("added_tokens", [])}
    vocab = {**model["vocab"], **specials}
    pad = (d.get("padding") or {}).get("pad_token") or config.get("pad_token") or "[PAD]"
    mask = config.get("mask_token") or ("[MASK]" if "[MASK]" in vocab else None)
    return WordPieceTokenizer(
        vocab, specials, unk_token=model.get("unk_token", "[UNK]"), cls_token=cls_token, sep_token=sep_token,
        pad_token=pad if isinstance(pad, str) else pad["content"],
        mask_token=mask if isinstance(mask, str) or mask is None else mask["content"],
        prefix=model.get("continuing_subword_prefix") or "##",
        max_input_chars_per_word=model.get("max_input_chars_per_word", 100),
        lowercase=norm.get("lowercase", False), strip_accents=norm.get("strip_accents"),
        clean_text=norm.get("clean_text", False), handle_chinese_chars=norm.get("handle_chinese_chars", False),
        name=name)


def load_hf_wordpiece(path: Path) -> WordPieceTokenizer:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable tokenizer.json ({e!r})") from None
    config_path = path.parent / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    return from_hf_json(d, str(path), config)
