"""Class-prior estimation and calibration toward it (llkd.teacher.calibration): hand-made
teachers with a known confusion, and real teacher answers on pools resampled to a known
prior."""

from __future__ import annotations

import numpy as np
import pytest

from llkd.evaluation.metrics import macro_f1, reweighted_macro_f1
from llkd.teacher.calibration import (
    AUTO_DEFAULT,
    LabelledAnswers,
    calibrated_em_prior,
    confusion_prior,
    fit_calibrator,
    floored,
    total_variation,
    vote_shares,
    votes_prior,
)

# A 3-class teacher whose vote is right with probability 0.8, else one of the other two.
CONFUSION = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])  # column y: P(vote | y)


def _teacher_answers(gold: np.ndarray, rng: np.random.Generator, confusion: np.ndarray = CONFUSION) -> np.ndarray:
    """One-hot-ish answers: the vote drawn from the confusion column, confidence 0.7."""
    votes = np.array([rng.choice(confusion.shape[0], p=confusion[:, y]) for y in gold])
    probs = np.full((len(gold), confusion.shape[0]), 0.15)
    probs[np.arange(len(gold)), votes] = 0.7
    return probs


def test_vote_shares_and_floor() -> None:
    q = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0], [np.nan] * 3])
    assert vote_shares(q) == pytest.approx([2 / 3, 1 / 3, 0.0])
    f = floored(np.array([0.7, 0.3, 0.0]), 0.01)
    assert f.sum() == pytest.approx(1.0) and f.min() > 0.009


def test_confusion_prior_recovers_a_skewed_pool_prior() -> None:
    # Pool prior [0.7, 0.2, 0.1]; the votes alone say about [0.59, 0.24, 0.17] (the teacher's
    # errors flatten them). Dev split balanced (label shift between dev and pool).
    rng = np.random.default_rng(0)
    true = np.array([0.7, 0.2, 0.1])
    pool_gold = rng.choice(3, size=4000, p=true)
    dev_gold = np.repeat(np.arange(3), 600)  # large enough that the dev confusion's noise stays small
    pool, dev = _teacher_answers(pool_gold, rng), LabelledAnswers(_teacher_answers(dev_gold, rng), dev_gold)
    assert total_variation(vote_shares(pool), true) > 0.08
    prior, _, converged = confusion_prior(dev, pool)
    assert converged and total_variation(prior, true) < 0.03
    em, _, converged = calibrated_em_prior(dev, pool)
    assert converged and total_variation(em, true) < 0.03
    # the calibrator built on it: the pool's mean calibrated distribution is that prior
    cal = fit_calibrator("prior", pool, None, dev)
    assert cal.apply(pool).mean(axis=0) == pytest.approx(floored(em), abs=1e-4)
    assert cal.class_prior == pytest.approx(floored(em))
    assert cal.state()["target"].startswith("calibrated EM on 1800 dev texts")


def test_votes_prior_keeps_a_skew_that_balanced_removes() -> None:
    rng = np.random.default_rng(1)
    true = np.array([0.7, 0.2, 0.1])
    pool = _teacher_answers(rng.choice(3, size=3000, p=true), rng)
    est = votes_prior(pool)
    assert est[0] > 0.5 and est[2] < 0.2  # still skewed (the errors flatten it somewhat)
    assert fit_calibrator("balanced", pool).class_prior == pytest.approx([1 / 3] * 3)
    assert fit_calibrator("prior", pool).state()["target"] == "debiased votes (no labels)"


def test_auto_chooses_on_dev_and_says_why() -> None:
    rng = np.random.default_rng(2)
    # a teacher leaning toward class 0 on a balanced pool: balanced (or mean) beats none on dev
    lean = np.array([[0.9, 0.3, 0.3], [0.05, 0.6, 0.1], [0.05, 0.1, 0.6]])
    gold = np.repeat(np.arange(3), 300)
    pool = _teacher_answers(gold, rng, lean)
    dev_gold = np.repeat(np.arange(3), 100)
    dev = LabelledAnswers(_teacher_answers(dev_gold, rng, lean), dev_gold)
    auto = fit_calibrator("auto", pool, None, dev)
    state = auto.state()
    scores = state["dev_macro_f1"]
    assert set(scores) == {"mean", "prior:votes", "prior:dev", "none", "balanced"}
    assert scores[state["chosen"]] == max(scores.values())
    assert state["chosen"] != "none" and "dev texts" in state["reason"]
    assert auto.apply(pool) == pytest.approx(auto.chosen.apply(pool))
    # without a dev split: the label-free default, and it says so
    plain = fit_calibrator("auto", pool)
    assert plain.state()["chosen"] == AUTO_DEFAULT and "no labelled dev split" in plain.state()["reason"]
    assert plain.apply(pool) == pytest.approx(fit_calibrator(AUTO_DEFAULT, pool).apply(pool))


def test_a_missing_prediction_counts_as_an_error_in_no_class() -> None:
    from llkd.evaluation.metrics import classification_report

    # the last text has no prediction (-1): wrong for accuracy and recall, and no vote for any class
    rep = classification_report([0, 1, 1], [0, 1, -1], ["a", "b"])
    assert rep.accuracy == pytest.approx(2 / 3) and rep.support == [1, 2] and rep.recall == [1.0, 0.5]
    assert rep.precision == [1.0, 1.0] and rep.confusion == [[1, 0], [0, 1]]
    assert reweighted_macro_f1([0, 1, 1], [0, 1, -1], 2, [0.5, 0.5]) == pytest.approx(rep.macro_f1)


def test_reweighted_macro_f1() -> None:
    gold = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 1, 0])
    # same mix as the split: plain macro-F1
    assert reweighted_macro_f1(gold, pred, 2, [0.5, 0.5]) == pytest.approx(macro_f1(gold, pred, 2))
    # class 0 weighs 9x class 1: confusion rows [0.9, 0], [0.05, 0.05] -> F1_0 = 1.8/1.85, F1_1 = 0.1/0.15
    assert reweighted_macro_f1(gold, pred, 2, [0.9, 0.1]) == pytest.approx((1.8 / 1.85 + 0.1 / 0.15) / 2)
