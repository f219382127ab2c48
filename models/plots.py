"""Evaluation plots as PNG files (matplotlib, Agg backend): curves, calibration, importance, SHAP, scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_curve


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pr_roc_curves(y: np.ndarray, scores: dict[str, np.ndarray], out_dir: Path) -> list[Path]:
    """Precision-recall and ROC curves of the model and the baselines on the test period."""
    plt = _plt()
    paths = []
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, s in scores.items():
        p, r, _ = precision_recall_curve(y, s)
        ax.plot(r, p, label=name)
    ax.axhline(float(np.mean(y)), color="grey", ls=":", label="random")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (test period)")
    ax.legend()
    paths.append(out_dir / "pr_curve.png")
    fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], color="grey", ls=":")
    ax.axvline(0.01, color="red", ls="--", lw=0.8, label="1% FPR")
    ax.set(xscale="log", xlim=(1e-4, 1), xlabel="false-positive rate (log)", ylabel="recall", title="ROC (test)")
    ax.legend()
    paths.append(out_dir / "roc_curve.png")
    fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)
    return paths


def calibration(y: np.ndarray, p: np.ndarray, out_dir: Path) -> Path:
    """Reliability diagram of the calibrated probability (quantile bins)."""
    plt = _plt()
    frac, mean = calibration_curve(y, p, n_bins=15, strategy="quantile")
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(mean, frac, marker="o", label="model")
    ax.plot([0, 1], [0, 1], color="grey", ls=":")
    ax.set(xscale="log", yscale="log", xlabel="predicted probability", ylabel="observed fraud rate")
    ax.set_title("Calibration (test period)")
    path = out_dir / "calibration.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def feature_importance(names: list[str], gain: np.ndarray, out_dir: Path, top: int = 25) -> Path:
    """Top features by total gain."""
    plt = _plt()
    order = np.argsort(gain)[::-1][:top][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.28 * top + 1))
    ax.barh([names[i] for i in order], gain[order])
    ax.set(xlabel="total gain", title=f"Feature importance (top {top})")
    path = out_dir / "feature_importance.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def shap_summary(names: list[str], contrib: np.ndarray, X: np.ndarray, out_dir: Path, top: int = 20) -> Path:
    """Beeswarm-style SHAP summary from `pred_contrib` (last column, the base value, dropped)."""
    plt = _plt()
    shap = contrib[:, :-1]
    order = np.argsort(np.abs(shap).mean(axis=0))[::-1][:top]
    rng = np.random.default_rng(0)
    fig, ax = plt.subplots(figsize=(7, 0.32 * top + 1))
    for row, j in enumerate(order[::-1]):
        x = X[:, j]
        finite = np.isfinite(x)
        color = np.full(len(x), 0.5)
        if finite.sum() > 1:
            lo, hi = np.nanpercentile(x[finite], [5, 95])
            color[finite] = np.clip((x[finite] - lo) / (hi - lo + 1e-12), 0, 1)
        jitter = rng.normal(0, 0.08, len(x))
        ax.scatter(shap[:, j], row + jitter, c=color, cmap="coolwarm", s=3, alpha=0.6, linewidths=0)
    ax.set_yticks(range(len(order)), [names[j] for j in order[::-1]])
    ax.axvline(0, color="grey", lw=0.8)
    ax.set(xlabel="SHAP value (margin; colour: feature value low→high, grey: missing)", title="SHAP summary")
    path = out_dir / "shap_summary.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def score_distribution(y: np.ndarray, p: np.ndarray, thresholds: tuple[float, float], out_dir: Path) -> Path:
    """Histogram of the calibrated score by class, with the review and decline thresholds."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.geomspace(max(float(p.min()), 1e-6), 1.0, 60)
    ax.hist(p[~y], bins=bins, alpha=0.6, density=True, label="legitimate")
    ax.hist(p[y], bins=bins, alpha=0.6, density=True, label="fraud")
    for t, name in zip(thresholds, ("review", "decline"), strict=True):
        ax.axvline(t, ls="--", color="black", lw=0.8)
        ax.text(t, ax.get_ylim()[1] * 0.9, name, rotation=90, va="top")
    ax.set(xscale="log", xlabel="calibrated fraud probability", ylabel="density", title="Scores by class (test)")
    ax.legend()
    path = out_dir / "score_distribution.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
