"""``plot_sweep``: a metric of a sweep's rows against one swept parameter, a line per value of another.

matplotlib is imported when a figure is drawn, never with the SDK: it is not a dependency.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def plot_sweep(rows: Sequence[dict[str, Any]], x: str = "depth", y: str = "log_marginal_likelihood",
               line: str | None = "w_std", *, ax: Any = None, path: str | None = None) -> Any:
    """Plot ``y`` (a metric column of ``Client.sweep``'s rows) against ``x`` (a swept parameter),
    one line per value of ``line`` (None: one line), each marking its points; rows with an
    ``error``, or without a number for ``y``, are left out. Draws on ``ax`` (default: a new
    figure's) and, given ``path``, saves the figure there. Returns the axes.
    """
    import matplotlib.pyplot as plt  # without a display, matplotlib draws with Agg on its own

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    lines: dict[str, list[tuple[Any, float]]] = {}
    for row in rows:
        if row.get("error") or row.get(y) is None:
            continue
        if x not in row or (line is not None and line not in row):
            missing = x if x not in row else line
            raise KeyError(f"the rows have no column {missing!r} (they have {', '.join(row)})")
        label = "" if line is None else f"{line} = {_text(row[line])}"
        lines.setdefault(label, []).append((row[x], float(row[y])))
    for label, points in lines.items():
        points.sort(key=lambda point: point[0])
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", ms=3, label=label or None)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    if line is not None and lines:
        ax.legend(fontsize=8)
    if path is not None:
        ax.figure.tight_layout()
        ax.figure.savefig(path, dpi=110)
    return ax


def _text(value: Any) -> str:
    """A legend's value: numbers as written short, an activation object as its JSON."""
    if isinstance(value, float):
        return f"{value:g}"
    return value if isinstance(value, str) else json.dumps(value)
