"""The scoring service: model holder + online reader + core + audit + metrics, behind a micro-batcher."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fraud.contracts import Transaction
from fraud.settings import ScorerSettings
from services.scorer import core
from services.scorer.audit import AuditPublisher
from services.scorer.batcher import MicroBatcher
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
            after=self.record,
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
        return await self.batcher.submit([(t, explain) for t in txns])

    def process(self, items: list[tuple[Transaction, bool]]) -> list[core.Scored]:
        """Score one micro-batch (runs on the batch thread)."""
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
        return core.score_batch(model, txns, rows, top_k=self.settings.scorer_top_reasons, explain=explain)

    def record(self, results: list[core.Scored]) -> None:
        """Audit and count a scored batch (the batcher runs this after the batch's responses are out)."""
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
