"""`llmlab eval` end to end on tiny models: task files and their errors, every task kind, several models,
the report, and lite-eval over several checkpoints."""

import json

import pytest
import torch

import llmlab
from llmlab.cli import main
from llmlab.common import log
from llmlab.common.errors import UserError
from llmlab.eval.runner import evaluate
from llmlab.eval.tasks import resolve_task
from llmlab.infer.pretrained import Pretrained
from llmlab.models import Transformer, get_preset
from llmlab.recipes.evaluate import EvalArgs, LiteArgs, lite
from llmlab.recipes.evaluate import run as run_eval
from llmlab.tokenizer import Tokenizer

TEXT = "The capital of France is Paris. The capital of Italy is Rome. Two plus two is four. " * 40
MC_ROWS = [{"question": "The capital of France is", "choices": ["Paris", "Rome", "four"], "answer": 0},
           {"question": "The capital of Italy is", "choices": ["Paris", "Rome"], "answer": 1},
           {"question": "Two plus two is", "choices": ["four", "Rome", "Paris"], "answer": 0}]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Three tiny models saved as llmlab checkpoints (steps 1, 2, 3) sharing one tokenizer."""
    from llmlab.common.checkpoint import save_checkpoint

    log.set_quiet(True)
    tok = Tokenizer.train(TEXT, 300, special_tokens=("<|endoftext|>",))
    root = tmp_path_factory.mktemp("models")
    paths = []
    for step in (1, 2, 3):
        torch.manual_seed(step)
        model = Transformer(get_preset("llama-tiny", n_layer=1, n_embd=32, vocab_size=tok.vocab_size, seq_len=64))
        save_checkpoint(root / f"run{step}" / "checkpoint", model, {"step": step}, tokenizer=tok)
        paths.append(str(root / f"run{step}"))
    return paths


@pytest.fixture
def files(tmp_path):
    (tmp_path / "capitals.jsonl").write_text("".join(json.dumps(r) + "\n" for r in MC_ROWS))
    (tmp_path / "notes.txt").write_text(TEXT[:600])
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps({"q": r["question"], "a": r["choices"][r["answer"]]}) + "\n"
                                               for r in MC_ROWS))
    (tmp_path / "qa.yaml").write_text("kind: generate\ndata: qa.jsonl\ntemplate: '{q}'\nanswer_field: a\n"
                                      "metrics: [exact_match, f1]\nmax_new_tokens: 4\nchat: false\n")
    return tmp_path


def test_one_model_every_kind_and_the_files_it_writes(models, files, tmp_path):
    out = tmp_path / "out"
    tasks = f"{files / 'capitals.jsonl'},{files / 'notes.txt'},{files / 'qa.yaml'},tasks-qa"
    results = run_eval(EvalArgs(model=[models[0]], tasks=[tasks], out=str(out), limit=3, progress=False))
    r = json.loads((out / "results.json").read_text())
    assert r == json.loads(json.dumps(results["run1"]))  # results.json maps task -> metrics
    assert set(r) == {"capitals", "notes", "qa", "tasks-qa"}
    assert 0 <= r["capitals"]["acc"] <= 1 and r["capitals"]["n"] == 3 and "acc_norm_stderr" in r["capitals"]
    assert r["notes"]["word_perplexity"] > 1 and r["notes"]["bits_per_byte"] > 0
    assert {"exact_match", "exact_match_stderr", "f1"} <= set(r["qa"]) and r["tasks-qa"]["n"] == 3
    samples = [json.loads(line) for line in (out / "samples" / "qa.jsonl").read_text().splitlines()]
    assert len(samples) == 3 and {"prompt", "answer", "reference", "exact_match"} <= set(samples[0])
    report = (out / "report.md").read_text()
    assert "| capitals | acc |" in report and (out / "scores.png").stat().st_size > 1000
    assert (out / "reliability.png").is_file()


def test_several_checkpoints_side_by_side_and_lite_eval(models, files, tmp_path):
    out = tmp_path / "out"
    run_eval(EvalArgs(model=models, tasks=[str(files / "capitals.jsonl"), "stdlib-mc"], out=str(out), limit=12,
                      progress=False))
    assert all((out / f"run{i}" / "results.json").is_file() for i in (1, 2, 3))
    assert json.loads((out / "run.json").read_text())["steps"] == {"run1": 1, "run2": 2, "run3": 3}
    assert "| capitals | acc | " in (out / "report.md").read_text() and (out / "by_step.png").is_file()
    rows = lite(LiteArgs(run=str(out), sizes=[3, 6, 15], draws=20))
    assert {r["method"] for r in rows} >= {"random", "stratified"} and (out / "lite.png").is_file()
    assert all(-1 <= r["spearman"] <= 1 for r in rows)


def test_code_tasks_need_permission_and_then_run_in_the_sandbox(models, tmp_path, capsys):
    assert main(["eval", "--model", models[0], "--tasks", "python", "--limit", "2", "--out", str(tmp_path),
                 "--no-progress"]) == 2
    assert "--allow-code-execution" in capsys.readouterr().err
    results = run_eval(EvalArgs(model=[models[0]], tasks=["python"], limit=2, out=str(tmp_path / "c"),
                                allow_code_execution=True, progress=False))
    assert results["run1"]["python"]["pass@1"] == 0.0  # a random tiny model writes no working function
    samples = (tmp_path / "c" / "samples" / "python.jsonl").read_text().splitlines()
    assert len(samples) == 2 and json.loads(samples[0])["result"].startswith("failed")


@pytest.mark.parametrize("row, message", [
    ({"question": "q", "answer": 0}, "needs 'choices'"),
    ({"question": "q", "choices": ["a", "b"], "answer": 2}, "answer 2 is not an index"),
    ({"choices": ["a", "b"], "answer": 0}, "row lacks question"),
])
def test_bad_rows_name_file_and_line(models, tmp_path, capsys, row, message):
    good = json.dumps(MC_ROWS[0])
    (tmp_path / "bad.jsonl").write_text(f"{good}\n{json.dumps(row)}\n")
    assert main(["eval", "--model", models[0], "--tasks", str(tmp_path / "bad.jsonl"), "--out",
                 str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "bad.jsonl:2: " in err and message in err


def test_bad_task_files(tmp_path):
    (tmp_path / "t.yaml").write_text("kind: generate\ndata: x.jsonl\nmetrics: [accuracy]\n")
    with pytest.raises(UserError, match="t.yaml: unknown metric 'accuracy'"):
        resolve_task(str(tmp_path / "t.yaml"))
    (tmp_path / "t.yaml").write_text("kind: guessing\n")
    with pytest.raises(UserError, match="unknown task kind 'guessing'"):
        resolve_task(str(tmp_path / "t.yaml"))
    (tmp_path / "t.yaml").write_text("kind: generate\nprompt: x\n")
    with pytest.raises(UserError, match="unknown field"):
        resolve_task(str(tmp_path / "t.yaml"))
    with pytest.raises(UserError, match="not a built-in task"):
        resolve_task("nonsense")
    (tmp_path / "qa.jsonl").write_text('{"q": "x"}\n')
    (tmp_path / "t.yaml").write_text("kind: generate\ndata: qa.jsonl\ntemplate: '{q} {year}'\nanswer_field: q\n")
    tok = Tokenizer.train(TEXT, 300, special_tokens=("<|endoftext|>",))
    lm = Pretrained(Transformer(get_preset("llama-tiny", n_layer=1, n_embd=32, vocab_size=tok.vocab_size)), tok, "t")
    with pytest.raises(UserError, match=r"qa.jsonl:1: row lacks year"):
        evaluate(lm, resolve_task(str(tmp_path / "t.yaml")), progress=False)


PUBLIC_ROWS = {
    "gsm8k": [{"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = 7\n#### 7"}],
    "humaneval": [{"task_id": "t/0", "prompt": "def add(a, b):\n", "canonical_solution": "    return a + b\n",
                   "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n", "entry_point": "add"}],
    "mbpp": [{"task_id": 1, "text": "Write a function to add two numbers.", "code": "def add(a, b):\n    return a+b",
              "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]}],
    "hellaswag": [{"activity_label": "Cooking", "ctx": "He cracks the egg and", "endings": ["fries it.", "sings.",
                                                                                            "flies.", "reads."],
                   "label": "0"}],
    "arc": [{"question": "Which is a planet?", "choices": {"text": ["Mars", "Moon", "Sun"], "label": ["A", "B", "C"]},
             "answerKey": "A"}],
    "mmlu": [{"question": "2 + 2 =", "choices": ["3", "4", "5", "22"], "answer": 1}],
}


@pytest.mark.parametrize("fmt", list(PUBLIC_ROWS))
def test_public_formats_from_local_files(models, tmp_path, fmt):
    from llmlab.eval.code import check, humaneval_program
    from llmlab.eval.runner import load_rows

    path = tmp_path / f"{fmt}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in PUBLIC_ROWS[fmt]))
    spec = resolve_task(f"{fmt}={path}")
    rows = load_rows(spec)
    assert spec.name == fmt and rows[0]["_source"] == f"{path}:1"
    if spec.kind == "code":  # the known-good solution passes the converted test
        solution = "    return a + b\n" if fmt == "humaneval" else "def add(a, b):\n    return a + b\n"
        program, test = humaneval_program(rows[0], solution if fmt == "humaneval" else "")
        assert check(program + ("" if fmt == "humaneval" else solution), test)["passed"]
    elif spec.kind == "multiple_choice":
        assert rows[0]["choices"][rows[0]["answer"]] in ("fries it.", "Mars", "4")
        metrics, samples = evaluate(llmlab.load(models[0]), spec, progress=False)
        assert metrics["n"] == 1 and len(samples[0]["loglikelihoods"]) == len(rows[0]["choices"])
    else:
        assert rows[0]["answer"].endswith("#### 7")
    (tmp_path / "bad.jsonl").write_text('{"question": "q"}\n')
    with pytest.raises(UserError, match=f"bad.jsonl:1: not a {fmt} row"):
        load_rows(resolve_task(f"{fmt}={tmp_path / 'bad.jsonl'}"))


def test_a_judge_grades_answers_and_its_agreement_is_reported(models, files):
    from llmlab.recipes.evaluate import judge_notes

    class Judge:  # grades by answer length: a scripted stand-in for a model or an endpoint
        def chat(self, messages, max_new_tokens=256, temperature=0.0):
            answer = messages[-1]["content"]
            return f"Rating: [[{1 + len(answer) % 10}]]"

    spec = resolve_task(str(files / "qa.yaml"))
    metrics, samples = evaluate(llmlab.load(models[0]), spec, judge=Judge(), progress=False)
    assert 1 <= metrics["judge_score"] <= 10 and metrics["judge_unparseable"] == 0
    assert all(s["judge_score"] is not None for s in samples)
    agreement = metrics["judge_agreement"]
    assert agreement["metric"] == "exact_match" and agreement["n"] == 3
    notes = "\n".join(judge_notes({"run1": {"qa": metrics}}))
    assert "| run1 | qa |" in notes and "exact_match" in notes
