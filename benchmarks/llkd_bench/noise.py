"""Injected teacher noise (the benchmark's "next checks"): a transformation of the teacher's
probabilities applied before training, so every selector sees the same corrupted teacher.

A flipped row keeps its confidence: the probability of the old pseudo-label and of the new
label are swapped, so the confidence distribution (what LLKD's teacher threshold sees) is
unchanged and only the labels are wrong, the hardest case for confidence-based selection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


RARE = -1


@dataclass(frozen=True)
class NoiseSpec:
    mode: str  # "uniform": the new label is uniform over the other classes; "biased": always `target`
    rate: float  # share of answered pool rows flipped (biased: of the rows not already `target`)
    target: int = 0  # biased mode: the class every flipped row is pushed to; RARE: the rarest gold class of the pool

    @property
    def tag(self) -> str:
        if self.mode == "biased":
            return f"biased{'rare' if self.target == RARE else self.target}-{self.rate:g}"
        return f"{self.mode}-{self.rate:g}"

    @classmethod
    def parse(cls, text: str) -> "NoiseSpec":
        """``uniform:0.2``, ``biased:0.2``, ``biased:0.2:3`` (target class index 3) or
        ``biased:0.2:rare`` (the pool's rarest class: a teacher that over-predicts a rare class)."""
        parts = text.split(":")
        if parts[0] not in ("uniform", "biased") or len(parts) not in (2, 3):
            raise ValueError(f"noise spec '{text}': expected uniform:RATE or biased:RATE[:CLASS]")
        rate = float(parts[1])
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"noise spec '{text}': rate must be in [0, 1]")
        target = (RARE if parts[2] == "rare" else int(parts[2])) if len(parts) == 3 else 0
        return cls(parts[0], rate, target)

    def resolved(self, pool_gold: np.ndarray, num_classes: int) -> "NoiseSpec":
        """The spec with RARE replaced by the pool's rarest gold class (the benchmark builds
        the stress case with gold labels; no method sees them)."""
        if self.target != RARE:
            return self
        counts = np.bincount(np.asarray(pool_gold), minlength=num_classes)
        return NoiseSpec(self.mode, self.rate, int(counts.argmin()))


def inject_noise(probs: np.ndarray, spec: NoiseSpec, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(noisy probs, bool mask of flipped rows). NaN rows (no teacher answer) are untouched."""
    probs = np.array(probs, dtype=np.float64, copy=True)
    n, c = probs.shape
    if c < 2:
        raise ValueError("noise needs at least 2 classes")
    if spec.mode == "biased" and not 0 <= spec.target < c:
        raise ValueError(f"biased noise target {spec.target} is not a class index (0..{c - 1})")
    answered = ~np.isnan(probs).any(axis=1)
    labels = np.where(answered, np.nan_to_num(probs, nan=-1.0).argmax(axis=1), -1)
    eligible = np.flatnonzero(answered & ((labels != spec.target) if spec.mode == "biased" else True))
    rng = np.random.default_rng(seed)
    k = int(round(spec.rate * len(eligible)))
    rows = rng.choice(eligible, size=k, replace=False) if k else np.zeros(0, dtype=int)
    flipped = np.zeros(n, dtype=bool)
    for i in rows:
        old = labels[i]
        if spec.mode == "biased":
            new = spec.target
        else:
            new = int(rng.integers(0, c - 1))
            new += new >= old  # uniform over the other classes
        probs[i, [old, new]] = probs[i, [new, old]]
        flipped[i] = True
    return probs, flipped
