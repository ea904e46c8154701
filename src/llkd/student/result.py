"""What a training run hands back. Plain data (no torch), so reports can read it without
importing the trainer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class TrainResult:
    model_dir: Path
    steps: int
    optimizer_updates: int
    gradient_samples: int  # sample-steps that got a backward pass
    sample_steps_seen: int
    data_usage: float  # distinct pool samples ever selected / pool size
    selected_rows: np.ndarray  # bool [N]
    dev_history: list[dict[str, Any]] = field(default_factory=list)
    kept_epoch: int | None = None  # the epoch whose weights were saved (None: the last step's, no dev split)
    kept_reason: str = "the last step's weights (no dev split)"

    @property
    def sample_step_rate(self) -> float:
        return self.gradient_samples / max(self.sample_steps_seen, 1)

    def summary(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "optimizer_updates": self.optimizer_updates,
            "gradient_samples": self.gradient_samples,
            "sample_steps_seen": self.sample_steps_seen,
            "sample_step_rate": round(self.sample_step_rate, 4),
            "data_usage": round(self.data_usage, 4),
            "distinct_samples_used": int(self.selected_rows.sum()),
            "kept_epoch": self.kept_epoch,
            "kept_reason": self.kept_reason,
        }
