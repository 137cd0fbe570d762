"""Trend charts as inline SVG, drawn with matplotlib.

Deterministic on purpose (same numbers -> same bytes): `svg.hashsalt` fixes the ids
matplotlib would otherwise draw from uuid4, `metadata={"Date": None}` leaves out the time
of drawing, text stays text (`svg.fonttype = "none"`: small, searchable, readable by screen
readers). A `Figure` is used directly (no pyplot): no GUI backend, no global figure state.
The ids are prefixed per chart so that several charts in one HTML page never share one.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

PALETTE = ("#1f4e79", "#c55a11", "#548235", "#7f6000")
STYLE: dict[str, Any] = {
    "svg.hashsalt": "dap-agent",
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "font.size": 8.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#d9d9d9",
    "grid.linewidth": 0.6,
}
_ID = re.compile(r'\bid="([^"]+)"')


@dataclass(frozen=True)
class Series:
    label: str
    values: Sequence[float | int | None]


def line_chart(key: str, *, title: str, x_label: str, y_label: str, x: Sequence[str],
               series: Sequence[Series], y_format: Callable[[float], str],
               y_max: float | None = None, integers: bool = False) -> Markup:
    """An SVG line chart (one line per series, gaps where a month has no data); y tick
    labels through `y_format` (the report's locale: "55,5" in Dutch)."""
    style = dict(STYLE, **{"svg.hashsalt": f"dap-agent-{key}"})
    with rc_context(style):  # type: ignore[arg-type]  # rcParams keys are typed as literals
        # fixed margins: constrained layout would measure every label again (a third of the
        # drawing time) for a layout that is the same for every chart
        figure = Figure(figsize=(7.2, 2.7))
        figure.subplots_adjust(left=0.085, right=0.99, top=0.9, bottom=0.17)
        axes = figure.add_subplot()
        positions = list(range(len(x)))
        for colour, line in zip(PALETTE, series, strict=False):
            values = [math.nan if v is None else float(v) for v in line.values]
            axes.plot(positions, values, marker="o", markersize=3.5, linewidth=1.6,
                      color=colour, label=line.label)
        axes.set_title(title, loc="left", fontsize=10, fontweight="bold")
        axes.set_xlabel(x_label)
        axes.set_ylabel(y_label)
        axes.set_xticks(positions, list(x), rotation=0)
        axes.tick_params(axis="x", labelsize=7)
        axes.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: y_format(v)))
        if integers:
            axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlim(-0.5, len(x) - 0.5)
        if y_max is not None:
            axes.set_ylim(0, y_max)
        else:
            axes.set_ylim(bottom=0)
        if len(series) > 1:
            axes.legend(loc="lower left", fontsize=7.5, frameon=False, ncols=len(series))
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg",
                       metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    return _inline(buffer.getvalue(), key, title)


def _inline(svg: str, key: str, title: str) -> Markup:
    """The `<svg>` element alone, its ids made unique to this chart, labelled for readers."""
    svg = svg[svg.index("<svg"):]
    ids = set(_ID.findall(svg))
    svg = _ID.sub(lambda m: f'id="{key}-{m[1]}"', svg)
    for ident in sorted(ids, key=len, reverse=True):
        svg = svg.replace(f"url(#{ident})", f"url(#{key}-{ident})")
        svg = svg.replace(f'href="#{ident}"', f'href="#{key}-{ident}"')
    svg = re.sub(r'<svg (.*?)width="[^"]+" height="[^"]+"',
                 lambda m: f'<svg role="img" aria-label="{escape(title)}" class="chart" {m[1]}',
                 svg, count=1)
    return Markup(svg.strip())  # matplotlib's own SVG; it escapes the text it draws
