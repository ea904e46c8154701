"""`llkd bench-teacher`: the harness produces every number and (b) and (c) agree. No timing
assertions: speed depends on the machine and on whatever else runs on it."""

import json

import pytest

from llkd.cli import main
from llkd_bench.teacher_speed import matmul_peak_gflops
from llkd.teacher.prompt import label_from_reply


def test_naive_answers_use_the_shared_reply_parser() -> None:
    from llkd.pipeline import bundled_demo_data, load_schema

    agnews_schema = load_schema(bundled_demo_data())  # the schema of llkd's bundled AG News slice
    names = agnews_schema.names  # World, Sports, Business, Sci/Tech (verbalizer Technology)
    assert label_from_reply(agnews_schema, "Sports") == names.index("Sports")
    assert label_from_reply(agnews_schema, " business.") == names.index("Business")
    assert label_from_reply(agnews_schema, "technology") == names.index("Sci/Tech")
    assert label_from_reply(agnews_schema, "Sci/Tech") == names.index("Sci/Tech")
    assert label_from_reply(agnews_schema, "Category: World news") == names.index("World")
    assert label_from_reply(agnews_schema, "It is about Business, not Sports") == names.index("Business")
    assert label_from_reply(agnews_schema, "The category you") is None
    assert label_from_reply(agnews_schema, "") is None
    assert label_from_reply(agnews_schema, "worldwide sportswear") is None  # whole words only


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_matmul_peak_is_positive(dtype: str) -> None:
    peak = matmul_peak_gflops(size=128, reps=2, dtype=dtype)
    assert peak["best_gflops"] >= peak["median_gflops"] > 0
    assert peak["threads"] >= 1 and peak["dtype"] == dtype


@pytest.mark.timeout(600)
def test_bench_teacher_fields_and_agreement(tmp_path) -> None:
    out = tmp_path / "bench.json"
    # float32: (b) and (c) agree to ~1e-5 there; "auto" is bfloat16 on CPUs with native bf16,
    # where the two summation orders differ by ~0.1 in the log-probs
    rc = main(["bench-teacher", "--texts", "6", "--batch-size", "4", "--peak-size", "256", "--no-progress",
               "--teacher-device", "cpu", "--teacher-dtype", "float32", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["texts"] == 6 and res["threads"] >= 1 and res["peak"]["gflops"] > 0
    assert set(res["peaks"]) == {"float32", "bfloat16"} and all(p["gflops"] > 0 for p in res["peaks"].values())
    assert res["peak"]["dtype"] == res["dtype"] and "flags:" in res["cpu"]
    assert res["params"]["non_embedding"] > 0
    assert set(res["methods"]) == {"naive", "reference", "llkd"}
    for m in res["methods"].values():
        assert m["texts"] == 6 and m["seconds"] > 0 and m["texts_per_s"] > 0
        assert m["tokens"] > 0 and m["gflops"] > 0 and m["fraction_of_peak"] > 0
        assert 0.0 <= m["accuracy"] <= 1.0
    assert set(res["speedup"]) == {"llkd_over_naive", "llkd_over_reference"}
    # llkd runs the prefix once and scores every label from one position: far fewer tokens
    ref, fast = res["methods"]["reference"], res["methods"]["llkd"]
    assert fast["tokens"] < ref["tokens"] / 2
    n_labels = len(res["verbalizer_tokens"])
    assert ref["tokens"] >= n_labels * 6 * res["prefix_tokens"]
    # (b) and (c) compute the same label log-probs
    ag = res["agreement"]["reference_vs_llkd"]
    assert ag["identical"] and ag["disagreements"] == 0
    assert ag["max_abs_logprob_diff"] < 1e-3
    assert res["preds"]["reference"] == res["preds"]["llkd"]
    assert len(res["preds"]["naive"]) == 6 and all(-1 <= p < n_labels for p in res["preds"]["naive"])


@pytest.mark.timeout(300)
def test_bench_teacher_skips(tmp_path) -> None:
    out = tmp_path / "bench.json"
    rc = main(["bench-teacher", "--texts", "3", "--skip-naive", "--skip-reference", "--peak-size", "128",
               "--no-progress", "--teacher-device", "cpu", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert set(res["methods"]) == {"llkd"} and res["speedup"] == {} and res["agreement"] == {}


@pytest.mark.timeout(300)
def test_bench_teacher_dtypes_side_by_side(tmp_path, capsys) -> None:
    out = tmp_path / "dtypes.json"
    rc = main(["bench-teacher", "--texts", "4", "--dtypes", "float32,bfloat16", "--rounds", "2", "--batch-size", "4",
               "--peak-size", "128", "--no-progress", "--teacher-device", "cpu", "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "cpu: " in printed and "flags:" in printed and "bfloat16/float32 throughput:" in printed
    assert "bfloat16 matmul peak" in printed and "float32 matmul peak" in printed
    res = json.loads(out.read_text())
    assert res["mode"] == "dtypes" and list(res["dtypes"]) == ["float32", "bfloat16"]
    for m in res["dtypes"].values():
        assert m["texts_per_s"] > 0 and len(m["seconds_per_round"]) == 2 and m["failed"] == 0 and 0 <= m["accuracy"] <= 1
    c = res["comparison"]["bfloat16_vs_float32"]
    assert c["compared"] == 4 and 0 <= c["agree"] <= 4 and c["throughput_ratio"] > 0
    assert 0 < c["max_abs_prob_diff"] < 0.5  # bf16 moves the numbers a little, not the model
    assert set(res["peaks"]) == {"float32", "bfloat16"}


def test_bench_teacher_dtypes_needs_two_known_dtypes(capsys) -> None:
    assert main(["bench-teacher", "--dtypes", "float32"]) == 2
    assert "at least two dtypes" in capsys.readouterr().err
    assert main(["bench-teacher", "--dtypes", "float32,bf16"]) == 2
    assert "unknown dtype(s) bf16" in capsys.readouterr().err
