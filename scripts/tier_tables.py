"""Markdown tables for docs/results.md from benchmark folders (their runs.csv / record.json).

    python scripts/tier_tables.py bound runs/sup-ft runs/sup-fz300 runs/sup-fz2000
    python scripts/tier_tables.py variants runs/bench-frozen

`bound`: the gold-label supervised bound per dataset, one column per folder.
`variants`: every student method of a frozen-tier grid, dev and test macro-F1 per dataset
(mean over seeds), the mean over datasets, and which method the dev split picks.
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


def variants(folder: str) -> str:
    rs = [r for r in records(folder) if r["kind"] == "student"]
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


if __name__ == "__main__":
    kind, *folders = sys.argv[1:]
    print(bound(folders) if kind == "bound" else variants(folders[0]))
