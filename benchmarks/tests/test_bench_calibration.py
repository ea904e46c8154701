"""The benchmark's calibration step: the bench offers every calibrator the library registers
(but contextual: it keeps no content-free answer) and fits on the pool, never the test split."""

from __future__ import annotations

import numpy as np
import pytest

from llkd.teacher.calibration import CALIBRATORS, fit_calibrator

NAN = np.nan
POOL = np.array([[0.9, 0.1], [0.2, 0.8], [NAN, NAN]])
TEST = np.array([[0.5, 0.5], [0.7, 0.3], [NAN, NAN]])
# divide by the pool mean [0.55, 0.45] (worked out in the library's tests/test_calibration.py)
MEAN = [[0.45, 0.55], [21 / 32, 11 / 32]]


def test_bench_offers_the_registry_names() -> None:
    import argparse

    from llkd_bench.commands.bench import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    choices = next(a.choices for a in p._actions if a.dest == "calibration")
    # the benchmark keeps no content-free answer: every other calibrator
    assert sorted(choices) == [n for n in CALIBRATORS.names() if not CALIBRATORS.get(n).needs_content_free]


def test_bench_calibrate_uses_the_pool_reference() -> None:
    from llkd_bench.runner import calibrate

    pool, test, calibrator = calibrate(POOL, TEST, "mean")
    assert calibrator.name == "mean"
    assert test[:2] == pytest.approx(np.array(MEAN))  # the pool's reference, not the test split's
    assert pool == pytest.approx(fit_calibrator("mean", POOL).apply(POOL), nan_ok=True)
    assert calibrate(POOL, TEST, "none")[1] == pytest.approx(TEST, nan_ok=True)
    with pytest.raises(ValueError, match="content-free"):
        calibrate(POOL, TEST, "contextual")
