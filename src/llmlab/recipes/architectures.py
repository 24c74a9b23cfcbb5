"""Encoders and encoder-decoders next to the decoder: `llmlab pretrain mlm`, `pretrain span`, `translate`.

    llmlab pretrain mlm --out runs/mlm --max-steps 300        # BERT: masked tokens on the default corpus
    llmlab pretrain span --out runs/span --max-steps 300      # T5: span corruption on the same corpus
    llmlab translate --out runs/translate --max-steps 600     # encoder-decoder vs decoder-only, + an encoder

`mlm` and `span` train a tokenizer (with [MASK] or sentinel tokens) on the corpus, then a small `Bert` or `T5`
on random windows (`llmlab.data.masking`), and report held-out loss and accuracy at the predicted positions.
`translate` is the course's comparison lab: English number phrases -> French (`llmlab.data.translation`,
split by number). A `T5` and a decoder-only `Transformer` (prompt "source <sep>", loss on the completion)
train on the same pairs for the same steps; greedy translations of held-out numbers are scored by BLEU
(sacrebleu's, `llmlab.eval.metrics`) and exact match; attention plots show where each model looks. A `Bert`
classifier on the parity of the same English phrases completes the picture. Every model is saved with
`llmlab.common.checkpoint` and reopens with `llmlab.load`; report.md, PNGs and summary.json go to --out.
"""

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from llmlab.common import checkpoint, log
from llmlab.common.config import arg
from llmlab.common.constants import IGNORE_INDEX
from llmlab.common.device import resolve_device, seed_everything
from llmlab.common.errors import UserError
from llmlab.common.io import atomic_write, write_json_atomic, write_text_atomic
from llmlab.data.masking import mlm_mask, span_corruption
from llmlab.data.sources import default_corpus, leading_text, read_documents, sample_documents, split_documents
from llmlab.data.translation import parity_rows, translation_split
from llmlab.eval.metrics import bleu
from llmlab.infer.generate import generate_batch
from llmlab.models import Transformer, get_preset
from llmlab.models.bert import Bert, BertConfig
from llmlab.models.gpt import count_parameters
from llmlab.models.t5 import T5, T5Config
from llmlab.tokenizer import Tokenizer
from llmlab.train.loop import LoopSettings, TrainState, train_loop
from llmlab.train.objectives import lm_loss, sft_loss
from llmlab.train.optim import make_adamw
from llmlab.train.plot import plot_loss_curve

SPECIALS = ["<|endoftext|>", "<|pad|>", "<|cls|>", "<|sep|>", "<|mask|>"]
N_SENTINELS = 32  # span corruption: ~6 spans per 128-token window, so 32 is plenty


@dataclass
class EncoderPretrainArgs:
    out: str = arg("runs/mlm", "output folder: checkpoint/, summary.json, loss.png")
    corpus: list[str] = arg([], "text files or folders (default: the Python standard library's sources)")
    max_chars: int = arg(4_000_000, "characters of the corpus to tokenise (the rest is not used)")
    vocab_size: int = arg(2048, "BPE vocabulary, special tokens included")
    seq_len: int = arg(128, "tokens per window")
    n_layer: int = arg(4, "blocks (the encoder-decoder gets this many in each stack)")
    n_head: int = arg(4, "attention heads")
    n_embd: int = arg(128, "width")
    batch_size: int = arg(32, "windows per step")
    lr: float = arg(1e-3, "peak learning rate")
    warmup_steps: int = arg(30, "linear warmup steps (Post-LN BERT needs them)")
    max_steps: int = arg(300, "optimizer steps")
    eval_batches: int = arg(8, "held-out batches for the final loss and accuracy")
    device: str = arg("auto", "cpu, cuda, cuda:N or auto")
    seed: int = arg(0, "seed for weights, windows and masks")
    progress: bool = arg(True, "show a progress bar")


@dataclass
class MLMArgs(EncoderPretrainArgs):
    mask_prob: float = arg(0.15, "share of tokens to predict (80% [MASK], 10% random, 10% kept)")


@dataclass
class SpanArgs(EncoderPretrainArgs):
    out: str = arg("runs/span", "output folder: checkpoint/, summary.json, loss.png")
    density: float = arg(0.15, "share of tokens dropped into spans")
    mean_span: float = arg(3.0, "mean length of a dropped span")


@dataclass
class TranslateArgs:
    out: str = arg("runs/translate", "output folder: report.md, summary.json, PNGs, three checkpoints")
    max_number: int = arg(999, "pairs for the numbers 0..max_number")
    test_fraction: float = arg(0.2, "share of numbers held out for BLEU and exact match")
    target_lang: str = arg("fr", "num2words language of the targets (fr, de, es, it, ...)")
    vocab_size: int = arg(400, "BPE vocabulary trained on the training pairs")
    n_embd: int = arg(128, "width of every model")
    n_head: int = arg(4, "attention heads")
    enc_layers: int = arg(2, "encoder blocks (encoder-decoder and the encoder classifier)")
    dec_layers: int = arg(2, "decoder blocks of the encoder-decoder")
    decoder_only_layers: int = arg(4, "blocks of the decoder-only model (about the encoder-decoder's size)")
    batch_size: int = arg(32, "pairs per step")
    lr: float = arg(1e-3, "peak learning rate")
    warmup_steps: int = arg(30, "linear warmup steps")
    max_steps: int = arg(600, "steps for each translation model (the same budget for both)")
    classify_steps: int = arg(200, "steps for the parity classifier")
    device: str = arg("auto", "cpu, cuda, cuda:N or auto")
    seed: int = arg(0, "seed for the split, weights and batches")
    progress: bool = arg(True, "show progress bars")


# ---- shared pieces --------------------------------------------------------------------------

def _train(model, next_batch, loss_fn, args, steps: int) -> TrainState:
    optimizer = make_adamw(model, args.lr, 0.01, device_type=next(model.parameters()).device.type)
    settings = LoopSettings(max_steps=steps, lr=args.lr, warmup_steps=min(args.warmup_steps, steps // 2),
                            progress=args.progress)
    return train_loop(model, optimizer, next_batch, settings, TrainState(), loss_fn=loss_fn)


def _save(model, folder: Path, tokenizer, run: dict, state: TrainState) -> None:
    checkpoint.save_checkpoint(folder, model, {"run": run, "state": state.to_dict()}, tokenizer=tokenizer)


def _corpus_ids(args: EncoderPretrainArgs, specials: list[str]) -> tuple[Tokenizer, torch.Tensor, torch.Tensor]:
    """A tokenizer trained on the corpus and the train/validation text as two flat id tensors."""
    docs = read_documents(args.corpus) if args.corpus else default_corpus()
    train_docs, val_docs = split_documents(docs)
    # documents drawn from the whole corpus, not its sorted head: see sample_documents for what the head holds
    train_docs = sample_documents(train_docs, args.max_chars)
    val_docs = sample_documents(val_docs, max(args.max_chars // 20, 20_000))
    tok = Tokenizer.train(leading_text(train_docs, min(args.max_chars, 1_000_000)), args.vocab_size,
                          special_tokens=specials)
    flat = []
    for part in (train_docs, val_docs):
        ids = tok.encode("".join(text for _, text in part))
        if len(ids) <= args.seq_len + 1:
            raise UserError(f"--corpus: too little text ({len(ids)} tokens) for windows of --seq-len {args.seq_len}")
        flat.append(torch.tensor(ids, dtype=torch.long))
    log.info(f"corpus: {len(flat[0]):,} training tokens, {len(flat[1]):,} held out; vocabulary {tok.vocab_size}")
    return tok, flat[0], flat[1]


def _windows(ids: torch.Tensor, n: int, length: int, g: torch.Generator | None) -> torch.Tensor:
    """n windows (n, length): random starts with a generator, else evenly spaced (held-out evaluation)."""
    if g is None:
        starts = torch.linspace(0, len(ids) - length, n).long()
    else:
        starts = torch.randint(0, len(ids) - length, (n,), generator=g)
    return torch.stack([ids[s:s + length] for s in starts.tolist()])  # (n, length)


@torch.no_grad()
def _heldout(model, batches: list[tuple]) -> tuple[float, float]:
    """Mean loss and accuracy over the positions that have targets."""
    model.eval()
    loss, right, n = 0.0, 0, 0
    for idx, targets, kwargs in batches:
        keep = targets != IGNORE_INDEX
        logits = model(idx, **kwargs)  # (B, T, V)
        loss += F.cross_entropy(logits[keep].float(), targets[keep], reduction="sum").item()
        right += (logits[keep].argmax(-1) == targets[keep]).sum().item()
        n += int(keep.sum())
    model.train()
    return loss / max(n, 1), right / max(n, 1)


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _finish(args, model, tok, state: TrainState, heldout: tuple[float, float], extra: dict) -> dict:
    out = Path(args.out)
    _save(model, out / "checkpoint", tok, dataclasses.asdict(args), state)
    plot_loss_curve(state.history, out / "loss.png", title=f"{type(model).__name__} pretraining")
    summary = {"n_params": count_parameters(model), "steps": state.step, "train_s": state.elapsed_s,
               "final_train_loss": state.history[-1]["loss"] if state.history else None,
               # one step's loss is one batch's; the mean of the last tenth is what held-out loss compares with
               "recent_train_loss": _mean([r["loss"] for r in state.history[-max(1, len(state.history) // 10):]]),
               "heldout_loss": heldout[0], "heldout_accuracy": heldout[1], **extra,
               "checkpoint": str(out / "checkpoint")}
    write_json_atomic(out / "summary.json", summary)
    log.info(f"done: train loss {summary['recent_train_loss'] or float('nan'):.3f} (last tenth of steps), "
             f"held-out loss {heldout[0]:.3f}, accuracy {heldout[1]:.3f}; checkpoint in {out / 'checkpoint'}")
    return {**summary, "model": model, "tokenizer": tok}


# ---- BERT: masked language modelling --------------------------------------------------------

def mlm(args: MLMArgs) -> dict[str, Any]:
    """Pretrain a small BERT with 80/10/10 masking; returns the summary (also <out>/summary.json)."""
    seed_everything(args.seed)
    device = resolve_device(args.device)
    tok, train_ids, val_ids = _corpus_ids(args, SPECIALS)
    sp = tok.special_tokens
    special = [sp["<|pad|>"], sp["<|cls|>"], sp["<|sep|>"], sp["<|endoftext|>"]]
    model = Bert(BertConfig(vocab_size=tok.vocab_size, seq_len=args.seq_len, n_layer=args.n_layer,
                            n_head=args.n_head, n_embd=args.n_embd, pad_id=sp["<|pad|>"])).to(device)

    def masked(rows: torch.Tensor, g: torch.Generator) -> tuple:
        n = rows.shape[0]
        ids = torch.cat([torch.full((n, 1), sp["<|cls|>"]), rows, torch.full((n, 1), sp["<|sep|>"])], 1)  # (n, T)
        inputs, targets = mlm_mask(ids, sp["<|mask|>"], tok.vocab_size, args.mask_prob, special, generator=g)
        return inputs.to(device), targets.to(device), {}

    g = torch.Generator().manual_seed(args.seed)
    state = _train(model, lambda: masked(_windows(train_ids, args.batch_size, args.seq_len - 2, g), g), sft_loss,
                   args, args.max_steps)
    fixed = torch.Generator().manual_seed(12345)  # the same held-out masks in every run
    val_rows = _windows(val_ids, args.eval_batches * args.batch_size, args.seq_len - 2, None)
    val = [masked(rows, fixed) for rows in val_rows.split(args.batch_size)]
    return _finish(args, model, tok, state, _heldout(model, val), {"objective": "mlm"})


# ---- T5: span corruption --------------------------------------------------------------------

def span(args: SpanArgs) -> dict[str, Any]:
    """Pretrain a small T5 on span corruption; returns the summary (also <out>/summary.json)."""
    seed_everything(args.seed)
    device = resolve_device(args.device)
    sentinels = [f"<|extra_{k}|>" for k in range(N_SENTINELS)]
    tok, train_ids, val_ids = _corpus_ids(args, SPECIALS + sentinels)
    sp = tok.special_tokens
    sentinel_ids = [sp[s] for s in sentinels]
    model = T5(T5Config(vocab_size=tok.vocab_size, seq_len=args.seq_len, n_layer=args.n_layer, n_head=args.n_head,
                        head_dim=args.n_embd // args.n_head, n_embd=args.n_embd, intermediate_size=4 * args.n_embd,
                        pad_id=sp["<|pad|>"], eos_id=sp["<|endoftext|>"], decoder_start_id=sp["<|pad|>"]))
    model.to(device)

    def corrupted(rows: torch.Tensor, rng: np.random.Generator) -> tuple:
        # a fixed length gives a fixed count of dropped tokens and spans, so every row has the same shapes
        pairs = [span_corruption(r, sentinel_ids, sp["<|endoftext|>"], args.density, args.mean_span, rng)
                 for r in rows.tolist()]
        inputs = torch.tensor([p[0] for p in pairs])  # (n, S)
        targets = torch.tensor([p[1] for p in pairs])  # (n, T)
        dec = torch.cat([torch.full((len(pairs), 1), sp["<|pad|>"]), targets[:, :-1]], 1)  # shifted right
        return inputs.to(device), targets.to(device), {"decoder_input_ids": dec.to(device)}

    g, rng = torch.Generator().manual_seed(args.seed), np.random.default_rng(args.seed)
    state = _train(model, lambda: corrupted(_windows(train_ids, args.batch_size, args.seq_len, g), rng), lm_loss,
                   args, args.max_steps)
    fixed = np.random.default_rng(12345)
    val_rows = _windows(val_ids, args.eval_batches * args.batch_size, args.seq_len, None)
    val = [corrupted(rows, fixed) for rows in val_rows.split(args.batch_size)]
    return _finish(args, model, tok, state, _heldout(model, val), {"objective": "span_corruption"})


# ---- translation: encoder-decoder against decoder-only, and an encoder classifier -------------

def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    T = max(map(len, rows))
    return torch.tensor([r + [value] * (T - len(r)) for r in rows])  # (B, T)


def _seq2seq_batch(pairs: list[dict], tok: Tokenizer) -> tuple:
    """Encoder input "source </s>", decoder input "<pad> target", targets "target </s>" (-100 on padding)."""
    src = [tok.encode(p["source"]) + [tok.eos_id] for p in pairs]
    tgt = [tok.encode(p["target"]) + [tok.eos_id] for p in pairs]
    kwargs = {"decoder_input_ids": _pad([[tok.pad_id] + t[:-1] for t in tgt], tok.pad_id),
              "attn_mask": _pad([[1] * len(s) for s in src], 0)}
    return _pad(src, tok.pad_id), _pad(tgt, IGNORE_INDEX), kwargs


def _prompt(tok: Tokenizer, source: str) -> list[int]:
    return tok.encode(source) + [tok.special_tokens["<|sep|>"]]


def _decoder_batch(pairs: list[dict], tok: Tokenizer) -> tuple:
    """"source <sep> target </s>" as next-token prediction, with a loss on the target and </s> only."""
    rows, labels = [], []
    for p in pairs:
        prompt, completion = _prompt(tok, p["source"]), tok.encode(p["target"]) + [tok.eos_id]
        rows.append((prompt + completion)[:-1])
        labels.append([IGNORE_INDEX] * (len(prompt) - 1) + completion)
    return _pad(rows, tok.pad_id), _pad(labels, IGNORE_INDEX), {"attn_mask": _pad([[1] * len(r) for r in rows], 0)}


def _to(batch: tuple, device: torch.device) -> tuple:
    return batch[0].to(device), batch[1].to(device), {k: v.to(device) for k, v in batch[2].items()}


def _until_eos(ids: list[int], eos: int) -> list[int]:
    return ids[:ids.index(eos)] if eos in ids else ids


@torch.no_grad()
def _translate(model, tok: Tokenizer, sources: list[str], max_new: int, device: torch.device) -> list[list[int]]:
    """Greedy translations (ids without </s>) from either model."""
    model.eval()
    out = []
    for i in range(0, len(sources), 64):
        chunk = sources[i:i + 64]
        if isinstance(model, T5):
            src = [tok.encode(s) + [tok.eos_id] for s in chunk]
            new = model.generate(_pad(src, tok.pad_id).to(device), max_new,
                                 attn_mask=_pad([[1] * len(s) for s in src], 0).to(device)).tolist()
        else:
            new = generate_batch(model, [_prompt(tok, s) for s in chunk], max_new, temperature=0.0, eos_id=tok.eos_id)
        out += [_until_eos(row, tok.eos_id) for row in new]
    return out


def _labels(tok: Tokenizer, ids: list[int]) -> list[str]:
    return ["".join(c if c.isprintable() and c != " " else "_" for c in tok.decode([i])) for i in ids]


def _plot_attention(weights: torch.Tensor, rows: list[str], cols: list[str], path: Path, title: str) -> None:
    """A heat map of attention weights (len(rows), len(cols)), averaged over heads by the caller."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(cols) + 2), max(3.0, 0.35 * len(rows) + 1.5)))
    ax.imshow(weights.float().cpu().numpy(), cmap="viridis", aspect="auto", vmin=0)
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("attended token")
    ax.set_ylabel("token being predicted")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


@torch.no_grad()
def _attention_plots(t5: T5, dec: Transformer, tok: Tokenizer, example: dict, max_new: int, out: Path,
                     device: torch.device) -> list[str]:
    """Cross-attention of the encoder-decoder's last block and self-attention of the decoder's last block,
    each over its own greedy translation of `example`, averaged over heads."""
    src = tok.encode(example["source"]) + [tok.eos_id]
    pred = _translate(t5, tok, [example["source"]], max_new, device)[0]
    attn = t5.decoder.blocks[-1].cross_attn
    attn.keep_weights = True
    t5(torch.tensor([src], device=device), torch.tensor([[tok.pad_id] + pred], device=device))
    attn.keep_weights = False
    _plot_attention(attn.last_weights[0].mean(0), _labels(tok, pred) + ["</s>"], _labels(tok, src),
                    out / "cross_attention.png", f"encoder-decoder cross-attention (last block)\n{example['source']}")
    prompt = _prompt(tok, example["source"])
    pred = _translate(dec, tok, [example["source"]], max_new, device)[0]
    attn = dec.blocks[-1].attn
    attn.keep_weights = True
    dec(torch.tensor([prompt + pred], device=device))
    attn.keep_weights = False
    weights = attn.last_weights[0].mean(0)[len(prompt) - 1:]  # rows that predict the translation
    _plot_attention(weights, _labels(tok, pred) + ["</s>"], _labels(tok, prompt + pred),
                    out / "decoder_self_attention.png",
                    f"decoder-only self-attention (last block)\n{example['source']}")
    return ["cross_attention.png", "decoder_self_attention.png"]


def _plot_curves(histories: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, rows in histories.items():
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label=name, linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (nats per target token)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def _class_loss(model, batch: tuple) -> torch.Tensor:
    return F.cross_entropy(model(batch[0], **batch[2]).float(), batch[1])


def translate(args: TranslateArgs) -> dict[str, Any]:
    """Train and compare the three architectures on number phrases; returns the summary (also summary.json)."""
    seed_everything(args.seed)
    device, out = resolve_device(args.device), Path(args.out)
    train, test = translation_split(args.max_number, args.test_fraction, args.seed, args.target_lang)
    text = "\n".join(p[k] for p in train for k in ("source", "target"))
    tok = Tokenizer.train(text, args.vocab_size, special_tokens=SPECIALS[:4])
    longest = max(len(tok.encode(p[k])) for p in train + test for k in ("source", "target"))
    max_new = longest + 8
    run = dataclasses.asdict(args)
    C, H = args.n_embd, args.n_head
    models = {
        "encoder-decoder": T5(T5Config(vocab_size=tok.vocab_size, seq_len=4 * longest, n_layer=args.enc_layers,
                                       n_decoder_layer=args.dec_layers, n_head=H, head_dim=C // H, n_embd=C,
                                       intermediate_size=4 * C, pad_id=tok.pad_id, eos_id=tok.eos_id,
                                       decoder_start_id=tok.pad_id)),
        "decoder-only": Transformer(get_preset("llama-tiny", vocab_size=tok.vocab_size, seq_len=4 * longest,
                                               n_layer=args.decoder_only_layers, n_head=H, n_kv_head=H, n_embd=C)),
    }
    batchers = {"encoder-decoder": (_seq2seq_batch, lm_loss), "decoder-only": (_decoder_batch, sft_loss)}
    refs = [p["target"] for p in test]
    results, histories, hyps = {}, {}, {}
    for name, model in models.items():
        model.to(device)
        make, loss_fn = batchers[name]
        g = torch.Generator().manual_seed(args.seed)  # the same pairs in the same order for both models
        log.info(f"translate: training the {name} model ({count_parameters(model) / 1e6:.2f}M parameters)")
        state = _train(model, lambda m=make, g=g: _to(m([train[i] for i in torch.randint(
            len(train), (args.batch_size,), generator=g).tolist()], tok), device), loss_fn, args, args.max_steps)
        t0 = time.perf_counter()
        hyps[name] = [tok.decode(ids) for ids in _translate(model, tok, [p["source"] for p in test], max_new, device)]
        results[name] = {"n_params": count_parameters(model), "train_s": state.elapsed_s,
                         "final_train_loss": state.history[-1]["loss"], "bleu": bleu(hyps[name], refs)["bleu"],
                         "exact_match": sum(h.strip() == r for h, r in zip(hyps[name], refs, strict=True)) / len(refs),
                         "translate_s": time.perf_counter() - t0}
        histories[name] = state.history
        _save(model, out / name.replace("-", "_"), tok, run, state)
        log.info(f"translate: {name}: BLEU {results[name]['bleu']:.1f}, exact match {results[name]['exact_match']:.3f}")
    example = max(test, key=lambda p: len(p["target"]))
    plots = _attention_plots(models["encoder-decoder"], models["decoder-only"], tok, example, max_new, out, device)
    _plot_curves(histories, out / "loss_curves.png")
    classifier = _parity_classifier(args, tok, train, test, device, out, run)
    summary = {"train_pairs": len(train), "test_pairs": len(test), "target_lang": args.target_lang,
               "models": results, "encoder_parity": classifier,
               "examples": [{"source": p["source"], "reference": p["target"],
                             **{name: hyps[name][i] for name in models}} for i, p in enumerate(test[:10])]}
    write_json_atomic(out / "summary.json", summary)
    write_text_atomic(out / "report.md", _report(summary, plots + ["loss_curves.png"]))
    return {**summary, "models_trained": models, "tokenizer": tok}


def _parity_classifier(args: TranslateArgs, tok: Tokenizer, train: list[dict], test: list[dict],
                       device: torch.device, out: Path, run: dict) -> dict:
    """A BERT encoder reading the English phrase and classifying its number as even or odd."""
    sp, classes = tok.special_tokens, ["even", "odd"]

    def batch(rows: list[tuple[str, str]]) -> tuple:
        ids = [[sp["<|cls|>"]] + tok.encode(text) + [sp["<|sep|>"]] for text, _ in rows]
        labels = torch.tensor([classes.index(label) for _, label in rows])
        return _to((_pad(ids, tok.pad_id), labels, {"attn_mask": _pad([[1] * len(i) for i in ids], 0)}), device)

    train_rows, test_rows = parity_rows(train), parity_rows(test)
    longest = max(len(tok.encode(t)) for t, _ in train_rows + test_rows) + 2
    model = Bert(BertConfig(vocab_size=tok.vocab_size, seq_len=longest, n_layer=args.enc_layers, n_head=args.n_head,
                            n_embd=args.n_embd, head="classify", n_classes=2, pooler=True, pad_id=tok.pad_id))
    model.to(device)
    g = torch.Generator().manual_seed(args.seed)
    state = _train(model, lambda: batch([train_rows[i] for i in torch.randint(len(train_rows), (args.batch_size,),
                                                                             generator=g).tolist()]),
                   _class_loss, args, args.classify_steps)
    model.eval()
    with torch.no_grad():
        right = sum(int((model(b[0], **b[2]).argmax(-1) == b[1]).sum())
                    for b in (batch(test_rows[i:i + 128]) for i in range(0, len(test_rows), 128)))
    _save(model, out / "encoder", tok, {**run, "classes": classes}, state)
    result = {"n_params": count_parameters(model), "train_s": state.elapsed_s, "accuracy": right / len(test_rows),
              "majority_baseline": max(sum(lbl == c for _, lbl in test_rows) for c in classes) / len(test_rows)}
    log.info(f"translate: encoder parity accuracy {result['accuracy']:.3f} "
             f"(majority class {result['majority_baseline']:.3f})")
    return result


def _report(summary: dict, plots: list[str]) -> str:
    lines = [f"# Encoder, decoder and encoder-decoder on number phrases (English -> {summary['target_lang']})", "",
             f"{summary['train_pairs']} training pairs, {summary['test_pairs']} held-out numbers (split by number). "
             "Both translation models had the same steps, batches and learning rate; greedy decoding.", "",
             "| model | parameters | train s | final train loss | BLEU | exact match |", "|---|---|---|---|---|---|"]
    for name, r in summary["models"].items():
        lines.append(f"| {name} | {r['n_params']:,} | {r['train_s']:.0f} | {r['final_train_loss']:.3f} | "
                     f"{r['bleu']:.1f} | {r['exact_match']:.3f} |")
    c = summary["encoder_parity"]
    lines += ["", f"Encoder-only (BERT-style, {c['n_params']:,} parameters) classifying the English phrase's parity: "
              f"accuracy {c['accuracy']:.3f} (majority class {c['majority_baseline']:.3f}).", "",
              "| source | reference | encoder-decoder | decoder-only |", "|---|---|---|---|"]
    lines += [f"| {e['source']} | {e['reference']} | {e['encoder-decoder']} | {e['decoder-only']} |"
              for e in summary["examples"]]
    lines += [""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(lines)
