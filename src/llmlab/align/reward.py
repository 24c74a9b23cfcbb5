"""Reward models: the decoder with a scalar head, read at the last real token, trained on preference pairs.

A reward model scores a whole conversation (prompt and answer) with one number.
It is the decoder with its LM head swapped for an (n_embd -> 1) layer (the
`reward` method of `llmlab.finetune.methods`, over full, lora or qlora
training), read at each row's last real token, the only position that has seen
everything (InstructGPT, Ouyang et al. 2022). It trains on (chosen, rejected)
pairs with the Bradley–Terry loss, -log σ(r_c - r_r), and is judged by held-out
pairwise accuracy: how often r_c > r_r.

`export_hf` writes Hugging Face's `…ForSequenceClassification` layout
(`score.weight`, num_labels=1, pad_token_id), which
`AutoModelForSequenceClassification` loads. Footgun: transformers finds the
last token as the last one that is not `pad_token_id`, so a text that ends in
the pad token is read one token early there; chat-rendered texts end in a
newline after the end-of-turn marker, which is never the pad token.
"""

import copy
from collections.abc import Callable
from pathlib import Path

import torch

from llmlab.align.losses import bradley_terry_loss
from llmlab.common.io import atomic_write, write_json_atomic
from llmlab.data.loader import EpochBatches
from llmlab.data.preference import PreferenceExample, batch_order, collate_sequences
from llmlab.finetune.lora import unwrap_lora
from llmlab.models.hf import config_to_hf, hf_family, state_dict_to_hf
from llmlab.quantize import dequantize_model

HF_CLASSES = {"llama": "LlamaForSequenceClassification", "qwen2": "Qwen2ForSequenceClassification",
              "gpt2": "GPT2ForSequenceClassification"}


def last_token_mask(attn_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) True on each row's last real token, for right-padded rows.

    attn_mask [[1, 1, 0], [1, 1, 1]] -> [[False, True, False], [False, False, True]].
    """
    last = attn_mask.long().sum(dim=1) - 1  # (B,)
    return torch.nn.functional.one_hot(last, attn_mask.shape[1]).bool()


def reward_scores(model: torch.nn.Module, idx: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
    """One reward per right-padded row of idx (B, T): the head read at the last real token only -> (B,)."""
    return model(idx, attn_mask=attn_mask, logits_mask=last_token_mask(attn_mask))[:, 0]  # (B, 1) -> (B,)


@torch.no_grad()
def score(model: torch.nn.Module, ids: list[list[int]], pad_id: int = 0, batch_size: int = 16) -> torch.Tensor:
    """Rewards (N,) for token-id sequences (prompt and answer each, e.g. a chat-rendered conversation)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(ids), batch_size):
            chunk = ids[i:i + batch_size]
            T = max(len(s) for s in chunk)
            idx = torch.full((len(chunk), T), pad_id, dtype=torch.long)
            mask = torch.zeros(len(chunk), T, dtype=torch.bool)
            for b, s in enumerate(chunk):
                idx[b, :len(s)], mask[b, :len(s)] = torch.tensor(s), True
            out.append(reward_scores(model, idx.to(device), mask.to(device)).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def pair_batches(examples: list[PreferenceExample], batch_size: int, pad_id: int, max_len: int | None,
                 device: torch.device | str, seed: int = 0, position: int = 0) -> Callable[[], tuple]:
    """Endless (idx (2B, T), {attn_mask}) batches, chosen rows then rejected rows, reshuffled each epoch."""
    order = EpochBatches(lambda epoch: batch_order(len(examples), batch_size, seed + epoch), position=position)

    def next_batch() -> tuple:
        b = collate_sequences([examples[i] for i in order()], pad_id, max_len)
        return b["idx"].to(device), {"attn_mask": b["attn_mask"].to(device)}

    return next_batch


def reward_loss(margin: float | None = None) -> Callable[[torch.nn.Module, tuple], tuple[torch.Tensor, dict]]:
    """A `loss_fn(model, batch) -> (Bradley–Terry loss, {accuracy, margin})` for `train_loop`."""

    def loss_fn(model: torch.nn.Module, batch: tuple) -> tuple[torch.Tensor, dict]:
        idx, extras = batch
        r = reward_scores(model, idx, extras["attn_mask"]).float()  # (2B,)
        chosen, rejected = r.chunk(2)
        loss = bradley_terry_loss(chosen, rejected, margin)
        return loss, {"accuracy": (chosen > rejected).float().mean().item(),
                      "margin": (chosen - rejected).mean().item()}

    return loss_fn


@torch.no_grad()
def pairwise_accuracy(model: torch.nn.Module, examples: list[PreferenceExample], pad_id: int,
                      max_len: int | None = None, batch_size: int = 8) -> dict[str, float]:
    """Share of pairs the model ranks chosen over rejected (ties count half) and the mean reward margin."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    wins, margins = 0.0, []
    try:
        for i in range(0, len(examples), batch_size):
            b = collate_sequences(examples[i:i + batch_size], pad_id, max_len)
            chosen, rejected = reward_scores(model, b["idx"].to(device), b["attn_mask"].to(device)).float().chunk(2)
            wins += (chosen > rejected).sum().item() + 0.5 * (chosen == rejected).sum().item()
            margins += (chosen - rejected).tolist()
    finally:
        model.train(was_training)
    n = max(len(examples), 1)
    return {"accuracy": wins / n, "margin": sum(margins) / n}


def export_hf(model: torch.nn.Module, directory: str | Path, pad_id: int, tokenizer=None) -> None:
    """Write config.json + model.safetensors in HF's `…ForSequenceClassification` layout (and the tokenizer).

    LoRA is folded in and quantised layers are dequantised on a copy; the model itself is left as it is.
    """
    from safetensors.torch import save_file

    plain = dequantize_model(unwrap_lora(copy.deepcopy(model)))
    family = hf_family(plain.config)
    sd = {k: v for k, v in plain.state_dict().items() if k != "lm_head.weight"}
    hf_sd = state_dict_to_hf(sd, plain.config)
    hf_sd["score.weight"] = plain.lm_head.weight  # (1, C)
    hf_sd = {k: v.detach().cpu().contiguous() for k, v in hf_sd.items()}
    config = config_to_hf(plain.config)
    config.update(architectures=[HF_CLASSES[family]], num_labels=1, id2label={"0": "LABEL_0"},
                  label2id={"LABEL_0": 0}, pad_token_id=pad_id,
                  torch_dtype=str(plain.lm_head.weight.dtype).removeprefix("torch."))
    if tokenizer is not None:
        config.update(bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id)
    directory = Path(directory)
    atomic_write(directory / "model.safetensors", lambda tmp: save_file(hf_sd, tmp, metadata={"format": "pt"}))
    write_json_atomic(directory / "config.json", config)
    if tokenizer is not None:
        tokenizer.save_hf(directory)
