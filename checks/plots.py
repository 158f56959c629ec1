"""The report's plots: matplotlib figures rendered off-screen, returned as base64 PNG for the HTML.

Figures are built from ``matplotlib.figure.Figure`` directly, never through pyplot, so drawing a
report switches no global backend: inline plots in a notebook keep working after a check.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

__all__ = ["bars", "png"]
COLOR, HIGHLIGHT = "#3b6ea5", "#c0392b"


def png(figure: Any) -> str:
    """The figure as a base64 PNG (and the figure closed)."""
    buffer = io.BytesIO()
    figure.tight_layout()
    title = figure.axes[0].get_title() if figure.axes else ""
    figure.savefig(buffer, format="png", dpi=90, metadata={"Title": title})  # as text too: tools can read it
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def bars(data: Mapping[str, float], title: str, xlabel: str, ylabel: str,
         highlight: Sequence[str] = (), horizontal: bool = False) -> str | None:
    """A bar chart of ``data`` (label -> value) as base64 PNG; None when there is nothing to show."""
    if not data:
        return None
    labels, values = [str(k) for k in data], [float(v) for v in data.values()]
    colors = [HIGHLIGHT if k in highlight else COLOR for k in labels]
    # two $ in a label (a column "net_$_usd_$") are mathtext to matplotlib: drawn as a formula, or an error
    # that failed the whole check; escaped, a $ is drawn as itself
    labels = [label.replace("$", r"\$") for label in labels]
    height = max(2.6, 0.3 * len(labels)) if horizontal else 3.0
    figure = Figure(figsize=(7.5, height))
    ax = figure.subplots()
    if horizontal:
        ax.barh(labels, values, color=colors)
        ax.invert_yaxis()
        ax.set_xlabel(ylabel)
        ax.set_ylabel(xlabel)
    else:
        ax.bar(labels, values, color=colors)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if len(labels) > 8:
            ax.tick_params(axis="x", labelrotation=60, labelsize=7)
    ax.set_title(title)
    ax.grid(axis="x" if horizontal else "y", alpha=0.3)
    return png(figure)
