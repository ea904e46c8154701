"""A training run killed (SIGKILL) mid-way and resumed ends exactly where an uninterrupted
run ends: same weights, same step log (real teacher answers, real MiniLM student)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from llkd.cli import main


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.timeout(600)
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, demo_dir, capsys):
    pool = [json.loads(x) for x in (demo_dir / "agnews_pool.jsonl").read_text().splitlines()][:32]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool))
    common = ["--no-progress", "--data-pool", str(tmp_path / "pool.jsonl"), "--data-labels", str(demo_dir / "agnews_labels.yaml"),
              "--teacher-cache", str(tmp_path / "c.sqlite")]
    assert main(["label", *common]) == 0
    train = ["train", *common, "--no-report", "--student-epochs", "2", "--student-batch-size", "4", "--student-max-length", "32",
             "--student-threads", "1", "--student-checkpoint-every", "1"]

    assert main([*train, "--student-output", str(tmp_path / "ref")]) == 0
    capsys.readouterr()

    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "llkd.cli", *train, "--student-output", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        log = run / "steps.jsonl"
        if log.exists() and len(log.read_text().splitlines()) >= 5:  # 5 of 16 steps done
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "model").exists() and (run / "checkpoint.pt").exists()

    assert main([*train, "--student-output", str(run)]) == 0
    ref_steps, steps = _rows(tmp_path / "ref" / "steps.jsonl"), _rows(run / "steps.jsonl")
    assert [r["step"] for r in steps] == list(range(1, 17))
    assert steps == ref_steps  # thresholds, selections, losses, learning rates
    ref, got = load_file(tmp_path / "ref" / "model" / "model.safetensors"), load_file(run / "model" / "model.safetensors")
    assert ref.keys() == got.keys()
    assert all(bool((ref[k] == got[k]).all()) for k in ref)
    assert json.loads((run / "summary.json").read_text())["gradient_samples"] == json.loads((tmp_path / "ref" / "summary.json").read_text())["gradient_samples"]
