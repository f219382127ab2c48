"""One Great Expectations Data Docs site per data folder: every stage publishes its validations into it.

The site lives in `<data_dir>/data_docs` (`index.html` plus one page per suite and per validation).
Its sources, the validation results and suites as JSON, sit beside the pages in `data_docs/.gx/`, so
results from different processes and suites (simulator, ingest, training, monitoring, `fraud
validate`) accumulate in one index. GX's site builder drops pages whose result is not in its store;
a shared file store keeps them all. Each suite keeps its latest `KEEP_PER_SUITE` results.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from data_quality.runner import ValidationSummary

log = logging.getLogger(__name__)

VENDOR = Path(__file__).with_name("static") / "vendor"
# The CDN assets GX pages load, and their vendored copies (the site renders without internet).
CDN_ASSETS = {
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "icons.css",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper.min.js",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap.min.js",
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js": (
        "bootstrap-table-filter-control.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css": (
        "bootstrap-table-filter-control.min.css"
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css": (
        "bootstrap-table-filter-control.min.css"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js": (
        "bootstrap-datepicker.min.js"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css": (
        "bootstrap-datepicker.min.css"
    ),
}
_LOGO = re.compile(r"https://great-expectations-web-assets\.[^\"]*?/(logo-long\.png)[^\"]*")  # a remote beacon
_SRI = re.compile(r'\s+(?:integrity="[^"]*"|crossorigin="[^"]*")')
SITE = "data_docs"
KEEP_PER_SUITE = 50
INDEX_LIMIT = 200
_CONTEXTS: dict[Path, Any] = {}
_THREAD_LOCK = threading.Lock()


def docs_dir_for(data_dir: Path) -> Path:
    """Where a data folder's Data Docs site lives."""
    return data_dir / "data_docs"


def _context(docs_dir: Path) -> Any:
    """An in-memory GX context whose suites, results and Data Docs site are files under `docs_dir`."""
    root = docs_dir.resolve()
    if root not in _CONTEXTS:
        import great_expectations as gx
        from great_expectations.data_context.types.base import DataContextConfig, ProgressBarsConfig

        def files(folder: str) -> dict[str, Any]:
            return {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(root / ".gx" / folder)}

        config = DataContextConfig(
            expectations_store_name="expectations_store",
            validation_results_store_name="validation_results_store",
            checkpoint_store_name="checkpoint_store",
            stores={
                "expectations_store": {"class_name": "ExpectationsStore", "store_backend": files("expectations")},
                "validation_results_store": {
                    "class_name": "ValidationResultsStore",
                    "store_backend": files("validations"),
                },
                "checkpoint_store": {
                    "class_name": "CheckpointStore",
                    "store_backend": {"class_name": "InMemoryStoreBackend"},
                },
                "validation_definition_store": {
                    "class_name": "ValidationDefinitionStore",
                    "store_backend": {"class_name": "InMemoryStoreBackend"},
                },
            },
            data_docs_sites={
                SITE: {
                    "class_name": "SiteBuilder",
                    "show_how_to_buttons": False,
                    "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(root)},
                    "site_index_builder": {
                        "class_name": "DefaultSiteIndexBuilder",
                        "validation_results_limit": INDEX_LIMIT,
                    },
                    "site_section_builders": {"profiling": "None"},
                }
            },
            analytics_enabled=False,
        )
        context = gx.get_context(mode="ephemeral", project_config=config)
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        _CONTEXTS[root] = context
    return _CONTEXTS[root]


@contextmanager
def _site_lock(docs_dir: Path) -> Iterator[None]:
    """One writer at a time per site, across threads and processes (ingest, trainer, monitor)."""
    docs_dir.mkdir(parents=True, exist_ok=True)
    with _THREAD_LOCK, (docs_dir / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def localize(page: Path, root: Path) -> None:
    """Point a page's CDN scripts and styles at the site's vendored copies (no-op if not vendored)."""
    if not VENDOR.is_dir() or not page.exists():
        return
    target = root / "static" / "vendor"
    if not target.is_dir():
        shutil.copytree(VENDOR, target, ignore=shutil.ignore_patterns("*.md"), dirs_exist_ok=True)
    prefix = os.path.relpath(target, page.parent)
    text = original = page.read_text()
    for url, name in CDN_ASSETS.items():
        text = text.replace(f'"{url}"', f'"{prefix}/{name}"')
    text = _SRI.sub("", text)  # subresource-integrity attributes block file:// loads
    images = os.path.relpath(root / "static" / "images", page.parent)
    text = _LOGO.sub(lambda m: f"{images}/{m.group(1)}", text)
    if text != original:
        page.write_text(text)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "batch"


def _prune(context: Any, suite_name: str, keep: int) -> None:
    """Drop the oldest results of a suite beyond `keep` (their pages go with the next index build)."""
    store = context.validation_results_store
    keys = [k for k in store.list_keys() if k.expectation_suite_identifier.name == suite_name]
    keys.sort(key=lambda k: k.run_id.run_time)
    for key in keys[: max(len(keys) - keep, 0)]:
        store.remove_key(key)


def publish(
    summary: ValidationSummary,
    docs_dir: Path,
    run_name: str = "validate",
    batch: str | None = None,
    keep: int = KEEP_PER_SUITE,
) -> Path:
    """Add one validation (from `data_quality.runner.validate`) to the site; return its page's path.

    `run_name` says which stage ran it (simulator, ingest, train, monitor, cli); `batch` names the
    data (a file, a window). The MLflow run of a model logs the returned page as its data-quality link.
    """
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    if summary.result is None or summary.suite_object is None:
        raise ValueError("publish needs a summary returned by data_quality.runner.validate")
    with _site_lock(docs_dir):
        context = _context(docs_dir)
        suite_id = ExpectationSuiteIdentifier(name=summary.suite)
        context.expectations_store.add_or_update(key=suite_id, value=summary.suite_object)
        run_id = RunIdentifier(run_name=_safe(run_name), run_time=datetime.now(UTC))
        key = ValidationResultIdentifier(suite_id, run_id, _safe(batch or f"{summary.rows}-rows"))
        result = summary.result
        result.meta["run_id"] = run_id
        context.validation_results_store.set(key, result)
        _prune(context, summary.suite, keep)
        context.build_data_docs(site_names=[SITE], resource_identifiers=[key, suite_id])
        url = context.get_docs_sites_urls(resource_identifier=key, site_name=SITE, only_if_exists=False)[0]
        page = Path(str(url["site_url"]).removeprefix("file://"))
        root = docs_dir.resolve()
        for built in (page, index(root), root / "expectations" / f"{summary.suite}.html"):
            localize(built, root)
    log.info("data docs: %s %s -> %s", summary.suite, "passed" if summary.success else "FAILED", page)
    return page


def index(docs_dir: Path) -> Path:
    """The site's front page."""
    return docs_dir / "index.html"
