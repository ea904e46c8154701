"""Benchmark output: CSV of every run, per-dataset markdown tables with LLKD's comparison to
the best baseline, plots, and results.md."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from llkd.evaluation.metrics import bootstrap_diff_ci
from llkd.reporting.plots import plot_signal_vs_accuracy, plot_thresholds  # noqa: F401  (shared with the run report; results.py imports them from here)

CSV_COLUMNS = [
    "dataset", "suite", "method", "selector", "kind", "teacher", "noise", "seed", "accuracy", "macro_f1",
    "dev_macro_f1", "student_mode", "data_usage", "sample_step_rate", "gradient_samples", "optimizer_updates", "steps", "sample_steps_seen",
    "keep_rate", "pool_label_acc", "train_s", "eval_s", "peak_rss_mb", "peak_gpu_mb", "pool_size", "test_size",
    "epochs", "max_length", "calibration", "split_seed", "pool_digest", "test_digest", "run_dir",
]
# Not "baselines" for "LLKD vs the best baseline": references, LLKD itself, the paper's rule
# and LLKD's one-signal ablations (teacher-only / student-only), which stand beside it.
NOT_BASELINES = {"llkd", "llkd-paper", "teacher", "supervised", "teacher_adaptive", "student_adaptive"}


def write_csv(records: Iterable[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in records:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_COLUMNS})
    return path


def _mean_std(values: list[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))], dtype=float)
    if not len(v):
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (dataset, teacher, method), in first-seen order."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["dataset"], r["teacher"], r["method"]), []).append(r)
    rows = []
    for (dataset, teacher, method), rs in groups.items():
        acc, acc_sd = _mean_std([r.get("accuracy") for r in rs])
        f1, f1_sd = _mean_std([r.get("macro_f1") for r in rs])
        row = {"dataset": dataset, "teacher": teacher, "method": method, "kind": rs[0].get("kind", "student"),
               "suite": rs[0].get("suite", ""), "seeds": len(rs), "accuracy": acc, "accuracy_std": acc_sd,
               "macro_f1": f1, "macro_f1_std": f1_sd}
        for key in ("dev_macro_f1", "data_usage", "gradient_samples", "optimizer_updates", "train_s", "peak_rss_mb", "pool_label_acc"):
            row[key] = _mean_std([r.get(key) for r in rs])[0]
        rows.append(row)
    return rows


def _fmt(x: Any, spec: str, scale: float = 1.0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x * scale, spec)


def _pm(mean: float, sd: float, n: int = 2) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.3f} ± {sd:.3f}" if n > 1 and sd == sd else f"{mean:.3f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| method | seeds | accuracy | macro-F1 | dev macro-F1 | data used | gradient samples | updates | train s | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['seeds']} | {_pm(r['accuracy'], r['accuracy_std'], r['seeds'])} | {_pm(r['macro_f1'], r['macro_f1_std'], r['seeds'])} | "
            f"{_fmt(r.get('dev_macro_f1'), '.3f')} | "
            f"{_fmt(r['data_usage'], '.1%')} | {_fmt(r['gradient_samples'], ',.0f')} | {_fmt(r['optimizer_updates'], ',.0f')} | "
            f"{_fmt(r['train_s'], '.0f')} | {_fmt(r['peak_rss_mb'], ',.0f')} |"
        )
    return "\n".join(lines)


def compare(records: list[dict[str, Any]], dataset: str, teacher: str, gold: np.ndarray | None = None, num_classes: int = 0,
            target: str = "llkd", bootstrap: int = 1000) -> dict[str, Any] | None:
    """LLKD vs the best student baseline (highest mean macro-F1) on one dataset: relative
    macro-F1, per-seed paired differences and, with test predictions, a bootstrap interval
    over test texts per seed."""
    rs = [r for r in records if r["dataset"] == dataset and r["teacher"] == teacher and r.get("suite", "baselines") == "baselines"]
    mine = {r["seed"]: r for r in rs if r["method"] == target}
    if not mine:
        return None
    by_method: dict[str, dict[int, dict[str, Any]]] = {}
    for r in rs:
        if r["method"] not in NOT_BASELINES and r.get("kind", "student") == "student":
            by_method.setdefault(r["method"], {})[r["seed"]] = r
    if not by_method:
        return None
    best = max(by_method, key=lambda m: np.mean([r["macro_f1"] for r in by_method[m].values()]))
    theirs = by_method[best]
    seeds = sorted(set(mine) & set(theirs))
    diffs = [mine[s]["macro_f1"] - theirs[s]["macro_f1"] for s in seeds]
    f1_mine = float(np.mean([mine[s]["macro_f1"] for s in seeds])) if seeds else float("nan")
    f1_best = float(np.mean([theirs[s]["macro_f1"] for s in seeds])) if seeds else float("nan")
    out: dict[str, Any] = {
        "dataset": dataset, "teacher": teacher, "target": target, "best_baseline": best, "seeds": seeds,
        "macro_f1": f1_mine, "best_macro_f1": f1_best,
        "relative_pct": 100.0 * (f1_mine - f1_best) / f1_best if f1_best else float("nan"),
        "diffs": diffs, "wins": sum(d > 0 for d in diffs), "losses": sum(d < 0 for d in diffs),
        "data_usage": float(np.mean([mine[s].get("data_usage") or 0 for s in seeds])) if seeds else float("nan"),
        "best_data_usage": float(np.mean([theirs[s].get("data_usage") or 0 for s in seeds])) if seeds else float("nan"),
        "cis": [],
    }
    if gold is not None and bootstrap:
        for s in seeds:
            pa, pb = _preds(mine[s]), _preds(theirs[s])
            if pa is not None and pb is not None and len(pa) == len(gold):
                out["cis"].append((s, *bootstrap_diff_ci(gold, pa, pb, num_classes, n=bootstrap, seed=s)))
    return out


def summary_table(rows: list[dict[str, Any]], comparisons: list[dict[str, Any]]) -> str:
    """One line per (dataset, teacher): the teacher's zero-shot score, LLKD, the best student
    baseline and the supervised bound, so the whole benchmark reads at a glance."""
    def row(dataset: str, teacher: str, method: str) -> dict[str, Any] | None:
        return next((r for r in rows if r["dataset"] == dataset and r["teacher"] == teacher and r["method"] == method
                     and r.get("suite", "baselines") == "baselines"), None)

    lines = ["| dataset | teacher | teacher F1 | LLKD F1 | LLKD data used | best baseline | its F1 | its data used | LLKD rel. to best | LLKD − teacher | supervised F1 | verdict |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    for c in comparisons:
        t, mine, sup = row(c["dataset"], c["teacher"], "teacher"), row(c["dataset"], c["teacher"], c["target"]), row(c["dataset"], c["teacher"], "supervised")
        t_f1 = t["macro_f1"] if t else float("nan")
        lines.append(
            f"| {c['dataset']} | {c['teacher']} | {_fmt(t_f1, '.3f')} | {_pm(mine['macro_f1'], mine['macro_f1_std'], mine['seeds']) if mine else '-'} | "
            f"{_fmt(c['data_usage'], '.1%')} | {c['best_baseline']} | {_fmt(c['best_macro_f1'], '.3f')} | {_fmt(c['best_data_usage'], '.1%')} | "
            f"{_fmt(c['relative_pct'], '+.1f')}% | {_fmt(c['macro_f1'] - t_f1, '+.3f')} | {_fmt(sup['macro_f1'], '.3f') if sup else '-'} | {verdict(c)} |")
    return "\n".join(lines)


def _preds(rec: dict[str, Any]) -> np.ndarray | None:
    p = Path(rec.get("run_dir", "")) / "test_probs.npy"
    return np.load(p).argmax(axis=1) if p.exists() else None


def verdict(c: dict[str, Any]) -> str:
    """method.md section 7: a difference is real when it holds across >= 3 paired seeds, or a
    bootstrap interval over test texts excludes zero (and no seed's interval says the opposite)."""
    n = len(c["seeds"])
    if not n:
        return "no paired seeds"
    tgt, best = c["target"], c["best_baseline"]
    if n >= 3 and (c["wins"] == n or c["losses"] == n):
        return f"{tgt} {'better' if c['wins'] == n else 'worse'} than {best} on all {n} paired seeds"
    above = sum(1 for _, lo, _ in c["cis"] if lo > 0)
    below = sum(1 for _, _, hi in c["cis"] if hi < 0)
    k = len(c["cis"])
    if above and below:
        return f"inconsistent: the interval is above zero on {above} and below zero on {below} of {k} seeds; no real difference"
    if above or below:
        word = "better" if above else "worse"
        return f"{tgt} {word} than {best}: bootstrap interval excludes zero on {above or below} of {k} seed(s), none the other way" + (" (a single seed only)" if n < 3 else "")
    if n < 3:
        return f"not established: {n} seed(s) (need >= 3 paired seeds) and every bootstrap interval includes zero"
    return f"not established: {c['wins']} wins / {c['losses']} losses over {n} seeds, every bootstrap interval includes zero"


def comparison_text(c: dict[str, Any]) -> str:
    lines = [
        f"- LLKD macro-F1 {c['macro_f1']:.3f} with {c['data_usage']:.1%} of the pool vs best baseline **{c['best_baseline']}** "
        f"{c['best_macro_f1']:.3f} ({c['best_data_usage']:.1%} of the pool): relative {c['relative_pct']:+.1f}%.",
        f"- Paired by seed (LLKD − {c['best_baseline']}): " + ", ".join(f"seed {s}: {d:+.3f}" for s, d in zip(c["seeds"], c["diffs"])) + ".",
    ]
    if c["cis"]:
        lines.append("- 95% bootstrap interval over test texts: " + ", ".join(f"seed {s}: [{lo:+.3f}, {hi:+.3f}]" for s, lo, hi in c["cis"]) + ".")
    if c["best_data_usage"] == 0:
        lines.append(f"- Note: the best baseline {c['best_baseline']} selected no sample (no optimiser update): its score is an untrained classifier head's.")
    lines.append(f"- Verdict: {verdict(c)}.")
    return "\n".join(lines)


# -- plots -----------------------------------------------------------------------------------
def _plt():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_f1_vs_data(rows: list[dict[str, Any]], path: Path) -> Path | None:
    rows = [r for r in rows if r["kind"] == "student" and r["suite"] == "baselines" and r["data_usage"] == r["data_usage"]]
    if not rows:
        return None
    plt = _plt()
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.8), squeeze=False)
    markers = "os^vDPX*<>"
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for ax, ds in zip(axes[0], datasets):
        for r in (r for r in rows if r["dataset"] == ds):
            k = methods.index(r["method"])
            ax.errorbar(100 * r["data_usage"], r["macro_f1"], yerr=r["macro_f1_std"], fmt=markers[k % len(markers)],
                        color=f"C{k % 10}", label=r["method"], ms=7 if r["method"] == "llkd" else 5, capsize=2)
        ax.set_title(ds)
        ax.set_xlabel("data used (% of pool)")
        ax.set_ylabel("macro-F1")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8), fontsize=8)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
