"""The report's plots: matplotlib figures rendered off-screen, returned as base64 PNG for the HTML.

Figures are built from ``matplotlib.figure.Figure`` directly, never through pyplot, so drawing a
report switches no global backend: inline plots in a notebook keep working after a check.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import stat
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from checks.html import number

__all__ = ["bars", "png"]
#: Okabe and Ito's blue and vermillion, told apart with every kind of colour blindness and in greys (red beside
#: steel blue was one dark grey to a protanope); a highlighted bar is hatched too, and its label says why
COLOR, HIGHLIGHT = "#0072B2", "#D55E00"
#: at most this many tick labels on the category axis (42 days at 7 pt were too small to read)
MAX_TICKS = 21
#: bars of a chart this short get their value written beside them (a bar of 1 beside one of 450 is not seen)
LABELLED_BARS = 12
DPI, FONT = 100, 9


def png(figure: Any) -> str:
    """The figure as a base64 PNG (and the figure closed)."""
    buffer = io.BytesIO()
    figure.tight_layout()
    title = figure.axes[0].get_title() if figure.axes else ""
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Title": title})  # as text too: tools can read it
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
    _cache_folder()
    from matplotlib.figure import Figure  # here, once its cache folder is settled
    from matplotlib.ticker import FuncFormatter

    figure = Figure(figsize=(7.5, height))
    ax = figure.subplots()
    hatches = ["//" if k in highlight else "" for k in labels]
    drawn = (ax.barh if horizontal else ax.bar)(labels, values, color=colors, hatch=hatches, edgecolor="white")
    (value_axis, label_axis) = (ax.xaxis, ax.yaxis) if horizontal else (ax.yaxis, ax.xaxis)
    value_axis.set_label_text(ylabel, fontsize=FONT)
    label_axis.set_label_text(xlabel, fontsize=FONT)
    value_axis.set_major_formatter(FuncFormatter(_tick))
    ax.tick_params(labelsize=FONT)
    if horizontal:
        ax.invert_yaxis()
    elif len(labels) > 8:
        ax.tick_params(axis="x", labelrotation=60)
        step = -(-len(labels) // MAX_TICKS)
        for n, tick in enumerate(ax.get_xticklabels()):
            tick.set_visible(n % step == 0)
    if len(labels) <= LABELLED_BARS:
        ax.bar_label(drawn, labels=[_tick(v) for v in values], padding=2, fontsize=FONT)
        if horizontal:  # room for the value of the longest bar
            ax.margins(x=0.12)
        else:
            ax.margins(y=0.12)
    ax.set_title(title, fontsize=FONT + 2)
    ax.grid(axis="x" if horizontal else "y", alpha=0.3)
    return png(figure)


def _tick(value: float, _position: Any = None) -> str:
    """A number on an axis or a bar as the report's tables and alt texts write it: ``60,000``, ``2.5``."""
    return str(number(float(value)))


def _cache_folder() -> None:
    """Under a home the job may not write (systemd's ProtectHome, a container's read-only root, HOME=/nonexistent),
    matplotlib warned twice in every check's log that it made a temporary folder, and built its font list again
    each time: it gets a folder of this user's own in the temp directory instead, kept between runs. Nothing
    changes when MPLCONFIGDIR is set, matplotlib already runs or its folders under the home can be written."""
    if "MPLCONFIGDIR" in os.environ or "matplotlib" in sys.modules:
        return
    try:
        for variable, default in (("XDG_CONFIG_HOME", ".config"), ("XDG_CACHE_HOME", ".cache")):
            folder = Path(os.environ.get(variable) or Path.home() / default, "matplotlib")
            folder.mkdir(parents=True, exist_ok=True)
            if not os.access(folder, os.W_OK):
                raise PermissionError(folder)
        return
    except (OSError, RuntimeError):  # RuntimeError: no HOME and no home in the user database
        pass
    own = Path(tempfile.gettempdir(), f"rebuild-matplotlib-{os.getuid()}")
    with contextlib.suppress(OSError):
        own.mkdir(mode=0o700, exist_ok=True)
        found = own.lstat()  # a folder another user made there could hold a matplotlibrc: never taken
        if stat.S_ISDIR(found.st_mode) and found.st_uid == os.getuid() and not found.st_mode & 0o077:
            os.environ["MPLCONFIGDIR"] = str(own)
