"""Preference rows: every validation error names file and line, skip_bad_rows skips and counts, the built-in
set is deterministic with disjoint prompts, and collation matches TRL's DataCollatorForPreference."""

import json

import pytest
import torch

from llmlab.common.errors import UserError
from llmlab.data.preference import (
    PreferenceExample,
    collate_preference,
    collate_sequences,
    load_preferences,
    read_preference_jsonl,
    split_by_prompt,
    tokenize_preferences,
)
from llmlab.data.tasks import make_tasks
from llmlab.eval.exact_match import exact_match
from llmlab.tokenizer import Tokenizer

U = [{"role": "user", "content": "2+2?"}]
A4, A5 = [{"role": "assistant", "content": "4"}], [{"role": "assistant", "content": "5"}]
GOOD = [{"prompt": U, "chosen": A4, "rejected": A5}, {"prompt": "2+2=", "chosen": " 4", "rejected": " 5"}]
BAD = [
    ({"prompt": "q", "chosen": " same", "rejected": " same"}, "chosen equals rejected"),
    ({"prompt": U, "chosen": A4, "rejected": A4}, "chosen equals rejected"),
    ({"prompt": "q", "chosen": " a"}, "missing field(s) 'rejected'"),
    ({"chosen": A4, "rejected": A5}, "missing field(s) 'prompt'"),
    ({"prompt": "q", "chosen": "  ", "rejected": " b"}, "empty field 'chosen'"),
    ({"prompt": U, "chosen": [{"role": "assistant", "content": ""}], "rejected": A5}, "empty content"),
    ({"prompt": U, "chosen": [], "rejected": A5}, "'chosen' must be a non-empty list"),
    ({"prompt": [{"role": "wizard", "content": "hi"}], "chosen": A4, "rejected": A5}, "unknown role 'wizard'"),
    ({"prompt": U, "chosen": [{"role": "user", "content": "4"}], "rejected": A5}, "completions are assistant"),
    ({"prompt": U, "chosen": " 4", "rejected": A5}, "mixed formats"),
    ([1, 2], "expected a JSON object"),
]


def write(path, rows, raw_lines=()):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(raw_lines), encoding="utf-8")
    return path


@pytest.mark.parametrize("row,message", BAD)
def test_each_bad_row_names_file_line_and_problem(tmp_path, row, message):
    path = write(tmp_path / "p.jsonl", [*GOOD, row])
    with pytest.raises(UserError) as e:
        read_preference_jsonl(path)
    assert f"{path}:3: " in str(e.value) and message in str(e.value) and "skip_bad_rows" in str(e.value)


def test_bad_json_and_skip_bad_rows_counts(tmp_path):
    path = write(tmp_path / "p.jsonl", GOOD, ["{not json\n", "\n", json.dumps(BAD[0][0]) + "\n"])
    with pytest.raises(UserError, match=rf"{path}:3: bad JSON"):
        read_preference_jsonl(path)
    rows, problems = read_preference_jsonl(path, skip_bad_rows=True)
    assert len(rows) == 2 and len(problems) == 2 and problems[1].startswith(f"{path}:5: chosen equals rejected")
    assert rows[1].where == f"{path}:2" and not rows[1].conversational and rows[0].conversational
    with pytest.raises(UserError, match="no such file"):
        read_preference_jsonl(tmp_path / "missing.jsonl")


@pytest.fixture(scope="module")
def tok():
    text = " ".join(m["content"] for t in make_tasks(200) for m in t["messages"])
    return Tokenizer.train(text, 300, special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))


def test_prompt_too_long_for_the_context_names_the_row(tmp_path, tok):
    long_prompt = [{"role": "user", "content": "word " * 80}]
    path = write(tmp_path / "p.jsonl", [*GOOD, {"prompt": long_prompt, "chosen": A4, "rejected": A5}])
    rows, _ = read_preference_jsonl(path)
    with pytest.raises(UserError, match=rf"{path}:3: prompt too long for the context"):
        tokenize_preferences(tok, rows, max_len=64)
    examples, kept, skipped = tokenize_preferences(tok, rows, max_len=64, skip_bad_rows=True)
    assert len(examples) == len(kept) == 2 and skipped == 1


def test_builtin_set_is_deterministic_disjoint_and_correct():
    train, held, skipped = load_preferences("tasks", n_train=200, n_heldout=40, seed=3)
    again, _, _ = load_preferences("tasks", n_train=200, n_heldout=40, seed=3)
    assert skipped == 0 and len(train) == 200 and len(held) == 40 and train == again
    assert not {json.dumps(r.prompt) for r in train} & {json.dumps(r.prompt) for r in held}
    for r in train + held:  # chosen is the exact answer; rejected is never an exact-match hit
        assert exact_match(r.chosen[0]["content"], r.answer)
        assert not exact_match(r.rejected[0]["content"], r.answer)
    kinds = {("wrong" if len(r.rejected[0]["content"]) < 20 else "rambling") for r in train}
    assert kinds == {"wrong", "rambling"}
    other, _, _ = load_preferences("tasks", n_train=200, n_heldout=40, seed=4)
    assert other != train


def test_split_by_prompt_keeps_every_row_of_a_prompt_together(tmp_path):
    rows = [{"prompt": f"q{i % 5}", "chosen": f" a{i}", "rejected": f" b{i}"} for i in range(20)]
    parsed, _ = read_preference_jsonl(write(tmp_path / "p.jsonl", rows))
    train, held = split_by_prompt(parsed, 0.4, seed=0)
    assert len(train) + len(held) == 20 and len({r.prompt for r in held}) == 2
    assert not {r.prompt for r in train} & {r.prompt for r in held}


def test_collation_matches_trl_collator():
    trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer")
    examples = [PreferenceExample([1, 2, 3], [4, 5], [6]), PreferenceExample([7, 8], [9], [10, 11, 12, 13])]
    for max_len in (None, 5):
        trl = trl_dpo.DataCollatorForPreference(pad_token_id=0, max_length=max_len)(
            [{"prompt_ids": e.prompt_ids, "chosen_ids": e.chosen_ids, "rejected_ids": e.rejected_ids}
             for e in examples])
        ours = collate_preference(examples, pad_id=0, max_len=max_len)
        # ours is TRL's shifted by one: position t reads token t and predicts token t + 1 where it is a completion;
        # a row's last token predicts nothing, so it is left out
        mask = ours["attn_mask"]
        torch.testing.assert_close(mask.long(), trl["attention_mask"][:, 1:])
        torch.testing.assert_close(ours["idx"][mask], trl["input_ids"][:, :-1][mask])
        labels = trl["input_ids"].masked_fill(trl["completion_mask"] == 0, -100)[:, 1:]
        torch.testing.assert_close(ours["targets"], labels)
        whole = collate_sequences(examples, pad_id=0, max_len=max_len)
        torch.testing.assert_close(whole["idx"], trl["input_ids"])
        torch.testing.assert_close(whole["attn_mask"].long(), trl["attention_mask"])
