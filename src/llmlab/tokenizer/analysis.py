"""Compare tokenizers on texts: compression, fertility, vocabulary use, longest tokens, splits.

The courses' tokenizer lab: the same sentence costs a different number of tokens
in each language and under each tokenizer, and that cost is context length and
compute. Per (tokenizer, text) we measure

- bytes per token (UTF-8 bytes / tokens; higher = better compression),
- fertility (tokens per whitespace-separated word; scripts without spaces,
  such as Chinese and Thai, count a whole phrase as one "word"),
- vocabulary share (distinct ids used / vocabulary size),
- the longest tokens used, and how a sample line splits.

Small multilingual sample texts ship in `samples/` so the lab runs offline.
This file computes and formats; it does not load tokenizers or parse flags.
"""

from dataclasses import dataclass
from pathlib import Path

from llmlab.tokenizer.tokenizer import Tokenizer

SAMPLES = Path(__file__).parent / "samples"


def sample_texts() -> dict[str, str]:
    """The built-in sample texts, name -> text (en, ru, el, ar, hi, zh, ja, th, code)."""
    return {p.stem: p.read_text(encoding="utf-8") for p in sorted(SAMPLES.glob("*.txt"))}


@dataclass
class Stats:
    tokenizer: str
    text: str
    n_bytes: int
    n_tokens: int
    n_words: int
    distinct: int
    vocab_size: int
    longest: list[str]

    @property
    def bytes_per_token(self) -> float:
        return self.n_bytes / max(self.n_tokens, 1)

    @property
    def fertility(self) -> float:
        return self.n_tokens / max(self.n_words, 1)

    @property
    def vocab_share(self) -> float:
        return self.distinct / self.vocab_size


def measure(tok: Tokenizer, text: str, tokenizer_name: str, text_name: str, n_longest: int = 3) -> Stats:
    """Stats of `tok` on `text`.

    >>> s = measure(Tokenizer.train("aaaa", 258), "aaaa", "t", "x")
    >>> (s.n_bytes, s.n_tokens, s.bytes_per_token)
    (4, 2, 2.0)
    """
    ids = tok.encode(text)
    used = set(ids)
    longest = sorted(used, key=lambda i: (-len(tok.id_to_token_bytes(i)), i))[:n_longest]
    return Stats(tokenizer_name, text_name, len(text.encode("utf-8")), len(ids), len(text.split()),
                 len(used), tok.vocab_size, [show(tok.id_to_token_bytes(i)) for i in longest])


def show(b: bytes) -> str:
    """A token's bytes as readable text: whitespace made visible, bytes that are only part of
    a character (common in scripts beyond Latin) as hex escapes.

    >>> show(b" hi\\n"), show(b"\\xd9")
    ('␣hi↵', '\\\\xd9')
    """
    return b.decode("utf-8", errors="backslashreplace").replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")


def split_line(tok: Tokenizer, line: str) -> list[str]:
    """How `tok` cuts `line`: one readable string per token."""
    return [show(tok.id_to_token_bytes(i)) for i in tok.encode(line)]


def compare(tokenizers: dict[str, Tokenizer], texts: dict[str, str]) -> list[Stats]:
    return [measure(tok, text, tn, xn) for xn, text in texts.items() for tn, tok in tokenizers.items()]


def format_table(rows: list[Stats]) -> str:
    """A fixed-width table, one row per (text, tokenizer)."""
    head = f"{'text':<10} {'tokenizer':<24} {'bytes/tok':>9} {'tok/word':>8} {'vocab%':>7}  longest tokens"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.text:<10} {r.tokenizer[-24:]:<24} {r.bytes_per_token:>9.2f} {r.fertility:>8.2f} "
                     f"{100 * r.vocab_share:>6.2f}%  {' | '.join(r.longest)}")
    return "\n".join(lines)


def format_splits(tokenizers: dict[str, Tokenizer], line: str) -> str:
    """The sample line as each tokenizer cuts it, side by side (one block per tokenizer)."""
    out = [f"sample: {line!r}"]
    for name, tok in tokenizers.items():
        pieces = split_line(tok, line)
        out.append(f"  {name[-24:]:<24} ({len(pieces):>3} tokens) " + "|".join(pieces))
    return "\n".join(out)


def plot(rows: list[Stats], path: str | Path) -> None:
    """Grouped bar chart of bytes per token and fertility per text, one bar per tokenizer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from llmlab.common.io import atomic_write

    texts = list(dict.fromkeys(r.text for r in rows))
    names = list(dict.fromkeys(r.tokenizer for r in rows))
    by_key = {(r.text, r.tokenizer): r for r in rows}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / len(names)
    for ax, metric, title in ((axes[0], "bytes_per_token", "bytes per token (higher = better)"),
                              (axes[1], "fertility", "tokens per word (lower = better)")):
        for k, name in enumerate(names):
            xs = [i + k * width for i in range(len(texts))]
            ax.bar(xs, [getattr(by_key[(t, name)], metric) for t in texts], width, label=Path(name).name)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(texts))], texts)
        ax.set_title(title)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png"))
    plt.close(fig)
