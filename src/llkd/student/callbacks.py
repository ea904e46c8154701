"""What the loop does besides training, as callbacks (the transformers / USB hook pattern):
dev evaluation at epoch ends, checkpoints, the step log, the progress bar. They fire in list
order, so the trainer orders them: the dev score lands in the state before the checkpoint
saves it, and the step log is on disk before the checkpoint that covers its rows."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import IO, Any, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from llkd.data.loading import TextSet
from llkd.evaluation.metrics import classification_report
from llkd.student.checkpoint import write_checkpoint
from llkd.student.modes import StudentMode
from llkd.student.state import StepOutcome, TrainParts, TrainState

log = logging.getLogger("llkd.student.trainer")  # the training run's messages, under one logger

STEPS = "steps.jsonl"


class Callback:
    def on_train_begin(self, state: TrainState) -> None:
        """After setup and any resume, before the first step."""

    def on_step_end(self, state: TrainState, step: StepOutcome) -> None:
        """After each optimiser (or skipped) step and the scheduler's step."""

    def on_train_end(self, state: TrainState) -> None:
        """After the last step, or when training stops on an error."""


class CallbackList(Callback):
    def __init__(self, callbacks: Iterable[Callback]) -> None:
        self.callbacks = list(callbacks)

    def on_train_begin(self, state: TrainState) -> None:
        for cb in self.callbacks:
            cb.on_train_begin(state)

    def on_step_end(self, state: TrainState, step: StepOutcome) -> None:
        for cb in self.callbacks:
            cb.on_step_end(state, step)

    def on_train_end(self, state: TrainState) -> None:
        for cb in self.callbacks:
            cb.on_train_end(state)


class DevEvaluation(Callback):
    """Accuracy and macro-F1 on the gold-labelled dev split at each epoch end, into
    ``state.dev_history``."""

    def __init__(self, mode: StudentMode, dev: TextSet, names: Sequence[str]) -> None:
        if dev.labels is None:
            raise ValueError("the dev split needs gold labels")
        self.mode, self.dev, self.names = mode, dev, list(names)

    def on_step_end(self, state: TrainState, step: StepOutcome) -> None:
        if step.epoch_end:
            state.dev_history.append(self.evaluate(step.epoch + 1))

    def evaluate(self, epoch: int) -> dict[str, Any]:
        assert self.dev.labels is not None
        probs = self.mode.dev_probs(self.dev.texts)
        rep = classification_report(self.dev.labels, probs.argmax(1), self.names)
        log.info("epoch %d dev accuracy %.4f macro-F1 %.4f", epoch, rep.accuracy, rep.macro_f1)
        return {"epoch": epoch, "accuracy": rep.accuracy, "macro_f1": rep.macro_f1}


BEST = "best.pt"


class BestEpoch(Callback):
    """After each epoch's dev score (so after DevEvaluation): the weights of the best epoch so
    far go to ``best.pt`` (tensors only), and with ``patience`` the run stops after that many
    epochs without a better dev macro-F1. Ties keep the earlier epoch."""

    def __init__(self, path: Path, parts: TrainParts, patience: int = 0) -> None:
        self.path, self.parts, self.patience = path, parts, patience

    def on_step_end(self, state: TrainState, step: StepOutcome) -> None:
        if not step.epoch_end or not state.dev_history:
            return
        scores = {h["epoch"]: h["macro_f1"] for h in state.dev_history}
        last = state.dev_history[-1]["epoch"]
        if state.best_epoch is None or scores[last] > scores[state.best_epoch]:
            state.best_epoch = last
            tmp = self.path.with_suffix(".tmp")
            torch.save(self.parts.acc.unwrap_model(self.parts.trainable).state_dict(), tmp)
            os.replace(tmp, self.path)
        elif self.patience and last - state.best_epoch >= self.patience:
            state.stopped_early = True
            log.info("dev macro-F1 has not improved for %d epochs (best %.4f at epoch %d): stopping", last - state.best_epoch,
                     scores[state.best_epoch], state.best_epoch)


class Checkpointing(Callback):
    """A checkpoint at each epoch end, and every ``every`` steps when set."""

    def __init__(self, path: Path, parts: TrainParts, fingerprint: str, every: int = 0) -> None:
        self.path, self.parts, self.fingerprint, self.every = path, parts, fingerprint, every

    def due(self, state: TrainState, step: StepOutcome) -> bool:
        return step.epoch_end or bool(self.every and state.step % self.every == 0)

    def on_step_end(self, state: TrainState, step: StepOutcome) -> None:
        if self.due(state, step):
            write_checkpoint(self.path, self.parts, state, self.fingerprint)


def trim_step_log(path: Path, last_step: int) -> int:
    """Drop step-log rows after ``last_step`` (a resumed run redoes those steps); returns the
    rows kept. Unparseable trailing lines (a kill mid-write) go too."""
    if not path.exists():
        return 0
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and int(row.get("step", 0)) <= last_step:
            kept.append(line)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(x + "\n" for x in kept), encoding="utf-8")
    os.replace(tmp, path)
    return len(kept)


def step_row(state: TrainState, step: StepOutcome) -> dict[str, Any]:
    """One ``steps.jsonl`` row: the step's counts and learning rate, then the selector's stats."""
    row: dict[str, Any] = {
        "step": state.step,
        "epoch": step.epoch,
        "batch": step.batch,
        "selected": step.selected,
        "selection_rate": round(step.selected / max(step.batch, 1), 4),
        "loss": None if step.loss != step.loss else round(step.loss, 6),
        "lr": step.lr,
        "data_usage": round(float(state.selected.mean()), 4),
    }
    row.update(step.stats)
    return row


class StepLog(Callback):
    """``steps.jsonl``, one row per step. Only the main process writes it: counts are summed over
    ranks and thresholds are identical on every rank. LLKD_RANK_STEP_LOGS=1 makes every other
    rank write its own copy (steps.rank<k>.jsonl) to check exactly that."""

    def __init__(self, folder: Path, main_process: bool, rank: int, flush_every_step: bool, checkpoint_every: int = 0) -> None:
        self.path = folder / STEPS
        if not main_process:
            self.path = self.path.with_name(f"steps.rank{rank}.jsonl") if os.environ.get("LLKD_RANK_STEP_LOGS") == "1" else Path(os.devnull)
        self.main_process, self.flush_every_step, self.checkpoint_every = main_process, flush_every_step, checkpoint_every
        self.file: IO[str] | None = None

    def on_train_begin(self, state: TrainState) -> None:
        if state.step and self.main_process:
            trim_step_log(self.path, state.step)  # rows written after the checkpoint would repeat
        self.file = open(self.path, "a" if state.step and self.path.exists() else "w", encoding="utf-8")

    def on_step_end(self, state: TrainState, step: StepOutcome) -> None:
        assert self.file is not None
        self.file.write(json.dumps(step_row(state, step)) + "\n")
        # through to disk by the time a checkpoint covers the row, so a resume never misses one
        if self.flush_every_step or step.epoch_end or (self.checkpoint_every and state.step % self.checkpoint_every == 0):
            self.file.flush()

    def on_train_end(self, state: TrainState) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class ProgressBar(Callback):
    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self.total, self.desc, self.enabled = total, desc, enabled
        self.bar: Any = None

    def on_train_begin(self, state: TrainState) -> None:
        self.bar = tqdm(total=self.total, initial=state.progress, desc=self.desc, unit="step", disable=not self.enabled, dynamic_ncols=True)

    def on_step_end(self, state: TrainState, step: StepOutcome) -> None:
        self.bar.update(step.progress)
        rate = step.selected / max(step.batch, 1)
        loss = f"{step.loss:.4f}" if step.loss == step.loss else "-"
        self.bar.set_postfix(loss=loss, sel=f"{rate:.2f}", used=f"{state.selected.mean():.2f}", refresh=False)

    def on_train_end(self, state: TrainState) -> None:
        if self.bar is not None:
            self.bar.close()
