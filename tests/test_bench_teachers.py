"""llkd bench-teachers: the table writer on made-up numbers, the merge of results files, and
one tiny real run (SmolLM2, 8 test + 8 pool texts, a temporary teacher cache)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llkd.bench.teachers import (NOTES_MARKER, cell_key, empty_results, markdown, note_order, parse_sizes,
                                 read_results, score_cell, write_markdown, write_results)

from conftest import shared_data_root as _data_root


def _fake_cell(teacher: str, dataset: str, acc: float) -> dict:
    v = {"n": 100, "accuracy": acc, "macro_f1": acc - 0.1, "ece": 0.2, "mean_confidence": 0.7, "predicted": [50, 50]}
    better = dict(v, accuracy=acc + 0.05, macro_f1=acc)
    return {
        "teacher": teacher, "dataset": dataset, "test_size": 100, "pool_size": 50, "test_answered": 100, "pool_answered": 50,
        "split_seed": 0, "failures": 0, "date": "2026-11-28",
        "scores": {"raw": v, "mean": better, "contextual": v, "majority": {"label": "a", "accuracy": 0.5, "macro_f1": 0.33}},
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
    # A teacher that leans to label 0: raw says 0 for everything; dividing by the pool mean
    # (or by its answer on "N/A") removes the lean and recovers the gold labels.
    test = np.array([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2], [0.7, 0.3]])
    gold = [0, 1, 0, 1]
    pool = np.array([[0.75, 0.25], [0.75, 0.25], [np.nan, np.nan]])
    s = score_cell(test, gold, pool, np.array([0.75, 0.25]), ["a", "b"])
    assert s["raw"]["accuracy"] == 0.5 and s["raw"]["predicted"] == [4, 0]
    assert s["mean"]["reference_texts"] == 2 and s["mean"]["accuracy"] == 1.0
    assert s["contextual"]["accuracy"] == 1.0
    assert s["majority"]["accuracy"] == 0.5
    assert s["raw"]["ece"] is not None
    # no content-free answer: contextual left out
    assert score_cell(test, gold, pool, np.array([np.nan, np.nan]), ["a", "b"])["contextual"] is None


def test_markdown_table_on_fake_numbers(tmp_path: Path) -> None:
    res = empty_results()
    note_order(res, ["t-small", "t-big"], ["d1", "d2"])
    res["cells"][cell_key("t-small", "d1")] = _fake_cell("t-small", "d1", 0.6)
    res["cells"][cell_key("t-big", "d2")] = _fake_cell("t-big", "d2", 0.8)
    res["runs"].append({"command": "llkd bench-teachers --teachers t-small,t-big", "date": "2026-11-28", "wall_s": 90.0,
                        "machine": {"cpus": 2, "cpu": "Fake CPU", "torch": "2.x", "torch_threads": 2, "cuda": False}})
    text = markdown(res)
    assert "| t-small | d1 | 100 | 50 | 60.0 / 50.0 | 65.0 / 60.0 | 60.0 / 50.0 | 0.200 / 0.200 / 0.200 | 4.25 |" in text
    assert "| t-small | d2 | not run |" in text and "| t-big | d1 | not run |" in text
    assert "| t-small | 50.0 → 60.0 m | not run |" in text
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
    for v in ("raw", "mean", "contextual"):
        s = cell["scores"][v]
        assert 0.0 <= s["accuracy"] <= 1.0 and 0.0 <= s["macro_f1"] <= 1.0 and 0.0 <= s["ece"] <= 1.0
        assert sum(s["predicted"]) == 8
    assert len(cell["scores"]["mean"]["reference"]) == 2 and cell["scores"]["mean"]["reference_texts"] == 8
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
