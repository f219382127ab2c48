"""What a model's MLflow run keeps from data quality: a link to its training-set validation, its drift reference.

Call inside an active run (`mlflow.start_run()`), from the training pipeline:

    summary = validate(frame, "training_set", docs_dir=docs_dir_for(data_dir), docs_run="train")
    ...
    with mlflow.start_run():
        link_validation(summary)                       # tags + the Data Docs page as an artifact
        log_drift_reference(X_train, feature_names,    # what `fraud monitor` compares traffic with
                            scores=valid_scores, decisions=valid_decisions)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from data_quality.drift import REFERENCE_ARTIFACT, DriftReference, build_reference
from data_quality.runner import ValidationSummary


def link_validation(summary: ValidationSummary, artifact_dir: str = "data_quality") -> None:
    """Tag the active run with the validation's outcome and Data Docs page; attach the page and summary."""
    import mlflow

    tags = {f"data_quality.{summary.suite}": "passed" if summary.success else "failed"}
    if summary.docs_path is not None:
        tags[f"data_quality.{summary.suite}.page"] = summary.docs_path.resolve().as_uri()
        mlflow.log_artifact(str(summary.docs_path), artifact_dir)
    mlflow.set_tags(tags)
    mlflow.log_dict(summary.to_dict(), f"{artifact_dir}/{summary.suite}.json")


def log_drift_reference(
    frame: pd.DataFrame,
    features: Sequence[str],
    scores: Any = None,
    decisions: Iterable[str] | None = None,
    source: str = "training set",
) -> DriftReference:
    """Build the drift reference from training features (and validation scores/decisions); log it to the run."""
    import mlflow

    reference = build_reference(frame, features, scores=scores, decisions=decisions, source=source)
    mlflow.log_text(reference.to_json(), REFERENCE_ARTIFACT)
    return reference
