"""`llmlab tokenizer ...` end to end, including the one-line errors (exit code 2)."""

import json

from llmlab.cli import main


def test_train_encode_decode_convert_analyze(tmp_path, text, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text[:30_000], encoding="utf-8")
    out = tmp_path / "tok.json"
    assert main(["tokenizer", "train", "--input", str(corpus), "--vocab-size", "400", "--output", str(out),
                 "--special-tokens", "<|endoftext|>", "<|pad|>", "--no-progress"]) == 0
    assert main(["tokenizer", "encode", "-t", str(out), "--text", "hi <|endoftext|>", "--allowed-special", "all"]) == 0
    ids = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ids[-1] == 398
    assert main(["tokenizer", "decode", "-t", str(out), "--ids", *map(str, ids)]) == 0
    assert capsys.readouterr().out == "hi <|endoftext|>\n"
    assert main(["tokenizer", "convert", "-i", str(out), "-o", str(tmp_path / "hf"), "--format", "hf"]) == 0
    assert (tmp_path / "hf" / "tokenizer.json").is_file()
    plot = tmp_path / "plot.png"
    assert main(["tokenizer", "analyze", "-t", str(out), "-t", str(tmp_path / "hf"), "--plot", str(plot)]) == 0
    report = capsys.readouterr().out
    assert "bytes/tok" in report and "zh" in report and "sample:" in report
    assert plot.stat().st_size > 1000


def test_one_line_errors(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "corrupt.json").write_text("{oops")
    (tmp_path / "ok.txt").write_text("some text " * 10)
    cases = [
        (["tokenizer", "train", "-i", str(tmp_path / "missing.txt"), "--vocab-size", "300"], "no such file"),
        (["tokenizer", "train", "-i", str(tmp_path / "empty.txt"), "--vocab-size", "300"], "no text"),
        (["tokenizer", "train", "-i", str(tmp_path / "ok.txt"), "--vocab-size", "100"], "too small"),
        (["tokenizer", "encode", "-t", str(tmp_path / "corrupt.json"), "--text", "x"], "corrupt"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err
    main(["tokenizer", "train", "-i", str(tmp_path / "ok.txt"), "--vocab-size", "300", "-o",
          str(tmp_path / "t.json"), "--no-progress"])
    assert main(["tokenizer", "encode", "-t", str(tmp_path / "t.json"), "--text", "x",
                 "--allowed-special", "<|nope|>"]) == 2
    assert "unknown special token" in capsys.readouterr().err
