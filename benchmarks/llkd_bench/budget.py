"""Budget curves: llkd's budgeted distillation against the full-pool student, every strategy.

The committed answer files stand in for the teacher: an answer is revealed only when the loop
asks for it, and every reveal counts as one teacher call. Each (dataset, strategy, seed) is one
run of :func:`llkd.distill.distill` up to the largest budget, with every budget of the curve a
milestone (a round ends there); the round student at a milestone is what that budget buys. The
full-pool ``llkd`` student, trained on every answer with the same settings, is the reference.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from llkd.config import LLKDConfig
from llkd.data.loading import TextSet
from llkd.distill import Asked, distill
from llkd.evaluation.metrics import classification_report
from llkd.teacher.calibration import CALIBRATORS, LabelledAnswers
from llkd.teacher.cost import TokenUsage
from llkd_bench.datasets import BenchData, carve_dev_from_pool, load_dataset
from llkd_bench.teacher import get_answers

BUDGETS = ("2.5%", "5%", "10%", "20%", "40%")  # the curve's points (2.5 %: the seed round)


class RevealSource:
    """Committed answers, revealed on request; a reveal of a text not revealed before is a call."""

    def __init__(self, pool: np.ndarray, dev: np.ndarray | None) -> None:
        self.pool, self.dev = pool, dev
        self.revealed: set[int] = set()

    def ask(self, rows: np.ndarray) -> Asked:
        new = [int(r) for r in rows if int(r) not in self.revealed]
        self.revealed.update(new)
        return Asked(self.pool[rows], TokenUsage(calls=len(new)))

    def estimate(self, rows: np.ndarray) -> TokenUsage | None:
        return None  # the answer files keep no prompts

    def answers(self, texts: TextSet) -> Asked:
        if self.dev is None:
            raise ValueError("no dev answers")
        return Asked(self.dev, TokenUsage())

    def content_free(self) -> np.ndarray:
        raise ValueError("the answer files keep no content-free answer: contextual calibration is not benchmarked here")


@dataclass
class BudgetSettings:
    datasets: list[str]
    strategies: list[str]
    seeds: list[int]
    teacher: str = "qwen2.5-1.5b"
    pool_size: int = 2000
    test_size: int = 1000
    dev_from_pool: int = 500
    max_length: int = 64  # the benchmark's token budget (bench presets)
    threads: int = 1
    budgets: list[str] = field(default_factory=lambda: list(BUDGETS))
    output: Path = Path("runs/budget")
    answers_dir: Path | None = None
    data_root: Path | None = None
    split_seed: int = 0


def run_config(s: BudgetSettings, strategy: str, seed: int, out: Path) -> LLKDConfig:
    """The frozen tier's settings (library defaults otherwise), budget = the curve's last point."""
    return LLKDConfig.validated({
        "student": {"mode": "frozen", "max_length": s.max_length, "seed": seed, "threads": s.threads, "output": str(out), "resume": False},
        "distill": {"budget": s.budgets[-1], "milestones": s.budgets, "seed_size": s.budgets[0], "acquisition": strategy, "round_mode": "frozen"},
    }, source="bench-budget")


def load(s: BudgetSettings, name: str) -> tuple[BenchData, np.ndarray, np.ndarray]:
    data = load_dataset(name, s.data_root, s.pool_size, s.test_size, s.split_seed, 0)
    data = carve_dev_from_pool(data, s.dev_from_pool)
    answers = get_answers(data, s.teacher, s.answers_dir, source="answers", progress=False, with_dev=True)
    assert answers.dev is not None
    return data, answers.pool, answers.dev


def full_pool(s: BudgetSettings, data: BenchData, pool: np.ndarray, dev: np.ndarray, seed: int, out: Path) -> dict[str, Any]:
    """The reference: the ``llkd`` student on every pool answer, same settings and calibration."""
    from llkd.pipeline import train_and_evaluate

    cfg = run_config(s, "random", seed, out)
    assert data.dev is not None and data.dev.labels is not None
    calibrator = CALIBRATORS.get(cfg.teacher.calibration)()
    calibrator.fit(pool, None, LabelledAnswers(dev, np.asarray(data.dev.labels)))
    t0 = time.perf_counter()
    run = train_and_evaluate(cfg, data.schema, data.pool, calibrator.apply(pool), class_prior=calibrator.class_prior, dev=data.dev,
                             evaluate_on={"test": data.test, "dev": data.dev}, progress=False)
    return {"calls": len(data.pool), "test_macro_f1": run.reports["test"].macro_f1, "dev_macro_f1": run.reports["dev"].macro_f1,
            "train_seconds": time.perf_counter() - t0, "gradient_samples": run.result.gradient_samples}


def budget_run(s: BudgetSettings, data: BenchData, pool: np.ndarray, dev: np.ndarray, strategy: str, seed: int, out: Path) -> dict[str, Any]:
    cfg = run_config(s, strategy, seed, out)
    source = RevealSource(pool, dev)
    t0 = time.perf_counter()
    result = distill(cfg, data.schema, data.pool, source, dev=data.dev, evaluate_on={"test": data.test}, progress=False, say=lambda _: None)
    points, asked = [], 0
    for rnd in result.state.rounds:
        asked += len(rnd.rows)
        points.append({"calls": asked, "share": asked / len(data.pool), "test_macro_f1": rnd.student_test_macro_f1,
                       "dev_macro_f1": rnd.student_dev_macro_f1, "train_seconds": rnd.train_seconds, "gradient_samples": rnd.gradient_samples,
                       "changed_share": rnd.changed_share})
    return {"points": points, "reveals": len(source.revealed), "seconds": time.perf_counter() - t0,
            "calibration": result.calibrator.state().get("chosen", result.calibrator.state()["name"])}


def run_grid(s: BudgetSettings, say: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Every cell once; a cell whose record.json exists is read back (the grid resumes)."""
    records = []
    for name in s.datasets:
        data, pool, dev = load(s, name)
        base = {"dataset": name, "teacher": s.teacher, "pool_size": len(data.pool), "dev_size": len(data.dev or []),
                "test_size": len(data.test), "max_length": s.max_length}
        for seed in s.seeds:
            for strategy in ["full", *s.strategies]:
                out = s.output / name / strategy / f"seed{seed}"
                path = out / "record.json"
                if path.exists():
                    records.append(json.loads(path.read_text()))
                    continue
                out.mkdir(parents=True, exist_ok=True)
                body = full_pool(s, data, pool, dev, seed, out) if strategy == "full" else budget_run(s, data, pool, dev, strategy, seed, out)
                rec = {**base, "strategy": strategy, "seed": seed, **body}
                path.write_text(json.dumps(rec, indent=1))
                records.append(rec)
                last = rec["points"][-1] if "points" in rec else rec
                say(f"[{name}] seed {seed} {strategy:<8} test macro-F1 {last['test_macro_f1']:.4f} at {last['calls']} calls")
    return records


def teacher_test_f1(data: BenchData, test: np.ndarray) -> float:
    ok = ~np.isnan(test).any(axis=1)
    gold = np.asarray(data.test.labels)
    pred = np.where(ok, np.nan_to_num(test).argmax(axis=1), -1)
    return classification_report(gold, pred, data.schema.names).macro_f1
