"""Time and peak memory, measured the same way by recipes and benchmarks.

`best_seconds` keeps the fastest of several runs: other load on a shared
machine only ever makes a run slower, so the minimum is the least disturbed
figure. `PeakMemory` reports CUDA's allocator peak on a GPU, and on Linux the
process's peak resident set (VmHWM, reset through /proc/self/clear_refs); a
CPU process's resident set never shrinks, so compare peaks from fresh
processes, not two measurements in one.
"""

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch


def sync(device: torch.device | str | None = None) -> None:
    """Wait for queued GPU work, so a timer stops when the work is done, not when it was queued."""
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize()


def best_seconds(fn: Callable[[], object], repeats: int = 3, device: torch.device | str | None = None) -> float:
    """Fastest wall-clock seconds of `repeats` calls of `fn`."""
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def process_memory_mb(field: str = "VmRSS") -> float | None:
    """A memory figure of this process from /proc/self/status (VmRSS now, VmHWM peak), in MB; None off Linux."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) / 1024 if m else None


class PeakMemory:
    """Peak memory from now on, in MB: `start_mb` when made, `peak_mb()` since; None where unmeasurable."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mb: float | None = torch.cuda.memory_allocated(self.device) / 2**20
            return
        self.start_mb = process_memory_mb("VmRSS")
        if sys.platform.startswith("linux"):
            try:
                Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak resident set to the current one
            except OSError:
                pass

    def peak_mb(self) -> float | None:
        if self.device.type == "cuda":
            sync(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return process_memory_mb("VmHWM")

    def extra_mb(self) -> float | None:
        """How far the peak rose above the memory at start."""
        peak = self.peak_mb()
        return None if peak is None or self.start_mb is None else peak - self.start_mb
