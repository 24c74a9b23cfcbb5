"""Run a function in N local processes joined by torch.distributed: for tests, labs and small experiments.

`spawn(fn, world_size, *args)` starts `world_size` fresh processes, joins them into one process group over
a `FileStore` in a temporary folder (no port to pick, nothing listening on the network), calls
`fn(rank, world_size, *args)` in each, and returns the ranks' return values in rank order. The backend is
NCCL when there is a CUDA GPU per rank, gloo otherwise.
Processes come from a fork server that has imported torch once (the "forkserver" start method): no OpenMP
or CUDA state is inherited from the caller, and only the first launch pays torch's few-second import (the
server starts with the first call, and preloads that call's `fn` module as well).

What it guarantees: it never hangs. A rank that raises makes `spawn` raise `WorkerError` with that rank's
traceback text; a rank that dies without a word (`os._exit`, a segfault, the OOM killer) makes it raise with
the exit code; anything still running past `timeout` seconds is killed and `spawn` raises `TimeoutError`.
The other ranks are killed in every case, since they may be waiting in a collective for the one that failed.

What it does not do: launch across machines, or replace torchrun (`llmlab pretrain --nproc N` uses torchrun).
`fn` must be importable by name (a module-level function), as for any spawned process.
"""

import multiprocessing as mp
import os
import pickle
import queue
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

# After a rank exits cleanly its result may still be in flight through the queue's pipe; wait this long for it.
EXIT_GRACE_S = 5.0
# What the fork server imports once for every launch: torch.optim's first optimizer imports torch._dynamo
# (seconds, in every fresh process) even when nothing is compiled.
PRELOAD = ["torch", "torch.distributed", "torch._dynamo"]
# After the first error report, how long to look for a rank that died first (see _root_cause).
ROOT_CAUSE_S = 1.0


class WorkerError(RuntimeError):
    """A rank failed: `rank`, and `details` (its traceback text, or how it died)."""

    def __init__(self, rank: int, details: str):
        super().__init__(f"rank {rank} failed:\n{details}")
        self.rank, self.details = rank, details


def default_backend(world_size: int) -> str:
    """NCCL when every rank can have its own GPU, else gloo (CPU tensors)."""
    import torch

    return "nccl" if torch.cuda.is_available() and torch.cuda.device_count() >= world_size else "gloo"


def _worker(rank: int, world_size: int, backend: str, store_path: str, timeout: float, threads: int,
            results: mp.Queue, fn: Callable, args: tuple) -> None:
    import torch
    import torch.distributed as dist

    try:
        torch.set_num_threads(threads)
        if backend == "nccl":
            torch.cuda.set_device(rank)
        store = dist.FileStore(store_path, world_size)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=timeout))
        value = fn(rank, world_size, *args)
        # plain pickle, by value: torch's queue pickler would pass tensors through shared memory, which
        # dies with this process
        results.put((rank, "ok", time.time(), pickle.dumps(value)))
    except BaseException:  # noqa: BLE001 (the parent re-raises it, with this text, as WorkerError)
        # stamped before the group is torn down: the other ranks' errors that this causes come later
        results.put((rank, "error", time.time(), traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _stop(procs: list) -> None:
    for p in procs:
        if p.is_alive():
            p.kill()
    for p in procs:
        if p.pid is not None:  # started
            p.join(timeout=5)


def spawn(fn: Callable, world_size: int, *args: Any, timeout: float = 300.0, backend: str | None = None,
          threads: int | None = None) -> list[Any]:
    """Run fn(rank, world_size, *args) on ranks 0..world_size-1; return their results, rank 0 first.

    `threads`: torch threads per rank (default: this process's CPUs shared out, at least 1), so two ranks on
    a 2-core machine do not fight over each core. `timeout` bounds the whole run, start-up included, and is
    also the process group's collective timeout.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    backend = backend or default_backend(world_size)
    if threads is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = max(1, cpus // world_size)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD + ([fn.__module__] if fn.__module__ != "__main__" else []))
    results = ctx.Queue()
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory(prefix="llmlab-spawn-") as tmp:
        store_path = str(Path(tmp) / "store")
        procs = [ctx.Process(target=_worker, daemon=True, name=f"llmlab-rank-{rank}",
                             args=(rank, world_size, backend, store_path, timeout, threads, results, fn, args))
                 for rank in range(world_size)]
        try:
            for p in procs:
                p.start()
            return _collect(procs, results, world_size, deadline, timeout)
        finally:
            _stop(procs)
            results.close()
            results.join_thread()


def _root_cause(procs: list, results: mp.Queue, first: tuple[int, float, str]) -> WorkerError:
    """One rank failing makes the others fail too ("connection closed by peer"). Look a moment longer;
    blame a rank that died silently, else the rank whose error came first by the clock."""
    errors = [first]
    end = time.monotonic() + ROOT_CAUSE_S
    while time.monotonic() < end:
        try:
            rank, status, stamp, payload = results.get(timeout=0.05)
            if status == "error":
                errors.append((rank, stamp, payload))
        except queue.Empty:
            pass
        for rank, p in enumerate(procs):
            if p.exitcode not in (None, 0) and rank not in {e[0] for e in errors}:
                return WorkerError(rank, f"the process exited with code {p.exitcode} without reporting a result")
    rank, _, details = min(errors, key=lambda e: e[1])
    return WorkerError(rank, details)


def _collect(procs: list, results: mp.Queue, world_size: int, deadline: float, timeout: float) -> list[Any]:
    """Wait for every rank's result; raise as soon as one fails, dies or the deadline passes."""
    values: dict[int, Any] = {}
    exited_at: dict[int, float] = {}
    while len(values) < world_size:
        try:
            rank, status, stamp, payload = results.get(timeout=0.1)
        except queue.Empty:
            pass
        else:
            if status == "error":
                raise _root_cause(procs, results, (rank, stamp, payload))
            values[rank] = pickle.loads(payload)
            continue
        now = time.monotonic()
        for rank, p in enumerate(procs):
            if rank in values or p.exitcode is None:
                continue
            if p.exitcode != 0:
                raise WorkerError(rank, f"the process exited with code {p.exitcode} without reporting a result")
            exited_at.setdefault(rank, now)
            if now - exited_at[rank] > EXIT_GRACE_S:
                raise WorkerError(rank, "the process exited cleanly but its result never arrived")
        if now > deadline:
            missing = sorted(set(range(world_size)) - set(values))
            raise TimeoutError(f"ranks {missing} still running after {timeout:g}s; all ranks killed")
    return [values[r] for r in range(world_size)]
