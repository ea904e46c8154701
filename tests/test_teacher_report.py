"""`llkd teacher-report` on a slice of the bundled AG News test texts (calibrated with a slice of
its pool as the reference), and its helpers."""

import json
import math

import numpy as np
import pytest

from llkd.cli import main
from llkd.reporting.confidence import auroc, confidence_report, rankdata, spearman
from llkd.reporting.plots import reliability_diagram
from llkd.teacher.calibration import CALIBRATORS

N = 32  # test texts
POOL = 12  # pool texts: the calibration reference (with the content-free input, 45 teacher answers in all)


def test_rank_helpers() -> None:
    assert rankdata(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert spearman(np.array([1, 2, 3]), np.array([10, 20, 30])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3]), np.array([30, 20, 10])) == pytest.approx(-1.0)
    assert math.isnan(spearman(np.array([1, 1, 1]), np.array([1, 2, 3])))
    assert auroc(np.array([0.9, 0.8, 0.3, 0.2]), np.array([1, 1, 0, 0])) == 1.0
    assert auroc(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5


def test_confidence_report_on_a_known_case(tmp_path) -> None:
    # confident rows right, unsure rows wrong; one unanswered row
    probs = np.array([[0.9, 0.1], [0.85, 0.15], [0.2, 0.8], [0.55, 0.45], [0.45, 0.55], [np.nan, np.nan]])
    gold = np.array([0, 0, 1, 1, 0, 0])
    rep = confidence_report(probs, gold, bins=10, min_bin_count=1)
    assert rep["n"] == 5 and rep["unanswered"] == 1
    assert rep["accuracy"] == pytest.approx(0.6)
    assert sum(b["count"] for b in rep["bins"]) == 5
    assert rep["ranking"]["top_half_accuracy"] == 1.0 and rep["ranking"]["bottom_half_accuracy"] == 0.0
    assert rep["confidence_tracks_accuracy"]
    assert 0.0 <= rep["ece"] <= 1.0
    png = reliability_diagram({"demo": {"bins": rep["bins"], "ece": rep["ece"], "accuracy": rep["accuracy"]}}, tmp_path / "r.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(600)
def test_teacher_report_cli(tmp_path, demo_dir, capsys) -> None:
    rows = (demo_dir / "agnews_test.jsonl").read_text().splitlines()[:N]
    test = tmp_path / "test.jsonl"
    test.write_text("\n".join(rows) + "\n")
    pool = tmp_path / "pool.jsonl"
    pool.write_text("\n".join((demo_dir / "agnews_pool.jsonl").read_text().splitlines()[:POOL]) + "\n")
    out = tmp_path / "report"
    argv = ["teacher-report", "--no-progress", "--data-test", str(test), "--data-labels", str(demo_dir / "agnews_labels.yaml"),
            "--data-id-column", "id", "--teacher-cache", str(tmp_path / "teacher.sqlite"), "--teacher-device", "cpu",
            "--output", str(out)]
    rc = main(argv + ["--data-pool", str(pool)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "expected calibration error" in printed and "confusion" in printed and "higher confidence -> higher accuracy" in printed

    png = out / "reliability.png"
    assert png.is_file() and png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = json.loads((out / "teacher_report.json").read_text())  # strict JSON: no NaN
    assert res["n"] == N and res["failures"] == {}
    assert set(res["calibrations"]) == set(CALIBRATORS.names()) and res["left_out"] == {}
    assert res["calibration_reference"].startswith(f"{POOL} pool texts")
    # every data-fitted calibrator saw the pool answers only
    assert res["calibrations"]["mean"]["calibrator"]["pool_rows"] == POOL
    for name, c in res["calibrations"].items():
        assert c["n"] == N
        assert 0.0 <= c["accuracy"] <= 1.0 and c["accuracy"] == pytest.approx(c["report"]["accuracy"])
        assert 0.0 <= c["report"]["macro_f1"] <= 1.0
        assert 0.0 <= c["ece"] <= 1.0
        assert sum(b["count"] for b in c["bins"]) == N
        assert sum(map(sum, c["report"]["confusion"])) == N
        for b in c["bins"]:
            if b["count"]:
                assert 0.0 <= b["accuracy"] <= 1.0 and b["low"] <= b["confidence"] <= b["high"]
        assert isinstance(c["confidence_tracks_accuracy"], bool)
        assert sum(q["count"] for q in c["quartiles"]) == N
    assert len(res["content_free"]["probs"]) == 4 and sum(res["content_free"]["probs"]) == pytest.approx(1.0)

    # a second run answers every text from the cache; without a pool, only what needs none is shown
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"{N + 1} answers from cache, 0 asked" in printed and "mean calibration left out: no unlabeled pool" in printed
    res = json.loads((out / "teacher_report.json").read_text())
    assert set(res["calibrations"]) == {"none", "contextual"} and set(res["left_out"]) == {"auto", "balanced", "em", "mean", "prior"}
