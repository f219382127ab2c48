"""The scoring service: model holder + online reader + core + audit + metrics, behind a micro-batcher.

A request is scored in its micro-batch on the event loop (features and `predict`: fractions of a
millisecond). Reason codes, where a row needs them, are TreeSHAP (~2 ms a row, about 100x a
prediction): they are computed after the batch on a helper thread (`ThreadBatcher`), where
LightGBM's C code runs without the interpreter lock, so one explained transaction never holds up the
requests behind it. The audit record and the metrics follow once a request's reasons are in, after
its response.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from fraud.contracts import Transaction
from fraud.settings import ScorerSettings
from services.scorer import core
from services.scorer.audit import AuditPublisher
from services.scorer.batcher import MicroBatcher, ThreadBatcher
from services.scorer.metrics import Metrics
from services.scorer.model_holder import ModelHolder
from services.scorer.online import OnlineFeatureReader, StoreUnavailable

log = logging.getLogger(__name__)


class ModelUnavailable(RuntimeError):
    """No model is loaded: the scorer must not answer with a score."""


class ScoringService:
    """Scores transactions: one online read, one feature pass and one model call per micro-batch."""

    def __init__(
        self,
        settings: ScorerSettings,
        holder: ModelHolder,
        reader: OnlineFeatureReader,
        metrics: Metrics,
        audit: AuditPublisher | None,
    ) -> None:
        self.settings = settings
        self.holder = holder
        self.reader = reader
        self.metrics = metrics
        self.audit = audit
        self.batcher: MicroBatcher[tuple[Transaction, bool], core.Scored] = MicroBatcher(
            self.process,
            max_rows=settings.scorer_microbatch_max,
            max_wait_s=settings.scorer_microbatch_wait_ms / 1000.0,
            on_batch=metrics.batch_size.observe,
            no_retry=(ModelUnavailable, StoreUnavailable),
        )
        top_k = settings.scorer_top_reasons
        self.explainer: ThreadBatcher[core.Scored] = ThreadBatcher(
            lambda rows: core.add_reasons(rows, top_k), "reasons"
        )

    @property
    def ready(self) -> bool:
        """Ready when a model is loaded (and the store is up, if a down store means 503)."""
        if self.holder.current is None:
            return False
        return self.settings.scorer_store_down == "degraded" or self.reader.healthy

    async def score(self, txns: Sequence[Transaction], explain: bool = False) -> list[core.Scored]:
        """Score transactions through the micro-batcher; `explain` asks reasons for approvals too."""
        explain = explain or self.settings.scorer_explain == "all"
        results = await self.batcher.submit([(t, explain) for t in txns])
        loop = asyncio.get_running_loop()
        pending = [r for r in results if r.needs_reasons]
        if not pending:
            loop.call_soon(self.record, results)  # queued behind this response
            return results
        done = self.explainer.submit(pending)
        answered = asyncio.shield(done)  # a caller that goes away does not stop the audit record

        def audit(future: asyncio.Future[None]) -> None:
            if not future.cancelled() and future.exception() is None:  # failed reasons: the request gets a 500
                loop.call_soon(self.record, results)  # behind the response, like the unexplained path

        done.add_done_callback(audit)
        await answered
        return results

    async def stop(self) -> None:
        """Finish the queued batches and the reasons being computed, then stop."""
        await self.batcher.stop()
        await asyncio.to_thread(self.explainer.stop)
        await asyncio.sleep(0)  # the audit records of the last reasons

    def process(self, items: list[tuple[Transaction, bool]]) -> list[core.Scored]:
        """Score one micro-batch, reasons left for `score` (the micro-batcher runs this on the event loop)."""
        txns = [t for t, _ in items]
        model = self.holder.current  # read once: the whole batch uses this model even if a swap happens now
        if model is None:
            raise ModelUnavailable("no model loaded")
        try:
            rows = self.reader.read(txns)
        except StoreUnavailable:
            if self.settings.scorer_store_down == "unavailable":
                raise
            rows = core.OnlineRows.unavailable(len(txns))
        explain = [e for _, e in items]
        return core.score_batch(model, txns, rows, explain=explain, reasons=False)  # reasons: in `score`

    def record(self, results: list[core.Scored]) -> None:
        """Audit and count a request's decisions (runs after its response is out)."""
        if self.audit is not None:
            self.audit.publish(results, core.MODEL_FEATURES)
        m = self.metrics
        for r in results:
            m.decisions.labels(r.decision).inc()
            m.scores.observe(r.score)
            for group in r.missing:
                m.missing.labels(group).inc()
            if r.degraded:
                m.degraded.inc()
