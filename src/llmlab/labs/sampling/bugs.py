"""Lab: sampling, planted bugs: learner-style correct answers with one typical mistake each, and the words the
checks must answer them with. ALTERNATIVES are other correct answers the checks must accept."""

from llmlab.labs.registry import Bug, planted

SAMPLING = '''
import torch


def apply_temperature(logits, temperature):
    return logits / temperature


def top_k_filter(logits, k):
    k = min(k, logits.shape[-1])
    kth = logits.topk(k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits, p):
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    before = probs.cumsum(-1) - probs  # the mass of the likelier tokens
    remove = before >= p
    remove = remove.scatter(-1, order, remove)
    return logits.masked_fill(remove, float("-inf"))


def sample(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]
'''

BUGS = [
    Bug("temperature-multiplies", "apply_temperature", planted(SAMPLING, "logits / temp", "logits * temp"),
        "divide instead"),
    Bug("top-k-zero-fill", "top_k_filter", planted(SAMPLING, 'logits.masked_fill(logits < kth, float("-inf"))',
                                                   "logits.masked_fill(logits < kth, 0.0)"), "not 0"),
    Bug("top-k-smallest", "top_k_filter", planted(planted(SAMPLING, "logits.topk(k, dim=-1)",
                                                          "logits.topk(k, dim=-1, largest=False)"),
                                                  "logits < kth", "logits > kth"), "k smallest"),
    Bug("top-k-whole-batch", "top_k_filter", planted(SAMPLING, "kth = logits.topk(k, dim=-1).values[:, -1:]",
                                                     "kth = logits.flatten().topk(k * len(logits)).values[-1]"),
        "per row"),
    Bug("top-k-too-large", "top_k_filter", planted(SAMPLING, "    k = min(k, logits.shape[-1])\n", ""),
        "larger than the vocabulary"),
    Bug("top-p-drops-the-crossing-token", "top_p_filter", planted(SAMPLING, "remove = before >= p",
                                                                  "remove = probs.cumsum(-1) > p"), "keep the token"),
    Bug("top-p-sorted-order", "top_p_filter", planted(SAMPLING, "    remove = remove.scatter(-1, order, remove)\n", ""),
        "put it back in vocabulary order"),
    Bug("sample-argmax", "sample", planted(SAMPLING, "torch.multinomial(logits.softmax(-1), 1, generator=generator)"
                                           "[:, 0]", "logits.argmax(-1)"), "do not take the argmax"),
    Bug("sample-no-generator", "sample", planted(SAMPLING, "1, generator=generator)", "1)"), "pass generator="),
    Bug("sample-ignores-filters", "sample", planted(planted(SAMPLING, "        logits = top_k_filter(logits, top_k)\n",
                                                            "        pass\n"),
                                                    "        logits = top_p_filter(logits, top_p)\n", "        pass\n"),
        "the filters are not applied"),
    Bug("sample-greedy-divides", "sample", planted(
        SAMPLING, "    if temperature == 0:\n        return logits.argmax(-1)\n", ""), "temperature=0 means greedy"),
]

ALTERNATIVES = [  # sort-based top-k and an ascending-sort nucleus, as transformers writes them
    planted(planted(SAMPLING, "kth = logits.topk(k, dim=-1).values[:, -1:]",
                    "kth = logits.sort(dim=-1, descending=True).values[:, k - 1:k]"),
            '''    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    before = probs.cumsum(-1) - probs  # the mass of the likelier tokens
    remove = before >= p
    remove = remove.scatter(-1, order, remove)''', '''    sorted_logits, order = logits.sort(dim=-1)
    cum = sorted_logits.softmax(-1).cumsum(-1)
    remove = cum <= 1 - p
    remove[:, -1] = False
    remove = remove.scatter(-1, order, remove)'''),
]
