"""The Python API end to end with the real packaged teacher (SmolLM2-135M) and student
(MiniLM, frozen mode) on a slice of the demo data (32 pool texts): the README's example as written, save and
load, every input kind, hard pseudo-labels, the run report; `llkd train` and `llkd label` on
save_to_disk folders; and the selection rule on hand-made arrays."""

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from llkd import Student, TeacherLabels, select
from llkd.cli import main

REPO = Path(__file__).resolve().parents[1]
DEMO_LINE = 'demo = files("llkd.resources") / "demo"'
NAMES = ["World", "Sports", "Business", "Sci/Tech"]
POOL, TEST, DEV = 32, 16, 8  # texts from the demo files: whole teacher batches of 16
STEPS = 2 * POOL // 8  # 2 epochs of batch 8


def readme_example() -> str:
    """The first Python block of the README's Quick start."""
    quick = (REPO / "README.md").read_text(encoding="utf-8").split("## Quick start", 1)[1]
    match = re.search(r"```python\n(.*?)```", quick, re.S)
    assert match, "README's Quick start has no python block"
    return match.group(1)


def _lines(path: Path, start: int, stop: int) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()[start:stop]]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, demo_dir):
    """A slice of the demo folder, a fresh llkd cache (teacher answers, embeddings) and the
    working directory, shared by this module's tests. The packaged teacher's one-time GGUF ->
    HF conversion stays in the usual cache (a minute of work, shared with the other tests)."""
    from llkd.config import cache_dir

    root = tmp_path_factory.mktemp("api")
    converted = cache_dir() / "hf"
    converted.mkdir(parents=True, exist_ok=True)
    (root / "cache").mkdir()
    (root / "cache" / "hf").symlink_to(converted, target_is_directory=True)
    (root / "demo").mkdir()
    for name, rows in (("agnews_pool.jsonl", _lines(demo_dir / "agnews_pool.jsonl", 0, POOL)),
                       ("agnews_test.jsonl", _lines(demo_dir / "agnews_test.jsonl", 0, TEST))):
        (root / "demo" / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (root / "demo" / "agnews_labels.yaml").write_text((demo_dir / "agnews_labels.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLKD_CACHE_DIR", str(root / "cache"))
        mp.chdir(root)
        yield root


@pytest.fixture(scope="module")
def readme_run(workspace):
    """The README example, unchanged but for where the demo folder is (the slice)."""
    code = readme_example()
    assert code.count(DEMO_LINE) == 1, "the README example no longer opens the demo folder as the test expects"
    code = code.replace(DEMO_LINE, f"demo = Path({str(workspace / 'demo')!r})")
    namespace: dict = {"Path": Path}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), namespace)
    namespace["stdout"] = out.getvalue()
    return namespace


@pytest.mark.timeout(600)
def test_readme_example_runs_as_written(readme_run, workspace):
    answers, student = readme_run["answers"], readme_run["student"]
    assert isinstance(answers, TeacherLabels) and len(answers) == POOL and answers.answered.all()
    assert set(answers.labels) <= set(NAMES) and answers.probs.shape == (POOL, 4)
    assert np.allclose(answers.probs.sum(axis=1), 1, atol=1e-4)
    assert student.labels == NAMES
    printed = readme_run["stdout"]
    assert "macro-F1" in printed and "confusion (rows gold, columns predicted)" in printed
    predictions = re.search(r"\[('[^']+'), ('[^']+')\]", printed)
    assert predictions and {predictions.group(1).strip("'"), predictions.group(2).strip("'")} <= set(NAMES)
    assert (workspace / "runs" / "agnews-student" / "config.json").exists()


def test_saved_student_predicts_the_same_from_any_input(readme_run, workspace):
    import datasets
    import pandas as pd

    texts = ["The Yankees won the series", "Oil prices climb as supply worries grow", "New chip doubles laptop battery life"]
    trained = readme_run["student"]
    loaded = Student.load(workspace / "runs" / "agnews-student")
    assert loaded.labels == NAMES
    ref = trained.predict_proba(texts)
    assert ref.shape == (3, 4) and np.allclose(ref.sum(axis=1), 1, atol=1e-5)
    for form in (texts, pd.DataFrame({"body": texts}), pd.Series(texts), datasets.Dataset.from_dict({"body": texts})):
        col = "body" if not isinstance(form, (list, pd.Series)) else "text"
        assert np.allclose(loaded.predict_proba(form, text_column=col), ref, atol=1e-5)
    assert loaded.predict(texts) == trained.predict(texts)
    report = loaded.evaluate(workspace / "demo" / "agnews_test.jsonl")
    assert sum(map(sum, report.confusion)) == TEST
    with pytest.raises(RuntimeError, match="needs the training run"):
        loaded.write_report()


@pytest.mark.timeout(300)
def test_train_on_hard_pseudo_labels_and_write_report(readme_run, workspace):
    """Names as pseudo-labels (e.g. from another labelling tool), a DataFrame pool, options
    routed to the selection and student sections, and the report from Python."""
    import pandas as pd

    answers = readme_run["answers"]
    pool = pd.DataFrame({"text": answers.texts.texts})
    student = Student.train(pool, answers.labels, labels=workspace / "demo" / "agnews_labels.yaml", selector="fixed",
                            fixed_threshold=0.5, mode="frozen", epochs=2, batch_size=8, output=workspace / "hard", progress=False)
    assert student.result.steps == STEPS and student.config.selection.fixed_threshold == 0.5
    path = student.write_report(workspace / "demo" / "agnews_test.jsonl", test_teacher=None)
    md = path.read_text()
    for name in re.findall(r"!\[[^\]]+\]\(([^)]+)\)", md):
        assert (path.parent / name).exists()
    assert "test_scores.png" in md and "thresholds.png" in md  # the fixed selector's one global threshold
    with pytest.raises(Exception, match="unknown option 'epoch'"):
        Student.train(pool, answers.labels, labels=NAMES, epoch=1)


@pytest.fixture(scope="module")
def dataset_folders(workspace, demo_dir):
    """The pool slice as a Dataset folder; test and dev as splits of a DatasetDict folder."""
    import datasets

    datasets.disable_progress_bars()
    datasets.Dataset.from_list(_lines(demo_dir / "agnews_pool.jsonl", 0, POOL)).save_to_disk(str(workspace / "pool_ds"))
    datasets.DatasetDict({
        "test": datasets.Dataset.from_list(_lines(demo_dir / "agnews_test.jsonl", 0, TEST)),
        "dev": datasets.Dataset.from_list(_lines(demo_dir / "agnews_test.jsonl", TEST, TEST + DEV)),
    }).save_to_disk(str(workspace / "dd"))
    return workspace


@pytest.mark.timeout(600)
def test_cli_train_on_dataset_folders_writes_the_report(readme_run, dataset_folders, capsys):
    root = dataset_folders
    out = root / "cli-run"
    args = ["train", "--data-pool", str(root / "pool_ds"), "--data-test", f"{root / 'dd'}:test", "--data-dev", str(root / "dd" / "dev"),
            "--data-labels", str(root / "demo" / "agnews_labels.yaml"), "--data-id-column", "id", "--student-mode", "frozen",
            "--student-epochs", "2", "--student-batch-size", "8", "--student-output", str(out), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"report written to {out / 'report.md'}" in printed
    md = (out / "report.md").read_text()
    images = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", md)
    assert set(images) == {"test_scores.png", "dev_f1.png", "thresholds.png", "class_share.png", "reliability.png"}
    for name in images:
        assert (out / name).stat().st_size > 5000
    assert f"{TEST} gold-labelled texts (`{root / 'dd'}:test`)" in md and "teacher (zero-shot)" in md
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["teacher_test"]["confusion"]) == 4 and summary["steps"] == STEPS


@pytest.mark.timeout(300)
def test_label_exports_a_dataset_folder_that_reads_back_as_a_pool(readme_run, dataset_folders, capsys):
    import datasets

    root = dataset_folders
    out = root / "answers_ds"
    assert main(["label", "--data-pool", str(root / "pool_ds"), "--data-labels", str(root / "demo" / "agnews_labels.yaml"),
                 "--data-id-column", "id", "--export", str(out), "--no-progress"]) == 0
    assert f"{POOL} texts: {POOL} from cache" in capsys.readouterr().out  # the README run labelled these texts
    ds = datasets.load_from_disk(str(out))
    assert ds.num_rows == POOL and set(ds.column_names) >= {"id", "text", "pseudo_label", "confidence", "probs"}
    assert set(ds["pseudo_label"]) <= set(NAMES) and ds[0]["id"] == "pool-0"

    from llkd.data import load_texts

    assert load_texts(out, id_column="id").ids[:2] == ["pool-0", "pool-1"]


def test_select_on_hand_made_arrays():
    teacher = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.55, 0.45], [np.nan, np.nan]])
    student = np.array([[0.5, 0.5], [0.9, 0.1], [0.5, 0.5], [0.6, 0.4], [0.5, 0.5]])
    # One batch: class-wise thresholds from its own statistics (first-batch init).
    # Teacher side: g = 0.7125, m = (0.683, 0.8): tau = (0.609, 0.7125) -> rows 0 and 2 pass.
    # Student side (normalised entropy u = 1, 0.469, 1, 0.971): tau = (0.70, 0.86) -> row 1 fails.
    mask, weights = select(teacher, student, class_balance_target="uniform")
    assert mask.tolist() == [True, False, True, False, False]
    # weights c * u, mean 1 over the selected: 0.9 / 0.85 and 0.8 / 0.85 (one row per class
    # selected, so the uniform class-balance guard changes nothing)
    assert weights == pytest.approx([0.9 / 0.85, 0, 0.8 / 0.85, 0, 0], abs=1e-5)
    assert select(teacher, student, weighted=False, class_balance_target="uniform")[1].tolist() == [1, 0, 1, 0, 0]
    # The default guard aims at the pseudo-labels' class mix (3:1): its share EMA moves from
    # [0.75, 0.25] to 0.9 * [0.75, 0.25] + 0.1 * [0.5, 0.5] = [0.725, 0.275], so class 0 gets
    # x 0.75/0.725 and class 1 x 0.25/0.275 before the weights are renormalised to mean 1.
    w = np.array([0.9 * 0.75 / 0.725, 0.8 * 0.25 / 0.275])
    assert select(teacher, student)[1] == pytest.approx([*(2 * w / w.sum())[:1], 0, 2 * w[1] / w.sum(), 0, 0], abs=1e-5)
    # ... or at a prior given, e.g. the calibration's estimate: here 1:1, so again c * u
    assert select(teacher, student, class_prior=[0.5, 0.5])[1] == pytest.approx([0.9 / 0.85, 0, 0.8 / 0.85, 0, 0], abs=1e-5)
    # A fixed global threshold needs no student; the unanswered row is never selected.
    assert select(teacher, selector="fixed", fixed_threshold=0.58)[0].tolist() == [True, True, True, False, False]
    assert select(teacher, selector="all")[0].tolist() == [True, True, True, True, False]
    # In batches the thresholds move by the momentum from batch to batch, as in training.
    batched, _ = select(teacher, student, batch_size=2, momentum=0.5)
    assert batched.shape == (5,) and not batched[4]
    keep = select(np.full((100, 3), 1 / 3), selector="random", keep_rate=0.3, seed=1)[0]
    assert keep.sum() == 30 and (keep == select(np.full((100, 3), 1 / 3), selector="random", keep_rate=0.3, seed=1)[0]).all()
    with pytest.raises(ValueError, match="selector 'llkd' needs student_probs"):
        select(teacher)
    with pytest.raises(ValueError, match="student_probs has shape"):
        select(teacher, student[:3])


@pytest.mark.timeout(600)
def test_student_distill_asks_only_its_budget(readme_run, workspace):
    from llkd import Teacher
    from llkd.data.errors import DataError

    teacher = Teacher("smollm2-135m", labels=workspace / "demo" / "agnews_labels.yaml")
    pool = workspace / "demo" / "agnews_pool.jsonl"
    with pytest.raises(DataError, match="more than the 32 texts"):
        Student.distill(pool, teacher, budget=40, mode="frozen", progress=False)
    student = Student.distill(pool, teacher, budget="50%", mode="frozen", epochs=2, seed_size="8", min_round=4, acquisition="badge",
                              output=workspace / "distilled", progress=False)
    d = student.distillation
    assert d is not None and d["asked"] == 16 and d["stopped"].startswith("budget")
    assert sum(len(r["rows"]) for r in d["rounds"]) == 16
    assert set(student.predict(["The Yankees won the series"])) <= set(NAMES)
    # again in the same folder: every answer from the state and the cache, no call
    again = Student.distill(pool, teacher, budget="50%", mode="frozen", epochs=2, seed_size="8", min_round=4, acquisition="badge",
                            output=workspace / "distilled", progress=False)
    assert again.distillation["usage_this_run"]["calls"] == 0
    assert [r["rows"] for r in again.distillation["rounds"]] == [r["rows"] for r in d["rounds"]]
