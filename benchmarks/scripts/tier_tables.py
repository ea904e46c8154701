"""Markdown tables for docs/results.md from benchmark folders (their runs.csv / record.json).

    python benchmarks/scripts/tier_tables.py bound runs/sup-ft runs/sup-fz300 runs/sup-fz2000
    python benchmarks/scripts/tier_tables.py variants runs/bench-frozen [more folders]

`bound`: the gold-label supervised bound per dataset, one column per folder.
`variants`: every student method of a frozen-tier grid, dev and test macro-F1 per dataset
(mean over seeds), the mean over datasets, and which method the dev split picks.
`claim`: issue 10's acceptance table from one or more bench folders (any mix of datasets):
LLKD vs the best baseline (all, soft, random, fixed, freematch) with paired-seed differences
and a per-seed bootstrap over test texts, LLKD's gradient samples as a share of all's, the
compute-matched baselines and the one-signal ablations beside it.

    python benchmarks/scripts/tier_tables.py claim runs/ft-qwen-*
    python benchmarks/scripts/tier_tables.py claim:llkd+bal runs/ft-qwen-*   (another LLKD variant as the target)

`stress`: noise suite rows (teacher noise x dataset x selector, test macro-F1 mean over seeds)
from one or more folders; clean rows come from any folder's un-noised runs of the same
selectors and seeds (e.g. a baselines folder), and the last column is each selector's worst
difference to `all`.

    python benchmarks/scripts/tier_tables.py stress runs/stress-frozen-2 runs/bench-frozen

`stress-dev`: the same table on the dev split (what a choice of variant may look at).

`steps`: step-log evidence for every selecting method (steps.jsonl of each run): samples kept per
step of the batch, steps that kept nothing, the student's mean normalised entropy over the first
and last tenth of training, and on the test split the largest predicted-class share against the
largest gold share (a collapse to one class shows as a share near 1).

    python benchmarks/scripts/tier_tables.py steps runs/ft2k-*
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from statistics import mean, stdev

DATASETS = ["csabstruct", "agnews", "mag", "emotion", "sst2"]


def records(folder: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("runs/*/*/*/seed*/record.json"))]


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{mean(values):.3f} ± {stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def bound(folders: list[str]) -> str:
    head = "| dataset | " + " | ".join(f"`{f}`" for f in folders) + " |"
    lines = [head, "|---|" + "---:|" * len(folders)]
    settings = []
    for f in folders:
        rs = [r for r in records(f) if r["method"] == "supervised"]
        if rs:
            r = rs[0]
            settings.append(f"`{f}`: {r.get('student_mode', 'finetune')}, pool {r['pool_size']}, test {r['test_size']}, {r['epochs']:g} epochs, seeds {sorted({x['seed'] for x in rs})}")
    for d in DATASETS:
        cells = []
        for f in folders:
            vals = [r["macro_f1"] for r in records(f) if r["method"] == "supervised" and r["dataset"] == d]
            cells.append(_ms(vals))
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {s}" for s in settings)


def variants(folders: list[str]) -> str:
    rs = [r for f in folders for r in records(f) if r["kind"] == "student"]
    by: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rs:
        by[(r["method"], r["dataset"])].append(r)
    methods = sorted({m for m, _ in by}, key=lambda m: (not m.startswith("llkd"), m))
    # datasets every method has reached: means over a common set only
    present = [d for d in DATASETS if all((m, d) in by for m in methods)]
    lines = ["| method | " + " | ".join(f"{d} dev / test" for d in present) + " | mean dev | mean test | data used | grad samples |",
             "|---|" + "---:|" * (len(present) + 4)]
    summary = []
    for m in methods:
        cells, devs, tests, usage, grads = [], [], [], [], []
        for d in present:
            group = by.get((m, d), [])
            dv = [r["dev_macro_f1"] for r in group if r.get("dev_macro_f1") is not None]
            tv = [r["macro_f1"] for r in group]
            cells.append(f"{mean(dv):.3f} / {mean(tv):.3f}" if dv and tv else "-")
            if dv and tv:
                devs.append(mean(dv))
                tests.append(mean(tv))
            usage += [r["data_usage"] for r in group if r.get("data_usage") is not None]
            grads += [r["gradient_samples"] for r in group if r.get("gradient_samples") is not None]
        md, mt = (mean(devs), mean(tests)) if devs else (float("nan"), float("nan"))
        summary.append((md, m))
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {md:.3f} | {mt:.3f} | {mean(usage):.1%} | {mean(grads):,.0f} |")
    llkd_like = [(d, m) for d, m in summary if m.startswith("llkd") and d == d]
    best = max(llkd_like) if llkd_like else None
    seeds = sorted({r["seed"] for r in rs})
    note = f"\nSeeds {seeds}; cells are means over seeds. Dev = gold-labelled split from the pool side (500 texts)."
    if best:
        note += f" The LLKD variant with the best mean dev macro-F1: **{best[1]}** ({best[0]:.3f})."
    return "\n".join(lines) + "\n" + note


BASELINES = ["all", "soft", "random", "fixed", "freematch"]
BESIDE = ["all@matched", "random@matched", "llkd-paper", "teacher_adaptive", "student_adaptive"]


def claim(folders: list[str], target: str = "llkd") -> str:
    import numpy as np

    from llkd_bench.datasets import load_dataset
    from llkd.evaluation.metrics import bootstrap_diff_ci

    rs = [r for f in folders for r in records(f)]
    by: dict[tuple[str, str], dict[int, dict]] = defaultdict(dict)
    for r in rs:
        by[(r["dataset"], r["method"])][r["seed"]] = r
    datasets = [d for d in DATASETS if (d, target) in by]
    beside = [m for m in BESIDE if any((d, m) in by for d in datasets)]
    head = ["dataset", "teacher", target, "grad share of all", "best baseline", "its F1", f"{target} − best (per seed)", "bootstrap (95%, per seed)", "≥ all − 0.02", *beside]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    holds, matches = 0, 0
    for d in datasets:
        mine = by[(d, target)]
        teacher = next(iter(by.get((d, "teacher"), {}).values()), None)
        base = {m: by[(d, m)] for m in BASELINES if (d, m) in by}
        best = max(base, key=lambda m: mean(r["macro_f1"] for r in base[m].values()))
        seeds = sorted(set(mine) & set(base[best]))
        diffs = [mine[k]["macro_f1"] - base[best][k]["macro_f1"] for k in seeds]
        cis = []
        r0 = mine[seeds[0]]
        data = load_dataset(d, None, r0["pool_size"], r0["test_size"], r0.get("split_seed", 0))
        gold = np.asarray(data.test.labels)
        for k in seeds:
            pa = Path(mine[k]["run_dir"]) / "test_probs.npy"
            pb = Path(base[best][k]["run_dir"]) / "test_probs.npy"
            if pa.exists() and pb.exists():
                lo, hi = bootstrap_diff_ci(gold, np.load(pa).argmax(1), np.load(pb).argmax(1), data.schema.num_labels, n=1000, seed=k)
                cis.append(f"[{lo:+.3f}, {hi:+.3f}]")
        share = mean(mine[k]["gradient_samples"] for k in mine) / mean(r["gradient_samples"] for r in by[(d, "all")].values()) if (d, "all") in by else float("nan")
        f_all = mean(r["macro_f1"] for r in by[(d, "all")].values()) if (d, "all") in by else float("nan")
        f_mine = mean(r["macro_f1"] for r in mine.values())
        ok = f_mine >= f_all - 0.02
        holds += ok
        matches += mean(diffs) >= 0 and share <= 0.5
        cells = [d, f"{teacher['macro_f1']:.3f}" if teacher else "-", _ms([r["macro_f1"] for r in mine.values()]), f"{share:.0%}", best,
                 _ms([r["macro_f1"] for r in base[best].values()]), ", ".join(f"{x:+.3f}" for x in diffs), " ".join(cis) or "-", "yes" if ok else "**no**"]
        cells += [_ms([r["macro_f1"] for r in by[(d, m)].values()]) if (d, m) in by else "-" for m in beside]
        lines.append("| " + " | ".join(cells) + " |")
    seeds_all = sorted({r["seed"] for r in rs})
    lines.append("")
    lines.append(f"Seeds {seeds_all}; F1 = test macro-F1, mean ± sd over seeds. {target} ≥ all − 0.02 on {holds}/{len(datasets)} datasets; "
                 f"{target} ≥ the best baseline on mean with ≤ 50% of all's gradient samples on {matches}/{len(datasets)}.")
    return "\n".join(lines)


# Runs made before llkd's default student threshold became `batch` name today's default
# llkd+batch; one column for both.
ALIASES = {"llkd+batch": "llkd"}


def stress(folders: list[str], metric: str = "macro_f1") -> str:
    rs = [r for f in folders for r in records(f) if r["kind"] == "student"]
    for r in rs:
        head, _, tail = r["method"].partition("/noise=")
        r["method"] = ALIASES.get(head, head) + (f"/noise={tail}" if tail else "")
    noisy = [r for r in rs if r.get("noise")]
    seeds = sorted({r["seed"] for r in noisy})
    selectors = list(dict.fromkeys(r["method"].split("/noise=")[0] for r in noisy))
    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in noisy)]
    cell: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    seen = set()
    for r in rs:
        sel = r["method"].split("/noise=")[0]
        key = (r.get("noise") or "none (clean)", r["dataset"], sel)
        if sel in selectors and r["seed"] in seeds and (key, r["seed"]) not in seen:
            seen.add((key, r["seed"]))
            if r.get(metric) is not None:
                cell[key].append(r[metric])
    tags = ["none (clean)"] + list(dict.fromkeys(r["noise"] for r in noisy))
    head = "| teacher noise | " + " | ".join(f"{d}: " + " / ".join(selectors) for d in datasets) + " | worst (selector − all) |"
    lines = [head, "|---|" + "---|" * (len(datasets) + 1)]
    for tag in tags:
        cells, worst = [], {}
        for d in datasets:
            vals = [mean(cell[(tag, d, sel)]) if cell.get((tag, d, sel)) else None for sel in selectors]
            cells.append(" / ".join(f"{v:.3f}" if v is not None else "-" for v in vals))
            base = vals[selectors.index("all")] if "all" in selectors else None
            for sel, v in zip(selectors, vals):
                if sel != "all" and v is not None and base is not None:
                    worst[sel] = min(worst.get(sel, 1.0), v - base)
        lines.append(f"| {tag} | " + " | ".join(cells) + " | " + ", ".join(f"{k} {v:+.3f}" for k, v in worst.items()) + " |")
    what = "dev macro-F1 (the pool side's gold split)" if metric == "dev_macro_f1" else "test macro-F1"
    return "\n".join(lines) + f"\n\nSeeds {seeds}; {what}, mean over seeds."


def steps(folders: list[str]) -> str:
    import numpy as np

    from llkd_bench.datasets import load_dataset

    rs = [r for f in folders for r in records(f) if r["kind"] == "student"]
    by: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rs:
        by[(r["dataset"], r["method"])].append(r)
    gold_top: dict[str, float] = {}
    lines = ["| dataset | method | kept per step (of batch) | steps keeping 0 | mean entropy, first → last tenth | top predicted share (gold top) |",
             "|---|---|---:|---:|---:|---:|"]
    for (d, m), group in sorted(by.items(), key=lambda kv: (DATASETS.index(kv[0][0]) if kv[0][0] in DATASETS else 99, kv[0][1])):
        kept, zero, first, last, top = [], [], [], [], []
        for r in group:
            run = Path(r["run_dir"])
            log = run / "steps.jsonl"
            if log.exists():
                rows = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
                if rows:
                    kept.append(mean(x["selected"] for x in rows))
                    zero.append(sum(x["selected"] == 0 for x in rows) / len(rows))
                    u = [x["mean_uncertainty"] for x in rows if x.get("mean_uncertainty") is not None]
                    if len(u) >= 10:
                        k = len(u) // 10
                        first.append(mean(u[:k]))
                        last.append(mean(u[-k:]))
            if (run / "test_probs.npy").exists():
                pred = np.load(run / "test_probs.npy").argmax(1)
                top.append(float(np.bincount(pred).max() / len(pred)))
                if d not in gold_top:
                    data = load_dataset(d, None, r["pool_size"], r["test_size"], r.get("split_seed", 0))
                    labels = np.asarray(data.test.labels)
                    gold_top[d] = float(np.bincount(labels).max() / len(labels))
        if not kept:
            continue
        batch = json.loads(group[0]["fingerprint"])["student"]["batch_size"]
        ent = f"{mean(first):.3f} → {mean(last):.3f}" if first else "-"
        tp = f"{max(top):.2f} ({gold_top.get(d, float('nan')):.2f})" if top else "-"
        lines.append(f"| {d} | {m} | {mean(kept):.1f} of {batch} | {mean(zero):.0%} | {ent} | {tp} |")
    return "\n".join(lines) + "\n\nMeans over seeds; the top predicted share is the largest over seeds."


if __name__ == "__main__":
    kind, *folders = sys.argv[1:]
    if kind in ("stress", "stress-dev"):
        print(stress(folders, "dev_macro_f1" if kind == "stress-dev" else "macro_f1"))
    elif kind.startswith("claim"):  # claim or claim:<method>, e.g. claim:llkd+bal
        print(claim(folders, kind.partition(":")[2] or "llkd"))
    elif kind == "steps":
        print(steps(folders))
    else:
        print(bound(folders) if kind == "bound" else variants(folders))
