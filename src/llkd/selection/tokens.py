"""Token-level LLKD selection for entity recognition (method.md sections 2-4, applied per
sub-word token instead of per text): pure functions on tensors, plus one small stateful
selector that holds the moving averages.

Conventions (the token student, ``llkd.student.tokens``, builds the inputs):

* ``labels`` [B, L]: the teacher's hard tag per sub-word (an index into ``schema.tags``:
  ``O``, then ``B-X``, ``I-X`` per type), ``ignore_index`` (-100) where a token is not trained
  (special tokens, padding, and with ``rest="ignore"`` a word's later sub-words).
* ``confidence`` [B, L]: the teacher's probability of that tag (``c`` of the span a token is
  in; the 'no entity here' confidence for an ``O`` token).
* The classes of the class-wise thresholds are the entity **types**: tag ``k`` belongs to
  class ``(k + 1) // 2`` -- ``O`` is class 0, ``B-X`` and ``I-X`` of the schema's i-th type
  class i + 1. Thresholds are computed on the batch's valid tokens, flattened.
* A selection never drops a sentence: tokens not selected get ``ignore_index`` in the training
  labels (:func:`masked_labels`), so they carry no loss, while the sentence still gives them
  context. Weights are ``c * u`` (or the signals in use), mean 1 over the selected tokens.

Modes (:data:`TOKEN_MODES`): ``llkd`` (teacher-confident AND student-uncertain, each against
its type-wise adaptive threshold), ``all`` (every valid token, hard tags), ``fixed`` (teacher
confidence >= one fixed threshold), ``teacher_adaptive`` (the teacher side of llkd only) and
``soft`` (every valid token, KL to the teacher's token distribution).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from llkd.selection.thresholds import (
    AdaptiveThreshold,
    above_threshold,
    loss_weights,
    normalized_entropy,
    weighted_cross_entropy,
    weighted_soft_cross_entropy,
)

IGNORE_INDEX = -100
TOKEN_MODES = ("llkd", "all", "fixed", "teacher_adaptive", "soft")


def num_type_classes(num_tags: int) -> int:
    """Threshold classes of a BIO tag set ``O, B-X1, I-X1, ...``: O plus one per type."""
    if num_tags < 3 or num_tags % 2 == 0:
        raise ValueError(f"a BIO tag set has 1 + 2 x types tags, not {num_tags}")
    return (num_tags + 1) // 2


def tag_classes(labels: torch.Tensor) -> torch.Tensor:
    """Type class of each tag index: O -> 0, B-X/I-X of the i-th type -> i + 1 (valid tags
    only; ignore entries give a meaningless negative value, mask them first)."""
    return torch.div(labels.long() + 1, 2, rounding_mode="floor")


def valid_tokens(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Bool mask of the tokens with a teacher tag."""
    return labels != ignore_index


def token_uncertainty(student_probs: torch.Tensor) -> torch.Tensor:
    """u = H(p) / log K per token (K tags), in [0, 1]; probs [..., K]."""
    shape = student_probs.shape
    return normalized_entropy(student_probs.reshape(-1, shape[-1])).reshape(shape[:-1])


def masked_labels(labels: torch.Tensor, mask: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """The training labels: the teacher's tag where selected, ``ignore_index`` elsewhere."""
    return torch.where(mask, labels, torch.full_like(labels, ignore_index))


def token_weights(mask: torch.Tensor, *signals: torch.Tensor) -> torch.Tensor:
    """w = product of the signals on the selected tokens, mean 1 over them, 0 elsewhere
    (:func:`~llkd.selection.thresholds.loss_weights` on any shape)."""
    flat = [s.reshape(-1) for s in signals]
    return loss_weights(mask.reshape(-1), *flat).reshape(mask.shape)


def adaptive_mask(signal: torch.Tensor, labels: torch.Tensor, threshold: AdaptiveThreshold,
                  ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold the valid tokens' ``signal`` into ``threshold``'s EMA levels (classes: tag types),
    then keep the valid tokens at or above their type's tau(y) = g m(y) / max m.
    Returns (mask [B, L], tau per type class)."""
    valid = valid_tokens(labels, ignore_index)
    classes = tag_classes(labels[valid])
    values = signal[valid].detach().float().cpu()
    classes = classes.cpu()
    tau = threshold.update(values, classes) if values.numel() else threshold.thresholds()
    mask = torch.zeros(labels.shape, dtype=torch.bool)
    mask[valid.cpu()] = above_threshold(values, classes, tau)
    return mask, tau


def per_type_counts(labels: torch.Tensor, mask: torch.Tensor, num_classes: int) -> list[int]:
    """Selected tokens per type class (O first)."""
    classes = tag_classes(labels[mask]).cpu()
    return torch.bincount(classes, minlength=num_classes).tolist() if classes.numel() else [0] * num_classes


def token_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
               soft_targets: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """sum_i w_i * CE(p_i, yhat_i) / |S| over the tokens whose (masked) label is not ignored;
    with ``soft_targets`` [B, L, K] the KL to the teacher's distribution instead. No
    selected token: a zero that still has a graph (backward is a no-op)."""
    keep = valid_tokens(labels, ignore_index)
    if not bool(keep.any()):
        return logits.sum() * 0.0
    flat = logits[keep].float()
    if soft_targets is not None:
        return weighted_soft_cross_entropy(flat, soft_targets[keep].float(), weights[keep].float())
    return weighted_cross_entropy(flat, labels[keep].long(), weights[keep].float())


@dataclass
class TokenSelection:
    mask: torch.Tensor  # [B, L] bool: tokens that carry loss
    weights: torch.Tensor  # [B, L] float, mean 1 over the selected tokens, 0 elsewhere
    stats: dict[str, Any] = field(default_factory=dict)  # thresholds and counts, for the step log


class TokenSelector:
    """One of :data:`TOKEN_MODES` on token batches. Thresholds (per type class) follow the EMA
    of selection/thresholds.py with ``momentum``. ``student_threshold`` as the ``llkd``
    selector's option of that name (method.md 9): ``batch`` (default) takes the student side's
    levels from the current batch (momentum 0: no lag behind a falling uncertainty, which
    starved the student in a short run), ``ema`` is the paper's rule."""

    def __init__(self, mode: str, num_tags: int, momentum: float = 0.9, fixed_threshold: float = 0.7,
                 weighted: bool = True, student_threshold: str = "batch", ignore_index: int = IGNORE_INDEX) -> None:
        if mode not in TOKEN_MODES:
            raise ValueError(f"unknown token selector '{mode}' (one of {', '.join(TOKEN_MODES)})")
        self.mode = mode
        self.num_classes = num_type_classes(num_tags)
        self.fixed_threshold = fixed_threshold
        self.weighted = weighted
        self.ignore_index = ignore_index
        self.teacher = AdaptiveThreshold(self.num_classes, momentum)
        if student_threshold not in ("batch", "ema"):
            raise ValueError(f"student_threshold must be 'batch' or 'ema', not {student_threshold!r}")
        self.student = AdaptiveThreshold(self.num_classes, momentum if student_threshold == "ema" else 0.0)

    @property
    def needs_student(self) -> bool:
        return self.mode == "llkd"

    @property
    def soft_targets(self) -> bool:
        return self.mode == "soft"

    def select(self, labels: torch.Tensor, confidence: torch.Tensor, student_probs: torch.Tensor | None = None) -> TokenSelection:
        labels, confidence = labels.cpu(), confidence.detach().float().cpu()
        valid = valid_tokens(labels, self.ignore_index)
        stats: dict[str, Any] = {}
        signals: list[torch.Tensor] = []
        if self.mode in ("all", "soft"):
            mask = valid
        elif self.mode == "fixed":
            mask = valid & (confidence >= self.fixed_threshold)
            stats["teacher_threshold"] = self.fixed_threshold
        else:
            mask, tau_t = adaptive_mask(confidence, labels, self.teacher, self.ignore_index)
            signals.append(confidence)
            stats["teacher_threshold"] = tau_t.tolist()
            if self.mode == "llkd":
                if student_probs is None:
                    raise ValueError("the llkd token selector needs the student's probabilities")
                u = token_uncertainty(student_probs.detach().float().cpu())
                student_mask, tau_s = adaptive_mask(u, labels, self.student, self.ignore_index)
                mask &= student_mask
                signals.append(u)
                stats["student_threshold"] = tau_s.tolist()
                stats["mean_uncertainty"] = float(u[valid].mean()) if bool(valid.any()) else float("nan")
        weights = token_weights(mask, *signals) if self.weighted else token_weights(mask)
        stats.update(tokens=int(valid.sum()), selected=int(mask.sum()),
                     selected_per_type=per_type_counts(labels, mask, self.num_classes))
        return TokenSelection(mask, weights, stats)

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher.state_dict(), "student": self.student.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self.student.load_state_dict(state["student"])
