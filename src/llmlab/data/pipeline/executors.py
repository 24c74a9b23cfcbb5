"""Where shard tasks run: in this process, in local worker processes, or on a Dask cluster.

All three run the same task function over the same shards, so they write the same output. They share one
driving loop (`drive`): at most `workers` tasks in flight (so a task's clock starts when it can start),
polled until done, each bounded by `task_timeout`. A task that raises is retried once; a second failure is
recorded by shard name and the rest go on, then one error names every failed shard. A worker process that
dies (killed, out of memory) is an error at once: the shards finished so far stay on disk, and the runner
skips them when the same command runs again.

Why Dask rather than Ray for the distributed engine: `dask[distributed]` is pure Python wheels from the
package index (a few MB), its `LocalCluster` starts two worker processes here in about two seconds, and
its futures have the same `submit`/`done`/`result` shape as `concurrent.futures`, so one loop drives both.
Ray brings a large native wheel and several daemon processes (GCS, raylet, dashboard), which a shared
2-core machine feels. A real cluster is `address = "tcp://scheduler:8786"`; the workers there need llmlab
installed and the input and output paths visible (a shared filesystem).
"""

import concurrent.futures as cf
import multiprocessing as mp
import time
from collections.abc import Callable
from typing import Any

from llmlab.common import log
from llmlab.common.errors import UserError

EXECUTORS = ("inprocess", "local", "dask")
POLL_S = 0.02


class ShardsFailed(UserError):
    """Some shards failed twice; `failures` maps shard name -> the last error."""

    def __init__(self, failures: dict[str, str]):
        self.failures = failures
        named = "; ".join(f"{name} ({err})" for name, err in failures.items())
        super().__init__(f"{len(failures)} shard(s) failed twice: {named}")


class WorkerDied(UserError):
    pass


def drive(submit: Callable[[Any], Any], tasks: list, names: list[str], workers: int, task_timeout: float,
          fatal: tuple[type[BaseException], ...] = (), retries: int = 1,
          on_done: Callable[[int, Any], None] | None = None) -> list:
    """Run every task through `submit` (returns a future); results in task order."""
    results: list = [None] * len(tasks)
    attempts = [0] * len(tasks)
    failures: dict[str, str] = {}
    queue = list(range(len(tasks)))
    running: dict[int, tuple[Any, float]] = {}
    while queue or running:
        while queue and len(running) < workers:
            i = queue.pop(0)
            running[i] = (submit(tasks[i]), time.monotonic())
        for i, (future, started) in list(running.items()):
            if not future.done():
                if time.monotonic() - started > task_timeout:
                    raise UserError(f"shard {names[i]} ran longer than task_timeout={task_timeout:.0f}s; "
                                    "raise it, or use smaller shards (shard_mb)")
                continue
            del running[i]
            try:
                results[i] = future.result(timeout=task_timeout)
            except fatal as e:
                raise WorkerDied(f"a worker died while running shard {names[i]} ({type(e).__name__}: {e}); "
                                 "killed, or out of memory?") from None
            except Exception as e:
                attempts[i] += 1
                if attempts[i] <= retries:
                    log.info(f"shard {names[i]} failed ({type(e).__name__}: {e}); retrying once")
                    queue.insert(0, i)
                else:
                    failures[names[i]] = f"{type(e).__name__}: {e}"
                continue
            if on_done:
                on_done(i, results[i])
        time.sleep(POLL_S if running else 0)
    if failures:
        raise ShardsFailed(failures)
    return results


class InProcess:
    """Tasks one after another in this process: for tests, notebooks and debugging."""

    name = "inprocess"
    workers = 1

    def map(self, fn: Callable, tasks: list, names: list[str], task_timeout: float = 3600.0,
            on_done: Callable | None = None) -> list:
        def submit(task):
            future: cf.Future = cf.Future()
            try:
                future.set_result(fn(task))
            except Exception as e:
                future.set_exception(e)
            return future

        return drive(submit, tasks, names, 1, task_timeout, on_done=on_done)

    def close(self) -> None:
        pass


class Local:
    """Worker processes on this machine (spawned: a fresh interpreter each, safe with threads and torch)."""

    name = "local"

    def __init__(self, workers: int = 2):
        self.workers = workers
        self.pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))

    def map(self, fn: Callable, tasks: list, names: list[str], task_timeout: float = 3600.0,
            on_done: Callable | None = None) -> list:
        try:
            return drive(lambda task: self.pool.submit(fn, task), tasks, names, self.workers, task_timeout,
                         fatal=(cf.process.BrokenProcessPool,), on_done=on_done)
        except UserError:
            self.close()
            raise

    def close(self) -> None:
        # processes still busy (a timeout) are ended: the pool would otherwise wait for them at exit
        for p in list((getattr(self.pool, "_processes", None) or {}).values()):
            if p.is_alive():
                p.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)


class Dask:
    """A Dask distributed cluster: a `LocalCluster` started here, or an existing scheduler's address."""

    name = "dask"

    def __init__(self, workers: int = 2, address: str | None = None, start_timeout: float = 60.0):
        try:
            import dask
            from distributed import Client, LocalCluster
        except ImportError:
            raise UserError("the dask executor needs `pip install \"dask[distributed]\"`") from None
        # a task whose worker dies fails at once (default: rescheduled up to 3 times); our loop reports it
        dask.config.set({"distributed.scheduler.allowed-failures": 0})
        self.cluster = None
        if address is None:
            import logging

            self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                        dashboard_address=None, silence_logs=logging.ERROR)
            address = self.cluster.scheduler_address
        self.client = Client(address, timeout=start_timeout)
        self.workers = max(workers if self.cluster else len(self.client.scheduler_info()["workers"]), 1)

    def map(self, fn: Callable, tasks: list, names: list[str], task_timeout: float = 3600.0,
            on_done: Callable | None = None) -> list:
        from distributed import KilledWorker

        return drive(lambda task: self.client.submit(fn, task, pure=False), tasks, names, self.workers,
                     task_timeout, fatal=(KilledWorker,), on_done=on_done)

    def close(self) -> None:
        self.client.close(timeout=30)
        if self.cluster is not None:
            self.cluster.close(timeout=30)


def make_executor(kind: str = "inprocess", workers: int = 2, address: str | None = None):
    if kind not in EXECUTORS:
        hint = "; Ray is not supported: use dask" if kind == "ray" else ""
        raise UserError(f"executor {kind!r}: must be one of {', '.join(EXECUTORS)}{hint}")
    if workers < 1:
        raise UserError(f"workers {workers}: must be at least 1")
    if kind == "inprocess":
        return InProcess()
    if kind == "local":
        return Local(workers)
    return Dask(workers, address)
