"""Tables of the imbalance study (benchmarks/scripts/imbalance_grid.sh): per case, the teacher and every
student method under each calibration setting, mean over seeds.

Columns: macro-F1 on test as it is; for long-tailed pools also macro-F1 with the test split
weighted to the pool's class mix (`@pool`); macro-F1 on the dev split (carved from the pool
side, skewed like the pool: what settings are chosen on); and how far the predicted class mix
on test is from the gold mix (total variation).

Usage: python benchmarks/scripts/imbalance_table.py runs/imbalance-frozen [--md docs/results/imbalance-frozen.md]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

CONFIGS = {"old": "balanced + guard 1/C (old default)", "mean": "mean + guard to its shares (new, no dev)",
           "autodev": "auto on dev + guard to its prior (new, with dev)"}
METHODS = ["teacher", "all", "soft", "llkd", "llkd+guni"]


def load(root: Path) -> dict[tuple[str, str, str], list[dict]]:
    out: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for rec_path in sorted(root.glob("*/*/runs/*/*/*/seed*/record.json")):
        cfg, case = rec_path.parts[len(root.parts)], rec_path.parts[len(root.parts) + 1]
        rec = json.loads(rec_path.read_text())
        out[(case, cfg, rec["method"])].append(rec)
    return out


def tv(a: list[float], b: list[float]) -> float:
    return float(0.5 * np.abs(np.asarray(a) - np.asarray(b)).sum())


def cell(recs: list[dict], key: str) -> str:
    vals = [r[key] for r in recs if r.get(key) is not None]
    if not vals:
        return "-"
    return f"{np.mean(vals):.3f}" + (f" ±{np.std(vals):.3f}" if len(vals) > 1 else "")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("--md", type=Path)
    args = ap.parse_args()
    data = load(args.root)
    cases = sorted({c for c, _, _ in data}, key=lambda c: (("-ir" in c), c))
    lines = [f"Run folders: `{args.root}`; seeds per cell: " + ", ".join(sorted({str(len(v)) for (c, cfg, m), v in data.items() if m != 'teacher'})), ""]
    summary: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for case in cases:
        skewed = "-ir" in case
        lines += [f"### {case}", "", "| setting | method | seeds | test macro-F1 | " + ("@pool | " if skewed else "") + "dev macro-F1 | pred-vs-gold TV | data used |",
                  "|---|---|---:|---:|" + ("---:|" if skewed else "") + "---:|---:|---:|"]
        for cfg in CONFIGS:
            for m in METHODS:
                recs = data.get((case, cfg, m))
                if not recs:
                    continue
                share_tv = np.mean([tv(r["pred_shares"], r["gold_shares"]) for r in recs if "pred_shares" in r])
                row = [cfg, m, str(len(recs)), cell(recs, "macro_f1")] + ([cell(recs, "macro_f1_pool_prior")] if skewed else [])
                row += [cell(recs, "dev_macro_f1"), f"{share_tv:.3f}", cell(recs, "data_usage")]
                lines.append("| " + " | ".join(row) + " |")
                key = "macro_f1_pool_prior" if skewed else "macro_f1"
                summary[f"{cfg}/{m}"]["skewed" if skewed else "natural"].append(float(np.mean([r[key] for r in recs])))
                summary[f"{cfg}/{m}"]["dev"].append(float(np.mean([r["dev_macro_f1"] for r in recs if r.get("dev_macro_f1") is not None] or [np.nan])))
        lines.append("")
    lines += ["### Means over cases (natural: test macro-F1; long-tailed: test weighted to the pool's mix; dev: every case)", "",
              "| setting / method | natural | long-tailed | dev |", "|---|---:|---:|---:|"]
    for k, v in summary.items():
        lines.append(f"| {k} | {np.mean(v['natural']) if v['natural'] else float('nan'):.3f} | {np.mean(v['skewed']) if v['skewed'] else float('nan'):.3f} | {np.nanmean(v['dev']):.3f} |")
    text = "\n".join(lines) + "\n"
    if args.md:
        args.md.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
