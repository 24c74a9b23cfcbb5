"""A tiny vision-language model: a ViT, a projector and llmlab's own decoder, joined early or late.

Both fusions read the same image features: the ViT's patch tokens, each `token_merge` x `token_merge` square
of neighbours concatenated into one token (SmolVLM's pixel shuffle, Marafioti et al. 2025: 64 patches -> 16
tokens, no information lost, a quarter of the decoder's image positions), mapped into the decoder's width by
a two-layer MLP projector (LLaVA-1.5, Liu et al. 2023); and in front of them the ViT's [CLS] token through a
projector of its own (`keep_cls`, LLaVA's "full" strategy): a shape spans several patches, and a decoder
trained from scratch was slow to put them together (shape words stayed near chance for 800 steps), while
[CLS] already holds the whole image.
- Early fusion (PaliGemma, Beyer et al. 2024): the N image tokens are the first N positions of the
  decoder's input, then the prompt, then the answer. Attention is a prefix-LM's: full over image + prompt,
  causal over the answer (`prefix_lm_mask`); the loss is on the answer only.
- Late fusion (Flamingo, Alayrac et al. 2022): the decoder reads text alone, causally. Before each of its
  upper blocks a gated cross-attention layer lets the text attend to the image tokens:
  x + tanh(a) * xattn(norm(x), image), then x + tanh(b) * mlp(norm(x)), with a = b = 0 at the start, so
  the untouched decoder is what training starts from.
The decoder is a `Transformer` (`llmlab.models.gpt`); its blocks are run here one by one (`decoder_logits`)
so image tokens can enter as embeddings and cross-attention can sit between blocks. It is small and trained from
scratch by default, or a pretrained one (`decoder_base`, e.g. SmolLM2-135M) that stays frozen and is not
saved: LLaVA's recipe. `PretrainedVLM.describe(image, prompt=None)` captions or answers; `save_vlm` and
`load_vlm` write and read the checkpoint folder (`llmlab.load` calls `load_vlm`).
Training loops, data and reports are the recipe's; generation here is greedy and recomputes the sequence
each step (captions are ~10 tokens), so it needs no KV cache.
"""

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from llmlab.common import checkpoint
from llmlab.common.constants import IGNORE_INDEX, TOKENIZER_FILE
from llmlab.common.errors import UserError
from llmlab.common.io import write_json_atomic
from llmlab.models.config import ModelConfig
from llmlab.models.gpt import Transformer
from llmlab.models.layers import MLPS, NORMS, explicit_attention, rope_cos_sin
from llmlab.multimodal.shapes import CAPTION_PROMPT, pixels
from llmlab.multimodal.vit import ViT, ViTConfig

FUSIONS = ("early", "late")


@dataclass
class VLMConfig:
    arch: str = "vlm"  # what `llmlab.load` builds from a saved config
    fusion: str = "early"
    vision: dict[str, Any] = field(default_factory=dict)  # a ViTConfig's fields
    decoder: dict[str, Any] = field(default_factory=dict)  # a ModelConfig's fields
    decoder_base: str | None = None  # a pretrained decoder (alias or path), frozen and not saved with the rest
    cross_layers: list[int] | None = None  # late fusion: blocks with a cross-attention layer before them
    token_merge: int = 2  # m x m neighbouring patches -> one image token (1: one token per patch)
    keep_cls: bool = True  # the ViT's [CLS] summary as one more image token, first (LLaVA's "full" strategy)
    caption_prompt: str = CAPTION_PROMPT  # the prompt `describe` uses when it is given none
    max_answer_tokens: int = 24
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise UserError(f"model config: fusion={self.fusion!r} is unknown; choose one of {', '.join(FUSIONS)}")
        n_layer = self.decoder.get("n_layer", 0)
        if self.fusion == "late" and self.cross_layers is None:
            # the upper half; a deep decoder every k-th of it (Flamingo-9B: every 4th), k = n_layer // 8
            self.cross_layers = list(range(n_layer // 2, n_layer, max(1, n_layer // 8)))
        grid = self.vision.get("image_size", 64) // self.vision.get("patch_size", 8)
        if self.token_merge < 1 or grid % self.token_merge:
            raise UserError(f"model config: token_merge={self.token_merge} must divide the {grid}x{grid} patch grid")
        bad = [i for i in self.cross_layers or [] if not 0 <= i < n_layer]
        if bad:
            raise UserError(f"model config: cross_layers {bad} are not blocks of a {n_layer}-block decoder")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "model config") -> "VLMConfig":
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise UserError(f"{source}: unknown field(s) {', '.join(unknown)}")
        return cls(**d)


class Projector(nn.Module):
    """Vision width -> decoder width: Linear, GELU, Linear (LLaVA-1.5's `multi_modal_projector`)."""

    def __init__(self, vision_dim: int, dim: int, act: str = "gelu"):
        super().__init__()
        self.act = {"gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh")}[act]
        self.up_proj = nn.Linear(vision_dim, dim)
        self.down_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.up_proj(x)))


class GatedCrossAttention(nn.Module):
    """Flamingo's GATED XATTN-DENSE layer: text queries, image keys and values, tanh gates starting at 0."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        C, self.n_head, self.head_dim = config.n_embd, config.n_head, config.head_dim
        self.attn_norm = NORMS[config.norm](C, eps=config.norm_eps, bias=config.bias)
        self.q_proj = nn.Linear(C, self.n_head * self.head_dim, bias=False)
        self.k_proj = nn.Linear(C, self.n_head * self.head_dim, bias=False)
        self.v_proj = nn.Linear(C, self.n_head * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, C, bias=False)
        self.attn_gate = nn.Parameter(torch.zeros(1))
        self.mlp_norm = NORMS[config.norm](C, eps=config.norm_eps, bias=config.bias)
        self.mlp = MLPS[config.mlp](config)
        self.mlp_gate = nn.Parameter(torch.zeros(1))
        self.keep_weights = False
        self.last_weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """x (B, T, C) text, image (B, N, C) projected patches -> (B, T, C)."""
        B, T, _ = x.shape
        N = image.shape[1]
        q = self.q_proj(self.attn_norm(x)).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(image).view(B, N, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, N, D)
        v = self.v_proj(image).view(B, N, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, N, D)
        if self.keep_weights:
            every = torch.ones(1, 1, T, N, dtype=torch.bool, device=x.device)  # None would mean causal
            y, weights = explicit_attention(q, k, v, every)
            self.last_weights = weights.detach()  # (B, H, T, N)
        else:
            y = F.scaled_dot_product_attention(q, k, v)  # no mask: every text token sees every patch
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)  # (B, T, H*D)
        x = x + torch.tanh(self.attn_gate) * self.o_proj(y)
        return x + torch.tanh(self.mlp_gate) * self.mlp(self.mlp_norm(x))


def prefix_lm_mask(prefix_lens: torch.Tensor, lengths: torch.Tensor, T: int) -> torch.Tensor:
    """(B, 1, T, T) bool, True where a query may look: every key of its row's prefix, and causally after it.

    prefix_lens = [2], lengths = [4], T = 5 -> rows (queries) 0..4 see keys
    [1 1 0 0 0], [1 1 0 0 0], [1 1 1 0 0], [1 1 1 1 0], [0 0 0 0 1] (padding sees only itself, never NaN).
    A prefix of 0 is a plain causal mask with right padding.
    """
    k = torch.arange(T, device=lengths.device)
    causal = k[None, :] <= k[:, None]  # (T, T)
    in_prefix = k[None, :] < prefix_lens[:, None]  # (B, T) keys every query sees
    real = k[None, :] < lengths[:, None]  # (B, T) keys that are not padding
    mask = (causal[None] | in_prefix[:, None, :]) & real[:, None, :] & real[:, :, None]  # (B, T, T)
    mask |= torch.eye(T, dtype=torch.bool, device=lengths.device)
    return mask[:, None]


def decoder_logits(decoder: Transformer, x: torch.Tensor, mask: torch.Tensor | None, hooks: dict | None = None,
                   logits_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Run the decoder's blocks on input embeddings x (B, T, C) from position 0: what `Transformer.forward` does
    after its token lookup, with `hooks[i](x)` applied before block i; mask (B, 1, T, T) bool, None for causal.
    Logits (B, T, V), or (M, V) for the M True entries of logits_mask."""
    c = decoder.config
    if c.pos == "alibi":
        raise UserError("decoder with ALiBi positions: not supported as a VLM decoder; use rope or learned")
    B, T, _ = x.shape
    if T > c.seq_len:
        raise ValueError(f"sequence of {T} positions is longer than the decoder's context ({c.seq_len})")
    positions = torch.arange(T, device=x.device).expand(B, T)
    if decoder.pos_emb is not None:
        x = x + decoder.pos_emb(positions).to(x.dtype)
    if decoder.emb_norm is not None:
        x = decoder.emb_norm(x)
    x = decoder.drop(x)
    rope = rope_cos_sin(positions, decoder.rope_inv_freq, x.dtype) if c.pos == "rope" else None
    for i, block in enumerate(decoder.blocks):
        if hooks and i in hooks:
            x = hooks[i](x)
        x = block(x, rope, mask, None, i)
    if logits_mask is not None:
        x = x[logits_mask]  # (M, C)
    return decoder.lm_head(decoder.norm_f(x))


class VLM(nn.Module):
    def __init__(self, config: VLMConfig, decoder: Transformer | None = None):
        super().__init__()
        self.config = config
        self.vision = ViT(ViTConfig.from_dict(config.vision, source="vlm vision config"))
        self.decoder = decoder if decoder is not None else \
            Transformer(ModelConfig.from_dict(config.decoder, source="vlm decoder config"))
        dc = self.decoder.config
        self.projector = Projector(self.vision.config.n_embd * config.token_merge ** 2, dc.n_embd)
        # [CLS] is one vector, narrower than a merged square of patches, so it has a projector of its own
        self.cls_projector = Projector(self.vision.config.n_embd, dc.n_embd) if config.keep_cls else None
        self.cross = nn.ModuleDict({str(i): GatedCrossAttention(dc) for i in config.cross_layers or []})
        if config.decoder_base:  # LLaVA's recipe: the language model stays as it was
            self.decoder.requires_grad_(False)

    @property
    def n_image_tokens(self) -> int:
        return self.vision.config.n_patches // self.config.token_merge ** 2 + self.config.keep_cls

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, N, C): [CLS] if kept, then the ViT's patch tokens merged m x m, projected to the
        decoder's width."""
        encoded = self.vision.encode(pixels)  # (B, 1+g*g, Cv)
        tokens = encoded[:, 1:]  # (B, g*g, Cv), row by row
        m = self.config.token_merge
        if m > 1:
            B, n, Cv = tokens.shape
            g = int(round(n ** 0.5))
            tokens = tokens.view(B, g // m, m, g // m, m, Cv)  # (B, R, i, K, j, Cv): patch row R*m+i, col K*m+j
            tokens = tokens.permute(0, 1, 3, 2, 4, 5).reshape(B, (g // m) ** 2, m * m * Cv)  # (B, N, m*m*Cv)
        if self.cls_projector is None:
            return self.projector(tokens)
        return torch.cat([self.cls_projector(encoded[:, :1]), self.projector(tokens)], dim=1)  # (B, 1+N, C)

    def forward(self, idx: torch.Tensor, prompt_lens: torch.Tensor, lengths: torch.Tensor, features: torch.Tensor,
                logits_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits over the text positions (B, L, V) (or (M, V) under logits_mask (B, L)).

        idx (B, L) prompt then answer, right-padded; prompt_lens and lengths (B,) count text tokens;
        features (B, N, C) from `image_features`.
        """
        B, L = idx.shape
        text = self.decoder.tok_emb(idx)  # (B, L, C)
        if self.config.fusion == "early":
            N = features.shape[1]
            x = torch.cat([features.to(text.dtype), text], dim=1)  # (B, N+L, C): the image is the prefix
            mask = prefix_lm_mask(N + prompt_lens, N + lengths, N + L)
            keep = torch.zeros(B, N + L, dtype=torch.bool, device=idx.device)
            keep[:, N:] = True if logits_mask is None else logits_mask
            logits = decoder_logits(self.decoder, x, mask, logits_mask=keep)  # (B*L or M, V)
            return logits if logits_mask is not None else logits.view(B, L, -1)
        mask = prefix_lm_mask(torch.zeros_like(lengths), lengths, L)  # causal over the text alone
        hooks = {int(i): (lambda x, layer=layer: layer(x, features)) for i, layer in self.cross.items()}
        return decoder_logits(self.decoder, text, mask, hooks, logits_mask)


def encode_example(tokenizer: Any, prompt: str, answer: str | None = None) -> tuple[list[int], int]:
    """(ids, prompt length): "prompt\\n" then, for training, the answer and end of text."""
    ids = tokenizer.encode(prompt + "\n")
    n_prompt = len(ids)
    if answer is not None:
        ids = ids + tokenizer.encode(answer) + [tokenizer.eos_id]
    return ids, n_prompt


def make_batch(tokenizer: Any, images: torch.Tensor, prompts: list[str], answers: list[str]) -> tuple:
    """(idx (B, L), targets (B, L), pixels, prompt_lens (B,), lengths (B,)); targets are the next token on
    the answer and end of text, IGNORE_INDEX elsewhere."""
    rows = [encode_example(tokenizer, p, a) for p, a in zip(prompts, answers, strict=True)]
    L = max(len(ids) for ids, _ in rows)
    idx = torch.full((len(rows), L), tokenizer.pad_id, dtype=torch.long)
    targets = torch.full((len(rows), L), IGNORE_INDEX, dtype=torch.long)
    for i, (ids, n_prompt) in enumerate(rows):
        idx[i, :len(ids)] = torch.tensor(ids)
        targets[i, n_prompt - 1:len(ids) - 1] = torch.tensor(ids[n_prompt:])  # position j predicts ids[j+1]
    prompt_lens = torch.tensor([n for _, n in rows])
    lengths = torch.tensor([len(ids) for ids, _ in rows])
    return idx, targets, images, prompt_lens, lengths


def vlm_loss(model: VLM, batch: tuple) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens (and end of text) of a `make_batch` batch."""
    device = next(model.parameters()).device
    idx, targets, images, prompt_lens, lengths = (t.to(device) for t in batch)
    keep = targets != IGNORE_INDEX
    logits = model(idx, prompt_lens, lengths, model.image_features(images), logits_mask=keep)  # (M, V)
    return F.cross_entropy(logits.float(), targets[keep])


@torch.no_grad()
def generate(model: VLM, tokenizer: Any, images: torch.Tensor, prompts: list[str],
             max_new_tokens: int | None = None) -> list[str]:
    """Greedy answers, one per (image, prompt); images (B, 3, H, W) normalised pixels."""
    if images.shape[0] != len(prompts):
        raise UserError(f"{images.shape[0]} image(s) and {len(prompts)} prompt(s): give one prompt per image")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    features = model.image_features(images.to(device))
    rows = [encode_example(tokenizer, p)[0] for p in prompts]
    prompt_lens = torch.tensor([len(r) for r in rows], device=device)
    new: list[list[int]] = [[] for _ in rows]
    done = [False] * len(rows)
    for _ in range(max_new_tokens or model.config.max_answer_tokens):
        L = max(len(r) for r in rows)
        idx = torch.tensor([r + [tokenizer.pad_id] * (L - len(r)) for r in rows], device=device)  # (B, L)
        lengths = torch.tensor([len(r) for r in rows], device=device)
        logits = model(idx, prompt_lens, lengths, features)  # (B, L, V)
        next_ids = logits[torch.arange(len(rows), device=device), lengths - 1].argmax(-1).tolist()
        for i, token in enumerate(next_ids):
            if done[i]:
                continue
            if token == tokenizer.eos_id:
                done[i] = True
            else:
                rows[i].append(token)
                new[i].append(token)
        if all(done):
            break
    model.train(was_training)
    return [tokenizer.decode(ids).strip() for ids in new]


@dataclass
class PretrainedVLM:
    """A loaded VLM with its tokenizer: `.describe(image, prompt=None)`."""

    model: VLM
    tokenizer: Any
    source: str

    @property
    def config(self) -> VLMConfig:
        return self.model.config

    def describe(self, image: str | os.PathLike | Image.Image, prompt: str | None = None) -> str:
        """The caption of an image (a path or a PIL image), or the answer to `prompt` about it."""
        from llmlab.multimodal.pretrained import open_image

        image = open_image(image)
        prompt = self.config.caption_prompt if prompt is None else prompt.strip()
        if not prompt:
            raise UserError("prompt is empty; ask a question, or pass None for a caption")
        return generate(self.model, self.tokenizer, pixels([image], self.model.vision.config.image_size),
                        [prompt])[0]


def save_vlm(path: str | Path, model: VLM, tokenizer: Any, meta: dict[str, Any]) -> None:
    """A checkpoint folder (`llmlab.common.checkpoint`'s layout): every tensor but a frozen base decoder's."""
    base = model.config.decoder_base

    def fill(tmp: Path) -> None:
        tensors = {k: v for k, v in checkpoint.model_tensors(model).items()
                   if not (base and k.startswith("decoder."))}
        save_file(tensors, tmp / checkpoint.WEIGHTS_FILE)
        tokenizer.save(tmp / TOKENIZER_FILE)
        write_json_atomic(tmp / checkpoint.META_FILE, {"format": "llmlab-checkpoint", "version": 1, "weights": "full",
                                                       "model": model.config.to_dict(), **meta})

    checkpoint.write_folder_atomically(path, fill)


def load_vlm(path: str | Path, device: str | torch.device = "cpu") -> PretrainedVLM:
    """What `save_vlm` wrote, with the base decoder loaded from where the config names it."""
    from llmlab.models.pretrained import load_model
    from llmlab.tokenizer import Tokenizer

    path = checkpoint.resolve(path)
    config = VLMConfig.from_dict(checkpoint.read_meta(path)["model"], source=str(path / checkpoint.META_FILE))
    decoder = load_model(config.decoder_base, with_tokenizer=False)[0] if config.decoder_base else None
    model = VLM(config, decoder)
    file = path / checkpoint.WEIGHTS_FILE
    try:
        sd = load_file(file)
    except Exception as e:  # safetensors raises its own error type for a truncated file
        raise UserError(f"{file}: cannot read weights ({e})") from None
    missing, unexpected = model.load_state_dict(sd, strict=False)
    tied = {"decoder.lm_head.weight"} if model.decoder.config.tie_embeddings else set()
    missing = [k for k in missing if k not in tied and not (config.decoder_base and k.startswith("decoder."))]
    if missing or unexpected:
        raise UserError(f"{file}: weights do not match the config (missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]})")
    return PretrainedVLM(model.to(device).eval(), Tokenizer.load(path / TOKENIZER_FILE), str(path))
