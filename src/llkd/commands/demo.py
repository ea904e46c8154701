"""llkd demo: the whole pipeline on the bundled AG News slice with the packaged models."""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

from llkd.commands._console import print_table
from llkd.config import LLKDConfig
from llkd.pipeline import (calibrate_split, calibration_summary, evaluate_probs, load_schema, load_split, pseudo_label, require_answers,
                           train_and_evaluate, write_json)

HELP = "Run teacher -> LLKD student -> evaluation on the bundled AG News slice (SmolLM2-135M teacher, MiniLM student) and print one table."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", type=Path, default=Path("runs/demo"), help="Where students, logs and the summary go.")
    p.add_argument("--config", type=Path, help="Use another demo config (default: the bundled one).")
    p.add_argument("--baselines", default="all", help="Comma-separated selectors trained beside llkd.")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    config_path = args.config or Path(str(resources.files("llkd.resources").joinpath("demo/demo.yaml")))
    cfg = LLKDConfig.from_yaml(config_path)
    progress = not args.no_progress
    schema = load_schema(cfg.data)
    pool = load_split(cfg.data, "pool", schema)
    test = load_split(cfg.data, "test", schema, require_labels=True)
    dev = load_split(cfg.data, "dev", schema, require_labels=True) if cfg.data.dev else None
    print(f"demo: {len(pool)} unlabeled pool texts, {len(test)} labelled test texts, {len(dev) if dev else 0} labelled dev texts, labels {schema.names}")
    print(f"teacher {cfg.teacher.model} (calibration: {cfg.teacher.calibration}), student {cfg.student.model}; teacher cache {cfg.teacher.cache_path()}")

    t_pool = pseudo_label(cfg.teacher, schema, pool, progress, desc="teacher[pool]", dev=dev)
    print(calibration_summary(t_pool.calibrator))
    require_answers(t_pool)
    # the test split gets the pool's calibration reference, never its own statistics
    t_test = calibrate_split(cfg.teacher, schema, test, t_pool.calibrator, progress, desc="teacher[test]")
    assert test.labels is not None
    rows = []
    teacher_report = evaluate_probs(t_test.probs, test.labels, schema)
    rows.append(["teacher zero-shot", teacher_report.accuracy, teacher_report.macro_f1, "-", "-",
                 t_pool.meter.seconds + t_test.meter.seconds, max(t_pool.meter.peak_rss_mb, t_test.meter.peak_rss_mb)])
    summary: dict = {"teacher": {"test": teacher_report.as_dict(), "pool_stage": t_pool.meter.as_dict(), "test_stage": t_test.meter.as_dict(),
                                 "asked": t_pool.n_asked + t_test.n_asked, "cached": t_pool.n_cached + t_test.n_cached}}
    for selector in ["llkd", *[s.strip() for s in args.baselines.split(",") if s.strip() and s.strip() != "llkd"]]:
        run_cfg = cfg.model_copy(deep=True)
        run_cfg.selection.selector = selector
        run_cfg.student.output = args.output / selector
        run_cfg.student.resume = False
        student = train_and_evaluate(run_cfg, schema, pool, t_pool.probs, class_prior=t_pool.calibrator.class_prior,
                                     evaluate_on={"test": test}, progress=progress)
        result, meter, report, ev = student.result, student.train, student.reports["test"], student.evaluate["test"]
        rows.append([f"student [{selector}]", report.accuracy, report.macro_f1, f"{result.data_usage:.1%}",
                     f"{result.gradient_samples}/{result.sample_steps_seen}", meter.seconds + ev.seconds, max(meter.peak_rss_mb, ev.peak_rss_mb)])
        summary[selector] = {"test": report.as_dict(), **result.summary(), "train_stage": meter.as_dict(), "eval_stage": ev.as_dict()}

    header = ["model", "accuracy", "macro-F1", "data used", "grad samples", "time (s)", "peak MB"]
    print()
    print_table(header, [[r[0], f"{r[1]:.4f}", f"{r[2]:.4f}", r[3], r[4], f"{r[5]:.1f}", f"{r[6]:.0f}"] for r in rows])
    print(f"\nteacher: {summary['teacher']['asked']} texts asked, {summary['teacher']['cached']} from cache. "
          "Data used = distinct pool texts ever selected / pool size; grad samples = sample-steps with a backward pass / sample-steps seen.")
    write_json(args.output / "summary.json", summary)
    print(f"summary written to {args.output / 'summary.json'}")
    return 0
