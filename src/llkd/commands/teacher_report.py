"""llkd teacher-report: how good and how well calibrated the teacher is on a labelled split."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

from llkd.config import add_config_flags, config_from_args
from llkd.data.loading import TextSet
from llkd.pipeline import evaluate_probs, load_schema, load_split, pseudo_label, write_json

HELP = ("Evaluate the teacher on a labelled split: accuracy, macro-F1, per-class table, confusion matrix, "
        "calibration error and reliability bins of its raw answers and of each calibration (none, mean, "
        "contextual), and whether higher confidence goes with higher accuracy; saves a reliability diagram "
        "(PNG) and every number (JSON).")

CALIBRATIONS = ("none", "mean", "contextual")
_CONTENT_FREE_ID = "<content-free>"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", choices=["test", "dev", "pool"], default="test", help="Labelled data file to evaluate on.")
    p.add_argument("--output", type=Path, default=Path("runs/teacher-report"), help="Folder for reliability.png and teacher_report.json.")
    p.add_argument("--bins", type=int, default=10, help="Confidence bins of the reliability table and ECE.")
    p.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    add_config_flags(p, ("data", "teacher"))


def calibrated_variants(raw: np.ndarray, content_free: np.ndarray | None) -> dict[str, np.ndarray]:
    """The raw teacher distributions and each calibration of them (as ``pseudo_label`` applies
    it; mean calibration divides by the mean over the evaluated texts themselves)."""
    from llkd.teacher.calibration import contextual_calibrate, mean_calibrate

    out = {"none": raw, "mean": mean_calibrate(raw)}
    if content_free is not None and np.isfinite(content_free).all():
        out["contextual"] = contextual_calibrate(raw, content_free)
    return out


def _clean(obj: Any) -> Any:
    """NaN/inf -> None, so the JSON is strict."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def run(args: argparse.Namespace) -> int:
    from llkd.commands.bench_teacher import bundled_demo_data
    from llkd.evaluation.confidence import confidence_report, format_confidence
    from llkd.teacher.calibration import CONTENT_FREE

    cfg = config_from_args(args)
    data = cfg.data
    if getattr(data, args.split) is None and data.labels is None:
        data = bundled_demo_data()  # nothing given: the bundled AG News slice
    schema = load_schema(data)
    texts = load_split(data, args.split, schema, require_labels=True)
    assert texts.labels is not None
    n = len(texts)
    gold = np.asarray(texts.labels)

    # Raw answers, plus the content-free input contextual calibration divides by, in one pass
    # through the teacher cache (same cache keys as `llkd label` and the other commands).
    raw_cfg = cfg.teacher.model_copy(update={"calibration": "none"})
    both = TextSet(texts.ids + [_CONTENT_FREE_ID], texts.texts + [CONTENT_FREE], None, texts.source)
    run_ = pseudo_label(raw_cfg, schema, both, progress=not args.no_progress, desc=f"teacher[{args.split}]")
    res = run_.labels
    raw, cf = res.probs[:n], res.probs[n]
    failures = {i: r for i, r in res.failures.items() if i < n}
    variants = calibrated_variants(raw, cf)

    print(f"teacher {cfg.teacher.model} ({cfg.teacher.backend}) on {n} {args.split} texts from {texts.source} (+1 content-free input): "
          f"{res.n_cached} answers from cache, {res.n_asked} asked, {len(failures)} failed; {run_.meter.seconds:.1f}s; "
          f"cache {cfg.teacher.cache_path()}")
    if "contextual" not in variants:
        print(f"  no answer for the content-free input {CONTENT_FREE!r}: contextual calibration left out")
    summary: dict[str, Any] = {
        "split": args.split, "source": texts.source, "n": n, "failures": {texts.ids[i]: r for i, r in failures.items()},
        "teacher": {"model": cfg.teacher.model, "backend": cfg.teacher.backend, "identity": run_.identity,
                    "configured_calibration": cfg.teacher.calibration},
        "content_free": {"text": CONTENT_FREE, "probs": cf.tolist()},
        "labels": schema.names, "bins": args.bins, "calibrations": {},
    }
    panels: dict[str, dict[str, Any]] = {}
    for name, probs in variants.items():
        ok = ~np.isnan(probs).any(axis=1)
        report = evaluate_probs(probs[ok], gold[ok].tolist(), schema)
        conf = confidence_report(probs, gold, bins=args.bins)
        tag = "none (raw answers)" if name == "none" else name
        configured = "  <- configured" if name == cfg.teacher.calibration else ""
        print(f"\n=== calibration: {tag}{configured} ===")
        print(report.table())
        print(format_confidence(conf))
        summary["calibrations"][name] = {"report": report.as_dict(), **conf}
        panels["none (raw)" if name == "none" else f"{name} calibration"] = {
            "bins": conf["bins"], "ece": conf["ece"], "accuracy": conf["accuracy"]}

    header = ["calibration", "accuracy", "macro-F1", "ECE", "mean conf", "top/bottom half acc", "AUROC", "conf tracks acc"]
    table = [header]
    for name, s in summary["calibrations"].items():
        rk = s["ranking"]
        table.append([name + (" *" if name == cfg.teacher.calibration else ""), f"{s['report']['accuracy']:.4f}",
                      f"{s['report']['macro_f1']:.4f}", f"{s['ece']:.4f}", f"{s['mean_confidence']:.3f}",
                      f"{rk['top_half_accuracy']:.3f}/{rk['bottom_half_accuracy']:.3f}", f"{rk['auroc']:.3f}",
                      "yes" if s["confidence_tracks_accuracy"] else "NO"])
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    print()
    for k, r in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
        if k == 0:
            print("  ".join("-" * w for w in widths))
    print("(* = the configured teacher.calibration; mean calibration uses the mean over these texts)")

    args.output.mkdir(parents=True, exist_ok=True)
    png = args.output / "reliability.png"
    try:
        from llkd.evaluation.plots import reliability_diagram

        reliability_diagram(panels, png, title=f"Teacher {cfg.teacher.model}: reliability on {n} {args.split} texts")
        summary["plot"] = str(png)
    except RuntimeError as e:  # matplotlib missing
        print(f"no reliability diagram: {e}")
    out = args.output / "teacher_report.json"
    write_json(out, _clean(summary))
    print(f"\nwrote {out}" + (f" and {png}" if "plot" in summary else ""))
    return 1 if failures else 0
