"""LLKD selection math (method.md sections 2-4): pure functions on tensors, plus the one
small stateful object that holds the moving averages.

Notation: s is a per-sample signal (teacher confidence c, or student uncertainty u), y the
class each sample is attributed to (the teacher's pseudo-label), lambda the EMA momentum.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

Reducer = Callable[[torch.Tensor], torch.Tensor]  # sums a tensor across processes (DDP)


def normalized_entropy(probs: torch.Tensor) -> torch.Tensor:
    """u = H(p) / log C, in [0, 1]; probs is [B, C]."""
    c = probs.shape[-1]
    p = probs.clamp_min(1e-12)
    return (-(probs * p.log()).sum(dim=-1) / math.log(c)).clamp(0.0, 1.0)


def label_uncertainty(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """1 - p(y_hat): the student's uncertainty about the teacher's label, in [0, 1]. Unlike
    entropy it is high for a confident student that disagrees with the teacher."""
    return (1.0 - probs.gather(-1, labels.long().unsqueeze(-1)).squeeze(-1)).clamp(0.0, 1.0)


def batch_sums(signal: torch.Tensor, classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Sufficient statistics of a batch as one vector [sum, count, class sums (C), class counts (C)],
    so several processes can add theirs before the means are taken."""
    s = signal.double()
    class_sum = torch.zeros(num_classes, dtype=torch.float64, device=s.device).index_add_(0, classes, s)
    class_cnt = torch.zeros(num_classes, dtype=torch.float64, device=s.device).index_add_(0, classes, torch.ones_like(s))
    head = torch.stack([s.sum(), torch.tensor(float(s.numel()), dtype=torch.float64, device=s.device)])
    return torch.cat([head, class_sum, class_cnt])


def batch_means(sums: torch.Tensor, num_classes: int) -> tuple[float, torch.Tensor, torch.Tensor]:
    """(global mean, class means, class present mask) from :func:`batch_sums` output."""
    total, count = float(sums[0]), float(sums[1])
    class_sum, class_cnt = sums[2 : 2 + num_classes], sums[2 + num_classes :]
    present = class_cnt > 0
    class_mean = torch.where(present, class_sum / class_cnt.clamp_min(1.0), torch.zeros_like(class_sum))
    return (total / count if count else float("nan")), class_mean, present


def init_levels(global_mean: float, class_mean: torch.Tensor, present: torch.Tensor) -> tuple[float, torch.Tensor]:
    """First-batch initialisation: g = batch mean, m(y) = class mean; a class absent from the
    first batch starts at the global mean (no evidence that it differs)."""
    return global_mean, torch.where(present, class_mean, torch.full_like(class_mean, global_mean))


def ema_update(
    global_level: float,
    class_level: torch.Tensor,
    global_mean: float,
    class_mean: torch.Tensor,
    present: torch.Tensor,
    momentum: float,
) -> tuple[float, torch.Tensor]:
    """g_t = l*g + (1-l)*mean_B s;  m_t(y) = l*m(y) + (1-l)*mean_{B, y} s; absent classes keep m(y)."""
    g = momentum * global_level + (1.0 - momentum) * global_mean
    updated = momentum * class_level + (1.0 - momentum) * class_mean
    return g, torch.where(present, updated, class_level)


def class_thresholds(global_level: float, class_level: torch.Tensor) -> torch.Tensor:
    """tau(y) = g * m(y) / max_y' m(y')."""
    top = class_level.max()
    if top <= 0:
        return torch.zeros_like(class_level)
    return global_level * class_level / top


def above_threshold(signal: torch.Tensor, classes: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Mask of samples whose signal reaches their class threshold."""
    return signal >= thresholds.to(signal.dtype)[classes]


def top_up(mask: torch.Tensor, score: torch.Tensor, floor: int) -> torch.Tensor:
    """Add the highest-scoring unselected samples until at least ``floor`` are selected."""
    missing = min(floor, len(mask)) - int(mask.sum())
    if missing <= 0:
        return mask
    candidates = torch.where(mask, torch.full_like(score, -math.inf, dtype=torch.float64), score.double())
    out = mask.clone()
    out[torch.topk(candidates, missing).indices] = True
    return out


def update_class_share(share: torch.Tensor, counts: torch.Tensor, momentum: float) -> torch.Tensor:
    """EMA of each class's share among the selected samples; a step with none keeps the share."""
    total = float(counts.sum())
    if total <= 0:
        return share
    return momentum * share + (1.0 - momentum) * counts.double() / total


def balance_multipliers(share: torch.Tensor, target: torch.Tensor | None = None, lo: float = 0.1, hi: float = 10.0) -> torch.Tensor:
    """target(y) / share(y), clipped (target default: 1/C each): a class that takes more than
    its target share of the selected samples weighs less, one that takes less weighs more."""
    if target is None:
        target = torch.full_like(share, 1.0 / share.numel())
    return (target.to(share.dtype) / share.clamp_min(1e-6)).clamp(lo, hi)


def loss_weights(mask: torch.Tensor, *signals: torch.Tensor) -> torch.Tensor:
    """w_i = prod(signals)_i on the selected set, normalised to mean 1 there; 0 elsewhere.
    With no signals (or all-zero products) the selected samples weigh 1."""
    w = torch.ones(mask.shape, dtype=torch.float32, device=mask.device)
    for s in signals:
        w = w * s.float()
    w = torch.where(mask, w, torch.zeros_like(w))
    n = int(mask.sum())
    if n == 0:
        return w
    total = float(w.sum())
    if total <= 0:
        return mask.float()
    return w * (n / total)


def _denominator(rows: int, count: float | None) -> float:
    # a share of the batch's selected set can be fractional (e.g. 1 sample over 2 processes)
    return float(max(rows, 1)) if count is None else max(float(count), 1e-12)


def weighted_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, count: float | None = None) -> torch.Tensor:
    """L_w = sum_i w_i * CE(p_i, yhat_i) / |S| over the rows given (the selected set).
    ``count`` replaces |S| (default: the rows given), e.g. by the whole batch's selected set
    when each process holds only its share of it."""
    ce = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    return (weights * ce).sum() / _denominator(len(targets), count)


def weighted_soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor, weights: torch.Tensor, count: float | None = None) -> torch.Tensor:
    """Weighted KL(q || p) to the teacher distribution (standard KD with soft labels);
    ``count`` as in weighted_cross_entropy."""
    logp = torch.log_softmax(logits, dim=-1)
    q = target_probs.clamp_min(1e-12)
    kl = (target_probs * (q.log() - logp)).sum(dim=-1)
    return (weights * kl).sum() / _denominator(len(target_probs), count)


class AdaptiveThreshold:
    """Class-wise self-adaptive threshold on one signal (FreeMatch-style EMA levels).
    ``classwise=False`` holds every class to the global level g instead of g * m(y) / max m."""

    def __init__(self, num_classes: int, momentum: float, init: str = "first_batch", init_value: float = 0.5, classwise: bool = True) -> None:
        if init not in ("first_batch", "constant"):
            raise ValueError(f"unknown threshold init '{init}'")
        self.num_classes = num_classes
        self.momentum = momentum
        self.init = init
        self.classwise = classwise
        self.global_level: float | None = None
        self.class_level: torch.Tensor | None = None
        if init == "constant":
            self.global_level = init_value
            self.class_level = torch.full((num_classes,), init_value, dtype=torch.float64)
        self.steps = 0

    def update(self, signal: torch.Tensor, classes: torch.Tensor, reduce: Reducer | None = None) -> torch.Tensor:
        """Fold one batch into the levels and return the class thresholds tau_t (on CPU)."""
        sums = batch_sums(signal.detach(), classes, self.num_classes)
        if reduce is not None:
            sums = reduce(sums)
        sums = sums.cpu()
        mean, class_mean, present = batch_means(sums, self.num_classes)
        if self.global_level is None or self.class_level is None:
            self.global_level, self.class_level = init_levels(mean, class_mean, present)
        elif not math.isnan(mean):
            self.global_level, self.class_level = ema_update(self.global_level, self.class_level, mean, class_mean, present, self.momentum)
        self.steps += 1
        return self.thresholds()

    def thresholds(self) -> torch.Tensor:
        if self.global_level is None or self.class_level is None:
            return torch.zeros(self.num_classes, dtype=torch.float64)
        if not self.classwise:
            return torch.full((self.num_classes,), float(self.global_level), dtype=torch.float64)
        return class_thresholds(self.global_level, self.class_level)

    def state_dict(self) -> dict:
        return {
            "global_level": self.global_level,
            "class_level": None if self.class_level is None else self.class_level.tolist(),
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict) -> None:
        self.global_level = state["global_level"]
        cl = state["class_level"]
        self.class_level = None if cl is None else torch.tensor(cl, dtype=torch.float64)
        self.steps = int(state["steps"])
