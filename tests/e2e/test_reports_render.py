"""The Data Docs site and the drift report render in headless Chromium: screenshots and expected sections."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from data_quality import drift as D
from data_quality.runner import validate
from fraud import features as F
from fraud.settings import MonitorSettings
from services.monitor import WindowOutcome, check_window
from tests.drift_data import audit_records, config, feature_frame, simulate, stand_in_scores
from tests.e2e.browser import dump_dom, find_chromium, screenshot

pytestmark = pytest.mark.e2e


@dataclass
class Site:
    data_dir: Path
    shots: Path
    outcome: WindowOutcome
    failing_page: Path


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        pytest.fail("no chromium and cannot install it: apt-get install chromium (as root)")
    return binary


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A data folder with validations from two stages and one monitoring window (a price crash)."""
    data_dir = tmp_path_factory.mktemp("data")
    train = feature_frame(simulate(config(seed=1, users=600, days=10)))
    scores, decisions = stand_in_scores(train)
    reference = D.build_reference(
        train, F.model_feature_names(), scores=scores, decisions=decisions, source="training set (simulated)"
    )
    txns = simulate(config(seed=2, users=600, days=10), price_shock=0.2)
    live = feature_frame(txns).sample(1500, random_state=0)
    docs = data_dir / "data_docs"
    validate(txns, "raw_transactions", docs_dir=docs, docs_run="simulator", docs_batch="transactions")
    failing = validate(txns.assign(amount=-1.0), "raw_transactions", docs_dir=docs, docs_run="cli", docs_batch="bad")
    assert failing.docs_path is not None
    settings = MonitorSettings(data_dir=data_dir)
    outcome = check_window(settings, reference, audit_records(txns.loc[live.index], live))
    yield Site(data_dir, tmp_path_factory.mktemp("screenshots"), outcome, failing.docs_path)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def test_data_docs_site_renders(chromium: str, site: Site) -> None:
    index = site.data_dir / "data_docs" / "index.html"
    shot = screenshot(chromium, index, site.shots / "data_docs_index.png", height=900)
    assert shot.exists() and shot.stat().st_size > 20_000 and png_size(shot) == (1280, 900)
    dom = dump_dom(chromium, index)
    assert "Validation Results" in dom and "Expectation Suites" in dom
    # the table is filled by scripts (vendored, no network): one row per validation, statuses shown
    assert "Showing 1 to 3 of 3 rows" in dom
    for text in ("raw_transactions", "scoring_traffic", "simulator", "monitor", "cli"):
        assert text in dom
    assert "fa-times" in dom and "fa-check-circle" in dom

    page = screenshot(chromium, site.failing_page, site.shots / "data_docs_failed_validation.png")
    assert page.stat().st_size > 20_000
    dom = dump_dom(chromium, site.failing_page)
    for section in ("Overview", "Statistics", "Table-Level Expectations", "Unsuccessful Expectations"):
        assert section in dom
    assert "unexpected" in dom


def test_drift_report_renders(chromium: str, site: Site) -> None:
    report = site.outcome.report
    shot = screenshot(chromium, report, site.shots / "drift_report.png", height=2600)
    assert shot.exists() and shot.stat().st_size > 50_000 and png_size(shot) == (1280, 2600)
    dom = dump_dom(chromium, report)
    for section in ("alerts", "summary", "score", "psi", "features", "all-features", "data-quality"):
        assert f'id="{section}"' in dom
    assert "DRIFT:" in dom and "balance_BTC: PSI" in dom.replace("feature balance_BTC", "balance_BTC")
    assert dom.count("data:image/png;base64,") >= 3  # score, PSI bars, top features
    assert "scoring_traffic: PASSED" in dom and "No reference score distribution" not in dom
    link = site.outcome.validation_page
    assert link is not None and link.exists()
    assert link.name in dom  # the report links its window's Data Docs page
