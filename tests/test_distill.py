"""The budgeted distillation loop's plumbing: budgets, the round schedule, determinism and
resume. The answer source here is a stand-in that reveals fixed answers and counts every ask
(a real teacher runs in test_distill_kill.py); the students are real (frozen MiniLM)."""

import json

import numpy as np
import pytest

from llkd.cli import main
from llkd.config import LLKDConfig, parse_amount
from llkd.data.loading import load_texts
from llkd.distill import STATE, Asked, distill, schedule_sizes
from llkd.teacher.cost import TokenUsage

N = 64


class CountingSource:
    """Fixed answers (the gold label with a little confidence noise), each ask counted per row."""

    def __init__(self, gold: list[int], c: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        probs = np.full((len(gold), c), 0.1 / (c - 1))
        probs[np.arange(len(gold)), gold] = 0.9
        self.probs = probs * rng.uniform(0.8, 1.2, size=probs.shape)
        self.probs /= self.probs.sum(1, keepdims=True)
        self.asks = np.zeros(len(gold), dtype=int)

    def ask(self, rows):
        self.asks[rows] += 1
        return Asked(self.probs[rows], TokenUsage(calls=len(rows), prompt_tokens=100 * len(rows)))

    def estimate(self, rows):
        return TokenUsage(calls=len(rows), prompt_tokens=100 * len(rows))

    def answers(self, texts):
        raise AssertionError("no dev split in these tests")

    def content_free(self):
        raise AssertionError("not used")


@pytest.fixture(scope="module")
def pool(demo_dir, agnews_schema):
    texts = load_texts(demo_dir / "agnews_test.jsonl", "text", "id", "label", agnews_schema)  # labelled: the stand-in answers from gold
    return texts.subset(range(N))


def _cfg(tmp_path, name, **distill):
    return LLKDConfig.validated({
        "teacher": {"calibration": "none"},
        "student": {"mode": "frozen", "epochs": 2, "max_length": 32, "threads": 1, "output": str(tmp_path / name), "seed": 3},
        "distill": {"budget": "20", "seed_size": "8", "min_round": 4, "acquisition": "margin", **distill},
    })


def test_amounts_and_the_round_schedule():
    assert parse_amount("25%", 400) == 100 and parse_amount("7", 400) == 7
    cfg = LLKDConfig.validated({"distill": {"seed_size": "2.5%", "growth": 1.5, "min_round": 16, "milestones": "5%,10%,20%"}}).distill
    assert schedule_sizes(cfg, 2000, 400) == [50, 75, 100, 150, 200, 300, 400]
    cfg = LLKDConfig.validated({"distill": {"seed_size": "100", "min_round": 16}}).distill
    assert schedule_sizes(cfg, 2000, 60) == [60]  # a seed above the budget is cut to it


@pytest.mark.parametrize("flags, message", [
    (["--distill-budget", "0"], "must be more than 0"),
    (["--distill-budget", "-5"], "must be more than 0"),
    (["--distill-budget", "half"], "neither a count"),
    (["--distill-budget", "inf"], "not a finite amount"),
    (["--distill-budget", "120%"], "more than the whole pool"),
    (["--distill-budget", "5000"], "more than the 400 texts of the pool"),
    (["--distill-budget-usd", "1"], "needs a price"),
    (["--distill-budget-usd", "-1"], "greater than 0"),
    (["--distill-acquisition", "smartest"], "choose one of"),
])
def test_bad_budgets_get_one_line_before_any_call(tmp_path, demo_dir, capsys, flags, message):
    cache = tmp_path / "teacher.sqlite"
    rc = main(["distill", "--no-progress", "--data-pool", str(demo_dir / "agnews_pool.jsonl"), "--data-labels", str(demo_dir / "agnews_labels.yaml"),
               "--teacher-cache", str(cache), "--student-output", str(tmp_path / "out"), *flags])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1
    assert not cache.exists()  # the teacher was never asked (nor even loaded)


def test_a_budget_of_n_calls_asks_n_texts_once_each(tmp_path, pool, agnews_schema):
    source = CountingSource(pool.labels, agnews_schema.num_labels)
    result = distill(_cfg(tmp_path, "a"), agnews_schema, pool, source, say=lambda _: None)
    assert len(result.rows) == 20 and len(set(result.rows.tolist())) == 20
    assert source.asks.sum() == 20 and source.asks.max() == 1
    assert result.state.stopped.startswith("budget")
    assert result.usage.calls == 20
    assert (~np.isnan(result.probs).any(axis=1)).sum() == 20  # answers for the asked texts only
    sizes = [r.answered_before + len(r.rows) for r in result.state.rounds]
    assert sizes == [8, 12, 18, 20]  # x1.5 a round, at least min_round, the last cut to the budget


def test_same_seed_same_answered_set_and_a_resume_asks_nothing_twice(tmp_path, pool, agnews_schema):
    ref = distill(_cfg(tmp_path, "ref"), agnews_schema, pool, CountingSource(pool.labels, agnews_schema.num_labels), say=lambda _: None)
    cfg = _cfg(tmp_path, "run")
    source = CountingSource(pool.labels, agnews_schema.num_labels)
    distill(cfg, agnews_schema, pool, source, say=lambda _: None)
    # as if killed after round 2 was planned and asked, before its student trained
    state_path = cfg.student.output / "distill" / STATE
    state = json.loads(state_path.read_text())
    state["rounds"] = state["rounds"][:3]
    state["rounds"][2]["done"] = False
    state_path.write_text(json.dumps(state))
    revealed = source.asks > 0
    again = distill(cfg, agnews_schema, pool, source, say=lambda _: None)
    np.testing.assert_array_equal(again.rows, ref.rows)
    # a rerun re-reads earlier answers (the real source answers them from its cache, free), and asks each new text once
    assert (source.asks[~revealed] <= 1).all()


def test_the_label_free_stop_rule_ends_the_loop(tmp_path, pool, agnews_schema):
    result = distill(_cfg(tmp_path, "s", stop_change=0.99, stop_patience=1), agnews_schema, pool,
                     CountingSource(pool.labels, agnews_schema.num_labels), say=lambda _: None)
    assert result.state.stopped.startswith("stable") and len(result.rows) < 20


def test_a_token_budget_cuts_the_batch(tmp_path, pool, agnews_schema):
    # 100 prompt tokens a text, estimated and counted: 1,000 tokens buy the 8-text seed round and 2 of the next 4
    source = CountingSource(pool.labels, agnews_schema.num_labels)
    result = distill(_cfg(tmp_path, "t", budget_tokens=1000), agnews_schema, pool, source, say=lambda _: None)
    assert len(result.rows) == 10 and result.state.stopped == "token budget"
    assert result.usage.prompt_tokens == 1000
