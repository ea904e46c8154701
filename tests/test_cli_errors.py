"""A careless or hostile user gets one line and exit 2, and `train` says so before any
teacher or model runs. No model is loaded here (the checks come first), so this is fast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llkd.cli import main


@pytest.fixture
def files(tmp_path: Path, demo_dir: Path) -> dict[str, Path]:
    rows = [json.loads(x) for x in (demo_dir / "agnews_test.jsonl").read_text().splitlines()][:6]
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in rows))
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"pool": pool, "test": test, "labels": demo_dir / "agnews_labels.yaml", "cache": tmp_path / "cache.sqlite", "out": tmp_path / "run"}


@pytest.fixture
def no_teacher(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any teacher run fails the test: the error must come first."""

    def ran(*_: Any, **__: Any) -> None:
        raise AssertionError("the teacher ran before the error was reported")

    monkeypatch.setattr("llkd.commands.train.pseudo_label", ran)
    monkeypatch.setattr("llkd.commands.label.pseudo_label", ran)


def train_args(files: dict[str, Path], *extra: str) -> list[str]:
    return ["train", "--data-pool", str(files["pool"]), "--data-test", str(files["test"]), "--data-labels", str(files["labels"]),
            "--data-id-column", "id", "--teacher-cache", str(files["cache"]), "--student-output", str(files["out"]), "--no-progress", *extra]


def one_line_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"llkd {command}: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--selector", "llkdd"], "unknown selector 'llkdd'; choose one of: "),
        (["--teacher-backend", "vllm"], "unknown teacher backend 'vllm'; choose one of: hf, llamacpp, openai"),
        (["--teacher-template", "no-such-template"], "prompt template 'no-such-template' is neither built in"),
        (["--teacher-device", "gpu"], "teacher.device: device must be one of auto, cpu, cuda, cuda:N, mps, not 'gpu'"),
        (["--student-device", "bogus"], "student.device: device must be one of auto, cpu, cuda, cuda:N, mps, not 'bogus'"),
        (["--teacher-backend", "openai"], "needs teacher.base_url"),
        (["--student", "/no/such/encoder"], "student model '/no/such/encoder' is neither"),
        # a setting the backend would ignore is refused, not swallowed
        (["--teacher-votes", "3"], "teacher.votes does not apply to the hf teacher backend (it reads: batch_size, device, dtype, model, template)"),
        (["--teacher-backend", "openai", "--teacher-base-url", "http://127.0.0.1:9/v1", "--teacher-dtype", "bfloat16", "--teacher-batch-size", "4"],
         "teacher.batch_size, teacher.dtype does not apply to the openai teacher backend"),
    ],
)
def test_train_rejects_bad_settings_before_the_teacher(files: dict[str, Path], no_teacher: None, capsys: pytest.CaptureFixture[str], extra: list[str], words: str) -> None:
    assert main(train_args(files, *extra)) == 2
    assert words in one_line_error(capsys, "train")


def test_backend_options_that_apply_or_stay_at_their_default_pass() -> None:
    from llkd.config import TeacherConfig
    from llkd.teacher.labeling import check_backend_options

    check_backend_options(TeacherConfig(backend="openai", base_url="http://x/v1", votes=3, confidence="vote"))
    check_backend_options(TeacherConfig(backend="hf", dtype="bfloat16", batch_size=4))
    check_backend_options(TeacherConfig(backend="openai", base_url="http://x/v1", device="auto"))  # set, but to the default


def test_train_rejects_a_bad_test_file_before_the_teacher(files: dict[str, Path], no_teacher: None, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [json.loads(x) for x in files["test"].read_text().splitlines()]
    rows[2]["label"] = "Weather"
    files["test"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(train_args(files)) == 2
    assert "row 3, column 'label': label 'Weather' is not in the label schema" in capsys.readouterr().err


def test_unavailable_cuda_is_named_before_the_teacher(files: dict[str, Path], no_teacher: None, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(train_args(files, "--student-device", "cuda:0")) == 2
    assert "student.device 'cuda:0': CUDA is not available on this machine" in one_line_error(capsys, "train")


def test_label_rejects_bad_teacher_settings(files: dict[str, Path], no_teacher: None, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["label", "--data-pool", str(files["pool"]), "--data-labels", str(files["labels"]), "--teacher-cache", str(files["cache"])]
    assert main(base + ["--teacher-backend", "gpt"]) == 2
    assert "unknown teacher backend 'gpt'" in one_line_error(capsys, "label")
    bad = files["pool"].with_name("bad_template.yaml")
    bad.write_text("kind: chat\ninstruction: x\nbody: 'no text slot'\n")
    assert main(base + ["--teacher-template", str(bad)]) == 2
    assert "template body must contain {text}" in one_line_error(capsys, "label")


@pytest.mark.parametrize("kind", ["folder", "truncated_parquet"])
def test_unreadable_pool_is_one_line(files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    if kind == "folder":
        pool = tmp_path / "pool_dir.jsonl"
        pool.mkdir()
        words = "a folder"
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pool = tmp_path / "pool.parquet"
        pq.write_table(pa.Table.from_pylist([{"text": f"text {i}"} for i in range(200)]), pool)
        pool.write_bytes(pool.read_bytes()[: pool.stat().st_size // 2])  # as a killed copy leaves it
        words = "not a readable Parquet file"
    assert main(["label", "--data-pool", str(pool), "--data-labels", str(files["labels"]), "--teacher-cache", str(files["cache"])]) == 2
    assert words in one_line_error(capsys, "label")


def _fake_student(folder: Path, llkd_json: bool) -> Path:
    """An HF-looking folder; with llkd.json it passes the check (nothing is loaded before)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "model.safetensors").write_bytes(b"")
    if llkd_json:
        (folder / "llkd.json").write_text(json.dumps({"schema": {"labels": [{"name": "a"}, {"name": "b"}]}}))
    return folder


def test_predict_and_evaluate_refuse_a_folder_llkd_did_not_train(files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from llkd.models import student_path

    encoder = student_path("minilm")  # a real HF encoder: it would load with a random head
    assert main(["predict", "--model", str(encoder), "--text", "The Yankees won"]) == 2
    assert "not a student trained by llkd (no llkd.json)" in one_line_error(capsys, "predict")
    assert main(["evaluate", "--model", str(encoder), "--data", str(files["test"])]) == 2
    assert "not a student trained by llkd" in one_line_error(capsys, "evaluate")
    run = tmp_path / "run"
    _fake_student(run / "model", llkd_json=True)
    assert main(["predict", "--model", str(run), "--text", "x"]) == 2  # the run folder, not its model
    assert f"did you mean {run / 'model'}?" in one_line_error(capsys, "predict")
    assert main(["predict", "--model", str(tmp_path / "nothing"), "--text", "x"]) == 2
    assert "no such folder" in one_line_error(capsys, "predict")


def test_export_refuses_a_non_student_and_an_unsupported_opset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--model", str(_fake_student(tmp_path / "plain", llkd_json=False))]) == 2
    assert "not a student trained by llkd" in one_line_error(capsys, "export")
    student = _fake_student(tmp_path / "student", llkd_json=True)
    assert main(["export", "--model", str(student), "--opset", "99"]) == 2
    assert "--opset 99 is not supported; this torch exports opsets 7 to" in one_line_error(capsys, "export")


def test_label_export_with_an_unknown_suffix_is_refused_before_the_teacher(files: dict[str, Path], no_teacher: None, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["label", "--data-pool", str(files["pool"]), "--data-labels", str(files["labels"]), "--teacher-cache", str(files["cache"])]
    assert main(args + ["--export", str(files["pool"].with_name("answers.xlsx"))]) == 2
    assert "--export answers.xlsx" in one_line_error(capsys, "label")


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ("data:\n  pool: x.csv\nteacher: {model: smollm2-135m\nstudent:\n  epochs: 3\n",
         "not valid YAML: line 4, column 8: expected ',' or '}', but got ':' (while parsing a flow mapping at line 3)"),
        ("teacher: 5\n", "section 'teacher' must be a mapping of options (e.g. teacher: {backend: hf}), not int '5'"),
        ("data: [pool.csv]\n", "section 'data' must be a mapping of options"),
        ("selection: llkd\n", "section 'selection' must be a mapping of options"),
    ],
    ids=["yaml-syntax", "teacher-int", "data-list", "selection-str"],
)
def test_a_broken_config_file_is_one_line(files: dict[str, Path], no_teacher: None, capsys: pytest.CaptureFixture[str], config: str, words: str) -> None:
    path = files["pool"].with_name("config.yaml")
    path.write_text(config)
    assert main(["train", "--config", str(path)]) == 2  # before: 8 lines of YAML context, or an AttributeError
    assert words in one_line_error(capsys, "train")


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ('labels:\n  - name: "  "\n  - b\n', "label 1 has a blank name ('  ')"),
        ('labels: [a, ""]\n', "label 2 has a blank name ('')"),
        ('labels:\n  - name: a\n    verbalizer: " "\n  - b\n', "label 1 ('a') has a blank verbalizer"),
        ("labels:\n  - a\n  b: c\n", "cannot parse label schema: line 3, column 3: expected <block end>"),
    ],
    ids=["blank-name", "empty-name", "blank-verbalizer", "yaml-syntax"],
)
def test_a_blank_label_or_broken_schema_is_one_line(files: dict[str, Path], no_teacher: None, capsys: pytest.CaptureFixture[str], schema: str, words: str) -> None:
    labels = files["pool"].with_name("labels.yaml")
    labels.write_text(schema)
    assert main(["label", "--data-pool", str(files["pool"]), "--data-labels", str(labels), "--teacher-cache", str(files["cache"])]) == 2
    assert words in one_line_error(capsys, "label")


def test_a_blank_label_name_is_refused_in_the_api() -> None:
    from llkd.data.errors import DataError
    from llkd.data.schema import LabelSchema

    with pytest.raises(DataError, match="label 2 has a blank name"):
        LabelSchema.from_names(["World", "  ", "Sports"])


def test_a_template_with_a_yaml_error_is_one_line(files: dict[str, Path], no_teacher: None, capsys: pytest.CaptureFixture[str]) -> None:
    bad = files["pool"].with_name("template.yaml")
    bad.write_text("kind: chat\ninstruction: [unclosed\nbody: '{text}'\n")
    args = ["label", "--data-pool", str(files["pool"]), "--data-labels", str(files["labels"]), "--teacher-cache", str(files["cache"]), "--teacher-template", str(bad)]
    assert main(args) == 2
    assert "prompt template is not valid YAML: line 3, column 5:" in one_line_error(capsys, "label")


def _student_folder(folder: Path, weights: str, config: dict[str, Any]) -> Path:
    """A folder that looks like a trained student (llkd.json, tokenizer) with the given weights file."""
    import shutil

    from llkd.models import student_path

    encoder = student_path("minilm")
    folder.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(encoder / name, folder / name)
    base = json.loads((encoder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(base | {"architectures": ["BertForSequenceClassification"], "id2label": {"0": "a", "1": "b"},
                                                          "label2id": {"a": 0, "b": 1}} | config))
    (folder / "llkd.json").write_text(json.dumps({"schema": {"labels": [{"name": "a"}, {"name": "b"}]}}))
    if weights == "pickle":
        import pickle

        (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    else:
        shutil.copy(encoder / "model.safetensors", folder / "model.safetensors")
    return folder


@pytest.mark.parametrize(
    ("weights", "config", "words"),
    [
        ("pickle", {}, "only pickled weights (pytorch_model.bin), which llkd never loads"),
        ("safetensors", {"model_type": "evilnet", "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModelForSequenceClassification": "evil.Evil"}},
         "model_type 'evilnet' is not a transformers architecture; it would need the folder's own code"),
    ],
    ids=["pickled-weights", "remote-code"],
)
@pytest.mark.parametrize("command", ["predict", "evaluate", "export"])
def test_a_student_folder_needing_pickle_or_remote_code_is_one_line(tmp_path: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                                                    weights: str, config: dict[str, Any], words: str, command: str) -> None:
    folder = _student_folder(tmp_path / "student", weights, config)
    args = {"predict": ["--text", "x"], "evaluate": ["--data", str(files["test"])], "export": []}[command]
    assert main([command, "--model", str(folder), *args]) == 2  # before: an UnpicklingError or a trust_remote_code traceback
    assert words in one_line_error(capsys, command)


def test_loading_a_student_that_needs_remote_code_is_refused_in_the_api(tmp_path: Path) -> None:
    """Past the CLI's check too (Student.load, load_trained): ModelNotFound, no code run."""
    from llkd.models import ModelNotFound
    from llkd.student.model import load_trained

    folder = _student_folder(tmp_path / "student", "safetensors", {"model_type": "evilnet", "auto_map": {"AutoConfig": "evil.EvilConfig"}})
    (folder / "evil.py").write_text("raise SystemExit('custom code ran')\n")
    with pytest.raises(ModelNotFound, match="cannot load the student: "):
        load_trained(folder)


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_works_before_and_after_the_subcommand(where: str) -> None:
    from llkd.cli import build_parser

    args = ["-v", "label"] if where == "before" else ["label", "-v"]  # before the fix, 'label -v' was an error
    assert build_parser().parse_args(args).verbose is True
    assert build_parser().parse_args(["label"]).verbose is False
