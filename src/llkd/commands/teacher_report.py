"""llkd teacher-report: how good and how well calibrated the teacher is on a labelled split."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

from llkd.commands._console import print_table
from llkd.config import ConfigError, add_config_flags, config_from_args
from llkd.data.loading import TextSet
from llkd.pipeline import evaluate_probs, load_schema, load_split, pseudo_label, write_json

HELP = ("Evaluate the teacher on a labelled split: accuracy, macro-F1, per-class table, confusion matrix, "
        "calibration error and reliability bins of its raw answers and of each registered calibration (fitted on "
        "the unlabeled pool, --data-pool), and whether higher confidence goes with higher accuracy; saves a "
        "reliability diagram (PNG) and every number (JSON).")

_CONTENT_FREE_ID = "<content-free>"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", choices=["test", "dev", "pool"], default="test", help="Labelled data file to evaluate on.")
    p.add_argument("--output", type=Path, default=Path("runs/teacher-report"), help="Folder for reliability.png and teacher_report.json.")
    p.add_argument("--bins", type=int, default=10, help="Confidence bins of the reliability table and ECE.")
    p.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    add_config_flags(p, ("data", "teacher"))


def calibrated_variants(raw: np.ndarray, pool: np.ndarray | None, content_free: np.ndarray | None
                        ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]], dict[str, str]]:
    """Each registered calibration fitted on the pool's raw answers (as ``pseudo_label`` fits
    it) and applied to ``raw``: (name -> calibrated probs, name -> fitted state, name -> why it
    was left out). ``none`` comes first."""
    from llkd.teacher.calibration import CALIBRATORS, fit_calibrator

    variants: dict[str, np.ndarray] = {}
    states: dict[str, dict[str, Any]] = {}
    left_out: dict[str, str] = {}
    for name in sorted(CALIBRATORS.names(), key=lambda n: n != "none"):
        if pool is None and CALIBRATORS.get(name).needs_pool:
            left_out[name] = "no unlabeled pool to fit on (--data-pool); a split is never calibrated with its own statistics"
            continue
        try:
            calibrator = fit_calibrator(name, pool, content_free)
        except ValueError as e:  # no content-free answer, or no answered pool text
            left_out[name] = str(e)
            continue
        variants[name], states[name] = calibrator.apply(raw), calibrator.state()
    return variants, states, left_out


def _clean(obj: Any) -> Any:
    """NaN/inf -> None, so the JSON is strict."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _print_table(summary: dict[str, Any], configured: str) -> None:
    """One line per calibration: accuracy, macro-F1, calibration error and ranking quality."""
    header = ["calibration", "accuracy", "macro-F1", "ECE", "mean conf", "top/bottom half acc", "AUROC", "conf tracks acc"]
    table = []
    for name, s in summary["calibrations"].items():
        rk = s["ranking"]
        table.append([name + (" *" if name == configured else ""), f"{s['report']['accuracy']:.4f}",
                      f"{s['report']['macro_f1']:.4f}", f"{s['ece']:.4f}", f"{s['mean_confidence']:.3f}",
                      f"{rk['top_half_accuracy']:.3f}/{rk['bottom_half_accuracy']:.3f}", f"{rk['auroc']:.3f}",
                      "yes" if s["confidence_tracks_accuracy"] else "NO"])
    print()
    print_table(header, table)
    print("(* = the configured teacher.calibration; every calibration is fitted on the unlabeled pool, never on these texts)")


def _write_outputs(output: Path, summary: dict[str, Any], panels: dict[str, dict[str, Any]], title: str) -> None:
    """The reliability diagram (when matplotlib is there) and every number as JSON."""
    output.mkdir(parents=True, exist_ok=True)
    png = output / "reliability.png"
    try:
        from llkd.reporting.plots import reliability_diagram

        reliability_diagram(panels, png, title=title)
        summary["plot"] = str(png)
    except RuntimeError as e:  # matplotlib missing
        print(f"no reliability diagram: {e}")
    out = output / "teacher_report.json"
    write_json(out, _clean(summary))
    print(f"\nwrote {out}" + (f" and {png}" if "plot" in summary else ""))


def run(args: argparse.Namespace) -> int:
    from llkd.pipeline import bundled_demo_data
    from llkd.reporting.confidence import confidence_report, format_confidence
    from llkd.teacher.calibration import CONTENT_FREE

    cfg = config_from_args(args)
    if cfg.data.task == "entities":
        raise ConfigError("llkd teacher-report is not available for entities yet; `llkd label` prints the entity teacher's F1 against a file's gold")
    data = cfg.data
    if getattr(data, args.split) is None and data.labels is None:
        data = bundled_demo_data()  # nothing given: the bundled AG News slice
    schema = load_schema(data)
    texts = load_split(data, args.split, schema, require_labels=True)
    assert texts.labels is not None
    n = len(texts)
    gold = np.asarray(texts.labels)

    # Calibrations are fitted on the unlabeled pool (the evaluated split only when that is the
    # pool itself), never on the texts they are evaluated on.
    pool = None if args.split == "pool" or data.pool is None else load_split(data, "pool", schema)
    pool_ids, pool_texts = (pool.ids, pool.texts) if pool is not None else ([], [])
    m = len(pool_ids)
    # Raw answers for pool, split and the content-free input in one pass through the teacher
    # cache (same cache keys as `llkd label` and the other commands).
    raw_cfg = cfg.teacher.model_copy(update={"calibration": "none"})
    every = TextSet(pool_ids + texts.ids + [_CONTENT_FREE_ID], pool_texts + texts.texts + [CONTENT_FREE], None, texts.source)
    run_ = pseudo_label(raw_cfg, schema, every, progress=not args.no_progress, desc=f"teacher[pool+{args.split}]" if m else f"teacher[{args.split}]")
    res = run_
    raw, cf = res.probs[m : m + n], res.probs[m + n]
    if pool is not None:
        pool_raw, reference = res.probs[:m], f"{m} pool texts from {pool.source}"
    elif args.split == "pool":
        pool_raw, reference = raw, "the evaluated pool texts themselves"
    else:
        pool_raw, reference = None, None
    failures = {i - m: r for i, r in res.failures.items() if m <= i < m + n}
    variants, states, left_out = calibrated_variants(raw, pool_raw, cf)

    print(f"teacher {cfg.teacher.model} ({cfg.teacher.backend}) on {n} {args.split} texts from {texts.source} "
          f"(+{m} pool texts, +1 content-free input): "
          f"{res.n_cached} answers from cache, {res.n_asked} asked, {len(failures)} failed; {run_.meter.seconds:.1f}s; "
          f"cache {cfg.teacher.cache_path()}")
    print(f"  calibration reference: {reference or 'none (no pool given)'}")
    for name, why in left_out.items():
        print(f"  {name} calibration left out: {why}")
    summary: dict[str, Any] = {
        "split": args.split, "source": texts.source, "n": n, "failures": {texts.ids[i]: r for i, r in failures.items()},
        "teacher": {"model": cfg.teacher.model, "backend": cfg.teacher.backend, "identity": run_.identity,
                    "configured_calibration": cfg.teacher.calibration},
        "content_free": {"text": CONTENT_FREE, "probs": cf.tolist()},
        "calibration_reference": reference,
        "labels": schema.names, "bins": args.bins, "calibrations": {}, "left_out": left_out,
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
        summary["calibrations"][name] = {"report": report.as_dict(), "calibrator": states[name], **conf}
        panels["none (raw)" if name == "none" else f"{name} calibration"] = {
            "bins": conf["bins"], "ece": conf["ece"], "accuracy": conf["accuracy"]}

    _print_table(summary, cfg.teacher.calibration)
    _write_outputs(args.output, summary, panels, f"Teacher {cfg.teacher.model}: reliability on {n} {args.split} texts")
    return 1 if failures else 0
