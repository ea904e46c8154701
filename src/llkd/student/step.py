"""One LLKD training step: a forward-only scoring pass over the batch (when the selector needs
the student), selection, then forward+backward on the selected rows only with the weighted
loss, so training cost falls with the selection rate.

With several processes each takes its share of every batch (rows ``rank::world``); every count
here is the whole batch's, summed over processes, so all ranks log and decide alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from llkd.selection.selectors import Selection, SelectionBatch, Selector
from llkd.selection.thresholds import weighted_cross_entropy, weighted_soft_cross_entropy
from llkd.student.modes import StudentMode


def batch_rows(step: int, n: int, batch_size: int, seed: int, world: int = 1) -> tuple[int, np.ndarray]:
    """(epoch, training rows) of step ``step``: each epoch a fresh permutation of ``n`` rows
    seeded by ``seed + epoch``. With ``world`` processes the batch is topped up with rows from
    the epoch's start to a multiple of ``world``: equal shares, so every process selects (and
    all-reduces) every step."""
    steps_per_epoch = -(-n // batch_size)
    epoch, k = divmod(step, steps_per_epoch)
    order = np.random.default_rng(seed + epoch).permutation(n)
    rows = order[k * batch_size : (k + 1) * batch_size]
    if world > 1:
        short = -len(rows) % world
        rows = np.concatenate([rows, order[:short]])
    return epoch, rows


@dataclass
class BatchSelection:
    rows: np.ndarray  # the whole batch's training rows
    local: np.ndarray  # this process's share of them
    selection: Selection | None  # over ``local``; None when the share is empty
    picked: np.ndarray  # bool [len(rows)]: selected by whichever process held the row
    stats: dict[str, Any]  # for the step log

    @property
    def count(self) -> int:
        """|S_t|, the whole batch's selected set."""
        return int(self.picked.sum())

    @property
    def local_mask(self) -> torch.Tensor:
        return self.selection.mask if self.selection is not None else torch.zeros(0, dtype=torch.bool)


class TrainStep:
    def __init__(self, mode: StudentMode, trainable: Any, selector: Selector, optimizer: Any, acc: Any,
                 pseudo_labels: torch.Tensor, teacher_probs: torch.Tensor) -> None:
        self.mode, self.trainable, self.selector, self.optimizer, self.acc = mode, trainable, selector, optimizer, acc
        self.pseudo_labels, self.teacher_probs = pseudo_labels, teacher_probs
        self.num_labels = teacher_probs.shape[1]

    def score(self, rows: np.ndarray) -> torch.Tensor:
        """The student's probabilities [len(rows), C] on CPU: forward only, eval mode (no dropout),
        in the run's compute dtype."""
        self.trainable.eval()
        with torch.no_grad():
            probs = torch.softmax(self.mode.logits(self.trainable, rows), dim=-1).cpu()
        self.trainable.train()
        return probs

    def select(self, rows: np.ndarray, student_probs: torch.Tensor | None = None) -> BatchSelection:
        """Score (unless ``student_probs``, scored already, are given: one process only) and select."""
        world, rank = self.acc.num_processes, self.acc.process_index
        local = rows[rank::world] if world > 1 else rows
        idx = torch.from_numpy(local)
        batch = SelectionBatch(indices=idx, pseudo_labels=self.pseudo_labels[idx], teacher_probs=self.teacher_probs[idx])
        if self.selector.needs_student and len(local):
            batch.student_probs = student_probs if student_probs is not None else self.score(local)
        selection = self.selector.select(batch) if len(local) else None
        stats = dict(selection.stats) if selection is not None else {}
        mask = selection.mask if selection is not None else torch.zeros(0, dtype=torch.bool)
        picked = np.zeros(len(rows), dtype=bool)
        if world > 1:
            mine = torch.zeros(len(rows), dtype=torch.float32)
            mine[rank::world] = mask.float()
            picked = self.acc.reduce(mine.to(self.acc.device), reduction="sum").cpu().numpy() > 0
        else:
            picked[mask.numpy()] = True
        # per pseudo-label class: the early warning of a collapse onto one class
        stats["selected_per_class"] = np.bincount(self.pseudo_labels.numpy()[rows[picked]], minlength=self.num_labels).tolist()
        if world > 1:
            stats["rank_selected"] = int(mask.sum())
        return BatchSelection(rows, local, selection, picked, stats)

    def update(self, chosen: BatchSelection) -> float:
        """Forward+backward on the selected rows and one optimiser step; the batch's mean
        weighted loss. Call only when ``chosen.count`` > 0: an empty S_t makes no update."""
        world = self.acc.num_processes
        mask = chosen.local_mask
        mine = int(mask.sum())
        # A process with an empty share still joins DDP's gradient all-reduce, with weight 0.
        rows = chosen.local[mask.numpy()] if mine else chosen.local[:1]
        weights = chosen.selection.weights[mask] if mine and chosen.selection is not None else torch.zeros(1)
        # DDP averages gradients over processes; scaling by world / |S_batch| makes that average
        # the gradient of the mean loss over the whole batch's selected set, as in one process.
        count = chosen.count / world if world > 1 else None
        return self.train_rows(rows, weights, count)

    def train_rows(self, rows: np.ndarray, weights: torch.Tensor, count: float | None = None) -> float:
        """Forward+backward on the training rows ``rows`` with their loss weights, one optimiser
        step; the mean weighted loss (``count``: see :meth:`loss`)."""
        acc, world = self.acc, self.acc.num_processes
        logits = self.mode.logits(self.trainable, rows)
        loss = self.loss(logits, torch.from_numpy(rows), weights.to(acc.device), count)
        acc.backward(loss)
        acc.clip_grad_norm_(self.trainable.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if world > 1:
            return float(acc.reduce(loss.detach().reshape(1), reduction="sum")) / world
        return float(loss.detach())

    def loss(self, logits: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor, count: float | None) -> torch.Tensor:
        """The selection-weighted loss: towards the teacher's distribution or its hard label."""
        device = self.acc.device
        if self.selector.soft_targets:
            return weighted_soft_cross_entropy(logits, self.teacher_probs[rows].to(device), weights, count)
        return weighted_cross_entropy(logits, self.pseudo_labels[rows].to(device), weights, count)
