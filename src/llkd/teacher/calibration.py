"""Confidence calibration of teacher distributions (method.md section 1, optional)."""

from __future__ import annotations

import numpy as np

CONTENT_FREE = "N/A"


def rescale(probs: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Divide each row by a reference distribution over labels and renormalise."""
    ref = np.clip(np.asarray(reference, dtype=np.float64), 1e-12, None)
    out = np.asarray(probs, dtype=np.float64) / ref
    return out / out.sum(axis=-1, keepdims=True)


def mean_calibrate(probs: np.ndarray) -> np.ndarray:
    """Divide by the mean distribution over the (unlabeled) pool: removes the teacher's
    prior toward labels whose verbalizer is easy to say. Uses no gold labels."""
    answered = probs[~np.isnan(probs).any(axis=1)]
    return rescale(probs, answered.mean(axis=0))


def contextual_calibrate(probs: np.ndarray, content_free: np.ndarray) -> np.ndarray:
    """Contextual calibration (Zhao et al. 2021): divide by q on a content-free input."""
    return rescale(probs, content_free)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (confidence > lo) & (confidence <= hi) if lo > 0 else (confidence >= lo) & (confidence <= hi)
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - confidence[sel].mean())
    return float(ece)


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> list[tuple[float, float, float, int]]:
    """(bin low, bin high, accuracy, count) per confidence bin."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    out = []
    for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        sel = (confidence >= lo) & ((confidence < hi) if k < bins - 1 else (confidence <= hi))
        out.append((float(lo), float(hi), float(correct[sel].mean()) if sel.any() else float("nan"), int(sel.sum())))
    return out
