"""The teacher interface: texts in, pseudo-label + confidence + full label distribution out."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Sequence

from llkd.data.schema import LabelSchema
from llkd.errors import TeacherUnavailable
from llkd.registry import Registry

__all__ = ["TEACHER_BACKENDS", "Teacher", "TeacherAnswer", "TeacherFailure", "TeacherUnavailable", "softmax"]


@dataclass
class TeacherAnswer:
    """One teacher answer. ``probs`` is the distribution over the schema's labels."""

    probs: list[float]
    method: str  # "verbalizer", "first_token_logprobs", "vote"
    pseudo_label: int = field(init=False)
    confidence: float = field(init=False)

    def __post_init__(self) -> None:
        total = sum(self.probs)
        if not self.probs or not math.isfinite(total) or total <= 0:
            raise ValueError(f"teacher distribution is not a distribution: {self.probs}")
        self.probs = [p / total for p in self.probs]
        self.pseudo_label = max(range(len(self.probs)), key=self.probs.__getitem__)
        self.confidence = self.probs[self.pseudo_label]


@dataclass
class TeacherFailure:
    """An answer that could not be obtained or parsed; recorded, never silently dropped."""

    reason: str


class Teacher(ABC):
    """A labelling LLM. Subclasses register under a backend name."""

    def __init__(self, schema: LabelSchema) -> None:
        self.schema = schema

    @abstractmethod
    def identity(self) -> str:
        """Everything that changes answers (backend, model, template, label set, method):
        part of each cache key so a change never returns a stale answer."""

    def legacy_identities(self) -> list[str]:
        """Identities earlier llkd versions gave this same teacher with these same settings:
        answers cached under them are reused (and copied to ``identity()``), so a change of the
        identity's format does not re-ask every text."""
        return []

    @abstractmethod
    def score(self, texts: Sequence[str]) -> list[TeacherAnswer | TeacherFailure]:
        """Answer each text; one result per text, in order."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


TEACHER_BACKENDS: Registry[Teacher] = Registry("teacher backend")


def softmax(scores: Sequence[float]) -> list[float]:
    m = max(scores)
    exps = [math.exp(s - m) for s in scores]
    z = sum(exps)
    return [e / z for e in exps]
