"""The LLKD training loop.

Per step: a forward-only scoring pass over the batch (when the selector needs the student),
selection, then forward+backward on the selected samples only with the weighted loss, so
training cost falls with the selection rate. Runs on CPU, one GPU, or several GPUs / CPU
processes through accelerate (each process takes its share of every batch; threshold
statistics are summed across processes so all ranks keep identical thresholds).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from llkd.config import SelectionConfig, StudentConfig
from llkd.data.errors import DataError
from llkd.data.loading import TextSet
from llkd.data.schema import LabelSchema
from llkd.evaluation.metrics import classification_report
from llkd.selection.selectors import SelectionBatch, build_selector
from llkd.selection.thresholds import weighted_cross_entropy, weighted_soft_cross_entropy
from llkd.hardware import resolve_dtype
from llkd.student.embeddings import cached_embeddings
from llkd.student.model import autocast, collate, encode, load_student, predict_probs, save_student
from llkd.student.result import TrainResult

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_KEYS = frozenset({"model", "optimizer", "scheduler", "selector", "torch_rng", "state", "selected", "fingerprint"})


def _is_head(name: str) -> bool:
    """Parameters of the new classification head (and BERT's pooler, which only feeds it):
    they start untrained and get the head learning rate."""
    return any(part in name for part in ("classifier", "pooler", "score"))


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by this trainer. weights_only: a checkpoint is data, never code (a
    planted pickle does not run). One that is truncated, pickled or not a checkpoint is a
    DataError saying what to do; the file is left as it is (it may be the only copy of a run)."""
    import warnings

    restart = "move it away (or pass --no-student-resume, which overwrites it) to train from the start"
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol before refusing
            warnings.simplefilter("ignore")
            saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise DataError(f"{path}: not a checkpoint llkd can read: not plain tensors (pickled objects, which llkd never loads, "
                        f"or not a torch file at all); {restart}") from e
    except Exception as e:  # a truncated zip, an empty or foreign file: torch's errors vary by how
        reason = (str(e).splitlines() or [""])[0].split(". ")[0]
        reason = reason if len(reason) > 20 else f"{type(e).__name__}: {reason}".rstrip(": ")
        raise DataError(f"{path}: unreadable checkpoint, truncated or not a torch file ({reason}); {restart}") from e
    if not isinstance(saved, dict) or not CHECKPOINT_KEYS <= set(saved):
        raise DataError(f"{path}: not a checkpoint written by llkd train (it lacks {', '.join(sorted(CHECKPOINT_KEYS - set(saved) if isinstance(saved, dict) else CHECKPOINT_KEYS))}); {restart}")
    return saved


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
    ) -> None:
        """``teacher_probs`` [N, C] aligned with ``pool``; rows that are NaN (no teacher
        answer) are left out of training. ``class_prior``: the pool's class shares as the
        teacher's calibration estimated them (the class-balance guard's target); default: the
        shares of the given pseudo-labels."""
        if teacher_probs.shape != (len(pool), schema.num_labels):
            raise ValueError(f"teacher_probs has shape {teacher_probs.shape}, expected {(len(pool), schema.num_labels)}")
        self.cfg = student
        self.selection_cfg = selection
        self.schema = schema
        answered = ~np.isnan(teacher_probs).any(axis=1)
        if not answered.any():
            raise ValueError("no pool text has a teacher answer")
        self.rows = np.flatnonzero(answered)  # pool rows used
        self.pool = pool
        self.teacher_probs = torch.tensor(np.nan_to_num(teacher_probs[self.rows]), dtype=torch.float32)
        self.pseudo_labels = self.teacher_probs.argmax(dim=1)
        if class_prior is None:
            class_prior = np.bincount(self.pseudo_labels.numpy(), minlength=schema.num_labels) / len(self.rows)
        self.class_prior = np.asarray(class_prior, dtype=np.float64)
        self.dev = dev
        self.progress = progress
        self.output = Path(student.output)
        self._last_stats: dict[str, Any] = {}  # the latest selection's thresholds, for the step log

    # ------------------------------------------------------------------------------------
    def train(self) -> TrainResult:
        from accelerate import Accelerator
        from transformers import get_linear_schedule_with_warmup

        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
        acc = Accelerator(cpu=cpu)
        seed_everything(cfg.seed)
        frozen = cfg.mode == "frozen"
        model, tokenizer = load_student(cfg.model, self.schema, frozen=frozen)
        device = acc.device
        model.to(device)
        self.dtype = resolve_dtype(cfg.dtype, device)
        texts = [self.pool.texts[i] for i in self.rows]
        n = len(texts)
        if frozen:
            # The encoder runs once per text (cached on disk); only the head trains.
            features, n_new = cached_embeddings(model, tokenizer, texts, cfg.max_length, self.dtype)
            log.info("frozen encoder: %d pool embeddings (%d encoded now, %d from cache)", n, n_new, n - n_new)
            model.backbone.requires_grad_(False)
            self._features = torch.from_numpy(features).to(device)
            trainable: Any = model.classifier
            param_groups = [{"params": list(trainable.parameters()), "lr": cfg.resolved_head_lr()}]
        else:
            self._encoded = encode(tokenizer, texts, cfg.max_length)
            trainable = model
            pooler = getattr(getattr(model, "backbone", None), "pooler", None)
            if pooler is not None:
                # the pooled-embedding head never reads BERT's CLS pooler: without frozen
                # weights DDP waits for its gradients forever (and weight decay moves them)
                pooler.requires_grad_(False)
            head = [p for name, p in model.named_parameters() if _is_head(name) and p.requires_grad]
            body = [p for name, p in model.named_parameters() if not _is_head(name) and p.requires_grad]
            param_groups = [{"params": body, "lr": cfg.lr}, {"params": head, "lr": cfg.resolved_head_lr()}]
        self._tokenizer, self._device = tokenizer, device
        selector = build_selector(self.selection_cfg, self.schema.num_labels, n, cfg.seed, self.class_prior)
        if acc.num_processes > 1:
            selector.reduce = lambda t: acc.reduce(t.to(device), reduction="sum")

        steps_per_epoch = math.ceil(n / cfg.batch_size)
        total_steps = max(1, math.ceil(cfg.resolved_epochs() * steps_per_epoch))
        optimizer = torch.optim.AdamW(param_groups, weight_decay=cfg.weight_decay)
        scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
        trainable, optimizer = acc.prepare(trainable, optimizer)

        state: dict[str, Any] = {"step": 0, "updates": 0, "gradient_samples": 0, "seen": 0, "selected": np.zeros(n, dtype=bool), "dev_history": []}
        self.output.mkdir(parents=True, exist_ok=True)
        ckpt = self.output / CHECKPOINT
        fingerprint = self._fingerprint(texts)
        if cfg.resume and ckpt.exists():
            saved = read_checkpoint(ckpt)
            if saved.get("fingerprint") != fingerprint:
                log.warning("%s belongs to another run (data, teacher answers or settings differ); starting fresh", ckpt)
            else:
                acc.unwrap_model(trainable).load_state_dict(saved["model"])
                optimizer.load_state_dict(saved["optimizer"])
                scheduler.load_state_dict(saved["scheduler"])
                selector.load_state_dict(json.loads(saved["selector"]))
                torch.set_rng_state(saved["torch_rng"])
                restored = json.loads(saved["state"])
                restored["selected"] = saved["selected"].numpy().astype(bool)
                state.update(restored)
                log.info("resumed from %s at step %d/%d", ckpt, state["step"], total_steps)

        log_path = self.output / "steps.jsonl"
        if state["step"] and acc.is_main_process:
            trim_step_log(log_path, state["step"])  # rows written after the checkpoint would repeat
        # Only the main process writes the step log: counts are summed over ranks and thresholds
        # are identical on every rank. LLKD_RANK_STEP_LOGS=1 makes every other rank write its
        # own copy (steps.rank<k>.jsonl) to check exactly that.
        if not acc.is_main_process:
            log_path = log_path.with_name(f"steps.rank{acc.process_index}.jsonl") if os.environ.get("LLKD_RANK_STEP_LOGS") == "1" else Path(os.devnull)
        log_file = open(log_path, "a" if state["step"] and log_path.exists() else "w", encoding="utf-8")
        bar = tqdm(total=total_steps, initial=state["step"], desc=f"student[{self.selection_cfg.selector}]", unit="step", disable=not self.progress or not acc.is_main_process, dynamic_ncols=True)
        trainable.train()
        threads = torch.get_num_threads()
        if frozen:
            model.backbone.eval()
            # a [16, D] x [D, C] head: thread fan-out costs more than it saves, and on a busy
            # machine spinning threads slow every step down many times over
            torch.set_num_threads(1)
        try:
            while state["step"] < total_steps:
                step = state["step"]
                epoch, k = divmod(step, steps_per_epoch)
                order = np.random.default_rng(cfg.seed + epoch).permutation(n)
                batch_rows = order[k * cfg.batch_size : (k + 1) * cfg.batch_size]
                if acc.num_processes > 1:
                    # Equal shares, so every process selects (and all-reduces) every step.
                    short = -len(batch_rows) % acc.num_processes
                    batch_rows = np.concatenate([batch_rows, order[:short]])
                loss_value, n_sel = self._step(trainable, batch_rows, selector, optimizer, acc, state)
                scheduler.step()  # same LR schedule for every method, whatever it selected
                state["step"] = step + 1
                rate = n_sel / max(len(batch_rows), 1)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}" if loss_value == loss_value else "-", sel=f"{rate:.2f}", used=f"{state['selected'].mean():.2f}", refresh=False)
                if (state["step"] % steps_per_epoch == 0) or state["step"] == total_steps:
                    if self.dev is not None and acc.is_main_process:
                        state["dev_history"].append(self._evaluate_dev(model, tokenizer, epoch + 1))
                    self._checkpoint(acc, trainable, optimizer, scheduler, selector, state, fingerprint)
                elif cfg.checkpoint_every and state["step"] % cfg.checkpoint_every == 0:
                    self._checkpoint(acc, trainable, optimizer, scheduler, selector, state, fingerprint)
                log_file.write(json.dumps(self._log_row(state, epoch, len(batch_rows), n_sel, loss_value, scheduler)) + "\n")
                if not frozen or state["step"] % steps_per_epoch == 0:
                    log_file.flush()
        finally:
            torch.set_num_threads(threads)
            bar.close()
            log_file.close()
        result = self._result(self.output / "model", state, n)
        if acc.is_main_process:
            extra = {"training": result.summary(), "selector": self.selection_cfg.selector, "mode": cfg.mode, "dtype": self.dtype, "max_length": cfg.max_length}
            save_student(model, tokenizer, self.schema, result.model_dir, extra)
        acc.wait_for_everyone()
        self.model = model
        self.tokenizer = tokenizer
        return result

    # ------------------------------------------------------------------------------------
    def _logits(self, trainable: Any, rows: np.ndarray) -> torch.Tensor:
        """Student logits for pool rows (the head on cached embeddings in frozen mode)."""
        if self.cfg.mode == "frozen":
            return trainable(self._features[torch.from_numpy(rows).to(self._device)]).float()
        with autocast(self.dtype, self._device):
            logits = trainable(**collate(self._tokenizer, [self._encoded[i] for i in rows], self._device)).logits
        return logits.float()

    def _step(self, trainable: Any, batch_rows: np.ndarray, selector: Any, optimizer: Any, acc: Any, state: dict) -> tuple[float, int]:
        """One training step on the batch ``batch_rows`` (the whole batch on every process;
        with several processes each takes its share and every count below is the batch's)."""
        device = self._device
        world, rank = acc.num_processes, acc.process_index
        local = batch_rows[rank::world] if world > 1 else batch_rows
        idx = torch.from_numpy(local)
        batch = SelectionBatch(indices=idx, pseudo_labels=self.pseudo_labels[idx], teacher_probs=self.teacher_probs[idx])
        if selector.needs_student and len(local):
            trainable.eval()
            with torch.no_grad():
                logits = self._logits(trainable, local)
            trainable.train()
            batch.student_probs = torch.softmax(logits, dim=-1).cpu()
        selection = selector.select(batch) if len(local) else None
        self._last_stats = dict(selection.stats) if selection is not None else {}
        mask = selection.mask if selection is not None else torch.zeros(0, dtype=torch.bool)
        n_local = int(mask.sum())
        picked = np.zeros(len(batch_rows), dtype=bool)  # which of the whole batch's rows were selected
        if world > 1:
            mine = torch.zeros(len(batch_rows), dtype=torch.float32)
            mine[rank::world] = mask.float()
            picked = acc.reduce(mine.to(device), reduction="sum").cpu().numpy() > 0
        else:
            picked[mask.numpy()] = True
        n_sel = int(picked.sum())
        # per pseudo-label class: the early warning of a collapse onto one class
        self._last_stats["selected_per_class"] = np.bincount(self.pseudo_labels.numpy()[batch_rows[picked]], minlength=self.schema.num_labels).tolist()
        if world > 1:
            self._last_stats["rank_selected"] = n_local
        state["seen"] += len(batch_rows)
        if n_sel == 0:
            return float("nan"), 0  # empty S_t on every process: no update (weight decay would still move the weights)
        # A process with an empty share still joins DDP's gradient all-reduce, with weight 0.
        chosen = local[mask.numpy()] if n_local else local[:1]
        weights = selection.weights[mask] if n_local else torch.zeros(1)
        logits = self._logits(trainable, chosen)
        ch = torch.from_numpy(chosen)
        w = weights.to(device)
        # DDP averages gradients over processes; scaling by world / |S_batch| makes that average
        # the gradient of the mean loss over the whole batch's selected set, as in one process.
        count = n_sel / world if world > 1 else None
        if selector.soft_targets:
            loss = weighted_soft_cross_entropy(logits, self.teacher_probs[ch].to(device), w, count)
        else:
            loss = weighted_cross_entropy(logits, self.pseudo_labels[ch].to(device), w, count)
        acc.backward(loss)
        acc.clip_grad_norm_(trainable.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state["updates"] += 1
        state["gradient_samples"] += n_sel
        state["selected"][batch_rows[picked]] = True
        loss_value = float(loss.detach())
        if world > 1:
            loss_value = float(acc.reduce(loss.detach().reshape(1), reduction="sum")) / world
        return loss_value, n_sel

    def _log_row(self, state: dict, epoch: int, batch: int, n_sel: int, loss: float, scheduler: Any) -> dict[str, Any]:
        row: dict[str, Any] = {
            "step": state["step"],
            "epoch": epoch,
            "batch": batch,
            "selected": n_sel,
            "selection_rate": round(n_sel / max(batch, 1), 4),
            "loss": None if loss != loss else round(loss, 6),
            "lr": scheduler.get_last_lr()[0],
            "data_usage": round(float(state["selected"].mean()), 4),
        }
        row.update(self._last_stats)
        return row

    def _evaluate_dev(self, model: Any, tokenizer: Any, epoch: int) -> dict[str, Any]:
        assert self.dev is not None and self.dev.labels is not None
        embeddings = None
        if self.cfg.mode == "frozen":
            embeddings, _ = cached_embeddings(model, tokenizer, self.dev.texts, self.cfg.max_length, self.dtype)
        probs = predict_probs(model, tokenizer, self.dev.texts, self.cfg.max_length, dtype=self.dtype, embeddings=embeddings)
        rep = classification_report(self.dev.labels, probs.argmax(1), self.schema.names)
        log.info("epoch %d dev accuracy %.4f macro-F1 %.4f", epoch, rep.accuracy, rep.macro_f1)
        return {"epoch": epoch, "accuracy": rep.accuracy, "macro_f1": rep.macro_f1}

    def _fingerprint(self, texts: list[str]) -> str:
        """Everything that changes what training produces: the texts, the teacher's answers
        (bytes, not a sum), the student and selection settings. A different run never
        'resumes' a finished one."""
        h = hashlib.sha256()
        for t in texts:
            h.update(hashlib.sha256(t.encode("utf-8")).digest())
        h.update(np.ascontiguousarray(self.teacher_probs.numpy(), dtype=np.float32).tobytes())
        settings = self.cfg.model_dump(mode="json", exclude={"resume", "output", "checkpoint_every", "threads", "device"})
        settings["epochs"] = self.cfg.resolved_epochs()
        settings["head_lr"] = self.cfg.resolved_head_lr()
        h.update(json.dumps([settings, self.selection_cfg.model_dump(mode="json")], sort_keys=True).encode())
        return h.hexdigest()

    def _checkpoint(self, acc: Any, trainable: Any, optimizer: Any, scheduler: Any, selector: Any, state: dict, fingerprint: str) -> None:
        if not acc.is_main_process:
            return
        path = self.output / CHECKPOINT
        tmp = path.with_suffix(".tmp")
        plain = {k: v for k, v in state.items() if k != "selected"}
        # Tensors and JSON strings only, so loading needs no pickle (weights_only=True).
        torch.save(
            {
                "model": acc.unwrap_model(trainable).state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "selector": json.dumps(selector.state_dict()),
                "torch_rng": torch.get_rng_state(),
                "state": json.dumps(plain),
                "selected": torch.from_numpy(state["selected"].copy()),
                "fingerprint": fingerprint,
            },
            tmp,
        )
        os.replace(tmp, path)  # atomic: a kill mid-save leaves the previous checkpoint

    def _result(self, model_dir: Path, state: dict, n: int) -> TrainResult:
        selected_pool = np.zeros(len(self.pool), dtype=bool)
        selected_pool[self.rows[state["selected"]]] = True
        return TrainResult(
            model_dir=model_dir,
            steps=state["step"],
            optimizer_updates=state["updates"],
            gradient_samples=state["gradient_samples"],
            sample_steps_seen=state["seen"],
            data_usage=float(selected_pool.sum() / len(self.pool)),
            selected_rows=selected_pool,
            dev_history=list(state["dev_history"]),
        )
