"""Entities end to end (data.task: entities): `llkd label`, `train`, `predict` and `export`
with the real packaged teacher (SmolLM2-135M) and student (MiniLM) on a tiny NCBI-disease
slice (16 pool sentences, 8 test sentences), one malformed tag file, and the Python API's
round trip. Skipped where the shared NER data is absent."""

from __future__ import annotations

import importlib.util
import json
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from llkd.cli import main
from llkd.data.entities import load_entities
from llkd.teacher.entities import examples_from

POOL, TEST = 16, 8
MAX_NEW_TOKENS = 32  # short replies: the slice's sentences name few diseases (a looping reply stops here)
SCHEMA_YAML = "task: sentence from a biomedical abstract\nentities:\n  - name: Disease\n    description: a disease, disorder or syndrome\n"
SHOTS = 3  # train sentences after the pool's, as few-shot examples in a completion template: without
# them SmolLM2-135M writes no "type: words" line at all on this slice (teacher F1 0)


def shared_data_root() -> Path:
    """conftest.shared_data_root, loaded by path (``from conftest import`` can get
    benchmarks/tests/conftest.py when that was collected first)."""
    spec = importlib.util.spec_from_file_location("_llkd_tests_conftest", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.shared_data_root()


def conll_sentences(path: Path, n: int) -> list[list[tuple[str, str]]]:
    """The first ``n`` sentences of 8 to 25 tokens with at least one entity, as (token, tag)."""
    sentences, current = [], []
    for line in path.read_text(encoding="utf-8").split("\n") + [""]:
        if line.strip():
            token, tag = line.split("\t")
            current.append((token, tag.strip()))
            continue
        if 8 <= len(current) <= 25 and any(tag != "O" for _, tag in current):
            sentences.append(current)
        current = []
        if len(sentences) == n:
            break
    return sentences


def write_conll(path: Path, sentences: list[list[tuple[str, str]]]) -> Path:
    path.write_text("".join("".join(f"{t}\t{g}\n" for t, g in s) + "\n" for s in sentences), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    ncbi = shared_data_root() / "ner" / "NCBI-disease"
    if not (ncbi / "train.tsv").exists() or not (ncbi / "test.tsv").exists():
        pytest.skip(f"{ncbi} not found")
    root = tmp_path_factory.mktemp("entities")
    schema = root / "diseases.yaml"
    schema.write_text(SCHEMA_YAML)
    train = conll_sentences(ncbi / "train.tsv", POOL + SHOTS)
    shots = load_entities(write_conll(root / "shots.tsv", train[POOL:]))
    template = root / "fewshot.yaml"
    builtin = yaml.safe_load(resources.files("llkd.resources.templates").joinpath("entities.yaml").read_text("utf-8"))["completion"]
    template.write_text(yaml.safe_dump({**builtin, "examples": examples_from(shots, range(SHOTS))}))
    found = {"pool": write_conll(root / "pool.tsv", train[:POOL]), "test": write_conll(root / "test.tsv", conll_sentences(ncbi / "test.tsv", TEST)),
             "labels": schema, "template": template, "cache": root / "teacher.sqlite", "out": root / "run", "root": root}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("llkd.entity_pipeline.MAX_NEW_TOKENS", MAX_NEW_TOKENS)
        yield found


def common(files: dict[str, Path]) -> list[str]:
    return ["--data-task", "entities", "--data-pool", str(files["pool"]), "--data-labels", str(files["labels"]),
            "--teacher-cache", str(files["cache"]), "--teacher-template", str(files["template"]), "--teacher-batch-size", "8", "--teacher-device", "cpu", "--teacher-dtype", "float32", "--no-progress"]


def train_args(files: dict[str, Path]) -> list[str]:
    return ["train", *common(files), "--data-test", str(files["test"]), "--student-output", str(files["out"]), "--student-epochs", "2",
            "--student-max-length", "48", "--student-batch-size", "4", "--student-threads", "1", "--student-lr", "3e-4"]


def one_line_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"llkd {command}: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def cached_answers(files: dict[str, Path]) -> int:
    from llkd.teacher.cache import TeacherCache

    with TeacherCache(files["cache"]) as cache:
        return cache.count_entity_answers()


@pytest.fixture
def no_teacher(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any generation fails the test (the cache must answer, or the error come first)."""

    def asked(*_: Any, **__: Any) -> None:
        raise AssertionError("the entity teacher was asked")

    monkeypatch.setattr("llkd.teacher.entities.HFEntityTeacher.extract", asked)


@pytest.mark.timeout(300)
def test_label_train_predict_export(files: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    answers = files["root"] / "answers.jsonl"
    assert main(["label", *common(files), "--export", str(answers)]) == 0
    out = capsys.readouterr().out
    assert f"{POOL} texts: 0 from cache, {POOL} asked, 0 failed" in out and "teacher entity micro-F1 against this file's gold" in out
    rows = [json.loads(x) for x in answers.read_text().splitlines()]
    assert len(rows) == POOL and all(s["text"] == r["text"][s["start"]:s["end"]] for r in rows for s in r["spans"])
    assert cached_answers(files) == POOL

    def asked(*_: Any, **__: Any) -> None:
        raise AssertionError("the entity teacher was asked again")

    with monkeypatch.context() as mp:  # a re-run asks nothing: every answer comes from the cache
        mp.setattr("llkd.teacher.entities.HFEntityTeacher.extract", asked)
        assert main(["label", *common(files)]) == 0
    assert f"{POOL} texts: {POOL} from cache, 0 asked, 0 failed" in capsys.readouterr().out

    assert main(train_args(files)) == 0
    out = capsys.readouterr().out
    assert "student saved to" in out and "teacher on test: micro-F1" in out
    summary = json.loads((files["out"] / "summary.json").read_text())
    assert summary["task"] == "entities" and summary["selector"] == "llkd" and summary["types"] == ["Disease"]
    for side in ("test", "teacher_test", "teacher_pool"):
        assert 0.0 <= summary[side]["micro_f1"] <= 1.0 and summary[side]["types"] == ["Disease"], side
    assert summary["teacher_pool"]["micro_f1"] > 0.2  # the few-shot teacher finds diseases (0.45 on this slice)
    assert summary["test"]["texts"] == summary["teacher_test"]["texts"] == TEST and sum(summary["test"]["support"]) > 0
    assert summary["teacher"]["pool"]["cached"] == POOL and summary["teacher"]["test"]["asked"] == TEST
    assert summary["train"]["steps"] == 8 and 0 < summary["train"]["data_usage"] <= 1
    report = (files["out"] / "report.md").read_text()
    assert "| type | support | teacher P |" in report and "| Disease |" in report and "| micro |" in report
    model = files["out"] / "model"
    assert json.loads((model / "llkd.json").read_text())["task"] == "token-classification"

    predictions = files["root"] / "pred.jsonl"
    assert main(["predict", "--model", str(model), "--input", str(files["test"]), "--output", str(predictions)]) == 0
    rows = [json.loads(x) for x in predictions.read_text().splitlines()]
    assert len(rows) == TEST and any(r["spans"] for r in rows)
    for r in rows:
        for s in r["spans"]:
            assert s["type"] == "Disease" and 0 <= s["start"] < s["end"] <= len(r["text"]) and r["text"][s["start"]:s["end"]] == s["text"]
    table = files["root"] / "texts.tsv"  # a .tsv with an id/text header is columns, not CoNLL
    table.write_text("id\ttext\na1\tFamilial breast cancer is rare .\na2\tNo disease here .\n", encoding="utf-8")
    assert main(["predict", "--model", str(model), "--input", str(table), "--id-column", "id", "--output", str(predictions)]) == 0
    rows = [json.loads(x) for x in predictions.read_text().splitlines()]
    assert [(r["id"], r["text"]) for r in rows] == [("a1", "Familial breast cancer is rare ."), ("a2", "No disease here .")]
    assert main(["predict", "--model", str(model), "--text", "Familial breast cancer is rare ."]) == 0
    assert json.loads(capsys.readouterr().out)["text"] == "Familial breast cancer is rare ."

    onnx = files["root"] / "onnx" / "student.onnx"
    assert main(["export", "--model", str(model), "--output", str(onnx)]) == 0
    assert onnx.is_file() and onnx.stat().st_size > 1_000_000


def test_a_malformed_tag_file_is_one_line_and_keeps_the_cache(files: dict[str, Path], no_teacher: None, capsys: pytest.CaptureFixture[str]) -> None:
    before = cached_answers(files)
    bad = files["root"] / "bad_test.tsv"
    bad.write_text("Ataxia\tB-Disease\ntelangiectasia\tX-Disease\n.\tO\n")
    args = train_args(files)
    args[args.index("--data-test") + 1] = str(bad)
    assert main(args) == 2
    assert "bad_test.tsv: line 2: malformed tag 'X-Disease'" in one_line_error(capsys, "train")
    assert main(["train", *common(files), "--selector", "random"]) == 2
    assert "selector 'random' has no token-level form for entities" in one_line_error(capsys, "train")
    assert cached_answers(files) == before


@pytest.mark.timeout(300)
def test_the_python_api_round_trip(files: dict[str, Path], tmp_path: Path, no_teacher: None) -> None:
    from llkd import EntityStudent, EntityTeacher

    teacher = EntityTeacher("smollm2-135m", entities=files["labels"], cache=files["cache"], template=str(files["template"]), batch_size=8,
                            device="cpu", dtype="float32", max_new_tokens=MAX_NEW_TOKENS)
    pool = load_entities(files["pool"])
    answers = teacher.label(pool.texts, progress=False)  # the CLI's answers, from the cache
    assert answers.n_cached == POOL and answers.n_asked == 0 and all(a is not None for a in answers.answers)
    student = EntityStudent.train(pool.texts, answers, epochs=1, batch_size=8, max_length=48, threads=1, output=tmp_path / "run")
    spans = student.predict(["Familial breast cancer is rare .", *pool.texts[:2]])
    assert len(spans) == 3 and all(s.type == "Disease" for text in spans for s in text)
    again = EntityStudent.load(student.save(tmp_path / "saved"))
    assert again.predict(pool.texts[:2]) == spans[1:]
    report = again.evaluate(files["test"])
    assert report.texts == TEST and 0.0 <= report.micro_f1 <= 1.0


def test_predict_input_tsv_and_txt_with_a_text_header_are_columns(tmp_path: Path) -> None:
    from llkd.entity_pipeline import load_texts

    table = tmp_path / "texts.tsv"
    table.write_text("id\ttext\nx1\tAtaxia is rare .\nx2\tNothing here .\n", encoding="utf-8")
    assert load_texts(table, "text", "id") == (["x1", "x2"], ["Ataxia is rare .", "Nothing here ."])
    lines = tmp_path / "texts.txt"
    lines.write_text("id,sentence\n1,Ataxia is rare .\n2,Gout again .\n", encoding="utf-8")
    assert load_texts(lines, "sentence")[1] == ["Ataxia is rare .", "Gout again ."]
    conll = tmp_path / "tagged.tsv"  # no header naming the text column: CoNLL, tags ignored
    conll.write_text("Ataxia\tB-Disease\nis\tO\nrare\tO\n.\tO\n\nNothing\tO\n.\tO\n", encoding="utf-8")
    assert load_texts(conll)[1] == ["Ataxia is rare .", "Nothing ."]


def test_the_span_export_leaves_failed_texts_out_and_reads_back_as_gold(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from llkd.entity_pipeline import answer_records, write_jsonl
    from llkd.teacher.entities import EntityAnswer, ScoredSpan

    texts = ["Ataxia is rare .", "Nothing here .", "Gout again ."]
    labels = SimpleNamespace(answers=[EntityAnswer([ScoredSpan(0, 6, "Disease", 0.9)], None), None, EntityAnswer([], 0.8)],
                             failures={1: "timed out"})
    rows = answer_records(["a", "b", "c"], texts, labels)
    assert [r["id"] for r in rows] == ["a", "c"] and rows[0]["outside_confidence"] is None and rows[1]["outside_confidence"] == 0.8
    out = tmp_path / "answers.jsonl"
    write_jsonl(out, rows)
    back = load_entities(out)
    assert back.texts == [texts[0], texts[2]] and [[(s.start, s.end, s.type) for s in x] for x in back.spans] == [[(0, 6, "Disease")], []]


@pytest.mark.parametrize("command", ["distill", "teacher-report"])
def test_distill_and_teacher_report_refuse_entities(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = tmp_path / "diseases.yaml"
    labels.write_text(SCHEMA_YAML)
    assert main([command, "--data-task", "entities", "--data-labels", str(labels)]) == 2
    assert "not available for entities yet" in one_line_error(capsys, command)
