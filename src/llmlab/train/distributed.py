"""Training on several processes with PyTorch's own machinery: DDP, FSDP2, tensor parallelism, and both.

Every process runs the same training loop on its own device; torchrun starts them (`llmlab pretrain
--nproc N` runs torchrun for you) and they talk through torch.distributed, NCCL between GPUs, gloo on CPUs.

    ddp      every process holds the whole model and trains on its own rows of the batch; gradients are
             averaged (one all-reduce, in buckets, overlapped with backward) once per optimizer step: the
             micro-batches before the last run under `no_sync` (Li et al. 2020, PyTorch DDP)
    fsdp     FSDP2 `fully_shard`: each process keeps 1/N of every weight, gradient and Adam moment; a block's
             weights are all-gathered just before it runs and its gradients reduce-scattered after (ZeRO-3,
             Rajbhandari et al. 2020). `mixed_precision="bf16"` computes in bfloat16 on float32 masters.
    tp       Megatron-style tensor parallelism (Shoeybi et al. 2019) through `parallelize_module`: q, k, v and
             the MLP's up (and gate) projections split by output column, o and down by input row, so each
             process computes n_head/N heads and 1/N of the MLP, with one all-reduce after attention and one
             after the MLP. Every process sees the same batch. Embeddings, norms and the head stay whole.
    fsdp+tp  a 2-D mesh (dp, tp): tensor parallelism inside each group of `tp` processes, FSDP across groups.

Data: the sampler draws one global batch per micro-step from one seeded stream; process p of the `dp`
data-parallel ones reads rows p*b .. (p+1)*b-1 of it (`WindowSampler`). So N processes with batch b train
on exactly what one process with batch N*b would, and every process holds the same sampler state.
Checkpoints: the full weights and optimizer moments are gathered to rank 0
(`torch.distributed.checkpoint.state_dict`) and written as the ordinary llmlab folder, which any
strategy, any number of processes, or one process resumes, and `llmlab.load` opens.

What it does not do: pipeline or sequence parallelism, sharded (DCP) checkpoint files, FSDP or tensor
parallelism of mixtures of experts (DDP trains them), tensor parallelism of ALiBi or of a norm over all heads
at once, or rendezvous across machines (torchrun's job).
"""

import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor

from llmlab.common import checkpoint, log
from llmlab.common.errors import UserError
from llmlab.models import ModelConfig, Transformer
from llmlab.train.loop import Parallelism
from llmlab.train.optim import make_adamw, param_groups
from llmlab.train.optimizers import build_optimizer

STRATEGIES = ("none", "ddp", "fsdp", "tp", "fsdp+tp")
MIXED_PRECISION = {"none": None, "bf16": torch.bfloat16}
# how long a launcher waits for torchrun to wind its workers down after Ctrl-C before killing it
INTERRUPT_GRACE_S = 30


def under_torchrun() -> bool:
    """Started by torchrun (or any launcher that sets its environment variables)."""
    return all(k in os.environ for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))


def process_rank() -> int:
    """This process's rank: from the process group once joined, else torchrun's environment, else 0."""
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", 0))


@contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """Join torchrun's process group for the duration (NCCL on CUDA, gloo on CPU); leave it afterwards.

    Does nothing outside torchrun, or when a group exists already (`llmlab.train.spawn` made it).
    """
    if not under_torchrun() or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def check_strategy(strategy: str, config: ModelConfig, world_size: int, tp_size: int | None = None,
                   mixed_precision: str = "none") -> int:
    """Refuse a layout that cannot work, in one line; return the tensor-parallel degree (1 without tp)."""
    if strategy not in STRATEGIES:
        raise UserError(f"strategy {strategy!r} is unknown; choose one of {', '.join(STRATEGIES)}")
    if mixed_precision not in MIXED_PRECISION:
        raise UserError(f"mixed_precision {mixed_precision!r} is unknown; choose one of {', '.join(MIXED_PRECISION)}")
    if mixed_precision != "none" and "fsdp" not in strategy:
        raise UserError(f"mixed_precision {mixed_precision} is FSDP's policy; use strategy fsdp or fsdp+tp")
    if strategy == "none":
        if world_size > 1:
            raise UserError(f"{world_size} processes but strategy none; choose one of {', '.join(STRATEGIES[1:])}")
        return 1
    if "fsdp" in strategy and config.n_expert:
        # an expert no token chose on one process has no gradient there, but has one on another process:
        # FSDP2's reduce-scatters would then differ in size between processes (gloo aborts, NCCL hangs)
        raise UserError("fsdp here does not shard a mixture of experts (experts unused on one process break "
                        "its gradient reduction); use ddp")
    if "tp" not in strategy:
        if tp_size not in (None, 1):
            raise UserError(f"tp_size {tp_size} needs strategy tp or fsdp+tp, not {strategy}")
        return 1
    tp = tp_size or (world_size if strategy == "tp" else min(2, world_size))
    if tp < 1 or world_size % tp:
        raise UserError(f"tp_size {tp} does not divide the {world_size} processes; give a divisor")
    if strategy == "tp" and tp != world_size:
        raise UserError(f"strategy tp uses all {world_size} processes for one model; for tp_size {tp} with "
                        "data parallelism across the groups use fsdp+tp")
    c = config
    for what, count in (("n_head", c.n_head), ("n_kv_head", c.n_kv_head), ("intermediate_size", c.intermediate_size)):
        if count % tp:
            raise UserError(f"tensor parallelism over {tp} processes splits {what}={count} into {tp} equal "
                            f"parts, which it cannot; choose a model whose {what} is a multiple of {tp}")
    refused = {"experts (n_expert)": c.n_expert, "ALiBi positions": c.pos == "alibi",
               "one norm over all heads (qk_norm=full)": c.qk_norm == "full"}
    for what, present in refused.items():
        if present:
            raise UserError(f"tensor parallelism here does not split a model with {what}; use ddp or fsdp")
    return tp


@dataclass(frozen=True)
class Layout:
    """What this process is in the run: its rank, its device, and the mesh the strategy lays over ranks."""

    strategy: str = "none"
    rank: int = 0
    world_size: int = 1
    tp: int = 1  # tensor-parallel degree: processes that share one copy of the model
    device: torch.device = torch.device("cpu")
    mesh: DeviceMesh | None = None  # (world,) for ddp/fsdp/tp; ("dp", "tp") for fsdp+tp

    @property
    def dp(self) -> int:
        """Data-parallel degree: how many different slices of each batch are trained on at once."""
        return self.world_size // self.tp

    @property
    def dp_rank(self) -> int:
        return self.rank // self.tp  # ranks of one tensor-parallel group are neighbours: same data

    @property
    def main(self) -> bool:
        return self.rank == 0


def make_layout(strategy: str, config: ModelConfig, device: torch.device, tp_size: int | None = None,
                mixed_precision: str = "none") -> Layout:
    """This process's layout; anything but "none" needs a joined process group (`process_group`)."""
    if strategy == "none":
        check_strategy(strategy, config, 1, tp_size, mixed_precision)
        return Layout(device=device)
    if not dist.is_initialized():
        raise UserError(f"strategy {strategy} needs several processes: start them with torchrun "
                        "(or `llmlab pretrain --nproc N`)")
    world, rank = dist.get_world_size(), dist.get_rank()
    tp = check_strategy(strategy, config, world, tp_size, mixed_precision)
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    shape, names = ((world // tp, tp), ("dp", "tp")) if strategy == "fsdp+tp" else ((world,), (strategy,))
    mesh = init_device_mesh(device.type, shape, mesh_dim_names=names)
    return Layout(strategy, rank, world, tp, device, mesh)


def tp_plan(block: nn.Module) -> dict[str, Any]:
    """Column-wise in, row-wise out, for attention and for the MLP: no communication between the two halves."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    plan: dict[str, Any] = {f"attn.{n}": ColwiseParallel() for n in ("q_proj", "k_proj", "v_proj")}
    plan["attn.o_proj"] = RowwiseParallel()
    plan.update({f"mlp.{n}": ColwiseParallel() for n in ("gate_proj", "up_proj") if hasattr(block.mlp, n)})
    plan["mlp.down_proj"] = RowwiseParallel()
    return plan


def parallelize(model: Transformer, layout: Layout, mixed_precision: str = "none") -> nn.Module:
    """Lay the model over the processes; returns the module to train (DDP wraps, the others work in place).

    Call it before making the optimizer: FSDP and TP replace the parameters by sharded ones (DTensors).
    """
    if layout.strategy == "none":
        return model
    if layout.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        # an expert that no token picked in a step has no gradient, which DDP must be told to expect
        return DistributedDataParallel(model, device_ids=[layout.device.index] if layout.device.type == "cuda"
                                       else None, find_unused_parameters=bool(model.config.n_expert))
    if "tp" in layout.strategy:
        from torch.distributed.tensor.parallel import parallelize_module

        tp_mesh = layout.mesh["tp"] if layout.strategy == "fsdp+tp" else layout.mesh
        for block in model.blocks:
            parallelize_module(block, tp_mesh, tp_plan(block))
            # each process now computes its own n_head/tp query and n_kv_head/tp key/value heads, and
            # Attention.forward's views count heads from these: (B, T, H/tp * D) -> (B, H/tp, T, D)
            block.attn.n_head //= layout.tp
            block.attn.n_kv_head //= layout.tp
    if "fsdp" in layout.strategy:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        dp_mesh = layout.mesh["dp"] if layout.strategy == "fsdp+tp" else layout.mesh
        policy = MixedPrecisionPolicy(param_dtype=MIXED_PRECISION[mixed_precision], reduce_dtype=torch.float32)
        for block in model.blocks:  # one all-gather per block, freed after its forward and its backward
            fully_shard(block, mesh=dp_mesh, mp_policy=policy)
        fully_shard(model, mesh=dp_mesh, mp_policy=policy)  # the rest: embeddings (tied head), final norm
    return model


def make_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float,
                   layout: Layout) -> torch.optim.Optimizer:
    """The optimizer `name` over the (possibly sharded) parameters, in the same groups one process has.

    DDP's parameters are whole, so any optimizer works; sharded ones (fsdp, tp) get torch's AdamW only:
    an update that needs a whole matrix (Muon's orthogonalisation) would need it gathered first.
    """
    if layout.strategy in ("none", "ddp"):
        return build_optimizer(name, model, lr, weight_decay, device_type=layout.device.type)
    if name != "adamw":
        raise UserError(f"optimizer {name} is not available with strategy {layout.strategy} (its parameters are "
                        "sharded); use adamw, or strategy ddp")
    # sharded parameters: fused kernels take plain tensors only, and tp mixes DTensors with whole (plain)
    # parameters, which foreach cannot; fsdp's are all DTensors on one mesh, which foreach can
    foreach = layout.strategy == "fsdp" and layout.device.type == "cuda"
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.95), eps=1e-8,
                             foreach=foreach, fused=False)


def grad_groups(params: list[nn.Parameter]) -> list[list[nn.Parameter]]:
    """Parameters with gradients, grouped so torch's foreach kernels can take each group at once: plain
    tensors together, sharded ones (DTensors) by mesh and placement (torch cannot mix them in one call)."""
    groups: dict[Any, list[nn.Parameter]] = {}
    for p in params:
        if p.grad is not None:
            g = p.grad
            groups.setdefault((g.device_mesh, g.placements) if isinstance(g, DTensor) else None, []).append(p)
    return list(groups.values())


def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` for gradients that may be sharded: the global L2 norm (a plain
    tensor, equal on every process) is returned, and every gradient scaled by max_norm / norm if above 1.

    Each group's norm is reduced over the processes that hold its shards (`full_tensor`), then the groups
    combine by their sum of squares.
    """
    groups = grad_groups(params)
    norms = []
    for group in groups:
        norm = torch.nn.utils.get_total_norm([p.grad for p in group])
        norms.append(norm.full_tensor() if isinstance(norm, DTensor) else norm)
    if not norms:
        return torch.zeros(())
    total = torch.stack(norms).square().sum().sqrt() if len(norms) > 1 else norms[0]
    for group in groups:
        torch.nn.utils.clip_grads_with_norm_(group, max_norm, total)
    return total


class Collectives(Parallelism):
    """The training loop's meeting points over a process group (see `llmlab.train.loop.Parallelism`)."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self.world_size, self.data_parallel, self.main = layout.world_size, layout.dp, layout.main

    def accumulate(self, model: nn.Module) -> AbstractContextManager:
        # FSDP reduce-scatters every micro-batch instead: skipping it would keep whole gradients in memory
        return model.no_sync() if self.layout.strategy == "ddp" else nullcontext()

    def mean(self, value: float) -> float:
        t = torch.tensor(value, dtype=torch.float64, device=self.layout.device)
        dist.all_reduce(t)
        return t.item() / self.world_size  # tensor-parallel ranks hold equal values, so this is the dp mean

    def agree(self, value: float) -> float:
        t = torch.tensor(value, dtype=torch.float64, device=self.layout.device)
        dist.broadcast(t, src=0)
        return t.item()

    def clip_grad_norm(self, params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
        return clip_grad_norm(params, max_norm)


def _whole(model: nn.Module, optimizer: torch.optim.Optimizer, main: bool) -> tuple[Transformer, Any] | None:
    """A plain CPU copy of a (sharded) model and its optimizer on rank 0, None elsewhere; every process
    must call it (it gathers)."""
    full = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=full)  # gathered to rank 0's CPU memory
    moments = get_optimizer_state_dict(model, optimizer, options=full)
    if not main:
        return None
    plain = Transformer(model.config)
    plain.load_state_dict(weights)
    plain_opt = make_adamw(plain, 0.0)  # learning rate and decay come with the loaded param groups
    set_optimizer_state_dict(plain, plain_opt, moments, options=StateDictOptions(full_state_dict=True))
    return plain, plain_opt


def save_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer, meta: dict,
                    layout: Layout, tokenizer: Any = None) -> Transformer | None:
    """Write the ordinary llmlab checkpoint folder from rank 0; every process must call it (it gathers).

    `model` is the unwrapped one (not DDP's wrapper). Returns the whole model on rank 0, None elsewhere.
    The sampler is one stream shared by all processes; a process whose state differs is a bug, and stops.
    """
    if layout.strategy == "none":
        checkpoint.save_checkpoint(path, model, meta, tokenizer=tokenizer, optimizer=optimizer)
        return model
    layout_meta = {"strategy": layout.strategy, "processes": layout.world_size, "tp": layout.tp}
    samplers: list[Any] = [None] * layout.world_size
    dist.all_gather_object(samplers, meta.get("sampler"))
    if any(s != samplers[0] for s in samplers):
        raise RuntimeError("the processes' data samplers disagree; their global batches would differ")
    # DDP's model and optimizer are whole on every process already; the sharded ones are gathered
    whole = ((model, optimizer) if layout.main else None) if layout.strategy == "ddp" else \
        _whole(model, optimizer, layout.main)
    if whole is not None:
        checkpoint.save_checkpoint(path, whole[0], {**meta, "layout": layout_meta}, tokenizer=tokenizer,
                                   optimizer=whole[1])
    dist.barrier()  # nobody reads or replaces the folder before rank 0 has swapped it in
    return whole[0] if whole is not None else None


def restore_training_state(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                           layout: Layout) -> dict:
    """Load any llmlab checkpoint (written by any strategy on any number of processes) into this layout.

    Every process reads the folder into a plain CPU model and optimizer, then each keeps its own shards
    (`set_model_state_dict` / `set_optimizer_state_dict` with full state dicts). RNG states come back too,
    the same on every process, as they were when saved.
    """
    if layout.strategy in ("none", "ddp"):  # whole parameters: load them as one process would
        return checkpoint.restore_training_state(path, model, optimizer)
    plain = Transformer(model.config)
    plain_opt = make_adamw(plain, 0.0)
    meta = checkpoint.restore_training_state(path, plain, plain_opt)
    full = StateDictOptions(full_state_dict=True)
    moments = get_optimizer_state_dict(plain, plain_opt, options=full)
    set_model_state_dict(model, plain.state_dict(), options=full)
    set_optimizer_state_dict(model, optimizer, moments, options=full)
    return meta


def torchrun_command(argv: list[str], nproc: int) -> list[str]:
    """`torchrun --standalone --nproc_per_node N -m llmlab ARGV`, through this Python."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "llmlab", *argv]


def launch(argv: list[str], nproc: int) -> int:
    """Run `llmlab ARGV` on `nproc` local processes under torchrun; return its exit status.

    The wait has no timeout (a training run takes as long as it takes) but Ctrl-C is safe: torchrun gets the
    interrupt, is given INTERRUPT_GRACE_S to stop its workers, then is killed, and KeyboardInterrupt goes on.
    """
    if nproc < 1:
        raise UserError(f"nproc must be at least 1, got {nproc}")
    command = torchrun_command(argv, nproc)
    log.info("running: " + shlex.join(command))
    proc = subprocess.Popen(command)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=INTERRUPT_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
