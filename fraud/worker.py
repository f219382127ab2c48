"""One side process of a service: work that would hold the service's interpreter lock, run beside it.

`SideProcess(start, *args)` spawns one worker (never forked: the service's Kafka threads are running)
that runs `start(*args)` once, then takes calls (`submit`) one at a time, in order. The worker leaves
SIGINT and SIGTERM to the service, which finishes its batch and then shuts the worker down; it exits
by itself within a second if the service dies (`kill -9`), so nothing is left behind.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class SideProcess:
    """A worker process that has run `start(*args)`, then runs `submit`ted calls one at a time, in order.

    It starts in the background: calls submitted meanwhile wait for it; `wait_started` waits too.
    """

    def __init__(self, start: Callable[..., None], *args: Any) -> None:
        root = logging.getLogger()
        json_lines = any(type(h.formatter).__name__ == "JsonFormatter" for h in root.handlers)
        self._pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=mp.get_context("spawn"),
            initializer=_init,
            initargs=(os.getpid(), logging.getLevelName(root.level), json_lines, start, args),
        )
        self._started = self._pool.submit(_ready)  # the pool starts its worker with the first call

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        return self._pool.submit(fn, *args)

    def wait_started(self) -> None:
        self._started.result()  # raises if `start` failed

    def close(self, cancel_pending: bool = False) -> None:
        """Wait for the call under way; with `cancel_pending`, drop the calls not yet started (after a
        failure, the calls queued behind it would only fail again, or wait out their retries)."""
        self._pool.shutdown(wait=True, cancel_futures=cancel_pending)


def _init(parent: int, level: str, json_lines: bool, start: Callable[..., None], args: tuple[Any, ...]) -> None:
    from fraud.logs import setup_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    setup_logging(level, json_lines)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True, name="parent-watch").start()
    start(*args)
    gc.collect()
    gc.freeze()  # what start loaded stays: the collector's full passes need not walk it on every call


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _ready() -> bool:
    return True
