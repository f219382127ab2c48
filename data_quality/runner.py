"""Run a suite from `data_quality.suites` on a pandas DataFrame with GX 1.x; summarize for humans."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class Failure:
    """One failed expectation, readable: what, on which column, and what was observed."""

    expectation: str
    column: str | None
    observed: str

    def __str__(self) -> str:
        where = f"[{self.column}] " if self.column else ""
        return f"{self.expectation} {where}{self.observed}"


@dataclass
class ValidationSummary:
    """The outcome of one suite on one frame."""

    suite: str
    success: bool
    rows: int
    evaluated: int
    failures: list[Failure] = field(default_factory=list)
    docs_path: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def report(self) -> str:
        """A short multi-line report."""
        head = (
            f"{self.suite}: {'PASSED' if self.success else 'FAILED'} ({self.evaluated} expectations, {self.rows} rows)"
        )
        return "\n".join([head, *(f"  - {f}" for f in self.failures)])

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (for MLflow runs and reports)."""
        return {
            "suite": self.suite,
            "success": self.success,
            "rows": self.rows,
            "evaluated": self.evaluated,
            "failures": [str(f) for f in self.failures],
        }


def _observed(result: dict[str, Any]) -> str:
    res = result.get("result") or {}
    if result.get("exception_info", {}).get("raised_exception"):
        return f"error: {result['exception_info'].get('exception_message')}"
    parts = []
    if "observed_value" in res:
        parts.append(f"observed {res['observed_value']!r}")
    if res.get("unexpected_count"):
        parts.append(f"{res['unexpected_count']} unexpected ({res.get('unexpected_percent', 0):.3g}%)")
        sample = res.get("partial_unexpected_list") or []
        if sample:
            parts.append(f"e.g. {sample[:3]!r}")
    return ", ".join(parts) or "failed"


def _definition(suite_name: str, suite_params: dict[str, Any]) -> tuple[Any, Any]:
    """A GX context and validation definition for a suite; cached, since building them costs ~1 s."""
    key = (suite_name, repr(sorted(suite_params.items())))
    if key not in _DEFINITIONS:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        from data_quality.suites import SUITES

        if suite_name not in SUITES:
            raise KeyError(f"unknown suite {suite_name!r}; known: {sorted(SUITES)}")
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        batch_definition = (
            context.data_sources.add_pandas("pandas")
            .add_dataframe_asset(name=suite_name)
            .add_batch_definition_whole_dataframe("whole")
        )
        suite = context.suites.add(SUITES[suite_name](**suite_params))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{suite_name}_validation", data=batch_definition, suite=suite)
        )
        if len(_DEFINITIONS) > 32:
            _DEFINITIONS.clear()
        _DEFINITIONS[key] = (context, definition)
    return _DEFINITIONS[key]


_DEFINITIONS: dict[tuple[str, str], tuple[Any, Any]] = {}


def validate(df: pd.DataFrame, suite_name: str, docs_dir: Path | None = None, **suite_params: Any) -> ValidationSummary:
    """Validate `df` against the named suite (built with `suite_params`); optionally write Data Docs."""
    context, definition = _definition(suite_name, suite_params)
    result = definition.run(batch_parameters={"dataframe": df}, result_format="SUMMARY")
    raw = result.to_json_dict()
    failures = [
        Failure(
            expectation=r["expectation_config"]["type"],
            column=r["expectation_config"].get("kwargs", {}).get("column"),
            observed=_observed(r),
        )
        for r in raw["results"]
        if not r["success"]
    ]
    docs_path = _write_docs(context, definition, df, docs_dir) if docs_dir else None
    summary = ValidationSummary(
        suite=suite_name,
        success=bool(raw["success"]),
        rows=len(df),
        evaluated=len(raw["results"]),
        failures=failures,
        docs_path=docs_path,
        raw=raw,
    )
    log.info("data quality %s: %s", suite_name, "passed" if summary.success else f"{len(failures)} failed")
    return summary


def _write_docs(context: Any, definition: Any, df: pd.DataFrame, docs_dir: Path) -> Path:
    """Run the validation through a checkpoint that builds Data Docs into `docs_dir`; return index.html."""
    import great_expectations as gx

    site = f"site_{definition.name}"
    context.add_data_docs_site(
        site_name=site,
        site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{definition.name}_checkpoint",
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=[site])],
        )
    )
    checkpoint.run(batch_parameters={"dataframe": df})
    return docs_dir / "index.html"
