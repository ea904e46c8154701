"""A budgeted run killed (SIGKILL) in mid-round and rerun ends with the answered set of an
uninterrupted run, and the rerun asks the teacher only about texts it never answered (real
SmolLM2 teacher, real frozen MiniLM students); and the dry run's token estimate against the count."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from llkd.cli import main


def _answers(cache):
    with sqlite3.connect(cache) as db:
        return db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]


@pytest.mark.timeout(900)
def test_killed_distill_resumes_to_the_same_answered_set(tmp_path, demo_dir, capsys):
    pool = [json.loads(x) for x in (demo_dir / "agnews_pool.jsonl").read_text().splitlines()][:48]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool))
    args = ["distill", "--no-progress", "--no-report", "--data-pool", str(tmp_path / "pool.jsonl"), "--data-labels", str(demo_dir / "agnews_labels.yaml"),
            "--student-mode", "frozen", "--student-epochs", "2", "--student-max-length", "32", "--student-threads", "1",
            "--distill-budget", "24", "--distill-seed-size", "8", "--distill-min-round", "4", "--distill-acquisition", "margin"]

    assert main([*args, "--teacher-cache", str(tmp_path / "ref.sqlite"), "--student-output", str(tmp_path / "ref")]) == 0
    capsys.readouterr()
    ref = json.loads((tmp_path / "ref" / "distill" / "state.json").read_text())
    ref_rows = [r for rnd in ref["rounds"] for r in rnd["rows"]]
    assert len(ref_rows) == 24 == _answers(tmp_path / "ref.sqlite")

    run, cache = tmp_path / "run", tmp_path / "run.sqlite"
    cmd = [sys.executable, "-m", "llkd.cli", *args, "--teacher-cache", str(cache), "--student-output", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    state = run / "distill" / "state.json"
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if state.exists() and len(json.loads(state.read_text())["rounds"]) >= 3:  # round 2 planned: being asked or trained
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _answers(cache)
    assert 8 <= before < 24

    assert main([*args, "--teacher-cache", str(cache), "--student-output", str(run)]) == 0
    got = json.loads(state.read_text())
    assert [r for rnd in got["rounds"] for r in rnd["rows"]] == ref_rows
    assert _answers(cache) == 24
    summary = json.loads((run / "summary.json").read_text())
    assert summary["distill"]["usage_this_run"]["calls"] == 24 - before  # nothing asked twice
    assert (run / "model" / "config.json").exists()


@pytest.mark.timeout(600)
def test_the_dry_run_estimates_the_tokens_the_run_then_counts(tmp_path, demo_dir, capsys):
    import re

    pool = [json.loads(x) for x in (demo_dir / "agnews_pool.jsonl").read_text().splitlines()][100:120]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool))
    args = ["distill", "--no-progress", "--no-report", "--data-pool", str(tmp_path / "pool.jsonl"), "--data-labels", str(demo_dir / "agnews_labels.yaml"),
            "--teacher-cache", str(tmp_path / "c.sqlite"), "--student-output", str(tmp_path / "out"), "--student-mode", "frozen",
            "--student-epochs", "1", "--student-max-length", "32", "--distill-budget", "100%", "--distill-seed-size", "10", "--distill-min-round", "10",
            "--teacher-price-prompt", "0.5"]
    assert main([*args, "--distill-dry-run"]) == 0
    out = capsys.readouterr().out
    assert not (tmp_path / "c.sqlite").exists() or _answers(tmp_path / "c.sqlite") == 0  # a dry run asks nothing
    estimated = int(re.search(r"whole pool \(20 texts\): estimate: 20 calls, ([\d,]+) prompt", out).group(1).replace(",", ""))
    assert "$" in out  # the price turns tokens into money
    assert main(args) == 0
    counted = json.loads((tmp_path / "out" / "summary.json").read_text())["distill"]["usage_this_run"]["prompt_tokens"]
    assert abs(estimated - counted) <= 0.1 * counted
