"""llkd distill: train a student asking the teacher about as few texts as the budget allows."""

from __future__ import annotations

import argparse

import numpy as np

from llkd.config import ConfigError, LLKDConfig, add_config_flags, config_from_args, parse_amount
from llkd.data.errors import DataError
from llkd.data.loading import TextSet
from llkd.pipeline import calibration_summary, load_schema, load_split, train_and_evaluate, write_json
from llkd.preflight import check_run

HELP = ("Label only what the student needs: rounds of train -> choose the most useful unanswered texts -> ask the teacher, "
        "up to a budget (calls, share of the pool, tokens or USD); then the final student, saved like `llkd train`'s.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="Hide progress bars.")
    p.add_argument("--no-report", action="store_true", help="Skip report.md and its plots.")
    add_config_flags(p, ("data", "teacher", "selection", "student", "distill"))


def dry_run(cfg: LLKDConfig, source: object, pool: TextSet) -> None:
    """Tokens and cost for the whole pool and for the budget, before any call."""
    from llkd.teacher.cost import Prices, format_usage

    prices = Prices.from_settings(cfg.teacher.price_prompt, cfg.teacher.price_completion)
    teacher = source.teacher  # type: ignore[attr-defined]
    try:
        whole = teacher.estimate_usage(pool.texts)
    except NotImplementedError as e:
        raise DataError(f"dry run: {e}") from None
    calls = parse_amount(cfg.distill.budget, len(pool))
    share = calls / len(pool)
    # the budget's texts are not known before the rounds choose them: the pool's mean per text
    per_text = type(whole.usage)(calls, round(whole.usage.prompt_tokens * share), round(whole.usage.completion_tokens * share))
    print(f"whole pool ({len(pool)} texts): {whole.line(prices)}")
    print(f"budget ({calls} texts, {share:.1%} of the pool, at the pool's mean tokens per text): {format_usage(per_text, prices)}")


def run(args: argparse.Namespace) -> int:
    from llkd.distill import TeacherSource, distill, resolve_limits

    cfg = config_from_args(args)
    if cfg.data.task == "entities":
        raise ConfigError("llkd distill is not available for entities yet; use `llkd label` and `llkd train` with --data-task entities")
    check_run(cfg)
    schema = load_schema(cfg.data)
    pool = load_split(cfg.data, "pool", schema)
    dev = load_split(cfg.data, "dev", schema, require_labels=True) if cfg.data.dev else None
    test = load_split(cfg.data, "test", schema, require_labels=True) if cfg.data.test else None
    limits = resolve_limits(cfg, len(pool))  # a bad budget: one line, before the teacher loads
    progress = not args.no_progress
    source = TeacherSource(cfg, schema, pool, progress=progress)
    try:
        if cfg.distill.dry_run:
            dry_run(cfg, source, pool)
            return 0
        print(f"budget: {limits.calls} of {len(pool)} texts ({limits.calls / len(pool):.1%}); acquisition {cfg.distill.acquisition}")
        result = distill(cfg, schema, pool, source, dev=dev, progress=progress, say=print)
    finally:
        source.close()
    print(calibration_summary(result.calibrator))
    student = train_and_evaluate(cfg, schema, pool, result.probs, class_prior=result.class_prior, dev=dev,
                                 evaluate_on={"test": test} if test is not None else None, progress=progress)
    if not student.main_process:
        return 0
    summary = {"distill": result.summary(), "selector": cfg.selection.selector, **student.result.summary(), "train": student.train.as_dict()}
    print(f"student saved to {student.result.model_dir}; trained on {int((~np.isnan(result.probs).any(axis=1)).sum())} answered texts")
    if test is not None:
        print(student.reports["test"].table())
        summary["test"] = student.reports["test"].as_dict()
    if not args.no_report:
        from llkd.reporting.run_report import ScoredSplit, run_settings, write_run_report

        # the student's side only: asking the teacher about the test split would spend calls outside the budget
        scored = ScoredSplit(str(cfg.data.test), np.asarray(test.labels), student.probs["test"], None) if test is not None else None
        path = write_run_report(cfg.student.output, schema, student.result, result.probs,
                                settings={**run_settings(cfg, student.train.seconds), "calibration": calibration_summary(result.calibrator)},
                                pool_gold=pool.labels, test=scored, dev_size=len(dev) if dev is not None else None, distill=result.summary())
        print(f"report written to {path}")
    write_json(cfg.student.output / "summary.json", summary)
    return 0
