"""llkd bench-teachers: the table writer on made-up numbers, the merge of results files, a run
from answer files alone (no teacher), and one tiny real run (SmolLM2, 8 test + 8 pool texts, a
temporary teacher cache)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llkd_bench.teachers import (NOTES_MARKER, VARIANTS, cell_key, compare_calibrators, empty_results, markdown, note_order,
                                 parse_sizes, read_results, score_cell, write_markdown, write_results)

from bench_data import shared_data_root as _data_root


def _fake_cell(teacher: str, dataset: str, acc: float, old_format: bool = False) -> dict:
    v = {"n": 100, "accuracy": acc, "macro_f1": acc - 0.1, "ece": 0.2, "mean_confidence": 0.7, "predicted": [50, 50],
         "over_prediction": 1.5, "over_predicted": "a"}
    better = dict(v, accuracy=acc + 0.05, macro_f1=acc, over_prediction=1.1)
    scores = {name: v for name in VARIANTS} | {"mean": better}
    if old_format:  # a cell written before the calibrator registry: raw / mean / contextual only
        old = {k: x for k, x in v.items() if not k.startswith("over_")}
        scores = {"raw": old, "mean": dict(old, accuracy=acc + 0.05, macro_f1=acc), "contextual": old}
    return {
        "teacher": teacher, "dataset": dataset, "test_size": 100, "pool_size": 50, "test_answered": 100, "pool_answered": 50,
        "split_seed": 0, "failures": 0, "date": "2026-11-28",
        "scores": scores | {"majority": {"label": "a", "accuracy": 0.5, "macro_f1": 0.33}},
        "speed": {"samples_per_s": 4.25, "texts": 64, "seconds": 15.1, "source": "labelling run"},
        "load_avg": {"before": [3.0, 3.0, 3.0], "after": [4.5, 4.0, 3.0]},
    }


def test_parse_sizes() -> None:
    assert parse_sizes("qwen2.5-1.5b=200, gemma3-270m=50") == {"qwen2.5-1.5b": 200, "gemma3-270m": 50}
    assert parse_sizes(None) == {}
    with pytest.raises(ValueError):
        parse_sizes("qwen=0")
    with pytest.raises(ValueError):
        parse_sizes("qwen")


def test_score_cell_calibrations() -> None:
    # A teacher that leans to label 0: raw says 0 for everything (label a predicted at twice its
    # share); dividing by the pool mean (or by its answer on "N/A", or balancing the pool)
    # removes the lean and recovers the gold labels.
    test = np.array([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2], [0.7, 0.3]])
    gold = [0, 1, 0, 1]
    pool = np.array([[0.75, 0.25], [0.75, 0.25], [np.nan, np.nan]])
    s = score_cell(test, gold, pool, np.array([0.75, 0.25]), ["a", "b"])
    assert set(s) == set(VARIANTS) | {"majority"}
    assert s["none"]["accuracy"] == 0.5 and s["none"]["predicted"] == [4, 0]
    assert s["none"]["over_prediction"] == 2.0 and s["none"]["over_predicted"] == "a"
    assert s["mean"]["calibrator"]["pool_rows"] == 2 and s["mean"]["calibrator"]["reference"] == [0.75, 0.25]
    for name in ("mean", "contextual", "balanced"):
        assert s[name]["accuracy"] == 1.0 and s[name]["over_prediction"] == 1.0
    assert s["em"]["predicted"] == [4, 0]  # EM from a uniform prior follows the lean
    assert s["majority"]["accuracy"] == 0.5
    assert s["none"]["ece"] is not None
    # no content-free answer: contextual left out
    assert score_cell(test, gold, pool, np.array([np.nan, np.nan]), ["a", "b"])["contextual"] is None


def test_markdown_table_on_fake_numbers(tmp_path: Path) -> None:
    res = empty_results()
    note_order(res, ["t-small", "t-big"], ["d1", "d2"])
    res["cells"][cell_key("t-small", "d1")] = _fake_cell("t-small", "d1", 0.6)
    res["cells"][cell_key("t-big", "d2")] = _fake_cell("t-big", "d2", 0.8)
    res["cells"][cell_key("t-big", "d1")] = _fake_cell("t-big", "d1", 0.7, old_format=True)
    res["runs"].append({"command": "llkd bench-teachers --teachers t-small,t-big", "date": "2026-11-28", "wall_s": 90.0,
                        "machine": {"cpus": 2, "cpu": "Fake CPU", "torch": "2.x", "torch_threads": 2, "cuda": False}})
    text = markdown(res)
    assert VARIANTS == ("none", "balanced", "contextual", "em", "mean", "prior")
    assert ("| t-small | d1 | 100 | 50 | 60.0 / 60.0 / 60.0 / 60.0 / 65.0 / 60.0 | 50.0 / 50.0 / 50.0 / 50.0 / 60.0 / 50.0 | "
            "0.200 / 0.200 / 0.200 / 0.200 / 0.200 / 0.200 | 1.50 / 1.50 / 1.50 / 1.50 / 1.10 / 1.50 | 4.25 |") in text
    # an old cell: raw read as none, calibrators it never had shown as missing
    assert ("| t-big | d1 | 100 | 50 | 70.0 / – / 70.0 / – / 75.0 / – | 60.0 / – / 60.0 / – / 70.0 / – | "
            "0.200 / – / 0.200 / – / 0.200 / – | – / – / – / – / – / – | 4.25 |") in text
    assert "| t-small | d2 | not run |" in text
    assert "| t-small | 50.0 → 60.0 mean | not run |" in text and "| t-big | 60.0 → 70.0 mean | 70.0 → 80.0 mean |" in text
    # calibrators compared over the two cells that score them all
    assert "| mean | 70.0 | 2 of 2 | 0.200 | 1.10 | 1.10 |" in text and "| none | 60.0 | 0 of 2 | 0.200 | 1.50 | 1.50 |" in text
    assert "Over the 2 cells that score every calibrator (1 left out" in text
    n, comparison = compare_calibrators(list(res["cells"].values()))
    assert n == 2 and comparison["mean"]["best_in"] == 2 and comparison["mean"]["mean_macro_f1"] == pytest.approx(0.7)
    assert "llkd bench-teachers --teachers t-small,t-big   # 2026-11-28, 1.5 min" in text
    assert "2 CPU cores (Fake CPU)" in text and "3.0 to 4.5" in text

    # hand-written notes survive a rewrite; JSON round trip
    out = tmp_path / "teachers.md"
    write_markdown(out, res)
    out.write_text(out.read_text() + "\nMy reading.\n")
    write_results(tmp_path / "t.json", res)
    again = read_results(tmp_path / "t.json")
    assert again["cells"].keys() == res["cells"].keys()
    write_markdown(out, again)
    body = out.read_text()
    assert body.count(NOTES_MARKER) == 1 and body.rstrip().endswith("My reading.")


def test_answers_only_run_needs_no_teacher(tmp_path: Path) -> None:
    from llkd_bench.answers import answers_file, write_answers
    from llkd_bench.datasets import load_dataset
    from llkd.cli import main

    root = _data_root()
    data = load_dataset("sst2", root, 8, 8, 0)
    keys = data.pool.ids + data.test.ids
    probs = np.random.default_rng(0).dirichlet([1.0, 1.0], size=len(keys))
    answers = tmp_path / "answers"
    identity = "fake|no-such-teacher"
    write_answers(answers_file(answers, "sst2", "no-such-teacher"), "sst2", "no-such-teacher", identity, data.schema, keys, probs)
    # the cell an earlier teacher run left: its content-free answer and speed are reused
    out_json, out_md = tmp_path / "teachers.json", tmp_path / "teachers.md"
    res = empty_results()
    prev = _fake_cell("no-such-teacher", "sst2", 0.6, old_format=True)
    prev.update(identity=identity, content_free={"text": "N/A", "probs": [0.7, 0.3]}, test_size_requested=8, pool_size_requested=8)
    res["cells"][cell_key("no-such-teacher", "sst2")] = prev
    write_results(out_json, res)

    argv = ["bench-teachers", "--answers-only", "--rerun", "--teachers", "no-such-teacher", "--datasets", "sst2,agnews",
            "--test-size", "8", "--pool-size", "8", "--data-root", str(root), "--answers", str(answers),
            "--teacher-cache", str(tmp_path / "absent.sqlite"), "--json", str(out_json), "--output", str(out_md)]
    assert main(argv) == 0
    got = json.loads(out_json.read_text())
    assert set(got["cells"]) == {"no-such-teacher|sst2"}  # agnews: no answer file, nothing made up
    cell = got["cells"]["no-such-teacher|sst2"]
    assert cell["sources"]["teacher"] == 0 and cell["sources"]["answer_file"] == 16
    assert cell["test_answered"] == cell["pool_answered"] == 8 and cell["content_free"]["source"] == "earlier cell"
    assert all(cell["scores"][v] is not None and sum(cell["scores"][v]["predicted"]) == 8 for v in VARIANTS)
    assert cell["scores"]["contextual"]["calibrator"]["reference"] == [0.7, 0.3]
    assert cell["speed"]["samples_per_s"] == 4.25 and cell["speed"]["carried_from"] == "2026-11-28"
    assert not (tmp_path / "absent.sqlite").exists()
    assert "--answers-only" in got["runs"][-1]["command"] and "4.25 ᵉ" in out_md.read_text()


@pytest.mark.timeout(120)
def test_real_tiny_run_merges_json(tmp_path: Path) -> None:
    from llkd.cli import main

    root = _data_root()
    out_json, out_md = tmp_path / "teachers.json", tmp_path / "teachers.md"
    # an earlier run's cell for another teacher stays in the merged file
    res = empty_results()
    note_order(res, ["other-teacher"], ["sst2"])
    res["cells"][cell_key("other-teacher", "sst2")] = _fake_cell("other-teacher", "sst2", 0.7)
    write_results(out_json, res)

    argv = ["bench-teachers", "--teachers", "smollm2-135m", "--datasets", "sst2", "--test-size", "8", "--pool-size", "8",
            "--data-root", str(root), "--no-answer-files", "--teacher-cache", str(tmp_path / "cache.sqlite"),
            "--speed-texts", "8", "--json", str(out_json), "--output", str(out_md), "--no-progress"]
    assert main(argv) == 0
    got = json.loads(out_json.read_text())
    assert set(got["cells"]) == {"other-teacher|sst2", "smollm2-135m|sst2"}
    cell = got["cells"]["smollm2-135m|sst2"]
    assert cell["test_size"] == cell["test_answered"] == 8 and cell["pool_answered"] == 8
    assert cell["sources"] == {"answer_file": 0, "cache": 0, "teacher": 17, "texts_incl_content_free": 17}
    for v in VARIANTS:
        s = cell["scores"][v]
        assert 0.0 <= s["accuracy"] <= 1.0 and 0.0 <= s["macro_f1"] <= 1.0 and 0.0 <= s["ece"] <= 1.0
        assert sum(s["predicted"]) == 8 and "over_prediction" in s
    assert len(cell["scores"]["mean"]["calibrator"]["reference"]) == 2 and cell["scores"]["mean"]["calibrator"]["pool_rows"] == 8
    assert len(cell["content_free"]["probs"]) == 2
    assert cell["speed"]["source"] == "labelling run" and cell["speed"]["texts"] == 17 and cell["speed"]["samples_per_s"] > 0
    assert cell["load_avg"]["before"] and cell["identity"].startswith("hf|")
    assert "smollm2-135m" in out_md.read_text()

    # second run: the cell is in the JSON already -> skipped; with --rerun every answer is cached,
    # so speed comes from a timed batch
    assert main(argv) == 0
    assert main(argv + ["--rerun"]) == 0
    cell = json.loads(out_json.read_text())["cells"]["smollm2-135m|sst2"]
    assert cell["sources"]["teacher"] == 0 and cell["sources"]["cache"] == 17
    assert cell["speed"]["source"] == "timed batch" and cell["speed"]["texts"] == 8
    assert len(json.loads(out_json.read_text())["runs"]) == 3
