"""The training-run report from a step log and arrays, without a model."""

import json
import re

import numpy as np
import pytest

from llkd.data.schema import LabelSchema
from llkd.reporting.run_report import ScoredSplit, collapse_warnings, write_run_report
from llkd.student.trainer import TrainResult

pytest.importorskip("matplotlib")
NAMES = ["World", "Sports", "Business", "Sci/Tech"]


def _run(tmp_path, per_class: bool, collapse: bool = False) -> TrainResult:
    """A 40-step log: thresholds on both sides; selected_per_class when asked, drifting onto
    World in the second half when ``collapse``."""
    rows = []
    for s in range(1, 41):
        mix = [4, 0, 0, 0] if collapse and s > 20 else [1, 1, 1, 1]
        rows.append({"step": s, "epoch": (s - 1) // 10, "batch": 16, "selected": sum(mix), "selection_rate": sum(mix) / 16,
                     "loss": 1.0, "lr": 1e-4, "data_usage": min(1.0, s / 30), "teacher_threshold": [0.5, 0.4, 0.45, 0.3],
                     "teacher_global": 0.5, "student_threshold": [0.9, 0.8, 0.85, 0.7], "student_global": 0.9,
                     **({"selected_per_class": mix} if per_class else {})})
    (tmp_path / "steps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return TrainResult(model_dir=tmp_path / "model", steps=40, optimizer_updates=40, gradient_samples=160, sample_steps_seen=640,
                       data_usage=0.75, selected_rows=np.arange(80) % 4 != 0,
                       dev_history=[{"epoch": e, "accuracy": 0.5 + e / 10, "macro_f1": 0.4 + e / 10} for e in (1, 2, 3, 4)])


def _images(md: str) -> list[str]:
    return re.findall(r"!\[[^\]]+\]\(([^)]+)\)", md)


def test_report_has_every_section_and_its_plots(tmp_path):
    result = _run(tmp_path, per_class=True)
    rng = np.random.default_rng(0)
    teacher = rng.dirichlet(np.ones(4), 80)
    gold = np.arange(24) % 4
    test = ScoredSplit("test.jsonl", gold, np.eye(4)[gold] * 0.7 + 0.075, rng.dirichlet(np.ones(4), 24))
    path = write_run_report(tmp_path, LabelSchema.from_names(NAMES), result, teacher, settings={"selector": "`llkd`"},
                            pool_gold=list(rng.integers(0, 4, 80)), test=test, dev_size=12)
    md = path.read_text()
    images = _images(md)
    assert set(images) == {"test_scores.png", "dev_f1.png", "thresholds.png", "class_share.png", "reliability.png"}
    for name in images:
        assert (tmp_path / name).stat().st_size > 5000  # a real picture, not an empty canvas
    assert "| student | 1.0000 | 1.0000 |" in md and "teacher (zero-shot)" in md
    assert "teacher, pool" in md and "teacher, test.jsonl" in md and "student, test.jsonl" in md
    assert "No class dominates the late selection." in md


def test_collapse_is_flagged(tmp_path):
    result = _run(tmp_path, per_class=True, collapse=True)
    teacher = np.eye(4)[np.arange(80) % 4] * 0.6 + 0.1  # pool pseudo-labels: 25 % each class
    md = write_run_report(tmp_path, LabelSchema.from_names(NAMES), result, teacher).read_text()
    assert "Warning: **World** is 100% of the samples selected in the last quarter of training but 25% of the pool's pseudo-labels" in md
    assert "**Sports** (25% of the pool's pseudo-labels) had no selected sample in the last quarter" in md
    assert "No test split given" in md and "reliability cannot be measured" in md


def test_without_per_class_counts_the_report_shows_the_final_mix(tmp_path):
    result = _run(tmp_path, per_class=False)
    teacher = np.eye(4)[np.arange(80) % 4] * 0.6 + 0.1
    teacher[5] = np.nan  # an unanswered pool text is left out of the shares
    md = write_run_report(tmp_path, LabelSchema.from_names(NAMES), result, teacher).read_text()
    assert "class_mix.png" in _images(md) and (tmp_path / "class_mix.png").exists()
    assert "`selected_per_class`" in md and "class_share.png" not in md


def test_collapse_warnings_thresholds():
    pool = np.array([0.25, 0.25, 0.25, 0.25])
    assert collapse_warnings(NAMES, pool, np.array([0.4, 0.2, 0.2, 0.2])) == []
    assert len(collapse_warnings(NAMES, pool, np.array([0.55, 0.15, 0.15, 0.15]))) == 1
