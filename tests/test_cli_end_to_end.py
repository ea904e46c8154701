"""The CLI end to end with the real packaged teacher and student on a tiny slice."""

import json

import numpy as np
import pytest

from llkd.cli import main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, demo_dir):
    root = tmp_path_factory.mktemp("tiny")
    pool = [json.loads(x) for x in (demo_dir / "agnews_pool.jsonl").read_text().splitlines()][:40]
    test = [json.loads(x) for x in (demo_dir / "agnews_test.jsonl").read_text().splitlines()][:24]
    (root / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool))
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    config = {
        "data": {"pool": "pool.jsonl", "test": "test.jsonl", "labels": str(demo_dir / "agnews_labels.yaml"), "id_column": "id"},
        "teacher": {"model": "smollm2-135m", "calibration": "mean", "cache": "teacher.sqlite", "batch_size": 8},
        "selection": {"selector": "llkd"},
        "student": {"model": "minilm", "epochs": 1, "batch_size": 8, "max_length": 48, "output": "run"},
    }
    import yaml

    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return root


@pytest.mark.timeout(600)
def test_label_train_evaluate_predict_export(tiny, capsys):
    cfg = str(tiny / "config.yaml")
    assert main(["label", "--config", cfg, "--no-progress", "--export", str(tiny / "answers.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "40 texts: 0 from cache, 40 asked, 0 failed" in out
    answers = [json.loads(x) for x in (tiny / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 40 and all(abs(sum(a["probs"]) - 1) < 1e-4 for a in answers)
    assert all(a["method"] == "verbalizer" for a in answers)

    assert main(["train", "--config", cfg, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "macro-F1" in out
    summary = json.loads((tiny / "run" / "summary.json").read_text())
    assert 0 < summary["data_usage"] <= 1 and summary["steps"] == 5
    steps = [json.loads(x) for x in (tiny / "run" / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 5
    assert all(len(s["teacher_threshold"]) == 4 and len(s["student_threshold"]) == 4 for s in steps)
    assert sum(s["selected"] for s in steps) == summary["gradient_samples"]

    # A plain transformers load of the saved folder works (the pooled-embedding head ships
    # its modeling file), with the label names.
    from transformers import AutoModelForSequenceClassification

    m = AutoModelForSequenceClassification.from_pretrained(str(tiny / "run" / "model"), trust_remote_code=True)
    assert m.config.id2label[3] == "Sci/Tech"
    assert type(m).__name__ == "PooledEncoderClassifier" and m.config.llkd_pooling == "mean"

    # Re-running resumes from the final checkpoint: no new steps, same model.
    assert main(["train", "--config", cfg, "--no-progress"]) == 0
    capsys.readouterr()
    assert len((tiny / "run" / "steps.jsonl").read_text().splitlines()) == 5

    assert main(["evaluate", "--model", str(tiny / "run" / "model"), "--data", str(tiny / "test.jsonl"), "--json", str(tiny / "eval.json")]) == 0
    rep = json.loads((tiny / "eval.json").read_text())
    assert 0 <= rep["accuracy"] <= 1 and len(rep["confusion"]) == 4 and sum(map(sum, rep["confusion"])) == 24

    assert main(["predict", "--model", str(tiny / "run" / "model"), "--text", "The Yankees won the series", "--output", str(tiny / "pred.jsonl")]) == 0
    pred = json.loads((tiny / "pred.jsonl").read_text())
    assert pred["label"] in {"World", "Sports", "Business", "Sci/Tech"} and set(pred["probs"]) == {"World", "Sports", "Business", "Sci/Tech"}


@pytest.mark.timeout(600)
def test_train_auto_calibration_chooses_on_the_dev_split(tiny, demo_dir, capsys):
    """calibration auto with a labelled dev split: the teacher also answers the dev texts, every
    candidate calibrator is scored there, the best is used, and the console, summary.json and
    report.md say which and why."""
    rows = [json.loads(x) for x in (demo_dir / "agnews_test.jsonl").read_text().splitlines()][24:56]
    (tiny / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out_dir = tiny / "run-auto"
    assert main(["train", "--config", str(tiny / "config.yaml"), "--no-progress", "--teacher-calibration", "auto",
                 "--data-dev", str(tiny / "dev.jsonl"), "--student-output", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "calibration auto -> " in out and "best teacher macro-F1 on 32 dev texts" in out
    cal = json.loads((out_dir / "summary.json").read_text())["calibration"]
    assert cal["name"] == "auto" and set(cal["dev_macro_f1"]) == {"mean", "prior:votes", "prior:dev", "none", "balanced"}
    assert cal["dev_macro_f1"][cal["chosen"]] == max(cal["dev_macro_f1"].values())
    assert len(cal["class_prior"]) == 4 and abs(sum(cal["class_prior"]) - 1) < 1e-3
    assert f"calibration auto -> {cal['chosen']}" in (out_dir / "report.md").read_text()


@pytest.mark.timeout(300)
def test_onnx_export_matches_torch(tiny, capsys):
    model_dir = tiny / "run" / "model"
    if not model_dir.exists():
        pytest.skip("needs the trained model from the previous test")
    assert main(["export", "--model", str(model_dir)]) == 0
    elsewhere = tiny / "exports" / "not-yet" / "student.onnx"  # a missing folder is created
    assert main(["export", "--model", str(model_dir), "--output", str(elsewhere)]) == 0 and elsewhere.stat().st_size > 0
    import onnxruntime as ort
    import torch

    from llkd.student.model import load_trained

    model, tok, _ = load_trained(model_dir)
    enc = tok(["Oil prices climb as supply worries grow", "New chip doubles laptop battery life"], padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = model(**enc).logits.numpy()
    sess = ort.InferenceSession(str(model_dir / "model.onnx"))
    got = sess.run(["logits"], {"input_ids": enc["input_ids"].numpy(), "attention_mask": enc["attention_mask"].numpy()})[0]
    assert np.allclose(ref, got, atol=1e-4)


def test_bad_input_exits_2_with_message(tmp_path, demo_dir, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "  "}\n')
    code = main(["label", "--data-pool", str(bad), "--data-labels", str(demo_dir / "agnews_labels.yaml"), "--teacher-cache", str(tmp_path / "c.sqlite")])
    assert code == 2
    err = capsys.readouterr().err
    assert "bad.jsonl: row 2, column 'text': text is empty or whitespace-only" in err


def _help(capsys, command: str) -> str:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return "".join(capsys.readouterr().out.split())  # undo argparse's line wrapping


def test_train_help_documents_every_option(capsys):
    from llkd.config import SECTIONS, _flag

    helps = {"train": _help(capsys, "train"), "distill": _help(capsys, "distill")}
    for section, cls in SECTIONS.items():
        for command in ("distill",) if section == "distill" else ("train", "distill"):
            for name, field in cls.model_fields.items():
                assert _flag(section, name, field) in helps[command], (command, name)
                assert "".join((field.description or "").split()) in helps[command]
    out = helps["train"]
    assert "--distill-budget" not in out  # the loop's settings belong to llkd distill
    assert "--selector" in out and "--teacher-model" in out and "--student-epochs" in out
    assert "(default:None)(default:None)" not in out  # no argparse default tacked on twice


def _outside_llkd_probs(model_dir, texts):
    """Probabilities from plain transformers, without importing llkd's model code."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    with torch.no_grad():
        enc = tok(texts, padding=True, truncation=True, max_length=48, return_tensors="pt")
        return torch.softmax(model(**enc).logits, dim=-1).numpy()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", ["frozen", "finetune"])
def test_student_modes_match_outside_llkd_and_onnx(tiny, capsys, mode):
    """llkd train in each student mode (llkd selector); the saved folder gives llkd's own
    predictions through plain transformers and through ONNX Runtime."""
    cfg = str(tiny / "config.yaml")
    out = tiny / f"run-{mode}"
    args = ["train", "--config", cfg, "--no-progress", "--student-mode", mode, "--student-output", str(out), "--student-dtype", "float32"]
    if mode == "frozen":
        args += ["--student-epochs", "5"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "macro-F1" in printed
    summary = json.loads((out / "summary.json").read_text())
    steps = [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == summary["steps"] and sum(s["selected"] for s in steps) == summary["gradient_samples"] > 0
    assert all(len(s["teacher_threshold"]) == 4 and len(s["student_threshold"]) == 4 for s in steps)
    meta = json.loads((out / "model" / "llkd.json").read_text())
    assert meta["mode"] == mode and meta["dtype"] == "float32"

    texts = ["Oil prices climb as supply worries grow", "New chip doubles laptop battery life", "The Yankees won the series"]
    from llkd.pipeline import student_probs

    ours, _ = student_probs(out / "model", texts, 48, reuse_embeddings=False)
    assert np.allclose(_outside_llkd_probs(out / "model", texts), ours, atol=1e-5)

    assert main(["export", "--model", str(out / "model")]) == 0
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out / "model"))
    enc = tok(texts, padding=True, return_tensors="np")
    sess = ort.InferenceSession(str(out / "model" / "model.onnx"))
    logits = sess.run(["logits"], {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})[0]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    assert np.allclose(probs / probs.sum(1, keepdims=True), ours, atol=1e-4)


def test_frozen_mode_reuses_cached_embeddings(tiny, caplog):
    """A second frozen run (another selector) encodes nothing: every embedding is cached."""
    import logging

    cfg = str(tiny / "config.yaml")
    base = ["train", "--config", cfg, "--no-progress", "--student-mode", "frozen", "--student-epochs", "2", "--student-dtype", "float32"]
    assert main(base + ["--student-output", str(tiny / "fz-a"), "--selector", "all"]) == 0
    with caplog.at_level(logging.INFO, logger="llkd.student.trainer"):
        assert main(base + ["--student-output", str(tiny / "fz-b"), "--selector", "soft"]) == 0
    assert "40 pool embeddings (0 encoded now, 40 from cache)" in caplog.text
