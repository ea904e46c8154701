"""Calibrators of llkd.teacher.calibration on hand-made distributions: every expected value
below is worked out by hand (see the comments), and the reference is always the pool's."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pytest

from llkd.teacher.calibration import CALIBRATORS, em_prior, fit_calibrator, over_prediction_ratio, prior_shift, sinkhorn_weights

NAN = np.nan
# Pool: mean of the answered rows is [0.55, 0.45]; the NaN row (no answer) is ignored.
POOL = np.array([[0.9, 0.1], [0.2, 0.8], [NAN, NAN]])
TEST = np.array([[0.5, 0.5], [0.7, 0.3], [NAN, NAN]])
CONTENT_FREE = np.array([0.8, 0.2])

EXPECTED = {
    "none": [[0.5, 0.5], [0.7, 0.3]],
    # divide by [0.55, 0.45]: [0.5/0.55, 0.5/0.45] ∝ [0.45, 0.55]; [0.7/0.55, 0.3/0.45] -> [21/32, 11/32]
    "mean": [[0.45, 0.55], [21 / 32, 11 / 32]],
    # divide by [0.8, 0.2]: [0.625, 2.5] -> [0.2, 0.8]; [0.875, 1.5] -> [7/19, 12/19]
    "contextual": [[0.2, 0.8], [7 / 19, 12 / 19]],
    # EM from a uniform training prior = the maximum-likelihood mixture weight p of
    # 0.5 log(0.9p + 0.1(1-p)) + 0.5 log(0.2p + 0.8(1-p)): 0.8/(0.1+0.8p) = 0.6/(0.8-0.6p) -> p = 29/48.
    # Applied: [0.5, 0.5] -> [29/48, 19/48]; [0.7*29, 0.3*19] = [20.3, 5.7] -> /26.
    "em": [[29 / 48, 19 / 48], [20.3 / 26, 5.7 / 26]],
    # weights w with mean_i normalise(q_i * w) = [0.5, 0.5]; r = w0/w1 solves
    # 0.9r/(0.9r+0.1) + 0.2r/(0.2r+0.8) = 1 -> r^2 = 4/9, r = 2/3, w = [0.4, 0.6].
    # Applied: [0.5, 0.5] -> [0.4, 0.6]; [0.28, 0.18] -> [14/23, 9/23].
    "balanced": [[0.4, 0.6], [14 / 23, 9 / 23]],
}


def test_registry_names() -> None:
    # prior and auto are data-dependent (estimated priors, a dev split): tested below
    assert CALIBRATORS.names() == sorted([*EXPECTED, "prior", "auto"])
    with pytest.raises(KeyError, match="unknown calibration"):
        CALIBRATORS.get("platt")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_calibrator_on_a_hand_computed_matrix(name: str) -> None:
    cal = fit_calibrator(name, POOL, CONTENT_FREE)
    out = cal.apply(TEST)
    assert out[:2] == pytest.approx(np.array(EXPECTED[name]), abs=2e-5)
    assert np.isnan(out[2]).all()  # no teacher answer stays no answer
    assert cal.state()["name"] == name and cal.state()["pool_rows"] == 2


def test_fitted_states() -> None:
    assert fit_calibrator("mean", POOL).state()["reference"] == pytest.approx([0.55, 0.45])
    assert fit_calibrator("contextual", None, CONTENT_FREE).state()["reference"] == pytest.approx([0.8, 0.2])
    prior = fit_calibrator("em", POOL).state()
    assert prior["prior"] == pytest.approx([29 / 48, 19 / 48], abs=2e-5) and prior["converged"] and prior["train_prior"] == "uniform"
    balanced = fit_calibrator("balanced", POOL).state()
    assert balanced["weights"] == pytest.approx([0.4, 0.6], abs=2e-5) and balanced["converged"]


@pytest.mark.parametrize("name", ["mean", "em", "balanced", "prior"])
def test_reference_is_the_pool_not_the_split(name: str) -> None:
    cal = fit_calibrator(name, POOL)
    before = cal.state()
    # a test split with a very different label mix: the same row gets the same output, the
    # fitted reference does not move
    skewed = np.array([[0.7, 0.3]] * 9 + [[0.5, 0.5]])
    assert cal.apply(skewed)[-1] == pytest.approx(cal.apply(TEST)[0])
    assert cal.apply(skewed)[0] == pytest.approx(cal.apply(TEST)[1])
    assert cal.state() == before
    # fitting on that split itself would have given another answer (what the pool reference prevents)
    assert not np.allclose(fit_calibrator(name, skewed).apply(TEST[:2]), cal.apply(TEST[:2]))


def test_nan_rows_are_ignored_when_fitting() -> None:
    for name in ("mean", "em", "balanced", "prior", "auto"):
        assert fit_calibrator(name, POOL).state() == fit_calibrator(name, POOL[:2]).state()


def test_fit_errors() -> None:
    with pytest.raises(ValueError, match="content-free"):
        fit_calibrator("contextual", POOL)
    with pytest.raises(ValueError, match="content-free"):
        fit_calibrator("contextual", POOL, np.array([NAN, NAN]))
    with pytest.raises(ValueError, match="no pool text has a teacher answer"):
        fit_calibrator("mean", np.full((3, 2), NAN))
    assert fit_calibrator("none", None).apply(TEST[:2]) == pytest.approx(TEST[:2])
    with pytest.raises(RuntimeError, match="before fit"):
        CALIBRATORS.get("mean")().apply(TEST)


def test_prior_em_recovers_a_skewed_prior() -> None:
    # Texts drawn with prior [0.6, 0.3, 0.1]; the teacher's posteriors are exact under a uniform
    # prior (normalised Gaussian likelihoods), the setting Saerens et al.'s EM assumes.
    rng = np.random.default_rng(0)
    true_prior = np.array([0.6, 0.3, 0.1])
    means = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    y = rng.choice(3, size=6000, p=true_prior)
    x = means[y] + rng.normal(size=(len(y), 2))
    loglik = -0.5 * ((x[:, None, :] - means[None]) ** 2).sum(-1)
    q = np.exp(loglik - loglik.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    assert np.abs(q.mean(0) - true_prior).max() > 0.05  # the plain mean posterior is off
    cal = fit_calibrator("em", q)
    assert cal.state()["converged"]
    assert np.array(cal.state()["prior"]) == pytest.approx(true_prior, abs=0.02)
    # the shifted posteriors predict the labels at least as well as the raw ones
    assert (cal.apply(q).argmax(1) == y).mean() >= (q.argmax(1) == y).mean()


def test_em_from_the_mean_prediction_is_a_no_op() -> None:
    # Why `em` starts from a uniform training prior: from the teacher's own mean prediction
    # the EM stops at once, the mean being its fixed point.
    mean = np.nanmean(POOL, axis=0)
    prior, iterations, converged = em_prior(POOL, mean)
    assert converged and iterations == 1 and prior == pytest.approx(mean)
    assert prior_shift(TEST, mean, prior) == pytest.approx(TEST, nan_ok=True)


def test_sinkhorn_stays_finite_for_a_label_never_given() -> None:
    pool = np.array([[0.7, 0.3, 0.0], [0.4, 0.6, 0.0]])
    w, _, converged = sinkhorn_weights(pool, np.full(3, 1 / 3), max_iter=200)
    assert not converged and np.isfinite(w).all()


def test_over_prediction_ratio() -> None:
    # predicted shares [0.75, 0.25] vs true [0.25, 0.75]: label 0 predicted 3x its share
    assert over_prediction_ratio(np.array([0, 0, 0, 1]), np.array([0, 1, 1, 1]), 2) == (3.0, 0)
    assert over_prediction_ratio(np.array([1, 0, 2]), np.array([0, 1, 2]), 3)[0] == 1.0
    ratio, label = over_prediction_ratio(np.array([0, 2]), np.array([0, 1]), 3)  # label 2 never in gold
    assert ratio == np.inf and label == 2


def test_config_offers_the_registry_names() -> None:
    from llkd.config import TeacherConfig

    assert sorted(get_args(TeacherConfig.model_fields["calibration"].annotation)) == CALIBRATORS.names()
    assert TeacherConfig().calibration in CALIBRATORS


def test_ece_and_reliability_bins_share_one_convention() -> None:
    from llkd.teacher.calibration import confidence_bins, expected_calibration_error, reliability_bins

    # 0.3 sits on an edge: bin [0.3, 0.4) in both; 1.0 in the last bin, 0.0 in the first
    conf = np.array([0.3, 0.35, 0.3, 1.0, 0.0, 0.95])
    correct = np.array([1, 0, 0, 1, 0, 1])
    assert confidence_bins(conf, 10).tolist() == [3, 3, 3, 9, 0, 9]
    rel = reliability_bins(conf, correct, 10)
    assert rel[3][3] == 3 and rel[9][3] == 2 and rel[0][3] == 1 and sum(r[3] for r in rel) == 6
    # ECE recomputed from the printed bins: bin 3 acc 1/3 vs conf 0.3167, bin 9 acc 1 vs 0.975, bin 0: 0 vs 0
    by_hand = 3 / 6 * abs(1 / 3 - 0.95 / 3) + 2 / 6 * abs(1.0 - 0.975)
    assert expected_calibration_error(conf, correct, 10) == pytest.approx(by_hand)
    assert expected_calibration_error(conf, correct, 10) == pytest.approx(
        sum(n / 6 * abs(acc - conf[confidence_bins(conf, 10) == k].mean()) for k, (_, _, acc, n) in enumerate(rel) if n))
