"""Side processes (`fraud.worker`): calls in order, start-up failures surface, nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fraud.worker import SideProcess

ROOT = Path(__file__).resolve().parents[2]
STATE: list[int] = []


def _start(first: int) -> None:
    STATE.append(first)


def _append(value: int) -> list[int]:
    STATE.append(value)
    return list(STATE)


def _fail() -> None:
    raise RuntimeError("no store here")


def _pid() -> int:
    return os.getpid()


def test_calls_run_in_order_in_one_process_after_its_start() -> None:
    side = SideProcess(_start, 7)
    try:
        futures = [side.submit(_append, i) for i in range(5)]  # submitted before it has even started
        assert futures[-1].result(timeout=60) == [7, 0, 1, 2, 3, 4]
        assert len({side.submit(_pid).result() for _ in range(3)}) == 1 != os.getpid()
    finally:
        side.close()


def test_a_failed_start_is_raised_not_hidden() -> None:
    side = SideProcess(_fail)
    try:
        with pytest.raises(Exception):  # noqa: B017 - the pool reports it as BrokenProcessPool
            side.wait_started()
    finally:
        side.close()


def test_the_side_process_exits_when_its_service_is_killed(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from fraud.worker import SideProcess\n"
        "from tests.unit.test_worker import _pid, _start\n"
        "if __name__ == '__main__':\n"
        "    side = SideProcess(_start, 1)\n"
        "    print(side.submit(_pid).result(), flush=True)\n"
        "    time.sleep(600)\n"
    )
    service = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert service.stdout is not None
        child = int(service.stdout.readline())
        os.kill(child, signal.SIGTERM)  # left to the service: ignored
        time.sleep(0.5)
        os.kill(child, 0)  # still alive
        service.kill()  # kill -9 of the service
        service.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(child):
            time.sleep(0.2)
        assert not _alive(child)
    finally:
        service.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")  # a zombie has exited
