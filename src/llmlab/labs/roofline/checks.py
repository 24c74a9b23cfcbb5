"""Lab: roofline, the checks. References: llmlab's `Matmul` and `flops_per_token` (its tests hold both equal to
torch's `FlopCounterMode`), and torch's own `FlopCounterMode` here too, on explicit attention and on a forward
and backward pass of a real llmlab decoder. Timing is checked with functions that sleep known times. Typical
mistakes (mkn FLOPs, the forward pass only, the head left out, a mean time) are computed and named.
"""

import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from llmlab.labs.checking import CheckFailed, CheckList, Workspace, call, diagnose
from llmlab.models import Transformer, get_preset
from llmlab.models.gpt import flops_per_token
from llmlab.train.objectives import causal_lm_loss
from llmlab.train.profile import Matmul

CHECKS = CheckList()
ROOFS = [(100e9, 25e9), (989e12, 3.35e12)]  # (peak FLOP/s, bytes/s): a CPU core; an H100's bf16 and HBM3


def _pair(out, what: str) -> torch.Tensor:
    if out is None:
        raise CheckFailed(f"{what} returned None: did you forget `return`?")
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise CheckFailed(f"{what} should return two numbers: (flops, bytes)")
    try:
        return torch.tensor([float(v) for v in out], dtype=torch.float64)
    except (TypeError, ValueError):
        raise CheckFailed(f"{what} returned {out!r}, not two numbers") from None


def _number(out, what: str) -> float:
    try:
        value = float(out)
    except (TypeError, ValueError):
        raise CheckFailed(f"{what} returned {out!r}, not a number" + (": did you forget `return`?"
                                                                       if out is None else "")) from None
    if not np.isfinite(value):
        raise CheckFailed(f"{what} returned {value}")
    return value


def _t(*values) -> torch.Tensor:
    return torch.tensor([float(v) for v in values], dtype=torch.float64)


# ---- matmul_cost ------------------------------------------------------------------------------------------

@CHECKS.add("matmul_cost", "2 m k n FLOPs; the bytes of both inputs and the output (float32 and bf16)")
def matmul_values(ws: Workspace) -> None:
    for m, k, n in ((2, 3, 4), (1, 4096, 4096), (512, 768, 3072), (7, 1, 5), (1, 1, 1)):
        for eb in (4, 2):
            out = _pair(call(ws.get("matmul_cost"), m, k, n, element_bytes=eb), f"matmul_cost({m}, {k}, {n})")
            mm = Matmul("ref", m, k, n, element_bytes=eb)
            numbers = m * k + k * n + m * n
            diagnose(out, _t(mm.flops, mm.bytes), {
                "count 2 FLOPs per term of each dot product, a multiply and an add: 2 m k n": _t(m * k * n, mm.bytes),
                "bytes are numbers times element_bytes: you counted numbers": _t(mm.flops, numbers),
                "the output (m, n) is written to memory too: count m k + k n + m n numbers":
                    _t(mm.flops, eb * (m * k + k * n)),
                "use element_bytes (2 for bf16): you count 4 bytes per number whatever it is":
                    _t(mm.flops, 4 * numbers),
            }, f"matmul_cost({m}, {k}, {n}, element_bytes={eb}) should be ({mm.flops}, {mm.bytes})", rtol=1e-9,
                atol=0.0)


# ---- attention_cost ---------------------------------------------------------------------------------------

def _counted(B: int, H: int, T: int, D: int) -> int:
    """Torch's count of the matmul FLOPs of explicit attention at these shapes."""
    q, k, v = (torch.randn(B, H, T, D) for _ in range(3))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        torch.softmax(q @ k.transpose(-2, -1) / D**0.5, dim=-1) @ v
    return counter.get_total_flops()


SHAPES = [(1, 1, 1, 8), (2, 3, 7, 5), (1, 4, 64, 32), (8, 12, 128, 64)]  # (B, H, T, D)


@CHECKS.add("attention_cost", "FLOPs equal torch's FlopCounterMode on q @ k^T and weights @ v")
def attention_flops(ws: Workspace) -> None:
    for B, H, T, D in SHAPES:
        flops = _pair(call(ws.get("attention_cost"), B, H, T, D), f"attention_cost{(B, H, T, D)}")[:1]
        diagnose(flops, _t(_counted(B, H, T, D)), {
            "half the FLOPs: two matmuls per head, q @ k^T and weights @ v, each 2 T^2 D (a multiply and an add "
            "per term), and every one of the T x T scores counts": _t(2 * B * H * T * T * D),
            "multiply by the batch and the heads: B * H copies of the attention of one head": _t(4 * T * T * D),
        }, f"attention_cost{(B, H, T, D)}: FLOPs should be {_counted(B, H, T, D)}, torch's count", rtol=1e-9, atol=0.0)


@CHECKS.add("attention_cost", "bytes of a fused kernel: q, k, v read and the output written, nothing T x T")
def attention_bytes(ws: Workspace) -> None:
    for B, H, T, D in SHAPES:
        for eb in (4, 2):
            moved = _pair(call(ws.get("attention_cost"), B, H, T, D, element_bytes=eb),
                          f"attention_cost{(B, H, T, D)}")[1:]
            x = B * H * T * D  # numbers in one of q, k, v or the output
            diagnose(moved, _t(4 * x * eb), {
                "a fused kernel keeps the (T, T) scores on the chip: count only q, k, v and the output":
                    (_t((4 * x + B * H * T * T) * eb), _t((4 * x + 2 * B * H * T * T) * eb)),
                "the output (B, H, T, D) is written to memory too": _t(3 * x * eb),
                "bytes are numbers times element_bytes: you counted numbers": _t(4 * x),
                "use element_bytes (2 for bf16): you count 4 bytes per number whatever it is": _t(16 * x),
            }, f"attention_cost{(B, H, T, D)}, element_bytes={eb}: bytes should be {4 * x * eb}", rtol=1e-9, atol=0.0)


# ---- flops_per_token --------------------------------------------------------------------------------------

def _fpt(c, T: int, passes: int = 6, head: int = 1, attention: bool = True, gqa: bool = True,
         mlp_matrices: int | None = None, head_dim: int | None = None) -> torch.Tensor:
    """flops_per_token with one knob per typical mistake; the defaults are the right count."""
    D = head_dim or c.head_dim
    kv = c.n_kv_head if gqa else c.n_head
    attn = c.n_embd * D * (2 * c.n_head + 2 * kv)
    mlp = c.n_embd * c.intermediate_size * (mlp_matrices or (3 if c.mlp == "swiglu" else 2))
    n = c.n_layer * (attn + mlp) + head * c.n_embd * c.vocab_size
    return _t(passes * n + (2 * passes * c.n_layer * c.n_head * D * T if attention else 0))


CONFIGS = [get_preset("gpt2-tiny"), get_preset("llama-tiny"), get_preset("smollm2-135m"),
           get_preset("gpt2-tiny", n_layer=1, n_embd=48, n_head=3, vocab_size=101, seq_len=17),
           get_preset("llama-tiny", n_embd=64, n_head=4, n_kv_head=1, head_dim=32, intermediate_size=96)]


@CHECKS.add("flops_per_token", "equals llmlab's flops_per_token: GPT-2 and Llama shapes, GQA, a head_dim set apart")
def fpt_values(ws: Workspace) -> None:
    for c in CONFIGS:
        for seq_len in (None, 5):
            T = seq_len or c.seq_len
            out = _t(_number(call(ws.get("flops_per_token"), c, seq_len), "flops_per_token"))
            diagnose(out, _t(flops_per_token(c, seq_len)), {
                "that is the forward pass only: training runs backward too, 4 more FLOPs per weight (6 in all), "
                "and 3x attention's forward 4 T H D": _fpt(c, T, passes=2),
                "the output head (n_embd x vocab_size) is a matmul too: it costs 6 * n_embd * vocab_size":
                    _fpt(c, T, head=0),
                "an embedding lookup costs no FLOPs: count the (tied) n_embd x vocab_size matrix once, as the head":
                    _fpt(c, T, head=2),
                "attention's scores and mixing are missing: + 12 * n_layer * n_head * head_dim * T":
                    _fpt(c, T, attention=False),
                "k_proj and v_proj have n_kv_head * head_dim outputs (grouped-query attention), not n_head * head_dim":
                    _fpt(c, T, gqa=False),
                "a SwiGLU MLP has 3 matrices (gate, up, down), a GELU MLP 2": _fpt(c, T, mlp_matrices=5 - (
                    3 if c.mlp == "swiglu" else 2)),
                "use config.head_dim: some models set it apart from n_embd // n_head":
                    _fpt(c, T, head_dim=c.n_embd // c.n_head),
                "use seq_len when it is given (config.seq_len only when it is None)": _fpt(c, c.seq_len),
            }, f"differs from llmlab's flops_per_token for n_layer={c.n_layer}, n_embd={c.n_embd}, mlp={c.mlp}, "
               f"T={T}", rtol=1e-9, atol=0.0)


@CHECKS.add("flops_per_token", "equals torch's FlopCounterMode on a training step of an llmlab model, plus attention")
def fpt_torch(ws: Workspace) -> None:
    for preset in ("gpt2-tiny", "llama-tiny"):
        torch.manual_seed(0)
        c = get_preset(preset, vocab_size=96, seq_len=16, n_layer=2, n_embd=32, n_head=4)
        model = Transformer(c)
        B, T = 2, 16
        idx = torch.randint(0, 96, (B, T + 1))
        counter = FlopCounterMode(display=False)
        with counter:
            causal_lm_loss(model(idx[:, :-1]), idx[:, 1:]).backward()
        attention = 12 * c.n_layer * c.n_head * c.head_dim * T * B * T  # inside SDPA, which torch does not count
        want = (counter.get_total_flops() + attention) / (B * T)
        out = _number(call(ws.get("flops_per_token"), c, T), "flops_per_token")
        if not np.isclose(out, want, rtol=1e-9):
            raise CheckFailed(f"{preset}: {out:.6g} FLOPs per token; torch counts {want:.6g} on a forward and "
                              "backward pass (with attention's 12 n_layer n_head head_dim T added)")


# ---- attainable_flops, bound_by ---------------------------------------------------------------------------

INTENSITIES = np.array([0.05, 0.5, 3.9, 4.1, 40.0, 250.0, 400.0, 1e4])  # either side of both ridges


@CHECKS.add("attainable_flops", "min(peak, intensity x bandwidth) for numbers and numpy arrays")
def roof_values(ws: Workspace) -> None:
    fn = ws.get("attainable_flops")
    for peak, bw in ROOFS:
        try:
            out = call(fn, INTENSITIES.copy(), peak, bw)
        except ValueError as e:
            if "truth value of an array" not in str(e):
                raise
            raise CheckFailed("attainable_flops fails on an array of intensities: use np.minimum, which works "
                              "elementwise (Python's min() does not)") from None
        try:
            out = torch.as_tensor(np.asarray(out, dtype=float))
        except (TypeError, ValueError):
            raise CheckFailed(f"attainable_flops returned {type(out).__name__}, not numbers") from None
        if tuple(out.shape) != INTENSITIES.shape:
            raise CheckFailed(f"for an array of {len(INTENSITIES)} intensities attainable_flops returned shape "
                              f"{tuple(out.shape)}: use np.minimum, which works elementwise (min() does not)")
        x = torch.as_tensor(INTENSITIES)
        diagnose(out, torch.clamp(x * bw, max=peak), {
            "min, not max: a kernel reaches the lower of the two roofs": torch.clamp(x * bw, min=peak),
            "there is no cap: above the ridge the chip's peak is the limit, min(peak, I x bandwidth)": x * bw,
            "intensity is FLOPs per byte, so FLOPs per second are intensity x bandwidth, not intensity / bandwidth":
                torch.clamp(x / bw, max=peak),
        }, f"differs from min(peak, intensity x bandwidth) for peak={peak:g}, bandwidth={bw:g}", rtol=1e-9, atol=0.0)
        for i in (0, 7):
            one = _number(call(fn, float(INTENSITIES[i]), peak, bw), "attainable_flops for one number")
            if not np.isclose(one, min(peak, INTENSITIES[i] * bw), rtol=1e-9):
                raise CheckFailed(f"attainable_flops({INTENSITIES[i]:g}, {peak:g}, {bw:g}) = {one:g}, expected "
                                  f"{min(peak, INTENSITIES[i] * bw):g}")


@CHECKS.add("bound_by", "'memory' left of the ridge point peak / bandwidth, 'compute' right of it")
def regimes(ws: Workspace) -> None:
    fn = ws.get("bound_by")
    for peak, bw in ROOFS:
        out = []
        for i in INTENSITIES:
            word = call(fn, float(i), peak, bw)
            if not isinstance(word, str) or not word.lower().startswith(("memory", "compute")):
                raise CheckFailed(f"bound_by returned {word!r}: return \"memory\" or \"compute\"")
            out.append(word.lower()[0])
        want = ["m" if i < peak / bw else "c" for i in INTENSITIES]
        if out == want:
            continue
        if out == ["c" if w == "m" else "m" for w in want]:
            raise CheckFailed("the regimes are the wrong way round: a low intensity (few FLOPs per byte) waits for "
                              "memory, so left of the ridge is \"memory\"")
        if out in (["m" if i < r else "c" for i in INTENSITIES] for r in (bw / peak, peak * bw, peak, bw)):
            raise CheckFailed(f"the ridge point, where I x bandwidth = peak, is at I = peak / bandwidth "
                              f"({peak / bw:.3g} FLOPs per byte here)")
        wrong = next(i for i, o, w in zip(INTENSITIES, out, want, strict=True) if o != w)
        raise CheckFailed(f"for intensity {wrong:g} with peak {peak:g} and bandwidth {bw:g} (ridge at "
                          f"{peak / bw:.3g}) the answer is {'memory' if wrong < peak / bw else 'compute'}")


# ---- achieved_flops ---------------------------------------------------------------------------------------

class _Sleeper:
    """A stand-in kernel: its first two calls take `slow` seconds, later ones `fast`; it counts its calls."""

    def __init__(self, slow: float, fast: float):
        self.slow, self.fast, self.calls = slow, fast, 0

    def __call__(self) -> None:
        self.calls += 1
        time.sleep(self.slow if self.calls <= 2 else self.fast)


@CHECKS.add("achieved_flops", "flops over the fastest of `repeats` timed calls, after one warm-up call")
def measuring(ws: Workspace) -> None:
    fn = ws.get("achieved_flops")
    for repeats in (5, 3):
        kernel = _Sleeper(0.15, 0.02)
        value = _number(call(fn, kernel, 1e9, repeats=repeats), "achieved_flops")
        if kernel.calls < repeats:
            raise CheckFailed(f"fn ran {kernel.calls} times for repeats={repeats}: time `repeats` calls")
        if kernel.calls == repeats:
            raise CheckFailed(f"fn ran exactly {repeats} times for repeats={repeats}: call it once more before "
                              "timing, as a warm-up (the first call pays for allocations)")
        ratio = value / (1e9 / 0.02)  # 1 for the fastest call; sleeping never takes less than asked
        if 0.55 <= ratio <= 1.001:
            continue
        if ratio < 1e-6:
            raise CheckFailed(f"achieved_flops returned {value:.3g}: that looks like seconds; return FLOPs per "
                              "second, flops / seconds")
        if ratio > 1.001:
            raise CheckFailed(f"{value:.3g} FLOP/s is faster than the calls could run: is each call timed in "
                              "full, from just before fn() to just after it?")
        if ratio > 0.2:
            raise CheckFailed(f"{value:.3g} FLOP/s: that is flops over the mean time; take the fastest call's "
                              "time (other load only ever slows a call down)")
        raise CheckFailed(f"{value:.3g} FLOP/s, expected about {1e9 / 0.02:.3g}: did you divide by the time of "
                          "all calls together? Time each call alone and take the fastest")


@CHECKS.add("achieved_flops", "a real matmul reaches a plausible FLOP/s on this machine")
def measuring_matmul(ws: Workspace) -> None:
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    value = _number(call(ws.get("achieved_flops"), lambda: a @ b, 2 * 256**3), "achieved_flops")
    if not 1e6 < value < 1e15:
        raise CheckFailed(f"{value:.3g} FLOP/s for a 256 x 256 matmul: a CPU core reaches about 1e9 to 1e11")
