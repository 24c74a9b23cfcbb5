"""Lab: gpt-to-llama, the checks. Each of the learner's modules gets the weights of llmlab's own part (RMSNorm,
Attention, SwiGLUMLP, Block, and the whole `Transformer` with a Llama config) copied in by name, as a converter
loads a checkpoint, and must give the same outputs. The weights are random and large, so a missing rotation or
a wrong sharing of key/value heads shows. Typical slips are computed with llmlab's weights and named.
"""

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmlab.labs.checking import CheckFailed, CheckList, Workspace, call, close, diagnose, expect_tensor
from llmlab.models import Transformer, get_preset
from llmlab.models.gpt import Block, count_parameters
from llmlab.models.layers import Attention, RMSNorm, SwiGLUMLP, apply_rope, repeat_kv, rope_cos_sin, rope_inv_freq

CHECKS = CheckList()
NAMES = "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, attn_norm, mlp_norm, tok_emb, norm_f, lm_head"


def _config(**overrides):
    """A small Llama: 4 query heads sharing 2 key/value heads unless overridden."""
    sizes = dict(vocab_size=61, seq_len=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, intermediate_size=48)
    return get_preset("llama-tiny", **{**sizes, **overrides})


@torch.no_grad()
def _randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Large random weights (norm gains around 1), so that every part changes the output visibly."""
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        noise = torch.randn(p.shape, generator=g)
        p.copy_(1 + 0.2 * noise if p.dim() == 1 else 0.3 * noise)
    return module.eval()


def _names_hint(what: str, missing: list[str], extra: list[str]) -> str:
    if any(n.split(".")[-1] == "bias" for n in extra):
        first = next(n for n in extra if n.split(".")[-1] == "bias")
        return f"{what} has {first}: Llama has no biases (nn.Linear(..., bias=False); RMSNorm has none)"
    if any(n.startswith("pos_emb") for n in extra):
        return "Llama has no position table (pos_emb): RoPE rotates q and k inside attention instead"
    if any("gate_proj" in n for n in missing):
        return "SwiGLU has three matrices: gate_proj, up_proj and down_proj"
    return (f"{what}'s parameter names differ from llmlab's: missing {', '.join(missing[:3]) or 'none'}, unexpected "
            f"{', '.join(extra[:3]) or 'none'}; keep GPT2's names ({NAMES})")


def _load(theirs: nn.Module, ours: nn.Module, what: str) -> nn.Module:
    """Copy llmlab's weights into the learner's module by name, as a checkpoint converter would; returns theirs."""
    if not isinstance(theirs, nn.Module):
        raise CheckFailed(f"{what} must subclass torch.nn.Module")
    buffers = {n for n, _ in theirs.named_buffers()}
    have = theirs.state_dict()
    kept = [n for n in have if n in buffers]
    if kept:
        raise CheckFailed(f"{what} keeps the buffer {kept[0]} in its state_dict: register tables with "
                          "persistent=False, so a state_dict holds the weights only")
    want = ours.state_dict()
    missing, extra = [n for n in want if n not in have], [n for n in have if n not in want]
    if missing or extra:
        raise CheckFailed(_names_hint(what, missing, extra))
    for n, w in want.items():
        if have[n].shape != w.shape:
            layer = n.split(".")[-2] if "." in n else ""
            hint = ("grouped-query attention: k_proj and v_proj make n_kv_head * head_dim outputs, fewer than q_proj"
                    if layer in ("k_proj", "v_proj") else "the MLP's hidden width is config.intermediate_size"
                    if layer in ("gate_proj", "up_proj", "down_proj") else "")
            raise CheckFailed(f"{what}: {n} has shape {tuple(have[n].shape)}, llmlab's {tuple(w.shape)}"
                              + (f"; {hint}" if hint else ""))
    theirs.load_state_dict(want)
    return theirs.eval()


def _tables(T: int, D: int, theta: float, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    positions = torch.arange(start, start + T)[None]  # (1, T)
    return rope_cos_sin(positions, rope_inv_freq(D, theta), torch.float32)  # each (1, 1, T, D)


def _rotate(x: torch.Tensor, theta: float, how: str = "half", start: int = 0) -> torch.Tensor:
    """x (B, H, T, D) at positions start.. rotated the way `how` says: llmlab's ("half"), the paper's pairs
    (2i, 2i + 1), or not at all."""
    if how == "none":
        return x
    if how == "half":
        return apply_rope(x, *_tables(x.shape[-2], x.shape[-1], theta, start))
    freqs = torch.arange(start, start + x.shape[-2])[:, None].float() * rope_inv_freq(x.shape[-1], theta)  # (T, D/2)
    a, b, cos, sin = x[..., 0::2], x[..., 1::2], freqs.cos(), freqs.sin()
    return torch.stack([a * cos - b * sin, b * cos + a * sin], -1).flatten(-2)  # pairs (2i, 2i + 1)


# ---- RMSNorm -----------------------------------------------------------------------------------------------

@CHECKS.add("RMSNorm", "weight is a parameter of ones and there is no bias; equals llmlab's RMSNorm, any eps")
def rmsnorm_values(ws: Workspace) -> None:
    m = call(ws.get("RMSNorm"), 6, eps=1e-5)
    if not isinstance(m, nn.Module):
        raise CheckFailed("RMSNorm must subclass torch.nn.Module")
    params = dict(m.named_parameters())
    if set(params) != {"weight"}:
        raise CheckFailed(f"RMSNorm's parameters should be weight alone, found {sorted(params) or 'none'}"
                          + (": RMSNorm has no bias" if "bias" in params else ""))
    if not torch.equal(params["weight"].detach(), torch.ones(6)):
        raise CheckFailed("weight should start as ones")
    for shape, scale, eps in (((2, 5, 16), 1.0, 1e-5), ((1, 1, 8), 1e-4, 1e-6), ((3, 7), 1e3, 1e-5),
                              ((4, 9), 1.0, 0.5)):
        ours = _randomise(RMSNorm(shape[-1], eps))
        theirs = _load(call(ws.get("RMSNorm"), shape[-1], eps=eps), ours, "RMSNorm")
        x = torch.randn(shape) * scale
        w = ours.weight.detach()
        ms = x.pow(2).mean(-1, keepdim=True)
        with torch.no_grad():
            out = expect_tensor(call(theirs, x), shape, f"RMSNorm for x {shape}")
            diagnose(out, ours(x), {
                "RMSNorm subtracts the mean: that is LayerNorm's centring; Llama divides x itself by its RMS":
                    F.layer_norm(x, (shape[-1],), eps=eps) * w,
                "eps belongs inside the square root: sqrt(mean(x^2) + eps)": x / (ms.sqrt() + eps) * w,
                "the weight is not applied": x * (ms + eps).rsqrt(),
                "use the mean of the squares, not their sum": x * (x.pow(2).sum(-1, keepdim=True) + eps).rsqrt() * w,
                "use the eps you are given (config.norm_eps)":
                    (x * (ms + 1e-5).rsqrt() * w, x * (ms + 1e-6).rsqrt() * w),
            }, f"RMSNorm for x {shape} of scale {scale:g}, eps={eps:g}, differs from llmlab's", atol=1e-4)


# ---- rope --------------------------------------------------------------------------------------------------

@CHECKS.add("rope", "equals llmlab's (Llama's) rotation for any batch, heads, length and theta")
def rope_values(ws: Workspace) -> None:
    for (B, H, T, D), theta in (((2, 3, 5, 8), 10000.0), ((1, 1, 1, 4), 10000.0), ((1, 2, 6, 16), 500000.0)):
        x = torch.randn(B, H, T, D)
        positions = torch.arange(T) + 3  # not from 0: the positions given must be used
        out = expect_tensor(call(ws.get("rope"), x.clone(), positions, theta=theta), x.shape,
                            f"rope for x {(B, H, T, D)}")
        half = D // 2
        cos, sin = _tables(T, D, theta, start=3)
        swapped = torch.cat([x[..., half:], -x[..., :half]], -1)
        slow = 1.0 / theta ** (torch.arange(0, half, dtype=torch.float32) / D)  # theta^(-i/D): the slip
        diagnose(out, _rotate(x, theta, start=3), {
            "you rotate the pairs (2i, 2i + 1), as the paper writes it; Llama pairs channel i with i + D/2 "
            "(rotate_half)": _rotate(x, theta, "pairs", start=3),
            "the rotation goes the wrong way: (a, b) -> (a cos - b sin, b cos + a sin)": x * cos + swapped * sin,
            "the frequencies are theta^(-2i/D) for the pair i, not theta^(-i/D)":
                apply_rope(x, *rope_cos_sin(positions[None], slow, torch.float32)),
            "the positions are not used: the angle is position * frequency": (x, _rotate(x, theta)),
            "use the theta you are given": _rotate(x, 10000.0, start=3),
        }, f"rope for x {(B, H, T, D)} at positions 3..{T + 2}, theta={theta:g}, differs from llmlab's", atol=1e-4)


# ---- LlamaAttention ----------------------------------------------------------------------------------------

def _attention(ws: Workspace, config, seed: int = 0) -> tuple[nn.Module, Attention]:
    ours = _randomise(Attention(config), seed)
    return _load(call(ws.get("LlamaAttention"), config), ours, "LlamaAttention"), ours


def _ours(a: Attention, x: torch.Tensor, theta: float) -> torch.Tensor:
    return a(x, _tables(x.shape[1], a.head_dim, theta), None, None, 0)


def _attention_slip(a: Attention, x: torch.Tensor, theta: float, rotate: str = "half", rotate_v: bool = False,
                    tile: bool = False, causal: bool = True) -> torch.Tensor:
    """llmlab's attention with one typical mistake switched on."""
    B, T, _ = x.shape
    H, Hkv, D = a.n_head, a.n_kv_head, a.head_dim
    q = _rotate(a.q_proj(x).view(B, T, H, D).transpose(1, 2), theta, rotate)  # (B, H, T, D)
    k = _rotate(a.k_proj(x).view(B, T, Hkv, D).transpose(1, 2), theta, rotate)  # (B, Hkv, T, D)
    v = a.v_proj(x).view(B, T, Hkv, D).transpose(1, 2)
    v = _rotate(v, theta) if rotate_v else v
    k, v = (t.repeat(1, H // Hkv, 1, 1) if tile else repeat_kv(t, H // Hkv) for t in (k, v))  # (B, H, T, D)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return a.o_proj(y.transpose(1, 2).reshape(B, T, H * D))


@CHECKS.add("LlamaAttention", "q_proj, k_proj, v_proj, o_proj without biases, k and v with n_kv_head heads")
def attention_parameters(ws: Workspace) -> None:
    theirs, _ = _attention(ws, _config())
    frozen = [n for n, p in theirs.named_parameters() if not p.requires_grad]
    if frozen:
        raise CheckFailed(f"{frozen[0]} is frozen (requires_grad=False): every projection trains")


def _attention_diagnose(out: torch.Tensor, ours: Attention, x: torch.Tensor, theta: float, otherwise: str) -> None:
    def slip(**knobs):
        return _attention_slip(ours, x, theta, **knobs)

    with torch.no_grad():
        diagnose(out, _ours(ours, x, theta), {
            "no RoPE: rotate q and k by their positions after the split into heads": slip(rotate="none"),
            "RoPE rotates q and k only, not v": slip(rotate_v=True),
            "you rotate the pairs (2i, 2i + 1); Llama pairs channel i with i + D/2 (rotate_half)": slip(rotate="pairs"),
            "use theta = config.rope_theta": _attention_slip(ours, x, 10000.0),
            "key/value head j serves the n_head // n_kv_head CONSECUTIVE query heads from j * (n_head // n_kv_head) "
            "on: repeat_interleave on the head axis; .repeat() tiles them in the wrong order": slip(tile=True),
            "attention must be causal: position i sees positions 0..i only": slip(causal=False),
        }, otherwise, atol=1e-4)


@CHECKS.add("LlamaAttention", "equals llmlab's attention: RoPE on q and k, each key/value head shared, causal")
def attention_values(ws: Workspace) -> None:
    config = _config(rope_theta=500000.0)
    theirs, ours = _attention(ws, config)
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        out = expect_tensor(call(theirs, x), x.shape, "LlamaAttention(x)")
    _attention_diagnose(out, ours, x, config.rope_theta,
                        "LlamaAttention differs from llmlab's Attention with the same weights")


@CHECKS.add("LlamaAttention", "every shape: one key/value head (MQA), as many as query heads, T = 1; gradients")
def attention_shapes(ws: Workspace) -> None:
    for (B, T), overrides in (((1, 5), dict(n_head=2, n_kv_head=1, n_embd=16)), ((3, 1), {}),
                              ((2, 6), dict(n_head=4, n_kv_head=4, n_embd=24))):
        config = _config(**overrides)
        theirs, ours = _attention(ws, config, seed=1)
        x = torch.randn(B, T, config.n_embd)
        what = f"with n_head={config.n_head}, n_kv_head={config.n_kv_head}, x {(B, T, config.n_embd)}"
        out = expect_tensor(call(theirs, x), x.shape, f"LlamaAttention {what}")
        _attention_diagnose(out, ours, x, config.rope_theta,
                            f"LlamaAttention {what} differs from llmlab's: sizes hard-coded?")
        out.sum().backward()
        missing = [n for n, p in theirs.named_parameters() if p.grad is None]
        if missing:
            raise CheckFailed(f"no gradient reaches {missing[0]}: is it used through .detach() or torch.no_grad()?")


# ---- SwiGLUMLP ---------------------------------------------------------------------------------------------

@CHECKS.add("SwiGLUMLP", "gate_proj, up_proj, down_proj without biases; down(silu(gate(x)) * up(x))")
def swiglu_values(ws: Workspace) -> None:
    for config, shape in ((_config(), (2, 5, 32)), (_config(n_embd=16, n_head=2, intermediate_size=40), (1, 1, 16))):
        ours = _randomise(SwiGLUMLP(config))
        theirs = _load(call(ws.get("SwiGLUMLP"), config), ours, "SwiGLUMLP")
        x = torch.randn(shape)
        gate, up, down = ours.gate_proj(x), ours.up_proj(x), ours.down_proj
        with torch.no_grad():
            out = expect_tensor(call(theirs, x), shape, f"SwiGLUMLP for x {shape}")
            diagnose(out, ours(x), {
                "silu goes on gate_proj's output, not up_proj's": down(gate * F.silu(up)),
                "the gate is missing: multiply silu(gate_proj(x)) by up_proj(x)":
                    (down(F.silu(gate)), down(F.silu(up))),
                "Llama's gate uses SiLU, x * sigmoid(x), not GELU": down(F.gelu(gate) * up),
                "apply silu to gate_proj(x) alone, then multiply by up_proj(x)": down(F.silu(gate * up)),
            }, f"SwiGLUMLP for x {shape} differs from llmlab's", atol=1e-4)


# ---- LlamaBlock --------------------------------------------------------------------------------------------

@CHECKS.add("LlamaBlock", "attn_norm, attn, mlp_norm, mlp as RMSNorms, LlamaAttention, SwiGLUMLP; Pre-LN residuals")
def block_values(ws: Workspace) -> None:
    config = _config(norm_eps=1e-6)
    ours = _randomise(Block(config))
    theirs = _load(call(ws.get("LlamaBlock"), config), ours, "LlamaBlock")
    x = torch.randn(2, 6, 32) * 3
    rope = _tables(6, config.head_dim, config.rope_theta)

    def attn(h):
        return ours.attn(h, rope, None, None, 0)

    with torch.no_grad():
        out = expect_tensor(call(theirs, x), x.shape, "LlamaBlock(x)")
        after_attn = x + attn(ours.attn_norm(x))
        post = ours.attn_norm(x + attn(x))
        diagnose(out, ours(x, rope, None, None, 0), {
            "that is Post-LN, norm(x + f(x)); Llama normalises each branch's input: x + f(norm(x))":
                ours.mlp_norm(post + ours.mlp(post)),
            "the residual is missing: x + attn(attn_norm(x)), then x + mlp(mlp_norm(x))":
                ours.mlp(ours.mlp_norm(attn(ours.attn_norm(x)))),
            "the MLP branch reads the stream after attention's residual, not x: the branches run one after the other":
                after_attn + ours.mlp(ours.mlp_norm(x)),
        }, "LlamaBlock differs from llmlab's Block with the same weights", atol=1e-4)


# ---- Llama -------------------------------------------------------------------------------------------------

def _llama(ws: Workspace, config, seed: int = 0) -> tuple[nn.Module, Transformer]:
    ours = _randomise(Transformer(config), seed)
    theirs = call(ws.get("Llama"), config)
    blocks = getattr(theirs, "blocks", None)
    if isinstance(blocks, nn.ModuleList) and len(blocks) > 1 and blocks[0] is blocks[1]:
        raise CheckFailed("every block is the same module: build a new LlamaBlock for each of the n_layer layers")
    return _load(theirs, ours, "Llama"), ours


@CHECKS.add("Llama", "llmlab's Llama weights load key by key (no pos_emb, no biases); same logits")
def llama_logits(ws: Workspace) -> None:
    theirs, ours = _llama(ws, _config())
    idx = torch.randint(0, 61, (2, 9))
    with torch.no_grad():
        out = expect_tensor(call(theirs, idx), (2, 9, 61), "Llama(idx)")
        no_final_norm = copy.deepcopy(ours)
        no_final_norm.norm_f = nn.Identity()
        diagnose(out, ours(idx), {
            "the final norm is missing: lm_head(norm_f(x))": no_final_norm(idx),
        }, "Llama's logits differ from llmlab's Llama with the same weights (do the checks above pass?)", atol=1e-4)


@CHECKS.add("Llama", "lm_head IS tok_emb when config.tie_embeddings (and only then); every parameter trains")
def llama_tied(ws: Workspace) -> None:
    for tie in (True, False):
        config = _config(tie_embeddings=tie)
        theirs, ours = _llama(ws, config)
        tied = theirs.lm_head.weight is theirs.tok_emb.weight
        if tie and not tied:
            raise CheckFailed("lm_head.weight is a second matrix: tie it, self.lm_head.weight = self.tok_emb.weight, "
                              "when config.tie_embeddings (one vocab_size x n_embd matrix embeds and scores)")
        if tied and not tie:
            raise CheckFailed("config.tie_embeddings is False here, yet lm_head is tok_emb: tie only when it is True")
        if count_parameters(theirs) != count_parameters(ours):
            raise CheckFailed(f"{count_parameters(theirs)} parameters, llmlab's Llama has {count_parameters(ours)}")
    theirs.train()
    call(theirs, torch.randint(0, 61, (2, 4))).sum().backward()
    missing = [n for n, p in theirs.named_parameters() if p.grad is None]
    if missing:
        raise CheckFailed(f"no gradient reaches {missing[0]}: is it used in forward?")


@CHECKS.add("Llama", "every config: MQA and MHA, one layer or three, untied, other eps and theta, T = 1")
def llama_configs(ws: Workspace) -> None:
    for (B, T), overrides in (((1, 1), dict(n_layer=1)),
                              ((1, 7), dict(n_head=2, n_kv_head=1, n_embd=16, tie_embeddings=False, norm_eps=1e-6,
                                            rope_theta=500000.0, intermediate_size=40)),
                              ((3, 5), dict(n_layer=3, n_head=2, n_kv_head=2, vocab_size=50))):
        config = _config(**overrides)
        theirs, ours = _llama(ws, config, seed=2)
        idx = torch.randint(0, config.vocab_size, (B, T))
        what = f"for idx {(B, T)} and {', '.join(f'{k}={v}' for k, v in overrides.items())}"
        with torch.no_grad():
            out = expect_tensor(call(theirs, idx), (B, T, config.vocab_size), f"Llama {what}")
            if not close(out, ours(idx), atol=1e-4):
                raise CheckFailed(f"Llama's logits {what} differ from llmlab's: is a size or a setting hard-coded?")
