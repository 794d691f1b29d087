"""One vLLM engine kept busy by several batches at once.

``LLM.generate`` adds a batch's requests, steps the engine until every one of
them has finished, and returns: the engine drains at the end of each batch,
waiting for its slowest sample while new work queues up behind it. Here one
thread owns the engine and steps it without pause; batches (from any number
of caller threads) hand their requests to that thread and wait on a future,
so the next batch's requests are already scheduled while the last answers of
the one before are still decoding.

This drives vLLM's ``LLMEngine`` (``add_request`` and ``step``, as ``LLM.generate`` does),
which works with the engine core in the calling process
(``teacher.engine_in_actor``) or in a process of its own (vLLM's default, the
core then schedules and runs the model while this thread collects outputs).
Requests are added with ``RequestOutputKind.FINAL_ONLY`` (as ``LLM.generate``
does): a request with ``n=k`` then yields one output, when all k samples are
done, holding all k.
"""

from __future__ import annotations

import concurrent.futures
import copy
import itertools
import queue
import threading
import time
from typing import Any, Callable, Optional, Sequence


class EngineStopped(RuntimeError):
    """The engine's thread ended on an error; no request can be served any more."""


class EngineStalled(RuntimeError):
    """The engine finished no step for ``stall_timeout`` seconds while requests waited."""


class _Group:
    """One caller's requests: results in submission order, a future for all of them."""

    def __init__(self, size: int, on_output: Optional[Callable[[Any], None]]):
        self.results: list[Any] = [None] * size
        self.left = size
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.on_output = on_output


class EngineLoop:
    """Owns ``llm`` from a background thread and steps it while any request is unfinished."""

    def __init__(self, llm: Any, idle_poll: float = 0.05, stall_timeout: Optional[float] = None):
        self.llm = llm
        self.idle_poll = idle_poll
        # A step that does not return (an engine process gone, a GPU stuck) would leave every caller
        # waiting for ever: a watchdog stops the loop instead, and the callers hear EngineStopped.
        self.stall_timeout = stall_timeout
        self._last_step = time.monotonic()  # when a step last returned, or work arrived at an idle engine
        self._inbox: queue.Queue = queue.Queue()
        self._pending: dict[str, tuple[_Group, int]] = {}  # request id -> (group, position)
        self._request_ids = itertools.count()
        self._busy = 0.0  # seconds with at least one unfinished request
        self._busy_lock = threading.Lock()
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)
        self._thread.start()
        if stall_timeout is not None:
            threading.Thread(target=self._watch, name="engine-watchdog", daemon=True).start()

    def submit(self, prompts: Sequence[Any], params: Any,
               on_output: Optional[Callable[[Any], None]] = None) -> concurrent.futures.Future:
        """Queue ``prompts`` with ``params``; the future gives their outputs in order.

        ``on_output`` is called (from the engine thread) with each finished
        output, for progress; it must be quick and must not raise.
        """
        if self._error is not None:
            raise EngineStopped(f"the engine stopped: {self._error!r}") from self._error
        group = _Group(len(prompts), on_output)
        if not prompts:
            group.future.set_result([])
            return group.future
        self._inbox.put((list(prompts), params, group))
        if self._error is not None:  # the engine stopped while this group was being queued
            self._fail_queued()
        return group.future

    def take_busy_seconds(self) -> float:
        """Seconds the engine had work since the last call (the engine's own time, not callers')."""
        with self._busy_lock:
            busy, self._busy = self._busy, 0.0
        return busy

    @property
    def stopped(self) -> Optional[BaseException]:
        """The error the loop stopped on, or None while it runs."""
        return self._error

    def _run(self) -> None:
        engine = self.llm.llm_engine
        try:
            while self._error is None:
                idle = not engine.has_unfinished_requests()
                self._take_new(block=idle)
                if not engine.has_unfinished_requests():
                    continue
                if idle:
                    self._last_step = time.monotonic()
                started = time.perf_counter()
                outputs = engine.step()
                self._last_step = time.monotonic()
                with self._busy_lock:
                    self._busy += time.perf_counter() - started
                for output in outputs:
                    if output.finished:
                        self._finish(output)
        except BaseException as err:  # noqa: BLE001 - every waiting caller must hear of it
            self._stop(err)
        finally:
            # Stopped from another thread (an engine known dead), this thread may have been adding a
            # group while _stop failed the others: it fails what it holds itself before it ends, or
            # that group's caller would wait for ever (seen in CI: a labelling job hung for an hour).
            self._fail_pending()

    def _watch(self) -> None:
        every = min(5.0, self.stall_timeout / 4)
        while self._error is None:
            time.sleep(every)
            waited = time.monotonic() - self._last_step
            if self._pending and waited > self.stall_timeout:
                self._stop(EngineStalled(f"no engine step finished in {waited:.0f}s with "
                                         f"{len(self._pending)} requests waiting"))

    def _take_new(self, block: bool) -> None:
        """Add every queued group's requests; wait for one when the engine is idle."""
        while True:
            try:
                prompts, params, group = self._inbox.get(block=block, timeout=self.idle_poll if block else None)
            except queue.Empty:
                return
            block = False
            self._add(prompts, params, group)

    def _add(self, prompts: list[Any], params: Any, group: _Group) -> None:
        from vllm.sampling_params import RequestOutputKind

        params = copy.copy(params)
        params.output_kind = RequestOutputKind.FINAL_ONLY  # n=k: one output with all k samples
        engine = self.llm.llm_engine
        added = []
        try:
            for position, prompt in enumerate(prompts):
                request_id = f"rd-{next(self._request_ids)}"
                engine.add_request(request_id, prompt, params)
                added.append(request_id)
                self._pending[request_id] = (group, position)
        except Exception as err:  # noqa: BLE001 - a bad request fails its own group, not the engine
            if added:
                engine.abort_request(added, internal=False)
            for request_id in added:
                self._pending.pop(request_id, None)
            group.future.set_exception(err)

    def _finish(self, output: Any) -> None:
        if output.request_id not in self._pending:  # failed already: the watchdog stopped the loop
            return
        group, position = self._pending.pop(output.request_id)
        group.results[position] = output
        group.left -= 1
        if group.on_output is not None:
            group.on_output(output)
        if group.left == 0:
            group.future.set_result(group.results)

    def _stop(self, err: BaseException) -> None:
        if self._error is not None:
            return
        self._error = err
        self._fail_pending()

    def _fail_pending(self) -> None:
        # copy(): atomic, though the engine thread may still run; only the requests seen are removed, so
        # one the engine thread adds meanwhile stays for its own last sweep (its finally clause).
        for request_id, (group, _) in self._pending.copy().items():
            self._pending.pop(request_id, None)
            self._fail(group)
        self._fail_queued()

    def stop(self, err: BaseException) -> None:
        """Fail every waiting and later caller with ``err`` (the engine is known to be dead)."""
        self._stop(err)

    def _fail_queued(self) -> None:
        while True:
            try:
                self._fail(self._inbox.get_nowait()[2])
            except queue.Empty:
                return

    def _fail(self, group: _Group) -> None:
        try:
            group.future.set_exception(EngineStopped(f"the engine stopped: {self._error!r}"))
        except concurrent.futures.InvalidStateError:  # failed already, from the other thread
            pass
