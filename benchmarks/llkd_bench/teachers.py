"""Teacher table: every packaged teacher on every benchmark dataset, zero-shot.

For one (teacher, dataset) *cell*: the dataset's fixed test split (gold labels) and its
unlabeled pool (no labels) from :func:`llkd_bench.datasets.load_dataset`; the teacher's raw
distributions for both, plus its answer on the content-free input ``"N/A"``, taken from the
committed answer files, then the teacher cache, then the teacher itself (every answer goes into
the cache, committed per batch, so a killed run resumes). On the test texts it reports, for
every calibrator of :mod:`llkd.teacher.calibration` (``none`` = the raw answers; each fitted
on the *pool* answers only, contextual on the answer to ``"N/A"``), accuracy, macro-F1,
expected calibration error (10 bins, max-probability confidence) and the worst
over-prediction ratio (predicted share / true share of the most over-predicted label), and the
teacher's labelling speed on this machine (see :func:`measure_cell`).
:func:`measure_cell_from_answers` scores a cell from the committed answer files alone, with no
teacher at all.

Results are kept in one JSON file keyed by ``teacher|dataset``; each run merges into it, so
teachers can be run one at a time (or a cell rerun) and the markdown table is rebuilt from
everything the file holds, missing cells shown as "not run".
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from llkd_bench.answers import answers_file, file_answers_usable, lookup, read_answers
from llkd_bench.datasets import DATASETS, load_dataset
from llkd.evaluation.metrics import classification_report
from llkd.teacher.calibration import CALIBRATORS, CONTENT_FREE, expected_calibration_error, fit_calibrator, over_prediction_ratio

FORMAT = "llkd-bench-teachers/1"
CONTENT_FREE_ID = "<content-free>"
# none first (the raw answers); auto is left out: without a dev split it is mean, listed once
VARIANTS = tuple(sorted((n for n in CALIBRATORS.names() if n != "auto"), key=lambda n: n != "none"))
NOTES_MARKER = "<!-- Notes below this line are written by hand and kept when the table is regenerated. -->"


def cell_key(teacher: str, dataset: str) -> str:
    return f"{teacher}|{dataset}"


def parse_sizes(text: str | None, what: str = "size") -> dict[str, int]:
    """``"qwen2.5-1.5b=200,gemma3-270m=300"`` -> {teacher: int}."""
    out: dict[str, int] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.rpartition("=")
        if not sep or not name or not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"bad {what} override '{part}': expected TEACHER=N with N >= 1")
        out[name.strip()] = int(value)
    return out


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        return []


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def variant_scores(probs: np.ndarray, gold: np.ndarray, labels: list[str], bins: int = 10) -> dict[str, Any]:
    """Accuracy, macro-F1, ECE, mean confidence, predicted-label counts and the worst
    over-prediction ratio of answered rows."""
    ok = ~np.isnan(probs).any(axis=1)
    p, g = probs[ok], gold[ok]
    if not len(p):
        return {"n": 0, "accuracy": None, "macro_f1": None, "ece": None, "mean_confidence": None, "predicted": [0] * len(labels),
                "over_prediction": None, "over_predicted": None}
    pred = p.argmax(axis=1)
    rep = classification_report(g.tolist(), pred.tolist(), labels)
    conf = p.max(axis=1)
    over, worst = over_prediction_ratio(pred, g, len(labels))
    return {
        "n": int(len(p)),
        "accuracy": _finite(rep.accuracy),
        "macro_f1": _finite(rep.macro_f1),
        "ece": _finite(expected_calibration_error(conf, (pred == g).astype(np.float64), bins)),
        "mean_confidence": _finite(conf.mean()),
        "predicted": np.bincount(pred, minlength=len(labels)).tolist(),
        "over_prediction": _finite(over),  # None: a label predicted that never occurs in gold
        "over_predicted": labels[worst],
        "f1": rep.f1,
    }


def score_cell(test_probs: np.ndarray, gold: Sequence[int], pool_probs: np.ndarray, content_free: np.ndarray | None,
               labels: list[str], bins: int = 10) -> dict[str, Any]:
    """Every calibrator of one cell from raw answers (pure numpy; no teacher): fitted on the
    pool answers (and the content-free answer), applied to the test answers. A calibrator
    that cannot be fitted (no pool answer, no content-free answer) scores None."""
    gold = np.asarray(gold)
    out: dict[str, Any] = {}
    for name in VARIANTS:
        try:
            calibrator = fit_calibrator(name, pool_probs, content_free)
        except ValueError:
            out[name] = None
            continue
        out[name] = variant_scores(calibrator.apply(test_probs), gold, labels, bins)
        out[name]["calibrator"] = calibrator.state()
    majority = int(np.bincount(gold, minlength=len(labels)).argmax())
    maj = classification_report(gold.tolist(), [majority] * len(gold), labels)
    out["majority"] = {"label": labels[majority], "accuracy": _finite(maj.accuracy), "macro_f1": _finite(maj.macro_f1)}
    return out


def measure_cell(
    teacher: str,
    dataset: str,
    *,
    data_root: str | Path | None = None,
    test_size: int = 500,
    pool_size: int = 300,
    split_seed: int = 0,
    answers_dir: str | Path | None = None,
    cache: str | Path | None = None,
    batch_size: int = 16,
    device: str = "auto",
    speed_texts: int = 32,
    bins: int = 10,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Answers, scores and speed of one teacher on one dataset.

    Speed (``samples_per_s``) is wall-clock texts per second of the teacher's own scoring on
    this machine, texts it really scored in this run (never cache hits):

    - ``labelling run``: when this run asked the teacher for at least ``speed_texts`` texts,
      texts asked / seconds of the labelling pass (cache writes included, model load not);
    - ``timed batch``: otherwise the first ``speed_texts`` test texts are scored once more,
      straight through the teacher with no cache (after one warm-up text), and timed.
    """
    from llkd.config import TeacherConfig
    from llkd.teacher.cache import TeacherCache
    from llkd.teacher.labeling import build_teacher

    started = time.time()
    load_before = _load()
    data = load_dataset(dataset, data_root, pool_size, test_size, split_seed)
    schema = data.schema
    c = schema.num_labels
    n_pool, n_test = len(data.pool), len(data.test)

    cfg = TeacherConfig(model=teacher, calibration="none", device=device, cache=Path(cache) if cache else None, batch_size=batch_size)
    t_load = time.perf_counter()
    model = build_teacher(cfg, schema)
    load_s = time.perf_counter() - t_load
    try:
        identity = model.identity()
        # 1. committed answer files (only when made by this very teacher identity)
        pool = np.full((n_pool, c), np.nan)
        test = np.full((n_test, c), np.nan)
        from_file = 0
        if answers_dir is not None:
            path = answers_file(answers_dir, dataset, teacher)
            header, answers = read_answers(path, schema)
            if answers and file_answers_usable(header, identity):
                pool = lookup(answers, data.pool.ids, c)
                test = lookup(answers, data.test.ids, c)
                from_file = int((~np.isnan(pool).any(1)).sum() + (~np.isnan(test).any(1)).sum())
            elif answers:
                log(f"{path}: made by another teacher identity; not used")
        # 2. cache, 3. teacher: the missing texts and the content-free input
        miss_pool = np.flatnonzero(np.isnan(pool).any(1))
        miss_test = np.flatnonzero(np.isnan(test).any(1))
        ids = [data.pool.ids[i] for i in miss_pool] + [data.test.ids[i] for i in miss_test] + [CONTENT_FREE_ID]
        texts = [data.pool.texts[i] for i in miss_pool] + [data.test.texts[i] for i in miss_test] + [CONTENT_FREE]
        from llkd.teacher.labeling import label_texts

        with TeacherCache(cfg.cache_path()) as db:
            t0 = time.perf_counter()
            res = label_texts(model, texts, db, ids=ids, progress=progress, desc=f"{teacher}[{dataset}]")
            label_s = time.perf_counter() - t0
        k = len(miss_pool)
        pool[miss_pool] = res.probs[:k]
        test[miss_test] = res.probs[k : k + len(miss_test)]
        content_free = res.probs[-1]

        # speed
        if res.n_asked >= speed_texts:
            speed = {"samples_per_s": res.n_asked / label_s if label_s > 0 else None, "texts": int(res.n_asked),
                     "seconds": round(label_s, 2), "source": "labelling run"}
        else:
            batch = data.test.texts[: max(1, min(speed_texts, n_test))]
            model.score(batch[:1])  # warm-up: prompt prefix KV cache, first-call allocations
            t0 = time.perf_counter()
            model.score(batch)
            sec = time.perf_counter() - t0
            speed = {"samples_per_s": len(batch) / sec if sec > 0 else None, "texts": len(batch),
                     "seconds": round(sec, 2), "source": "timed batch"}
        speed["batch_size"] = batch_size
        speed["device"] = str(getattr(model, "device", device))
    finally:
        model.close()

    gold = np.asarray(data.test.labels)
    scores = score_cell(test, gold, pool, content_free, schema.names, bins)
    answered_pool = int((~np.isnan(pool).any(1)).sum())
    answered_test = int((~np.isnan(test).any(1)).sum())
    n_cf = 1
    return {
        "teacher": teacher,
        "dataset": dataset,
        "identity": identity,
        "labels": schema.names,
        "test_size": n_test,
        "pool_size": n_pool,
        "test_answered": answered_test,
        "pool_answered": answered_pool,
        "split_seed": split_seed,
        "test_digest": data.provenance["test_digest"],
        "pool_digest": data.provenance["pool_digest"],
        "content_free": {"text": CONTENT_FREE, "probs": [_finite(v) for v in content_free.tolist()]},
        "sources": {"answer_file": from_file, "cache": int(res.n_cached), "teacher": int(res.n_asked),
                    "texts_incl_content_free": n_pool + n_test + n_cf},
        "failures": len(res.failures),
        "scores": scores,
        "speed": speed,
        "seconds": {"model_load": round(load_s, 2), "labelling": round(label_s, 2), "total": round(time.time() - started, 2)},
        "load_avg": {"before": load_before, "after": _load()},
        "date": datetime.date.today().isoformat(),
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def _content_free_from(cache: str | Path | None, identity: str, previous: dict[str, Any] | None) -> tuple[np.ndarray | None, str]:
    """The teacher's answer on CONTENT_FREE without running it: (probs, where from)."""
    from llkd.config import TeacherConfig
    from llkd.teacher.cache import TeacherCache, text_hash

    path = Path(cache) if cache else TeacherConfig().cache_path()
    if path.exists():
        with TeacherCache(path) as db:
            hit = db.get_many(identity, [text_hash(CONTENT_FREE)]).get(text_hash(CONTENT_FREE))
        if hit is not None:
            return np.asarray(hit.probs, dtype=np.float64), "cache"
    if previous and previous.get("identity") == identity and previous.get("content_free", {}).get("probs"):
        return np.array([np.nan if v is None else v for v in previous["content_free"]["probs"]], dtype=np.float64), "earlier cell"
    return None, "none"


def measure_cell_from_answers(
    teacher: str,
    dataset: str,
    *,
    data_root: str | Path | None = None,
    test_size: int = 500,
    pool_size: int = 300,
    split_seed: int = 0,
    answers_dir: str | Path,
    cache: str | Path | None = None,
    previous: dict[str, Any] | None = None,
    bins: int = 10,
    log: Callable[[str], None] = print,
) -> dict[str, Any] | None:
    """One cell from the committed answer file alone: no teacher is built or asked, so the
    teacher identity is the file's. The content-free answer comes from the teacher cache, else
    from ``previous`` (the cell already in the results file) when that was made by the same
    identity, else contextual calibration is left out. Speed cannot be measured without the
    teacher: ``previous``'s is carried over (same identity), marked ``carried_from``.
    None when there is no answer file for the cell."""
    started = time.time()
    load_before = _load()
    data = load_dataset(dataset, data_root, pool_size, test_size, split_seed)
    schema = data.schema
    c = schema.num_labels
    path = answers_file(answers_dir, dataset, teacher)
    header, answers = read_answers(path, schema)
    if not answers:
        log(f"{teacher} / {dataset}: no answer file {path}; cell left as it is")
        return None
    identity = str(header.get("identity", ""))
    pool = lookup(answers, data.pool.ids, c)
    test = lookup(answers, data.test.ids, c)
    answered_pool = int((~np.isnan(pool).any(1)).sum())
    answered_test = int((~np.isnan(test).any(1)).sum())
    if answered_pool < len(data.pool) or answered_test < len(data.test):
        log(f"{teacher} / {dataset}: {path} answers {answered_pool} of {len(data.pool)} pool and {answered_test} of "
            f"{len(data.test)} test texts; scored on those")
    content_free, cf_source = _content_free_from(cache, identity, previous)
    if content_free is None:
        log(f"{teacher} / {dataset}: no cached answer on {CONTENT_FREE!r} for this identity; contextual calibration left out")
    same = bool(previous) and previous.get("identity") == identity and previous.get("speed", {}).get("samples_per_s") is not None
    speed = dict(previous["speed"], carried_from=previous.get("date")) if same else {"samples_per_s": None, "source": "not measured (answers only)"}
    return {
        "teacher": teacher,
        "dataset": dataset,
        "identity": identity,
        "labels": schema.names,
        "test_size": len(data.test),
        "pool_size": len(data.pool),
        "test_answered": answered_test,
        "pool_answered": answered_pool,
        "split_seed": split_seed,
        "test_digest": data.provenance["test_digest"],
        "pool_digest": data.provenance["pool_digest"],
        "content_free": {"text": CONTENT_FREE, "probs": None if content_free is None else [_finite(v) for v in content_free.tolist()],
                         "source": cf_source},
        "sources": {"answer_file": answered_pool + answered_test, "cache": int(cf_source == "cache"), "teacher": 0,
                    "texts_incl_content_free": len(data.pool) + len(data.test) + 1},
        "failures": 0,
        "scores": score_cell(test, np.asarray(data.test.labels), pool, content_free, schema.names, bins),
        "speed": speed,
        "seconds": {"model_load": 0.0, "labelling": 0.0, "total": round(time.time() - started, 2)},
        "load_avg": {"before": load_before, "after": _load()},
        "date": datetime.date.today().isoformat(),
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
    }


# -- the results file ----------------------------------------------------------------------
def empty_results() -> dict[str, Any]:
    return {"format": FORMAT, "teachers": [], "datasets": [], "cells": {}, "runs": []}


def read_results(path: str | Path | None) -> dict[str, Any]:
    if path is None or not Path(path).exists():
        return empty_results()
    obj = json.loads(Path(path).read_text())
    if obj.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file")
    for key, value in empty_results().items():
        obj.setdefault(key, value)
    for cell in obj["cells"].values():  # before 2026-12-01 "prior" named the EM now called "em"
        scores = cell.get("scores", {})
        old = scores.get("prior")
        if isinstance(old, dict) and (old.get("calibrator") or {}).get("train_prior") == "uniform":
            scores["em"] = scores.pop("prior")
    return obj


def write_results(path: str | Path, results: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(path)


def note_order(results: dict[str, Any], teachers: Sequence[str], datasets: Sequence[str]) -> None:
    """Remember every requested teacher and dataset (table rows), in first-seen order."""
    for key, names in (("teachers", teachers), ("datasets", datasets)):
        for n in names:
            if n not in results[key]:
                results[key].append(n)


# -- markdown --------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def variant(cell: dict[str, Any], name: str) -> dict[str, Any] | None:
    """A cell's scores under one calibrator (cells written before the registry call ``none`` "raw")."""
    scores = cell["scores"]
    return scores.get(name) or (scores.get("raw") if name == "none" else None)


def _ece(v: dict[str, Any] | None) -> str:
    return "–" if not v or v.get("ece") is None else f"{v['ece']:.3f}"


def _over(v: dict[str, Any] | None) -> str:
    if not v or "over_prediction" not in v or not v.get("n"):
        return "–"
    return "∞" if v["over_prediction"] is None else f"{v['over_prediction']:.2f}"


def _speed(cell: dict[str, Any]) -> str:
    s = cell.get("speed") or {}
    if s.get("samples_per_s") is None:
        return "–"
    mark = "" if s.get("source") == "labelling run" else " ᵗ"
    mark += " ᵉ" if s.get("carried_from") else ""
    return f"{s['samples_per_s']:.2f}{mark}"


def _best_variant(cell: dict[str, Any]) -> str:
    best, name = -1.0, "none"
    for v in VARIANTS:
        s = variant(cell, v)
        if s and s.get("macro_f1") is not None and s["macro_f1"] > best:
            best, name = s["macro_f1"], v
    return name


def compare_calibrators(cells: Sequence[dict[str, Any]]) -> tuple[int, dict[str, dict[str, float | int]]]:
    """Calibrators across the cells that score every one of them: (cells compared, name ->
    mean macro-F1, cells where it is best (ties count for each), mean ECE, median and max worst
    over-prediction ratio)."""
    per_cell = [{v: variant(c, v) for v in VARIANTS} for c in cells]
    full = [vs for vs in per_cell if all(s and s.get("macro_f1") is not None and "over_prediction" in s for s in vs.values())]
    out: dict[str, dict[str, float | int]] = {}
    for name in VARIANTS:
        f1 = [vs[name]["macro_f1"] for vs in full]
        ece = [vs[name]["ece"] for vs in full if vs[name]["ece"] is not None]
        over = [math.inf if vs[name]["over_prediction"] is None else vs[name]["over_prediction"] for vs in full]
        wins = sum(1 for vs in full if vs[name]["macro_f1"] >= max(s["macro_f1"] for s in vs.values()) - 1e-12)
        out[name] = {"mean_macro_f1": float(np.mean(f1)) if f1 else math.nan, "best_in": wins,
                     "mean_ece": float(np.mean(ece)) if ece else math.nan,
                     "median_over_prediction": float(np.median(over)) if over else math.nan,
                     "max_over_prediction": float(np.max(over)) if over else math.nan}
    return len(full), out


def markdown(results: dict[str, Any], title: str = "Packaged teachers on the benchmark datasets") -> str:
    """The teacher table as markdown: summary matrix, calibrator comparison, full table,
    commands, machine."""
    cells = results["cells"]
    teachers = list(results["teachers"]) + sorted({c["teacher"] for c in cells.values()} - set(results["teachers"]))
    datasets = list(results["datasets"]) + sorted({c["dataset"] for c in cells.values()} - set(results["datasets"]))
    runs = results.get("runs", [])
    dates = sorted({r.get("date", "") for r in runs if r.get("date")}) or sorted({c.get("date", "") for c in cells.values()})
    lines = [f"# {title}", ""]
    lines.append(
        "Zero-shot accuracy, macro-F1 (in %), ECE and worst over-prediction of each packaged teacher on the fixed test "
        "split of each benchmark dataset (`llkd_bench.datasets`, split seed "
        f"{', '.join(str(x) for x in sorted({c['split_seed'] for c in cells.values()})) or 0}), scored by verbalizer likelihood as in "
        "method.md section 1, raw (`none`) and under every calibrator of `llkd.teacher.calibration`, each fitted on the "
        "dataset's unlabeled pool answers only (no labels) and applied to the test answers: **mean** (divide by the pool's "
        f"mean teacher distribution), **contextual** (divide by the answer on the content-free input `{CONTENT_FREE}`), "
        "**prior** (EM re-estimate of the pool's class prior, Saerens et al. 2002, from a uniform training prior) and "
        "**balanced** (column scaling until the pool's mean calibrated distribution is uniform). ECE: expected "
        "calibration error of the max-probability confidence, 10 bins. Worst over-prediction: predicted share / true "
        "share of the test label predicted most out of proportion (1.00 = no label over-predicted). Missing cells were "
        "not run."
    )
    lines.append("")
    if dates:
        lines.append(f"Date: {', '.join(dates)}.")
    mach = next((r.get("machine") for r in reversed(runs) if r.get("machine")), None)
    if mach:
        lines.append(
            f"Machine: {mach.get('cpus')} CPU cores ({mach.get('cpu', 'unknown CPU')}), torch {mach.get('torch', '?')} "
            f"with {mach.get('torch_threads', '?')} threads, CUDA {'yes' if mach.get('cuda') else 'no'}; "
            "shared with other jobs: the load average (1/5/15 min) before and after each cell is in the JSON, its range below."
        )
    loads = [c["load_avg"]["before"][0] for c in cells.values() if c.get("load_avg", {}).get("before")]
    loads += [c["load_avg"]["after"][0] for c in cells.values() if c.get("load_avg", {}).get("after")]
    if loads:
        lines.append(f"1-minute load average during the cells: {min(loads):.1f} to {max(loads):.1f} (on {mach.get('cpus') if mach else '?'} cores).")
    lines.append("")

    # summary matrix
    lines.append("## Macro-F1 (raw → best calibrator)")
    lines.append("")
    lines.append("| teacher | " + " | ".join(datasets) + " |")
    lines.append("|---|" + "---:|" * len(datasets))
    for t in teachers:
        row = []
        for d in datasets:
            cell = cells.get(cell_key(t, d))
            if cell is None:
                row.append("not run")
                continue
            b = _best_variant(cell)
            row.append(f"{_pct(variant(cell, 'none')['macro_f1'])} → {_pct(variant(cell, b)['macro_f1'])} {b}")
        lines.append(f"| {t} | " + " | ".join(row) + " |")
    maj = []
    for d in datasets:
        cell = next((c for c in cells.values() if c["dataset"] == d), None)
        maj.append("–" if cell is None else f"{_pct(cell['scores']['majority']['macro_f1'])} (acc {_pct(cell['scores']['majority']['accuracy'])})")
    lines.append("| majority class | " + " | ".join(maj) + " |")
    lines.append("")
    lines.append(f"Each cell: raw macro-F1 → the best of {' / '.join(VARIANTS)}. The majority-class row predicts the most "
                 "frequent test label (for reference; test sizes may differ between teachers, see below).")
    lines.append("")

    # calibrators across the table
    ordered = [cells[cell_key(t, d)] for t in teachers for d in datasets if cell_key(t, d) in cells]
    n_full, comparison = compare_calibrators(ordered)
    if n_full:
        lines.append("## Calibrators across the table")
        lines.append("")
        lines.append("| calibrator | mean macro-F1 | best in | mean ECE | median worst over-prediction | max worst over-prediction |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for name, r in comparison.items():
            lines.append(f"| {name} | {_pct(r['mean_macro_f1'])} | {r['best_in']} of {n_full} | {r['mean_ece']:.3f} | "
                         f"{r['median_over_prediction']:.2f} | {r['max_over_prediction']:.2f} |")
        lines.append("")
        lines.append(f"Over the {n_full} cells that score every calibrator ({len(ordered) - n_full} left out: no content-free "
                     "answer, or measured before every calibrator was scored); \"best in\" counts ties for each.")
        lines.append("")

    # full table
    group = " / ".join(VARIANTS)
    lines.append("## All numbers")
    lines.append("")
    lines.append(f"| teacher | dataset | test n | pool n | accuracy {group} | macro-F1 {group} | ECE {group} | "
                 f"worst over-prediction {group} | samples/s |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for t in teachers:
        for d in datasets:
            cell = cells.get(cell_key(t, d))
            if cell is None:
                lines.append(f"| {t} | {d} | not run | | | | | | |")
                continue
            vs = [variant(cell, v) for v in VARIANTS]
            n_test = f"{cell['test_answered']}" + (f" of {cell['test_size']}" if cell["test_answered"] != cell["test_size"] else "")
            acc = " / ".join(_pct(v["accuracy"]) if v else "–" for v in vs)
            f1 = " / ".join(_pct(v["macro_f1"]) if v else "–" for v in vs)
            lines.append(f"| {t} | {d} | {n_test} | {cell['pool_answered']} | {acc} | {f1} | {' / '.join(_ece(v) for v in vs)} | "
                         f"{' / '.join(_over(v) for v in vs)} | {_speed(cell)} |")
    lines.append("")
    lines.append(
        "samples/s: wall-clock texts per second of the teacher's scoring on this machine (batched, prompt-prefix KV "
        "reused), measured on texts the teacher really scored in the run that produced the cell — the labelling of "
        "the texts missing from the cache, when that was at least the timing minimum (32 texts by default), else "
        "(marked ᵗ) a timed re-scoring of the first test texts after a warm-up text; ᵉ: carried over from an earlier "
        "run of the same teacher identity (a run from the answer files alone does not run the teacher). The machine "
        "was shared, so speeds are indicative, not peak."
    )
    lines.append("")

    # commands
    if runs:
        lines.append("## Commands")
        lines.append("")
        lines.append("The runs that produced these numbers (each merges its cells into the JSON; later runs replace a cell):")
        lines.append("")
        lines.append("```")
        for r in runs:
            wall = r.get("wall_s")
            extra = f"   # {r.get('date', '')}, {wall / 60:.1f} min" if wall is not None else f"   # {r.get('date', '')}"
            lines.append(f"{r['command']}{extra}")
        lines.append("```")
        lines.append("")
    return "\n".join(lines)


def write_markdown(path: str | Path, results: dict[str, Any]) -> str:
    """Write the table; hand-written notes after :data:`NOTES_MARKER` in an existing file are kept."""
    path = Path(path)
    notes = ""
    if path.exists():
        old = path.read_text(encoding="utf-8")
        if NOTES_MARKER in old:
            notes = old.split(NOTES_MARKER, 1)[1].strip("\n")
    text = markdown(results) + "\n" + NOTES_MARKER + "\n" + (("\n" + notes + "\n") if notes else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return text


def requested_cells(teachers: Sequence[str], datasets: Sequence[str]) -> list[tuple[str, str]]:
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown:
        raise ValueError(f"unknown dataset(s) {unknown}; known: {', '.join(DATASETS)}")
    return [(t, d) for t in teachers for d in datasets]
