"""The LLKD training loop.

Per step (llkd.student.step): score the batch, select, train on the selected rows only; with
student.candidate_factor > 1 a step is one full gradient batch of rows selected from larger
scored candidate batches instead (llkd.student.candidates, one process only). The
student mode (llkd.student.modes) holds what differs between fine-tuning and a frozen encoder;
dev evaluation, checkpoints, the step log and the progress bar are callbacks
(llkd.student.callbacks). Runs on CPU, one GPU, or several GPUs / CPU processes through
accelerate (each process takes its share of every batch; threshold statistics are summed
across processes so all ranks keep identical thresholds).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from llkd.config import ConfigError, SelectionConfig, StudentConfig
from llkd.data.loading import TextSet
from llkd.data.schema import LabelSchema
from llkd.hardware import resolve_dtype
from llkd.selection.selectors import build_selector
from llkd.student.callbacks import BEST, BestEpoch, Callback, CallbackList, Checkpointing, DevEvaluation, ProgressBar, StepLog, trim_step_log
from llkd.student.candidates import CandidateStep
from llkd.student.checkpoint import CHECKPOINT, CHECKPOINT_KEYS, read_checkpoint, resume, run_fingerprint
from llkd.student.model import load_student, save_student
from llkd.student.modes import MODES
from llkd.student.result import TrainResult
from llkd.student.state import Schedule, StepOutcome, TrainParts, TrainState
from llkd.student.step import TrainStep, batch_rows

log = logging.getLogger("llkd.student.trainer")  # the training run's messages, under one logger

__all__ = ["CHECKPOINT", "CHECKPOINT_KEYS", "StudentTrainer", "TrainResult", "TrainState", "read_checkpoint", "seed_everything", "trim_step_log"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class StudentTrainer:
    def __init__(
        self,
        student: StudentConfig,
        selection: SelectionConfig,
        schema: LabelSchema,
        pool: TextSet,
        teacher_probs: np.ndarray,
        dev: TextSet | None = None,
        progress: bool = True,
        class_prior: np.ndarray | None = None,
        callbacks: Sequence[Callback] = (),
        embedding_cache: Path | None = None,
    ) -> None:
        """``teacher_probs`` [N, C] aligned with ``pool``; rows that are NaN (no teacher
        answer) are left out of training. ``class_prior``: the pool's class shares as the
        teacher's calibration estimated them (the class-balance guard's target); default: the
        shares of the given pseudo-labels. ``callbacks`` fire after the built-in ones.
        ``embedding_cache``: the SQLite file of a frozen run's encoder embeddings (default:
        embeddings.sqlite in the llkd cache dir); not a setting of the run, so it is not part
        of the checkpoint's fingerprint."""
        if teacher_probs.shape != (len(pool), schema.num_labels):
            raise ValueError(f"teacher_probs has shape {teacher_probs.shape}, expected {(len(pool), schema.num_labels)}")
        answered = ~np.isnan(teacher_probs).any(axis=1)
        if not answered.any():
            raise ValueError("no pool text has a teacher answer")
        if student.candidate_factor > 1 and selection.selector == "llkd-paper":
            raise ConfigError("student.candidate_factor > 1 changes which batches llkd-paper's thresholds see; llkd-paper is the paper's "
                              "rule exactly: use candidate_factor 1 with it, or selector llkd")
        self.cfg, self.selection_cfg, self.schema, self.pool, self.dev = student, selection, schema, pool, dev
        self.rows = np.flatnonzero(answered)  # pool rows used
        self.texts = [pool.texts[i] for i in self.rows]
        self.teacher_probs = torch.tensor(np.nan_to_num(teacher_probs[self.rows]), dtype=torch.float32)
        self.pseudo_labels = self.teacher_probs.argmax(dim=1)
        if class_prior is None:
            class_prior = np.bincount(self.pseudo_labels.numpy(), minlength=schema.num_labels) / len(self.rows)
        self.class_prior = np.asarray(class_prior, dtype=np.float64)
        self.progress = progress
        self.output = Path(student.output)
        self.extra_callbacks = list(callbacks)
        self.embedding_cache = embedding_cache
        self.dtype: str | None = None  # the compute dtype, once train() resolved it
        self.model: Any = None  # the trained student and its tokenizer, once train() returns
        self.tokenizer: Any = None

    def train(self) -> TrainResult:
        parts = self._build()
        state = TrainState.fresh(len(self.texts), candidates=self.cfg.candidate_factor > 1)
        fingerprint = run_fingerprint(self.texts, self.teacher_probs, self.cfg, self.selection_cfg)
        self.output.mkdir(parents=True, exist_ok=True)
        if self.cfg.resume and (self.output / CHECKPOINT).exists():
            resume(self.output / CHECKPOINT, parts, state, fingerprint)
        step = TrainStep(parts.mode, parts.trainable, parts.selector, parts.optimizer, parts.acc, self.pseudo_labels, self.teacher_probs)
        candidates = CandidateStep(step, parts, len(self.texts), self.cfg.batch_size, self.cfg.candidate_factor, self.cfg.seed)
        callbacks = self._callbacks(parts, fingerprint)
        callbacks.on_train_begin(state)
        try:
            with parts.mode.training(parts.trainable):
                while state.progress < parts.schedule.total_steps and not state.stopped_early:
                    outcome = candidates(state) if state.candidates is not None else self._step(step, parts, state)
                    callbacks.on_step_end(state, outcome)
        finally:
            callbacks.on_train_end(state)
        return self._finish(parts, state)

    def _step(self, step: TrainStep, parts: TrainParts, state: TrainState) -> StepOutcome:
        epoch, rows = batch_rows(state.step, len(self.texts), self.cfg.batch_size, self.cfg.seed, parts.acc.num_processes)
        chosen = step.select(rows)
        state.seen += len(rows)
        loss = float("nan")
        if chosen.count:  # an empty S_t on every process makes no update (weight decay would still move the weights)
            loss = step.update(chosen)
            state.record_update(rows[chosen.picked])
        parts.scheduler.step()  # same LR schedule for every method, whatever it selected
        state.step += 1
        return StepOutcome(epoch=epoch, batch=len(rows), selected=chosen.count, loss=loss, lr=parts.scheduler.get_last_lr()[0],
                           stats=chosen.stats, epoch_end=parts.schedule.epoch_ends(state.step))

    # ------------------------------------------------------------------------------------
    def _build(self) -> TrainParts:
        """Accelerator, student, mode, selector, optimiser and schedule, in the order that
        fixes the seeded draws (head init first)."""
        from accelerate import Accelerator
        from transformers import get_linear_schedule_with_warmup

        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        acc = Accelerator(cpu=cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()))
        if cfg.candidate_factor > 1 and acc.num_processes > 1:  # the pool's rows and weights would need gathering across ranks
            raise ConfigError(f"student.candidate_factor > 1 runs in one process only, not {acc.num_processes}: use candidate_factor 1 under accelerate launch")
        seed_everything(cfg.seed)
        mode_type = MODES[cfg.mode]
        model, tokenizer = load_student(cfg.model, self.schema, frozen=mode_type.frozen)
        model.to(acc.device)
        self.dtype = resolve_dtype(cfg.dtype, acc.device)
        mode = mode_type(cfg, model, tokenizer, acc.device, self.dtype, self.embedding_cache)
        trainable, param_groups = mode.prepare(self.texts)
        selector = build_selector(self.selection_cfg, self.schema.num_labels, len(self.texts), cfg.seed, self.class_prior)
        if acc.num_processes > 1:
            selector.reduce = lambda t: acc.reduce(t.to(acc.device), reduction="sum")
        schedule = Schedule(len(self.texts), cfg.batch_size, cfg.resolved_epochs())
        optimizer = torch.optim.AdamW(param_groups, weight_decay=cfg.weight_decay)
        scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * schedule.total_steps), schedule.total_steps)
        trainable, optimizer = acc.prepare(trainable, optimizer)
        return TrainParts(acc, model, tokenizer, trainable, optimizer, scheduler, selector, mode, schedule)

    def _callbacks(self, parts: TrainParts, fingerprint: str) -> CallbackList:
        """Dev score, step log, checkpoint, bar: in this order (callbacks module docstring).
        Only the main process evaluates and checkpoints."""
        acc, main = parts.acc, parts.acc.is_main_process
        callbacks: list[Callback] = []
        if self.dev is not None and main:
            callbacks.append(DevEvaluation(parts.mode, self.dev, self.schema.names))
            # early stopping needs every rank to stop together, so patience is one-process only
            patience = self.cfg.patience if acc.num_processes == 1 else 0
            if self.cfg.patience and acc.num_processes > 1:
                log.warning("student.patience is ignored with %d processes (every rank would have to stop at once)", acc.num_processes)
            if self.cfg.keep_best or patience:
                callbacks.append(BestEpoch(self.output / BEST, parts, patience))
        callbacks.append(StepLog(self.output, main, acc.process_index, parts.mode.flush_every_step, self.cfg.checkpoint_every))
        if main:
            callbacks.append(Checkpointing(self.output / CHECKPOINT, parts, fingerprint, self.cfg.checkpoint_every))
        bar = ProgressBar(parts.schedule.total_steps, f"student[{self.selection_cfg.selector}]", self.progress and main)
        return CallbackList([*callbacks, bar, *self.extra_callbacks])

    def _keep(self, parts: TrainParts, state: TrainState) -> tuple[int | None, str]:
        """Which epoch's weights the saved student gets, and why: with a dev split and
        keep_best, the best dev macro-F1's (loaded back from best.pt when it is not the last)."""
        history = {h["epoch"]: h["macro_f1"] for h in state.dev_history}
        if not history:
            return None, "the last step's weights (no dev split)"
        last = max(history)
        stop = f", stopped early after {last} epochs (patience {self.cfg.patience})" if state.stopped_early else ""
        if not self.cfg.keep_best or state.best_epoch is None:
            return last, f"the last epoch (keep_best off){stop}"
        best = state.best_epoch
        if best != last:
            weights = torch.load(self.output / BEST, map_location="cpu", weights_only=True)
            parts.acc.unwrap_model(parts.trainable).load_state_dict(weights)
        return best, f"best dev macro-F1 {history[best]:.4f} at epoch {best} of {last}{stop}"

    def _finish(self, parts: TrainParts, state: TrainState) -> TrainResult:
        selected_pool = np.zeros(len(self.pool), dtype=bool)
        selected_pool[self.rows[state.selected]] = True
        result = TrainResult(model_dir=self.output / "model", steps=state.step, optimizer_updates=state.updates,
                             gradient_samples=state.gradient_samples, sample_steps_seen=state.seen,
                             data_usage=float(selected_pool.sum() / len(self.pool)), selected_rows=selected_pool,
                             dev_history=list(state.dev_history))
        if parts.acc.is_main_process:
            result.kept_epoch, result.kept_reason = self._keep(parts, state)
            extra = {"training": result.summary(), "selector": self.selection_cfg.selector, "mode": self.cfg.mode, "dtype": self.dtype,
                     "max_length": self.cfg.max_length}
            save_student(parts.model, parts.tokenizer, self.schema, result.model_dir, extra)
        parts.acc.wait_for_everyone()
        self.model, self.tokenizer = parts.model, parts.tokenizer
        return result
