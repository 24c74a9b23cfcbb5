"""Token stream -> text stream: split UTF-8 characters, stop strings held back and cut, specials silent."""

from llmlab.infer.text import _held_back, stream_text


class ByteTokenizer:
    """Each id < 256 is one byte; 300 is a special token."""

    special_tokens = {"<eos>": 300}

    def decode_bytes(self, ids):
        return bytes(ids)


def _ids(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def test_split_emoji_comes_out_whole():
    pieces = list(stream_text(_ids("hi 🙂!"), ByteTokenizer()))
    assert "".join(pieces) == "hi 🙂!" and all("\ufffd" not in p for p in pieces)


def test_stop_string_ends_the_stream_and_is_not_returned():
    tok = ByteTokenizer()
    assert "".join(stream_text(_ids("Answer: 4\nUser: more"), tok, stop=["\nUser:"])) == "Answer: 4"
    assert "".join(stream_text(_ids("no stop here\nUs"), tok, stop=["\nUser:"])) == "no stop here\nUs"
    assert "".join(stream_text(_ids("STOP at once"), tok, stop=["STOP"])) == ""


def test_special_tokens_print_nothing():
    assert "".join(stream_text([*_ids("ok"), 300], ByteTokenizer())) == "ok"


def test_held_back():
    assert _held_back("Hello\nUs", ["\nUser:"]) == 3
    assert _held_back("Hello", ["\nUser:"]) == 0
