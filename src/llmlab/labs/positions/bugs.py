"""Lab: positions, planted bugs: learner-style correct answers with one typical mistake each, and the words
the checks must answer them with. ALTERNATIVES are other correct answers the checks must accept."""

from llmlab.labs.registry import Bug, planted

POSITIONS = '''
import torch


def sinusoidal(T, C):
    p = torch.arange(T, dtype=torch.float32)[:, None]
    freq = 10000 ** (-torch.arange(0, C, 2, dtype=torch.float32) / C)
    angles = p * freq  # (T, C/2)
    out = torch.zeros(T, C)
    out[:, 0::2] = angles.sin()
    out[:, 1::2] = angles.cos()
    return out


def rope(x, positions, theta=10000.0):
    D = x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, D, 2, dtype=torch.float32) / D)
    angles = positions[:, None].float() * inv_freq  # (T, D/2)
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)  # (T, D)
    rotated = torch.cat([-x[..., D // 2:], x[..., :D // 2]], -1)
    return x * cos + rotated * sin


def alibi_bias(n_head, T):
    slopes = 2.0 ** (-8.0 * torch.arange(1, n_head + 1) / n_head)
    distance = torch.arange(T)[:, None] - torch.arange(T)[None, :]
    return -slopes[:, None, None] * distance
'''

TABLES = "    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)  # (T, D)\n"
ROTATION = "    rotated = torch.cat([-x[..., D // 2:], x[..., :D // 2]], -1)\n    return x * cos + rotated * sin"

BUGS = [
    Bug("sin-halves", "sinusoidal", planted(planted(POSITIONS, "out[:, 0::2] = angles.sin()",
                                                    "out[:, :C // 2] = angles.sin()"),
                                            "out[:, 1::2] = angles.cos()", "out[:, C // 2:] = angles.cos()"),
        "interleave"),
    Bug("sin-swapped", "sinusoidal", planted(planted(POSITIONS, "out[:, 0::2] = angles.sin()",
                                                     "out[:, 0::2] = angles.cos()"),
                                             "out[:, 1::2] = angles.cos()", "out[:, 1::2] = angles.sin()"), "swapped"),
    Bug("sin-multiplies", "sinusoidal", planted(POSITIONS, "freq = 10000 ** (-torch", "freq = 10000 ** (torch"),
        "don't multiply"),
    Bug("rope-interleaved-pairs", "rope", planted(POSITIONS, ROTATION, '''    x1, x2 = x[..., 0::2], x[..., 1::2]
    c, s = angles.cos(), angles.sin()
    return torch.stack([x1 * c - x2 * s, x2 * c + x1 * s], -1).flatten(-2)'''), "rotate_half"),
    Bug("rope-wrong-way", "rope", planted(POSITIONS, "torch.cat([-x[..., D // 2:], x[..., :D // 2]], -1)",
                                          "torch.cat([x[..., D // 2:], -x[..., :D // 2]], -1)"), "the wrong way"),
    Bug("rope-frequencies", "rope", planted(POSITIONS, "-torch.arange(0, D, 2, dtype=torch.float32) / D",
                                            "-torch.arange(0, D // 2, dtype=torch.float32) / D"),
        "theta^(-2i/D)"),
    Bug("alibi-positive", "alibi_bias", planted(POSITIONS, "return -slopes[:, None, None] * distance",
                                                "return slopes[:, None, None] * distance"), "must be negative"),
    Bug("alibi-reversed", "alibi_bias", planted(POSITIONS, "-8.0 * torch.arange(1, n_head + 1) / n_head",
                                                "-8.0 * torch.arange(n_head, 0, -1) / n_head"), "reverse order"),
    Bug("alibi-from-zero", "alibi_bias", planted(POSITIONS, "torch.arange(1, n_head + 1)", "torch.arange(n_head)"),
        "starting at h = 0"),
]

ALTERNATIVES = [  # complex numbers for RoPE's rotation (on the half-split pairs)
    planted(POSITIONS, TABLES + ROTATION, '''    z = torch.complex(x[..., :D // 2], x[..., D // 2:])  # (i, i + D/2)
    z = z * torch.polar(torch.ones_like(angles), angles)  # rotated by its angle
    return torch.cat([z.real, z.imag], -1)'''),
]
