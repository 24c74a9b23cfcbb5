"""Import and export: other libraries' tokenizer files <-> llmlab's `Tokenizer`.

Read: llmlab's own JSON, Hugging Face `tokenizer.json` (byte-level BPE, with the
pre-tokenizers GPT-2, split-digits + byte-level, and split-regex + byte-level),
a folder with GPT-2's `vocab.json` + `merges.txt`, a tiktoken rank file, and the
vocabulary stored in a GGUF file (`tokenizer.ggml.*`). Write: HF `tokenizer.json`
plus `tokenizer_config.json`. Every importer ends in the same data model
(byte tokens, merge triples, pattern, special tokens), so encoding is shared.
Hugging Face and GGUF store tokens as GPT-2's "byte-level" strings: each byte is
drawn as a printable character (`bytes_to_unicode`); we turn them back into bytes.
"""

import base64
import json
from functools import lru_cache
from pathlib import Path

from llmlab.common import log
from llmlab.common.errors import UserError
from llmlab.common.io import write_json_atomic
from llmlab.tokenizer import patterns
from llmlab.tokenizer.tokenizer import Tokenizer

GGUF_CONTROL, GGUF_USER_DEFINED = 3, 4


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map (Radford et al. 2019, encoder.py).

    >>> bytes_to_unicode()[ord("a")], bytes_to_unicode()[ord(" ")]
    ('a', 'Ġ')
    """
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


@lru_cache(maxsize=1)
def unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def token_to_bytes(token: str) -> bytes:
    """A byte-level token string -> its bytes; a string outside the map is taken as UTF-8 text.

    >>> token_to_bytes("Ġhello")
    b' hello'
    """
    table = unicode_to_bytes()
    try:
        return bytes(table[c] for c in token)
    except KeyError:
        return token.encode("utf-8")


def bytes_to_token(b: bytes) -> str:
    table = bytes_to_unicode()
    return "".join(table[x] for x in b)


def from_vocab_merges(
    vocab: dict[str, int],
    merges: list[tuple[str, str]],
    pattern: str,
    special_tokens: dict[str, int],
    name: str,
    eos_id: int | None = None,
    bos_id: int | None = None,
    chat_template: str | None = None,
) -> Tokenizer:
    """Byte-level `vocab` (token string -> id) and `merges` (string pairs, in priority order)."""
    n = max([*vocab.values(), *special_tokens.values()], default=-1) + 1
    tokens = [b""] * n
    for tok, i in vocab.items():
        tokens[i] = token_to_bytes(tok)
    for tok, i in special_tokens.items():
        tokens[i] = tok.encode("utf-8")
    triples = []
    for k, (a, b) in enumerate(merges):
        if a not in vocab or b not in vocab or a + b not in vocab:
            raise UserError(f"{name}: merge {k} ({a!r} {b!r}) uses a token missing from the vocabulary; "
                            "the file is corrupt or not byte-level BPE")
        triples.append((vocab[a], vocab[b], vocab[a + b]))
    return Tokenizer(tokens, triples, pattern, special_tokens, eos_id, bos_id, chat_template, name=name)


# ---- Hugging Face tokenizer.json ------------------------------------------------------------

def _hf_pattern(pre: dict | None, name: str) -> str:
    """The split regex equivalent to a HF pre-tokenizer we support."""
    steps = pre.get("pretokenizers", []) if pre and pre.get("type") == "Sequence" else [pre] if pre else []
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True) and not steps[0].get("add_prefix_space"):
        return patterns.GPT2
    if (kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits")
            and steps[1].get("use_regex", True) and not steps[1].get("add_prefix_space")):
        return patterns.GPT2_SPLIT_DIGITS
    if (kinds == ["Split", "ByteLevel"] and steps[0].get("behavior") == "Isolated"
            and not steps[0].get("invert") and "Regex" in steps[0].get("pattern", {})
            and not steps[1].get("use_regex", True) and not steps[1].get("add_prefix_space")):
        return steps[0]["pattern"]["Regex"]
    raise UserError(f"{name}: pre-tokenizer {kinds} is not supported; llmlab reads byte-level BPE with "
                    "ByteLevel, Digits+ByteLevel or Split+ByteLevel")


def _config_token(value) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def load_hf(path: Path) -> Tokenizer:
    """A HF `tokenizer.json` (+ `tokenizer_config.json` beside it for eos/bos and the chat template)."""
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        model = d["model"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a readable tokenizer.json ({e!r})") from None
    if model.get("type") == "WordPiece":  # BERT's vocabularies: their own encoder
        from llmlab.tokenizer.wordpiece import load_hf_wordpiece

        return load_hf_wordpiece(path)
    if model.get("type") != "BPE" or model.get("byte_fallback") or model.get("continuing_subword_prefix") \
            or model.get("end_of_word_suffix") or d.get("normalizer"):
        raise UserError(f"{path}: only byte-level BPE without a normalizer is supported "
                        f"(model type {model.get('type')!r})")
    pattern = _hf_pattern(d.get("pre_tokenizer"), str(path))
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    specials = {t["content"]: t["id"] for t in d.get("added_tokens", [])}
    config_path = path.parent / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    template = config.get("chat_template")
    if isinstance(template, list):
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    vocab = {**model["vocab"], **specials}
    ids = {name: vocab.get(_config_token(config.get(name))) for name in ("eos_token", "bos_token")}
    return from_vocab_merges(model["vocab"], merges, pattern, specials, str(path),
                             ids["eos_token"], ids["bos_token"], template)


def save_hf(tok: Tokenizer, directory: str | Path) -> None:
    """Write `tokenizer.json` and `tokenizer_config.json` for HF `tokenizers`/transformers."""
    directory = Path(directory)
    special_ids = set(tok.special_tokens.values())
    vocab = {bytes_to_token(t): i for i, t in enumerate(tok.tokens) if i not in special_ids}
    vocab.update(tok.special_tokens)  # HF lists special tokens in the model's vocab too, else it renumbers them
    merges = [[bytes_to_token(tok.tokens[a]), bytes_to_token(tok.tokens[b])] for a, b, _ in tok.merges]
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for s, i in tok.special_tokens.items()]
    data = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": tok.pattern}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": vocab, "merges": merges},
    }
    names = {"eos_token": tok.eos_id, "bos_token": tok.bos_id}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
              **{k: tok.tokens[v].decode("utf-8") for k, v in names.items() if v is not None}}
    if tok.chat_template:
        config["chat_template"] = tok.chat_template
    write_json_atomic(directory / "tokenizer.json", data)
    write_json_atomic(directory / "tokenizer_config.json", config)


# ---- GPT-2 vocab.json + merges.txt ----------------------------------------------------------

def load_gpt2_folder(directory: Path) -> Tokenizer:
    """GPT-2's `vocab.json` + `merges.txt`: tokens that are neither bytes nor merge results
    (GPT-2's `<|endoftext|>`) become special tokens."""
    try:
        vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
        lines = (directory / "merges.txt").read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as e:
        raise UserError(f"{directory}: unreadable vocab.json/merges.txt ({e!r})") from None
    merges = [tuple(line.split(" ", 1)) for line in lines if line and not line.startswith("#version")]
    if any(len(m) != 2 for m in merges):
        raise UserError(f"{directory / 'merges.txt'}: every line must be two tokens separated by a space")
    made = {a + b for a, b in merges}
    specials = {t: i for t, i in vocab.items() if len(token_to_bytes(t)) > 1 and t not in made}
    normal = {t: i for t, i in vocab.items() if t not in specials}
    eos = specials.get("<|endoftext|>")
    return from_vocab_merges(normal, merges, patterns.GPT2, specials, str(directory), eos, eos)


# ---- tiktoken rank files --------------------------------------------------------------------

def recover_merges(ranks: dict[bytes, int]) -> list[tuple[int, int, int]]:
    """tiktoken stores only token -> rank. Token t was made by merging the two parts that BPE,
    allowed only ranks below t's, leaves of t's bytes (minbpe's `recover_merges`)."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            best = min(range(len(parts) - 1), key=lambda i: ranks.get(parts[i] + parts[i + 1], 1 << 62))
            if ranks.get(parts[best] + parts[best + 1], 1 << 62) >= rank:
                break
            parts[best:best + 2] = [parts[best] + parts[best + 1]]
        if len(parts) != 2 or parts[0] not in ranks or parts[1] not in ranks:
            raise UserError(f"tiktoken ranks: token {token!r} (rank {rank}) is not a merge of two "
                            "earlier tokens")
        merges.append((ranks[parts[0]], ranks[parts[1]], rank))
    return merges


def load_tiktoken(
    path: Path, pattern: str = "gpt4", special_tokens: dict[str, int] | None = None
) -> Tokenizer:
    """A tiktoken rank file (`base64-token rank` per line). The file holds no pattern or special
    tokens: GPT-4's pattern is assumed unless given."""
    ranks: dict[bytes, int] = {}
    try:
        for line in path.read_text(encoding="ascii").splitlines():
            if line:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a tiktoken rank file ({e!r})") from None
    if not ranks:
        raise UserError(f"{path}: empty tiktoken rank file")
    special_tokens = special_tokens or {}
    tokens = [b""] * (max([*ranks.values(), *special_tokens.values()]) + 1)
    for t, r in ranks.items():
        tokens[r] = t
    for s, i in special_tokens.items():
        tokens[i] = s.encode("utf-8")
    return Tokenizer(tokens, recover_merges(ranks), patterns.resolve_pattern(pattern), special_tokens,
                     name=str(path))


# ---- GGUF -----------------------------------------------------------------------------------

def load_gguf(path: Path) -> Tokenizer:
    """The tokenizer inside a GGUF model file (llama.cpp's `tokenizer.ggml.*` keys).

    Only `tokenizer.ggml.model == "gpt2"` (byte-level BPE) is supported. Control (3) and
    user-defined (4) tokens are special tokens; `tokenizer.ggml.pre` picks the split pattern."""
    import gguf

    try:
        fields = gguf.GGUFReader(path).fields
    except Exception as e:
        raise UserError(f"{path}: not a readable GGUF file ({e!r})") from None

    def scalar(key, default=None):
        f = fields.get(key)
        if f is None:
            return default
        value = f.parts[f.data[0]]
        return bytes(value).decode("utf-8") if f.types[0] == gguf.GGUFValueType.STRING else int(value[0])

    def strings(key):
        f = fields.get(key)
        return [] if f is None else [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    model = scalar("tokenizer.ggml.model")
    if model != "gpt2":
        raise UserError(f"{path}: GGUF tokenizer model {model!r} is not supported; llmlab reads 'gpt2' "
                        "(byte-level BPE)")
    pre = scalar("tokenizer.ggml.pre", "default")
    if pre not in patterns.GGUF_PRE:
        log.info(f"{path}: unknown pre-tokenizer {pre!r}; using GPT-2's pattern, ids may differ from "
                 "llama.cpp")
    names = strings("tokenizer.ggml.tokens")
    f = fields["tokenizer.ggml.token_type"]
    types = [int(f.parts[i][0]) for i in f.data]
    special_types = (GGUF_CONTROL, GGUF_USER_DEFINED)
    specials = {t: i for i, (t, k) in enumerate(zip(names, types, strict=True)) if k in special_types}
    vocab = {t: i for i, t in enumerate(names) if t not in specials}
    merges = [tuple(m.split(" ", 1)) for m in strings("tokenizer.ggml.merges")]
    return from_vocab_merges(vocab, merges, patterns.GGUF_PRE.get(pre, patterns.GPT2), specials, str(path),
                             scalar("tokenizer.ggml.eos_token_id"), scalar("tokenizer.ggml.bos_token_id"),
                             scalar("tokenizer.chat_template"))


# ---- dispatch -------------------------------------------------------------------------------

def load_any(path: str | Path) -> Tokenizer:
    """Recognise the format by content (see the module docstring) and load it."""
    path = Path(path)
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            return load_hf(path / "tokenizer.json")
        if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
            return load_gpt2_folder(path)
        raise UserError(f"{path}: folder has neither tokenizer.json nor vocab.json + merges.txt")
    if not path.is_file():
        raise UserError(f"{path}: no such tokenizer file; train one with `llmlab tokenizer train`")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head == b"GGUF":
        return load_gguf(path)
    if head.lstrip()[:1] == b"{":
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: corrupt tokenizer file (invalid JSON: {e}); re-save or re-download "
                            "it") from None
        if isinstance(d, dict) and d.get("format") == "llmlab-wordpiece":
            from llmlab.tokenizer.wordpiece import WordPieceTokenizer

            return WordPieceTokenizer.from_dict(d, name=str(path))
        if isinstance(d, dict) and "format" in d:
            return Tokenizer.from_dict(d, name=str(path))
        if isinstance(d, dict) and "model" in d:
            return load_hf(path)
        raise UserError(f"{path}: JSON is neither an llmlab tokenizer nor a HF tokenizer.json")
    if not head.strip():
        raise UserError(f"{path}: empty tokenizer file")
    return load_tiktoken(path)
