"""llkd train: train a student on teacher pseudo-labels with a chosen selector."""

from __future__ import annotations

import argparse

import numpy as np

from llkd import entity_pipeline
from llkd.config import add_config_flags, config_from_args
from llkd.pipeline import (calibrate_split, calibration_summary, evaluate_probs, load_schema, load_split, pseudo_label, require_answers,
                           train_and_evaluate, write_json)
from llkd.preflight import check_run

HELP = "Train a student encoder on the teacher's pseudo-labels, selecting samples with the chosen selector (default: llkd)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="Hide progress bars.")
    p.add_argument("--no-report", action="store_true", help="Skip report.md and its plots in the output folder (and the teacher's pass over the "
                   "test split that gives the report its teacher-vs-student numbers; cached after the first run).")
    add_config_flags(p, ("data", "teacher", "selection", "student"))


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if cfg.data.task == "entities":
        return entity_pipeline.train(cfg, args)
    # Everything checkable without a model, before the teacher runs: settings, then every
    # data file parsed (test labels included), so no mistake surfaces after hours of work.
    check_run(cfg)
    schema = load_schema(cfg.data)
    pool = load_split(cfg.data, "pool", schema)
    dev = load_split(cfg.data, "dev", schema, require_labels=True) if cfg.data.dev else None
    test = load_split(cfg.data, "test", schema, require_labels=True) if cfg.data.test else None
    teacher = pseudo_label(cfg.teacher, schema, pool, progress=not args.no_progress, dev=dev)
    print(calibration_summary(teacher.calibrator))
    require_answers(teacher)
    failures = teacher.failures
    if failures:
        print(f"warning: {len(failures)} pool texts have no teacher answer and are left out (re-run `llkd label` to retry)")
    student = train_and_evaluate(cfg, schema, pool, teacher.probs, class_prior=teacher.calibrator.class_prior, dev=dev,
                                 evaluate_on={"test": test} if test is not None else None, progress=not args.no_progress)
    if not student.main_process:
        return 0  # under torchrun / accelerate launch only rank 0 evaluates, reports and writes summary.json
    result, meter = student.result, student.train
    summary = {"selector": cfg.selection.selector, **result.summary(), "teacher": teacher.meter.as_dict(), "train": meter.as_dict(),
               "calibration": teacher.calibrator.state()}
    print(f"student saved to {result.model_dir}")
    print(f"data usage {result.data_usage:.1%} of the pool; {result.gradient_samples} gradient samples in {result.optimizer_updates} updates over {result.steps} steps; "
          f"train {meter.seconds:.1f}s, peak {meter.peak_rss_mb:.0f} MB")
    if test is not None:
        report, test_probs = student.reports["test"], student.probs["test"]
        print(report.table())
        summary["test"] = report.as_dict()
    if not args.no_report:
        from llkd.reporting.run_report import ScoredSplit, run_settings, write_run_report

        scored = None
        if test is not None:
            # the teacher on the test split, calibrated as on the pool: its side of the report
            t_test = calibrate_split(cfg.teacher, schema, test, teacher.calibrator, progress=not args.no_progress, desc="teacher[test]")
            gold, ok = np.asarray(test.labels), t_test.answered
            scored = ScoredSplit(str(cfg.data.test), gold, test_probs, t_test.probs)
            summary["teacher_test"] = evaluate_probs(t_test.probs[ok], list(gold[ok]), schema).as_dict()
        path = write_run_report(cfg.student.output, schema, result, teacher.probs, settings={**run_settings(cfg, meter.seconds), "calibration": calibration_summary(teacher.calibrator)},
                                pool_gold=pool.labels, test=scored, dev_size=len(dev) if dev is not None else None)
        print(f"report written to {path}")
    write_json(cfg.student.output / "summary.json", summary)
    return 0
