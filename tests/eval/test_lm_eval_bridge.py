"""lm-eval runs llmlab models through `LlmlabLM`: same numbers as llmlab's own functions and lm-eval's `hf` backend.

The model name "llmlab" is registered with `llmlab.load` as the loader, as the command that wraps
lm-eval's CLI does; the local tasks and the tiny model are test_loglik's.
"""

import ast
from pathlib import Path

import pytest
import torch

import llmlab
from llmlab.common.errors import UserError
from llmlab.eval.multiple_choice import score_multiple_choice
from llmlab.eval.perplexity import perplexity

pytest.importorskip("lm_eval")
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.api.registry import get_model  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402

from llmlab.eval.lm_eval_bridge import LlmlabLM, cli, register  # noqa: E402
from tests.eval.test_loglik import DOCS, MC_ROWS, build_tiny, run_tasks, write_tasks  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """A tiny model gains nothing from more threads, and on a busy machine threads wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_hf")
    build_tiny(directory)
    register(llmlab.load)
    return llmlab.load(directory), directory


def test_only_the_bridge_imports_lm_eval():
    """lm-eval is an optional integration: no other module imports it, not even inside a function."""
    package = Path(llmlab.__file__).parent
    importers = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] == "lm_eval" for n in names):
                importers.add(path.relative_to(package).as_posix())
    assert importers == {"eval/lm_eval_bridge.py"}


def test_registered_model_runs_local_tasks_like_llmlab(tiny, tmp_path):
    lm, directory = tiny
    assert get_model("llmlab") is LlmlabLM and get_model("hf") is HFLM  # lm-eval's own names still resolve
    write_tasks(tmp_path)
    results = run_tasks("llmlab", tmp_path, model_args=f"pretrained={directory},batch_size=3")
    mc = score_multiple_choice(lm, MC_ROWS)
    for key in ["acc", "acc_norm", "acc_stderr", "acc_norm_stderr"]:
        assert results["tiny_mc"][f"{key},none"] == pytest.approx(mc[key], abs=1e-12), key
    ppl = perplexity(lm, DOCS)
    for key in ["word_perplexity", "byte_perplexity", "bits_per_byte"]:
        assert results["tiny_ppl"][f"{key},none"] == pytest.approx(ppl[key], rel=1e-6), key


def test_generate_until_equals_hflm(tiny):
    lm, directory = tiny
    hf = HFLM(pretrained=str(directory), device="cpu", dtype="float32", batch_size=2)
    ours = LlmlabLM(pretrained=lm, batch_size=2)
    settings = [{"until": ["."], "max_gen_toks": 12, "do_sample": False},
                {"until": "\n", "max_gen_toks": 5, "temperature": 0.0}]
    contexts = ["The quick brown", "Question: What is the capital of France?\nAnswer:", "Numbers like 12,", "x"]
    requests = [Instance("generate_until", {}, (c, s), i) for i, (c, s) in
                enumerate((c, s) for s in settings for c in contexts)]
    texts = ours.generate_until(requests, disable_tqdm=True)
    assert texts == hf.generate_until(requests, disable_tqdm=True)
    assert all("." not in t for t in texts[:4]) and all("\n" not in t for t in texts[4:])
    assert any(texts)


def test_loglikelihood_requests_through_the_bridge(tiny):
    lm, _ = tiny
    bridge = LlmlabLM(pretrained=lm, batch_size=2, max_length=32)
    requests = [Instance("loglikelihood", {}, ("Answer:", " Paris"), 0), Instance("loglikelihood", {}, ("", "x"), 1)]
    from llmlab.eval.loglik import loglikelihood

    assert bridge.loglikelihood(requests, disable_tqdm=True) == loglikelihood(lm, [r.args for r in requests])
    rolling = [Instance("loglikelihood_rolling", {}, (DOCS[0],), 0)]
    from llmlab.eval.loglik import loglikelihood_rolling

    assert bridge.loglikelihood_rolling(rolling, disable_tqdm=True) == loglikelihood_rolling(lm, [DOCS[0]], 32)
    assert bridge.apply_chat_template([{"role": "user", "content": "hi"}]).endswith("assistant\n")


def test_bad_model_arguments(tiny, monkeypatch):
    lm, directory = tiny
    monkeypatch.setattr(LlmlabLM, "load_fn", None)
    with pytest.raises(UserError, match="no loader is registered"):
        LlmlabLM(pretrained=str(directory))
    register(llmlab.load)
    with pytest.raises(UserError, match="dtype 'int8': use one of"):
        LlmlabLM(pretrained=str(directory), dtype="int8")
    with pytest.raises(UserError, match="leaves no room for a prompt"):
        LlmlabLM(pretrained=lm).generate_until([Instance("generate_until", {}, ("a", {"max_gen_toks": 64}), 0)],
                                               disable_tqdm=True)


@pytest.mark.slow
def test_lm_eval_command_line(tiny, tmp_path, capsys):
    """`cli(llmlab.load, argv)` is `lm_eval --model llmlab ...` (slow: lm-eval indexes all its own tasks)."""
    lm, directory = tiny
    write_tasks(tmp_path)
    cli(llmlab.load, ["--model", "llmlab", "--model_args", f"pretrained={directory}", "--tasks", "tiny_mc",
                      "--include_path", str(tmp_path), "--device", "cpu"])
    out = capsys.readouterr().out
    acc = score_multiple_choice(lm, MC_ROWS)["acc"]
    assert "tiny_mc" in out and f"{acc:.4f}" in out
