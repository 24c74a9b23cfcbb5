"""Lab: modules, planted bugs: learner-style correct answers with one typical mistake each, and the words the
checks must answer them with. ALTERNATIVES are other correct answers the checks must accept."""

from llmlab.labs.registry import Bug, planted

MODULES = '''
import math
import torch
import torch.nn as nn
import torch.nn.functional as F


class Linear(nn.Module):
    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        bound = 1 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound)) if bias else None

    def forward(self, x):
        y = x @ self.weight.T
        if self.bias is not None:
            y = y + self.bias
        return y


class MLP(nn.Module):
    def __init__(self, n_embd, hidden):
        super().__init__()
        self.up_proj = Linear(n_embd, hidden)
        self.down_proj = Linear(hidden, n_embd)

    def forward(self, x):
        return self.down_proj(F.gelu(self.up_proj(x), approximate="tanh"))


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


def save_weights(model, path):
    torch.save(model.state_dict(), path)


def load_weights(model, path):
    model.load_state_dict(torch.load(path, weights_only=True))
    return model
'''

BUGS = [
    Bug("weight-transposed", "Linear", planted(planted(
        MODULES, "torch.empty(out_features, in_features)", "torch.empty(in_features, out_features)"),
        "x @ self.weight.T", "x @ self.weight"), "weight should be (out_features, in_features)"),
    Bug("zero-init", "Linear", planted(MODULES, "torch.empty(out_features, in_features).uniform_(-bound, bound)",
                                       "torch.zeros(out_features, in_features)"), "starts at zeros"),
    Bug("randn-init", "Linear", planted(MODULES, "torch.empty(out_features, in_features).uniform_(-bound, bound)",
                                        "torch.randn(out_features, in_features)"), "spread is off"),
    Bug("weight-not-a-parameter", "Linear", planted(
        MODULES, "self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))",
        "self.weight = torch.empty(out_features, in_features).uniform_(-bound, bound)"), "expected weight and bias"),
    Bug("bias-always", "Linear", planted(MODULES, ".uniform_(-bound, bound)) if bias else None",
                                         ".uniform_(-bound, bound))"), "still has a bias"),
    Bug("bias-forgotten", "Linear", planted(MODULES, "            y = y + self.bias\n", "            pass\n"),
        "the bias is not added"),
    Bug("mlp-no-activation", "MLP", planted(MODULES, 'F.gelu(self.up_proj(x), approximate="tanh")', "self.up_proj(x)"),
        "the activation is missing"),
    Bug("mlp-relu", "MLP", planted(MODULES, 'F.gelu(self.up_proj(x), approximate="tanh")', "F.relu(self.up_proj(x))"),
        "that is ReLU"),
    Bug("mlp-other-names", "MLP", planted(planted(MODULES, "self.up_proj", "self.fc"), "self.down_proj", "self.proj"),
        "name the layers up_proj and down_proj"),
    Bug("count-tied-twice", "count_parameters", planted(
        MODULES, "sum(p.numel() for p in model.parameters())", "sum(t.numel() for t in model.state_dict().values())"),
        "counted twice"),
    Bug("save-nothing", "save_weights", planted(MODULES, "    torch.save(model.state_dict(), path)\n", "    pass\n"),
        "wrote no file"),
    Bug("load-not-strict", "save_weights", planted(MODULES, "torch.load(path, weights_only=True))",
                                                   "torch.load(path, weights_only=True), strict=False)"),
        "did not raise"),
    Bug("load-into-a-copy", "save_weights", planted(
        MODULES, "    model.load_state_dict(torch.load(path, weights_only=True))\n    return model",
        "    import copy\n    other = copy.deepcopy(model)\n"
        "    other.load_state_dict(torch.load(path, weights_only=True))\n    return other"),
        "fill the model it is given"),
]

ALTERNATIVES = [  # torch's nn.Linear inside the MLP, the exact GELU, safetensors files, F.linear
    planted(planted(planted(planted(
        MODULES, "Linear(n_embd, hidden)", "nn.Linear(n_embd, hidden)"), "Linear(hidden, n_embd)",
        "nn.Linear(hidden, n_embd)"), 'F.gelu(self.up_proj(x), approximate="tanh")', "F.gelu(self.up_proj(x))"),
        "y = x @ self.weight.T", "y = F.linear(x, self.weight)"),
]
