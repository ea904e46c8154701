"""Write everything a benchmark run produced: runs.csv, tables/<dataset>.md, plots/*.png,
provenance.json and results.md."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

import numpy as np

from llkd_bench.report import (
    aggregate,
    compare,
    comparison_text,
    markdown_table,
    plot_f1_vs_data,
    plot_signal_vs_accuracy,
    plot_thresholds,
    summary_table,
    write_csv,
)
from llkd_bench.runner import Bench
from llkd.hardware import cpu_summary


def _rel(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def write_outputs(bench: Bench, command: str, started: float, wall_s: float) -> Path:
    s = bench.s
    out = s.output
    out.mkdir(parents=True, exist_ok=True)
    (out / "plots").mkdir(exist_ok=True)
    (out / "tables").mkdir(exist_ok=True)
    records = bench.records
    write_csv(records, out / "runs.csv")
    prov = bench.provenance()
    (out / "provenance.json").write_text(json.dumps(prov, indent=1))
    rows = aggregate(records)
    first_teacher = bench.teacher_list()[0]

    md: list[str] = [
        "# LLKD benchmark results",
        "",
        f"- Date: {_dt.datetime.fromtimestamp(started).isoformat(timespec='seconds')}; wall time {wall_s / 60:.1f} min.",
        f"- Command: `{command}`",
        *([f"- {sum(1 for r in records if r.get('reused'))} of {len(records)} runs were reused from an earlier invocation with identical settings "
            "(their record.json); their train times are from that invocation, the wall time above is this one's."]
          if any(r.get("reused") for r in records) else []),
        f"- Mode: {'quick' if s.quick else 'full'}, student tier `{s.student_mode}`; suites: {', '.join(s.suites)}; seeds {s.seeds}; pool {s.pool_size}, test {s.test_size}, dev {s.dev_size} (gold, pool side, for choosing settings) per dataset (split seed {s.split_seed}).",
        f"- Student `{s.student}` ({s.student_mode}, dtype {s.student_dtype}), {s.epochs:g} epoch(s), batch {s.batch_size}, encoder lr {s.lr:g}, head lr {s.resolved_head_lr():g}, max_length {s.max_length}; teacher calibration `{s.calibration}` (pool reference, no gold).",
        f"- CPU: {cpu_summary()}.",
        "- Every student method: same student, optimiser, schedule, epochs and seeds; only the selector differs. "
        "`random` keeps LLKD's measured data usage of the same seed. `teacher` = zero-shot on the test split; `supervised` = selector `all` on gold labels (upper bound).",
        "- Data used = distinct pool samples ever selected / pool size. Gradient samples = sample-steps that got a backward pass. "
        "Peak RSS is the whole benchmark process (it includes everything loaded before the run), so it compares runs only roughly.",
        "",
        "## Datasets and teachers",
        "",
        "| dataset | teacher | answers from | pool | test | pool digest | test digest | labels (verbalizers) |",
        "|---|---|---|---:|---:|---|---|---|",
    ]
    for name, p in prov["datasets"].items():
        for t, info in p["teachers"].items():
            verb = ", ".join(f"{a}" if a == b else f"{a} ({b})" for a, b in zip(p["labels"], p["verbalizers"]))
            src = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in info["answers_from"].items() if v)
            md.append(f"| {name} | {t} | {src} | {p['pool_size']} | {p['test_size']} | `{p['pool_digest']}` | `{p['test_digest']}` | {verb} |")
    md.append("")
    md.append("Split files, sizes and digests are in `provenance.json` (digest = SHA-256 over the texts' keys, in order).")
    md.append("")

    # -- suite 1 ------------------------------------------------------------------------------
    comparisons = []
    sections: list[str] = []
    for name in bench.datasets:
        for teacher in bench.teacher_list():
            drows = [r for r in rows if r["dataset"] == name and r["teacher"] == teacher and r["suite"] == "baselines"]
            if not drows:
                continue
            title = f"{name}" + (f" (teacher {teacher})" if teacher != first_teacher else "")
            table = markdown_table(drows)
            gold = bench.test_gold.get(name)
            c = compare(records, name, teacher, gold, bench.datasets[name].schema.num_labels, bootstrap=500)
            teacher_row = next((r for r in drows if r["method"] == "teacher"), None)
            text = [f"## {title}", "", table, ""]
            if c:
                comparisons.append(c)
                text.append(comparison_text(c))
                if teacher_row:
                    text.append(f"- Student (LLKD) vs teacher zero-shot: {c['macro_f1']:.3f} vs {teacher_row['macro_f1']:.3f} macro-F1 "
                                f"(teacher pseudo-label accuracy on the pool: {teacher_row['pool_label_acc']:.1%}).")
                text.append("")
            (out / "tables" / f"{_slug(name)}{'' if teacher == first_teacher else '.' + _slug(teacher)}.md").write_text("\n".join(text) + "\n")
            sections += text
    if comparisons:
        md += ["## Summary", "", summary_table(rows, comparisons), "",
               "F1 = macro-F1 on the test split, mean over seeds (± std). Best baseline = the student baseline with the highest mean macro-F1 "
               "(teacher and supervised rows excluded). Verdict rule (method.md section 7): all paired seeds agree, or a bootstrap interval over test texts excludes zero.", ""]
    md += sections

    # -- suite 2 and next checks ----------------------------------------------------------------
    for suite, heading in (("sensitivity", "Threshold sensitivity (suite 2)"), ("variants", "LLKD variants (method.md 8; choose on dev macro-F1, never on test)"),
                           ("noise", "Injected teacher noise")):
        if suite not in s.suites:
            continue
        if suite == "variants":
            srows = [r for r in rows if r["suite"] == "variants" or (r["suite"] == "baselines" and r["method"] in ("llkd", "all", "soft", "teacher_adaptive", "student_adaptive"))]
        elif suite == "sensitivity":
            srows = [r for r in rows if r["suite"] == "sensitivity" or (r["suite"] == "baselines" and r["method"] in ("llkd", "teacher_adaptive", "student_adaptive"))]
        else:
            srows = [r for r in rows if r["suite"] == "noise" or (r["suite"] == "baselines" and r["method"] in s.noise_selectors)]
        if not srows:
            continue
        md += [f"## {heading}", ""]
        if suite == "noise":
            md.append("Noise flips a share of pool pseudo-labels before training (the flipped row keeps its confidence: old and new label probabilities are swapped). "
                      "`pool label acc` is the share of pool pseudo-labels that match gold after the flip (analysis only).")
            md.append("")
        for name in bench.datasets:
            drows = [r for r in srows if r["dataset"] == name and r["teacher"] == first_teacher]
            if drows:
                md += [f"### {name}", "", markdown_table(drows)]
                if suite == "noise":
                    md.append("")
                    md.append("pool label acc: " + ", ".join(f"{r['method']} {r['pool_label_acc']:.1%}" for r in drows if r["pool_label_acc"] == r["pool_label_acc"]))
                md.append("")

    # -- plots ----------------------------------------------------------------------------------
    plots: list[tuple[str, Path]] = []
    p = plot_f1_vs_data(rows, out / "plots" / "f1_vs_data.png")
    if p:
        plots.append(("Macro-F1 vs data used (suite 3, efficiency; error bars: std over seeds)", p))
    conf_series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    unc_series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, data in bench.datasets.items():
        gold = bench.test_gold[name]
        recs = [r for r in records if r["dataset"] == name and r["teacher"] == first_teacher]
        llkd = sorted((r for r in recs if r["method"] == "llkd"), key=lambda r: r["seed"])
        if llkd:
            p = plot_thresholds(Path(llkd[0]["run_dir"]) / "steps.jsonl", data.schema.names, out / "plots" / f"thresholds_{_slug(name)}.png")
            if p:
                plots.append((f"{name}: LLKD class-wise thresholds and selection rate over steps (seed {llkd[0]['seed']})", p))
            probs_path = Path(llkd[0]["run_dir"]) / "test_probs.npy"
            if probs_path.exists():
                sp = np.load(probs_path).astype(np.float64)
                u = -(sp * np.log(np.clip(sp, 1e-12, None))).sum(1) / np.log(sp.shape[1])
                unc_series[name] = (u, sp.argmax(1) == gold)
        teach = next((r for r in recs if r["method"] == "teacher"), None)
        if teach and (Path(teach["run_dir"]) / "test_probs.npy").exists():
            tp = np.load(Path(teach["run_dir"]) / "test_probs.npy").astype(np.float64)
            ok = ~np.isnan(tp).any(1)
            conf_series[name] = (tp[ok].max(1), tp[ok].argmax(1) == gold[ok])
    p = plot_signal_vs_accuracy(conf_series, "teacher confidence (max q)", "Teacher confidence vs accuracy (test split)", out / "plots" / "teacher_confidence_vs_accuracy.png")
    if p:
        plots.append(("Teacher confidence vs its accuracy, binned (paper Figure 2 analogue)", p))
    p = plot_signal_vs_accuracy(unc_series, "student uncertainty (normalised entropy)", "Student uncertainty vs accuracy (LLKD student, test split)", out / "plots" / "student_uncertainty_vs_accuracy.png")
    if p:
        plots.append(("LLKD student's uncertainty vs its accuracy, binned (paper Figure 2 analogue)", p))
    if plots:
        md += ["## Plots", ""]
        for caption, path in plots:
            md += [f"**{caption}**", "", f"![{caption}]({_rel(path, out)})", ""]

    md += ["## Files", "", "- `runs.csv`: one row per run (every seed, every method).", "- `tables/<dataset>.md`: the per-dataset tables above.",
           "- `provenance.json`: settings, splits (sizes, digests, files) and teacher identities.",
           "- `runs/<dataset>/<teacher>/<method>/seed<k>/`: record.json, steps.jsonl (per-step selection log), test_probs.npy.", ""]
    (out / "results.md").write_text("\n".join(md))
    (out / "comparisons.json").write_text(json.dumps(comparisons, indent=1, default=float))
    return out / "results.md"


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-._" else "_" for ch in name)
