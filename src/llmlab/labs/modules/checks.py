"""Lab: modules, the checks. References: torch's nn.Linear (its weights loaded into the learner's Linear),
llmlab's GeluMLP (its weights loaded into the learner's MLP), llmlab's count_parameters, and a round trip
through the learner's own save and load.
"""

import math
import tempfile
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmlab.labs.checking import CheckFailed, CheckList, Workspace, call, close, diagnose, expect_tensor
from llmlab.models import Transformer, get_preset
from llmlab.models.config import ModelConfig
from llmlab.models.gpt import count_parameters
from llmlab.models.layers import GeluMLP

CHECKS = CheckList()


def _module(ws: Workspace, name: str, *args, **kwargs) -> nn.Module:
    m = call(ws.get(name), *args, **kwargs)
    if not isinstance(m, nn.Module):
        raise CheckFailed(f"{name} must subclass torch.nn.Module")
    return m


@CHECKS.add("Linear", "weight (out, in) and bias (out,) are parameters, initialised uniformly in ±1/sqrt(in)")
def linear_parameters(ws: Workspace) -> None:
    m = _module(ws, "Linear", 100, 50)
    params = dict(m.named_parameters())
    if set(params) != {"weight", "bias"}:
        raise CheckFailed(f"parameters are {sorted(params) or 'none'}; expected weight and bias, registered with "
                          "self.weight = nn.Parameter(...)")
    if tuple(params["weight"].shape) != (50, 100):
        raise CheckFailed(f"weight should be (out_features, in_features) = (50, 100), found "
                          f"{tuple(params['weight'].shape)}")
    if tuple(params["bias"].shape) != (50,):
        raise CheckFailed(f"bias should be (out_features,) = (50,), found {tuple(params['bias'].shape)}")
    w, bound = params["weight"].detach(), 1 / math.sqrt(100)
    if bool((w == 0).all()):
        raise CheckFailed("the weight starts at zeros: then every output unit computes the same thing and "
                          "gets the same gradient; draw it uniformly in ±1/sqrt(in_features)")
    if float(w.abs().max()) > bound * 1.0001 or not 0.7 < float(w.std()) / (bound / math.sqrt(3)) < 1.3:
        raise CheckFailed(f"the weight's spread is off (std {float(w.std()):.3g}; a uniform draw in "
                          f"±1/sqrt(in_features) has std {bound / math.sqrt(3):.3g}): too large a start makes "
                          "activations grow layer after layer")
    no_bias = _module(ws, "Linear", 4, 3, bias=False)
    if "bias" in dict(no_bias.named_parameters()):
        raise CheckFailed("Linear(..., bias=False) still has a bias parameter: set self.bias = None then")


@CHECKS.add("Linear", "equals torch.nn.Linear with the same weights (state_dict), for any batch shape, gradients too")
def linear_forward(ws: Workspace) -> None:
    for bias, x_shape in ((True, (2, 3, 5)), (False, (5,)), (True, (1, 5))):
        ref = nn.Linear(5, 4, bias=bias)
        m = _module(ws, "Linear", 5, 4, bias=bias)
        try:
            m.load_state_dict(ref.state_dict())
        except RuntimeError as e:
            raise CheckFailed(f"nn.Linear's state_dict does not load into yours ({str(e).splitlines()[0]}): "
                              "name the parameters weight and bias, with nn.Linear's shapes") from None
        x = torch.randn(x_shape, requires_grad=True)
        out = expect_tensor(call(m, x), x_shape[:-1] + (4,), f"Linear(5, 4, bias={bias}) on x of shape {x_shape}")
        expected = ref(x)
        with torch.no_grad():
            diagnose(out, expected, {"the bias is not added": x @ ref.weight.T,
                                     "use weight.T: x meets the rows of weight (out, in)":
                                         lambda x=x, ref=ref: x @ ref.weight},
                     f"differs from nn.Linear on x of shape {x_shape}")
        (g,) = torch.autograd.grad(out.sum(), x)
        if not close(g, torch.autograd.grad(expected.sum(), x)[0]):
            raise CheckFailed("outputs match nn.Linear, but the gradient with respect to x does not")


@CHECKS.add("MLP", "up_proj and down_proj with GELU between: equals llmlab's GeluMLP with the same weights")
def mlp_forward(ws: Workspace) -> None:
    ref = GeluMLP(ModelConfig(n_embd=12, n_head=1, intermediate_size=20, bias=True))
    m = _module(ws, "MLP", 12, 20)
    keys = set(m.state_dict())
    if keys != set(ref.state_dict()):
        raise CheckFailed(f"the state_dict has {sorted(keys)}; expected {sorted(ref.state_dict())}: name the layers "
                          "up_proj and down_proj (with biases)")
    m.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 12)
    out = expect_tensor(call(m, x), x.shape, "MLP(x)")
    with torch.no_grad():
        if close(out, m.down_proj(F.gelu(m.up_proj(x)))):
            return  # the exact GELU is as right as GPT-2's tanh approximation
        up, down = ref.up_proj, ref.down_proj
        diagnose(out, ref(x), {
            "the activation is missing between the two layers: without it the MLP is one linear map":
                down(up(x)),
            "that is ReLU; GPT-2's MLP uses GELU": down(F.relu(up(x))),
            "GELU goes between the layers, not after down_proj": F.gelu(down(up(x)), approximate="tanh"),
        }, "differs from llmlab's GeluMLP with the same weights")


@CHECKS.add("count_parameters", "equals llmlab's count on an MLP and on a decoder with tied embeddings")
def counting(ws: Workspace) -> None:
    fn = ws.get("count_parameters")
    mlp = GeluMLP(ModelConfig(n_embd=12, n_head=1, intermediate_size=20, bias=True))
    n = call(fn, mlp)
    if int(n) != count_parameters(mlp):
        raise CheckFailed(f"counted {n} for an MLP of {count_parameters(mlp)} numbers: sum p.numel() over "
                          "model.parameters()")
    model = Transformer(get_preset("gpt2-tiny", vocab_size=64, seq_len=16, n_layer=1, n_embd=16, n_head=2))
    n, expected = int(call(fn, model)), count_parameters(model)
    if n == expected + model.lm_head.weight.numel():
        raise CheckFailed("the tied weight is counted twice: lm_head.weight is tok_emb.weight, so it counts once "
                          "(model.parameters() already skips repeats; a state_dict does not)")
    if n != expected:
        raise CheckFailed(f"counted {n} for a decoder of {expected} numbers")


@CHECKS.add("save_weights", "save then load into a fresh model gives the same outputs; a wrong-shaped model raises")
def save_and_load(ws: Workspace) -> None:
    save, load = ws.get("save_weights"), ws.get("load_weights")

    def make(hidden=20, bias=True):
        return GeluMLP(ModelConfig(n_embd=12, n_head=1, intermediate_size=hidden, bias=bias))

    trained, fresh = make(), make()
    x = torch.randn(3, 12)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.bin"
        call(save, trained, str(path))
        if not path.is_file():
            raise CheckFailed("save_weights wrote no file at the path it was given")
        returned = call(load, fresh, str(path))
        if returned is not fresh:
            raise CheckFailed("load_weights should fill the model it is given and return it")
        with torch.no_grad():
            if not close(fresh(x), trained(x)):
                raise CheckFailed("after loading, the model's outputs differ from the saved model's: "
                                  "are all weights saved, and loaded into this model?")
        for other, what in ((make(hidden=7), "of another shape"), (make(bias=False), "without biases")):
            try:
                call(load, other, str(path))
            except CheckFailed:
                raise
            except Exception:
                continue
            raise CheckFailed(f"loading the weights into a model {what} did not raise: keep load_state_dict "
                              "strict (the default), so tensors that do not fit are an error")
