"""Pre-tokenisation split patterns: the regexes that cut text into chunks before BPE.

BPE never merges across chunk boundaries, so the pattern decides what a token
can be (GPT-2's keeps a leading space on words; GPT-4's groups at most three
digits and keeps newlines apart). This file names the built-in patterns and maps
the pre-tokenizer names that GGUF files store in `tokenizer.ggml.pre` to them.
It does not run the regex; `Tokenizer` and `pretokenize` do.
"""

from llmlab.common.errors import UserError

# GPT-2 (Radford et al. 2019), as in minbpe and HF's ByteLevel pre-tokenizer.
GPT2 = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""  # noqa: E501

# GPT-4 (tiktoken's cl100k_base).
GPT4 = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""  # noqa: E501

# GPT-2's pattern after HF's Digits(individual_digits=True): every digit is its own
# chunk, and whitespace before a digit ends its chunk as if the text ended there
# (the Digits step had cut it off), hence `(?![^\s\p{N}])` instead of `(?!\S)`.
GPT2_SPLIT_DIGITS = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+"""

# Llama 3 (llama.cpp "llama-bpe"): GPT-4's pattern.
LLAMA3 = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""  # noqa: E501

# Qwen2: Llama 3's pattern with single digits.
QWEN2 = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""  # noqa: E501

PATTERNS: dict[str, str] = {"gpt2": GPT2, "gpt4": GPT4, "gpt2-digits": GPT2_SPLIT_DIGITS}

# GGUF `tokenizer.ggml.pre` -> pattern (names as llama.cpp writes them).
GGUF_PRE: dict[str, str] = {
    "gpt2": GPT2,
    "default": GPT2,
    "gpt-2": GPT2,
    "starcoder": GPT2_SPLIT_DIGITS,
    "smollm": GPT2_SPLIT_DIGITS,
    "refact": GPT2_SPLIT_DIGITS,
    "llama-bpe": LLAMA3,
    "llama3": LLAMA3,
    "dbrx": LLAMA3,
    "smaug-bpe": LLAMA3,
    "qwen2": QWEN2,
    "deepseek-r1-qwen": QWEN2,
}


def resolve_pattern(name_or_regex: str) -> str:
    """A built-in name ('gpt2', 'gpt4', 'gpt2-digits') -> its regex; anything else is taken as a regex.

    >>> resolve_pattern("gpt4") == GPT4
    True
    """
    if name_or_regex in PATTERNS:
        return PATTERNS[name_or_regex]
    import regex

    try:
        regex.compile(name_or_regex)
    except regex.error as e:
        raise UserError(
            f"pattern {name_or_regex!r}: not a built-in name ({', '.join(PATTERNS)}) and not a valid "
            f"regex ({e})"
        ) from None
    return name_or_regex
