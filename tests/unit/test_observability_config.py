"""Prometheus and Grafana provisioning: every dashboard query names a metric the services export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import generate_latest

from services.ingest import IngestMetrics
from services.monitor import MonitorMetrics
from services.scorer.metrics import Metrics as ScorerMetrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "infra" / "grafana" / "dashboards" / "fraud-detection.json"
PROMQL_FUNCS = {"sum", "rate", "increase", "histogram_quantile", "clamp_min", "topk", "by", "time", "le"}


def exported() -> set[str]:
    """Every sample name the scorer, ingest and monitor expose (labelled children touched)."""
    scorer, ingest, monitor = ScorerMetrics.create(), IngestMetrics(), MonitorMetrics()
    scorer.latency.labels("/v1/score", "200").observe(0.01)
    scorer.decisions.labels("approve").inc()
    scorer.missing.labels("user_activity").inc()
    monitor.psi.labels(feature="amount_usd").set(0.1)
    monitor.rate.labels(decision="review", source="live").set(0.1)
    monitor.alerts.labels(kind="feature_psi").inc()
    text = b"".join(generate_latest(r) for r in (scorer.registry, ingest.registry, monitor.registry)).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_dashboard_queries_use_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    names = exported()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    for expr in exprs:
        bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", "", expr)
        for ident in re.findall(r"[a-z_][a-z0-9_]*", bare):
            if ident in PROMQL_FUNCS or not ident.startswith(("fraud_", "ingest_")):
                continue
            assert ident in names, f"{ident} (in {expr!r}) is exported by no service"
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("throughput", "lag", "dead-letter", "latency", "decisions", "psi"):
        assert topic in titles


def test_prometheus_scrapes_the_compose_services() -> None:
    config = yaml.safe_load((ROOT / "infra" / "prometheus" / "prometheus.yml").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    for target in targets:
        host, port = target.split(":")
        if host == "127.0.0.1":
            continue
        assert host in compose and port in [str(p) for p in compose[host].get("expose", [])], target
    assert {"scorer:8000", "ingest:9101", "monitor:9102"} <= set(targets)
    rules = yaml.safe_load((ROOT / "infra" / "prometheus" / "alerts.yml").read_text())
    assert any(r["alert"] == "ScoringTrafficDrift" for g in rules["groups"] for r in g["rules"])


def test_grafana_datasource_matches_the_dashboard() -> None:
    provisioning = ROOT / "infra" / "grafana" / "provisioning"
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert source["url"] == "http://prometheus:9090"
    dashboard = json.loads(DASHBOARD.read_text())
    assert {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p} == {source["uid"]}
    provider = yaml.safe_load((provisioning / "dashboards" / "dashboards.yml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/etc/grafana/dashboards"
