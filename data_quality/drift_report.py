"""The drift report: one self-contained HTML page (plots embedded as PNG) for a `DriftResult`.

`render` builds the page in memory; the caller decides where it goes. Sections have stable ids
(`alerts`, `summary`, `score`, `psi`, `features`, `all-features`, `data-quality`) that tests look for.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from matplotlib.figure import Figure

from data_quality.drift import DriftResult, FeatureDrift

TOP_PLOTS = 6
TOP_BARS = 25
REFERENCE_COLOR = "#4c72b0"
LIVE_COLOR = "#dd8452"


@dataclass
class ReportContext:
    """What the page says besides the figures: the window, the model, the reference, the validation."""

    title: str = "Scoring traffic drift"
    generated_at: str = ""
    window: str = ""
    model_versions: Sequence[str] = ()
    reference_source: str = ""
    validation: str | None = None  # one-line outcome of the scoring_traffic suite
    validation_link: str | None = None  # relative link to its Data Docs page
    notes: list[str] = field(default_factory=list)


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _img(fig: Figure, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{_png(fig)}"/>'


def _labels(cuts: Sequence[float]) -> list[str]:
    """Bin labels: value ranges, then 'missing'."""

    def fmt(v: float) -> str:
        return f"{v:.3g}"

    if not cuts:
        return ["all", "missing"]
    labels = [f"<={fmt(cuts[0])}"]
    labels += [f"{fmt(a)}..{fmt(b)}" for a, b in itertools.pairwise(cuts)]
    return [*labels, f">{fmt(cuts[-1])}", "missing"]


def _shares_plot(d: FeatureDrift, width: float = 4.2, height: float = 2.6) -> Figure:
    fig = Figure(figsize=(width, height))
    ax = fig.add_subplot()
    labels = _labels(d.cuts)
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], d.expected, width=0.4, label="training", color=REFERENCE_COLOR)
    ax.bar([i + 0.2 for i in x], d.actual, width=0.4, label="live", color=LIVE_COLOR)
    ax.set_xticks(list(x), labels, rotation=60, ha="right", fontsize=6)
    ax.set_ylabel("share of rows", fontsize=7)
    ax.set_title(f"{d.name}  PSI {d.psi:.3f}", fontsize=9, color="#b00020" if d.breach else "black")
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7)
    return fig


def _psi_plot(features: Sequence[FeatureDrift], threshold: float) -> Figure:
    top = list(features[:TOP_BARS])[::-1]
    fig = Figure(figsize=(7.5, max(2.5, 0.22 * len(top) + 1)))
    ax = fig.add_subplot()
    ax.barh(
        [d.name for d in top],
        [d.psi for d in top],
        color=["#c44e52" if d.breach else REFERENCE_COLOR for d in top],
    )
    ax.axvline(threshold, color="#c44e52", linestyle="--", linewidth=1, label=f"alert threshold {threshold}")
    ax.set_xlabel("population stability index")
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def _rate_rows(result: DriftResult) -> str:
    rows = []
    for decision in ("approve", "review", "decline"):
        live = result.live_rates.get(decision)
        ref = result.reference_rates.get(decision)
        rows.append(
            f"<tr><td>{decision} rate</td><td>{'' if live is None else f'{live:.2%}'}</td>"
            f"<td>{'' if ref is None else f'{ref:.2%}'}</td></tr>"
        )
    return "".join(rows)


def render(result: DriftResult, ctx: ReportContext) -> str:
    """The whole report as an HTML string."""
    esc = html.escape
    t = result.thresholds
    if result.alerts:
        alerts = "<ul>" + "".join(f'<li class="alert">{esc(a)}</li>' for a in result.alerts) + "</ul>"
        status = f'<p class="status bad">DRIFT: {len(result.alerts)} alert(s)</p>'
    else:
        alerts = "<p>No threshold breached.</p>"
        status = '<p class="status ok">OK: no drift alert</p>'
    if not result.enough_rows:
        alerts += f"<p>Only {result.rows} rows (minimum {t.min_rows}): distribution checks not alerted.</p>"
    score_html = "<p>No reference score distribution.</p>"
    if result.score is not None:
        score_html = _img(_shares_plot(result.score, 7.5, 3.0), "score distribution")
    psi_html = _img(_psi_plot(result.features, t.psi), "PSI per feature") if result.features else ""
    tops = "".join(f'<div class="cell">{_img(_shares_plot(d), d.name)}</div>' for d in result.features[:TOP_PLOTS])
    table = "".join(
        f'<tr class="{"breach" if d.breach else ""}"><td>{esc(d.name)}</td><td>{d.psi:.4f}</td>'
        f"<td>{'ALERT' if d.breach else 'ok'}</td><td>{d.actual[-1]:.1%}</td><td>{d.expected[-1]:.1%}</td></tr>"
        for d in result.features
    )
    if ctx.validation is None:
        quality = "<p>Not validated.</p>"
    else:
        link = f' <a href="{esc(ctx.validation_link)}">Data Docs page</a>' if ctx.validation_link else ""
        quality = f"<pre>{esc(ctx.validation)}</pre><p>{link}</p>"
    notes = "".join(f"<p>{esc(n)}</p>" for n in ctx.notes)
    score_psi = f"{result.score.psi:.4f}" if result.score else "n/a"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(ctx.title)}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; max-width: 1100px; }}
h1 {{ margin-bottom: 4px; }} h2 {{ border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 28px; }}
table {{ border-collapse: collapse; font-size: 13px; }} td, th {{ border: 1px solid #ddd; padding: 3px 8px; }}
th {{ background: #f3f3f3; text-align: left; }} tr.breach td {{ background: #fde8e8; }}
.status {{ font-weight: bold; padding: 6px 10px; display: inline-block; border-radius: 4px; }}
.ok {{ background: #e6f4ea; color: #1e6b34; }} .bad {{ background: #fde8e8; color: #b00020; }}
.alert {{ color: #b00020; }} .grid {{ display: flex; flex-wrap: wrap; gap: 8px; }}
.meta {{ color: #555; font-size: 13px; }} .scroll {{ max-height: 420px; overflow-y: auto; display: inline-block; }}
</style></head>
<body>
<h1>{esc(ctx.title)}</h1>
<p class="meta">generated {esc(ctx.generated_at)} &middot; window {esc(ctx.window)} &middot;
model version(s) {esc(", ".join(ctx.model_versions) or "n/a")} &middot; reference {esc(ctx.reference_source)}</p>
{status}
<section id="alerts"><h2>Alerts</h2>{alerts}</section>
<section id="summary"><h2>Summary</h2>
<table><tr><th>measure</th><th>live window</th><th>reference (training / validation)</th></tr>
<tr><td>rows</td><td>{result.rows}</td><td></td></tr>
{_rate_rows(result)}
<tr><td>rows with a missing feature group</td><td>{result.missing_rate:.2%}</td><td>max {t.missing_rate:.0%}</td></tr>
<tr><td>degraded scoring (no online store)</td><td>{result.degraded_rate:.2%}</td>
<td>max {t.degraded_rate:.0%}</td></tr>
<tr><td>score PSI</td><td>{score_psi}</td><td>alert above {t.score_psi}</td></tr>
<tr><td>features over PSI {t.psi}</td><td>{len(result.breached)}</td><td>of {len(result.features)}</td></tr>
</table></section>
<section id="score"><h2>Score distribution</h2>{score_html}</section>
<section id="psi"><h2>Feature drift (PSI, top {TOP_BARS})</h2>{psi_html}</section>
<section id="features"><h2>Most drifted features</h2><div class="grid">{tops}</div></section>
<section id="all-features"><h2>All features</h2><div class="scroll"><table>
<tr><th>feature</th><th>PSI</th><th>status</th><th>missing (live)</th><th>missing (training)</th></tr>
{table}</table></div></section>
<section id="data-quality"><h2>Data quality of the window</h2>{quality}</section>
{notes}
</body></html>
"""
