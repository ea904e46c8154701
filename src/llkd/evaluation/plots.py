"""Figures, drawn with matplotlib's Agg canvas (no display, no global pyplot state).

matplotlib is an optional dependency (``pip install llkd[plots]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError("plots need matplotlib: pip install 'llkd[plots]'") from e
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def reliability_diagram(panels: Mapping[str, Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """One reliability diagram per panel, side by side, saved as a PNG.

    Each panel maps to ``{"bins": [{"low", "high", "accuracy", "confidence", "count"}, ...],
    "ece": float, "accuracy": float}`` (the shape of
    :func:`llkd.evaluation.confidence.confidence_report`). Bars show the accuracy of the texts
    whose confidence falls in each bin, with their count at the bar's foot; the dashed diagonal is
    perfect calibration; dots mark each bin's mean confidence (the gap to the bar top is the
    miscalibration ECE averages)."""
    names = list(panels)
    fig = _figure(4.2 * len(names) + 0.4, 4.6)
    axes = fig.subplots(1, len(names), sharey=True, squeeze=False)[0]
    for ax, name in zip(axes, names):
        panel = panels[name]
        bins: Sequence[Mapping[str, Any]] = panel["bins"]
        n = sum(b["count"] for b in bins)
        ax.plot([0, 1], [0, 1], linestyle="--", color="0.45", linewidth=1, label="perfect calibration")
        full = [b for b in bins if b["count"]]
        widths = [b["high"] - b["low"] for b in full]
        lefts = [b["low"] for b in full]
        accs = [b["accuracy"] for b in full]
        ax.bar(lefts, accs, width=widths, align="edge", color="#4C72B0", edgecolor="white", linewidth=1, label="accuracy in bin")
        ax.scatter([b["low"] + (b["high"] - b["low"]) / 2 for b in full], [b["confidence"] for b in full],
                   color="#DD8452", zorder=3, s=18, label="mean confidence in bin")
        for b, left, w, acc in zip(full, lefts, widths, accs):
            inside = acc >= 0.09  # the count sits at the foot of its bar, or above a very short one
            ax.text(left + w / 2, 0.015 if inside else acc + 0.015, f"{b['count']}", ha="center", va="bottom",
                    fontsize=7.5, color="white" if inside else "0.15", fontweight="bold" if inside else "normal")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xticks([i / 10 for i in range(11)])
        ax.tick_params(labelsize=8)
        ax.set_xlabel("teacher confidence (max probability)", fontsize=9)
        ax.set_title(f"{name}\naccuracy {panel['accuracy']:.3f}   ECE {panel['ece']:.3f}   n={n}", fontsize=10)
        ax.grid(axis="y", color="0.9", linewidth=0.8)
        ax.set_axisbelow(True)
    axes[0].set_ylabel("accuracy (bar numbers: texts in bin)", fontsize=9)
    axes[0].legend(loc="upper left", fontsize=7.5, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
