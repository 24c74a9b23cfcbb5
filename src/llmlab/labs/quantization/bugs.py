"""Lab: quantization, planted bugs: learner-style correct answers with one typical mistake each, and the words
the checks must answer them with. ALTERNATIVES are other correct answers the checks must accept."""

from llmlab.labs.registry import Bug, planted

QUANT = '''
import torch


def absmax_quantize(w, bits=8):
    qmax = 2 ** (bits - 1) - 1
    scale = w.abs().amax(dim=1, keepdim=True) / qmax
    return torch.round(w / scale), scale


def zero_point_quantize(w, bits=8):
    qmax = 2 ** bits - 1
    lo = w.amin(dim=1, keepdim=True).clamp(max=0)
    hi = w.amax(dim=1, keepdim=True).clamp(min=0)
    scale = (hi - lo) / qmax
    zero = torch.round(-lo / scale)
    return torch.clamp(torch.round(w / scale) + zero, 0, qmax), scale, zero


def group_quantize(w, bits=4, group_size=32):
    out, n_in = w.shape
    g = w.reshape(out, n_in // group_size, group_size)
    scale = g.abs().amax(dim=-1, keepdim=True) / (2 ** (bits - 1) - 1)
    return (torch.round(g / scale) * scale).reshape(out, n_in)


def prune_2_4(w):
    out, n_in = w.shape
    g = w.reshape(out, n_in // 4, 4)
    keep = torch.zeros_like(g, dtype=torch.bool).scatter(-1, g.abs().topk(2, dim=-1).indices, True)
    return (g * keep).reshape(out, n_in)
'''

BUGS = [
    Bug("absmax-128", "absmax_quantize", planted(QUANT, "qmax = 2 ** (bits - 1) - 1\n", "qmax = 2 ** (bits - 1)\n"),
        "you divided by 128"),
    Bug("absmax-whole-matrix", "absmax_quantize", planted(QUANT, "w.abs().amax(dim=1, keepdim=True) / qmax",
                                                          "w.abs().max() / qmax"), "one scale per output row"),
    Bug("absmax-truncates", "absmax_quantize", planted(QUANT, "return torch.round(w / scale), scale",
                                                       "return (w / scale).int(), scale"), "truncated"),
    Bug("absmax-no-abs", "absmax_quantize", planted(QUANT, "scale = w.abs().amax(dim=1", "scale = w.amax(dim=1"),
        "may be negative"),
    Bug("zero-point-not-rounded", "zero_point_quantize", planted(QUANT, "zero = torch.round(-lo / scale)",
                                                                 "zero = -lo / scale"), "round the zero point"),
    Bug("zero-point-2-to-the-bits", "zero_point_quantize", planted(QUANT, "    qmax = 2 ** bits - 1\n",
                                                                   "    qmax = 2 ** bits\n"), "2^bits - 1"),
    Bug("zero-point-forgotten", "zero_point_quantize", planted(QUANT, "torch.round(w / scale) + zero, 0, qmax)",
                                                               "torch.round(w / scale), 0, qmax)"),
        "add the zero point"),
    Bug("group-per-row", "group_quantize", planted(QUANT, "scale = g.abs().amax(dim=-1, keepdim=True)",
                                                   "scale = g.abs().amax(dim=(1, 2), keepdim=True)"),
        "one scale per row"),
    Bug("group-returns-codes", "group_quantize", planted(QUANT, "(torch.round(g / scale) * scale)",
                                                         "torch.round(g / scale)"), "not the codes"),
    Bug("prune-by-value", "prune_2_4", planted(QUANT, "g.abs().topk(2", "g.topk(2"), "by magnitude"),
    Bug("prune-keeps-smallest", "prune_2_4", planted(QUANT, "g.abs().topk(2, dim=-1)",
                                                     "g.abs().topk(2, dim=-1, largest=False)"), "keep the largest"),
]

ALTERNATIVES = [  # a sort instead of topk for 2:4
    planted(QUANT, "torch.zeros_like(g, dtype=torch.bool).scatter(-1, g.abs().topk(2, dim=-1).indices, True)",
            "g.abs() >= g.abs().sort(dim=-1).values[..., 2:3]  # the two largest of four"),
]
