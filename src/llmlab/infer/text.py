"""From a stream of token ids to a stream of text: whole characters only, stop strings honoured.

The one place in `llmlab.infer` that touches a tokenizer (through `decode_bytes`
or `decode`). A token can end in the middle of a UTF-8 character (emoji are
often split over two byte-level tokens), so bytes go through an incremental
decoder that holds back an incomplete tail. Text that could be the start of a
stop string is held back too, until it is clearly not one; a stop string ends
the stream and is not returned. Special tokens (EOS, chat markers) yield no text.
"""

import codecs
from collections.abc import Iterable, Iterator
from typing import Any


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters of text could still grow into a stop string.

    text="Hello\\nUs", stops=["\\nUser:"] -> 3 ("\\nUs" is a prefix of "\\nUser:").
    """
    longest = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), longest, -1):
            if s.startswith(text[-n:]):
                longest = n
                break
    return longest


def stream_text(tokens: Iterable[int], tokenizer: Any, stop: list[str] = ()) -> Iterator[str]:
    """Yield decoded text pieces as tokens arrive; end at the first stop string (not yielded)."""
    specials = set(getattr(tokenizer, "special_tokens", {}).values())
    as_bytes = getattr(tokenizer, "decode_bytes", None)
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    stops = [s for s in stop if s]
    pending = ""
    for token in tokens:
        if token in specials:
            continue
        piece = as_bytes([token]) if as_bytes else tokenizer.decode([token]).encode("utf-8")
        pending += utf8.decode(piece)
        hits = [pending.find(s) for s in stops if s in pending]
        if hits:
            if min(hits):
                yield pending[:min(hits)]
            return
        keep = _held_back(pending, stops)
        if len(pending) > keep:
            yield pending[:len(pending) - keep]
            pending = pending[len(pending) - keep:]
    pending += utf8.decode(b"", final=True)
    if pending:
        yield pending
