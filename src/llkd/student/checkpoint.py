"""The trainer's checkpoint: one ``checkpoint.pt`` of tensors and JSON strings (loading needs
no pickle), written atomically, refused with one line when it is not one of ours, and tied to
its run by a fingerprint so a different run never 'resumes' it."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from llkd.config import SelectionConfig, StudentConfig
from llkd.data.errors import DataError
from llkd.student.state import TrainParts, TrainState

log = logging.getLogger("llkd.student.trainer")  # the training run's messages, under one logger

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_KEYS = frozenset({"model", "optimizer", "scheduler", "selector", "torch_rng", "state", "selected", "fingerprint"})
RESTART = "move it away (or pass --no-student-resume, which overwrites it) to train from the start"


def run_fingerprint(texts: Sequence[str], teacher_probs: torch.Tensor, student: StudentConfig, selection: SelectionConfig) -> str:
    """Everything that changes what training produces: the texts, the teacher's answers
    (bytes, not a sum), the student and selection settings."""
    h = hashlib.sha256()
    for t in texts:
        h.update(hashlib.sha256(t.encode("utf-8")).digest())
    h.update(np.ascontiguousarray(teacher_probs.numpy(), dtype=np.float32).tobytes())
    # keep_best and patience change which epoch is saved and when a run ends, not the steps it
    # takes: a checkpoint from before they existed still resumes
    settings = student.model_dump(mode="json", exclude={"resume", "output", "checkpoint_every", "threads", "device", "keep_best", "patience"})
    settings["epochs"] = student.resolved_epochs()
    if settings.get("candidate_factor") == 1:  # the per-batch path, as before the option: its checkpoints still resume
        del settings["candidate_factor"]
    settings["head_lr"] = student.resolved_head_lr()
    h.update(json.dumps([settings, selection.model_dump(mode="json")], sort_keys=True).encode())
    return h.hexdigest()


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by this trainer. weights_only: a checkpoint is data, never code (a
    planted pickle does not run). One that is truncated, pickled or not a checkpoint is a
    DataError saying what to do; the file is left as it is (it may be the only copy of a run)."""
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol before refusing
            warnings.simplefilter("ignore")
            saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise DataError(f"{path}: not a checkpoint llkd can read: not plain tensors (pickled objects, which llkd never loads, "
                        f"or not a torch file at all); {RESTART}") from e
    except Exception as e:  # a truncated zip, an empty or foreign file: torch's errors vary by how
        reason = (str(e).splitlines() or [""])[0].split(". ")[0]
        reason = reason if len(reason) > 20 else f"{type(e).__name__}: {reason}".rstrip(": ")
        raise DataError(f"{path}: unreadable checkpoint, truncated or not a torch file ({reason}); {RESTART}") from e
    if not isinstance(saved, dict) or not CHECKPOINT_KEYS <= set(saved):
        missing = CHECKPOINT_KEYS - set(saved) if isinstance(saved, dict) else CHECKPOINT_KEYS
        raise DataError(f"{path}: not a checkpoint written by llkd train (it lacks {', '.join(sorted(missing))}); {RESTART}")
    return saved


def write_checkpoint(path: Path, parts: TrainParts, state: TrainState, fingerprint: str) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": parts.acc.unwrap_model(parts.trainable).state_dict(),
            "optimizer": parts.optimizer.state_dict(),
            "scheduler": parts.scheduler.state_dict(),
            "selector": json.dumps(parts.selector.state_dict()),
            "torch_rng": torch.get_rng_state(),
            "state": json.dumps(state.counters()),
            "selected": torch.from_numpy(state.selected.copy()),
            "fingerprint": fingerprint,
        },
        tmp,
    )
    os.replace(tmp, path)  # atomic: a kill mid-save leaves the previous checkpoint


def resume(path: Path, parts: TrainParts, state: TrainState, fingerprint: str) -> bool:
    """Load ``path`` into the run's parts and ``state``; False (nothing loaded) when it belongs
    to another run."""
    saved = read_checkpoint(path)
    if saved.get("fingerprint") != fingerprint:
        log.warning("%s belongs to another run (data, teacher answers or settings differ); starting fresh", path)
        return False
    parts.acc.unwrap_model(parts.trainable).load_state_dict(saved["model"])
    parts.optimizer.load_state_dict(saved["optimizer"])
    parts.scheduler.load_state_dict(saved["scheduler"])
    parts.selector.load_state_dict(json.loads(saved["selector"]))
    torch.set_rng_state(saved["torch_rng"])
    state.restore(json.loads(saved["state"]), saved["selected"].numpy().astype(bool))
    if state.candidates is not None:  # a step there is a gradient batch; the schedule counts chunks of candidates
        log.info("resumed from %s at step %d (candidate chunk %d/%d)", path, state.step, state.progress, parts.schedule.total_steps)
    else:
        log.info("resumed from %s at step %d/%d", path, state.step, parts.schedule.total_steps)
    return True
