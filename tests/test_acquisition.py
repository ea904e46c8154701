"""Acquisition strategies on hand-made arrays: each returns distinct candidates, is fixed by
its seed, and prefers what its rule says it prefers."""

import numpy as np
import pytest

from llkd.acquisition import ACQUISITIONS, AcquisitionContext, build_strategy, seed_rows
from llkd.acquisition.strategies import entropy, k_center_greedy, kmeans_pp, margin_uncertainty, ridge_confidence


def _context(seed: int = 0, n: int = 60, c: int = 3, d: int = 5) -> AcquisitionContext:
    rng = np.random.default_rng(123)
    logits = rng.normal(size=(n, c)) * np.linspace(0.1, 4, n)[:, None]  # later rows more confident
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    emb = rng.normal(size=(n, d))
    return AcquisitionContext(probs, np.random.default_rng(seed), emb, rng.normal(size=(10, d)), rng.uniform(0.5, 1, size=10))


@pytest.mark.parametrize("name", ACQUISITIONS.names())
def test_every_strategy_returns_k_distinct_candidates_fixed_by_its_seed(name):
    picked = build_strategy(name).choose(_context(), 12)
    assert len(picked) == 12 and len(set(picked.tolist())) == 12
    assert picked.min() >= 0 and picked.max() < 60
    np.testing.assert_array_equal(picked, build_strategy(name).choose(_context(), 12))
    assert len(build_strategy(name).choose(_context(), 500)) == 60  # k above the candidates: all of them


def test_uncertainty_strategies_take_the_most_uncertain():
    ctx = _context()
    picked = build_strategy("entropy").choose(ctx, 5)
    assert set(picked.tolist()) == set(np.argsort(-entropy(ctx.student_probs))[:5].tolist())
    picked = build_strategy("margin").choose(ctx, 5)
    assert set(picked.tolist()) == set(np.argsort(-margin_uncertainty(ctx.student_probs))[:5].tolist())


def test_entropy_and_margin_on_known_rows():
    p = np.array([[1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    np.testing.assert_allclose(entropy(p), [1.0, 0.0, np.log(2) / np.log(3)], atol=1e-6)
    np.testing.assert_allclose(margin_uncertainty(p), [1.0, 0.0, 1.0])


def test_raru_favours_uncertain_texts_without_taking_only_them():
    ctx = _context(n=400)
    u = margin_uncertainty(ctx.student_probs)
    picked = build_strategy("raru").choose(ctx, 40)
    assert u[picked].mean() > u.mean() + 0.1  # drawn toward the uncertain
    assert not set(picked.tolist()) <= set(np.argsort(-u)[:40].tolist())  # but not top-k


def test_kmeans_pp_and_k_center_cover_separate_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    x = np.concatenate([c + rng.normal(size=(30, 2)) for c in centres])
    cluster = np.repeat([0, 1, 2], 30)
    assert sorted(cluster[kmeans_pp(x, 3, np.random.default_rng(1))].tolist()) == [0, 1, 2]
    assert sorted(cluster[k_center_greedy(x, 3)].tolist()) == [0, 1, 2]
    assert sorted(cluster[seed_rows(x, 3, np.random.default_rng(2))].tolist()) == [0, 1, 2]
    # with two clusters already covered, the next pick goes to the third
    assert cluster[k_center_greedy(x, 1, centers=centres[:2])[0]] == 2


def test_badge_distances_equal_the_explicit_gradient_embeddings():
    """BADGE never builds (p - onehot) (x) e; its factored distances must equal the explicit ones."""
    ctx = _context(n=30, c=4, d=6)
    p = ctx.student_probs
    a = p - np.eye(4)[p.argmax(1)]
    g = np.einsum("ic,id->icd", a, ctx.embeddings).reshape(30, -1)
    i = 7
    explicit = ((g - g[i]) ** 2).sum(1)
    norms = (a * a).sum(1) * (ctx.embeddings ** 2).sum(1)
    factored = norms + norms[i] - 2 * (a @ a[i]) * (ctx.embeddings @ ctx.embeddings[i])
    np.testing.assert_allclose(factored, explicit, atol=1e-9)
    first = build_strategy("badge").choose(ctx, 1)[0]
    assert first == int(np.argmax((g ** 2).sum(1)))  # starts from the largest gradient


def test_ridge_predicts_a_linear_confidence():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = 0.6 + 0.1 * x[:, 0]
    pred = ridge_confidence(x, y, x[:5], alpha=1e-3)
    np.testing.assert_allclose(pred, np.clip(y[:5], 0, 1), atol=1e-3)


def test_llkd_acquisition_weighs_uncertainty_by_predicted_teacher_confidence():
    n, d = 40, 2
    emb = np.zeros((n, d))
    emb[:20, 0] = 1.0  # first half: where the teacher was confident before
    probs = np.full((n, 2), 0.5)  # the student is unsure everywhere
    answered = np.array([[1.0, 0.0]] * 10 + [[0.0, 1.0]] * 10)
    conf = np.array([0.95] * 10 + [0.55] * 10)
    ctx = AcquisitionContext(probs, np.random.default_rng(0), emb, answered, conf)
    picked = build_strategy("llkd").choose(ctx, 10)
    assert (picked < 20).all()
