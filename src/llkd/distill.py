"""Budgeted distillation: ask the teacher only about the texts the student needs.

Rounds (docs/method.md, section "Budgeted distillation"): a seed set chosen without labels
(k-means++ over the student encoder's embeddings); then per round, train a student on the
texts answered so far (the configured selector, ``llkd`` by default), score the unanswered
texts with an acquisition strategy (:mod:`llkd.acquisition`), ask the teacher about the next
batch. It stops at the budget (calls, tokens or money), when the pool is exhausted, or by the
label-free rule (the student's predictions on the unanswered pool stop changing). The final
student trains on everything answered, like any ``llkd train`` student.

Resumable and deterministic: each round's batch is written to ``state.json`` *before* the
teacher is asked, and every answer goes through the teacher cache, so a killed run continues
with the same batch, asks nothing twice, and the same seed gives the same answered set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from llkd.acquisition import ACQUISITIONS, AcquisitionContext, build_strategy, seed_rows
from llkd.config import DistillConfig, LLKDConfig, parse_amount
from llkd.data.errors import DataError
from llkd.data.loading import TextSet
from llkd.data.schema import LabelSchema
from llkd.evaluation.metrics import classification_report
from llkd.teacher.calibration import CALIBRATORS, Calibrator, LabelledAnswers
from llkd.teacher.cost import Prices, TokenUsage, format_usage, money

log = logging.getLogger(__name__)

STATE = "state.json"


@dataclass
class Asked:
    """What one ask of the answer source returned: raw probabilities (NaN rows: no answer)."""

    probs: np.ndarray  # [k, C]
    usage: TokenUsage  # the calls this ask really made (cache hits cost nothing)
    failures: dict[int, str] = field(default_factory=dict)  # position in the batch -> reason


class AnswerSource(Protocol):
    """Where answers come from: the teacher through its cache (:class:`TeacherSource`), or in the
    benchmark the committed answer files, revealed only when asked."""

    def ask(self, rows: np.ndarray) -> Asked: ...

    def estimate(self, rows: np.ndarray) -> TokenUsage | None:
        """Tokens the teacher would bill for these pool rows, without calling it (None: unknown)."""
        ...

    def answers(self, texts: TextSet) -> Asked:
        """Raw answers for a labelled dev split (calibrators that use one)."""
        ...

    def content_free(self) -> np.ndarray:
        """The raw answer for the content-free input (contextual calibration)."""
        ...


@dataclass
class Round:
    """One round of the loop, as state.json keeps it."""

    index: int
    rows: list[int]  # pool rows asked in this round (planned before the teacher is asked)
    answered_before: int
    done: bool = False
    usage: dict[str, Any] = field(default_factory=dict)  # TokenUsage of the calls this round made
    student_dev_macro_f1: float | None = None  # the student trained on the answers up to and including this round
    student_test_macro_f1: float | None = None
    changed_share: float | None = None  # share of unanswered texts whose student prediction changed vs the previous round
    train_seconds: float = 0.0
    gradient_samples: int = 0


@dataclass
class DistillState:
    fingerprint: str
    rounds: list[Round] = field(default_factory=list)
    stopped: str = ""  # why the loop ended ("" while running)

    def asked_rows(self) -> list[int]:
        return [r for rnd in self.rounds for r in rnd.rows]

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"fingerprint": self.fingerprint, "stopped": self.stopped,
                                   "rounds": [vars(r) for r in self.rounds]}, indent=1))
        os.replace(tmp, path)  # a kill leaves the old state or the new one, never half of one

    @classmethod
    def load(cls, path: Path, fingerprint: str) -> "DistillState":
        if not path.exists():
            return cls(fingerprint)
        raw = json.loads(path.read_text())
        if raw.get("fingerprint") != fingerprint:
            raise DataError(f"{path}: written by a distill run with other data or settings; use another --student-output, or delete it to start over")
        return cls(fingerprint, [Round(**r) for r in raw["rounds"]], raw.get("stopped", ""))


@dataclass
class Limits:
    """The budget resolved against the pool: texts, tokens, money."""

    calls: int
    tokens: int | None
    usd: float | None
    prices: Prices | None

    def check(self, spent: TokenUsage, extra: TokenUsage | None) -> bool:
        """Would ``extra`` (None: not estimable) on top of ``spent`` stay within the token and money budgets?"""
        total = spent + (extra or TokenUsage())
        if self.tokens is not None and total.prompt_tokens + total.completion_tokens > self.tokens:
            return False
        return not (self.usd is not None and self.prices is not None and money(total, self.prices) > self.usd)


def resolve_limits(cfg: LLKDConfig, pool_size: int) -> Limits:
    """The budget in one place, checked before any call: one line for each bad value."""
    d = cfg.distill
    try:
        calls = parse_amount(d.budget, pool_size)
    except ValueError as e:
        raise DataError(f"distill.budget {e}") from None
    if d.acquisition not in ACQUISITIONS:
        raise DataError(f"distill.acquisition '{d.acquisition}' is unknown; choose one of: {', '.join(ACQUISITIONS.names())}")
    prices = Prices.from_settings(cfg.teacher.price_prompt, cfg.teacher.price_completion)
    if d.budget_usd is not None and prices is None:
        raise DataError("distill.budget_usd needs a price: give teacher.price_prompt (and teacher.price_completion), USD per 1M tokens")
    return Limits(calls, d.budget_tokens, d.budget_usd, prices)


def schedule_sizes(d: DistillConfig, pool_size: int, limit: int) -> list[int]:
    """The answered-set size after each round: seed, then x growth, with every milestone a
    round boundary, the last at ``limit``."""
    seed = min(parse_amount(d.seed_size, pool_size), limit)
    marks = sorted({min(parse_amount(m, pool_size), limit) for m in d.milestones} | {limit})
    sizes = [seed]
    while sizes[-1] < limit:
        nxt = max(int(np.ceil(round(sizes[-1] * d.growth, 9))), sizes[-1] + d.min_round)  # 100 x 1.1 is 110.00000000000001
        mark = next(m for m in marks if m > sizes[-1])
        sizes.append(min(nxt, mark))
    return sizes


# Settings that change where or how fast answers and students are made, not what they are.
_TRANSPORT = {"teacher": {"cache", "price_prompt", "price_completion", "tokenizer", "base_url", "api_key_env", "timeout", "max_retries",
                          "concurrency", "device", "batch_size"},
              "student": {"output", "resume", "device", "threads", "checkpoint_every"}}


def fingerprint(cfg: LLKDConfig, pool: TextSet, seed: int, dev: TextSet | None = None) -> str:
    """What fixes the answered set: texts, the dev split, teacher, selection, student and loop
    settings (not the output folder, prices, the server's address or the device)."""
    h = hashlib.sha256()
    for t in [*pool.texts, "\0dev", *(dev.texts if dev is not None else ())]:
        h.update(t.encode())
        h.update(b"\0")
    h.update(json.dumps(dev.labels if dev is not None else None).encode())
    keep = {"teacher": cfg.teacher.model_dump(mode="json", exclude=_TRANSPORT["teacher"]), "selection": cfg.selection.model_dump(mode="json"),
            "student": cfg.student.model_dump(mode="json", exclude=_TRANSPORT["student"]),
            "distill": cfg.distill.model_dump(mode="json", exclude={"dry_run", "budget", "budget_tokens", "budget_usd", "stop_change", "stop_patience"}),
            "seed": seed}
    h.update(json.dumps(keep, sort_keys=True).encode())
    return h.hexdigest()[:16]


class TeacherSource:
    """The teacher, through its cache: a re-asked text is a cache hit (no call, no cost)."""

    def __init__(self, cfg: LLKDConfig, schema: LabelSchema, pool: TextSet, progress: bool = True) -> None:
        from llkd.teacher.cache import TeacherCache
        from llkd.teacher.labeling import build_teacher

        self.pool, self.progress = pool, progress
        self.teacher = build_teacher(cfg.teacher, schema)
        self.cache = TeacherCache(cfg.teacher.cache_path())

    def _label(self, ids: list[str], texts: list[str], desc: str) -> Any:
        from llkd.teacher.labeling import label_texts

        return label_texts(self.teacher, texts, self.cache, ids=ids, progress=self.progress, desc=desc)

    def ask(self, rows: np.ndarray) -> Asked:
        res = self._label([self.pool.ids[i] for i in rows], [self.pool.texts[i] for i in rows], "teacher")
        return Asked(res.probs, res.usage, res.failures)

    def estimate(self, rows: np.ndarray) -> TokenUsage | None:
        try:
            return self.teacher.estimate_usage([self.pool.texts[i] for i in rows]).usage
        except NotImplementedError:
            return None

    def answers(self, texts: TextSet) -> Asked:
        """Raw answers for another split (dev, for calibrators that use one); cached like the rest."""
        res = self._label(texts.ids, texts.texts, "teacher[dev]")
        return Asked(res.probs, res.usage, res.failures)

    def content_free(self) -> np.ndarray:
        from llkd.teacher.calibration import CONTENT_FREE

        return self._label(["content-free"], [CONTENT_FREE], "teacher[content-free]").probs[0]

    def identity(self) -> str:
        return self.teacher.identity()

    def close(self) -> None:
        self.teacher.close()
        self.cache.close()


@dataclass
class DistillResult:
    state: DistillState
    rows: np.ndarray  # pool rows asked, in the order asked
    probs: np.ndarray  # [N, C] calibrated answers; NaN rows: not asked (or no answer)
    calibrator: Calibrator
    usage: TokenUsage  # teacher calls of this run (a resumed run: of its own calls only)
    limits: Limits
    class_prior: np.ndarray | None = None  # the guard's target for the final student (smoothed_prior)

    def summary(self) -> dict[str, Any]:
        from llkd.teacher.cost import money

        prices = self.limits.prices
        spent = sum((TokenUsage(**r.usage) for r in self.state.rounds), TokenUsage())
        return {"asked": len(self.rows), "budget_calls": self.limits.calls, "stopped": self.state.stopped,
                "usage": vars(spent), "usd": money(spent, prices) if prices else None,
                "usage_this_run": vars(self.usage),  # a resumed run: the calls it made itself (answers of the killed run come from the cache)
                "rounds": [vars(r) for r in self.state.rounds], "calibration": self.calibrator.state()}


def pool_embeddings(cfg: LLKDConfig, schema: LabelSchema, texts: list[str]) -> np.ndarray:
    """The student encoder's (pretrained, frozen) embeddings of ``texts``: where acquisition
    measures diversity. Same cache keys as a frozen student, so its rounds encode nothing twice."""
    from llkd.hardware import resolve_dtype
    from llkd.student.embeddings import cached_embeddings
    from llkd.student.model import load_student

    model, tokenizer = load_student(cfg.student.model, schema, frozen=True)
    device = "cpu" if cfg.student.device in ("auto", "cpu") else cfg.student.device
    embeddings, _ = cached_embeddings(model, tokenizer, texts, cfg.student.max_length, resolve_dtype(cfg.student.dtype, device))
    return embeddings


def calibration_inputs(name: str, source: AnswerSource, dev: TextSet | None) -> tuple[np.ndarray | None, LabelledAnswers | None, TokenUsage]:
    """What the calibrator needs besides the pool's answers, asked once per run: the
    content-free answer (contextual) and the teacher's answers on a labelled dev split (auto,
    prior). Dev calls are counted, outside the pool budget."""
    calibrator = CALIBRATORS.get(name)()
    content_free = source.content_free() if calibrator.needs_content_free else None
    if not (calibrator.uses_dev and dev is not None and dev.labels is not None):
        return content_free, None, TokenUsage()
    asked = source.answers(dev)
    return content_free, LabelledAnswers(asked.probs, np.asarray(dev.labels)), asked.usage


def refit_calibrator(name: str, raw: np.ndarray, content_free: np.ndarray | None, dev: LabelledAnswers | None) -> Calibrator:
    """The calibrator refitted each round on every raw answer so far: the seed round alone is
    a fair sample but tiny (a class at 2 % of the pool is absent from 40 texts), later rounds
    are chosen for being hard; the union is the better estimate of the two."""
    calibrator = CALIBRATORS.get(name)()
    ok = ~np.isnan(raw).any(axis=1)
    calibrator.fit(raw[ok], content_free, dev)
    return calibrator


def smoothed_prior(prior: np.ndarray | None, n: int) -> np.ndarray | None:
    """The class-balance guard's target from n answers, with one pseudo-count per class
    (Laplace): an estimate from a few dozen texts must not give a class the target 0, which
    would keep it out of every selected batch."""
    if prior is None:
        return None
    p = np.asarray(prior, dtype=np.float64)
    return (n * p + 1.0) / (n + len(p))


def _round_config(cfg: LLKDConfig, folder: Path) -> LLKDConfig:
    """The round students' settings: the run's, in ``distill.round_mode``, in their own folder,
    never resumed (each round trains afresh on more answers)."""
    out = cfg.model_copy(deep=True)
    if out.student.mode != cfg.distill.round_mode:
        out.student.mode = cfg.distill.round_mode
        out.student.epochs = None  # the mode's default epochs and head lr
        out.student.head_lr = None
    out.student.output, out.student.resume = folder, False
    return out


@dataclass
class _Run:
    """The loop's working state beside state.json (arrays, rebuilt on resume)."""

    cfg: LLKDConfig
    schema: LabelSchema
    pool: TextSet
    source: Any
    folder: Path
    dev: TextSet | None
    evaluate_on: dict[str, TextSet]
    progress: bool
    say: Callable[[str], None]
    raw: np.ndarray = field(init=False)  # [N, C] raw answers so far
    embeddings: np.ndarray = field(init=False)  # [N, D] the pretrained student encoder's, for acquisition
    split_embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # the same for the scored splits

    def __post_init__(self) -> None:
        self.raw = np.full((len(self.pool), self.schema.num_labels), np.nan)


def _train_round(run: _Run, rnd: Round, probs: np.ndarray, prior: np.ndarray | None) -> np.ndarray:
    """Train the round student on the answers so far; record its scores; return its
    predicted probabilities for every pool text (from the model in memory: a frozen round
    runs only its head over the cached embeddings)."""
    import shutil

    from llkd.student.model import predict_probs
    from llkd.student.trainer import StudentTrainer

    rcfg = _round_config(run.cfg, run.folder / f"round-{rnd.index}")
    trainer = StudentTrainer(rcfg.student, rcfg.selection, run.schema, run.pool, probs, dev=run.dev, progress=False, class_prior=prior)
    t0 = time.perf_counter()
    result = trainer.train()
    frozen = rcfg.student.mode == "frozen"

    def predict(texts: list[str], embeddings: np.ndarray | None) -> np.ndarray:
        return predict_probs(trainer.model, trainer.tokenizer, texts, rcfg.student.max_length, dtype=trainer.dtype or "float32",
                             embeddings=embeddings if frozen else None)

    pool_probs = predict(run.pool.texts, run.embeddings)
    for name, texts in run.evaluate_on.items():
        assert texts.labels is not None
        pred = predict(texts.texts, run.split_embeddings.get(name)).argmax(axis=1)
        setattr(rnd, f"student_{name}_macro_f1", classification_report(texts.labels, pred, run.schema.names).macro_f1)
    rnd.train_seconds, rnd.gradient_samples = time.perf_counter() - t0, result.gradient_samples
    np.save(run.folder / f"round-{rnd.index}-pred.npy", pool_probs.argmax(axis=1).astype(np.int16))
    shutil.rmtree(rcfg.student.output, ignore_errors=True)  # a round student is a means; only its predictions are kept
    return pool_probs


def _changed_share(run: _Run, rnd: Round, asked: np.ndarray) -> float | None:
    """Share of the still-unanswered texts whose predicted label moved since the last round."""
    prev = run.folder / f"round-{rnd.index - 1}-pred.npy"
    if rnd.index == 0 or not prev.exists():
        return None
    left = np.ones(len(run.pool), dtype=bool)
    left[asked] = False
    if not left.any():
        return 0.0
    a, b = np.load(prev), np.load(run.folder / f"round-{rnd.index}-pred.npy")
    return float((a[left] != b[left]).mean())


def _stop_reason(d: DistillConfig, state: DistillState) -> str:
    """The label-free rule: predictions on the unanswered pool stopped changing."""
    if d.stop_change <= 0:
        return ""
    recent = [r.changed_share for r in state.rounds[-d.stop_patience:]]
    if len(recent) == d.stop_patience and all(v is not None and v < d.stop_change for v in recent):
        return f"stable: under {d.stop_change:.1%} of the unanswered texts changed prediction in {d.stop_patience} rounds in a row"
    return ""


def _within_budget(source: Any, limits: Limits, spent: TokenUsage, picked: np.ndarray) -> np.ndarray:
    """The longest prefix of ``picked`` (the strategy's order) whose estimated tokens and cost
    stay within the budget on top of what was spent."""
    if limits.check(spent, source.estimate(picked)):
        return picked
    lo, hi = 0, len(picked)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if limits.check(spent, source.estimate(picked[:mid])) else (lo, mid - 1)
    return picked[:lo]


def _plan_next(run: _Run, state: DistillState, pool_probs: np.ndarray, calibrated: np.ndarray, sizes: list[int], limits: Limits) -> str:
    """Choose the next round's batch and write it to state (before anyone asks). Returns why
    the loop stops instead, or ""."""
    asked = np.asarray(state.asked_rows(), dtype=np.int64)
    nxt = next((s for s in sizes if s > len(asked)), None)
    if nxt is None:
        return f"budget: {limits.calls} teacher calls"
    candidates = np.setdiff1d(np.arange(len(run.pool)), asked)  # never empty: the budget is at most the pool
    rnd_index = len(state.rounds)
    answered = asked[~np.isnan(calibrated[asked]).any(axis=1)]
    emb = run.embeddings
    ctx = AcquisitionContext(pool_probs[candidates], np.random.default_rng([run.cfg.student.seed, rnd_index]), emb[candidates], emb[answered],
                             np.nanmax(calibrated[answered], axis=1))
    picked = candidates[build_strategy(run.cfg.distill.acquisition).choose(ctx, nxt - len(asked))]
    spent = sum((TokenUsage(**r.usage) for r in state.rounds), TokenUsage())
    picked = _within_budget(run.source, limits, spent, picked)
    if not len(picked):
        return "token budget" if limits.tokens is not None else "money budget"
    state.rounds.append(Round(rnd_index, [int(i) for i in picked], len(asked)))
    return ""


def distill(cfg: LLKDConfig, schema: LabelSchema, pool: TextSet, source: AnswerSource, *, dev: TextSet | None = None,
            evaluate_on: dict[str, TextSet] | None = None, progress: bool = True, say: Callable[[str], None] = log.info) -> DistillResult:
    """The rounds, up to the budget (see the module docstring). ``source`` gives the answers
    (:class:`TeacherSource`, or the benchmark's answer files). ``evaluate_on``: labelled splits
    each round student is scored on (``dev`` -> ``student_dev_macro_f1``, ``test`` -> ...).
    State lives in ``<student.output>/distill``; the final student is trained by the caller
    on ``result.probs`` (:func:`llkd.pipeline.train_and_evaluate`)."""
    limits = resolve_limits(cfg, len(pool))
    sizes = schedule_sizes(cfg.distill, len(pool), limits.calls)
    folder = Path(cfg.student.output) / "distill"
    folder.mkdir(parents=True, exist_ok=True)
    state = DistillState.load(folder / STATE, fingerprint(cfg, pool, cfg.student.seed, dev))
    state.stopped = ""  # a rerun with a larger budget continues where the last one stopped
    scored = {"dev": dev, **(evaluate_on or {})} if dev is not None else dict(evaluate_on or {})
    unknown = set(scored) - {"dev", "test"}
    if unknown:
        raise ValueError(f"evaluate_on: only dev and test splits are scored per round, not {sorted(unknown)}")
    run = _Run(cfg, schema, pool, source, folder, dev, scored, progress, say)
    run.embeddings = pool_embeddings(cfg, schema, pool.texts)
    run.split_embeddings = {name: pool_embeddings(cfg, schema, texts.texts) for name, texts in scored.items()}
    if not state.rounds:
        rows = _within_budget(source, limits, TokenUsage(), seed_rows(run.embeddings, sizes[0], np.random.default_rng([cfg.student.seed, 0])))
        if not len(rows):
            raise DataError("the token or money budget does not cover even one text of the first round")
        state.rounds.append(Round(0, [int(i) for i in rows], 0))
        state.save(folder / STATE)
    content_free, dev_answers, usage = calibration_inputs(cfg.teacher.calibration, source, dev)
    calibrator: Calibrator | None = None
    r = 0
    while r < len(state.rounds):
        rnd = state.rounds[r]
        rows = np.asarray(rnd.rows, dtype=np.int64)
        asked = source.ask(rows)  # on a resume: cache hits, no calls (but failed texts are retried, and billed)
        run.raw[rows] = asked.probs
        usage = usage + asked.usage
        if asked.usage.calls:  # kept before training, so a kill loses no billed call from the budget
            rnd.usage = {k: v + getattr(asked.usage, k) for k, v in vars(TokenUsage(**rnd.usage)).items()}
            state.save(folder / STATE)
        if rnd.done and r + 1 < len(state.rounds):
            r += 1
            continue
        all_rows = np.asarray(state.asked_rows(), dtype=np.int64)
        answered = int((~np.isnan(run.raw[all_rows]).any(axis=1)).sum())
        if not answered:
            raise DataError(f"no text of the first {len(all_rows)} asked got a teacher answer; nothing to train on")
        calibrator = refit_calibrator(cfg.teacher.calibration, run.raw[all_rows], content_free, dev_answers)
        calibrated = calibrator.apply(run.raw)
        pool_probs = _train_round(run, rnd, calibrated, smoothed_prior(calibrator.class_prior, answered))
        rnd.changed_share = _changed_share(run, rnd, all_rows)
        rnd.done = True
        dev_f1 = f", dev macro-F1 {rnd.student_dev_macro_f1:.4f}" if rnd.student_dev_macro_f1 is not None else ""
        spent = sum((TokenUsage(**x.usage) for x in state.rounds), TokenUsage())
        say(f"round {rnd.index}: {len(all_rows)} of {len(pool)} texts asked ({len(all_rows) / len(pool):.1%}){dev_f1}; "
            f"teacher so far: {format_usage(spent, limits.prices)}")
        state.stopped = _stop_reason(cfg.distill, state) or _plan_next(run, state, pool_probs, calibrated, sizes, limits)
        state.save(folder / STATE)
        r += 1
    assert calibrator is not None
    asked_rows = np.asarray(state.asked_rows(), dtype=np.int64)
    probs = np.full_like(run.raw, np.nan)
    probs[asked_rows] = calibrator.apply(run.raw)[asked_rows]
    say(f"stopped: {state.stopped}")
    n = int((~np.isnan(probs).any(axis=1)).sum())
    return DistillResult(state, asked_rows, probs, calibrator, usage, limits, smoothed_prior(calibrator.class_prior, n))
