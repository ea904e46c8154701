"""bench-student plumbing on tiny sizes (the real measurement is in docs/student-speed.md)."""

import pytest

from bench_data import shared_data_root


@pytest.mark.timeout(300)
def test_student_speed_measures_both_dtypes_and_a_frozen_run():
    from llkd_bench.answers import PACKAGED
    from llkd_bench.student_speed import markdown, measure

    res = measure("agnews", texts_n=16, train_steps=2, batch=4, frozen_pool=40, data_root=shared_data_root(), answers_dir=PACKAGED, fit_steps=2)
    for dtype in ("float32", "bfloat16"):
        assert res["dtypes"][dtype]["train_samples_per_s"] > 0 and res["dtypes"][dtype]["inference_samples_per_s"] > 0
    assert 0.0 <= res["agreement"]["same_label"] <= 1.0
    fr = res["frozen"]
    assert fr["pool"] == 40 and fr["cached_embeddings"] == 40 and fr["steps"] == 60
    text = markdown(res, "llkd bench-student")
    assert "ratio bf16 / fp32" in text and "flags:" in text
