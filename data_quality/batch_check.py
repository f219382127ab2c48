"""The Great Expectations check of every ingest micro-batch, in a process of its own.

GX is pure Python: in the ingest process, its ~0.1 s a batch (mostly fixed cost) would hold the
interpreter lock and add to every batch's time. `BatchCheck` runs it in a side process instead, so
the ingest computes the batch's features meanwhile and writes them only once the check has passed.
`gx_check` is the check itself, run in that process (or in process, in tests).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

import pandas as pd

from fraud.contracts import TRANSACTION_SCHEMA
from fraud.settings import IngestSettings
from fraud.worker import SideProcess

log = logging.getLogger(__name__)


class Verdict(NamedTuple):
    """A batch check's outcome: passed, its report, and (when it failed) the rows to isolate.

    `offending` lists the frame's index labels of the rows that broke row-level expectations; None
    when a failed expectation is about the batch as a whole, so the whole batch must be isolated.
    """

    passed: bool
    report: str
    offending: list[int] | None


Check = Callable[[pd.DataFrame], Verdict]


def offending_rows(raw: dict[str, Any]) -> list[int] | None:
    """The rows a failed GX result (COMPLETE format) blames, or None if one failure blames no row."""
    rows: set[int] = set()
    for result in raw["results"]:
        if result["success"]:
            continue
        blamed = (result.get("result") or {}).get("unexpected_index_list")
        if not blamed:
            return None
        rows.update(int(i) for i in blamed)
    return sorted(rows)


# The columns the `ingest_batch` suite checks: only these are sent to the worker.
INGEST_BATCH_COLUMNS = ("transaction_id", "device_id", "ip_address", "country", "amount_usd", "event_time")


def gx_check(settings: IngestSettings) -> Check:
    """The check: the `ingest_batch` suite on a frame; (passed, report).

    The suite is built here, before the first batch (that costs seconds). A batch is first checked for
    pass or fail only; a failing one is checked again for the observed values its report names. Data
    Docs pages of sampled passing batches are written in the background, one at a time; a failing
    batch's page is written before the check returns.
    """
    from data_quality.docs import docs_dir_for, publish
    from data_quality.runner import ValidationSummary, validate

    every = settings.ingest_data_docs_every
    checked = [0]
    publisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="data-docs")

    def run(frame: pd.DataFrame, result_format: str = "SUMMARY") -> ValidationSummary:
        hour = pd.Timestamp.now(tz="UTC").floor("h").to_pydatetime()  # bounds move with the clock, hourly
        # one hour wider than the ingest's event-time policy on each side (`now` is floored to the
        # hour): an event the policy let through never fails its batch
        skew = settings.ingest_max_event_skew_hours + 1.0
        ahead = 1.0 + settings.ingest_max_future_skew_seconds / 3600.0
        return validate(
            frame, "ingest_batch", result_format=result_format, max_skew_hours=skew, now=hour, max_ahead_hours=ahead
        )

    def document(summary: ValidationSummary, batch: str) -> None:
        try:  # the docs are for people: failing to write them never stops ingestion
            publish(summary, docs_dir_for(settings.data_dir), run_name="ingest", batch=batch)
        except Exception:
            log.exception("could not publish the batch check to Data Docs")

    def check(frame: pd.DataFrame) -> Verdict:
        sampled = bool(every) and checked[0] % every == 0
        # pass or fail first (cheaper); the observed values and offending rows only for a page or a failure
        summary = run(frame, "SUMMARY" if sampled else "BOOLEAN_ONLY")
        if not summary.success:
            summary = run(frame, "COMPLETE")
        if sampled or (every and not summary.success):  # failures always documented
            page = publisher.submit(document, summary, f"batch-{checked[0]}")
            if not summary.success:
                page.result()
        checked[0] += 1
        return Verdict(summary.success, summary.report(), None if summary.success else offending_rows(summary.raw))

    run(TRANSACTION_SCHEMA.empty_table().to_pandas()[list(INGEST_BATCH_COLUMNS)])
    return check


class BatchCheck:
    """`gx_check` in a side process (`fraud.worker`): `submit(frame)` returns at once, with a future.

    If the worker dies, `result()` of its pending check raises and the batch is not written.
    """

    def __init__(self, settings: IngestSettings) -> None:
        self.process = SideProcess(_start, settings)

    def submit(self, frame: pd.DataFrame) -> Future[Verdict]:
        return self.process.submit(_check, frame[list(INGEST_BATCH_COLUMNS)])


_CHECK: Check | None = None


def _start(settings: IngestSettings) -> None:
    global _CHECK
    _CHECK = gx_check(settings)


def _check(frame: pd.DataFrame) -> Verdict:
    if _CHECK is None:
        raise RuntimeError("the batch check worker did not start")
    return _CHECK(frame)
