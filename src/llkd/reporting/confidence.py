"""How well a teacher's confidence tracks its accuracy: calibration error, reliability bins and
whether higher confidence goes with higher accuracy (the premise of confidence-based selection)."""

from __future__ import annotations

from typing import Any

import numpy as np

from llkd.teacher.calibration import expected_calibration_error, reliability_bins


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given their average rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (NaN when either side is constant or there are < 2 points)."""
    if len(x) < 2:
        return float("nan")
    rx, ry = rankdata(x), rankdata(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counted half."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binned(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    """:func:`reliability_bins` with each bin's mean confidence added."""
    rows = []
    for k, (lo, hi, acc, count) in enumerate(reliability_bins(confidence, correct, bins)):
        sel = (confidence >= lo) & ((confidence < hi) if k < bins - 1 else (confidence <= hi))
        rows.append({"low": lo, "high": hi, "accuracy": None if count == 0 else acc,
                     "confidence": float(confidence[sel].mean()) if count else None, "count": count})
    return rows


def confidence_quantiles(confidence: np.ndarray, correct: np.ndarray, parts: int = 4) -> list[dict[str, Any]]:
    """Texts sorted by confidence and cut into ``parts`` equal-count groups, lowest first."""
    order = np.argsort(confidence, kind="mergesort")
    out = []
    for chunk in np.array_split(order, parts):
        if len(chunk):
            out.append({"confidence_low": float(confidence[chunk].min()), "confidence_high": float(confidence[chunk].max()),
                        "accuracy": float(correct[chunk].mean()), "count": int(len(chunk))})
    return out


def confidence_report(probs: np.ndarray, gold: np.ndarray, bins: int = 10, min_bin_count: int = 5) -> dict[str, Any]:
    """Calibration and confidence-ranking numbers of answered texts (rows without NaN).

    ``confidence_tracks_accuracy`` is True when the more confident half of the texts is more
    accurate than the less confident half and a random correct answer is more likely than not
    to be more confident than a random wrong one (AUROC > 0.5)."""
    probs, gold = np.asarray(probs, dtype=np.float64), np.asarray(gold)
    ok = ~np.isnan(probs).any(axis=1)
    probs, gold = probs[ok], gold[ok]
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == gold).astype(np.float64)
    rows = binned(confidence, correct, bins)
    order = np.argsort(confidence, kind="mergesort")
    half = len(order) // 2
    low, high = order[:half], order[half:]
    big = [r for r in rows if r["count"] >= min_bin_count]
    bin_rho = spearman(np.array([r["confidence"] for r in big]), np.array([r["accuracy"] for r in big])) if len(big) >= 3 else float("nan")
    violations = sum(1 for a, b in zip(big, big[1:]) if b["accuracy"] < a["accuracy"])
    top_acc = float(correct[high].mean()) if len(high) else float("nan")
    bottom_acc = float(correct[low].mean()) if len(low) else float("nan")
    roc = auroc(confidence, correct.astype(bool))
    return {
        "n": int(len(confidence)),
        "unanswered": int((~ok).sum()),
        "accuracy": float(correct.mean()) if len(correct) else float("nan"),
        "mean_confidence": float(confidence.mean()) if len(confidence) else float("nan"),
        "ece": expected_calibration_error(confidence, correct, bins),
        "bins": rows,
        "quartiles": confidence_quantiles(confidence, correct, 4),
        "ranking": {
            "top_half_accuracy": top_acc,
            "bottom_half_accuracy": bottom_acc,
            "auroc": roc,
            "spearman_confidence_correct": spearman(confidence, correct),
            "spearman_bins": bin_rho,
            "bins_used": len(big),
            "min_bin_count": min_bin_count,
            "monotonic_violations": violations,
        },
        "confidence_tracks_accuracy": bool(top_acc > bottom_acc and roc > 0.5),
    }


def format_confidence(rep: dict[str, Any]) -> str:
    """Reliability table (confidence bin -> accuracy, count) and the ranking check, as text."""
    lines = [f"expected calibration error {rep['ece']:.4f}   mean confidence {rep['mean_confidence']:.4f}   "
             f"accuracy {rep['accuracy']:.4f}   ({rep['n']} texts)",
             "  confidence bin   mean conf  accuracy  count"]
    for r in rep["bins"]:
        if r["count"]:
            lines.append(f"  {r['low']:.1f} - {r['high']:.1f}      {r['confidence']:9.3f}  {r['accuracy']:8.3f}  {r['count']:5d}")
        else:
            lines.append(f"  {r['low']:.1f} - {r['high']:.1f}      {'-':>9}  {'-':>8}  {0:5d}")
    q = " | ".join(f"{x['confidence_low']:.2f}-{x['confidence_high']:.2f}: {x['accuracy']:.3f}" for x in rep["quartiles"])
    rk = rep["ranking"]
    lines.append(f"  accuracy by confidence quartile (low -> high): {q}")
    lines.append(
        f"  higher confidence -> higher accuracy: {'yes' if rep['confidence_tracks_accuracy'] else 'NO'} "
        f"(top half {rk['top_half_accuracy']:.3f} vs bottom half {rk['bottom_half_accuracy']:.3f}; "
        f"AUROC of confidence for correctness {rk['auroc']:.3f}; Spearman over bins with >= {rk['min_bin_count']} texts "
        f"{rk['spearman_bins']:.2f}, {rk['monotonic_violations']} drop(s) across {rk['bins_used']} bins)"
    )
    return "\n".join(lines)
