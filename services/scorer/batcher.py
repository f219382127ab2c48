"""Micro-batching: concurrent requests share one feature lookup and one model call.

Requests queue on the event loop; one task takes everything queued (up to `max_rows`) and runs the
batch function on the loop itself. The work is CPU-bound Python: on a worker thread it would only
contend with the loop for the interpreter lock (measured: p50 at 200 req/s rose from ~11 to ~17-35
ms), while on the loop, requests arriving during a batch wait in the socket and form the next
batch. Under light load a batch is a single request (no added wait unless `max_wait_s` > 0); under
heavy load batches grow, which is what keeps per-request cost flat. A failing batch is retried
request by request, so one bad request cannot fail its neighbours (except for `no_retry` errors,
which concern the whole batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class _Pending(Generic[In, Out]):
    items: Sequence[In]
    future: asyncio.Future[list[Out]]


class MicroBatcher(Generic[In, Out]):
    """Runs `process(items) -> results` (same length, same order) over batches of queued requests."""

    def __init__(
        self,
        process: Callable[[list[In]], list[Out]],
        max_rows: int = 128,
        max_wait_s: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
        no_retry: tuple[type[Exception], ...] = (),
    ) -> None:
        self._process = process
        self._max_rows = max_rows
        self._max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._no_retry = no_retry
        self._queue: deque[_Pending[In, Out]] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the batching task on the running loop."""
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        """Finish what is queued (for up to 10 s), then stop."""
        if self._task is not None:
            deadline = asyncio.get_running_loop().time() + 10.0
            while self._queue and not self._task.done() and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def submit(self, items: Sequence[In]) -> list[Out]:
        """Queue one request's items and wait for their results."""
        if self._wakeup is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        future: asyncio.Future[list[Out]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(items, future))
        self._wakeup.set()
        return await future

    def _take(self) -> list[_Pending[In, Out]]:
        taken: list[_Pending[In, Out]] = []
        rows = 0
        while self._queue and (not taken or rows + len(self._queue[0].items) <= self._max_rows):
            item = self._queue.popleft()
            rows += len(item.items)
            taken.append(item)
        return taken

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._max_wait_s > 0 and sum(len(p.items) for p in self._queue) < self._max_rows:
                await asyncio.sleep(self._max_wait_s)
            while self._queue:
                batch = [p for p in self._take() if not p.future.cancelled()]
                if batch:
                    self._run_batch(batch)
                await asyncio.sleep(0)  # let the loop answer this batch and read new requests

    def _run_batch(self, batch: list[_Pending[In, Out]]) -> None:
        items = [x for p in batch for x in p.items]
        try:
            results = self._process(items)
        except Exception as exc:
            if len(batch) == 1 or isinstance(exc, self._no_retry):
                for pending in batch:
                    self._fail(pending, exc)
                return
            log.warning("batch of %d requests failed; retrying one by one", len(batch), exc_info=True)
            for pending in batch:
                self._run_batch([pending])
            return
        if self._on_batch is not None:
            self._on_batch(len(items))
        start = 0
        for pending in batch:
            end = start + len(pending.items)
            if not pending.future.done():
                pending.future.set_result(results[start:end])
            start = end

    @staticmethod
    def _fail(pending: _Pending[In, Out], exc: Exception) -> None:
        if not pending.future.done():
            pending.future.set_exception(exc)
