"""Figures, drawn with matplotlib's Agg canvas (no display, no global pyplot state): the
teacher's reliability diagram, the training-run plots (thresholds, selection, the class mix of
the selected samples, dev history, test per-class F1 and confusion) that ``llkd train``'s
report and the benchmark share.

matplotlib is an optional dependency (``pip install llkd[plots]``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from llkd.teacher.calibration import reliability_bins


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError("plots need matplotlib: pip install 'llkd[plots]'") from e
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    return path


def reliability_diagram(panels: Mapping[str, Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """One reliability diagram per panel, side by side, saved as a PNG.

    Each panel maps to ``{"bins": [{"low", "high", "accuracy", "confidence", "count"}, ...],
    "ece": float, "accuracy": float}`` and optionally ``"xlabel"`` (the shape of
    :func:`llkd.reporting.confidence.confidence_report`). Bars show the accuracy of the texts
    whose confidence falls in each bin, with their count at the bar's foot; the dashed diagonal is
    perfect calibration; dots mark each bin's mean confidence (the gap to the bar top is the
    miscalibration ECE averages)."""
    names = list(panels)
    fig = _figure(max(4.2 * len(names) + 0.4, 5.6), 4.9)
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
        ax.set_xlabel(panel.get("xlabel", "teacher confidence (max probability)"), fontsize=9)
        ax.set_title(f"{name}\naccuracy {panel['accuracy']:.3f}   ECE {panel['ece']:.3f}   n={n}", fontsize=10)
        ax.grid(axis="y", color="0.9", linewidth=0.8)
        ax.set_axisbelow(True)
    axes[0].set_ylabel("accuracy (bar numbers: texts in bin)", fontsize=9)
    # below the panels: a confident, accurate bin's bar reaches the top-left corner
    handles, names_ = axes[0].get_legend_handles_labels()
    fig.legend(handles, names_, loc="lower center", ncol=3, fontsize=7.5, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


# -- training runs ---------------------------------------------------------------------------
def read_steps(steps_jsonl: str | Path) -> list[dict[str, Any]]:
    """The trainer's step log (one JSON object per step); [] when there is none."""
    path = Path(steps_jsonl)
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def moving_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` steps, ignoring NaN (a step with nothing to average)."""
    v = np.asarray(values, dtype=float)
    ok = ~np.isnan(v)
    sums = np.convolve(np.where(ok, v, 0.0), np.ones(window))[: len(v)]
    counts = np.convolve(ok.astype(float), np.ones(window))[: len(v)]
    return np.divide(sums, counts, out=np.full(len(v), np.nan), where=counts > 0)


THRESHOLD_PANELS = (
    ("teacher_threshold", "teacher confidence threshold $\\tau^T(y)$", "confidence threshold"),
    ("student_threshold", "student uncertainty threshold $\\tau^S(y)$", "uncertainty threshold"),
)


def _step_axis(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _threshold_panel(ax: Any, rows: list[dict[str, Any]], key: str, labels: list[str], title: str, ylabel: str) -> None:
    step = [r["step"] for r in rows]
    raw = [r.get(key) for r in rows]
    if all(v is None or np.isscalar(v) for v in raw):  # one threshold for every class (fixed selector)
        ax.plot(step, [np.nan if v is None else v for v in raw], lw=1.4, color="C0", label="every class")
    else:
        values = np.asarray([v if v is not None and not np.isscalar(v) else [np.nan] * len(labels) for v in raw], dtype=float)
        glob = key.replace("threshold", "global")
        if any(glob in r for r in rows):
            # drawn first and wide: the top class's threshold equals it and is drawn on top
            ax.plot(step, [r.get(glob, np.nan) for r in rows], "--", color="0.55", lw=2.4, label="global level")
        for k, name in enumerate(labels):
            ax.plot(step, values[:, k], label=name, lw=1.2, color=f"C{k % 10}")
    ax.set_title(title, fontsize=10)
    _step_axis(ax)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def _selection_panel(ax: Any, rows: list[dict[str, Any]]) -> None:
    step = [r["step"] for r in rows]
    rate = np.asarray([r["selection_rate"] for r in rows], dtype=float)
    w = max(1, len(rate) // 20)
    ax.plot(step, rate, alpha=0.35 if w > 1 else 1.0, lw=1, color="C0", label="selection rate per step")
    if w > 1:
        ax.plot(step, moving_mean(rate, w), lw=1.6, color="C1", label=f"selection rate, mean of {w} steps")
    ax.plot(step, [r["data_usage"] for r in rows], lw=1.2, color="C2", label="data usage so far")
    ax.set_title("selection rate and data usage", fontsize=10)
    _step_axis(ax)
    ax.set_ylabel("share of batch / of pool")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def plot_thresholds(steps_jsonl: Path, labels: list[str], path: Path) -> Path | None:
    """The class-wise thresholds a selector logged (teacher and/or student side) and the
    selection rate over steps, side by side; None when the step log has no thresholds."""
    rows = read_steps(steps_jsonl)
    panels = [p for p in THRESHOLD_PANELS if any(p[0] in r for r in rows)]
    if not rows or not panels:
        return None
    fig = _figure(4.7 * (len(panels) + 1), 3.8)
    axes = fig.subplots(1, len(panels) + 1, squeeze=False)[0]
    for ax, (key, title, ylabel) in zip(axes, panels):
        _threshold_panel(ax, rows, key, labels, title, ylabel)
    _selection_panel(axes[-1], rows)
    return _save(fig, path)


def plot_selection(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Selection rate per step (raw and smoothed) and the share of the pool used so far."""
    if not rows:
        return None
    fig = _figure(6.0, 3.8)
    _selection_panel(fig.subplots(), rows)
    return _save(fig, path)


def plot_class_share(rows: list[dict[str, Any]], labels: list[str], pool_share: np.ndarray, path: Path) -> Path | None:
    """Share of each pseudo-label class among the selected samples over steps (a moving window,
    since a step selects a handful), against its share of the pool's pseudo-labels (dotted).
    A class climbing towards 1 is a selection collapsing onto it. Needs ``selected_per_class``
    in the step log; None without it."""
    rows = [r for r in rows if r.get("selected_per_class") is not None]
    if not rows:
        return None
    step = [r["step"] for r in rows]
    counts = np.asarray([r["selected_per_class"] for r in rows], dtype=float)
    # a window wide enough to hold ~20 selected samples: a step alone selects a handful
    per_step = counts.sum() / len(rows)
    w = int(min(max(len(rows) // 20, np.ceil(20 / per_step) if per_step else 1), max(1, len(rows) // 2)))
    window = np.stack([np.convolve(counts[:, k], np.ones(w))[: len(rows)] for k in range(len(labels))], axis=1)
    total = window.sum(axis=1, keepdims=True)
    share = np.divide(window, total, out=np.full_like(window, np.nan), where=total > 0)
    fig = _figure(7.2, 4.0)
    ax = fig.subplots()
    for k, name in enumerate(labels):
        ax.plot(step, share[:, k], lw=1.5, color=f"C{k % 10}", label=name)
        ax.axhline(pool_share[k], color=f"C{k % 10}", lw=1, ls=":")
    ax.plot([], [], color="0.4", lw=1, ls=":", label="share in the pool's\npseudo-labels")
    ax.set_ylim(0, 1.02)
    _step_axis(ax)
    ax.set_ylabel(f"share of the selected samples\n(last {w} step{'s' if w > 1 else ''})")
    ax.set_title("pseudo-label classes among the selected samples", fontsize=10)
    ax.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_class_mix(labels: list[str], shares: Mapping[str, np.ndarray], path: Path, title: str) -> Path:
    """Grouped bars: the share of each class in several sets (e.g. the pool's pseudo-labels and
    the samples ever selected)."""
    fig = _figure(max(5.5, 1.3 * len(labels) + 2.5), 3.8)
    ax = fig.subplots()
    x = np.arange(len(labels))
    width = 0.8 / max(len(shares), 1)
    for j, (name, values) in enumerate(shares.items()):
        bars = ax.bar(x + (j - (len(shares) - 1) / 2) * width, values, width, label=name, color=f"C{j}")
        ax.bar_label(bars, labels=[f"{v:.0%}" for v in values], fontsize=7, padding=1)
    ax.set_xticks(x, labels, fontsize=8, rotation=20 if len(labels) > 5 else 0)
    ax.set_ylabel("share of the set")
    ax.set_ylim(0, min(1.0, max(float(np.nanmax(v)) for v in shares.values()) * 1.25 + 0.02))
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(shares), frameon=False)  # below: bars may reach the top
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return _save(fig, path)


def plot_dev_history(history: Sequence[Mapping[str, Any]], path: Path, n_texts: int | None = None) -> Path | None:
    """Dev macro-F1 and accuracy after each epoch."""
    if not history:
        return None
    fig = _figure(5.6, 3.8)
    ax = fig.subplots()
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["macro_f1"] for h in history], "o-", label="macro-F1")
    ax.plot(epochs, [h["accuracy"] for h in history], "s--", label="accuracy", alpha=0.8)
    best = int(np.argmax([h["macro_f1"] for h in history]))
    ax.set_xlabel("epoch")
    ax.set_ylabel("score on the dev split")
    ax.set_ylim(0, 1.05)
    if len(epochs) <= 20:
        ax.set_xticks(epochs)
    ax.set_title("dev split after each epoch" + (f" ({n_texts} texts)" if n_texts else "")
                 + f"\nbest macro-F1 {history[best]['macro_f1']:.3f} after epoch {epochs[best]}", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_test_scores(labels: list[str], f1: Mapping[str, Sequence[float]], confusion: Sequence[Sequence[int]], path: Path,
                     confusion_of: str = "student") -> Path:
    """Left: per-class F1 of each model (e.g. teacher and student); right: one model's
    confusion matrix (rows gold, columns predicted), counts written in the cells."""
    cm = np.asarray(confusion, dtype=int)
    n = len(labels)
    fig = _figure(9.0 + 0.5 * n, max(4.2, 0.5 * n + 2.8))
    ax_f1, ax_cm = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1.0]})
    y = np.arange(n)
    height = 0.8 / max(len(f1), 1)
    for j, (name, values) in enumerate(f1.items()):
        bars = ax_f1.barh(y + (j - (len(f1) - 1) / 2) * height, values, height, label=name, color=f"C{j}")
        ax_f1.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=7, padding=2)
    ax_f1.set_yticks(y, labels, fontsize=8)
    ax_f1.invert_yaxis()  # first class on top, as in the confusion matrix
    ax_f1.set_xlim(0, 1.12)
    ax_f1.set_xlabel("F1 on the test split")
    ax_f1.set_title("per-class F1", fontsize=10)
    ax_f1.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=len(f1), frameon=False)  # below: bars reach 1.0
    ax_f1.grid(axis="x", alpha=0.3)
    ax_f1.set_axisbelow(True)
    ax_cm.imshow(cm, cmap="Blues")
    top = cm.max() if cm.size else 0
    for i in range(n):
        for j in range(n):
            ax_cm.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8, color="white" if cm[i, j] > top / 2 else "0.1")
    ax_cm.set_xticks(range(n), labels, fontsize=8, rotation=30, ha="right")
    ax_cm.set_yticks(range(n), labels, fontsize=8)
    ax_cm.set_xlabel("predicted")
    ax_cm.set_ylabel("gold")
    ax_cm.set_title(f"confusion matrix ({confusion_of})", fontsize=10)
    return _save(fig, path)


def plot_signal_vs_accuracy(series: dict[str, tuple[np.ndarray, np.ndarray]], xlabel: str, title: str, path: Path, bins: int = 10) -> Path | None:
    """Paper Figure 2 analogue: accuracy per bin of a signal (teacher confidence, student
    uncertainty), one line per dataset; marker size shows the bin's share of texts."""
    if not series:
        return None
    fig = _figure(5.2, 4)
    ax = fig.subplots()
    for k, (name, (signal, correct)) in enumerate(series.items()):
        b = [x for x in reliability_bins(signal, correct, bins) if x[3] > 0]
        xs = [(lo + hi) / 2 for lo, hi, _, _ in b]
        ax.plot(xs, [a for _, _, a, _ in b], "-", color=f"C{k}", label=name, lw=1.2)
        ax.scatter(xs, [a for _, _, a, _ in b], s=[8 + 300 * n / len(signal) for *_, n in b], color=f"C{k}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_budget_curve(curves: Mapping[str, Sequence[tuple[float, float]]], path: Path, xlabel: str = "teacher calls",
                      ylabel: str = "dev macro-F1", reference: Mapping[str, float] | None = None, title: str = "") -> Path | None:
    """Macro-F1 against teacher calls, one line per curve (a run's rounds, or a strategy's mean
    over seeds); ``reference``: horizontal lines (e.g. the full-pool student)."""
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    fig = _figure(6.4, 4.0)
    ax = fig.subplots()
    for k, (name, pts) in enumerate(curves.items()):
        x, y = zip(*pts)
        ax.plot(x, y, marker="o", ms=3, lw=1.5, color=f"C{k % 10}", label=name)
    for k, (name, value) in enumerate((reference or {}).items()):
        ax.axhline(value, color="0.3", lw=1, ls=["--", ":", "-."][k % 3], label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
