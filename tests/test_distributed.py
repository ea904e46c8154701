"""Two CPU processes (gloo DDP through accelerate) train one student: thresholds stay in
sync, counts are the whole batch's (summed over ranks), an all-empty step is no update, and
only rank 0 reports."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _torchrun() -> str:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not found next to this Python")
    return torchrun


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_process_training_sums_counts_and_keeps_thresholds_in_sync(tmp_path, demo_dir):
    torchrun = _torchrun()
    pool = [json.loads(x) for x in (demo_dir / "agnews_pool.jsonl").read_text().splitlines()][:32]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool))
    common = ["--data-pool", str(tmp_path / "pool.jsonl"), "--data-labels", str(demo_dir / "agnews_labels.yaml"),
              "--teacher-cache", str(tmp_path / "c.sqlite")]
    # Label first in one process so the two ranks only read the cache.
    label = subprocess.run([sys.executable, "-m", "llkd.cli", "label", "--no-progress", *common], capture_output=True, text=True, timeout=600)
    assert label.returncode == 0, label.stderr[-2000:]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LLKD_RANK_STEP_LOGS": "1"}
    train = [torchrun, "--nproc_per_node", "2", "-m", "llkd.cli", "train", "--no-progress", "--no-report", *common,
             "--student-epochs", "2", "--student-batch-size", "8", "--student-max-length", "32", "--student-device", "cpu",
             "--student-threads", "1"]

    out = subprocess.run([*train, "--student-output", str(tmp_path / "run")], capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.count("student saved to") == 1  # rank 1 neither evaluates nor writes summary.json
    main, other = _rows(tmp_path / "run" / "steps.jsonl"), _rows(tmp_path / "run" / "steps.rank1.jsonl")
    assert len(main) == len(other) == 8 and all(r["batch"] == 8 for r in main)  # the whole batch of 8, 4 per rank
    strip = lambda r: {k: v for k, v in r.items() if k not in ("rank_selected", "loss")}  # noqa: E731
    assert [strip(r) for r in main] == [strip(r) for r in other]  # same thresholds, counts, usage on both ranks
    for a, b in zip(main, other):
        assert a["selected"] == a["rank_selected"] + b["rank_selected"]  # counts summed over ranks
        assert sum(a["selected_per_class"]) == a["selected"]
        if a["loss"] is None:
            assert b["loss"] is None
        else:  # the loss is the batch's selected-set mean on both ranks
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["gradient_samples"] == sum(r["selected"] for r in main)
    assert summary["sample_steps_seen"] == 32 * 2  # 32 texts, 2 epochs
    assert summary["optimizer_updates"] == sum(1 for r in main if r["selected"])
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()

    # A threshold nothing reaches: no process selects anything, so no optimiser step at all.
    out = subprocess.run([*train, "--selector", "fixed", "--selection-fixed-threshold", "1.0", "--student-output", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads((tmp_path / "none" / "summary.json").read_text())
    assert summary["optimizer_updates"] == 0 and summary["gradient_samples"] == 0 and summary["sample_steps_seen"] == 64
