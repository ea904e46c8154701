"""Two CPU processes (gloo DDP through accelerate) train one student with shared thresholds."""

import json
import shutil
import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_process_training_keeps_thresholds_in_sync(tmp_path, demo_dir):
    torchrun = shutil.which("torchrun", path=str(__import__("pathlib").Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not found next to this Python")
    pool = [json.loads(x) for x in (demo_dir / "agnews_pool.jsonl").read_text().splitlines()][:32]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool))
    cmd = [torchrun, "--nproc_per_node", "2", "-m", "llkd.cli", "train", "--no-progress",
           "--data-pool", str(tmp_path / "pool.jsonl"), "--data-labels", str(demo_dir / "agnews_labels.yaml"),
           "--teacher-cache", str(tmp_path / "c.sqlite"), "--student-epochs", "1", "--student-batch-size", "8",
           "--student-max-length", "32", "--student-device", "cpu", "--student-threads", "1", "--student-output", str(tmp_path / "run")]
    # Label first in one process so the two ranks only read the cache.
    label = [sys.executable, "-m", "llkd.cli", "label", "--no-progress", *cmd[cmd.index("--data-pool"):cmd.index("--student-epochs")]]
    assert subprocess.run(label, capture_output=True, text=True, timeout=600).returncode == 0
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    steps = [json.loads(x) for x in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 4 and all(s["batch"] == 4 for s in steps)  # each rank takes half of a batch of 8
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()
