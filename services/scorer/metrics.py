"""Prometheus metrics of the scorer, in a registry per app (multiprocess-aware when workers > 1)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prom_multiprocess

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SCORE_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass
class Metrics:
    registry: CollectorRegistry
    latency: Histogram
    decisions: Counter
    scores: Histogram
    degraded: Counter
    missing: Counter
    batch_size: Histogram
    audit_dropped: Counter
    audit_errors: Counter
    model_swaps: Counter
    model_loaded: Gauge

    @classmethod
    def create(cls) -> Metrics:
        """Fresh metrics in their own registry (apps built in one process do not collide)."""
        r = CollectorRegistry(auto_describe=True)
        return cls(
            registry=r,
            latency=Histogram(
                "fraud_scorer_request_seconds",
                "Request latency by route and status",
                ["route", "status"],
                buckets=LATENCY_BUCKETS,
                registry=r,
            ),
            decisions=Counter("fraud_scorer_decisions", "Decisions served", ["decision"], registry=r),
            scores=Histogram("fraud_scorer_score", "Fraud scores served", buckets=SCORE_BUCKETS, registry=r),
            degraded=Counter(
                "fraud_scorer_degraded", "Transactions scored without online features (store down)", registry=r
            ),
            missing=Counter(
                "fraud_scorer_missing_features",
                "Transactions with no online row for a feature group",
                ["group"],
                registry=r,
            ),
            batch_size=Histogram(
                "fraud_scorer_batch_size", "Transactions per model call", buckets=BATCH_BUCKETS, registry=r
            ),
            audit_dropped=Counter("fraud_scorer_audit_dropped", "Decisions not published (queue full)", registry=r),
            audit_errors=Counter("fraud_scorer_audit_errors", "Decisions the broker did not accept", registry=r),
            model_swaps=Counter("fraud_scorer_model_swaps", "Champion models loaded", registry=r),
            model_loaded=Gauge(
                "fraud_scorer_model_loaded", "1 when a model is loaded", registry=r, multiprocess_mode="min"
            ),
        )

    def exposition(self) -> bytes:
        """The text exposition: all workers' metrics in multiprocess mode, else this registry's."""
        # Multi-process only when prometheus_client really stores values in files: Feast sets
        # PROMETHEUS_MULTIPROC_DIR at import, possibly after prometheus_client chose in-memory values.
        from prometheus_client import values

        if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and values.ValueClass is not values.MutexValue:
            registry = CollectorRegistry()
            prom_multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
