"""SFT data: row formats, errors naming file and line, assistant-only loss mask, packing that isolates examples."""

import json

import pytest
import torch

from llmlab.common.errors import UserError
from llmlab.data.sft import (
    IGNORE_INDEX,
    Example,
    collate_packed,
    collate_padded,
    make_batches,
    pack,
    read_sft_jsonl,
    row_to_messages,
    split_validation,
    tokenize_dataset,
    tokenize_messages,
)
from llmlab.models import Transformer, get_preset
from llmlab.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok():
    text = "the quick brown fox jumps over the lazy dog. user assistant system hello answer 12345 " * 20
    return Tokenizer.train(text, 300, special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))


def write(tmp_path, rows):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_three_row_shapes():
    alpaca = row_to_messages({"instruction": "Add", "input": "2 and 3", "output": "5"})
    assert alpaca == [{"role": "user", "content": "Add\n\n2 and 3"}, {"role": "assistant", "content": "5"}]
    pc = row_to_messages({"prompt": "2+2?", "completion": "4"})
    assert [m["role"] for m in pc] == ["user", "assistant"]
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"}]
    assert row_to_messages({"messages": msgs}) == msgs


@pytest.mark.parametrize("row, what", [
    ("{not json", "bad JSON"),
    ({"instruction": "x"}, "missing field 'output'"),
    ({"text": "x"}, "missing field"),
    ({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}, "unknown role 'robot'"),
    ({"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "y"}]}, "empty content"),
    ({"prompt": "x", "completion": ""}, "empty content"),
])
def test_bad_row_names_file_line_and_problem(tmp_path, row, what):
    good = {"prompt": "a", "completion": "b"}
    path = write(tmp_path, [good, row, good])
    with pytest.raises(UserError, match=rf"d\.jsonl:2: .*{what}"):
        read_sft_jsonl(path)
    data = read_sft_jsonl(path, skip_bad_rows=True)
    assert len(data.examples) == 2 and data.skipped == 1 and ":2:" in data.problems[0]


def test_loss_only_on_assistant_tokens(tok):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "answer 12"}, {"role": "user", "content": "the fox"},
            {"role": "assistant", "content": "dog"}]
    ids, labels = tokenize_messages(tok, msgs)
    assert tok.decode(ids) == tok.render(msgs)
    trained = [i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]
    assert all(lab in (i, IGNORE_INDEX) for i, lab in zip(ids, labels, strict=True))
    assert tok.decode(trained) == "answer 12<|im_end|>\ndog<|im_end|>\n"


def test_packing_matches_separate_examples(tok):
    """A packed row gives each example the logits it gets alone: attention does not cross examples."""
    convs = [[{"role": "user", "content": f"hello {n}"}, {"role": "assistant", "content": "answer " * (n + 1)}]
             for n in range(3)]
    examples = tokenize_dataset(tok, convs, max_len=64)
    rows = pack(examples, seq_len=128)
    assert len(rows) == 1 and len(rows[0]) == 3
    batch = collate_packed(rows, 128, tok.pad_id)
    torch.manual_seed(0)
    model = Transformer(get_preset("llama-tiny", n_layer=1, n_embd=32, vocab_size=300, seq_len=128)).eval()
    with torch.no_grad():
        packed = model(batch["idx"], positions=batch["positions"], attn_mask=batch["attn_mask"])
        start = 0
        for ex in examples:
            alone = model(torch.tensor([ex.idx]))
            torch.testing.assert_close(packed[0, start:start + len(ex.idx)], alone[0], atol=1e-5, rtol=0)
            start += len(ex.idx)
    assert (batch["targets"][0, start:] == IGNORE_INDEX).all()


def test_pack_golden_and_padded_collator():
    exs = [Example([1] * n, [1] * n) for n in (5, 4, 3, 6)]
    assert [[len(e.idx) for e in row] for row in pack(exs, 10)] == [[5, 4], [3, 6]]
    b = collate_padded([Example([1, 2, 3], [2, 3, -100]), Example([4], [5])], pad_id=0)
    assert b["idx"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert b["targets"].tolist() == [[2, 3, -100], [5, -100, -100]]
    assert b["attn_mask"].tolist() == [[True] * 3, [True, False, False]]
    assert len(make_batches(exs, 1, 10, 0, packed=True)) == 2 and len(make_batches(exs, 3, 10, 0, packed=False)) == 2


def test_validation_split_is_deterministic():
    train, val = split_validation(list(range(20)), 0.1, seed=3)
    assert len(val) == 2 and sorted(train + val) == list(range(20))
    assert split_validation(list(range(20)), 0.1, seed=3) == (train, val)
