"""The generate, chat and bench kv-cache recipes end to end on a tiny checkpoint, through the CLI."""

import json

import pytest
import torch

from llmlab.cli import main
from llmlab.models import Transformer, get_preset


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from llmlab.common.checkpoint import save_checkpoint
    from llmlab.tokenizer import Tokenizer

    tok = Tokenizer.train("the cat sat on the mat. the dog sat on the log. " * 40, vocab_size=300)
    torch.manual_seed(0)
    model = Transformer(get_preset("llama-tiny", vocab_size=tok.vocab_size, seq_len=64, n_layer=2))
    path = tmp_path_factory.mktemp("ckpt") / "model"
    save_checkpoint(path, model, {"step": 0}, tokenizer=tok)
    return path


def test_generate_streams_reproducibly(checkpoint, capsys):
    argv = ["generate", "--checkpoint", str(checkpoint), "--prompt", "the cat", "--max-new-tokens", "12",
            "--seed", "3"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    assert capsys.readouterr().out == first and first.strip()


def test_generate_too_long_prompt_fails_in_one_line_or_truncates(checkpoint, capsys):
    long = "the cat sat on the mat. " * 40
    assert main(["generate", "--checkpoint", str(checkpoint), "--prompt", long, "--max-new-tokens", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "context window" in err and "\n" not in err
    assert main(["generate", "--checkpoint", str(checkpoint), "--prompt", long, "--max-new-tokens", "4",
                 "--truncate", "--temperature", "0"]) == 0


def test_chat_runs_turns(checkpoint, capsys):
    assert main(["chat", "--model", str(checkpoint), "--say", "hello", "--say", "again",
                 "--max-new-tokens", "5", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.count("assistant> ") == 2


def test_missing_model_is_one_line(tmp_path, capsys):
    assert main(["generate", "--checkpoint", str(tmp_path / "nope")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_bench_kv_cache_writes_plot(tmp_path):
    assert main(["bench", "kv-cache", "--out", str(tmp_path), "--preset", "llama-tiny", "--lengths", "16", "64",
                 "--steps", "2"]) == 0
    rows = json.loads((tmp_path / "kv_cache.json").read_text())["rows"]
    assert [r["length"] for r in rows] == [16, 64]
    assert rows[1]["kv_cache_bytes"] == 4 * rows[0]["kv_cache_bytes"]
    assert (tmp_path / "kv_cache.png").stat().st_size > 1000
