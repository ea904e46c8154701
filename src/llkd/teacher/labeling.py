"""Pseudo-label a pool through the cache: ask the teacher only for texts it has not answered."""

from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from llkd.config import ConfigError, TeacherConfig
from llkd.data.schema import LabelSchema
from llkd.errors import CacheError
from llkd.teacher.answers import TeacherLabels
from llkd.teacher.base import TEACHER_BACKENDS, TeacherBackend, TeacherAnswer, TeacherFailure, total_usage
from llkd.teacher.cache import TeacherCache, text_hash
from llkd.teacher.cost import TokenUsage

log = logging.getLogger(__name__)


_NOT_BACKEND_OPTIONS = {"backend", "cache", "calibration", "price_prompt", "price_completion"}  # read by the pipeline, not by a backend


def backend_options(backend: str) -> set[str]:
    """The teacher settings a backend reads: the named parameters of its constructor."""
    import inspect

    params = inspect.signature(TEACHER_BACKENDS.get(backend).__init__).parameters
    return {name for name, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD and name not in ("self", "schema")}


def check_backend_options(cfg: TeacherConfig) -> None:
    """Refuse, in one line, a setting the user gave that the chosen backend would ignore
    (``--teacher-votes`` with ``hf``, ``--teacher-dtype`` with ``openai``): silence would
    let a run go ahead on other settings than the user believes."""
    if cfg.backend not in TEACHER_BACKENDS:
        raise ConfigError(f"unknown teacher backend '{cfg.backend}'; choose one of: {', '.join(TEACHER_BACKENDS.names())}")
    known = backend_options(cfg.backend)
    unused = sorted(f for f in cfg.model_fields_set - _NOT_BACKEND_OPTIONS - known
                    if getattr(cfg, f) != type(cfg).model_fields[f].default)
    if unused:
        given = ", ".join(f"teacher.{f}" for f in unused)
        raise ConfigError(f"{given} does not apply to the {cfg.backend} teacher backend (it reads: {', '.join(sorted(known & set(type(cfg).model_fields)))})")


def build_teacher(cfg: TeacherConfig, schema: LabelSchema) -> TeacherBackend:
    check_backend_options(cfg)
    cls = TEACHER_BACKENDS.get(cfg.backend)
    return cls(schema, **cfg.model_dump(exclude=_NOT_BACKEND_OPTIONS))


def _adopt_legacy_answers(teacher: TeacherBackend, cache: TeacherCache, identity: str, hashes: Sequence[str], ids: Sequence[str] | None,
                          cached: dict[str, TeacherAnswer]) -> None:
    """Add to ``cached`` the answers stored under the teacher's legacy identities, copying them
    to the current identity (where the cache can be written) so the next run finds them there."""
    missing = set(hashes) - set(cached)
    for old in teacher.legacy_identities():
        found = cache.get_many(old, missing) if missing else {}
        if not found:
            continue
        cached.update(found)
        missing -= set(found)
        log.info("%d answers cached under this teacher's earlier identity reused", len(found))
        if not cache.read_only:
            id_of = dict(zip(hashes, ids)) if ids is not None else {}
            try:
                cache.put_many(identity, [(h, id_of.get(h), a) for h, a in found.items()])
            except CacheError as e:  # they are used all the same, and found again next time
                log.warning("could not copy them to the current identity: %s", e)


def label_texts(
    teacher: TeacherBackend,
    texts: Sequence[str],
    cache: TeacherCache,
    ids: Sequence[str] | None = None,
    chunk_size: int | None = None,
    progress: bool = True,
    desc: str = "teacher",
) -> TeacherLabels:
    """Answer every text, reusing cached answers; each chunk is committed before the next,
    so a killed run resumes where it stopped. Failures are recorded, retried next run."""
    # Commit after every teacher batch: a kill loses at most the batch in flight.
    chunk_size = chunk_size or int(getattr(teacher, "batch_size", 16))
    identity = teacher.identity()
    hashes = [text_hash(t) for t in texts]
    cached = cache.get_many(identity, set(hashes))
    _adopt_legacy_answers(teacher, cache, identity, hashes, ids, cached)
    c = teacher.schema.num_labels
    probs = np.full((len(texts), c), np.nan, dtype=np.float64)
    methods = [""] * len(texts)
    todo: list[int] = []
    first_row: dict[str, int] = {}
    for i, h in enumerate(hashes):
        if h in cached:
            probs[i] = cached[h].probs
            methods[i] = cached[h].method
        elif h not in first_row:  # duplicate texts are asked once
            first_row[h] = i
            todo.append(i)
    n_cached = len(texts) - sum(1 for h in hashes if h not in cached)
    if todo and cache.read_only:  # before the teacher spends time on answers that cannot be kept
        raise cache.read_only_error(f"{len(texts) - n_cached} of {len(texts)} texts have no cached answer")
    failures: dict[int, str] = {}
    saved = 0
    usage = TokenUsage()
    bar = tqdm(total=len(todo), desc=desc, unit="text", disable=not progress or not todo, dynamic_ncols=True)
    for start in range(0, len(todo), chunk_size):
        rows = todo[start : start + chunk_size]
        t0 = time.perf_counter()
        results = teacher.score([texts[i] for i in rows])
        usage = usage + total_usage(results, time.perf_counter() - t0)
        if len(results) != len(rows):
            raise RuntimeError(f"teacher returned {len(results)} answers for {len(rows)} texts")
        try:
            cache.put_many(identity, [(hashes[i], ids[i] if ids is not None else None, r) for i, r in zip(rows, results)])
        except CacheError as e:
            # Asking on would only make answers that cannot be kept: stop, and say what is safe.
            bar.close()
            raise CacheError(f"{e}. Stopped: the {saved} answers of this run before it are saved ({n_cached + saved} of {len(texts)} texts "
                             f"have one), the {len(rows)} texts of the batch being written are not; a re-run asks only for texts without an answer") from e
        saved += sum(isinstance(r, TeacherAnswer) for r in results)
        for i, r in zip(rows, results):
            if isinstance(r, TeacherAnswer):
                probs[i] = r.probs
                methods[i] = r.method
            else:
                assert isinstance(r, TeacherFailure)
                failures[i] = r.reason
        bar.update(len(rows))
        bar.set_postfix(failed=len(failures))
    bar.close()
    # Copy answers to duplicate texts.
    for i, h in enumerate(hashes):
        j = first_row.get(h)
        if j is not None and j != i:
            probs[i], methods[i] = probs[j], methods[j]
            if j in failures:
                failures[i] = failures[j]
    if failures:
        log.warning("%d of %d texts have no teacher answer (recorded in the cache; a re-run retries them)", len(failures), len(texts))
    return TeacherLabels(probs, methods, failures, identity, teacher.schema, n_cached=n_cached, n_asked=len(todo), usage=usage)
