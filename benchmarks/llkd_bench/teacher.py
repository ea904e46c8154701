"""Where the benchmark's teacher answers come from: committed answer files first, then the
teacher cache (SQLite), then the teacher itself (through :func:`llkd.pipeline.pseudo_label`,
which caches every answer, so labelling is resumable). A file's answers are left out when the
teacher, once loaded, is another identity (:func:`llkd_bench.answers.file_answers_usable`)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llkd_bench.answers import answers_file, file_answers_usable, lookup, read_answers, write_answers
from llkd_bench.datasets import BenchData
from llkd.config import TeacherConfig
from llkd.data.errors import DataError
from llkd.data.loading import TextSet

log = logging.getLogger(__name__)


@dataclass
class TeacherAnswers:
    """Raw answers of one teacher for a benchmark dataset's splits (rows as the splits' texts),
    with where they came from: per split, the arrays of :class:`llkd.teacher.answers.TeacherLabels`
    (NaN row: no answer)."""

    teacher: str
    pool: np.ndarray  # [N, C] raw probs (NaN: no answer)
    test: np.ndarray
    identity: str = ""
    source: dict[str, int] = field(default_factory=dict)  # answers taken from each source
    seconds: float = 0.0
    dev: np.ndarray | None = None  # raw probs for the dev split, when asked for


def teacher_config(teacher: str, cache: Path | None = None, device: str = "auto", dtype: str = "auto") -> TeacherConfig:
    # Raw distributions: the benchmark calibrates itself (pool reference for every split).
    return TeacherConfig(model=teacher, calibration="none", device=device, cache=cache, dtype=dtype)


def get_answers(data: BenchData, teacher: str, answers_dir: Path | None, source: str = "auto", cache: Path | None = None, progress: bool = True,
                device: str = "auto", dtype: str = "auto", with_dev: bool = False) -> TeacherAnswers:
    """source: ``answers`` (committed files only; never runs a teacher), ``auto`` (files, then
    cache/teacher for what is missing) or ``cache`` (ignore files). ``with_dev``: the dev
    split's answers too (for calibrators that use a labelled dev split)."""
    if source not in ("answers", "auto", "cache"):
        raise ValueError(f"unknown teacher source '{source}'")
    t0 = time.perf_counter()
    c = data.schema.num_labels
    header: dict[str, Any] = {}
    answers: dict[str, np.ndarray] = {}
    if source != "cache" and answers_dir is not None:
        header, answers = read_answers(answers_file(answers_dir, data.name, teacher), data.schema)
    splits = [data.pool, data.test] + ([data.dev] if with_dev and data.dev is not None else [])
    probs = [lookup(answers, split.ids, c) for split in splits]
    missing = [np.flatnonzero(np.isnan(p).any(1)) for p in probs]
    counts = {"answer_file": int(sum(len(p) - len(m) for p, m in zip(probs, missing)))}
    identity = str(header.get("identity", ""))
    n_missing = sum(len(m) for m in missing)
    if n_missing and source == "answers":
        where = answers_file(answers_dir, data.name, teacher) if answers_dir else "(no --answers folder)"
        raise DataError(
            f"{data.name}: {n_missing} of {sum(len(p) for p in probs)} texts have no committed teacher answer in {where}; "
            "run with --teacher-source auto to ask the teacher (cached), then --export-answers"
        )
    if n_missing:
        from llkd.pipeline import pseudo_label

        cfg = teacher_config(teacher, cache, device, dtype)

        def ask(rows: list[np.ndarray]) -> Any:
            texts = TextSet([split.ids[i] for split, m in zip(splits, rows) for i in m],
                            [split.texts[i] for split, m in zip(splits, rows) for i in m], None, data.name)
            run = pseudo_label(cfg, data.schema, texts, progress=progress, desc=f"teacher[{data.name}]")
            start = 0
            for p, m in zip(probs, rows):
                p[m] = run.probs[start : start + len(m)]
                start += len(m)
            return run

        run = ask(missing)
        if not file_answers_usable(header, run.identity):
            # the loaded teacher is another identity than the file's: its answers for every text
            log.warning("%s: made by teacher identity %s, not %s; the file is left out", answers_file(answers_dir, data.name, teacher),
                        header.get("identity"), run.identity)
            run = ask([np.arange(len(split)) for split in splits])
            counts["answer_file"] = 0
        identity = run.identity
        counts["cache"] = int(run.n_cached)
        counts["teacher"] = int(run.n_asked)
    dev = probs[2] if len(probs) > 2 else None
    return TeacherAnswers(teacher, probs[0], probs[1], identity, counts, time.perf_counter() - t0, dev)


def export_answers(data: BenchData, teacher: str, answers_dir: Path, cache: Path | None = None, device: str = "auto", dtype: str = "auto") -> tuple[Path, int, int]:
    """Write the cached answers for this split's texts into the answer file (merging).
    Never asks the teacher; loads it only to learn its identity. Returns (file, written now,
    texts of the split without a cached answer)."""
    from llkd.teacher.cache import TeacherCache, text_hash
    from llkd.teacher.labeling import build_teacher

    cfg = teacher_config(teacher, cache, device, dtype)
    t = build_teacher(cfg, data.schema)
    try:
        identity = t.identity()
    finally:
        t.close()
    texts = data.pool.texts + data.test.texts
    keys = data.pool.ids + data.test.ids
    with TeacherCache(cfg.cache_path()) as db:
        found = db.get_many(identity, {text_hash(x) for x in texts})
    probs = np.full((len(texts), data.schema.num_labels), np.nan)
    for i, x in enumerate(texts):
        a = found.get(text_hash(x))
        if a is not None:
            probs[i] = a.probs
    path = answers_file(answers_dir, data.name, teacher)
    have = int((~np.isnan(probs).any(1)).sum())
    if have or path.exists():  # no empty files
        write_answers(path, data.name, teacher, identity, data.schema, keys, probs)
    return path, have, len(texts) - have
