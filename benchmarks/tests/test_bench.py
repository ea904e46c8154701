"""The benchmark harness: dataset loaders on the real shared files, noise injection, answer
files, the markdown/CSV writers, and one small end-to-end run from committed answers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from llkd_bench.answers import PACKAGED, answers_file, lookup, read_answers, write_answers
from llkd_bench.datasets import DATASETS, load_dataset, text_key
from llkd_bench.noise import NoiseSpec, inject_noise
from llkd_bench.report import CSV_COLUMNS, aggregate, compare, markdown_table, summary_table, verdict, write_csv
from llkd.data.errors import DataError

from bench_data import shared_data_root as _data_root


# -- datasets --------------------------------------------------------------------------------
EXPECTED = {  # name: (classes, test side available at least)
    "csabstruct": (5, 1300),
    "agnews": (4, 7500),
    "mag": (7, 11000),
    "emotion": (6, 2000),
    "sst2": (2, 872),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loader_sizes_disjoint_and_labels(name: str) -> None:
    classes, test_available = EXPECTED[name]
    d = load_dataset(name, _data_root(), pool_size=300, test_size=1000, split_seed=0)
    assert d.schema.num_labels == classes
    assert len(d.pool) == 300
    assert len(d.test) == min(1000, test_available) if name != "sst2" else len(d.test) == 872
    assert d.provenance["test_side_available"] >= test_available
    # gold hidden from the pool; kept aside for the supervised bound only
    assert d.pool.labels is None and len(d.pool_gold) == len(d.pool)
    # pool and test never share a text, and neither has duplicates
    assert not set(d.pool.texts) & set(d.test.texts)
    assert len(set(d.pool.texts)) == len(d.pool) and len(set(d.test.texts)) == len(d.test)
    assert all(0 <= y < classes for y in d.pool_gold + d.test.labels)
    assert set(d.test.labels) == set(range(classes))  # every class appears in 1,000 test texts
    assert d.pool.ids == [text_key(t) for t in d.pool.texts]
    # verbalizers are short: one word each
    assert all(len(lab.answer.split()) == 1 for lab in d.schema.labels)


def test_splits_are_fixed_by_seed_and_nested() -> None:
    root = _data_root()
    a = load_dataset("emotion", root, 100, 200, split_seed=0)
    b = load_dataset("emotion", root, 100, 200, split_seed=0)
    big = load_dataset("emotion", root, 300, 500, split_seed=0)
    other = load_dataset("emotion", root, 100, 200, split_seed=1)
    assert a.provenance["pool_digest"] == b.provenance["pool_digest"] and a.pool.texts == b.pool.texts
    assert big.pool.texts[:100] == a.pool.texts and big.test.texts[:200] == a.test.texts  # quick is a prefix of full
    assert other.pool.texts != a.pool.texts


def test_mag_halves_are_disjoint_and_sst2_aliases() -> None:
    root = _data_root()
    mag = load_dataset("mag", root, 5000, 5000)
    assert not set(mag.pool.texts) & set(mag.test.texts)
    assert mag.provenance["train_side_available"] + mag.provenance["test_side_available"] >= 22000
    sst = load_dataset("sst2", root, 50, 50)
    assert sst.schema.index("0") == 0 and sst.schema.index("1") == 1
    assert all(len(t.split()) >= 5 for t in sst.pool.texts)


def test_csabstruct_is_sentence_level() -> None:
    d = load_dataset("csabstruct", _data_root(), 200, 1000)
    assert d.schema.names == ["background", "objective", "method", "result", "other"]
    assert d.provenance["test_side_available"] > 1000  # 226 abstracts -> > 1,300 sentences
    assert max(len(t) for t in d.test.texts) < 2000  # sentences, not whole abstracts


def test_unknown_dataset_and_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown benchmark dataset"):
        load_dataset("nope", tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_dataset("emotion", tmp_path)
    assert set(DATASETS) == set(EXPECTED)


# -- noise -----------------------------------------------------------------------------------
def _probs(n: int = 400, c: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(c) * 0.5, size=n)
    return p


def test_uniform_noise_flips_the_share_and_keeps_confidence() -> None:
    p = _probs()
    p[3] = np.nan
    noisy, flipped = inject_noise(p, NoiseSpec("uniform", 0.25), seed=1)
    answered = ~np.isnan(p).any(1)
    assert flipped.sum() == round(0.25 * answered.sum())
    assert not flipped[3] and np.isnan(noisy[3]).all()
    old, new = p[answered].argmax(1), noisy[answered].argmax(1)
    assert ((old != new) == flipped[answered]).all()  # every flipped row changes label, no other does
    np.testing.assert_allclose(noisy[answered].max(1), p[answered].max(1))  # confidence unchanged
    np.testing.assert_allclose(noisy[answered].sum(1), 1.0)
    counts = np.bincount(new[flipped[answered]], minlength=4)
    assert (counts > 0).all()  # uniform: flips land in every class
    again, _ = inject_noise(p, NoiseSpec("uniform", 0.25), seed=1)
    np.testing.assert_array_equal(np.nan_to_num(again), np.nan_to_num(noisy))


def test_biased_noise_pushes_to_one_class() -> None:
    p = _probs()
    spec = NoiseSpec.parse("biased:0.5:2")
    noisy, flipped = inject_noise(p, spec, seed=0)
    old = p.argmax(1)
    assert (noisy[flipped].argmax(1) == 2).all()
    assert not flipped[old == 2].any()
    assert flipped.sum() == round(0.5 * (old != 2).sum())
    assert NoiseSpec.parse("uniform:0.2").tag == "uniform-0.2"
    with pytest.raises(ValueError):
        NoiseSpec.parse("gaussian:0.1")
    zero, f0 = inject_noise(p, NoiseSpec("uniform", 0.0))
    assert not f0.any() and np.array_equal(zero, p)


# -- answer files ----------------------------------------------------------------------------
def test_answer_files_roundtrip_merge_and_schema_check(tmp_path: Path) -> None:
    schema = DATASETS["sst2"].label_schema()
    path = answers_file(tmp_path, "sst2", "smollm2-135m")
    write_answers(path, "sst2", "smollm2-135m", "id-1", schema, ["a", "b"], np.array([[0.2, 0.8], [np.nan, np.nan]]))
    write_answers(path, "sst2", "smollm2-135m", "id-1", schema, ["c"], np.array([[0.6, 0.4]]))
    header, ans = read_answers(path, schema)
    assert header["teacher"] == "smollm2-135m" and set(ans) == {"a", "c"}
    got = lookup(ans, ["c", "a", "zz"], 2)
    np.testing.assert_allclose(got[:2], [[0.6, 0.4], [0.2, 0.8]])
    assert np.isnan(got[2]).all()
    with pytest.raises(DataError, match="another label schema"):
        read_answers(path, DATASETS["emotion"].label_schema())
    # another teacher identity (e.g. bf16 weights after fp32) replaces the file, never mixes
    write_answers(path, "sst2", "smollm2-135m", "id-2", schema, ["d"], np.array([[0.3, 0.7]]))
    header, ans = read_answers(path, schema)
    assert header["identity"] == "id-2" and set(ans) == {"d"}


def test_committed_quick_answers_cover_quick_mode() -> None:
    from llkd_bench.commands.bench import QUICK

    root = _data_root()
    for name in QUICK["datasets"]:
        d = load_dataset(name, root, QUICK["pool_size"], QUICK["test_size"])
        _, ans = read_answers(answers_file(PACKAGED, name, "smollm2-135m"), d.schema)
        keys = d.pool.ids + d.test.ids
        assert all(k in ans for k in keys), f"{name}: committed answers do not cover quick mode"


def test_committed_answers_cover_both_tiers_defaults() -> None:
    """The fine-tuned and frozen tiers' default splits run from committed SmolLM2 answers."""
    from llkd_bench.commands.bench import FROZEN, FULL

    root = _data_root()
    for name in FULL["datasets"]:
        for preset in (FULL, FROZEN):
            d = load_dataset(name, root, preset["pool_size"], preset["test_size"], dev_size=preset["dev_size"])
            _, ans = read_answers(answers_file(PACKAGED, name, "smollm2-135m"), d.schema)
            missing = [k for k in d.pool.ids + d.test.ids if k not in ans]
            assert not missing, f"{name}: {len(missing)} texts of the default split have no committed answer"
            assert d.dev is not None and not set(d.dev.ids) & set(d.pool.ids + d.test.ids)  # dev is disjoint


# -- report writers --------------------------------------------------------------------------
def _fake_records() -> list[dict]:
    recs = []
    for seed, (a, b, c) in enumerate([(0.70, 0.66, 0.60), (0.72, 0.65, 0.61), (0.71, 0.69, 0.58)]):
        recs.append({"dataset": "toy", "suite": "baselines", "method": "llkd", "selector": "llkd", "kind": "student", "teacher": "t", "seed": seed,
                     "accuracy": a + 0.05, "macro_f1": a, "data_usage": 0.2, "gradient_samples": 100, "optimizer_updates": 30, "train_s": 10.0, "peak_rss_mb": 900.0})
        recs.append({"dataset": "toy", "suite": "baselines", "method": "all", "selector": "all", "kind": "student", "teacher": "t", "seed": seed,
                     "accuracy": b + 0.05, "macro_f1": b, "data_usage": 1.0, "gradient_samples": 500, "optimizer_updates": 30, "train_s": 20.0, "peak_rss_mb": 950.0})
        recs.append({"dataset": "toy", "suite": "baselines", "method": "fixed", "selector": "fixed", "kind": "student", "teacher": "t", "seed": seed,
                     "accuracy": c, "macro_f1": c, "data_usage": 0.5, "gradient_samples": 250, "optimizer_updates": 30, "train_s": 15.0, "peak_rss_mb": 920.0})
        recs.append({"dataset": "toy", "suite": "baselines", "method": "supervised", "selector": "all", "kind": "supervised", "teacher": "t", "seed": seed,
                     "accuracy": 0.95, "macro_f1": 0.9, "data_usage": 1.0})
    recs.append({"dataset": "toy", "suite": "baselines", "method": "teacher", "selector": "", "kind": "teacher", "teacher": "t", "seed": 0,
                 "accuracy": 0.6, "macro_f1": 0.55, "data_usage": None, "pool_label_acc": 0.61})
    return recs


def test_markdown_table_and_comparison_on_fake_records() -> None:
    recs = _fake_records()
    rows = aggregate(recs)
    assert [r["method"] for r in rows] == ["llkd", "all", "fixed", "supervised", "teacher"]
    llkd = rows[0]
    assert llkd["seeds"] == 3 and llkd["macro_f1"] == pytest.approx(0.71)
    assert llkd["macro_f1_std"] == pytest.approx(np.std([0.70, 0.72, 0.71], ddof=1))
    table = markdown_table(rows)
    lines = table.splitlines()
    assert lines[0].startswith("| method | seeds | accuracy | macro-F1 | dev macro-F1 | data used |")
    assert "| llkd | 3 | 0.760 ± 0.010 | 0.710 ± 0.010 | - | 20.0% | 100 | 30 | 10 | 900 |" in table
    assert "| teacher | 1 | 0.600 | 0.550 | - |" in table
    c = compare(recs, "toy", "t", bootstrap=0)
    assert c["best_baseline"] == "all"  # supervised and teacher are references, not baselines
    assert c["relative_pct"] == pytest.approx(100 * (0.71 - 2 / 3) / (2 / 3))
    assert c["wins"] == 3 and "better than all on all 3 paired seeds" in verdict(c)
    summary = summary_table(rows, [c]).splitlines()
    assert len(summary) == 3 and summary[0].startswith("| dataset | teacher | teacher F1 | LLKD F1 |")
    cells = [x.strip() for x in summary[2].strip("|").split("|")]
    assert cells[:6] == ["toy", "t", "0.550", "0.710 ± 0.010", "20.0%", "all"]
    assert cells[8] == f"{100 * (0.71 - 2 / 3) / (2 / 3):+.1f}%" and cells[9] == "+0.160"


def test_compare_with_bootstrap_from_saved_predictions(tmp_path: Path) -> None:
    gold = np.array([0, 1, 2] * 40)
    recs = []
    for seed in (0, 1):
        for method, acc in (("llkd", 0.9), ("all", 0.5)):
            d = tmp_path / method / str(seed)
            d.mkdir(parents=True)
            rng = np.random.default_rng(seed)
            pred = np.where(rng.random(len(gold)) < acc, gold, (gold + 1) % 3)
            np.save(d / "test_probs.npy", np.eye(3)[pred].astype(np.float32))
            recs.append({"dataset": "toy", "method": method, "kind": "student", "teacher": "t", "seed": seed, "macro_f1": acc, "data_usage": 0.3, "run_dir": str(d)})
    c = compare(recs, "toy", "t", gold, 3, bootstrap=200)
    assert len(c["cis"]) == 2 and all(lo > 0 for _, lo, _ in c["cis"])
    assert "llkd better than all: bootstrap interval excludes zero on 2 of 2" in verdict(c)
    mixed = {**c, "wins": 1, "losses": 1, "cis": [(0, 0.01, 0.05), (1, -0.05, -0.01)]}
    assert verdict(mixed).startswith("inconsistent")


def test_csv_writer(tmp_path: Path) -> None:
    path = write_csv(_fake_records(), tmp_path / "runs.csv")
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 13 and list(rows[0]) == CSV_COLUMNS
    assert rows[0]["method"] == "llkd" and float(rows[0]["macro_f1"]) == pytest.approx(0.70)
    assert rows[-1]["data_usage"] == ""  # None -> empty cell


# -- end to end ------------------------------------------------------------------------------
# ~30 s on 2 free cores: the quick-mode harness from committed answers, in the fast tier CI runs
def test_bench_end_to_end_from_committed_answers(tmp_path: Path) -> None:
    """A tiny --quick-style run: 1 dataset, pool 48, test 48, 2 selectors + the teacher row,
    1 epoch, teacher answers from the committed files only (no teacher is run)."""
    from llkd.cli import main

    out = tmp_path / "bench"
    rc = main(["bench", "--quick", "--datasets", "agnews", "--pool-size", "48", "--test-size", "48", "--methods", "teacher,all,llkd,all@matched,random@matched,llkd+bal",
               "--max-length", "32", "--output", str(out), "--data-root", str(_data_root()), "--no-progress", "--teacher-cache", str(tmp_path / "none.sqlite")])
    assert rc == 0
    assert not (tmp_path / "none.sqlite").exists()  # the teacher cache was never opened
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert [r["method"] for r in rows] == ["teacher", "llkd", "all", "all@matched", "random@matched", "llkd+bal"]
    assert rows[5]["selector"] == "llkd"  # an LLKD variant among the baselines
    # a run's fingerprint holds the resolved selection settings, defaults included, so a
    # changed default reruns a method instead of reusing its old record
    rec = json.loads((Path(rows[1]["run_dir"]) / "record.json").read_text())
    assert json.loads(rec["fingerprint"])["selection"]["class_balance"] == "selected_share"
    assert all(0.0 <= float(r["macro_f1"]) <= 1.0 for r in rows)
    assert float(rows[2]["data_usage"]) == 1.0 and 0.0 <= float(rows[1]["data_usage"]) <= 1.0
    # compute-matched baselines get LLKD's gradient samples: all@matched in fewer passes over
    # everything (steps of 16), random@matched from a subset kept at LLKD's gradient share
    llkd, all_m, random_m = (int(rows[i]["gradient_samples"]) for i in (1, 3, 4))
    assert abs(all_m - llkd) <= 16 and abs(random_m - llkd) <= 1
    assert float(rows[3]["epochs"]) == pytest.approx(llkd / 48)
    table = (out / "tables" / "agnews.md").read_text()
    assert "| llkd | 1 |" in table and "best baseline" in table
    results = (out / "results.md").read_text()
    assert "bench --quick" in results or "llkd bench" in results
    assert (out / "plots" / "f1_vs_data.png").stat().st_size > 0
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["datasets"]["agnews"]["pool_size"] == 48 and prov["datasets"]["agnews"]["teachers"]["smollm2-135m"]["answers_from"]["answer_file"] == 96


@pytest.mark.parametrize("given,expected", [("3", [0, 1, 2]), ("1", [0]), ("0,", [0]), ("2,5", [2, 5])])
def test_seed_argument_forms(given: str, expected: list[int]) -> None:
    import argparse

    from llkd_bench.commands.bench import _settings, add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    assert _settings(p.parse_args(["--seeds", given])).seeds == expected


@pytest.mark.parametrize("given", ["0", "a,b", ","])
def test_seed_argument_that_would_run_nothing_is_an_error(given: str) -> None:
    import argparse

    from llkd_bench.commands.bench import _settings, add_arguments
    from llkd.config import ConfigError

    p = argparse.ArgumentParser()
    add_arguments(p)
    with pytest.raises(ConfigError, match="seeds"):
        _settings(p.parse_args(["--seeds", given]))


def test_run_fingerprints_ignore_the_output_folder() -> None:
    from llkd_bench.runner import same_settings

    a = json.dumps({"student": {"epochs": 3, "output": "runs/a/x/seed0"}, "selection": {"selector": "llkd"}}, sort_keys=True)
    moved = json.dumps({"student": {"epochs": 3, "output": "elsewhere/x/seed0"}, "selection": {"selector": "llkd"}}, sort_keys=True)
    other = json.dumps({"student": {"epochs": 5, "output": "runs/a/x/seed0"}, "selection": {"selector": "llkd"}}, sort_keys=True)
    threads = json.dumps({"student": {"epochs": 3, "output": "runs/a/x/seed0", "threads": 1}, "selection": {"selector": "llkd"}}, sort_keys=True)
    assert same_settings(a, moved) and same_settings(a, threads) and not same_settings(a, other)
    assert not same_settings(a, "") and not same_settings("not json", a)


def test_variant_tags_parse_floors_and_reject_unknown_tags() -> None:
    from llkd_bench.runner import selector_and_overrides

    assert selector_and_overrides("llkd+tglobal+floor8") == ("llkd", (("teacher_threshold", "global"), ("min_per_step", 8)))
    assert selector_and_overrides("fixed") == ("fixed", ())
    for bad in ("llkd+floor", "llkd+floorx", "llkd+nope"):
        with pytest.raises(ValueError, match="unknown LLKD variant tag"):
            selector_and_overrides(bad)


def test_an_option_added_later_does_not_invalidate_earlier_runs() -> None:
    from llkd_bench.runner import same_settings

    old = json.dumps({"selection": {"selector": "llkd", "class_balance": "selected_share"}}, sort_keys=True)
    same = json.dumps({"selection": {"selector": "llkd", "class_balance": "selected_share", "teacher_threshold": "class"}}, sort_keys=True)
    other = json.dumps({"selection": {"selector": "llkd", "class_balance": "selected_share", "teacher_threshold": "global"}}, sort_keys=True)
    assert same_settings(old, same) and same_settings(same, old)
    assert not same_settings(old, other)


def test_student_and_teacher_settings_default_to_llkds_config() -> None:
    """BenchSettings and the bench's flags take their student and teacher defaults from llkd's
    config sections; the flags keep their names and meaning."""
    import argparse
    from dataclasses import fields

    from llkd_bench.commands.bench import FROZEN, _settings, add_arguments
    from llkd_bench.runner import STUDENT_FIELDS, TEACHER_FIELDS, BenchSettings
    from llkd.config import StudentConfig, TeacherConfig

    defaults = {f.name: f.default for f in fields(BenchSettings)}
    for ours, theirs in STUDENT_FIELDS.items():
        if ours != "epochs":  # always given: the tier presets set it
            assert defaults[ours] == StudentConfig.model_fields[theirs].default, ours
    for ours, theirs in TEACHER_FIELDS.items():
        assert defaults[ours] == TeacherConfig.model_fields[theirs].default, ours

    p = argparse.ArgumentParser()
    add_arguments(p)
    s = _settings(p.parse_args(["--tier", "frozen"]))
    library = StudentConfig(mode="frozen", max_length=FROZEN["max_length"], epochs=FROZEN["epochs"])
    assert s.student_dict() == {**library.model_dump(include=set(STUDENT_FIELDS.values())), "head_lr": library.resolved_head_lr()}
    assert (s.teacher_dtype, s.calibration) == (TeacherConfig().dtype, TeacherConfig().calibration)

    given = ["--batch-size", "8", "--lr", "2e-4", "--head-lr", "0.05", "--student-dtype", "float32", "--threads", "1", "--device", "cpu",
             "--student", "mpnet", "--teacher-dtype", "bfloat16", "--calibration", "mean", "--max-length", "32", "--epochs", "2"]
    s = _settings(p.parse_args(given))
    assert s.student_dict() == {"model": "mpnet", "mode": "finetune", "max_length": 32, "batch_size": 8, "epochs": 2.0, "lr": 2e-4, "head_lr": 0.05,
                                "dtype": "float32", "threads": 1, "device": "cpu"}
    assert (s.teacher_dtype, s.calibration, s.device) == ("bfloat16", "mean", "cpu")
    with pytest.raises(SystemExit):  # as before: no float16 student in the benchmark
        p.parse_args(["--student-dtype", "float16"])
