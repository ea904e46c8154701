"""Entity-level metrics (pure Python): strict span matching, the seqeval default and the
CoNLL convention. A predicted entity is correct only when its start, end and type all equal a
gold entity's; a partial overlap or a wrong type is one false positive and one false negative.

Inputs are per-text lists of spans ``(start, end, type)`` (``llkd.data.entities.Span``, plain
tuples or ``{start, end, type}`` dicts); the offsets can be characters or tokens, as long as gold
and predictions use the same. Spans are sets within a text: a span listed twice counts once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

ERROR_KINDS = ("wrong_type", "wrong_boundary", "wrong_type_and_boundary", "spurious", "missed")


@dataclass
class EntityReport:
    types: list[str]
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]  # gold entities per type
    predicted: list[int]  # predicted entities per type
    correct: list[int]  # exact matches per type
    micro_precision: float
    micro_recall: float
    micro_f1: float
    macro_precision: float  # means over the types present in gold or predictions
    macro_recall: float
    macro_f1: float
    texts: int
    # False positives by kind (same offsets, other type; same type, overlapping; both; no gold
    # overlap), and gold entities no prediction overlaps at all.
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))

    def as_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        w = max(len(n) for n in self.types + ["macro", "type"])
        lines = [f"{'type':<{w}}  precision  recall     f1  support  predicted"]
        for i, n in enumerate(self.types):
            lines.append(f"{n:<{w}}  {self.precision[i]:9.3f}  {self.recall[i]:6.3f}  {self.f1[i]:5.3f}  {self.support[i]:7d}  {self.predicted[i]:9d}")
        lines.append(f"{'micro':<{w}}  {self.micro_precision:9.3f}  {self.micro_recall:6.3f}  {self.micro_f1:5.3f}  {sum(self.support):7d}  {sum(self.predicted):9d}")
        lines.append(f"{'macro':<{w}}  {self.macro_precision:9.3f}  {self.macro_recall:6.3f}  {self.macro_f1:5.3f}")
        e = self.errors
        lines.append(f"errors: {e['wrong_type']} wrong type, {e['wrong_boundary']} wrong boundary, {e['wrong_type_and_boundary']} both, "
                     f"{e['spurious']} spurious, {e['missed']} missed ({self.texts} texts; strict span match)")
        return "\n".join(lines)


def _span(item: Any) -> tuple[int, int, str]:
    if isinstance(item, dict):
        return int(item["start"]), int(item["end"]), str(item["type"])
    start, end, typ = item
    return int(start), int(end), str(typ)


def _spans(items: Iterable[Any] | None) -> set[tuple[int, int, str]]:
    return {_span(s) for s in (items or ())}


def _prf(correct: int, predicted: int, gold: int) -> tuple[float, float, float]:
    """Precision, recall, F1 (0.0 where a denominator is 0, as seqeval's zero_division)."""
    p = correct / predicted if predicted else 0.0
    r = correct / gold if gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def _overlaps(a: tuple[int, int, str], b: tuple[int, int, str]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _count_errors(gold: set[tuple[int, int, str]], pred: set[tuple[int, int, str]], errors: dict[str, int]) -> None:
    for p in pred - gold:
        near = [g for g in gold if _overlaps(g, p)]
        if any(g[:2] == p[:2] for g in near):
            errors["wrong_type"] += 1
        elif any(g[2] == p[2] for g in near):
            errors["wrong_boundary"] += 1
        elif near:
            errors["wrong_type_and_boundary"] += 1
        else:
            errors["spurious"] += 1
    errors["missed"] += sum(1 for g in gold - pred if not any(_overlaps(g, p) for p in pred))


def entity_report(gold: Sequence[Iterable[Any]], pred: Sequence[Iterable[Any] | None],
                  types: Sequence[str] | None = None) -> EntityReport:
    """Strict entity-level P/R/F1 per type, micro (pooled counts) and macro (mean over the
    types present in gold or predictions; a type of ``types`` seen in neither is listed with
    zeros and left out of the mean, as classification_report does). ``types`` fixes the order;
    others found are appended in order of appearance. A prediction of None (no answer for a
    text) counts as no entities."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold texts but {len(pred)} predicted")
    support: Counter[str] = Counter()
    predicted: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    errors = dict.fromkeys(ERROR_KINDS, 0)
    seen = list(types or [])
    for g_items, p_items in zip(gold, pred):
        g, p = _spans(g_items), _spans(p_items)
        support.update(s[2] for s in g)
        predicted.update(s[2] for s in p)
        correct.update(s[2] for s in g & p)
        _count_errors(g, p, errors)
        seen += [s[2] for s in sorted(g | p)]
    names = list(dict.fromkeys(seen))
    rows = [_prf(correct[n], predicted[n], support[n]) for n in names]
    micro = _prf(sum(correct.values()), sum(predicted.values()), sum(support.values()))
    present = [k for k, n in enumerate(names) if support[n] or predicted[n]]
    macro = [sum(rows[k][m] for k in present) / len(present) if present else float("nan") for m in range(3)]
    if not present:  # nothing to find and nothing found: no score, not a perfect or a zero one
        micro = (float("nan"),) * 3
    return EntityReport(
        types=names,
        precision=[round(r[0], 4) for r in rows],
        recall=[round(r[1], 4) for r in rows],
        f1=[round(r[2], 4) for r in rows],
        support=[support[n] for n in names],
        predicted=[predicted[n] for n in names],
        correct=[correct[n] for n in names],
        micro_precision=micro[0], micro_recall=micro[1], micro_f1=micro[2],
        macro_precision=macro[0], macro_recall=macro[1], macro_f1=macro[2],
        texts=len(gold),
        errors=errors,
    )


def entity_f1(gold: Sequence[Iterable[Any]], pred: Sequence[Iterable[Any] | None]) -> float:
    """Strict micro-F1 over entities (the usual headline NER score)."""
    return entity_report(gold, pred).micro_f1
