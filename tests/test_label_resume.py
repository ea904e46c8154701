"""`llkd label` killed with SIGKILL halfway resumes without re-scoring cached texts."""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest


def _count(db_path) -> int:
    try:
        with sqlite3.connect(db_path, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.timeout(300)
def test_sigkill_then_resume_asks_only_missing(tmp_path, demo_dir):
    rows = [json.loads(line) for line in (demo_dir / "agnews_pool.jsonl").read_text().splitlines()][:32]
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cache = tmp_path / "teacher.sqlite"
    cmd = [sys.executable, "-m", "llkd.cli", "label", "--no-progress", "--data-pool", str(pool),
           "--data-labels", str(demo_dir / "agnews_labels.yaml"), "--data-id-column", "id",
           "--teacher-cache", str(cache), "--teacher-batch-size", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while _count(cache) == 0 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "labelling finished before it could be killed: " + proc.stdout.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _count(cache)
    assert 0 < done < len(rows)
    with sqlite3.connect(cache) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    m = re.search(r"(\d+) texts: (\d+) from cache, (\d+) asked, (\d+) failed", out.stdout)
    assert m, out.stdout
    assert [int(g) for g in m.groups()] == [len(rows), done, len(rows) - done, 0]
    assert _count(cache) == len(rows)
