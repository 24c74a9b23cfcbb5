"""Lab: sharding, planted bugs: a learner-style correct answer with one typical mistake each, and the words the
checks must answer it with. ALTERNATIVES are other correct answers (direct sends instead of a ring, a loop
of steps written per device) the checks must accept."""

from llmlab.labs.registry import Bug, planted

SHARDING = '''
import torch
import torch.nn.functional as F


def reduce_scatter(xs, send, dim=0):
    p = len(xs)
    chunks = [list(x.chunk(p, dim=dim)) for x in xs]
    for s in range(p - 1):
        for r in range(p):
            i, right = (r - s - 1) % p, (r + 1) % p
            chunks[right][i] = chunks[right][i] + send(r, right, chunks[r][i])
    return [chunks[r][r].clone() for r in range(p)]


def all_gather(xs, send, dim=0):
    p = len(xs)
    have = [{r: x} for r, x in enumerate(xs)]
    for s in range(p - 1):
        for r in range(p):
            i, right = (r - s) % p, (r + 1) % p
            have[right][i] = send(r, right, have[r][i])
    return [torch.cat([have[r][i] for i in range(p)], dim=dim) for r in range(p)]


def all_reduce(xs, send):
    return all_gather(reduce_scatter(xs, send), send)


def column_parallel(x, weight, bias, p, send, gather=True):
    biases = bias.chunk(p) if bias is not None else [None] * p
    ys = [F.linear(x, w, b) for w, b in zip(weight.chunk(p, dim=0), biases)]
    return all_gather(ys, send, dim=-1) if gather else ys


def row_parallel(xs, weight, bias, send):
    partials = [F.linear(x, w) for x, w in zip(xs, weight.chunk(len(xs), dim=1))]
    ys = all_reduce(partials, send)
    return [y + bias for y in ys] if bias is not None else ys
'''

WHOLE_RING = planted(SHARDING, '''def all_reduce(xs, send):
    return all_gather(reduce_scatter(xs, send), send)
''', '''def all_reduce(xs, send):
    p = len(xs)
    totals, passing = [x.clone() for x in xs], list(xs)
    for s in range(p - 1):  # pass every whole tensor once round the ring
        passing = [send((r - 1) % p, r, passing[(r - 1) % p]) for r in range(p)]
        totals = [t + m for t, m in zip(totals, passing)]
    return totals
''')

BUGS = [
    Bug("scatter-replaces", "reduce_scatter", planted(
        SHARDING, "chunks[right][i] = chunks[right][i] + send(", "chunks[right][i] = send("), "instead of adding it"),
    Bug("scatter-in-place", "reduce_scatter", planted(
        SHARDING, "chunks[right][i] = chunks[right][i] + send(", "chunks[right][i] += send("), "changed its inputs"),
    Bug("scatter-wrong-start", "reduce_scatter", planted(SHARDING, "i, right = (r - s - 1) % p",
                                                         "i, right = (r - s) % p"),
        "got nothing from the others"),
    Bug("scatter-too-few-steps", "reduce_scatter", planted(
        SHARDING, "    for s in range(p - 1):\n        for r in range(p):\n            i, right = (r - s - 1)",
        "    for s in range(p - 2):\n        for r in range(p):\n            i, right = (r - s - 1)"),
        "got nothing from the others"),
    Bug("scatter-no-split", "reduce_scatter", planted(SHARDING, "return [chunks[r][r].clone() for r in range(p)]",
                                                      "return [sum(xs) for r in range(p)]"),
        "a reduce-scatter leaves device r only chunk r"),
    Bug("gather-arrival-order", "all_gather", planted(
        SHARDING, "torch.cat([have[r][i] for i in range(p)], dim=dim)", "torch.cat(list(have[r].values()), dim=dim)"),
        "in the order they arrived"),
    Bug("gather-ignores-dim", "all_gather", planted(SHARDING, "for i in range(p)], dim=dim)", "for i in range(p)])"),
        "you concatenated along dim 0"),
    Bug("gather-reads-others", "all_gather", planted(
        SHARDING, "            have[right][i] = send(r, right, have[r][i])\n",
        "            have[right][i] = xs[i]\n"), "nothing went through send"),
    Bug("reduce-whole-tensors", "all_reduce", WHOLE_RING, "whole tensors"),
    Bug("reduce-scatter-only", "all_reduce", planted(SHARDING, "return all_gather(reduce_scatter(xs, send), send)",
                                                     "return reduce_scatter(xs, send)"), "that is a reduce-scatter"),
    Bug("reduce-mean", "all_reduce", planted(
        SHARDING, "return all_gather(reduce_scatter(xs, send), send)",
        "return [t / len(xs) for t in all_gather(reduce_scatter(xs, send), send)]"),
        "every device has the mean"),
    Bug("column-gathers-tokens", "column_parallel", planted(SHARDING, "all_gather(ys, send, dim=-1)",
                                                            "all_gather(ys, send, dim=0)"), "gathered along dim 0"),
    Bug("column-whole-weight", "column_parallel", planted(
        SHARDING, "    return all_gather(ys, send, dim=-1) if gather else ys\n",
        "    return [F.linear(x, weight, bias) for _ in range(p)] if gather else ys\n"), "every device used the whole"),
    Bug("column-always-gathers", "column_parallel", planted(SHARDING, " if gather else ys\n", "\n"),
        "with gather=False each device returns only its own slice"),
    Bug("column-detached", "column_parallel", planted(SHARDING, "ys = [F.linear(x, w, b)",
                                                      "ys = [F.linear(x.detach(), w, b)"),
        "the gradient for x differs"),
    Bug("row-bias-every-device", "row_parallel", planted(planted(
        SHARDING, "partials = [F.linear(x, w) for", "partials = [F.linear(x, w, bias) for"),
        "return [y + bias for y in ys] if bias is not None else ys", "return ys"), "p times the bias"),
    Bug("row-no-bias", "row_parallel", planted(SHARDING, "return [y + bias for y in ys] if bias is not None else ys",
                                               "return ys"), "the bias is missing"),
    Bug("row-no-reduce", "row_parallel", planted(SHARDING, "ys = all_reduce(partials, send)", "ys = partials"),
        "only its own partial output"),
    Bug("row-reduce-scatter", "row_parallel", planted(SHARDING, "ys = all_reduce(partials, send)",
                                                      "ys = reduce_scatter(partials, send)"), "not reduce_scatter"),
]

ALTERNATIVES = [  # direct sends (each device's chunk straight to its owner) move as many bytes as the ring
    planted(planted(SHARDING, '''    chunks = [list(x.chunk(p, dim=dim)) for x in xs]
    for s in range(p - 1):
        for r in range(p):
            i, right = (r - s - 1) % p, (r + 1) % p
            chunks[right][i] = chunks[right][i] + send(r, right, chunks[r][i])
    return [chunks[r][r].clone() for r in range(p)]
''', '''    chunks = [x.chunk(p, dim=dim) for x in xs]
    return [sum(chunks[r][r] if src == r else send(src, r, chunks[src][r]) for src in range(p)) for r in range(p)]
'''), '''    have = [{r: x} for r, x in enumerate(xs)]
    for s in range(p - 1):
        for r in range(p):
            i, right = (r - s) % p, (r + 1) % p
            have[right][i] = send(r, right, have[r][i])
''', '''    have = [{r: x} for r, x in enumerate(xs)]
    for r in range(p):
        for dst in range(p):
            if dst != r:
                have[dst][r] = send(r, dst, xs[r])
'''),
]
