"""The trainer's state and what the loop hands its callbacks: small objects, no behaviour
beyond bookkeeping."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class CandidatePool:
    """Candidate-batch selection's position in the data (student.candidate_factor > 1): what a
    resumed run needs to go on exactly where it stopped."""

    cursor: int = 0  # chunks of batch_size candidates consumed in the run: the LR schedule's unit
    rows: list[int] = field(default_factory=list)  # selected, not yet trained (fewer than batch_size between steps)
    weights: list[float] = field(default_factory=list)  # their loss weights, as their chunk's selector gave them
    scored: list[np.ndarray] = field(default_factory=list)  # chunks scored in one forward and not yet selected
    probs: list[torch.Tensor | None] = field(default_factory=list)  # their student probabilities (None: the selector needs none)

    def state_dict(self) -> dict[str, Any]:
        # float32 -> Python float -> JSON -> float32 is exact, so a resume selects as the run would have
        return {"cursor": self.cursor, "rows": list(self.rows), "weights": list(self.weights), "scored": [c.tolist() for c in self.scored],
                "probs": [None if p is None else p.tolist() for p in self.probs]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CandidatePool:
        return cls(cursor=int(d["cursor"]), rows=[int(r) for r in d["rows"]], weights=[float(w) for w in d["weights"]],
                   scored=[np.asarray(c, dtype=np.int64) for c in d["scored"]],
                   probs=[None if p is None else torch.tensor(p, dtype=torch.float32) for p in d["probs"]])


@dataclass
class TrainState:
    """Everything a resumed run must get back besides weights, optimiser, scheduler, selector
    and RNG (a checkpoint holds the counters as JSON and ``selected`` as a tensor)."""

    selected: np.ndarray  # bool [n]: training rows ever selected
    step: int = 0
    updates: int = 0  # optimiser steps (a step that selects nothing makes none)
    gradient_samples: int = 0  # sample-steps that got a backward pass
    seen: int = 0  # sample-steps, selected or not
    dev_history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None  # the epoch with the best dev macro-F1 so far (its weights are in best.pt)
    stopped_early: bool = False  # patience ran out
    candidates: CandidatePool | None = None  # only with candidate-batch selection (student.candidate_factor > 1)

    @classmethod
    def fresh(cls, n: int, candidates: bool = False) -> TrainState:
        return cls(selected=np.zeros(n, dtype=bool), candidates=CandidatePool() if candidates else None)

    @property
    def progress(self) -> int:
        """Where the run is on its schedule: steps, or with candidate batches the chunks of
        candidates consumed (a step there is one gradient batch and consumes one or more)."""
        return self.candidates.cursor if self.candidates is not None else self.step

    def record_update(self, rows: np.ndarray) -> None:
        """One optimiser step on the training rows ``rows`` (the whole batch's selected set)."""
        self.updates += 1
        self.gradient_samples += len(rows)
        self.selected[rows] = True

    def counters(self) -> dict[str, Any]:
        """The JSON part of a checkpoint (keys and order as checkpoints have always had them)."""
        out = {"step": self.step, "updates": self.updates, "gradient_samples": self.gradient_samples, "seen": self.seen,
               "dev_history": self.dev_history, "best_epoch": self.best_epoch, "stopped_early": self.stopped_early}
        if self.candidates is not None:  # only then: a per-batch run's checkpoint is the same as before
            out["candidates"] = self.candidates.state_dict()
        return out

    def restore(self, counters: dict[str, Any], selected: np.ndarray) -> None:
        for name in ("step", "updates", "gradient_samples", "seen", "dev_history", "best_epoch", "stopped_early"):
            if name in counters:
                setattr(self, name, counters[name])
        if "candidates" in counters:
            self.candidates = CandidatePool.from_dict(counters["candidates"])
        self.selected = selected


@dataclass
class Schedule:
    """Steps of a run: epochs of ``ceil(n / batch_size)`` steps; a fractional last epoch ends early."""

    n: int  # training rows
    batch_size: int
    epochs: float

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.n / self.batch_size)

    @property
    def total_steps(self) -> int:
        return max(1, math.ceil(self.epochs * self.steps_per_epoch))

    def epoch_ends(self, step: int) -> bool:
        """Whether ``step`` steps done closes an epoch (or the run)."""
        return step % self.steps_per_epoch == 0 or step == self.total_steps


@dataclass
class StepOutcome:
    """One finished step, for the callbacks (``TrainState.step`` already counts it)."""

    epoch: int  # 0-based epoch the step belonged to
    batch: int  # rows in the whole batch (every process's share)
    selected: int  # of them selected, summed over processes
    loss: float  # NaN: nothing selected, no update
    lr: float  # the encoder group's learning rate after the step
    stats: dict[str, Any]  # the selector's thresholds etc., and per-class counts
    epoch_end: bool
    progress: int = 1  # schedule units the step consumed (chunks of candidates with candidate batches)


@dataclass
class TrainParts:
    """What one run trains with, built once by the trainer and shared with its callbacks."""

    acc: Any  # accelerate.Accelerator
    model: Any  # the unwrapped student (saved, evaluated)
    tokenizer: Any
    trainable: Any  # what the optimiser trains: the model, or only its head (prepared by accelerate)
    optimizer: Any
    scheduler: Any
    selector: Any
    mode: Any  # llkd.student.modes.StudentMode
    schedule: Schedule
