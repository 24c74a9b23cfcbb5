"""What /metrics reports: request and token counters, latency histograms, the engine's gauges.

Written in Prometheus' text exposition format (version 0.0.4) by hand, so the
server needs no client library: `# HELP` and `# TYPE` lines, then samples; a
histogram is cumulative `_bucket{le="..."}` counts ending in `le="+Inf"`, plus
`_sum` and `_count`. Names follow vLLM's where one exists (time to first
token, inter-token latency).

The engine thread records (`submitted`, `token`, `finished`) and the event
loop renders, so every method takes the lock. Latencies are measured where the
engine hands tokens over, which leaves out HTTP and detokenising (microseconds).
"""

import bisect
import threading
import time
from collections import deque

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)
ITL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
RATE_WINDOW_S = 10.0  # tokens/s is averaged over this many recent seconds: smooth, yet follows load changes


class Histogram:
    """Counts of observations at or below each bucket's upper bound (cumulative when rendered)."""

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def lines(self, name: str) -> list[str]:
        out, total = [], 0
        for bound, count in zip([*map(repr, self.bounds), "+Inf"], self.counts, strict=True):
            total += count
            out.append(f'{name}_bucket{{le="{bound}"}} {total}')
        return out + [f"{name}_sum {self.sum!r}", f"{name}_count {total}"]


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self._created: dict[str, float] = {}  # request id -> submission time, until its first token
        self._last: dict[str, float | None] = {}  # request id -> time of its last token (None: none yet)
        self.ttft = Histogram(TTFT_BUCKETS)
        self.itl = Histogram(ITL_BUCKETS)
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self.finished_by_reason: dict[str, int] = {}
        self._recent: deque[float] = deque()  # times of tokens within the rate window

    def submitted(self, request_id: str, prompt_tokens: int, created: float) -> None:
        with self._lock:
            self._last[request_id] = None
            self._created[request_id] = created
            self.prompt_tokens += prompt_tokens

    def token(self, request_id: str, now: float) -> None:
        with self._lock:
            if request_id not in self._last:
                return
            last = self._last[request_id]
            if last is None:
                self.ttft.observe(now - self._created.pop(request_id))
            else:
                self.itl.observe(now - last)
            self._last[request_id] = now
            self.generated_tokens += 1
            self._recent.append(now)

    def finished(self, request_id: str, reason: str | None) -> None:
        with self._lock:
            self._last.pop(request_id, None)
            self._created.pop(request_id, None)
            reason = reason or "unknown"
            self.finished_by_reason[reason] = self.finished_by_reason.get(reason, 0) + 1

    def tokens_per_second(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._recent and self._recent[0] < now - RATE_WINDOW_S:
                self._recent.popleft()
            return len(self._recent) / RATE_WINDOW_S

    def render(self, stats: dict, extra: dict[str, float] | None = None) -> str:
        """The Prometheus text for these metrics and an engine `stats()` snapshot."""
        rate = self.tokens_per_second()
        gauges = [("num_requests_waiting", "requests waiting to be scheduled", stats.get("waiting", 0)),
                  ("num_requests_running", "requests being generated", stats.get("running", 0)),
                  ("kv_blocks_used", "KV cache blocks in use", stats.get("kv_blocks_used", 0)),
                  ("kv_blocks_total", "KV cache blocks in the pool", stats.get("kv_blocks_total", 0)),
                  ("generation_tokens_per_second", f"tokens generated per second over the last "
                                                   f"{RATE_WINDOW_S:g} s", rate)]
        gauges += [(name, name.replace("_", " "), value) for name, value in (extra or {}).items()]
        out = []
        for name, help_text, value in gauges:
            out += [f"# HELP llmlab_{name} {help_text}", f"# TYPE llmlab_{name} gauge", f"llmlab_{name} {value}"]
        with self._lock:
            counters = [("prompt_tokens", "prompt tokens admitted", self.prompt_tokens),
                        ("generation_tokens", "tokens generated", self.generated_tokens),
                        ("preemptions", "requests preempted for lack of KV blocks", stats.get("preemptions", 0)),
                        ("prefix_cache_hits", "prompt blocks reused from the prefix cache",
                         stats.get("prefix_hits", 0))]
            for name, help_text, value in counters:
                out += [f"# HELP llmlab_{name}_total {help_text}", f"# TYPE llmlab_{name}_total counter",
                        f"llmlab_{name}_total {value}"]
            out += ["# HELP llmlab_request_success_total finished requests by finish reason",
                    "# TYPE llmlab_request_success_total counter"]
            out += [f'llmlab_request_success_total{{finish_reason="{r}"}} {n}'
                    for r, n in sorted(self.finished_by_reason.items())]
            for name, help_text, hist in [("time_to_first_token_seconds", "time from submission to first token",
                                           self.ttft),
                                          ("inter_token_latency_seconds", "time between consecutive tokens",
                                           self.itl)]:
                out += [f"# HELP llmlab_{name} {help_text}", f"# TYPE llmlab_{name} histogram", *hist.lines(
                    f"llmlab_{name}")]
        return "\n".join(out) + "\n"
