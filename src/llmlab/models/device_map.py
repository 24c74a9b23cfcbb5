"""Models larger than one device: decoder layers placed across GPUs and the CPU; weights loaded tensor by tensor.

Placement. A device map says where each decoder layer lives (`plan_device_map`):

    auto                      fill the GPUs in order, as far as their free memory (torch.cuda.mem_get_info)
                              allows; layers that fit on none are offloaded; with no GPU everything is on the CPU
    balanced                  the layers split evenly over the GPUs (or all on the CPU without one)
    0:0-15,1:16-31,cpu:rest   explicit DEVICE:FIRST-LAST entries (or DEVICE:N, or DEVICE:rest); DEVICE is a GPU
                              index, cuda:N, cpu (stored and run there), offload (stored in CPU memory, run on
                              the first GPU of the map) or meta (nothing real: for checking a plan)

The embeddings go with the first layer, the final norm and the output head with the last. A head tied
to the embedding stays with the embedding instead: one copy of the largest matrix, for a (B, 1, C) hop.

Running (`dispatch`). Each part moves to its device, and a forward pre-hook moves its inputs there, so
activations hop from device to device between blocks; the logits come back to the device the input came
from, and the KV cache keeps each layer on its block's device (`model.layer_devices`, read by
`KVCache.for_model`). An offloaded part keeps its weights in (pinned) CPU memory: a pre-forward hook
copies them to the compute device and a post-forward hook drops the copies, so the GPU holds one such
layer at a time and pays the copy every step. This is Hugging Face accelerate's `device_map` (its
"big model inference" guide) written small. One device works at a time: it is not pipeline parallelism.

Loading (`materialize`). The Transformer is built on the meta device (no memory, no random init) and each
(name, tensor) the loader yields goes straight to its device in the target dtype, so a checkpoint never
sits in memory twice: `llmlab.models.pretrained` memory-maps safetensors shards and reads one tensor at
a time, and dequantises GGUF tensors one at a time.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn as nn

from llmlab.common.errors import UserError
from llmlab.models.config import ModelConfig
from llmlab.models.gpt import Transformer
from llmlab.models.layers import rope_inv_freq

OFFLOAD = "offload"
RESERVE = 0.10  # of each GPU's free memory, kept for the KV cache, activations and the CUDA context


@dataclass
class Plan:
    """Where each decoder layer lives ("cuda:0", "cpu", "meta" or "offload"); offloaded ones run on `compute`."""

    layers: list[str]
    compute: str = "cpu"

    def runs_on(self, where: str) -> torch.device:
        return torch.device(self.compute if where == OFFLOAD else where)

    def stores_on(self, where: str) -> torch.device:
        return torch.device("cpu" if where == OFFLOAD else where)

    def part_of(self, name: str, tied: bool) -> str:
        """Placement of a weight by its name: blocks.{i}.* with layer i, embeddings first, norm and head last."""
        if name.startswith("blocks."):
            return self.layers[int(name.split(".")[1])]
        first = ("tok_emb.", "pos_emb.", "emb_norm.", "rope_inv_freq")
        if name.startswith(first) or (tied and name.startswith("lm_head.")):
            return self.layers[0]
        return self.layers[-1]


def _gpus(free_memory: dict[str, int] | None) -> dict[str, int]:
    """Free bytes per GPU: `free_memory` when given (tests pass a fake device list), else what CUDA reports."""
    if free_memory is not None:
        return dict(free_memory)
    if not torch.cuda.is_available():
        return {}
    return {f"cuda:{i}": torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())}


def _device_name(token: str, gpus: dict[str, int], spec: str) -> str:
    """"0" -> "cuda:0"; "cuda" -> "cuda:0"; cpu, offload and meta as they are; anything else is an error."""
    name = f"cuda:{token}" if token.isdigit() else "cuda:0" if token == "cuda" else token
    if name in ("cpu", OFFLOAD, "meta"):
        return name
    if not re.fullmatch(r"cuda:\d+", name):
        raise UserError(f"device_map {spec!r}: {token!r} is not a device; use a GPU index, cuda:N, cpu or offload")
    if name not in gpus:
        raise UserError(f"device_map {spec!r}: {name} is not here ({len(gpus)} GPU(s) found); use one of "
                        f"{', '.join([*gpus, 'cpu', OFFLOAD])}")
    return name


def _explicit(spec: str, n_layer: int, gpus: dict[str, int]) -> list[str]:
    """"0:0-1,cpu:rest" with 4 layers -> ["cuda:0", "cuda:0", "cpu", "cpu"]."""
    layers: list[str | None] = [None] * n_layer
    rest = None
    for entry in spec.split(","):
        token, _, span = (part.strip() for part in entry.strip().rpartition(":"))  # cuda:1:0-3 works too
        if not token or not span:
            raise UserError(f"device_map {spec!r}: entry {entry.strip()!r} is not DEVICE:FIRST-LAST, DEVICE:N or "
                            "DEVICE:rest")
        device = _device_name(token, gpus, spec)
        if span == "rest":
            if rest is not None:
                raise UserError(f"device_map {spec!r}: 'rest' is given twice; name it once")
            rest = device
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", span)
        if not m:
            raise UserError(f"device_map {spec!r}: {span!r} is not a layer range like 0-15")
        first, last = int(m.group(1)), int(m.group(2) or m.group(1))
        if first > last or last >= n_layer:
            raise UserError(f"device_map {spec!r}: layers {first}-{last} are not within 0-{n_layer - 1}")
        for i in range(first, last + 1):
            if layers[i] is not None:
                raise UserError(f"device_map {spec!r}: layer {i} is placed twice")
            layers[i] = device
    unplaced = [i for i, d in enumerate(layers) if d is None]
    if unplaced and rest is None:
        raise UserError(f"device_map {spec!r}: layers {unplaced[0]}..{unplaced[-1]} have no device; add e.g. "
                        "cpu:rest")
    return [d if d is not None else rest for d in layers]


def _bytes(module_params: int, dtype: torch.dtype) -> int:
    return module_params * torch.empty((), dtype=dtype).element_size()


def _auto(config: ModelConfig, dtype: torch.dtype, gpus: dict[str, int]) -> list[str]:
    """Layers in order onto the GPUs while they fit (embeddings and head charged to the first), then offloaded."""
    if not gpus:
        return ["cpu"] * config.n_layer
    with torch.device("meta"):
        model = Transformer(config)
    layer = _bytes(sum(p.numel() for p in model.blocks[0].parameters()), dtype)
    ends = model.tok_emb.weight.numel() + (0 if config.tie_embeddings else model.lm_head.weight.numel())
    budgets = {name: free * (1 - RESERVE) for name, free in gpus.items()}
    budgets[next(iter(budgets))] -= _bytes(ends, dtype)
    layers, names = [], list(budgets)
    for _ in range(config.n_layer):
        while names and budgets[names[0]] < layer:
            names.pop(0)
        if not names:
            layers.append(OFFLOAD)
            continue
        budgets[names[0]] -= layer
        layers.append(names[0])
    return layers


def plan_device_map(spec: str, config: ModelConfig, dtype: torch.dtype = torch.float32,
                    free_memory: dict[str, int] | None = None) -> Plan:
    """The placement `spec` ("auto", "balanced" or explicit, see above) gives `config`'s layers.

    `free_memory` ({"cuda:0": bytes, ...}) stands in for the GPUs CUDA reports; tests plan for GPUs they lack.
    """
    gpus = _gpus(free_memory)
    spec = spec.strip()
    if spec == "auto":
        layers = _auto(config, dtype, gpus)
    elif spec == "balanced":
        names = list(gpus) or ["cpu"]
        layers = [names[i * len(names) // config.n_layer] for i in range(config.n_layer)]
    elif spec:
        layers = _explicit(spec, config.n_layer, gpus)
    else:
        raise UserError("device_map is empty; use auto, balanced or e.g. 0:0-15,1:16-31,cpu:rest")
    compute = next((d for d in layers if d.startswith("cuda")), next(iter(gpus), "cpu"))
    return Plan(layers, compute)


def _move(value, device: torch.device):
    """Tensors (also inside tuples and lists) moved to device; anything else as it is."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, (tuple, list)):
        return type(value)(_move(v, device) for v in value)
    return value


class Offload:
    """A module's weights kept in CPU memory, copied to `device` just before it runs and dropped right after."""

    def __init__(self, module: nn.Module, device: torch.device):
        self.device = device
        self.tensors = list(module.parameters()) + list(module.buffers())
        for t in self.tensors:  # pinned memory copies to the GPU without a staging buffer
            t.data = t.data.to("cpu").pin_memory() if device.type == "cuda" else t.data.to("cpu")
        self.stored = [t.data for t in self.tensors]
        self.loads = 0  # how many times the weights went to the compute device

    def before(self, module: nn.Module, args) -> None:
        for t, stored in zip(self.tensors, self.stored, strict=True):
            t.data = stored.to(self.device, non_blocking=True)
        self.loads += 1

    def after(self, module: nn.Module, args, output) -> None:
        for t, stored in zip(self.tensors, self.stored, strict=True):
            t.data = stored


class _Boundary:
    """The model's own hooks: inputs to the first device (a logits mask to the head's), logits back home."""

    def __init__(self, first: torch.device, head: torch.device):
        self.first, self.head, self.home = first, head, None

    def before(self, model: nn.Module, args, kwargs):
        self.home = (args[0] if args else kwargs["idx"]).device
        kwargs = {k: _move(v, self.head if k == "logits_mask" else self.first) for k, v in kwargs.items()}
        return _move(args, self.first), kwargs

    def after(self, model: nn.Module, args, kwargs, output):
        return output.to(self.home)


def dispatch(model: Transformer, plan: Plan) -> Transformer:
    """Place `model`'s parts as `plan` says and hook them so a forward pass crosses devices (see above)."""
    if len(plan.layers) != len(model.blocks):
        raise UserError(f"device_map: plans {len(plan.layers)} layers for a model of {len(model.blocks)}")
    if getattr(model, "device_plan", None) is not None:
        raise ValueError("this model is already dispatched; load it again to place it differently")
    tied = model.config.tie_embeddings
    parts = [(model.tok_emb, plan.layers[0]), (model.pos_emb, plan.layers[0]), (model.emb_norm, plan.layers[0]),
             *zip(model.blocks, plan.layers, strict=True), (model.norm_f, plan.layers[-1]),
             (model.lm_head, plan.layers[0] if tied else plan.layers[-1])]
    model.offloads = []
    for module, where in parts:
        if module is None:
            continue
        module.to(plan.stores_on(where))
        if where == OFFLOAD:
            offload = Offload(module, plan.runs_on(where))
            module.register_forward_pre_hook(offload.before)
            module.register_forward_hook(offload.after)
            model.offloads.append(offload)
        device = plan.runs_on(where)
        module.register_forward_pre_hook(lambda m, args, device=device: _move(args, device))
    if model.config.pos == "rope":
        model.rope_inv_freq = model.rope_inv_freq.to(plan.runs_on(plan.layers[0]))
    boundary = _Boundary(plan.runs_on(plan.layers[0]), plan.runs_on(plan.layers[-1]))
    model.register_forward_pre_hook(boundary.before, with_kwargs=True)
    model.register_forward_hook(boundary.after, with_kwargs=True)
    model.layer_devices = [plan.runs_on(where) for where in plan.layers]
    model.device_plan = plan
    return model


def _assign(model: nn.Module, name: str, value: torch.Tensor) -> None:
    """Replace the (meta) parameter or buffer called `name` by `value`."""
    owner, _, attr = name.rpartition(".")
    module = model.get_submodule(owner)
    if attr in module._parameters:
        module._parameters[attr] = nn.Parameter(value, requires_grad=module._parameters[attr].requires_grad)
    else:
        module._buffers[attr] = value


@torch.no_grad()
def materialize(config: ModelConfig, tensors: Iterable[tuple[str, torch.Tensor]], source: str,
                dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                plan: Plan | None = None) -> Transformer:
    """A Transformer holding the (llmlab name, tensor) pairs `tensors` yields, each checked and placed as it comes.

    Every weight goes to `device` in `dtype` (floating-point ones), or where `plan` says; a file may carry a
    tied head as well (skipped). Unknown names, wrong shapes and missing weights are one-line errors.
    """
    with torch.device("meta"):
        model = Transformer(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    tied = config.tie_embeddings
    if tied:
        expected.pop("lm_head.weight")
    seen = set()
    for name, value in tensors:
        if tied and name == "lm_head.weight":
            continue
        if name not in expected:
            raise UserError(f"{source}: weights do not match the config (unexpected {name!r}); is config.json "
                            "from the same model?")
        if tuple(value.shape) != expected[name]:
            raise UserError(f"{source}: tensor {name} has shape {tuple(value.shape)} but the config implies "
                            f"{expected[name]}; is config.json from the same model?")
        where = plan.stores_on(plan.part_of(name, tied)) if plan else torch.device(device)
        _assign(model, name, value.to(where, dtype=dtype if value.is_floating_point() else value.dtype))
        seen.add(name)
    missing = sorted(set(expected) - seen)
    if missing:
        raise UserError(f"{source}: weights do not match the config (missing {missing[0]!r}, {len(missing)} "
                        "missing); is config.json from the same model?")
    if tied:  # one Parameter under both names, as Transformer() makes it
        model.lm_head.weight = model.tok_emb.weight
    if config.pos == "rope":  # a non-persistent buffer: computed, never stored
        first = plan.stores_on(plan.layers[0]) if plan else torch.device(device)
        model.rope_inv_freq = rope_inv_freq(config.head_dim, config.rope_theta, config.rope_scaling).to(first)
    model.eval()
    return dispatch(model, plan) if plan else model
