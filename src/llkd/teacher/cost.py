"""What teacher calls cost: token usage, prices, money, and the one console line that says it.

Pure arithmetic and formatting, no model and no I/O, so the labelling loop, the dry-run
estimate and the reports all count the same way.

Conventions:
- a *call* is one request that reached the model and came back (an HTTP response with a
  completion for ``openai``; one scored text for the local backends); retried failures that
  never got an answer are not calls (a hosted API does not bill them);
- ``estimated`` counts the calls whose token numbers are an estimate (a server that sent no
  ``usage``), so a total mixing exact and estimated counts says how much of it is a guess;
- prices are USD per million tokens, prompt and completion apart, as hosted APIs quote them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["TokenUsage", "Prices", "UsageEstimate", "money", "format_money", "format_usage", "heuristic_tokens", "CHARS_PER_TOKEN"]

# OpenAI's rule of thumb for English text; what the dry-run uses when no tokenizer is known.
CHARS_PER_TOKEN = 4.0


@dataclass(frozen=True)
class TokenUsage:
    """Calls, tokens and seconds spent on the teacher; ``a + b`` adds every count."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    estimated: int = 0  # of ``calls``: how many have estimated (not server-reported) token counts

    def __post_init__(self) -> None:
        if min(self.calls, self.prompt_tokens, self.completion_tokens, self.estimated) < 0 or self.seconds < 0:
            raise ValueError(f"token usage cannot be negative: {self}")

    def __add__(self, other: "TokenUsage") -> "TokenUsage":
        if not isinstance(other, TokenUsage):
            return NotImplemented
        return TokenUsage(self.calls + other.calls, self.prompt_tokens + other.prompt_tokens,
                          self.completion_tokens + other.completion_tokens, self.seconds + other.seconds,
                          self.estimated + other.estimated)

    def __radd__(self, other: object) -> "TokenUsage":
        return self if other == 0 else NotImplemented  # so sum(usages) works from its 0 start

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Prices:
    """USD per million tokens. A local model is free: Prices(0, 0), or no prices at all."""

    prompt: float = 0.0
    completion: float = 0.0

    def __post_init__(self) -> None:
        for name in ("prompt", "completion"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"the {name} price must be a finite number >= 0 (USD per 1M tokens), not {value}")

    @classmethod
    def from_settings(cls, prompt: float | None, completion: float | None) -> "Prices | None":
        """Prices from two optional settings (``teacher.price_prompt``/``price_completion``):
        None when neither is given (no money is shown); a missing one counts as free."""
        if prompt is None and completion is None:
            return None
        return cls(prompt or 0.0, completion or 0.0)


def money(usage: TokenUsage, prices: Prices) -> float:
    """USD for ``usage`` at ``prices``."""
    return (usage.prompt_tokens * prices.prompt + usage.completion_tokens * prices.completion) / 1e6


def format_money(usd: float) -> str:
    """$0.0123 below a dollar (a cent is too coarse for a test run), $1,234.56 above."""
    if usd == 0:
        return "$0"
    if usd < 0.0001:
        return "<$0.0001"
    return f"${usd:.4f}" if usd < 1 else f"${usd:,.2f}"


def format_usage(usage: TokenUsage, prices: Prices | None = None) -> str:
    """One console line: '1,234 calls, 56,789 prompt + 1,234 completion tokens, $0.0123'.
    Seconds are added when measured, the estimated share when there is one."""
    calls = f"{usage.calls:,} call{'s' if usage.calls != 1 else ''}"
    if usage.estimated:
        calls += f" ({usage.estimated:,} with estimated tokens)"
    parts = [calls, f"{usage.prompt_tokens:,} prompt + {usage.completion_tokens:,} completion tokens"]
    if prices is not None:
        parts.append(format_money(money(usage, prices)))
    if usage.seconds > 0:
        parts.append(f"{usage.seconds:,.1f} s")
    return ", ".join(parts)


def heuristic_tokens(text: str) -> int:
    """A rough token count without a tokenizer: characters / CHARS_PER_TOKEN, at least 1 for
    any non-empty text (no tokenizer spends zero tokens on a character)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


@dataclass(frozen=True)
class UsageEstimate:
    """A dry-run: what ``score(texts)`` would bill, computed without asking the model.

    ``exact``: the prompt tokens are the model's own tokenizer's count of the prompt it would
    get (the local backends, or a server whose tokenizer is known); otherwise they come from
    ``CHARS_PER_TOKEN`` and are rough. ``basis`` says which, ``notes`` what else was assumed
    (e.g. that completion tokens are an upper bound)."""

    usage: TokenUsage
    exact: bool
    basis: str  # e.g. "tokenizer of smollm2-135m", "~4 characters per token (no tokenizer)"
    notes: tuple[str, ...] = field(default_factory=tuple)

    def line(self, prices: Prices | None = None) -> str:
        """'estimate: 12 calls, ... (tokenizer of smollm2-135m; completion tokens: at most ...)'."""
        how = "; ".join((self.basis if self.exact else f"rough: {self.basis}", *self.notes))
        return f"estimate: {format_usage(self.usage, prices)} ({how})"
