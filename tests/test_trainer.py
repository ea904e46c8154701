"""Trainer bookkeeping that needs no model, and `llkd train` resuming from a bad checkpoint
(MiniLM in frozen mode on six texts whose teacher answers are cached)."""


def test_resume_trims_step_log_rows_after_the_checkpoint(tmp_path):
    """Rows logged after the last checkpoint (before a kill) are dropped on resume, so the
    resumed run does not repeat steps in steps.jsonl; a half-written last line goes too."""
    import json

    from llkd.student.trainer import trim_step_log

    log = tmp_path / "steps.jsonl"
    log.write_text("".join(json.dumps({"step": k, "selected": 1}) + "\n" for k in range(1, 8)) + '{"step": 8, "sel')
    assert trim_step_log(log, 5) == 5
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [1, 2, 3, 4, 5]
    assert trim_step_log(tmp_path / "missing.jsonl", 3) == 0


class Planted:
    """An object only full unpickling would build (and run code for)."""


def _checkpoints(tmp_path):
    """(name, path) of checkpoint files the trainer must refuse without loading them."""
    import pickle

    import torch

    good = tmp_path / "real.pt"
    torch.save({"model": {"w": torch.zeros(4000)}, "fingerprint": "f"}, good)
    files = {"truncated": good.read_bytes()[: good.stat().st_size // 2], "empty": b"", "text": b"not a checkpoint\n",
             "pickled": pickle.dumps({"model": Planted()})}
    out = []
    for name, data in files.items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(data)
        out.append((name, path))
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    out.append(("tensor", tmp_path / "tensor.pt"))
    return out


def test_unreadable_checkpoints_are_one_line_and_left_alone(tmp_path):
    import pytest

    from llkd.data.errors import DataError
    from llkd.student.trainer import read_checkpoint

    words = {"truncated": "unreadable checkpoint, truncated or not a torch file", "empty": "unreadable checkpoint",
             "text": "not a checkpoint llkd can read", "pickled": "pickled objects, which llkd never loads", "tensor": "not a checkpoint written by llkd train"}
    for name, path in _checkpoints(tmp_path):
        before = path.read_bytes()
        with pytest.raises(DataError) as err:
            read_checkpoint(path)
        message = str(err.value)
        assert words[name] in message and "\n" not in message and "--no-student-resume" in message, (name, message)
        assert path.read_bytes() == before


def test_train_with_a_bad_checkpoint_is_one_line(tmp_path, monkeypatch, capsys):
    import json

    from llkd.cli import main
    from llkd.config import TeacherConfig
    from llkd.data.schema import LabelSchema
    from llkd.teacher import TeacherAnswer, TeacherCache, build_teacher
    from llkd.teacher.cache import text_hash

    monkeypatch.setenv("LLKD_CACHE_DIR", str(tmp_path / "llkd-cache"))  # the frozen student's embedding cache
    texts = ["Stocks fall", "Arsenal win", "Mars rover lands", "Talks resume", "Oil climbs", "Federer wins"]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    (tmp_path / "labels.yaml").write_text("labels: [World, Sports]\n")
    url = "http://127.0.0.1:9/v1"  # nothing listens: every answer must come from the cache
    identity = build_teacher(TeacherConfig(backend="openai", model="m", base_url=url), LabelSchema.from_names(["World", "Sports"])).identity()
    with TeacherCache(tmp_path / "teacher.sqlite") as cache:
        cache.put_many(identity, [(text_hash(t), None, TeacherAnswer([0.8, 0.2] if i % 2 else [0.3, 0.7], "vote")) for i, t in enumerate(texts)])
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"PK\x03\x04 half a zip")  # a copy cut short
    args = ["train", "--data-pool", str(tmp_path / "pool.jsonl"), "--data-labels", str(tmp_path / "labels.yaml"), "--teacher-backend", "openai",
            "--teacher-model", "m", "--teacher-base-url", url, "--teacher-cache", str(tmp_path / "teacher.sqlite"), "--teacher-calibration", "none",
            "--student-mode", "frozen", "--student-epochs", "1", "--student-output", str(out), "--no-report", "--no-progress"]
    assert main(args) == 2  # before: a RuntimeError traceback from torch.load
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"llkd train: error: {out / 'checkpoint.pt'}: unreadable checkpoint") and "--no-student-resume" in err
    assert (out / "checkpoint.pt").read_bytes() == b"PK\x03\x04 half a zip"  # left as it was
    assert main([*args, "--no-student-resume"]) == 0  # as the message says: trains from the start
