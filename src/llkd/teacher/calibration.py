"""Label-free calibration of teacher distributions (method.md section 1), behind one registry.

A calibrator is fitted on the teacher's answers for the *unlabeled pool* only
(``fit(pool_probs, content_free=None, dev=None)``) and then applied, with that same reference,
to any split (``apply(probs)``): a test split is never calibrated with its own statistics.
Rows without a teacher answer (NaN) are ignored when fitting and stay NaN when applied. A
labelled dev split (``dev=LabelledAnswers(probs, gold)``, the teacher's raw answers on it) is
used only by the calibrators that say so (``prior`` and ``auto``).

- ``none``: the raw distributions.
- ``mean``: divide by the pool's mean distribution (removes the lean toward labels whose
  verbalizer is easy to say).
- ``contextual``: divide by the answer on a content-free input such as ``"N/A"`` (Zhao et al.
  2021); that answer must be given.
- ``balanced``: column scaling (Sinkhorn) until the pool's mean calibrated distribution is
  uniform: mean calibration iterated to its fixed point. It assumes balanced classes.
- ``prior``: the same column scaling toward the pool's *estimated* class prior instead of
  uniform: estimated from the teacher's debiased votes without labels, or, with a labelled dev
  split, by maximum-likelihood label shift on answers calibrated there (black-box shift
  estimation from the dev confusion as the fallback).
- ``em``: EM re-estimation of the pool's class prior (Saerens, Latinne & Decaestecker 2002)
  from a uniform training prior: the textbook estimator, kept for reference (it sharpens a
  biased teacher's lean; docs/teachers.md).
- ``auto``: with a labelled dev split, the candidate of ``AUTO_CANDIDATES`` whose teacher
  macro-F1 on dev is highest; without one, ``AUTO_DEFAULT`` (mean).

Every fitted calibrator also says which class shares it believes the pool has
(``class_prior``): the target of LLKD's class-balance guard.

The math lives in pure numpy functions; the classes only hold what was fitted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from llkd.data.errors import DataError
from llkd.evaluation.metrics import macro_f1 as per_class_macro_f1
from llkd.registry import Registry

CONTENT_FREE = "N/A"
_TINY = 1e-12  # floor for references and priors, so a class the teacher never says stays finite
PRIOR_FLOOR = 0.005  # no class is calibrated toward a share below 0.5 %: a class with no vote stays reachable


@dataclass(frozen=True)
class LabelledAnswers:
    """The teacher's raw answers on a labelled dev split, with its gold label indices."""

    probs: np.ndarray  # [N, C]
    gold: np.ndarray  # [N] int

    def answered(self) -> "LabelledAnswers":
        ok = ~np.isnan(np.asarray(self.probs, dtype=np.float64)).any(axis=1)
        return LabelledAnswers(np.asarray(self.probs, dtype=np.float64)[ok], np.asarray(self.gold)[ok])


# -- pure functions ------------------------------------------------------------------------
def answered_rows(probs: np.ndarray) -> np.ndarray:
    """The rows with a teacher answer (no NaN)."""
    probs = np.asarray(probs, dtype=np.float64)
    return probs[~np.isnan(probs).any(axis=1)]


def rescale(probs: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Divide each row by a reference distribution over labels and renormalise."""
    ref = np.clip(np.asarray(reference, dtype=np.float64), _TINY, None)
    out = np.asarray(probs, dtype=np.float64) / ref
    return out / out.sum(axis=-1, keepdims=True)


def prior_shift(probs: np.ndarray, train_prior: np.ndarray, new_prior: np.ndarray) -> np.ndarray:
    """Bayes' rule for a change of class prior: q(y) * new(y) / train(y), renormalised."""
    ratio = np.clip(np.asarray(new_prior, dtype=np.float64), _TINY, None) / np.clip(np.asarray(train_prior, dtype=np.float64), _TINY, None)
    return rescale(probs, 1.0 / ratio)


def em_prior(probs: np.ndarray, train_prior: np.ndarray, tol: float = 1e-6, max_iter: int = 1000) -> tuple[np.ndarray, int, bool]:
    """Saerens, Latinne & Decaestecker (2002): the class prior of the texts in ``probs``
    (answered rows), given posteriors produced under ``train_prior``. Iterates
    p_new(y) = mean_i q_i(y) p_old(y)/train(y) (renormalised per row) from p = train_prior.
    Returns (prior, iterations, converged)."""
    q = answered_rows(probs)
    if not len(q):
        raise ValueError("no answered rows to estimate a prior from")
    train = np.asarray(train_prior, dtype=np.float64)
    prior = train.copy()
    for it in range(1, max_iter + 1):
        new = prior_shift(q, train, prior).mean(axis=0)
        if np.abs(new - prior).max() < tol:
            return new, it, True
        prior = new
    return prior, max_iter, False


def sinkhorn_weights(probs: np.ndarray, target: np.ndarray, tol: float = 1e-6, max_iter: int = 1000) -> tuple[np.ndarray, int, bool]:
    """Column weights w such that mean_i normalise(q_i * w) = target (answered rows): the
    row-normalised Sinkhorn fixed point. The first step is w = target / mean(q), i.e. mean
    calibration. Returns (w normalised to sum 1, iterations, converged)."""
    q = answered_rows(probs)
    if not len(q):
        raise ValueError("no answered rows to balance")
    target = np.asarray(target, dtype=np.float64)
    w = np.ones(q.shape[1])
    for it in range(1, max_iter + 1):
        share = rescale(q, 1.0 / w).mean(axis=0)
        if np.abs(share - target).max() < tol:
            return w / w.sum(), it, True
        # A label the teacher never gives cannot reach its share: bound w instead of diverging.
        w = np.clip(w * target / np.clip(share, _TINY, None), _TINY, 1.0 / _TINY)
        w /= w.sum()
    return w, max_iter, False


def vote_shares(probs: np.ndarray) -> np.ndarray:
    """Share of the answered rows whose argmax is each label."""
    q = answered_rows(probs)
    if not len(q):
        raise ValueError("no answered rows to count votes in")
    return np.bincount(q.argmax(axis=1), minlength=q.shape[1]) / len(q)


def floored(prior: np.ndarray, floor: float = PRIOR_FLOOR) -> np.ndarray:
    """A prior with every share at least ``floor`` (then renormalised)."""
    p = np.clip(np.asarray(prior, dtype=np.float64), floor, None)
    return p / p.sum()


def votes_prior(probs: np.ndarray) -> np.ndarray:
    """Label-free estimate of the pool's class prior: the teacher's votes after its label bias
    is divided out (mean calibration), refined once by scaling the answers toward those votes
    and counting again.

    The pool prior and the teacher's lean toward easy-to-say labels are not separable from the
    answers alone (any column scaling of the answers fits the pool as well), so every
    label-free estimate assumes something. This one assumes the bias moves only texts near a
    decision boundary: dividing by the mean answer removes it but also pulls the votes toward
    uniform, and one Sinkhorn step toward those votes gives part of the skew back. On real
    pools it under-estimates a strong skew, and with a weak teacher it can be far off
    (docs/results.md); with a labelled dev split use :func:`calibrated_em_prior`."""
    q = answered_rows(probs)
    first = vote_shares(rescale(q, q.mean(axis=0)))
    w, _, _ = sinkhorn_weights(q, floored(first))
    return vote_shares(rescale(q, 1.0 / w))


def confusion_prior(dev: LabelledAnswers, pool_probs: np.ndarray, smoothing: float = 1.0, tol: float = 1e-9, max_iter: int = 5000) -> tuple[np.ndarray, int, bool]:
    """Black-box shift estimation (Lipton et al. 2018) in its maximum-likelihood form: the
    teacher's confusion P(vote | gold) measured on the labelled dev split (each column
    smoothed by ``smoothing`` pseudo-counts spread over the votes), then the pool prior pi
    that makes sum_y P(vote | y) pi(y) most likely to give the pool's vote counts, by EM.
    Unlike the least-squares inverse it stays on the simplex and does not blow up when the
    confusion matrix is near-singular. The dev split may have another class mix than the
    pool (label shift is what it estimates). Returns (prior, iterations, converged)."""
    dev = dev.answered()
    q = answered_rows(pool_probs)
    if not len(dev.gold) or not len(q):
        raise ValueError("confusion prior needs answered dev and pool rows")
    c = q.shape[1]
    confusion = np.full((c, c), smoothing / c)
    np.add.at(confusion, (dev.probs.argmax(axis=1), dev.gold.astype(int)), 1.0)
    confusion /= confusion.sum(axis=0, keepdims=True)  # column y: P(vote | gold = y)
    votes = vote_shares(q)
    prior = np.full(c, 1.0 / c)
    for it in range(1, max_iter + 1):
        mix = np.clip(confusion @ prior, _TINY, None)
        new = prior * (confusion.T @ (votes / mix))
        new /= new.sum()
        if np.abs(new - prior).max() < tol:
            return new, it, True
        prior = new
    return prior, max_iter, False


def fit_bias_temperature(probs: np.ndarray, gold: np.ndarray, steps: int = 500, lr: float = 0.5) -> tuple[float, np.ndarray]:
    """Bias-corrected temperature scaling (Alexandari et al. 2020) on a labelled split: a and b
    minimising the NLL of softmax(a * log q + b) against ``gold``, by gradient descent (the
    NLL is convex in (a, b)); a step that raises the NLL is undone and the step size halved,
    so near-one-hot answers (log q down to -27) cannot make it diverge. Returns (a, b)."""
    z = np.log(np.clip(np.asarray(probs, dtype=np.float64), _TINY, None))
    rows = np.arange(len(z))
    gold = np.asarray(gold, dtype=int)
    onehot = np.eye(z.shape[1])[gold]

    def nll(a: float, b: np.ndarray) -> float:
        return float(-np.log(np.clip(_softmax(a * z + b)[rows, gold], _TINY, None)).mean())

    a, b = 1.0, np.zeros(z.shape[1])
    loss = nll(a, b)
    for _ in range(steps):
        g = _softmax(a * z + b) - onehot  # dNLL / dlogits, per row
        a_new, b_new = a - lr * float((g * z).sum(axis=1).mean()), b - lr * g.mean(axis=0)
        new_loss = nll(a_new, b_new)
        if new_loss > loss:
            lr /= 2
            continue
        a, b, loss = a_new, b_new, new_loss
    return a, b


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def calibrated_em_prior(dev: LabelledAnswers, pool_probs: np.ndarray, tol: float = 1e-6, max_iter: int = 1000) -> tuple[np.ndarray, int, bool]:
    """Maximum-likelihood label shift with bias-corrected calibration (MLLS-BCTS, Alexandari
    et al. 2020): the teacher's answers are calibrated on the labelled dev split
    (:func:`fit_bias_temperature`), which makes them posteriors under the dev split's prior;
    Saerens' EM then moves that prior to the pool's. The sane start that plain ``em`` lacks:
    calibrated posteriors and their true training prior, instead of raw answers read as
    likelihoods under a uniform prior. Uses every answer's full distribution, so it needs fewer
    dev texts than the hard confusion of :func:`confusion_prior`. Returns (prior, iterations,
    converged)."""
    dev = dev.answered()
    q = answered_rows(pool_probs)
    if not len(dev.gold) or not len(q):
        raise ValueError("calibrated EM prior needs answered dev and pool rows")
    c = q.shape[1]
    a, b = fit_bias_temperature(dev.probs, dev.gold)
    posteriors = _softmax(a * np.log(np.clip(q, _TINY, None)) + b)
    dev_prior = (np.bincount(dev.gold.astype(int), minlength=c) + 1.0) / (len(dev.gold) + c)  # a class absent from dev stays reachable
    return em_prior(posteriors, dev_prior, tol, max_iter)


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    return float(0.5 * np.abs(np.asarray(p, dtype=np.float64) - np.asarray(q, dtype=np.float64)).sum())


def macro_f1(probs: np.ndarray, gold: np.ndarray) -> float:
    """Macro-F1 of the argmax of ``probs`` against ``gold`` over the answered rows."""
    probs = np.asarray(probs, dtype=np.float64)
    ok = ~np.isnan(probs).any(axis=1)
    pred = probs[ok].argmax(axis=1)
    return per_class_macro_f1(np.asarray(gold)[ok].astype(int), pred, probs.shape[1])


def over_prediction_ratio(pred: np.ndarray, gold: np.ndarray, num_labels: int) -> tuple[float, int]:
    """(predicted share / true share, label) of the most over-predicted label: 1.0 when the
    predicted label mix matches the gold mix, 3.0 when some label is predicted three times as
    often as it occurs. A predicted label that never occurs in gold gives inf."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    if not len(gold):
        return float("nan"), -1
    pred_share = np.bincount(pred, minlength=num_labels) / len(pred)
    true_share = np.bincount(gold, minlength=num_labels) / len(gold)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(true_share > 0, pred_share / np.where(true_share > 0, true_share, 1.0), np.where(pred_share > 0, np.inf, 0.0))
    worst = int(ratio.argmax())
    return float(ratio[worst]), worst


def confidence_bins(confidence: np.ndarray, bins: int = 10) -> np.ndarray:
    """The bin of each confidence: [k/bins, (k+1)/bins), the last bin closed at 1. The one
    convention for ECE and the reliability diagram, so a printed ECE matches its own bins."""
    c = np.asarray(confidence, dtype=np.float64)
    return np.clip(np.floor(c * bins).astype(int), 0, bins - 1)


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> list[tuple[float, float, float, int]]:
    """(bin low, bin high, accuracy, count) per confidence bin (:func:`confidence_bins`)."""
    which = confidence_bins(confidence, bins)
    correct = np.asarray(correct, dtype=np.float64)
    out = []
    for k in range(bins):
        sel = which == k
        out.append((k / bins, (k + 1) / bins, float(correct[sel].mean()) if sel.any() else float("nan"), int(sel.sum())))
    return out


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """sum over bins of (share of samples) x |accuracy - mean confidence|, same bins as
    :func:`reliability_bins`."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    which = confidence_bins(confidence, bins)
    ece = 0.0
    for k in range(bins):
        sel = which == k
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - confidence[sel].mean())
    return float(ece)


def _rounded(v: np.ndarray) -> list[float]:
    return [round(float(x), 5) for x in v]


# -- calibrators ---------------------------------------------------------------------------
class Calibrator(ABC):
    """Fitted once on the unlabeled pool, then applied unchanged to every split."""

    name: ClassVar[str]
    needs_pool: ClassVar[bool] = True  # fit needs answered pool rows
    needs_content_free: ClassVar[bool] = False  # fit needs the answer on CONTENT_FREE
    uses_dev: ClassVar[bool] = False  # fit reads a labelled dev split when one is given

    def __init__(self) -> None:
        self.pool_rows: int | None = None  # answered pool rows it was fitted on; None = not fitted
        self.class_prior: np.ndarray | None = None  # the class shares it takes the pool to have

    def fit(self, pool_probs: np.ndarray | None, content_free: np.ndarray | None = None, dev: LabelledAnswers | None = None) -> "Calibrator":
        """Fit on the pool's raw answers (None: no pool, enough for none and contextual)."""
        pool = answered_rows(pool_probs) if pool_probs is not None else np.empty((0, 0))
        if self.needs_pool and not len(pool):
            # a DataError (a ValueError): the CLI prints it in one line, exit 2
            raise DataError(f"{self.name} calibration: no pool text has a teacher answer to fit on (see the failures `llkd label` reports)")
        if self.needs_content_free and (content_free is None or not np.isfinite(content_free).all()):
            raise ValueError(f"{self.name} calibration needs the teacher's answer on the content-free input {CONTENT_FREE!r}")
        if dev is not None:
            dev = dev.answered()
            dev = dev if len(dev.gold) else None
        self._fit(pool, None if content_free is None else np.asarray(content_free, dtype=np.float64), dev)
        self.pool_rows = int(len(pool))
        if self.class_prior is None and len(pool):
            self.class_prior = vote_shares(self._apply(pool))  # what the calibrated teacher says the pool holds
        return self

    def apply(self, probs: np.ndarray) -> np.ndarray:
        if self.pool_rows is None:
            raise RuntimeError(f"{self.name} calibration applied before fit")
        return self._apply(np.asarray(probs, dtype=np.float64))

    def state(self) -> dict[str, Any]:
        """What was fitted, for logs and result files."""
        prior = None if self.class_prior is None else _rounded(self.class_prior)
        return {"name": self.name, "pool_rows": self.pool_rows, **self._state(), "class_prior": prior}

    @abstractmethod
    def _fit(self, pool: np.ndarray, content_free: np.ndarray | None, dev: LabelledAnswers | None) -> None: ...

    @abstractmethod
    def _apply(self, probs: np.ndarray) -> np.ndarray: ...

    def _state(self) -> dict[str, Any]:
        return {}


CALIBRATORS: Registry[Calibrator] = Registry("calibration")


def fit_calibrator(name: str, pool_probs: np.ndarray | None, content_free: np.ndarray | None = None, dev: LabelledAnswers | None = None) -> Calibrator:
    """The registered calibrator ``name``, fitted on the pool's answers."""
    return CALIBRATORS.get(name)().fit(pool_probs, content_free, dev)


@CALIBRATORS.register("none")
class NoCalibration(Calibrator):
    name = "none"
    needs_pool = False

    def _fit(self, pool: np.ndarray, content_free: np.ndarray | None, dev: LabelledAnswers | None) -> None:
        pass

    def _apply(self, probs: np.ndarray) -> np.ndarray:
        return probs


class _ReferenceCalibration(Calibrator):
    """Divide by a fitted reference distribution."""

    reference: np.ndarray

    def _apply(self, probs: np.ndarray) -> np.ndarray:
        return rescale(probs, self.reference)

    def _state(self) -> dict[str, Any]:
        return {"reference": _rounded(self.reference)}


@CALIBRATORS.register("mean")
class MeanCalibration(_ReferenceCalibration):
    name = "mean"

    def _fit(self, pool: np.ndarray, content_free: np.ndarray | None, dev: LabelledAnswers | None) -> None:
        self.reference = pool.mean(axis=0)


@CALIBRATORS.register("contextual")
class ContextualCalibration(_ReferenceCalibration):
    name = "contextual"
    needs_pool = False
    needs_content_free = True

    def _fit(self, pool: np.ndarray, content_free: np.ndarray | None, dev: LabelledAnswers | None) -> None:
        assert content_free is not None
        self.reference = content_free


@CALIBRATORS.register("em")
class EMCalibration(Calibrator):
    """EM estimate of the pool's class prior (Saerens et al. 2002); posteriors are shifted from
    the training prior pi_train to it. pi_train is uniform: with the teacher's mean prediction
    as pi_train the EM is a no-op (the mean posterior is its fixed point, so the first step
    returns it and the calibrated answers are the raw ones). Uniform reads the teacher's answers
    as class likelihoods, so the estimate leans further toward what the teacher already
    favours: on the committed benchmark answers it sharpens a biased teacher's lean instead of
    removing it (docs/teachers.md). Kept as the textbook label-free prior matcher; it helps
    only a teacher that is calibrated up to a prior shift. ``prior`` is the one to use."""

    name = "em"

    def __init__(self, tol: float = 1e-6, max_iter: int = 1000) -> None:
        super().__init__()
        self.tol, self.max_iter = tol, max_iter

    def _fit(self, pool: np.ndarray, content_free: np.ndarray | None, dev: LabelledAnswers | None) -> None:
        self.train_prior = np.full(pool.shape[1], 1.0 / pool.shape[1])
        self.prior, self.iterations, self.converged = em_prior(pool, self.train_prior, self.tol, self.max_iter)
        self.class_prior = self.prior

    def _apply(self, probs: np.ndarray) -> np.ndarray:
        return prior_shift(probs, self.train_prior, self.prior)

    def _state(self) -> dict[str, Any]:
        return {"prior": _rounded(self.prior), "train_prior": "uniform", "iterations": self.iterations, "converged": self.converged}


class _ScalingCalibration(Calibrator):
    """Column weights fitted so the pool's mean calibrated distribution equals a target prior
    (Sinkhorn); hard predicted shares follow closely. Its first step is mean calibration."""

    def __init__(self, tol: float = 1e-6, max_iter: int = 1000) -> None:
        super().__init__()
        self.tol, self.max_iter = tol, max_iter

    def _target(self, pool: np.ndarray, dev: LabelledAnswers | None) -> tuple[np.ndarray, str]:
        raise NotImplementedError

    def _fit(self, pool: np.ndarray, content_free: np.ndarray | None, dev: LabelledAnswers | None) -> None:
        target, self.source = self._target(pool, dev)
        self.class_prior = target
        self.weights, self.iterations, self.converged = sinkhorn_weights(pool, target, self.tol, self.max_iter)

    def _apply(self, probs: np.ndarray) -> np.ndarray:
        return rescale(probs, 1.0 / self.weights)

    def _state(self) -> dict[str, Any]:
        return {"weights": _rounded(self.weights), "target": self.source, "iterations": self.iterations, "converged": self.converged}


@CALIBRATORS.register("balanced")
class BalancedCalibration(_ScalingCalibration):
    """Scaling toward a uniform prior: no label takes more than 1/C of the pool's probability
    mass. Right for balanced pools; on a skewed pool it pushes the teacher toward rare classes."""

    name = "balanced"

    def _target(self, pool: np.ndarray, dev: LabelledAnswers | None) -> tuple[np.ndarray, str]:
        return np.full(pool.shape[1], 1.0 / pool.shape[1]), "uniform"


@CALIBRATORS.register("prior")
class PriorCalibration(_ScalingCalibration):
    """Scaling toward the pool's estimated class prior (floored at PRIOR_FLOOR): with a labelled
    dev split, by maximum-likelihood label shift on answers calibrated there
    (:func:`calibrated_em_prior`), falling back to the dev split's hard confusion
    (:func:`confusion_prior`) if that EM does not converge; without one, from the teacher's
    debiased votes (:func:`votes_prior`)."""

    name = "prior"
    uses_dev = True

    def _target(self, pool: np.ndarray, dev: LabelledAnswers | None) -> tuple[np.ndarray, str]:
        if dev is not None:
            prior, _, converged = calibrated_em_prior(dev, pool)
            if converged:
                return floored(prior), f"calibrated EM on {len(dev.gold)} dev texts"
            prior, _, _ = confusion_prior(dev, pool)
            return floored(prior), f"confusion on {len(dev.gold)} dev texts (calibrated EM did not converge)"
        return floored(votes_prior(pool)), "debiased votes (no labels)"


# (name, label-free): the prior calibrator runs twice with a dev split, once from the dev
# split's confusion and once from the votes alone. Earlier candidates win ties.
AUTO_CANDIDATES: tuple[tuple[str, bool], ...] = (("mean", False), ("prior", False), ("prior", True), ("none", False), ("balanced", False))
# Without a dev split: the label-free calibrator that was safest across teachers and priors
# (docs/results.md, calibration table): votes-based prior estimates help a strong teacher and
# collapse a weak one's classes; balanced assumes a uniform prior; none keeps a weak teacher's lean.
AUTO_DEFAULT = "mean"


def _candidate_name(name: str, label_free: bool, dev: bool) -> str:
    return f"{name}:votes" if name == "prior" and (label_free or not dev) else (f"{name}:dev" if name == "prior" else name)


@CALIBRATORS.register("auto")
class AutoCalibration(Calibrator):
    """With a labelled dev split: every candidate of AUTO_CANDIDATES fitted on the pool (the
    prior calibrator both from the dev split's confusion and from the votes alone), scored by
    the teacher's macro-F1 on dev; the best is used (ties go to the earlier candidate).
    Without a dev split: AUTO_DEFAULT."""

    name = "auto"
    uses_dev = True

    def _fit(self, pool: np.ndarray, content_free: np.ndarray | None, dev: LabelledAnswers | None) -> None:
        self.scores: dict[str, float] = {}
        if dev is None:
            self.chosen = fit_calibrator(AUTO_DEFAULT, pool)
            self.chosen_name = AUTO_DEFAULT
            self.reason = f"no labelled dev split: {AUTO_DEFAULT} (the measured label-free default; give data.dev to choose on it)"
        else:
            fitted = {_candidate_name(n, free, True): fit_calibrator(n, pool, None, None if free else dev) for n, free in AUTO_CANDIDATES}
            self.scores = {name: macro_f1(c.apply(dev.probs), dev.gold) for name, c in fitted.items()}
            order = list(fitted)
            self.chosen_name = max(order, key=lambda n: (self.scores[n], -order.index(n)))
            self.chosen = fitted[self.chosen_name]
            ranked = ", ".join(f"{n} {self.scores[n]:.3f}" for n in sorted(self.scores, key=lambda n: -self.scores[n]))
            self.reason = f"best teacher macro-F1 on {len(dev.gold)} dev texts ({ranked})"
        self.class_prior = self.chosen.class_prior

    def _apply(self, probs: np.ndarray) -> np.ndarray:
        return self.chosen.apply(probs)

    def _state(self) -> dict[str, Any]:
        return {"chosen": self.chosen_name, "reason": self.reason, "dev_macro_f1": {k: round(v, 4) for k, v in self.scores.items()},
                "fitted": self.chosen.state()}
