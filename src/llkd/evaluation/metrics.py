"""Classification metrics (numpy only) and the data-usage counts of method.md section 5."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


def confusion_matrix(gold: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """[gold, predicted] counts; a prediction of -1 (no answer) is in no column."""
    gold, pred = np.asarray(gold), np.asarray(pred)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    ok = pred >= 0
    np.add.at(cm, (gold[ok], pred[ok]), 1)
    return cm


def per_class_prf(cm: np.ndarray, gold_n: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 per class; ``gold_n`` (default: the matrix's row sums) counts
    gold texts that got no prediction too, so they lower recall."""
    tp = np.diag(cm).astype(float)
    pred_n = cm.sum(axis=0).astype(float)
    gold_n = (cm.sum(axis=1) if gold_n is None else np.asarray(gold_n)).astype(float)
    precision = np.divide(tp, pred_n, out=np.zeros_like(tp), where=pred_n > 0)
    recall = np.divide(tp, gold_n, out=np.zeros_like(tp), where=gold_n > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1


@dataclass
class ClassificationReport:
    accuracy: float
    macro_f1: float
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    confusion: list[list[int]]
    labels: list[str]

    def as_dict(self) -> dict:
        return self.__dict__.copy()

    def table(self) -> str:
        w = max(len(n) for n in self.labels + ["label"])
        lines = [f"{'label':<{w}}  precision  recall     f1  support"]
        for i, n in enumerate(self.labels):
            lines.append(f"{n:<{w}}  {self.precision[i]:9.3f}  {self.recall[i]:6.3f}  {self.f1[i]:5.3f}  {self.support[i]:7d}")
        lines.append(f"accuracy {self.accuracy:.4f}   macro-F1 {self.macro_f1:.4f}")
        lines.append("confusion (rows gold, columns predicted):")
        lines += ["  " + " ".join(f"{v:5d}" for v in row) for row in self.confusion]
        return "\n".join(lines)


def macro_f1(gold: Sequence[int], pred: Sequence[int], num_classes: int) -> float:
    """Macro-F1 over the classes present in gold or predictions (as classification_report)."""
    cm = confusion_matrix(np.asarray(gold), np.asarray(pred), num_classes)
    present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    return float(per_class_prf(cm)[2][present].mean()) if present.any() else float("nan")


def reweighted_macro_f1(gold: Sequence[int], pred: Sequence[int], num_classes: int, target_prior: Sequence[float]) -> float:
    """Macro-F1 the predictions would score on a split whose class mix were ``target_prior``:
    each gold-class row of the confusion matrix is rescaled to that class's target share
    (importance weights pi_target(y) / pi_split(y)). Used where a pool was resampled to a skewed
    prior but the test split kept its own, so all its texts still count."""
    cm = confusion_matrix(np.asarray(gold), np.asarray(pred), num_classes).astype(np.float64)
    support = np.bincount(np.asarray(gold), minlength=num_classes).astype(np.float64).reshape(-1, 1)
    target = np.asarray(target_prior, dtype=np.float64).reshape(-1, 1)
    cm = np.divide(cm, support, out=np.zeros_like(cm), where=support > 0) * target
    gold_n = np.where(support.ravel() > 0, target.ravel(), 0.0)  # unanswered texts still count in their class
    present = (cm.sum(axis=0) + gold_n) > 0
    return float(per_class_prf(cm, gold_n)[2][present].mean()) if present.any() else float("nan")


def classification_report(gold: Sequence[int], pred: Sequence[int], labels: list[str]) -> ClassificationReport:
    """Macro-F1 averages over every class of the schema (a class never predicted scores 0),
    over classes present in gold or predictions."""
    g, p = np.asarray(gold), np.asarray(pred)
    cm = confusion_matrix(g, p, len(labels))
    support = np.bincount(g, minlength=len(labels))  # texts with no prediction (-1) count, as errors
    precision, recall, f1 = per_class_prf(cm, support)
    present = (cm.sum(axis=0) + support) > 0
    return ClassificationReport(
        accuracy=float((g == p).mean()) if len(g) else float("nan"),
        macro_f1=float(f1[present].mean()) if present.any() else float("nan"),
        precision=precision.round(4).tolist(),
        recall=recall.round(4).tolist(),
        f1=f1.round(4).tolist(),
        support=support.tolist(),
        confusion=cm.tolist(),
        labels=list(labels),
    )


def bootstrap_diff_ci(gold: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, num_classes: int, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval over test texts of macro-F1(a) - macro-F1(b)."""
    rng = np.random.default_rng(seed)
    diffs = np.empty(n)
    for k in range(n):
        idx = rng.integers(0, len(gold), len(gold))
        fa = per_class_prf(confusion_matrix(gold[idx], pred_a[idx], num_classes))[2]
        fb = per_class_prf(confusion_matrix(gold[idx], pred_b[idx], num_classes))[2]
        diffs[k] = fa.mean() - fb.mean()
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float(lo), float(hi)
