"""The teacher interface: texts in, pseudo-label + confidence + full label distribution out."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Sequence

from llkd.data.schema import LabelSchema
from llkd.errors import TeacherUnavailable
from llkd.registry import Registry
from llkd.teacher.cost import TokenUsage, UsageEstimate

__all__ = ["TEACHER_BACKENDS", "TeacherBackend", "TeacherAnswer", "TeacherFailure", "TeacherUnavailable", "softmax", "total_usage"]

# The usage fields below are what one answer (or failure) cost. Keyword-only, so
# ``TeacherAnswer(probs, method)`` and ``TeacherFailure(reason)`` stay as they were; left out
# of ``==``, so an answer read back from the cache (which keeps no usage) equals the one given.


@dataclass
class TeacherAnswer:
    """One teacher answer. ``probs`` is the distribution over the schema's labels."""

    probs: list[float]
    method: str  # "verbalizer", "first_token_logprobs", "vote"
    pseudo_label: int = field(init=False)
    confidence: float = field(init=False)
    # Filled by the backend that produced the answer (0 for answers read from the cache).
    prompt_tokens: int = field(default=0, kw_only=True, compare=False)
    completion_tokens: int = field(default=0, kw_only=True, compare=False)
    calls: int = field(default=0, kw_only=True, compare=False)  # model requests behind this answer (votes: several)
    usage_estimated: bool = field(default=False, kw_only=True, compare=False)  # counts are llkd's estimate, not the server's

    def usage(self) -> TokenUsage:
        return _usage_of(self)

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
    # A failure can still have been billed (sampled replies that name no label).
    prompt_tokens: int = field(default=0, kw_only=True, compare=False)
    completion_tokens: int = field(default=0, kw_only=True, compare=False)
    calls: int = field(default=0, kw_only=True, compare=False)
    usage_estimated: bool = field(default=False, kw_only=True, compare=False)

    def usage(self) -> TokenUsage:
        return _usage_of(self)


def _usage_of(result: "TeacherAnswer | TeacherFailure") -> TokenUsage:
    return TokenUsage(result.calls, result.prompt_tokens, result.completion_tokens, estimated=result.calls if result.usage_estimated else 0)


def total_usage(results: Sequence["TeacherAnswer | TeacherFailure"], seconds: float = 0.0) -> TokenUsage:
    """The usage of one ``score()`` call's results (answers and failures alike), with the wall
    time the caller measured around it (a batch's seconds cannot be split among its texts)."""
    return sum((r.usage() for r in results), TokenUsage()) + TokenUsage(seconds=seconds)


class TeacherBackend(ABC):
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
        """Answer each text; one result per text, in order. Each result carries its usage
        (``prompt_tokens``, ``completion_tokens``, ``calls``; see ``total_usage``)."""

    def estimate_usage(self, texts: Sequence[str]) -> UsageEstimate:
        """The usage ``score(texts)`` would bill, computed without running the model (a dry-run).

        Pass the texts that would be asked (not those the cache answers). Backends that
        cannot tell raise NotImplementedError."""
        raise NotImplementedError(f"the {type(self).__name__} teacher cannot estimate its usage")

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


TEACHER_BACKENDS: Registry[TeacherBackend] = Registry("teacher backend")


def softmax(scores: Sequence[float]) -> list[float]:
    m = max(scores)
    exps = [math.exp(s - m) for s in scores]
    z = sum(exps)
    return [e / z for e in exps]
