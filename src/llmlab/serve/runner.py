"""The engine on a thread of its own, reachable from asyncio: submit, receive token events, abort, drain.

`llmlab.infer.engine.Engine` is synchronous and single-threaded: one thread
must call every method. `EngineRunner` owns that thread. It loops:

    take new submissions -> engine.add_request     (the outcome goes back through an asyncio future)
    take aborts          -> engine.abort           (frees the request's KV blocks at once)
    engine.step()        -> TokenEvents            (each handed to its request's asyncio.Queue)
    snapshot engine.stats() for /metrics

Crossing threads: the web handlers (on the event loop) put submissions and
aborts on thread-safe queues and wake the engine thread; the engine thread
hands results back with `loop.call_soon_threadsafe`, never touching an
asyncio object directly. Several requests (the `n` choices of one HTTP
request) may share one asyncio.Queue: each event names its request id.

Shutdown is graceful: `drain()` refuses new submissions (`Draining`), the
requests already admitted run to the end, then the thread exits; `close(timeout)`
drains and waits at most `timeout` seconds, aborting whatever is left.
This file knows nothing about HTTP, text or OpenAI's formats.
"""

import asyncio
import queue
import threading
import time
import traceback
from dataclasses import dataclass

from llmlab.common import log
from llmlab.serve.metrics import Metrics

IDLE_WAIT_S = 0.05  # how long an idle engine thread sleeps before looking again (submissions wake it sooner)


class Draining(RuntimeError):
    """The runner is shutting down and takes no new requests."""


@dataclass
class _Submission:
    request_id: str
    prompt_ids: list[int]
    params: object  # llmlab.infer.engine.SamplingParams
    events: asyncio.Queue
    loop: asyncio.AbstractEventLoop
    accepted: asyncio.Future
    created: float  # time.monotonic() at submission: time to first token counts from here


class EngineRunner:
    """`runner.start()`, then `await runner.submit(id, prompt_ids, params, events_queue)` from the event loop."""

    def __init__(self, engine, metrics: Metrics | None = None):
        self.engine = engine
        self.metrics = metrics or Metrics()
        self._submissions: queue.Queue[_Submission] = queue.Queue()
        self._aborts: queue.Queue[str] = queue.Queue()
        self._wake = threading.Event()
        self._draining = threading.Event()
        self._stop = threading.Event()
        self._targets: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}  # engine thread only
        self._thread: threading.Thread | None = None
        self.snapshot: dict = dict(engine.stats())  # replaced whole by the engine thread; readers see one or the other
        self.error: BaseException | None = None

    # ---- the event-loop side ---------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="llmlab-engine", daemon=True)
            self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._draining.is_set()

    async def submit(self, request_id: str, prompt_ids: list[int], params, events: asyncio.Queue,
                     timeout: float = 30.0) -> None:
        """Hand a request to the engine; its TokenEvents will arrive on `events`.

        Raises what `engine.add_request` raises (ValueError for a bad prompt, QueueFull when the
        waiting queue is full), `Draining` during shutdown, TimeoutError if the engine thread does
        not answer within `timeout` seconds.
        """
        if not self.alive:
            raise Draining("the server is shutting down")
        loop = asyncio.get_running_loop()
        sub = _Submission(request_id, list(prompt_ids), params, events, loop, loop.create_future(), time.monotonic())
        self._submissions.put(sub)
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(sub.accepted), timeout)
        except TimeoutError:
            self.abort(request_id)  # in case it is admitted later
            raise

    def abort(self, request_id: str) -> None:
        """Stop a request and free its KV blocks (no more events arrive for it); unknown ids are ignored."""
        self._aborts.put(request_id)
        self._wake.set()

    def drain(self) -> None:
        """Refuse new requests; the admitted ones finish, then the engine thread stops."""
        self._draining.set()
        self._wake.set()

    def close(self, timeout: float = 30.0) -> None:
        """Drain, wait up to `timeout` seconds for in-flight requests, then abort the rest and stop."""
        self.drain()
        if self._thread is None:
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.info(f"serve: requests still running after {timeout:g} s of shutdown; aborting them")
            self._stop.set()
            self._wake.set()
            self._thread.join(timeout)

    # ---- the engine thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._admit()
                self._take_aborts()
                if self.engine.has_work():
                    self._deliver(self.engine.step())
                elif self._draining.is_set() and self._submissions.empty():
                    break
                else:
                    self._wake.wait(IDLE_WAIT_S)
                    self._wake.clear()
                self.snapshot = dict(self.engine.stats())
        except Exception as e:  # a crashed engine must not leave clients waiting forever
            self.error = e
            log.info(f"serve: the engine failed; refusing new requests\n{traceback.format_exc()}")
        finally:
            self._draining.set()
            self._finish_everyone()

    def _admit(self) -> None:
        while True:
            try:
                sub = self._submissions.get_nowait()
            except queue.Empty:
                return
            if self._draining.is_set():
                outcome: BaseException | None = Draining("the server is shutting down")
            else:
                try:
                    self.engine.add_request(sub.request_id, sub.prompt_ids, sub.params)
                    self._targets[sub.request_id] = (sub.loop, sub.events)
                    self.metrics.submitted(sub.request_id, len(sub.prompt_ids), sub.created)
                    outcome = None
                except (ValueError, RuntimeError) as e:  # bad prompt, QueueFull
                    outcome = e
            sub.loop.call_soon_threadsafe(_settle, sub.accepted, outcome)

    def _take_aborts(self) -> None:
        while True:
            try:
                request_id = self._aborts.get_nowait()
            except queue.Empty:
                return
            if self._targets.pop(request_id, None) is not None:
                self.engine.abort(request_id)
                self.metrics.finished(request_id, "abort")

    def _deliver(self, events: list) -> None:
        """Hand each event to its request's queue, one call_soon_threadsafe per event loop."""
        now = time.monotonic()
        batches: dict[asyncio.AbstractEventLoop, list] = {}
        for ev in events:
            target = self._targets.get(ev.request_id)
            if target is None:  # aborted while the step ran
                continue
            if ev.token_id is not None:
                self.metrics.token(ev.request_id, now)
            if ev.finished:
                del self._targets[ev.request_id]
                self.metrics.finished(ev.request_id, ev.finish_reason)
            batches.setdefault(target[0], []).append((target[1], ev))
        for loop, items in batches.items():
            _call(loop, _put_all, items)

    def _finish_everyone(self) -> None:
        """On exit: abort what is left in the engine and tell its waiters with a final "abort" event."""
        for request_id in list(self._targets):
            try:
                self.engine.abort(request_id)
            except Exception:  # the engine may be what failed
                pass
        while not self._submissions.empty():
            sub = self._submissions.get_nowait()
            _call(sub.loop, _settle, sub.accepted, Draining("the server is shutting down"))
        for request_id, (loop, events) in self._targets.items():
            self.metrics.finished(request_id, "abort")
            _call(loop, _put_all, [(events, _aborted(request_id))])
        self._targets.clear()


def _aborted(request_id: str):
    from llmlab.infer.engine import TokenEvent

    return TokenEvent(request_id, None, None, None, True, "abort", 0, 0)


def _call(loop: asyncio.AbstractEventLoop, fn, *args) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass


def _settle(future: asyncio.Future, error: BaseException | None) -> None:
    if not future.done():
        future.set_exception(error) if error is not None else future.set_result(None)


def _put_all(items: list) -> None:
    for events, ev in items:
        events.put_nowait(ev)
