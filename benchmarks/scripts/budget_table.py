"""Tables and plots of the budget curves (llkd bench-budget): per dataset, every acquisition
strategy's test and dev macro-F1 at each budget, the full-pool llkd student beside it, the area
under each curve, the budget at which a strategy reaches the full-pool student, and the
student compute each side spent. The default strategy is chosen on the dev curves only.

Usage: python benchmarks/scripts/budget_table.py runs/budget [--md docs/results/budget.md]
       [--json docs/results/budget.json] [--plot docs/results/budget_curves.png]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

TOLERANCE = 0.005  # "reaches the full-pool student": mean test macro-F1 within this


def load(root: Path) -> dict[str, dict[str, dict[int, dict[str, Any]]]]:
    """dataset -> strategy -> seed -> record."""
    out: dict[str, dict[str, dict[int, dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    for path in sorted(root.glob("*/*/seed*/record.json")):
        rec = json.loads(path.read_text())
        out[rec["dataset"]][rec["strategy"]][int(rec["seed"])] = rec
    return out


def curve(recs: dict[int, dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(shares [P], values [S, P]) over seeds; the points every seed has."""
    seeds = sorted(recs)
    shares = np.asarray([p["share"] for p in recs[seeds[0]]["points"]])
    vals = np.asarray([[p[key] for p in recs[s]["points"]] for s in seeds], dtype=float)
    return shares, vals


def area(shares: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Normalised area under each seed's curve over the share of the pool asked (trapezoid on
    a log2 axis: every doubling of the budget weighs the same), per seed."""
    x = np.log2(shares)
    widths = np.diff(x)
    return ((values[:, 1:] + values[:, :-1]) / 2 * widths).sum(axis=1) / (x[-1] - x[0])


def summarise(data: dict[str, dict[str, dict[int, dict[str, Any]]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, by_strategy in sorted(data.items()):
        full = by_strategy.get("full", {})
        full_test = float(np.mean([r["test_macro_f1"] for r in full.values()])) if full else None
        full_dev = float(np.mean([r["dev_macro_f1"] for r in full.values()])) if full else None
        rows = {}
        for strategy, recs in sorted(by_strategy.items()):
            if strategy == "full":
                continue
            shares, test = curve(recs, "test_macro_f1")
            _, dev = curve(recs, "dev_macro_f1")
            _, secs = curve(recs, "train_seconds")
            _, grads = curve(recs, "gradient_samples")
            mean_test = test.mean(axis=0)
            reach = next((i for i, v in enumerate(mean_test) if full_test is not None and v >= full_test - TOLERANCE), None)
            rows[strategy] = {
                "seeds": sorted(recs), "shares": shares.tolist(), "calls": [p["calls"] for p in recs[sorted(recs)[0]]["points"]],
                "test": mean_test.tolist(), "test_std": test.std(axis=0).tolist(), "dev": dev.mean(axis=0).tolist(),
                "test_auc": float(area(shares, test).mean()), "dev_auc": float(area(shares, dev).mean()),
                "reach_share": None if reach is None else float(shares[reach]),
                # the loop retrains every round: its student compute up to each point, summed
                "round_seconds_cum": np.cumsum(secs.mean(axis=0)).tolist(), "round_gradient_samples_cum": np.cumsum(grads.mean(axis=0)).tolist(),
            }
        if not rows:
            continue
        out[name] = {"pool_size": next(iter(next(iter(by_strategy.values())).values()))["pool_size"], "full_test": full_test, "full_dev": full_dev,
                     "full_seconds": float(np.mean([r["train_seconds"] for r in full.values()])) if full else None,
                     "full_gradient_samples": float(np.mean([r["gradient_samples"] for r in full.values()])) if full else None,
                     "full_seeds": sorted(full), "strategies": rows}
    strategies = sorted({s for d in out.values() for s in d["strategies"]})
    complete = [d for d in out.values() if set(d["strategies"]) == set(strategies)]  # compared on the same datasets only
    dev_auc = {s: float(np.mean([d["strategies"][s]["dev_auc"] for d in complete])) for s in strategies} if complete else {}
    chosen = max(dev_auc, key=dev_auc.get) if dev_auc else None
    return {"datasets": out, "mean_dev_auc": dev_auc, "chosen_on_dev": chosen, "tolerance": TOLERANCE}


def markdown(summary: dict[str, Any], command: str) -> str:
    chosen = summary["chosen_on_dev"]
    lines = [f"Made by `{command}`. Test and dev macro-F1, mean over seeds; `AUC`: normalised area under the curve over the share of the pool "
             f"asked (log axis). Chosen on dev (mean dev AUC over datasets): **{chosen}**.", "",
             "| strategy | mean dev AUC |", "|---|---:|"]
    lines += [f"| {s} | {v:.4f} |" for s, v in sorted(summary["mean_dev_auc"].items(), key=lambda kv: -kv[1])] + [""]
    for name, d in summary["datasets"].items():
        any_row = next(iter(d["strategies"].values()))
        heads = [f"{s:.1%} ({c})" for s, c in zip(any_row["shares"], any_row["calls"])]
        full = "-" if d["full_test"] is None else f"{d['full_test']:.4f}"
        lines += [f"### {name} (pool {d['pool_size']}; full-pool llkd student: test {full}, {d['full_seconds'] or 0:.0f} s, "
                  f"{d['full_gradient_samples'] or 0:.0f} gradient samples; seeds {d['full_seeds']})", "",
                  "| strategy | " + " | ".join(heads) + " | test AUC | dev AUC | reaches full-pool (-0.005) at | round students, summed to the last budget |",
                  "|---|" + "---:|" * (len(heads) + 4)]
        for s, r in sorted(d["strategies"].items(), key=lambda kv: -kv[1]["dev_auc"]):
            mark = f"**{s}**" if s == chosen else s
            reach = "-" if r["reach_share"] is None else f"{r['reach_share']:.1%}"
            lines.append(f"| {mark} | " + " | ".join(f"{v:.4f}" for v in r["test"]) + f" | {r['test_auc']:.4f} | {r['dev_auc']:.4f} | {reach} | "
                         f"{r['round_seconds_cum'][-1]:.0f} s, {r['round_gradient_samples_cum'][-1]:.0f} grad |")
        lines.append("")
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> None:
    from llkd.reporting.plots import _figure, _save

    names = list(summary["datasets"])
    fig = _figure(4.0 * len(names), 3.6)
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    for ax, name in zip(axes, names):
        d = summary["datasets"][name]
        for k, (s, r) in enumerate(sorted(d["strategies"].items())):
            ax.plot(np.asarray(r["shares"]) * 100, r["test"], marker="o", ms=3, lw=2.2 if s == summary["chosen_on_dev"] else 1.2,
                    color=f"C{k % 10}", label=s, ls="-" if s != "random" else "--")
        if d["full_test"] is not None:
            ax.axhline(d["full_test"], color="0.2", lw=1, ls=":", label="full pool")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("% of the pool asked (teacher calls)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test macro-F1")
    axes[-1].legend(fontsize=7)
    _save(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("--md", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args()
    summary = summarise(load(args.root))
    text = markdown(summary, f"python benchmarks/scripts/budget_table.py {args.root}")
    print(text)
    if args.md:
        args.md.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    if args.plot:
        plot(summary, args.plot)


if __name__ == "__main__":
    main()
