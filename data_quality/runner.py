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
    result: Any = field(default=None, repr=False)  # the GX validation result (for Data Docs)
    suite_object: Any = field(default=None, repr=False)  # the GX suite it ran

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


def _columns(kwargs: dict[str, Any]) -> str | None:
    """The column an expectation checks, or its pair as "A,B"."""
    if "column" in kwargs:
        return str(kwargs["column"])
    if "column_A" in kwargs:
        return f"{kwargs['column_A']},{kwargs['column_B']}"
    return None


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


def validate(
    df: pd.DataFrame,
    suite_name: str,
    docs_dir: Path | None = None,
    docs_run: str = "validate",
    docs_batch: str | None = None,
    result_format: str = "SUMMARY",
    **suite_params: Any,
) -> ValidationSummary:
    """Validate `df` against the named suite (built with `suite_params`); optionally publish to Data Docs.

    With `docs_dir` the result joins the Data Docs site there (`data_quality.docs.publish`) as a run
    named `docs_run`; `docs_path` is then the result's page. `result_format="BOOLEAN_ONLY"` tells only
    which expectations failed, not what was observed, in about half the time (nor is the result kept
    in the context's store).
    """
    _, definition = _definition(suite_name, suite_params)
    if result_format == "BOOLEAN_ONLY":  # pass or fail only: the batch's own validator, no result stored
        batch = definition.data.get_batch(batch_parameters={"dataframe": df})
        result = batch.validate(definition.suite, result_format=result_format)
    else:
        result = definition.run(batch_parameters={"dataframe": df}, result_format=result_format)
    raw = result.to_json_dict()
    failures = [
        Failure(
            expectation=r["expectation_config"]["type"],
            column=_columns(r["expectation_config"].get("kwargs", {})),
            observed=_observed(r),
        )
        for r in raw["results"]
        if not r["success"]
    ]
    summary = ValidationSummary(
        suite=suite_name,
        success=bool(raw["success"]),
        rows=len(df),
        evaluated=len(raw["results"]),
        failures=failures,
        raw=raw,
        result=result,
        suite_object=definition.suite,
    )
    if docs_dir is not None:
        from data_quality.docs import publish

        summary.docs_path = publish(summary, docs_dir, run_name=docs_run, batch=docs_batch)
    log.info("data quality %s: %s", suite_name, "passed" if summary.success else f"{len(failures)} failed")
    return summary
