"""The command line: one-line errors with exit code 2 for user mistakes, and a toy speedrun end to end."""

import json
import subprocess
import sys

import pytest

from llmlab.cli import main


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("argv, message", [
    (["data", "prepare", "--data", "/no/such/file.txt"], "no such file or folder"),
    (["pretrain", "--data", "/no/such/folder"], "no manifest.json"),
    (["pretrain", "--data", "x", "--device", "cuda:7"], "CUDA is not available"),
    (["generate", "--checkpoint", "/no/such/checkpoint", "--prompt", "hi"], "/no/such/checkpoint"),
])
def test_user_mistakes_are_one_line_errors(argv, message, capsys):
    if "cuda" in " ".join(argv):
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    assert main(argv) == 2
    assert message in _error_line(capsys)


def test_empty_corpus_and_unknown_config_keys(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    assert main(["data", "prepare", "--data", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "d")]) == 2
    assert "no text found" in _error_line(capsys)
    (tmp_path / "cfg.json").write_text(json.dumps({"lr": 0.1, "learning_rate": 0.1}))
    assert main(["pretrain", "--config", str(tmp_path / "cfg.json")]) == 2
    assert "unknown field(s) learning_rate" in _error_line(capsys)
    assert not (tmp_path / "d" / "manifest.json").exists()


def test_resume_with_different_config_from_the_cli(data_dir, tmp_path, capsys):
    common = ["pretrain", "--data", str(data_dir), "--out", str(tmp_path / "run"), "--preset", "llama-tiny",
              "--seq-len", "32", "--batch-size", "2", "--max-steps", "4", "--no-progress", "--eval-tokens", "64"]
    assert main(common + ["--stop-at", "2"]) == 0
    assert main(common + ["--resume", "--lr", "0.01"]) == 2
    assert "other settings (lr: 0.003 -> 0.01)" in _error_line(capsys)


def test_speedrun_toy_end_to_end(corpus_dir, tmp_path):
    """The real entry point, as a user runs it, at a toy size."""
    out = tmp_path / "speedrun"
    cmd = [sys.executable, "-m", "llmlab.cli", "speedrun", "--out", str(out), "--data", str(corpus_dir),
           "--preset", "llama-tiny", "--vocab-size", "300", "--seq-len", "64", "--max-steps", "12",
           "--samples", "2", "--sample-tokens", "16", "--no-progress"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    for key in ("val_bpb", "gzip_bpb", "xz_bpb", "tokens_per_s", "n_params", "tokens_seen", "wall_s"):
        assert isinstance(report[key], (int, float)), key
    assert report["tokens_seen"] == 12 * 8 * 64 and report["steps"] == 12
    assert 0 < report["xz_bpb"] < 8 and 0 < report["gzip_bpb"] < 8
    assert 0 < report["val_bpb"] < 8 * 2  # untrained-ish, but a finite, sane figure
    md = (out / "report.md").read_text()
    assert "bits per byte" in md and "![loss curve](loss.png)" in md
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "checkpoint" / "model.safetensors").is_file()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    assert "Traceback" not in again.stderr
    longer = [a if a != "12" else "16" for a in cmd] + ["--resume"]
    resumed = subprocess.run(longer, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "report.json").read_text())["steps"] == 16


def test_longest_command_prefix_wins_and_help_lists_commands(capsys):
    from llmlab.cli import find_command

    assert find_command(["finetune", "compare", "--max-steps", "2"]) == (("finetune", "compare"), ["--max-steps", "2"])
    assert find_command(["finetune", "--model", "m"]) == (("finetune",), ["--model", "m"])
    assert find_command(["merge", "adapter_dir"]) == (("merge",), ["adapter_dir"])
    assert find_command(["tokenizer"]) is None
    assert main(["--help"]) == 0
    listing = capsys.readouterr().out
    assert "finetune compare" in listing and "speedrun" in listing
    assert main(["tokenizer"]) == 0 and "tokenizer train" in capsys.readouterr().out
    assert main(["no-such-command"]) == 2
    assert "unknown command" in _error_line(capsys)


def test_component_errors_name_the_flag_on_the_command_line():
    from llmlab.cli import as_flags
    from llmlab.recipes.finetune import FinetuneArgs

    msg = "d.jsonl:2: bad; fix the row, or set skip_bad_rows to skip such rows (runs/skip_bad_rows/x, max_steps.)"
    assert as_flags(msg, FinetuneArgs) == ("d.jsonl:2: bad; fix the row, or set --skip-bad-rows to skip such rows "
                                           "(runs/skip_bad_rows/x, --max-steps.)")


def test_every_command_row_names_a_recipe_that_exists(capsys):
    """A typo in the command table would only show when a user types that command: import each one."""
    import dataclasses
    import importlib

    from llmlab.cli import COMMANDS

    for words, (module, args_name, run_name, help_text) in COMMANDS.items():
        recipe = importlib.import_module(module)
        assert dataclasses.is_dataclass(getattr(recipe, args_name)), words
        assert callable(getattr(recipe, run_name)), words
        assert help_text and module.startswith("llmlab.recipes."), words
        with pytest.raises(SystemExit) as e:
            main([*words, "--help"])
        assert e.value.code == 0, words
        assert "usage: llmlab " + " ".join(words) in capsys.readouterr().out
