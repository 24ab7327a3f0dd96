"""The demo's chart: a PNG drawn by matplotlib (when installed) and a self-contained HTML
page whose SVG is drawn here, so the page needs neither matplotlib nor the network.

Both draw the same three panels, built once from the results: speedup over serial per
workload and engine (with the ideal for each workload marked), start-up time, and memory
per worker.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .experiments import ENGINES
from .records import Results
from .table import ENGINE_LABELS, WORKLOAD_LABELS
from .verdicts import Verdict

__all__ = ["Panel", "panels", "write_html", "write_png"]

COLOURS = {"thread": "#4C72B0", "process": "#DD8452", "interpreter": "#55A868"}


@dataclass(frozen=True)
class Panel:
    """A grouped bar chart: ``values[g][s]`` is group ``g``'s bar for series ``s``."""

    title: str
    unit: str
    groups: Sequence[str]
    series: Sequence[str]  # engine names
    values: Sequence[Sequence[float | None]]
    ideals: Sequence[float | None]  # a mark over each group, or None
    fmt: Callable[[float], str]


_SHORT = {"cpu": "cpu", "io": "io", "native": "numpy", "cpu-ft": "cpu, no GIL"}


def _panel(title: str, unit: str, groups: Sequence[str], *,
           values: Sequence[Sequence[float | None]], ideals: Sequence[float | None],
           fmt: Callable[[float], str]) -> Panel:
    """Leave out the engines with no value at all (e.g. sub-interpreters where absent)."""
    keep = [s for s in range(len(ENGINES)) if any(row[s] is not None for row in values)]
    return Panel(title, unit, groups, [ENGINES[s] for s in keep],
                 [[row[s] for s in keep] for row in values], ideals, fmt)


def panels(results: Results) -> list[Panel]:
    s = results.settings
    workloads = [w for w in WORKLOAD_LABELS if any(t.workload == w for t in results.timings)]
    ideal = {"cpu": s.parallel, "native": s.parallel, "io": s.io_tasks,
             "cpu-ft": s.parallel}
    speedups = [[(t.speedup if (t := results.timing(w, e)) else None) for e in ENGINES]
                for w in workloads]
    starts = [results.startup(e) for e in ENGINES]
    return [
        _panel(f"speedup over serial ({s.cores} cores)", "×", [_SHORT[w] for w in workloads],
               values=speedups, ideals=[float(ideal[w]) for w in workloads],
               fmt=lambda v: f"{v:.1f}×"),
        _panel("start-up: pool to first result", "ms", [""],
               values=[[(x.warm * 1e3 if x and x.warm is not None else None) for x in starts]],
               ideals=[None], fmt=lambda v: f"{v:.1f} ms"),
        _panel("memory per worker", "MiB", [""],
               values=[[(x.memory / 2**20 if x and x.memory is not None else None)
                        for x in starts]],
               ideals=[None], fmt=lambda v: f"{v:.2f} MiB"),
    ]


# -- PNG -------------------------------------------------------------------------------

def write_png(results: Results, path: Path) -> None:
    """Draw the panels with matplotlib (ImportError when it is not installed)."""
    from matplotlib.figure import Figure

    drawn = panels(results)
    figure = Figure(figsize=(10, 3.4), dpi=80, layout="constrained")
    axes = figure.subplots(1, 3, width_ratios=[2.2, 1, 1])
    for ax, panel in zip(axes, drawn, strict=True):
        width = 0.8 / len(panel.series)
        for s, engine in enumerate(panel.series):
            xs = [g + (s - (len(panel.series) - 1) / 2) * width for g in range(len(panel.groups))]
            heights = [row[s] for row in panel.values]
            bars = ax.bar([x for x, h in zip(xs, heights, strict=True) if h is not None],
                          [h for h in heights if h is not None], width,
                          label=ENGINE_LABELS[engine], color=COLOURS[engine])
            ax.bar_label(bars, labels=[panel.fmt(h) for h in heights if h is not None],
                         fontsize=7, padding=1)
        for g, mark in enumerate(panel.ideals):
            if mark is not None:
                ax.hlines(mark, g - 0.45, g + 0.45, colors="black", linestyles="dashed",
                          linewidth=1)
        ax.set_xticks(range(len(panel.groups)), panel.groups)
        if list(panel.groups) == [""]:
            ax.legend(fontsize=8, loc="upper left")
        ax.set_title(panel.title, fontsize=10)
        ax.set_ylabel(panel.unit)
        ax.margins(y=0.15)
    axes[0].legend(fontsize=8, loc="upper left")
    axes[0].text(0.99, 0.98, "dashed: ideal", transform=axes[0].transAxes, ha="right",
                 va="top", fontsize=7)
    figure.suptitle(f"corework demo, CPython {results.python}", fontsize=11)
    figure.savefig(path)


# -- HTML ------------------------------------------------------------------------------

def _svg(panel: Panel, width: int = 420, height: int = 260) -> str:
    left, right, top, bottom = 40, 10, 30, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    known = [v for row in panel.values for v in row if v is not None]
    known += [m for m in panel.ideals if m is not None]
    top_value = max(known, default=1.0) * 1.15 or 1.0
    group_w = plot_w / max(1, len(panel.groups))
    bar_w = group_w * 0.8 / len(panel.series)

    def y(value: float) -> float:
        return top + plot_h * (1 - value / top_value)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="{html.escape(panel.title)}" font-family="sans-serif">',
             f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13">'
             f"{html.escape(panel.title)}</text>",
             f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" '
             f'y2="{top + plot_h}" stroke="#333"/>']
    for g, group in enumerate(panel.groups):
        x0 = left + g * group_w + group_w * 0.1
        for s, engine in enumerate(panel.series):
            value = panel.values[g][s]
            if value is not None:
                parts += _bar(panel, engine, value, x=x0 + s * bar_w, width=bar_w,
                              baseline=top + plot_h, y=y(value), named=not group)
        mark = panel.ideals[g]
        if mark is not None:
            parts.append(f'<line x1="{x0:.1f}" x2="{x0 + group_w * 0.8:.1f}" '
                         f'y1="{y(mark):.1f}" y2="{y(mark):.1f}" stroke="#000" '
                         f'stroke-dasharray="4 3"><title>ideal: {panel.fmt(mark)}</title></line>')
        parts.append(f'<text x="{left + (g + 0.5) * group_w:.1f}" y="{top + plot_h + 16}" '
                     f'text-anchor="middle" font-size="11">{html.escape(group)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _bar(panel: Panel, engine: str, value: float, *, x: float, width: float,
         baseline: float, y: float, named: bool) -> list[str]:
    """One bar from ``baseline`` up to ``y``, its value above it (and with ``named``, the
    engine below it: a panel of one group names each bar instead)."""
    label = ENGINE_LABELS[engine]
    parts = [f'<rect x="{x:.1f}" y="{y:.1f}" width="{width * 0.95:.1f}" '
             f'height="{baseline - y:.1f}" fill="{COLOURS[engine]}">'
             f"<title>{label}: {panel.fmt(value)}</title></rect>",
             f'<text x="{x + width / 2:.1f}" y="{y - 3:.1f}" '
             f'text-anchor="middle" font-size="9">{panel.fmt(value)}</text>']
    if named:
        parts.append(f'<text x="{x + width / 2:.1f}" y="{baseline + 16}" '
                     f'text-anchor="middle" font-size="11">{label}</text>')
    return parts


def _legend() -> str:
    items = "".join(f'<span><i style="background:{COLOURS[e]}"></i>{ENGINE_LABELS[e]}</span>'
                    for e in ENGINES)
    return f'<p class="legend">{items}<span>dashed line: ideal speedup</span></p>'


def write_html(results: Results, found: Sequence[Verdict], report: str, path: Path) -> None:
    """One page, no external resources: the charts as inline SVG, verdicts, the report."""
    rows = "".join(f'<tr class="{v.status.replace(" ", "-")}"><td>{html.escape(v.status)}</td>'
                   f"<td>{html.escape(v.claim)}</td><td>{html.escape(v.evidence)}</td></tr>"
                   for v in found)
    figures = "".join(f"<figure>{_svg(panel)}</figure>" for panel in panels(results))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>corework demo: the lesson, measured</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; }}
.legend span {{ margin-right: 1.2em; }}
.legend i {{ display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.3em; }}
table {{ border-collapse: collapse; }}
td {{ padding: 0.2em 0.8em; border-bottom: 1px solid #ddd; }}
.confirmed td:first-child {{ color: #1a7f37; }}
.not-confirmed td:first-child {{ color: #cf222e; }}
.not-measured td:first-child {{ color: #777; }}
pre {{ background: #f6f8fa; padding: 1em; overflow-x: auto; }}
</style></head><body>
<h1>corework demo: the threads-vs-processes lesson, measured</h1>
{_legend()}
{figures}
<h2>Verdicts</h2>
<table>{rows}</table>
<h2>The report</h2>
<pre>{html.escape(report)}</pre>
</body></html>
"""
    path.write_text(page, encoding="utf-8")
