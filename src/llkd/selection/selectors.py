"""Sample selectors: LLKD and every baseline of method.md section 6 behind one interface.

A selector sees one training batch (teacher pseudo-labels and confidences, and, if it asks
for them, the student's current probabilities) and returns which samples to train on and
with what loss weight. Adding a method is one small registered class.
"""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from llkd.config import SelectionConfig
from llkd.registry import Registry
from llkd.selection.thresholds import (
    AdaptiveThreshold,
    Reducer,
    above_threshold,
    balance_multipliers,
    label_uncertainty,
    loss_weights,
    normalized_entropy,
    top_up,
    update_class_share,
)


@dataclass
class SelectionBatch:
    indices: torch.Tensor  # [B] pool row of each sample
    pseudo_labels: torch.Tensor  # [B] teacher's labels
    teacher_probs: torch.Tensor  # [B, C]
    student_probs: torch.Tensor | None = None  # [B, C], only for selectors with needs_student

    @property
    def confidence(self) -> torch.Tensor:
        return self.teacher_probs.max(dim=-1).values

    @property
    def uncertainty(self) -> torch.Tensor:
        if self.student_probs is None:
            raise ValueError("this selector needs the student's probabilities")
        return normalized_entropy(self.student_probs)


@dataclass
class Selection:
    mask: torch.Tensor  # [B] bool
    weights: torch.Tensor  # [B] float, mean 1 over the selected samples, 0 elsewhere
    stats: dict[str, Any] = field(default_factory=dict)  # thresholds etc., for the step log


class Selector(ABC):
    needs_student: bool = False  # run a forward-only scoring pass before selecting
    soft_targets: bool = False  # train on the teacher distribution instead of hard labels

    def __init__(self, num_classes: int, cfg: SelectionConfig, pool_size: int = 0, seed: int = 0, class_prior: np.ndarray | None = None) -> None:
        self.num_classes = num_classes
        # the class shares the teacher's calibration estimated for the pool (None: uniform)
        self.class_prior = None if class_prior is None else torch.as_tensor(np.asarray(class_prior, dtype=np.float64) / np.sum(class_prior))
        self.cfg = cfg
        self.pool_size = pool_size
        self.seed = seed
        self.reduce: Reducer | None = None  # set by a distributed trainer
        if cfg.soft_targets:  # any selector can train on the teacher's distribution
            self.soft_targets = True

    def select(self, batch: SelectionBatch) -> Selection:
        mask = torch.ones(len(batch.indices), dtype=torch.bool)
        return Selection(mask, loss_weights(mask))

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


SELECTORS: Registry[Selector] = Registry("selector")


def build_selector(cfg: SelectionConfig, num_classes: int, pool_size: int, seed: int, class_prior: np.ndarray | None = None) -> Selector:
    return SELECTORS.get(cfg.selector)(num_classes, cfg, pool_size=pool_size, seed=seed, class_prior=class_prior)


@SELECTORS.register("all")
class AllSelector(Selector):
    """Every pseudo-label, hard targets."""


@SELECTORS.register("soft")
class SoftSelector(Selector):
    """Every sample, trained towards the teacher's full distribution (standard KD)."""

    soft_targets = True


@SELECTORS.register("random")
class RandomSelector(Selector):
    """A fixed random subset of the pool of size keep_rate * N (set keep_rate to LLKD's data
    usage for the matched-budget baseline); a sample in it is used whenever it comes up."""

    def __init__(self, num_classes: int, cfg: SelectionConfig, pool_size: int = 0, seed: int = 0, class_prior: np.ndarray | None = None) -> None:
        super().__init__(num_classes, cfg, pool_size, seed, class_prior)
        if pool_size <= 0:
            raise ValueError("random selector needs the pool size")
        keep = np.zeros(pool_size, dtype=bool)
        n = max(1, round(cfg.keep_rate * pool_size))
        keep[np.random.default_rng(seed).choice(pool_size, size=n, replace=False)] = True
        self.keep = torch.from_numpy(keep)

    def select(self, batch: SelectionBatch) -> Selection:
        mask = self.keep[batch.indices.cpu()]
        return Selection(mask, loss_weights(mask))


@SELECTORS.register("fixed")
class FixedThresholdSelector(Selector):
    """Teacher confidence above one fixed global threshold."""

    def select(self, batch: SelectionBatch) -> Selection:
        mask = (batch.confidence >= self.cfg.fixed_threshold).cpu()
        return Selection(mask, loss_weights(mask), {"teacher_threshold": self.cfg.fixed_threshold})


@SELECTORS.register("llkd")
class LLKDSelector(Selector):
    """Keep samples the teacher is confident about AND the student is uncertain about, each
    against its own class-wise adaptive threshold; weight the loss by c * u (method.md 3-4).

    Beyond the paper, each a config option (method.md 8): the student signal (entropy or
    1 - p_student(pseudo-label)), a student threshold without EMA lag, a global (not
    class-wise) teacher threshold, a class-balance guard on the selected set, and a floor on
    samples per step. ``llkd-paper`` ignores them."""

    use_teacher = True
    use_student = True
    needs_student = True
    paper_rule = False

    def __init__(self, num_classes: int, cfg: SelectionConfig, pool_size: int = 0, seed: int = 0, class_prior: np.ndarray | None = None) -> None:
        super().__init__(num_classes, cfg, pool_size, seed, class_prior)
        if self.paper_rule:  # the paper's rule exactly, whatever the variant options say
            cfg = cfg.model_copy(update={"student_signal": "entropy", "student_threshold": "ema", "teacher_threshold": "class", "class_balance": "none", "min_per_step": 0})
        self.options = cfg
        self.teacher_threshold = AdaptiveThreshold(num_classes, cfg.momentum, cfg.init, cfg.init_value, classwise=cfg.teacher_threshold == "class")
        # momentum 0: the class-wise levels of the current batch (no lag behind a falling signal)
        student_momentum = cfg.momentum if cfg.student_threshold == "ema" else 0.0
        self.student_threshold = AdaptiveThreshold(num_classes, student_momentum, cfg.init, cfg.init_value)
        # the EMA starts at the guard's target, so the first steps are not reweighted
        prior_target = cfg.class_balance_target == "prior" and self.class_prior is not None
        self.class_share = self.class_prior.clone() if prior_target else torch.full((num_classes,), 1.0 / num_classes, dtype=torch.float64)

    def student_signal(self, batch: SelectionBatch) -> torch.Tensor:
        if self.options.student_signal == "label_uncertainty":
            assert batch.student_probs is not None
            return label_uncertainty(batch.student_probs.detach().cpu(), batch.pseudo_labels.cpu())
        return batch.uncertainty.detach().cpu()

    def select(self, batch: SelectionBatch) -> Selection:
        opt = self.options
        y = batch.pseudo_labels.cpu()
        mask = torch.ones(len(y), dtype=torch.bool)
        signals: list[torch.Tensor] = []
        stats: dict[str, Any] = {}
        if self.use_teacher:
            c = batch.confidence.detach().cpu()
            tau_t = self.teacher_threshold.update(c, y, self.reduce)
            mask &= above_threshold(c, y, tau_t)
            signals.append(c)
            stats["teacher_threshold"] = tau_t.tolist()
            stats["teacher_global"] = self.teacher_threshold.global_level
        if self.use_student:
            u = self.student_signal(batch)
            tau_s = self.student_threshold.update(u, y, self.reduce)
            mask &= above_threshold(u, y, tau_s)
            signals.append(u)
            stats["student_threshold"] = tau_s.tolist()
            stats["student_global"] = self.student_threshold.global_level
            total = torch.tensor([float(u.double().sum()), float(len(u))], dtype=torch.float64)
            if self.reduce is not None:  # the whole batch's mean, the same on every process
                total = self.reduce(total).cpu()
            stats["mean_uncertainty"] = float(total[0] / total[1]) if total[1] else float("nan")
        if opt.min_per_step:
            score = torch.ones(len(y), dtype=torch.float64)
            for sig in signals:
                score = score * sig.double()
            passed = int(mask.sum())
            mask = top_up(mask, score, opt.min_per_step)
            topped = torch.tensor([float(int(mask.sum()) - passed)], dtype=torch.float64)
            # the floor holds per process: with several, each tops up its own share
            stats["topped_up"] = int(self.reduce(topped).cpu()[0]) if self.reduce is not None else int(topped[0])
        weights = loss_weights(mask, *signals) if opt.weighted else loss_weights(mask)
        if opt.class_balance == "selected_share":
            counts = torch.zeros(self.num_classes, dtype=torch.float64).index_add_(0, y[mask], torch.ones(int(mask.sum()), dtype=torch.float64))
            if self.reduce is not None:
                counts = self.reduce(counts).cpu()
            self.class_share = update_class_share(self.class_share, counts, opt.momentum)
            target = self.class_prior if opt.class_balance_target == "prior" else None
            weights = loss_weights(mask, weights, balance_multipliers(self.class_share, target)[y].float())
            stats["class_share"] = [round(float(v), 4) for v in self.class_share]
        return Selection(mask, weights, stats)

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher_threshold.state_dict(), "student": self.student_threshold.state_dict(), "class_share": self.class_share.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher_threshold.load_state_dict(state["teacher"])
        self.student_threshold.load_state_dict(state["student"])
        if "class_share" in state:
            self.class_share = torch.tensor(state["class_share"], dtype=torch.float64)


@SELECTORS.register("llkd-paper")
class LLKDPaperSelector(LLKDSelector):
    """The paper's rule as reconstructed in method.md 2-4 (entropy, EMA thresholds, c*u
    weights), kept runnable whatever the default ``llkd`` becomes."""

    paper_rule = True


@SELECTORS.register("teacher_adaptive")
class TeacherAdaptiveSelector(LLKDSelector):
    """LLKD's teacher side only: class-wise adaptive threshold on teacher confidence."""

    use_student = False
    needs_student = False


@SELECTORS.register("student_adaptive")
class StudentAdaptiveSelector(LLKDSelector):
    """LLKD's student side only: class-wise adaptive threshold on student uncertainty."""

    use_teacher = False


@SELECTORS.register("freematch")
class FreeMatchSelector(Selector):
    """FreeMatch-style self-adaptive threshold on the student's own confidence (max p), with
    classes taken from the student's prediction; targets stay the teacher's pseudo-labels."""

    needs_student = True

    def __init__(self, num_classes: int, cfg: SelectionConfig, pool_size: int = 0, seed: int = 0, class_prior: np.ndarray | None = None) -> None:
        super().__init__(num_classes, cfg, pool_size, seed, class_prior)
        self.threshold = AdaptiveThreshold(num_classes, cfg.momentum, cfg.init, cfg.init_value)

    def select(self, batch: SelectionBatch) -> Selection:
        assert batch.student_probs is not None
        conf, pred = batch.student_probs.detach().cpu().max(dim=-1)
        tau = self.threshold.update(conf, pred, self.reduce)
        mask = above_threshold(conf, pred, tau)
        return Selection(mask, loss_weights(mask), {"student_threshold": tau.tolist(), "student_global": self.threshold.global_level})

    def state_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.threshold.load_state_dict(state["threshold"])
