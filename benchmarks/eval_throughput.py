"""Multiple-choice scoring throughput: llmlab's log-likelihood against lm-evaluation-harness's HF backend (HFLM).

Same weights (SmolLM2-135M-Instruct from llmlab.load, exported with save_pretrained for HFLM to load through
transformers; or --model random: a random llama-small with SmolLM2's tokenizer), same generated rows
(--rows questions, 4 choices of 1-6 words each), same batch size, one process, runs alternated; the best of
--repeats each (`best_seconds`). Both score every choice as " " + choice after "Question: ...\\nAnswer:";
the benchmark also checks that their log-likelihoods and accuracies agree. Last line: one JSON object.

    python benchmarks/eval_throughput.py --model smollm2 --rows 100 --batch-size 16 --threads 2

On a shared machine use --threads at most the idle cores (oversubscribed OpenMP threads stall every matmul).
"""

import argparse
import json
import random
import tempfile

import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

import llmlab
from llmlab.common.measure import best_seconds
from llmlab.eval.multiple_choice import TARGET_DELIMITER, argmax, score_multiple_choice
from llmlab.infer.pretrained import Pretrained
from llmlab.models import Transformer, get_preset

WORDS = ("red green blue small large old new quick slow bright dark apple river mountain city forest window "
         "teacher doctor engine garden market ocean planet silver golden winter summer morning evening").split()


def make_rows(n: int, seed: int = 0) -> list[dict]:
    """n questions of varied length, each with 4 choices of 1-6 words and a random answer index."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        topic = " ".join(rng.choices(WORDS, k=rng.randint(3, 20)))
        choices = [" ".join(rng.choices(WORDS, k=rng.randint(1, 6))) for _ in range(4)]
        rows.append({"question": f"Which phrase best continues: {topic}?", "choices": choices,
                     "answer": rng.randrange(4)})
    return rows


def load_models(kind: str, directory: str, device: str, batch_size: int):
    """(llmlab Pretrained, lm-eval HFLM) holding the same weights."""
    lm = llmlab.load("smollm2-135m-instruct", device=device)
    if kind == "random":
        torch.manual_seed(0)
        config = get_preset("llama-small", vocab_size=lm.tokenizer.vocab_size, seq_len=2048)
        lm = Pretrained(Transformer(config).to(device).eval(), lm.tokenizer, "random llama-small")
    lm.save_pretrained(directory)
    hf = HFLM(pretrained=directory, device=device, dtype="float32", batch_size=batch_size)
    return lm, hf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["smollm2", "random"], default="smollm2")
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = make_rows(args.rows)
    template = "Question: {question}\nAnswer:"
    requests = [Instance("loglikelihood", {}, (template.format(**r), TARGET_DELIMITER + c), i)
                for i, (r, c) in enumerate((r, c) for r in rows for c in r["choices"])]
    with tempfile.TemporaryDirectory() as directory:
        lm, hf = load_models(args.model, directory, args.device, args.batch_size)

        def run_llmlab():
            return score_multiple_choice(lm, rows, template, batch_size=args.batch_size)

        def run_lm_eval():
            lls = [ll for ll, _ in hf.loglikelihood(requests, disable_tqdm=True)]
            preds = [argmax(lls[4 * i:4 * i + 4]) for i in range(len(rows))]
            return lls, sum(p == r["answer"] for p, r in zip(preds, rows, strict=True)) / len(rows)

        ours, (theirs, their_acc) = run_llmlab(), run_lm_eval()  # warm-up, and the agreement check
        t_ours, t_hf = float("inf"), float("inf")
        for _ in range(args.repeats):  # alternate, so both see the same machine state
            t_ours = min(t_ours, best_seconds(run_llmlab, 1, args.device))
            t_hf = min(t_hf, best_seconds(run_lm_eval, 1, args.device))
    our_lls = [ll for record in ours["records"] for ll in record["loglikelihoods"]]
    result = {"model": args.model, "device": args.device, "threads": args.threads, "rows": len(rows),
              "requests": len(requests), "batch_size": args.batch_size, "llmlab_s": t_ours, "lm_eval_hf_s": t_hf,
              "ratio_lm_eval_over_llmlab": t_hf / t_ours, "acc_llmlab": ours["acc"], "acc_lm_eval": their_acc,
              "max_abs_loglik_diff": max(abs(a - b) for a, b in zip(our_lls, theirs, strict=True))}
    print(f"llmlab        {t_ours:8.3f} s  ({len(requests) / t_ours:7.1f} requests/s)")
    print(f"lm-eval HFLM  {t_hf:8.3f} s  ({len(requests) / t_hf:7.1f} requests/s)")
    print(f"ratio         {t_hf / t_ours:.2f}x   max |loglik diff| {result['max_abs_loglik_diff']:.2e}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
