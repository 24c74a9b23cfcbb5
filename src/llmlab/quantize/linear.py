"""The common type of quantised linear layers: stored compactly, computed in float.

A `QuantizedLinear` keeps its weight in some compact form and rebuilds a float
(out, in) matrix when it computes: `y = x W^T + b`. The rebuilt matrix is
thrown away after forward and rebuilt again in backward, so only the compact
bytes stay in memory while training adapters on top (QLoRA). Subclasses say how
to store (`__init__`) and how to rebuild (`dequantize`); everything else is here.
Quantised layers are frozen: gradients flow through them to the input, never into them.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmlab.models.swap import find_modules, replace_module


class _DequantizedMatmul(torch.autograd.Function):
    """y = x W^T + b with W rebuilt in forward and again in backward, so only the compact weight is kept."""

    @staticmethod
    def forward(ctx, x, layer, bias):
        ctx.layer = layer
        # the bias is kept in the dtype the layer was built in; follow the input's (bf16 under autocast)
        return F.linear(x, layer.dequantize(x.dtype), None if bias is None else bias.to(x.dtype))

    @staticmethod
    def backward(ctx, grad_y):
        return grad_y @ ctx.layer.dequantize(grad_y.dtype), None, None  # (B, T, out) @ (out, in)


class QuantizedLinear(nn.Module):
    """A frozen linear layer with a compact weight. Subclasses implement `dequantize(dtype)`."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.compute_dtype = linear.weight.dtype
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The float weight (out, in), rebuilt from the compact form."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.buffers()).device

    @property
    def weight(self) -> torch.Tensor:
        """The dequantised weight (out, in): a fresh tensor, read-only in effect."""
        return self.dequantize()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _DequantizedMatmul.apply(x, self, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


@torch.no_grad()
def dequantize_model(model: nn.Module) -> nn.Module:
    """Replace every `QuantizedLinear` by a plain `nn.Linear` holding its dequantised weight, in place."""
    for name in find_modules(model, (QuantizedLinear,)):
        q = model.get_submodule(name)
        linear = nn.Linear(q.in_features, q.out_features, bias=q.bias is not None, device=q.device,
                           dtype=q.compute_dtype)
        linear.weight.copy_(q.dequantize())
        if q.bias is not None:
            linear.bias.copy_(q.bias)
        replace_module(model, name, linear)
    return model
