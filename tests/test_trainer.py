"""Trainer bookkeeping that needs no model."""


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
