"""`learnstream report`: a PNG plot of the training runs per family and a short HTML summary beside it.

    png_path, html_path = write_report(settings, out_dir)

Read from the durable sources `learnstream status` uses (training_metrics.json, which has every run, and the
registry's served pointers), so a report can be written while `up` runs or long after it stopped. Runs hold
counts, losses and durations only: nothing in the report comes from a user.
"""

from __future__ import annotations

import html
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from learnstream.config import FAMILIES, Settings
from learnstream.registry import Registry
from learnstream.training_state import training_metrics

PNG_NAME = "training_runs.png"
HTML_NAME = "report.html"
# Rows per family in the HTML table (the newest); the plot shows every run.
TABLE_ROWS = 20
# (run field, axis label) for the plot's rows.
PLOTTED = (("loss", "eval loss"), ("samples", "samples"), ("time_s", "duration (s)"))
DECISION_STYLE = {"promoted": {"marker": "o", "color": "tab:blue"}, "rejected": {"marker": "x", "color": "tab:red"}}


def write_report(settings: Settings, out_dir: Path) -> tuple[Path, Path]:
    """Write <out_dir>/training_runs.png and <out_dir>/report.html (created or replaced); returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = training_metrics(settings.registry_dir)["runs"]
    by_family = {family: [r for r in runs if r["family"] == family] for family in FAMILIES}
    png_path, html_path = out_dir / PNG_NAME, out_dir / HTML_NAME
    _plot(by_family, png_path)
    registry = Registry(settings.registry_dir)
    served = {family: registry.served(family) for family in FAMILIES}
    html_path.write_text(_html(by_family, served), encoding="utf-8")
    return png_path, html_path


def _value(run: dict[str, Any], field: str) -> float:
    """NaN where a run has no value (an image run has no loss): matplotlib leaves a gap."""
    value = run.get(field)
    return math.nan if value is None else float(value)


def _plot(by_family: dict[str, list[dict[str, Any]]], path: Path) -> None:
    figure = Figure(figsize=(5.5 * len(by_family), 2.6 * len(PLOTTED)), layout="constrained")
    FigureCanvasAgg(figure)  # files only, no display: the Agg canvas renders the PNG
    axes = figure.subplots(len(PLOTTED), len(by_family), sharex="col", squeeze=False)
    for column, (family, runs) in enumerate(by_family.items()):
        axes[0][column].set_title(f"{family}: {len(runs)} run{'' if len(runs) == 1 else 's'}")
        axes[-1][column].set_xlabel("version")
        for row, (field, label) in enumerate(PLOTTED):
            ax = axes[row][column]
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            values = [_value(r, field) for r in runs]
            if all(math.isnan(v) for v in values):
                note = "not recorded for this family" if runs else "no runs yet"
                ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes, color="gray")
                ax.set_yticks([])
                if not runs:  # the column is shared: only an empty family loses its version ticks
                    ax.set_xticks([])
                continue
            ax.plot([r["version"] for r in runs], values, color="lightgray", zorder=1)
            for decision, style in DECISION_STYLE.items():
                chosen = [r for r in runs if r["decision"] == decision]
                ax.scatter([r["version"] for r in chosen], [_value(r, field) for r in chosen], label=decision,
                           zorder=2, **style)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # versions are whole numbers
    # One legend, on the first plot that has runs (a legend without runs would be empty).
    plotted = next((ax for ax in axes.flat if ax.get_legend_handles_labels()[0]), None)
    if plotted is not None:
        plotted.legend(loc="best", fontsize="small")
    figure.savefig(path, dpi=100)


def _cell(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return html.escape(str(value))


def _family_section(family: str, runs: list[dict[str, Any]], served: int | None) -> str:
    serving = "none" if served is None else f"version {served}"
    if not runs:
        return f"<h2>{family}</h2>\n<p>Serving {serving} · no training runs yet.</p>"
    promoted = sum(r["decision"] == "promoted" for r in runs)
    summary = f"Serving {serving} · {len(runs)} runs: {promoted} promoted, {len(runs) - promoted} rejected"
    shown = runs[-TABLE_ROWS:]
    caption = f"the newest {len(shown)} of {len(runs)} runs" if len(shown) < len(runs) else "every run"
    rows = "\n".join(
        f"<tr><td>{_cell(r['version'])}</td><td>{_cell(r['decision'])}</td><td>{_cell(r['samples'])}</td>"
        f"<td>{_cell(r.get('loss'))}</td><td>{_cell(r.get('time_s'), 3)}</td><td>{_cell(r.get('finished_at'))}</td>"
        "</tr>"
        for r in reversed(shown)
    )
    return (f"<h2>{family}</h2>\n<p>{summary} (last at {_cell(runs[-1].get('finished_at'))}).</p>\n"
            f"<table><caption>{caption}</caption>\n<tr><th>version</th><th>decision</th><th>samples</th>"
            f"<th>eval loss</th><th>duration (s)</th><th>finished</th></tr>\n{rows}\n</table>")


def _html(by_family: dict[str, list[dict[str, Any]]], served: dict[str, int | None]) -> str:
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = "\n".join(_family_section(f, runs, served[f]) for f, runs in by_family.items())
    return f"""<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>learnstream training report</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; }}
img {{ max-width: 100%; }}
table {{ border-collapse: collapse; }}
caption {{ text-align: left; color: #666; }}
th, td {{ padding: .2rem .8rem; border-bottom: 1px solid #ddd; text-align: right; }}
</style>
<h1>learnstream training report</h1>
<p>Generated {generated}. Rejected runs are versions the promotion gate did not serve.</p>
<img src="{PNG_NAME}" alt="eval loss, samples and duration per version, for each family">
{sections}
</html>
"""
