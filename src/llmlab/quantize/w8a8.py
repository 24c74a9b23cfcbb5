"""W8A8: int8 weights AND int8 activations, multiplied as integers; SmoothQuant (Xiao et al. 2022) migration.

Weight-only layers (`layers.py`) still multiply in floating point. Here both operands are int8:

    weights      W (out, in)   per output channel, symmetric: W ~ Wq * sw     Wq int8, sw (out,)
    activations  x (M, in)     per token (row), symmetric, computed at run time (dynamic):
                               sx = max|x_row| / 127, xq = round(x / sx)      xq int8, sx (M, 1)
    product      y = (xq @ Wq^T) * sx * sw^T + b      the matmul in int32 (`torch._int_mm`), exact

The scales factor out of the sum only because they are per row of x and per row of W; that is why
W8A8 is per-channel, never group-wise. `torch._int_mm` runs on the CPU in this PyTorch (oneDNN,
VNNI where the CPU has it); on CUDA it needs more than 16 rows, so short inputs are zero-padded to 17.

The problem is activations: LLMs have a few input channels with outliers 10-100x the rest, and one
absmax per token then leaves the ordinary channels only a handful of levels. SmoothQuant moves the
difficulty into the weights with a per-channel scale s (in,):

    s_j = max|X_j|^alpha / max|W_:j|^(1 - alpha)        (alpha = 0.5 by default)
    y = (x / s) (W * s)^T                               mathematically the same product

max|X_j| comes from calibration (`act_absmax`, one (in,) tensor per layer, collected by
`llmlab.quantize.calibration`). The paper folds 1/s into the preceding LayerNorm; here it stays
an `input_scale` buffer on the layer (one division per call) so every layer smooths on its own
and nothing else in the model changes.

Reference path (`layer.fast = False`): the same per-token rounding done in float (quantise, then
dequantise x) times the dequantised weight, F.linear. It equals the integer path up to float32
summation order. Gradients (if ever needed) pass straight through the rounding: grad_x = grad_y W.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmlab.common.errors import UserError
from llmlab.quantize.layers import Int8Linear
from llmlab.quantize.rtn import quantize_weight


def quantize_activations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, in) -> (xq int8 (M, in), sx float32 (M, 1)): symmetric absmax per row; all-zero rows get sx = 1.

    [[0.5, -1.27, 0.0]] -> sx = 0.01, xq = [[50, -127, 0]].
    """
    absmax = x.abs().amax(-1, keepdim=True).float()  # (M, 1)
    sx = torch.where(absmax > 0, absmax / 127, torch.ones_like(absmax))
    xq = torch.round(x.float() / sx).clamp(-127, 127).to(torch.int8)
    return xq, sx


def smooth_scales(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """SmoothQuant's s (in,): act_absmax^alpha / max|W_:j|^(1-alpha), both clamped at 1e-5 as in the paper's code.

    act_absmax=[100, 1], column maxima of W [1, 1], alpha=0.5 -> s = [10, 1]: x_0 / 10, W_:0 * 10.
    """
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"alpha must lie in [0, 1] (got {alpha}); 0.5 balances activations and weights")
    if act_absmax.shape != (weight.shape[1],):
        raise UserError(f"act_absmax: expected shape ({weight.shape[1]},) (the layer's input width), "
                        f"got {tuple(act_absmax.shape)}")
    w_absmax = weight.detach().abs().amax(0).float().clamp(min=1e-5)  # (in,)
    s = act_absmax.float().clamp(min=1e-5).pow(alpha) / w_absmax.pow(1 - alpha)
    return s.clamp(min=1e-5)


class _W8A8Matmul(torch.autograd.Function):
    """y = x W^T through the integer (or reference) path; the rounding is passed straight through in backward."""

    @staticmethod
    def forward(ctx, x, layer, fast):
        ctx.layer = layer
        return layer.int_matmul(x) if fast else layer.reference_matmul(x)

    @staticmethod
    def backward(ctx, grad_y):
        return grad_y @ ctx.layer.dequantize(grad_y.dtype), None, None


class W8A8Linear(Int8Linear):
    """int8 per-channel weights x int8 per-token activations, with an optional SmoothQuant `input_scale` (in,)."""

    @classmethod
    def from_linear(cls, linear: nn.Linear, act_absmax: torch.Tensor | None = None,
                    alpha: float = 0.5) -> "W8A8Linear":
        """Quantise an nn.Linear; with `act_absmax` (in,) from calibration, smooth it first (W * s, x / s)."""
        w = linear.weight.detach().float()
        s = None
        if act_absmax is not None:
            s = smooth_scales(act_absmax.to(w.device), w, alpha)
            w = w * s  # (out, in) * (in,): column j scaled by s_j
        codes, scales, _ = quantize_weight(w, 8, None, symmetric=True)
        return cls.from_codes(codes, scales, None, linear.bias, linear.weight.dtype, input_scale=s)

    def _build_cache(self, device: torch.device) -> dict | None:
        if not self.symmetric or self.scales.shape[1] != 1 or self.perm is not None:
            return None  # W8A8 is per-channel symmetric by construction; anything else uses the reference
        return {"name": "_int_mm (int8 x int8 -> int32)", "wt": self.qweight.t(),  # (in, out) view
                "sw": self.scales[:, 0].float()}

    def _smoothed(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])  # (M, in)
        return x2 if self.input_scale is None else x2 / self.input_scale.to(x2.dtype)

    def int_matmul(self, x: torch.Tensor) -> torch.Tensor:
        cache = self._kernel_cache(x.device)
        xq, sx = quantize_activations(self._smoothed(x))  # (M, in) int8, (M, 1)
        m = xq.shape[0]
        if x.device.type == "cuda" and m <= 16:  # cuBLASLt's int8 GEMM wants more than 16 rows
            xq = F.pad(xq, (0, 0, 0, 17 - m))
        acc = torch._int_mm(xq, cache["wt"])[:m]  # (M, out) int32, exact
        y = acc.float() * sx * cache["sw"]  # (M, out)
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def reference_matmul(self, x: torch.Tensor) -> torch.Tensor:
        xq, sx = quantize_activations(self._smoothed(x))
        y = F.linear(xq.float() * sx, self.stored_weight(torch.float32))  # (M, out)
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    @property
    def kernel(self) -> str:
        c = self._kernel_cache(self.device) if self.fast else None
        return c["name"] if c else "fake-quantised activations x dequantized weight"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = self.fast and self._kernel_cache(x.device) is not None
        if torch.is_grad_enabled() and x.requires_grad:
            y = _W8A8Matmul.apply(x, self, fast)
        else:
            y = self.int_matmul(x) if fast else self.reference_matmul(x)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activations int8 per token, smoothed={self.input_scale is not None}"
