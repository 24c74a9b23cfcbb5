"""Log-likelihood, perplexity and multiple choice equal lm-evaluation-harness's `hf` backend on the same model.

A tiny llmlab model is saved with `save_pretrained`; lm-eval's HFLM loads that folder through
transformers, and both score the same requests. The local lm-eval tasks (a multiple-choice JSONL and a
loglikelihood_rolling JSONL) run through `lm_eval.simple_evaluate`, lm-eval's own metric code.
"""

import json
import math
import os

import pytest
import torch

from llmlab.common.errors import UserError
from llmlab.eval.loglik import (
    batches,
    encode_pair,
    loglikelihood,
    loglikelihood_rolling,
    pack_row,
    rolling_windows,
    score_pairs,
    score_rows,
)
from llmlab.eval.multiple_choice import score_multiple_choice, softmax
from llmlab.eval.perplexity import count_words, perplexity
from llmlab.eval.stats import mean_stderr
from llmlab.infer.pretrained import Pretrained
from llmlab.models import Transformer, get_preset
from llmlab.tokenizer import Tokenizer

lm_eval = pytest.importorskip("lm_eval")
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402

CORPUS = ("The quick brown fox jumps over the lazy dog. Question: What is the capital of France? Answer: Paris.\n"
          "Numbers like 12, 345 and 6789 appear; so do words: alpha beta gamma delta. Café, naïve, 日本.\n") * 30
REQUESTS = [
    ("Question: What is the capital of France?\nAnswer:", " Paris"),
    ("Question: What is the capital of France?\nAnswer:", " Rome"),
    ("Question: What is the capital of France?\nAnswer:", " P"),  # one-token choices share a forward pass
    ("Question: What is the capital of France?\nAnswer:", " R"),
    ("Answer: ", "Paris."),  # trailing space moves to the continuation
    ("Answer:  \n", "Paris"),
    ("", "The quick brown fox"),  # empty context: the EOS prefix token
    ("<|endoftext|>", " jumps"),  # special-token text is the special token
    ("Café ", "naïve 日本"),
    ("x", "y"),
    ("The lazy dog " * 20, " jumps over the lazy dog"),  # longer than the window: cut on the left
    ("Numbers like", " 12, 345 and 6789"),
    ("Numbers like", " 12, 345 and 6789"),  # a duplicate
]
MC_ROWS = [{"question": f"What is {a} plus {b}?", "choices": [str(a + b), str(a + b + 1), "fox", "the lazy dog"],
            "answer": (a * b + a) % 4} for a in range(3) for b in range(4)]
DOCS = [CORPUS[:700], " alpha  beta\n gamma 日本 ", CORPUS[100:300], "x"]


def build_tiny(directory) -> Pretrained:
    """A 2-layer Llama with a 400-token BPE, saved as a Hugging Face folder; large init for peaked logits."""
    tok = Tokenizer.train(CORPUS, 400, special_tokens=("<|endoftext|>",))
    torch.manual_seed(0)
    config = get_preset("llama-tiny", n_layer=2, n_embd=64, vocab_size=tok.vocab_size, seq_len=64, init_std=0.3)
    lm = Pretrained(Transformer(config).eval(), tok, str(directory))
    lm.save_pretrained(directory)
    return lm


def write_tasks(directory) -> None:
    """Two lm-eval tasks over local JSONL files: tiny_mc (multiple_choice) and tiny_ppl (loglikelihood_rolling)."""
    data = {"mc": MC_ROWS, "ppl": [{"text": d} for d in DOCS]}
    for name, rows in data.items():
        (directory / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    common = (f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {directory}/{{name}}.jsonl\n"
              f"  cache_dir: {directory}/cache\ntest_split: test\n")
    (directory / "mc.yaml").write_text(
        "task: tiny_mc\n" + common.format(name="mc") +
        'output_type: multiple_choice\ndoc_to_text: "Question: {{question}}\\nAnswer:"\n'
        'doc_to_target: "{{answer}}"\ndoc_to_choice: "{{choices}}"\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    (directory / "ppl.yaml").write_text(
        "task: tiny_ppl\n" + common.format(name="ppl") +
        'output_type: loglikelihood_rolling\ndoc_to_text: ""\ndoc_to_target: "{{text}}"\n'
        "metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n  - metric: bits_per_byte\n")


def run_tasks(model, task_dir, model_args: str | None = None) -> dict:
    """lm-eval's results for the two local tasks, offline, without indexing lm-eval's own task folders."""
    from lm_eval.tasks import TaskManager

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    return lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=["tiny_mc", "tiny_ppl"],
                                   task_manager=manager)["results"]


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
    lm = build_tiny(directory)
    hf = HFLM(pretrained=str(directory), device="cpu", dtype="float32", batch_size=3)
    return lm, hf, directory


def hf_loglikelihood(hf, requests):
    return hf.loglikelihood([Instance("loglikelihood", {}, r, i) for i, r in enumerate(requests)], disable_tqdm=True)


def test_hf_tokenizer_gives_the_same_ids(tiny):
    lm, hf, _ = tiny
    for text in [c + x for c, x in REQUESTS] + DOCS:
        assert lm.tokenizer.encode(text, allowed_special="all") == hf.tok_encode(text)


def test_encode_pair_moves_trailing_space_and_uses_the_prefix_token(tiny):
    tok = tiny[0].tokenizer
    assert encode_pair(tok, "Answer: ", "Paris") == encode_pair(tok, "Answer:", " Paris")
    ctx, cont = encode_pair(tok, "Answer:", " Paris")
    assert ctx + cont == tok.encode("Answer: Paris")
    assert encode_pair(tok, "", "fox") == ([tok.eos_id], tok.encode("fox"))
    assert encode_pair(tok, "", "<|endoftext|>fox") == ([tok.eos_id], tok.encode("fox"))
    assert encode_pair(tok, "  ", "fox") == ([tok.eos_id], tok.encode("  fox"))  # lm-eval asserts here


def test_rolling_windows_equal_lm_eval():
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    assert rolling_windows(list(range(10)), -1, 4) == [([-1], [0, 1, 2, 3]), ([3], [4, 5, 6, 7]), ([5, 6, 7], [8, 9])]
    for n in [0, 1, 3, 4, 5, 9, 17, 40]:
        for max_length in [1, 2, 4, 7]:
            for stride in range(1, max_length + 1):
                ours = rolling_windows(list(range(n)), -1, max_length, stride)
                theirs = [make_disjoint_window(w) for w in get_rolling_token_windows(
                    list(range(n)), -1, max_length, context_len=max_length - stride + 1)]
                assert ours == theirs, (n, max_length, stride)
                assert [t for _, cont in ours for t in cont] == list(range(n))  # every token scored once


def test_loglikelihood_equals_hflm(tiny):
    lm, hf, _ = tiny
    theirs = hf_loglikelihood(hf, REQUESTS)
    for batch_size in [1, 5]:
        ours = loglikelihood(lm, REQUESTS, batch_size=batch_size)
        for (a, greedy_a), (b, greedy_b) in zip(ours, theirs, strict=True):
            assert a == pytest.approx(b, abs=1e-4) and greedy_a == greedy_b
    assert loglikelihood(lm, [("Answer:", "")]) == [(0.0, True)]


def test_greedy_continuation_is_flagged(tiny):
    lm, hf, _ = tiny
    requests = []
    for context in ["Question: What is", "The quick", "alpha beta", "Numbers", "Café", "12, 345"]:
        for n in [3, 2, 1]:
            greedy = lm.generate(lm.encode(context), n, temperature=0.0, eos_id=None)
            continuation = lm.tokenizer.decode(greedy)
            if encode_pair(lm.tokenizer, context, continuation)[1] == greedy:  # the text cuts into those tokens
                requests = [(context, continuation), (context, continuation + "x")]
                break
        if requests:
            break
    ours, theirs = loglikelihood(lm, requests), hf_loglikelihood(hf, requests)
    assert [g for _, g in ours] == [g for _, g in theirs] == [True, False]


def test_packing_and_batching_golden():
    assert pack_row([5, 6], [[7, 8], [9], [3, 4, 2]]) == (
        [5, 6, 7, 3, 4], [0, 1, 2, 2, 3], [0, 0, 1, 3, 3], [[1, 2], [1], [1, 3, 4]])
    rows = [([0] * n, [(0, [1])]) for n in [9, 5, 5, 2]]
    assert [[len(r[0]) for r in b] for b in batches(rows, 3, 10)] == [[9], [5, 5], [2]]


def test_token_budget_changes_batches_not_results(tiny):
    lm = tiny[0]
    pairs = rolling_windows(lm.encode(CORPUS[:800]), lm.tokenizer.eos_id, 16)
    one_by_one, together = score_pairs(lm.model, pairs, 16, max_batch_tokens=20), score_pairs(lm.model, pairs, 16)
    assert [ll for ll, _ in one_by_one] == pytest.approx([ll for ll, _ in together], abs=1e-4)


def test_continuations_packed_in_one_row_equal_separate_runs(tiny):
    lm = tiny[0]
    context = lm.encode("The quick brown fox")
    continuations = [[7, 8], [9], [3, 4, 2], [5, 5, 5, 5]]
    packed, (short,) = score_rows(lm.model, [(context, continuations), ([1, 2], [[3]])])  # the second is padded
    for cont, (logprob, greedy) in zip(continuations, packed, strict=True):
        with torch.no_grad():
            logp = lm.model(torch.tensor([context + cont[:-1]])).log_softmax(-1)[0, -len(cont):]  # (n, V)
        assert logprob == pytest.approx(logp.gather(1, torch.tensor(cont)[:, None]).sum().item(), abs=1e-5)
        assert greedy == (logp.argmax(-1).tolist() == cont)
    with torch.no_grad():
        assert short[0] == pytest.approx(lm.model(torch.tensor([[1, 2]])).log_softmax(-1)[0, -1, 3].item(), abs=1e-5)


@pytest.mark.parametrize("max_length", [None, 16])
def test_loglikelihood_rolling_equals_hflm(tiny, max_length, monkeypatch):
    lm, hf, _ = tiny
    monkeypatch.setattr(hf, "_max_length", max_length)  # HFLM(max_length=16): more windows per document
    texts = DOCS + ["", CORPUS[:2000]]
    assert len(lm.encode(texts[-1])) > 2 * (max_length or 64)
    theirs = hf.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)],
                                      disable_tqdm=True)
    ours = loglikelihood_rolling(lm, texts, max_length=max_length, batch_size=4)
    assert ours == pytest.approx(theirs, rel=1e-6, abs=1e-4)


def test_stride_scores_each_token_once_with_more_context(tiny, monkeypatch):
    lm, hf, _ = tiny
    # lm-eval's logits cache groups requests by context + continuation[:-1] and then gathers a shorter
    # continuation's log-probs from the *first* positions of the longest one's: this periodic text has two
    # such windows, and lm-eval mis-scores one of them. Without the cache it scores each request alone.
    monkeypatch.setattr(hf, "logits_cache", False)
    text = CORPUS[:600]
    tokens = lm.encode(text)
    windows = rolling_windows(tokens, lm.tokenizer.eos_id, 16, stride=4)
    theirs = hf._loglikelihood_tokens([(None, ctx, cont) for ctx, cont in windows], disable_tqdm=True)
    strided = loglikelihood_rolling(lm, [text], max_length=16, stride=4)[0]
    assert strided == pytest.approx(sum(ll for ll, _ in theirs), rel=1e-6)
    assert strided != pytest.approx(loglikelihood_rolling(lm, [text], max_length=16)[0], rel=1e-3)


def test_local_tasks_equal_lm_eval(tiny, tmp_path):
    """Multiple choice and perplexity equal lm-eval's own task pipeline and metrics on the same rows."""
    lm, hf, _ = tiny
    write_tasks(tmp_path)
    results = run_tasks(hf, tmp_path)
    mc = score_multiple_choice(lm, MC_ROWS, batch_size=4)
    for key in ["acc", "acc_norm", "acc_stderr", "acc_norm_stderr"]:
        assert mc[key] == pytest.approx(results["tiny_mc"][f"{key},none"], abs=1e-9), key
    assert 0 < mc["acc"] < 1 and mc["acc"] != mc["acc_norm"]  # the rows tell the two metrics apart
    ppl = perplexity(lm, DOCS)
    for key in ["word_perplexity", "byte_perplexity", "bits_per_byte"]:
        assert ppl[key] == pytest.approx(results["tiny_ppl"][f"{key},none"], rel=1e-6), key


def test_multiple_choice_records_match_lm_eval_scoring(tiny):
    from lm_eval.utils import softmax as lm_eval_softmax

    lm, hf, _ = tiny
    result = score_multiple_choice(lm, MC_ROWS[:3], template="Q: {question}\nA:")
    for row, record in zip(MC_ROWS[:3], result["records"], strict=True):
        lls = [ll for ll, _ in hf_loglikelihood(hf, [(f"Q: {row['question']}\nA:", " " + c) for c in row["choices"]])]
        assert record["loglikelihoods"] == pytest.approx(lls, abs=1e-4)
        assert record["pred"] == max(range(4), key=lls.__getitem__)
        assert record["pred_norm"] == max(range(4), key=lambda i: lls[i] / len(row["choices"][i]))
        assert record["probs"] == pytest.approx(list(lm_eval_softmax(lls)), abs=1e-6)
    assert result["n"] == 3


def test_metric_helpers_against_lm_eval():
    from lm_eval.api.metrics import mean_stderr as lm_eval_stderr

    values = [0.0, 1.0, 1.0, 0.0, 1.0]
    assert mean_stderr(values)[1] == pytest.approx(lm_eval_stderr(values))
    assert math.isnan(mean_stderr([1.0])[1])
    assert softmax([0.0, math.log(3)]) == pytest.approx([0.25, 0.75])
    assert [count_words(s) for s in ["a  b\nc", " a", "", "a b "]] == [3, 2, 1, 3]


def test_perplexity_units_and_per_document(tiny):
    lm = tiny[0]
    one = perplexity(lm, DOCS[0])
    assert one["documents"] == 1 and one["per_document"][0]["loglikelihood"] == pytest.approx(one["loglikelihood"])
    assert one["bits_per_byte"] == pytest.approx(math.log2(one["byte_perplexity"]))
    assert one["token_perplexity"] == pytest.approx(math.exp(-one["loglikelihood"] / one["tokens"]))
    both = perplexity(lm, DOCS[:2])
    assert both["bytes"] == len(DOCS[0].encode()) + len(DOCS[1].encode())
    assert both["words"] == count_words(DOCS[0]) + count_words(DOCS[1])


@pytest.mark.parametrize("row, message", [
    ({"question": "q", "choices": [], "answer": 0}, r"rows\[1\]: needs a non-empty list of choices"),
    ({"question": "q", "answer": 0}, r"rows\[1\]: needs a non-empty list of choices"),
    ({"question": "q", "choices": ["a", "b"], "answer": 2}, r"rows\[1\]: answer must be the index .*0\.\.1.*got 2"),
    ({"question": "q", "choices": ["a", "b"], "answer": "a"}, r"rows\[1\]: answer must be"),
    ({"question": "q", "choices": ["a", ""], "answer": 0}, r"rows\[1\]: choice 1 must be a non-empty string"),
    ({"choices": ["a", "b"], "answer": 0}, r"rows\[1\]: the template names 'question'"),
    ({"choices": ["a"], "answer": 1, "_source": "qa.jsonl:12"}, r"^qa\.jsonl:12: answer must be"),
    ("not a dict", r"rows\[1\]: expected a dict"),
])
def test_multiple_choice_bad_rows(tiny, row, message):
    with pytest.raises(UserError, match=message):
        score_multiple_choice(tiny[0], [MC_ROWS[0], row])


def test_bad_inputs(tiny):
    lm = tiny[0]
    with pytest.raises(UserError, match="no questions"):
        score_multiple_choice(lm, [])
    with pytest.raises(UserError, match="not a valid format string"):
        score_multiple_choice(lm, MC_ROWS, template="Question: {question")
    with pytest.raises(UserError, match=r"requests\[1\]: expected a \(context, continuation\) pair"):
        loglikelihood(lm, [("a", "b"), ("only context",)])
    with pytest.raises(UserError, match=r"requests\[1\]: the continuation 'e' has no tokens of its own"):
        loglikelihood(lm, [("a", "b"), ("Th", "e")])  # "The" is one token
    with pytest.raises(UserError, match=r"requests\[0\]: the continuation is \d+ tokens, longer than max_length"):
        loglikelihood(lm, [("a", " fox" * 40)], max_length=8)
    with pytest.raises(UserError, match="longer than the model's context window"):
        loglikelihood(lm, [("a", "b")], max_length=65)
    with pytest.raises(UserError, match="stride must be between 1 and max_length"):
        loglikelihood_rolling(lm, ["some text"], stride=100)
    with pytest.raises(UserError, match="wrap a single text in a list"):
        loglikelihood_rolling(lm, "some text")
    with pytest.raises(UserError, match="no text to score"):
        perplexity(lm, ["", ""])
    with pytest.raises(UserError, match="has no tokenizer"):
        loglikelihood(Pretrained(lm.model, None, "weights.safetensors"), [("a", "b")])


@pytest.mark.slow
def test_smollm2_equals_hflm(tmp_path):
    """The real model: SmolLM2-135M-Instruct exported with save_pretrained, scored by both."""
    import llmlab

    lm = llmlab.load("smollm2-135m-instruct")
    lm.save_pretrained(tmp_path)
    # save_hf leaves special tokens out of tokenizer.json's model vocab; `tokenizers` then gives them new
    # ids after the vocabulary (SmolLM2's are 0..16, "<|endoftext|>" becomes 49135). Put them back (a no-op
    # once save_hf writes them) so that HF reads the same tokenizer.
    data = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    data["model"]["vocab"].update({t["content"]: t["id"] for t in data["added_tokens"]})
    (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    hf = HFLM(pretrained=str(tmp_path), device="cpu", dtype="float32", batch_size=4)
    requests = [r for r in REQUESTS if r != ("x", "y")]  # "xy" is one SmolLM2 token: nothing left to score
    for text in [c + x for c, x in requests]:
        assert lm.tokenizer.encode(text, allowed_special="all") == hf.tok_encode(text)
    ours = loglikelihood(lm, requests)
    for (a, greedy_a), (b, greedy_b) in zip(ours, hf_loglikelihood(hf, requests), strict=True):
        assert a == pytest.approx(b, abs=1e-3) and greedy_a == greedy_b
    texts = [CORPUS[:1500]]
    rolling = hf.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (texts[0],), 0)], disable_tqdm=True)
    assert loglikelihood_rolling(lm, texts) == pytest.approx(rolling, rel=5e-5)  # 30 layers of float32 sums
