"""Strict entity-level metrics (issue 21): a span counts only when start, end and type all match."""

from __future__ import annotations

import json
import math

import pytest

from llkd.data.entities import Span, tags_to_spans
from llkd.evaluation.entity_metrics import entity_f1, entity_report

GOLD = [
    [Span(0, 5, "PER"), Span(10, 15, "LOC")],
    [Span(0, 4, "ORG"), Span(6, 9, "PER")],
    [Span(0, 3, "LOC")],
]
PRED = [
    [Span(0, 5, "PER"), Span(10, 14, "LOC")],  # right; LOC one character short (wrong boundary)
    [Span(0, 4, "PER"), Span(6, 9, "PER")],  # ORG called PER (wrong type); right
    [Span(20, 25, "PER")],  # the LOC missed; a PER where there is nothing
]


def test_hand_made_case_per_type_micro_macro():
    r = entity_report(GOLD, PRED)
    assert r.types == ["PER", "LOC", "ORG"]  # order of first appearance
    assert r.support == [2, 2, 1] and r.predicted == [4, 1, 0] and r.correct == [2, 0, 0]
    # PER: 2 of 4 predicted right, both gold found; LOC, ORG: none right
    assert r.precision == [0.5, 0.0, 0.0] and r.recall == [1.0, 0.0, 0.0] and r.f1 == [0.6667, 0.0, 0.0]
    # micro: 2 right of 5 predicted, of 5 gold
    assert r.micro_precision == pytest.approx(0.4) and r.micro_recall == pytest.approx(0.4) and r.micro_f1 == pytest.approx(0.4)
    # macro: the mean over the three types; lower than micro, as the frequent PER is the good one
    assert r.macro_precision == pytest.approx(0.5 / 3) and r.macro_recall == pytest.approx(1 / 3)
    assert r.macro_f1 == pytest.approx((2 / 3) / 3) and r.macro_f1 < r.micro_f1
    assert r.errors == {"wrong_type": 1, "wrong_boundary": 1, "wrong_type_and_boundary": 0, "spurious": 1, "missed": 1}
    assert r.texts == 3 and entity_f1(GOLD, PRED) == pytest.approx(0.4)


def test_partial_overlap_and_type_mismatch_are_wrong():
    gold = [[Span(0, 10, "PER")]]
    for pred in ([Span(0, 9, "PER")], [Span(1, 10, "PER")], [Span(0, 11, "PER")], [Span(0, 10, "ORG")], [Span(2, 12, "ORG")]):
        r = entity_report(gold, [pred])
        assert r.micro_precision == r.micro_recall == r.micro_f1 == 0.0, pred
    assert entity_report(gold, [[Span(2, 12, "ORG")]]).errors["wrong_type_and_boundary"] == 1
    assert entity_report(gold, gold).micro_f1 == 1.0 and entity_report(gold, gold).macro_f1 == 1.0


def test_micro_and_macro_weigh_types_differently():
    """Ten PER all found, one LOC missed: micro ~ 0.95 (per entity), macro 0.5 (per type)."""
    gold = [[Span(i * 10, i * 10 + 3, "PER") for i in range(10)] + [Span(200, 205, "LOC")]]
    pred = [[Span(i * 10, i * 10 + 3, "PER") for i in range(10)]]
    r = entity_report(gold, pred)
    assert r.micro_precision == 1.0 and r.micro_recall == pytest.approx(10 / 11)
    assert r.micro_f1 == pytest.approx(2 * (10 / 11) / (1 + 10 / 11))
    assert r.macro_f1 == pytest.approx(0.5) and r.errors["missed"] == 1


def test_the_seqeval_readme_example():
    """seqeval's README: f1_score on these tags is 0.50 (MISC shifted by one token: wrong)."""
    y_true = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    y_pred = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]

    def spans(tags):
        return tags_to_spans(tags, [(k, k + 1) for k in range(len(tags))])

    r = entity_report([spans(t) for t in y_true], [spans(t) for t in y_pred])
    assert r.micro_f1 == pytest.approx(0.5) and r.micro_precision == pytest.approx(0.5) and r.micro_recall == pytest.approx(0.5)
    assert dict(zip(r.types, r.f1)) == {"MISC": 0.0, "PER": 1.0}


def test_types_order_unseen_types_duplicates_inputs():
    r = entity_report([[(0, 3, "PER")]], [[(0, 3, "PER"), (0, 3, "PER"), {"start": 5, "end": 7, "type": "GPE"}]],
                      types=["LOC", "PER"])
    assert r.types == ["LOC", "PER", "GPE"]  # schema order, then others found
    assert r.support == [0, 1, 0] and r.predicted == [0, 1, 1]  # a span listed twice counts once
    assert r.macro_f1 == pytest.approx((1.0 + 0.0) / 2)  # LOC is in neither: not in the mean
    assert entity_report([[(0, 3, "PER")]], [None]).micro_recall == 0.0  # no answer: nothing found


def test_nothing_to_find_and_nothing_found_is_no_score():
    r = entity_report([[], []], [[], []], types=["PER"])
    assert math.isnan(r.micro_f1) and math.isnan(r.macro_f1) and r.support == [0]
    with pytest.raises(ValueError, match="2 gold texts but 1 predicted"):
        entity_report([[], []], [[]])


def test_table_and_dict():
    r = entity_report(GOLD, PRED)
    table = r.table()
    assert table.splitlines()[0].split() == ["type", "precision", "recall", "f1", "support", "predicted"]
    assert "PER        0.500   1.000  0.667        2          4" in table
    assert "micro      0.400   0.400  0.400        5          5" in table
    assert "1 wrong type, 1 wrong boundary, 0 both, 1 spurious, 1 missed (3 texts" in table
    d = json.loads(json.dumps(r.as_dict()))
    assert d["micro_f1"] == pytest.approx(0.4) and d["errors"]["missed"] == 1 and d["types"] == ["PER", "LOC", "ORG"]
