"""Weight-only integer linear layers: `Int8Linear` and `Int4Linear`, computed with PyTorch's integer kernels.

Both hold the codes of the shared convention (`rtn.py`: W = (codes - zeros) * scales, groups of g
columns) in compact buffers and compute y = x W^T + b in one of two ways:

- reference (`QuantizedLinear.forward`, `layer.fast = False`): rebuild the float W with
  `dequantize()` and call F.linear. Readable, exact in float32, slow (W is rebuilt every call).
- fast (`layer.fast = True`, the default): for a few rows (decoding: fewer than GEMM_MIN_ROWS), hand
  the codes to a PyTorch kernel that dequantises tiles on the fly, never materialising W; which
  kernel a layer uses is `layer.kernel`. For many rows (prefill, scoring, training) those tile
  kernels are slower than a plain GEMM, so W is dequantised once, in bf16 (or float32 where the
  CPU has no bf16 dot product), and F.linear runs: ~2x float32's prefill speed on an AVX-512-bf16 CPU.

    layer / config                          CPU                                   CUDA
    Int8Linear per channel or per tensor    _weight_int8pack_mm                   the same, if this build has it
    Int8Linear asymmetric (same)            _weight_int8pack_mm + zero-point term (same)
    Int8Linear group-wise, or in % 16 != 0  dequantize (no kernel has int8 groups)
    Int4Linear, group g a multiple of 32    _weight_int4pack_mm_for_cpu           _weight_int4pack_mm
    Int4Linear, other g, or out % 16 != 0   dequantize

  The x86 kernels are vectorised for bfloat16 activations only (float32 takes a scalar loop ~10x
  slower than F.linear), so the fast path runs them in bf16 (scales rounded to bf16, float32
  accumulation, output rounded to bf16) and casts back to x's dtype. Fast and reference therefore
  agree to bf16 precision (relative error ~2^-8 of the output's size), not float32. On ARM CPUs the
  kernels run in float32.
  Asymmetric INT8 is stored as int8 codes - 128 so the symmetric kernel applies; the zero point is
  one extra term: x (c - z) s = x (c - 128) s - sum(x) (z - 128) s.
  INT4 for the kernels: w = (q - 8) * scale + zero_float with q the stored nibble, so symmetric
  codes are stored as q = c + 8 (zero_float 0), asymmetric as q = c (zero_float = (8 - z) * scale).
  A storage group g is cut into kernel groups of the largest of 256/128/64/32 dividing g (and,
  preferably, the input width: SmolLM2's 576 with g = 128 runs as 9 groups of 64, no padding).

Optional buffers for methods that transform the input (names shared with calibration helpers):
- `input_scale` (in,): x is divided by it before the matmul (AWQ, SmoothQuant fold W * s into the codes);
- `perm` (in,) long: x[..., perm] is what the codes see (GPTQ act-order: column j of the codes is
  column perm[j] of W).
So the codes hold Q with Q[:, j] = (W * input_scale)[:, perm[j]], and `dequantize()` undoes both:
it is always W in the original column order and scale, y = x W^T + b on the reference path.

Input widths a group size does not divide are zero-padded (codes 0 / the zero point) up to a
multiple of g, as `rtn.pad_columns`; `in_features` is the true width and the padding never reaches
the output. Cached kernel layouts (packed int4 tiles, bf16 scales) are built on the first fast call,
kept per device, and dropped on `load_state_dict` or `.to()`; `cache_bytes()` says how much they take.
INT8 computes from its own codes (the cache is just the bf16 scales); INT4's CPU tiles are a second
copy of the 4-bit codes (the portable layout stays for saving, dequantising and backward).

    q = Int4Linear.from_linear(nn.Linear(576, 1536), group_size=128)  # codes (1536, 640): 576 padded
    q.qweight.shape, q.scales.shape   -> (1536, 320) uint8, (1536, 5) float32
    q.kernel                          -> "_weight_int4pack_mm_for_cpu" (9 kernel groups of 64)
    y = q(x)                          # set_fast(model, False) for the reference path

Autograd as QuantizedLinear: the codes are frozen; gradients flow to the input (grad_x = grad_y W,
W dequantised in backward), so LoRA (QLoRA style) trains on top of either layer.
"""

import platform

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmlab.common import log
from llmlab.common.errors import UserError
from llmlab.quantize.linear import QuantizedLinear, _DequantizedMatmul
from llmlab.quantize.rtn import pack_int4, pad_columns, qrange, quantize_weight, unpack_int4

KERNEL_GROUPS = (256, 128, 64, 32)  # group sizes PyTorch's int4 kernels accept
GEMM_MIN_ROWS = 64  # from this many rows on, dequantise + GEMM beats the tile kernels (measured, 1-2 threads)
_ARM = platform.machine().lower() in ("aarch64", "arm64")


def kernel_dtype(device: torch.device) -> torch.dtype:
    """The activation dtype the integer kernels run fast in: float32 on ARM CPUs, else bfloat16."""
    return torch.float32 if device.type == "cpu" and _ARM else torch.bfloat16


def gemm_dtype(device: torch.device) -> torch.dtype:
    """The dtype of the dequantise-then-GEMM path: bf16 on CUDA and on CPUs with bf16 dot products, else float32."""
    if device.type == "cpu":
        return torch.bfloat16 if torch.cpu._is_avx512_bf16_supported() else torch.float32
    return torch.bfloat16


class _KernelMatmul(torch.autograd.Function):
    """The fast path with a gradient for x: grad_x = grad_y W (W rebuilt in backward, as QuantizedLinear does)."""

    @staticmethod
    def forward(ctx, x, layer):
        ctx.layer = layer
        return layer.kernel_matmul(x)

    @staticmethod
    def backward(ctx, grad_y):
        return grad_y @ ctx.layer.dequantize(grad_y.dtype), None  # (B, T, out) @ (out, in)


class IntLinear(QuantizedLinear):
    """Shared machinery of Int8Linear and Int4Linear; subclasses say how codes are stored and which kernel runs."""

    bits: int
    fast = True  # per layer, or for a whole model with set_fast(model, False)

    def __init__(self, in_features: int, out_features: int, group_size: int | None = None, symmetric: bool = True,
                 bias: bool = False, input_scale: bool = False, perm: bool = False,
                 compute_dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        """An empty layer with the buffer shapes of this configuration (contents uninitialised): what
        `from_codes`, `from_linear` and `prepare_quantized` (before load_state_dict) fill."""
        super().__init__(nn.Linear(in_features, out_features, bias=False, device="meta", dtype=compute_dtype))
        g = group_size or in_features
        self.group_size, self.symmetric = g, symmetric
        self.padded_in = -(-in_features // g) * g  # in_features rounded up to a multiple of g
        n_groups = self.padded_in // g
        self.register_buffer("qweight", torch.empty(self._storage_shape(out_features, self.padded_in),
                                                    dtype=self._storage_dtype(), device=device))
        self.register_buffer("scales", torch.empty(out_features, n_groups, device=device))
        self.register_buffer("zeros", None if symmetric else torch.empty(out_features, n_groups, device=device))
        self.register_buffer("input_scale", torch.empty(in_features, device=device) if input_scale else None)
        self.register_buffer("perm", torch.empty(in_features, dtype=torch.long, device=device) if perm else None)
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, dtype=compute_dtype, device=device),
                                     requires_grad=False)
        self._cache: dict | None = None

    # --- storage: subclasses -------------------------------------------------------------------------
    def _storage_shape(self, out_features: int, padded_in: int) -> tuple[int, int]:
        return out_features, padded_in

    def _storage_dtype(self) -> torch.dtype:
        raise NotImplementedError

    def _store(self, codes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def codes(self, dtype: torch.dtype = torch.int32) -> torch.Tensor:
        """The integer codes (out, padded_in) of the shared convention, in stored column order (as `dtype`:
        every code is exact in float32 and bf16)."""
        raise NotImplementedError

    def _build_cache(self, device: torch.device) -> dict | None:
        """Kernel-ready tensors for `device`, or None when no kernel covers this layer (reference path)."""
        raise NotImplementedError

    def _run(self, xk: torch.Tensor, cache: dict) -> torch.Tensor:
        raise NotImplementedError

    # --- construction ----------------------------------------------------------------------------------
    @classmethod
    def from_codes(cls, codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None = None,
                   bias: torch.Tensor | None = None, compute_dtype: torch.dtype = torch.float32,
                   input_scale: torch.Tensor | None = None, perm: torch.Tensor | None = None,
                   in_features: int | None = None) -> "IntLinear":
        """A layer holding `codes` (out, in) in the shared convention, group size implied by scales (out, in // g).

        `in_features` smaller than the codes' width says the last columns are padding (see module docstring).
        """
        out_features, padded_in = codes.shape
        n_groups = scales.shape[-1]
        if scales.shape != (out_features, n_groups) or padded_in % n_groups:
            raise ValueError(f"scales {tuple(scales.shape)} do not fit codes {tuple(codes.shape)}: expected "
                             "(out, in // group_size)")
        g = padded_in // n_groups
        in_features = in_features or padded_in
        if -(-in_features // g) * g != padded_in:
            raise ValueError(f"codes of width {padded_in} are not in_features={in_features} padded to groups of {g}")
        symmetric = zeros is None
        qmin, qmax = qrange(cls.bits, symmetric)
        if codes.numel() and (int(codes.min()) < qmin or int(codes.max()) > qmax):
            raise UserError(f"codes: {cls.__name__} {'symmetric' if symmetric else 'asymmetric'} codes lie in "
                            f"{qmin}..{qmax}, got {int(codes.min())}..{int(codes.max())}")
        layer = cls(in_features, out_features, g, symmetric, bias is not None, input_scale is not None,
                    perm is not None, compute_dtype, device=codes.device)
        with torch.no_grad():
            layer.qweight.copy_(layer._store(codes))
            layer.scales.copy_(scales)
            if zeros is not None:
                layer.zeros.copy_(zeros)
            if bias is not None:
                layer.bias.copy_(bias)
            if input_scale is not None:
                layer.input_scale.copy_(input_scale)
            if perm is not None:
                layer.perm.copy_(perm)
        return layer

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int | None = None, symmetric: bool = True,
                    per_tensor: bool = False) -> "IntLinear":
        """Round-to-nearest quantisation of an nn.Linear (columns zero-padded when g does not divide the width)."""
        w = linear.weight.detach()
        if per_tensor and group_size is not None:
            raise UserError(f"per_tensor=True means one scale for the whole matrix; leave group_size unset "
                            f"(got {group_size})")
        if group_size is not None and (not isinstance(group_size, int) or group_size < 1):
            raise UserError(f"group_size must be a positive integer or None for per-channel (got {group_size!r})")
        if group_size is not None:
            w = pad_columns(w, group_size)
        codes, scales, zeros = quantize_weight(w, cls.bits, group_size, symmetric, per_tensor)
        return cls.from_codes(codes, scales, zeros, linear.bias, linear.weight.dtype,
                              in_features=linear.in_features)

    def config(self) -> dict:
        """What `prepare_quantized` needs to rebuild this layer empty (one entry of the quantization record)."""
        return {"class": type(self).__name__, "in_features": self.in_features, "out_features": self.out_features,
                "group_size": self.group_size, "symmetric": self.symmetric, "bias": self.bias is not None,
                "input_scale": self.input_scale is not None, "perm": self.perm is not None}

    # --- the reference path ----------------------------------------------------------------------------
    def stored_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """(codes - zeros) * scales computed in `dtype`, without padding: (out, in) in the stored basis (the
        columns x / input_scale, permuted). codes - zeros is exact in bf16 too, so bf16 rounds once."""
        dtype = dtype or self.compute_dtype
        out_features, n_groups = self.scales.shape
        q = self.codes(dtype).view(out_features, n_groups, -1)  # (out, G, g)
        if self.zeros is not None:
            q = q - self.zeros.to(dtype)[..., None]
        return (q * self.scales.to(dtype)[..., None]).view(out_features, -1)[:, : self.in_features]

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """W (out, in) in the original column order and scale: y = x W^T + b."""
        dtype = dtype or self.compute_dtype
        q = self.stored_weight(torch.float32)  # (out, in)
        if self.perm is not None:
            w = torch.empty_like(q)
            w[:, self.perm] = q  # column j of the codes is column perm[j] of W
            q = w
        if self.input_scale is not None:
            q = q / self.input_scale.float()
        return q.to(dtype)

    # --- the fast path ---------------------------------------------------------------------------------
    def _kernel_cache(self, device: torch.device) -> dict | None:
        key = (device, self.qweight.data_ptr())
        if self._cache is None or self._cache["key"] != key:
            built = self._build_cache(device)
            self._cache = {"key": key, "kernel": built}
        return self._cache["kernel"]

    def clear_cache(self) -> None:
        """Drop the kernel layouts (rebuilt on the next fast call); needed after editing buffers in place."""
        self._cache = None

    def cache_bytes(self) -> int:
        c = self._cache and self._cache["kernel"]
        return sum(t.numel() * t.element_size() for t in (c or {}).values()
                   if isinstance(t, torch.Tensor) and t.data_ptr() != self.qweight.data_ptr())

    @property
    def kernel(self) -> str:
        """Which path forward takes on this layer's device: a kernel's name, or "dequantize"."""
        c = self._kernel_cache(self.device) if self.fast else None
        return c["name"] if c else "dequantize"

    def kernel_matmul(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) -> (..., out) without bias: the tile kernel for few rows, dequantise + GEMM for many.
        Only called when `_kernel_cache` is not None."""
        cache = self._kernel_cache(x.device)
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])  # (M, in)
        if self.input_scale is not None:
            x2 = x2 / self.input_scale.to(x2.dtype)
        if self.perm is not None:
            x2 = x2[:, self.perm]
        if x2.shape[0] >= GEMM_MIN_ROWS:
            dtype = gemm_dtype(x.device)
            y = F.linear(x2.to(dtype), self.stored_weight(dtype))  # (M, out)
            return y.to(x.dtype).reshape(*shape[:-1], self.out_features)
        xk = x2.to(cache["dtype"]).contiguous()
        if xk.data_ptr() % 64:  # the x86 kernels use aligned loads
            xk = xk.clone()
        if cache["pad"]:
            xk = F.pad(xk, (0, cache["pad"]))
        y = self._run(xk, cache)  # (M, out)
        return y.to(x.dtype).reshape(*shape[:-1], self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fast or self._kernel_cache(x.device) is None:
            y = _DequantizedMatmul.apply(x, self, None)  # QuantizedLinear's readable path: x dequantize()^T
        elif torch.is_grad_enabled() and x.requires_grad:
            y = _KernelMatmul.apply(x, self)
        else:
            y = self.kernel_matmul(x)
        return y if self.bias is None else y + self.bias.to(y.dtype)  # bias in x's dtype (bf16 in, bf16 out)

    def _load_from_state_dict(self, *args, **kwargs):
        self.clear_cache()
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, recurse=True):
        self.clear_cache()
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        scheme = "per-channel" if self.group_size == self.in_features else f"group_size={self.group_size}"
        return (f"{super().extra_repr()}, int{self.bits} {scheme}, "
                f"{'symmetric' if self.symmetric else 'zero-point'}, bias={self.bias is not None}")


def _try_kernel(layer: IntLinear, cache: dict, device: torch.device) -> dict | None:
    """Run the kernel once on zeros: a build without it (or a shape it refuses) falls back to dequantize."""
    try:
        layer._run(torch.zeros(1, cache["k"], dtype=cache["dtype"], device=device), cache)
        return cache
    except (RuntimeError, NotImplementedError) as e:
        log.info(f"{type(layer).__name__}: {cache['name']} does not run here ({str(e).splitlines()[0]}); "
                 "computing by dequantising instead")
        return None


class Int8Linear(IntLinear):
    """INT8 weights: int8 codes (out, in) (asymmetric: code - 128), float32 scales (out, in // g)."""

    bits = 8

    def _storage_dtype(self) -> torch.dtype:
        return torch.int8

    def _store(self, codes: torch.Tensor) -> torch.Tensor:
        return (codes if self.symmetric else codes - 128).to(torch.int8)

    def codes(self, dtype: torch.dtype = torch.int32) -> torch.Tensor:
        q = self.qweight.to(dtype)
        return q if self.symmetric else q + 128

    def _build_cache(self, device: torch.device) -> dict | None:
        # the CPU kernel is per-channel only and reads 16 (AVX-512) or 8 (AVX2) values at a time with no tail
        if self.scales.shape[1] != 1 or self.in_features % 16 or device.type not in ("cpu", "cuda"):
            return None
        dtype = kernel_dtype(device)
        w = self.qweight if self.qweight.data_ptr() % 64 == 0 else self.qweight.clone()
        cache = {"name": "_weight_int8pack_mm", "dtype": dtype, "pad": 0, "k": self.in_features, "w": w,
                 "s": self.scales[:, 0].to(dtype).contiguous()}
        if not self.symmetric:  # x (c - z) s = x (c - 128) s - sum(x) (z - 128) s
            cache["name"] += " + zero-point term"
            cache["zterm"] = ((self.zeros[:, 0].float() - 128) * self.scales[:, 0].float()).contiguous()
        return _try_kernel(self, cache, device) if device.type == "cuda" else cache

    def _run(self, xk: torch.Tensor, cache: dict) -> torch.Tensor:
        y = torch.ops.aten._weight_int8pack_mm(xk, cache["w"], cache["s"])  # (M, out)
        if "zterm" in cache:
            y = y.float() - xk.float().sum(-1, keepdim=True) * cache["zterm"]
        return y


class Int4Linear(IntLinear):
    """INT4 weights: two codes per byte (`rtn.pack_int4`, symmetric as code + 8), float32 scales (out, in // g)."""

    bits = 4

    def _storage_shape(self, out_features: int, padded_in: int) -> tuple[int, int]:
        if padded_in % 2:
            raise UserError(f"Int4Linear packs two codes per byte; the input width {padded_in} must be even")
        return out_features, padded_in // 2

    def _storage_dtype(self) -> torch.dtype:
        return torch.uint8

    def _store(self, codes: torch.Tensor) -> torch.Tensor:
        return pack_int4(codes + 8 if self.symmetric else codes)

    def codes(self, dtype: torch.dtype = torch.int32) -> torch.Tensor:
        q = unpack_int4(self.qweight).to(dtype)
        return q - 8 if self.symmetric else q

    def _kernel_group(self) -> tuple[int, int] | None:
        """(kernel group, kernel input width): the largest accepted group dividing g, preferring one that also
        divides in_features (no padding of x); None when g is not a multiple of 32."""
        fits = [c for c in KERNEL_GROUPS if self.group_size % c == 0]
        if not fits:
            return None
        kg = next((c for c in fits if self.in_features % c == 0), fits[0])
        return kg, -(-self.in_features // kg) * kg

    def _build_cache(self, device: torch.device) -> dict | None:
        grouping = self._kernel_group()
        if grouping is None or device.type not in ("cpu", "cuda"):
            return None
        kg, k = grouping
        n = self.out_features
        if n % (16 if device.type == "cpu" else 8):
            return None
        # scales and zero_float per kernel group, (k / kg, out, 2); the kernel computes (q - 8) * scale + zero
        scales = self.scales.float().repeat_interleave(self.group_size // kg, dim=1)[:, : k // kg]  # (out, k/kg)
        zero = torch.zeros_like(scales) if self.symmetric else \
            (8 - self.zeros.float()).repeat_interleave(self.group_size // kg, dim=1)[:, : k // kg] * scales
        with torch.no_grad():
            if device.type == "cuda":
                dtype, name = torch.bfloat16, "_weight_int4pack_mm"
                tiles = next(t for t in (8, 4, 2) if k % (16 * t) == 0)
                w = torch._convert_weight_to_int4pack(self.qweight[:, : k // 2].contiguous(), tiles)
            else:
                dtype, name = kernel_dtype(device), "_weight_int4pack_mm_for_cpu"
                w = torch._convert_weight_to_int4pack_for_cpu(unpack_int4(self.qweight)[:, :k].to(torch.int32), 1)
        cache = {"name": name, "dtype": dtype, "pad": k - self.in_features, "k": k, "group": kg, "w": w,
                 "sz": torch.stack([scales.t(), zero.t()], dim=-1).to(dtype).contiguous()}
        return _try_kernel(self, cache, device) if device.type == "cuda" else cache

    def _run(self, xk: torch.Tensor, cache: dict) -> torch.Tensor:
        if xk.device.type == "cuda":
            return torch.ops.aten._weight_int4pack_mm(xk, cache["w"], cache["group"], cache["sz"])
        return torch.ops.aten._weight_int4pack_mm_for_cpu(xk, cache["w"], cache["group"], cache["sz"])


def set_fast(model: nn.Module, fast: bool = True) -> nn.Module:
    """Switch every integer layer of `model` between its kernel (fast) and the dequantise-then-matmul reference."""
    for m in model.modules():
        if isinstance(m, IntLinear):
            m.fast = fast
    return model
