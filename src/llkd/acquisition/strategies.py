"""Acquisition strategies: score the unanswered texts, choose the next batch to ask about.

Every strategy sees the same :class:`AcquisitionContext` (the current student's
probabilities and, where the student has them, embeddings of the candidates and of the texts
already answered) and returns positions into the candidate arrays, never repeating one. All
randomness comes from ``ctx.rng``, so a seed fixes the answered set.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from llkd.registry import Registry

__all__ = ["ACQUISITIONS", "AcquisitionContext", "Strategy", "build_strategy", "entropy", "margin_uncertainty", "kmeans_pp",
           "k_center_greedy", "ridge_confidence", "seed_rows"]


@dataclass
class AcquisitionContext:
    student_probs: np.ndarray  # [U, C] the current student on the unanswered candidates
    rng: np.random.Generator
    embeddings: np.ndarray | None = None  # [U, D] the student's encoder on the candidates
    answered_embeddings: np.ndarray | None = None  # [A, D] the same for the texts already answered
    answered_confidence: np.ndarray | None = None  # [A] the teacher's (calibrated) confidence on them

    def __len__(self) -> int:
        return len(self.student_probs)


# ---- pure math --------------------------------------------------------------------------

def entropy(probs: np.ndarray) -> np.ndarray:
    """Normalised entropy H(p) / log C in [0, 1] per row."""
    p = np.clip(probs, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1) / np.log(probs.shape[1])


def margin_uncertainty(probs: np.ndarray) -> np.ndarray:
    """1 - (p_top1 - p_top2) in [0, 1]: 1 where the top two classes tie."""
    top2 = np.sort(probs, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def _sq_dists(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Squared distances [N] from each row of ``x`` to the single point ``c``."""
    d = x - c
    return np.einsum("ij,ij->i", d, d)


def kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator, centers: np.ndarray | None = None) -> np.ndarray:
    """k rows of ``x`` by k-means++ seeding (D^2 sampling; Arthur & Vassilvitskii 2007):
    spread out like k-center, but drawn in proportion to squared distance, so outliers do not
    take every pick. ``centers``: points already chosen (their neighbourhoods are covered)."""
    n = len(x)
    k = min(k, n)
    chosen: list[int] = []
    best = np.full(n, np.inf)
    for c in centers if centers is not None else ():
        best = np.minimum(best, _sq_dists(x, c))
    taken = np.zeros(n, dtype=bool)
    while len(chosen) < k:
        weights = np.where(taken, 0.0, best if np.isfinite(best).any() else 1.0)
        total = weights.sum()
        if not np.isfinite(total) or total <= 0:  # every point sits on a centre: fill at random
            i = int(rng.choice(np.flatnonzero(~taken)))
        else:
            i = int(rng.choice(n, p=weights / total))
        chosen.append(i)
        taken[i] = True
        best = np.minimum(best, _sq_dists(x, x[i]))
    return np.asarray(chosen, dtype=np.int64)


def k_center_greedy(x: np.ndarray, k: int, centers: np.ndarray | None = None, first: int = 0) -> np.ndarray:
    """k rows of ``x``, each the farthest from everything chosen so far (Sener & Savarese's
    core-set rule). Without ``centers`` it starts from row ``first``."""
    n = len(x)
    k = min(k, n)
    best = np.full(n, np.inf)
    for c in centers if centers is not None else ():
        best = np.minimum(best, _sq_dists(x, c))
    chosen: list[int] = []
    while len(chosen) < k:
        i = first if not chosen and not np.isfinite(best).any() else int(np.argmax(best))
        chosen.append(i)
        best = np.minimum(best, _sq_dists(x, x[i]))
        best[chosen] = -1.0
    return np.asarray(chosen, dtype=np.int64)


def ridge_confidence(train_x: np.ndarray, train_y: np.ndarray, x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """A cheap predictor of the teacher's confidence for texts it was not asked about: ridge
    regression on the student's embeddings of the answered texts (closed form, centred),
    clipped to [0, 1]."""
    if len(train_x) < 2:
        return np.full(len(x), float(train_y.mean()) if len(train_y) else 0.5)
    mx, my = train_x.mean(axis=0), float(train_y.mean())
    a = train_x - mx
    w = np.linalg.solve(a.T @ a + alpha * np.eye(a.shape[1]), a.T @ (train_y - my))
    return np.clip((x - mx) @ w + my, 0.0, 1.0)


def seed_rows(embeddings: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """The first round, chosen without labels: k texts spread over the encoder's embedding
    space by k-means++ seeding, so the first student sees every region of the pool."""
    return kmeans_pp(np.asarray(embeddings, dtype=np.float64), k, rng)


# ---- strategies ---------------------------------------------------------------------------

class Strategy(ABC):

    @abstractmethod
    def choose(self, ctx: AcquisitionContext, k: int) -> np.ndarray:
        """Positions into the candidates, at most ``k``, no repeats."""


ACQUISITIONS: Registry[Strategy] = Registry("acquisition strategy")


def _top(scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """The k highest scores; ties broken at random (a fixed order would favour early rows)."""
    tiebreak = rng.random(len(scores))
    return np.lexsort((tiebreak, -scores))[: min(k, len(scores))]


@ACQUISITIONS.register("random")
class RandomAcquisition(Strategy):
    """Uniform over the unanswered texts: the baseline every budget curve is compared with."""

    def choose(self, ctx: AcquisitionContext, k: int) -> np.ndarray:
        return ctx.rng.permutation(len(ctx))[: min(k, len(ctx))]


@ACQUISITIONS.register("entropy")
class EntropyAcquisition(Strategy):
    """The student's most uncertain texts (highest normalised entropy)."""

    def choose(self, ctx: AcquisitionContext, k: int) -> np.ndarray:
        return _top(entropy(ctx.student_probs), k, ctx.rng)


@ACQUISITIONS.register("margin")
class MarginAcquisition(Strategy):
    """The texts whose top two classes are closest for the student."""

    def choose(self, ctx: AcquisitionContext, k: int) -> np.ndarray:
        return _top(margin_uncertainty(ctx.student_probs), k, ctx.rng)


@ACQUISITIONS.register("llkd")
class LLKDAcquisition(Strategy):
    """LLKD's two signals before the teacher is asked: the student's uncertainty times the
    teacher's *predicted* confidence (ridge on the embeddings of the answered texts). Texts the
    student finds hard but the teacher will likely answer well: the ones LLKD would train on."""

    def choose(self, ctx: AcquisitionContext, k: int) -> np.ndarray:
        u = entropy(ctx.student_probs)
        if ctx.embeddings is None or ctx.answered_embeddings is None or ctx.answered_confidence is None:
            return _top(u, k, ctx.rng)
        c = ridge_confidence(ctx.answered_embeddings.astype(np.float64), ctx.answered_confidence.astype(np.float64),
                             ctx.embeddings.astype(np.float64))
        return _top(u * c, k, ctx.rng)


@ACQUISITIONS.register("kcenter")
class KCenterAcquisition(Strategy):
    """Diversity only: farthest-first from everything answered (core-set)."""

    def choose(self, ctx: AcquisitionContext, k: int) -> np.ndarray:
        if ctx.embeddings is None:
            raise ValueError("kcenter acquisition needs embeddings")
        return k_center_greedy(ctx.embeddings.astype(np.float64), k, ctx.answered_embeddings, first=int(ctx.rng.integers(len(ctx))))


@ACQUISITIONS.register("badge")
class BadgeAcquisition(Strategy):
    """BADGE (Ash et al. 2020): k-means++ over the last layer's hypothetical gradient
    ``(p - onehot(argmax p)) (x) e``, uncertain *and* diverse in one rule. Distances between
    outer products factor (|a|^2 |e|^2 terms and <a,a'><e,e'>), so the [U, C*D] gradient
    matrix is never built."""

    def choose(self, ctx: AcquisitionContext, k: int) -> np.ndarray:
        if ctx.embeddings is None:
            raise ValueError("badge acquisition needs embeddings")
        p = ctx.student_probs.astype(np.float64)
        a = p - np.eye(p.shape[1])[p.argmax(axis=1)]
        e = ctx.embeddings.astype(np.float64)
        norms = (a * a).sum(1) * (e * e).sum(1)  # |g_i|^2
        n, k = len(p), min(k, len(p))
        best = norms.copy()  # squared distance to the nearest chosen gradient (none yet: to 0, as BADGE starts from the largest)
        taken = np.zeros(n, dtype=bool)
        chosen: list[int] = []
        while len(chosen) < k:
            weights = np.where(taken, 0.0, best)
            total = weights.sum()
            i = int(np.argmax(norms)) if not chosen else (int(ctx.rng.choice(n, p=weights / total)) if total > 0 else
                                                          int(ctx.rng.choice(np.flatnonzero(~taken))))
            chosen.append(i)
            taken[i] = True
            d = norms + norms[i] - 2.0 * (a @ a[i]) * (e @ e[i])
            best = np.minimum(best, np.maximum(d, 0.0))
        return np.asarray(chosen, dtype=np.int64)


@ACQUISITIONS.register("raru")
class RARUAcquisition(Strategy):
    """M-RARU's randomized accept/reject (arXiv 2511.11574): visit the candidates in random
    order and accept each with probability equal to the student's margin uncertainty, until k
    are accepted (further passes over what is left if needed). Uncertain texts are favoured
    without the top-k rule's redundancy."""

    def choose(self, ctx: AcquisitionContext, k: int) -> np.ndarray:
        u = margin_uncertainty(ctx.student_probs)
        left = np.ones(len(ctx), dtype=bool)
        chosen: list[int] = []
        k = min(k, len(ctx))
        while len(chosen) < k:
            order = ctx.rng.permutation(np.flatnonzero(left))
            accept = ctx.rng.random(len(order)) < np.maximum(u[order], 1e-3)  # a floor: a pass always ends
            picked = order[accept][: k - len(chosen)]
            chosen.extend(int(i) for i in picked)
            left[picked] = False
        return np.asarray(chosen, dtype=np.int64)


def build_strategy(name: str) -> Strategy:
    return ACQUISITIONS.get(name)()
