"""One choice's token events turned into OpenAI's text and logprobs, a token at a time.

A byte-level BPE token can end inside a UTF-8 character (an emoji is often two
tokens), so bytes go through an incremental decoder that keeps an incomplete
tail back; only whole characters are ever sent. Text that could still grow into
a stop string is held back too, until it clearly is not one; when a stop string
appears the text ends before it and the caller aborts the engine request.
Stop and special tokens (end of text, end of turn) yield no text, as in
`llmlab.infer.text.stream_text`, which this mirrors for a push-style caller.

Logprobs come in both of OpenAI's shapes: chat's list of
{"token", "logprob", "bytes", "top_logprobs"} and the legacy completions'
parallel lists {"tokens", "token_logprobs", "top_logprobs", "text_offset"}.
"""

import codecs


def held_back(text: str, stops: list[str]) -> int:
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


class ChoiceText:
    """Feed token ids, get text that is safe to send; `stopped` turns True at a stop string."""

    def __init__(self, tokenizer, stops: list[str], silent_ids: set[int]):
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.silent = silent_ids  # stop tokens and special tokens: no text
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""  # decoded, not yet sent (a possible stop-string prefix)
        self.text = ""  # everything sent so far
        self.stopped = False

    def feed(self, token_id: int) -> str:
        """The new text this token makes sendable ("" while held back or after a stop string)."""
        if self.stopped or token_id in self.silent:
            return ""
        self._pending += self._utf8.decode(self.tokenizer.decode_bytes([token_id]))
        hits = [self._pending.find(s) for s in self.stops if s in self._pending]
        if hits:
            self.stopped = True
            return self._send(self._pending[:min(hits)])
        keep = held_back(self._pending, self.stops)
        return self._send(self._pending[:len(self._pending) - keep], keep_from=len(self._pending) - keep)

    def finish(self) -> str:
        """The held-back rest once no more tokens come (an incomplete character becomes U+FFFD)."""
        if self.stopped:
            return ""
        self._pending += self._utf8.decode(b"", final=True)
        return self._send(self._pending)

    def _send(self, piece: str, keep_from: int | None = None) -> str:
        self._pending = self._pending[keep_from:] if keep_from is not None else ""
        self.text += piece
        return piece


def token_text(tokenizer, token_id: int) -> str:
    return tokenizer.decode_bytes([token_id]).decode("utf-8", errors="replace")


def chat_logprob(tokenizer, event) -> dict:
    """One entry of chat's `logprobs.content`: the chosen token and its top alternatives."""

    def entry(token_id: int, logprob: float) -> dict:
        raw = tokenizer.decode_bytes([token_id])
        return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(raw)}

    return {**entry(event.token_id, event.logprob),
            "top_logprobs": [entry(t, lp) for t, lp in event.top_logprobs or []]}


class CompletionLogprobs:
    """The legacy completions' logprobs object, built a token at a time."""

    def __init__(self, tokenizer, offset: int = 0):
        self.tokenizer, self.offset = tokenizer, offset
        self.tokens: list[str] = []
        self.token_logprobs: list[float] = []
        self.top_logprobs: list[dict[str, float]] = []
        self.text_offset: list[int] = []

    def add(self, event) -> dict:
        """Record one token; return the same object for this token alone (a streamed chunk's logprobs)."""
        text = token_text(self.tokenizer, event.token_id)
        one = {"tokens": [text], "token_logprobs": [event.logprob],
               "top_logprobs": [{token_text(self.tokenizer, t): lp for t, lp in event.top_logprobs or []}],
               "text_offset": [self.offset]}
        for key, values in one.items():
            getattr(self, key).extend(values)
        self.offset += len(text)
        return one

    def as_dict(self) -> dict:
        return {"tokens": self.tokens, "token_logprobs": self.token_logprobs, "top_logprobs": self.top_logprobs,
                "text_offset": self.text_offset}
