"""The pieces of the RAG-against-fine-tuning lab: fine-tune on the knowledge, score a system, plot the table.

A "system" is a generator (a loaded model) with or without an index. `score_system` asks it every held-out
question, strips citations like [1] from the reply, and scores the reply with the evaluation stage's SQuAD
exact match and token F1 (`llmlab.eval.answers`); with an index it also records retrieval recall@k (is the
question's source among the retrieved chunks?) and per-answer latency. `finetune_on` trains a copy of the
model on conversations (the training pairs, and each document as a "what does ... say" answer) with a
fine-tuning method from `llmlab.finetune.methods` (LoRA by default), the SFT loss and the shared loop;
nothing is saved. Held-out questions are never trained on.
"""

import re
import time
from pathlib import Path
from typing import Any

import torch

from llmlab.common.io import atomic_write
from llmlab.data import sft
from llmlab.data.loader import EpochBatches
from llmlab.eval.answers import exact_match, f1
from llmlab.finetune.methods import apply_method
from llmlab.models.gpt import count_parameters
from llmlab.rag.rag import answer
from llmlab.train.loop import LoopSettings, TrainState, train_loop
from llmlab.train.objectives import sft_loss
from llmlab.train.optim import make_adamw

CITATION = re.compile(r"\[\d+\]")
INSTRUCTION = " Reply with the answer only: one word or name."


def conversations(pairs: list, documents: list, doc_chars: int = 600) -> list[list[dict]]:
    """SFT conversations: each training pair, and each document's first `doc_chars` characters as the answer
    to "What does the Python documentation say in <source>?" (the documents the model should absorb)."""
    rows = [[{"role": "user", "content": q.question + INSTRUCTION}, {"role": "assistant", "content": q.answer}]
            for q in pairs]
    rows += [[{"role": "user", "content": f"What does the Python documentation say in {d.source}?"},
              {"role": "assistant", "content": d.text[:doc_chars]}] for d in documents]
    return rows


def finetune_on(model: torch.nn.Module, tokenizer: Any, convs: list[list[dict]], method: str = "lora",
                steps: int = 60, lr: float = 2e-3, batch_size: int = 8, seq_len: int = 256, rank: int = 16,
                seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Train `model` in place on the conversations; returns {seconds, final_loss, trainable_params, history}."""
    torch.manual_seed(seed)
    examples = sft.tokenize_dataset(tokenizer, convs, min(seq_len, model.config.seq_len))
    model, _ = apply_method(model, {"name": method, "rank": rank, "alpha": 2 * rank, "dropout": 0.0, "seed": seed})
    device = next(model.parameters()).device
    optimizer = make_adamw(model, lr, weight_decay=0.0, device_type=device.type)
    batches = EpochBatches(lambda epoch: sft.make_batches(examples, batch_size, seq_len, tokenizer.pad_id,
                                                          packed=True, seed=seed + epoch))
    settings = LoopSettings(max_steps=steps, lr=lr, warmup_steps=min(5, steps // 4), progress=progress)
    start = time.perf_counter()
    state = train_loop(model, optimizer, lambda: sft.as_model_batch(batches(), device), settings, TrainState(),
                       loss_fn=sft_loss)
    model.eval()
    return {"seconds": time.perf_counter() - start, "final_loss": state.history[-1]["loss"],
            "trainable_params": count_parameters(model, trainable_only=True), "history": state.history,
            "model": model}


def score_system(generator: Any, index: Any, pairs: list, k: int = 3, mode: str = "dense",
                 context_tokens: int = 768, max_new_tokens: int = 16) -> dict[str, Any]:
    """Exact match, token F1, retrieval recall@k (with an index) and seconds per answer over the pairs."""
    rows = []
    for q in pairs:
        result = answer(generator, index, q.question + INSTRUCTION, k=k, mode=mode, context_tokens=context_tokens,
                        max_new_tokens=max_new_tokens)
        reply = CITATION.sub("", result.text).strip()
        first_line = reply.splitlines()[0] if reply else ""
        rows.append({"question": q.question, "answer": q.answer, "reply": result.text,
                     "exact_match": exact_match(first_line, q.answer), "f1": f1(first_line, q.answer),
                     "retrieved": [h["source"] for h in result.hits],
                     "recall": float(q.source in {h["source"] for h in result.hits}) if index is not None else None,
                     "seconds": result.retrieve_s + result.generate_s})
    n = max(len(rows), 1)
    recall = [r["recall"] for r in rows if r["recall"] is not None]
    return {"exact_match": sum(r["exact_match"] for r in rows) / n, "f1": sum(r["f1"] for r in rows) / n,
            "retrieval_recall": sum(recall) / len(recall) if recall else None,
            "seconds_per_answer": sum(r["seconds"] for r in rows) / n, "rows": rows}


def plot_systems(results: dict[str, dict], path: str | Path, title: str) -> None:
    """Grouped bars: exact match, token F1 and retrieval recall per system."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    names = list(results)
    metrics = [("exact_match", "exact match"), ("f1", "token F1"), ("retrieval_recall", "retrieval recall")]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(metrics)
    for j, (key, label) in enumerate(metrics):
        values = [results[n].get(key) or 0.0 for n in names]
        ax.bar([i + (j - 1) * width for i in range(len(names))], values, width, label=label)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
