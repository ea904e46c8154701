"""Benchmark datasets: label schemas, loaders for the shared files, and fixed pool/test splits.

Every dataset has a *train side* (where the unlabeled pool is drawn from; its gold labels
are hidden from every method except the supervised upper bound) and a *test side* (the
labelled evaluation split). The two sides never share a text: any pool text whose hash also
occurs on the test side is dropped, and so are duplicate texts within a side.

Splits are fixed by ``split_seed``: each side is shuffled once with it and the first
``pool_size`` / ``test_size`` texts are taken, so a smaller split is a prefix of a larger one
(quick mode's texts are a subset of full mode's, and share their teacher answers).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from llkd.data.errors import DataError
from llkd.data.loading import TextSet
from llkd.data.schema import LabelSchema

Record = tuple[str, str]  # (text, gold label name or alias)


def default_data_root() -> Path:
    """``$LLKD_DATA_ROOT``, else ``../shared/data`` relative to the current directory."""
    env = os.environ.get("LLKD_DATA_ROOT")
    return Path(env) if env else Path("..") / "shared" / "data"


def text_key(text: str) -> str:
    """Short stable hash of a text (first 16 hex digits of its SHA-256)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# -- file readers --------------------------------------------------------------------------
def _read(path: Path) -> str:
    if not path.exists():
        raise DataError(f"{path}: benchmark data file not found (set --data-root or LLKD_DATA_ROOT)")
    return path.read_text(encoding="utf-8")


def _csabstruct(path: Path) -> list[Record]:
    out: list[Record] = []
    for n, line in enumerate(_read(path).splitlines(), start=1):
        if not line.strip():
            continue
        obj = json.loads(line)
        if len(obj["sentences"]) != len(obj["labels"]):
            raise DataError(f"{path}: line {n}: {len(obj['sentences'])} sentences but {len(obj['labels'])} labels")
        out.extend((s, y) for s, y in zip(obj["sentences"], obj["labels"]))
    return out


def _tsv_no_header(path: Path) -> list[Record]:
    out: list[Record] = []
    for n, line in enumerate(_read(path).splitlines(), start=1):
        if not line.strip():
            continue
        text, sep, label = line.rpartition("\t")
        if not sep:
            raise DataError(f"{path}: line {n}: expected text<TAB>label")
        out.append((text, label))
    return out


def _tsv_header(path: Path, text_col: str = "sentence", label_col: str = "label") -> list[Record]:
    rows = csv.DictReader(_read(path).splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE)
    return [(r[text_col], r[label_col]) for r in rows]


def _jsonl(path: Path) -> list[Record]:
    out: list[Record] = []
    for line in _read(path).splitlines():
        if line.strip():
            obj = json.loads(line)
            out.append((obj["text"], obj["label"]))
    return out


def _semicolon(path: Path) -> list[Record]:
    lines = _read(path).splitlines()
    out: list[Record] = []
    for n, line in enumerate(lines[1:], start=2):  # header line: text;label_name
        if not line.strip():
            continue
        text, sep, label = line.rpartition(";")
        if not sep:
            raise DataError(f"{path}: line {n}: expected text;label")
        out.append((text, label))
    return out


# -- registry ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetSpec:
    name: str
    schema: dict[str, Any]  # LabelSchema.from_dict input
    train_side: Callable[[Path], list[Record]]
    test_side: Callable[[Path], list[Record]]
    files: tuple[str, ...]  # relative to the data root, for the record
    notes: str = ""
    min_words: int = 0  # pool texts shorter than this are skipped (SST-2 train holds phrases)
    shared_source: bool = False  # both sides come from one file (MAG): split it in two halves

    def label_schema(self) -> LabelSchema:
        return LabelSchema.from_dict(self.schema, source=f"bench dataset {self.name}")


def _mag_all(root: Path) -> list[Record]:
    return _jsonl(root / "mag" / "test.txt")


DATASETS: dict[str, DatasetSpec] = {}


def _register(spec: DatasetSpec) -> None:
    DATASETS[spec.name] = spec


_register(DatasetSpec(
    name="csabstruct",
    schema={
        "task": "sentence from a computer science paper abstract",
        "labels": [
            {"name": "background", "verbalizer": "Background", "description": "context, prior work or the problem being addressed"},
            {"name": "objective", "verbalizer": "Objective", "description": "the goal or contribution of this paper"},
            {"name": "method", "verbalizer": "Method", "description": "how the work was done: approach, model, experiments"},
            {"name": "result", "verbalizer": "Result", "description": "findings, numbers, conclusions"},
            {"name": "other", "verbalizer": "Other", "description": "anything else, such as code availability"},
        ],
    },
    train_side=lambda root: _csabstruct(root / "csabstruct" / "train.jsonl"),
    test_side=lambda root: _csabstruct(root / "csabstruct" / "test.jsonl"),
    files=("csabstruct/train.jsonl", "csabstruct/test.jsonl"),
    notes="sentence level: every sentence of an abstract is one text, labelled with its role",
))

_register(DatasetSpec(
    name="agnews",
    schema={  # same schema as the packaged demo, so the two share teacher answers
        "task": "news article",
        "labels": [
            {"name": "World", "description": "international news, politics, conflicts, governments"},
            {"name": "Sports", "description": "sports events, teams, players"},
            {"name": "Business", "description": "companies, markets, economy, finance"},
            {"name": "Sci/Tech", "verbalizer": "Technology", "description": "science, technology, computers, internet, space"},
        ],
    },
    train_side=lambda root: _tsv_no_header(root / "agnews" / "alps_dev.tsv"),
    test_side=lambda root: _tsv_no_header(root / "agnews" / "alps_test.tsv"),
    files=("agnews/alps_dev.tsv", "agnews/alps_test.tsv"),
    notes="pool from alps_dev.tsv (drawn from the original train set), test from alps_test.tsv (original test)",
))

_register(DatasetSpec(
    name="mag",
    schema={
        "task": "title of a scientific paper",
        "labels": [
            {"name": "business", "verbalizer": "Business", "description": "management, marketing, firms"},
            {"name": "economics", "verbalizer": "Economics", "description": "markets, prices, growth, trade, policy"},
            {"name": "geography", "verbalizer": "Geography", "description": "places, land, climate, regions"},
            {"name": "medicine", "verbalizer": "Medicine", "description": "diseases, patients, treatment"},
            {"name": "politics", "verbalizer": "Politics", "description": "government, elections, parties, law"},
            {"name": "psychology", "verbalizer": "Psychology", "description": "mind, behaviour, cognition, emotion"},
            {"name": "sociology", "verbalizer": "Sociology", "description": "society, social groups, culture"},
        ],
    },
    train_side=_mag_all,
    test_side=_mag_all,
    files=("mag/test.txt",),
    notes="no train file: test.txt is shuffled with the split seed and cut into two disjoint halves (pool side, test side)",
    shared_source=True,
))

_register(DatasetSpec(
    name="emotion",
    schema={
        "task": "tweet",
        "labels": [
            {"name": "sadness", "verbalizer": "Sadness", "description": "sad, lonely, hurt"},
            {"name": "joy", "verbalizer": "Joy", "description": "happy, glad, content"},
            {"name": "love", "verbalizer": "Love", "description": "loving, caring, affection"},
            {"name": "anger", "verbalizer": "Anger", "description": "angry, annoyed, irritated"},
            {"name": "fear", "verbalizer": "Fear", "description": "afraid, anxious, scared"},
            {"name": "surprise", "verbalizer": "Surprise", "description": "amazed, shocked, surprised"},
        ],
    },
    train_side=lambda root: _semicolon(root / "emotion" / "train.txt"),
    test_side=lambda root: _semicolon(root / "emotion" / "test.txt"),
    files=("emotion/train.txt", "emotion/test.txt"),
))

_register(DatasetSpec(
    name="sst2",
    schema={
        "task": "movie review",
        "labels": [
            {"name": "negative", "verbalizer": "Negative", "aliases": ["0"], "description": "the reviewer dislikes the movie"},
            {"name": "positive", "verbalizer": "Positive", "aliases": ["1"], "description": "the reviewer likes the movie"},
        ],
    },
    train_side=lambda root: _tsv_header(root / "sst2" / "train.tsv"),
    test_side=lambda root: _tsv_header(root / "sst2" / "test.tsv"),
    files=("sst2/train.tsv", "sst2/test.tsv"),
    notes="test = the 872-sentence labelled GLUE dev set (all of it); pool phrases under 5 words are skipped",
    min_words=5,
))


# -- splits --------------------------------------------------------------------------------
@dataclass
class BenchData:
    name: str
    schema: LabelSchema
    pool: TextSet  # labels=None: gold hidden
    pool_gold: list[int]  # only for the supervised bound and analysis
    test: TextSet
    provenance: dict[str, Any] = field(default_factory=dict)
    dev: TextSet | None = None  # gold-labelled, from the pool side: for choosing settings, never test


def _clean(records: list[Record], schema: LabelSchema, where: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    seen: set[str] = set()
    bad = 0
    for text, label in records:
        text = text.strip()
        if not text or text in seen:
            continue
        try:
            y = schema.index(label)
        except KeyError:
            bad += 1
            continue
        seen.add(text)
        out.append((text, y))
    if bad:
        raise DataError(f"{where}: {bad} rows have labels outside the schema ({', '.join(schema.names)})")
    return out


def _digest(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(text_key(t).encode())
    return h.hexdigest()[:16]


def load_dataset(name: str, data_root: str | Path | None = None, pool_size: int = 500, test_size: int = 1000, split_seed: int = 0, dev_size: int = 0) -> BenchData:
    """The fixed pool/test split of one benchmark dataset (see module doc). ``dev_size``: a
    gold-labelled dev split carved from the *end* of the shuffled train side (so pools of any
    size stay prefixes and never overlap it); settings are chosen on it, never on test."""
    if name not in DATASETS:
        raise DataError(f"unknown benchmark dataset '{name}'; known: {', '.join(DATASETS)}")
    spec = DATASETS[name]
    root = Path(data_root) if data_root is not None else default_data_root()
    schema = spec.label_schema()
    rng = np.random.default_rng(split_seed)
    if spec.shared_source:
        every = _clean(spec.train_side(root), schema, f"{name} ({root})")
        order = rng.permutation(len(every))
        half = len(every) // 2
        test_side = [every[i] for i in order[:half]]
        train_side = [every[i] for i in order[half:]]
    else:
        train_side = _clean(spec.train_side(root), schema, f"{name} train side ({root})")
        test_side = _clean(spec.test_side(root), schema, f"{name} test side ({root})")
        test_side = [test_side[i] for i in rng.permutation(len(test_side))]
        train_side = [train_side[i] for i in rng.permutation(len(train_side))]
    test_texts = {t for t, _ in test_side}
    n_train_side = len(train_side)
    train_side = [(t, y) for t, y in train_side if t not in test_texts and len(t.split()) >= spec.min_words]
    test = test_side[:test_size]
    dev = train_side[len(train_side) - dev_size :] if dev_size else []
    pool = train_side[: min(pool_size, len(train_side) - len(dev))]
    pool_set = TextSet([text_key(t) for t, _ in pool], [t for t, _ in pool], None, f"{name}:pool")
    test_set = TextSet([text_key(t) for t, _ in test], [t for t, _ in test], [y for _, y in test], f"{name}:test")
    dev_set = TextSet([text_key(t) for t, _ in dev], [t for t, _ in dev], [y for _, y in dev], f"{name}:dev") if dev else None
    provenance = {
        "dataset": name,
        "files": list(spec.files),
        "data_root": str(root),
        "split_seed": split_seed,
        "pool_size": len(pool),
        "test_size": len(test),
        "pool_requested": pool_size,
        "test_requested": test_size,
        "train_side_available": len(train_side),
        "train_side_dropped": n_train_side - len(train_side),
        "test_side_available": len(test_side),
        "pool_digest": _digest(pool_set.texts),
        "test_digest": _digest(test_set.texts),
        "dev_size": len(dev),
        "dev_digest": _digest(dev_set.texts) if dev_set else "",
        "notes": spec.notes,
    }
    return BenchData(name, schema, pool_set, [y for _, y in pool], test_set, provenance, dev_set)


# -- stress: skewed priors -----------------------------------------------------------------
def _subset(texts: TextSet, rows: np.ndarray, source: str) -> TextSet:
    labels = None if texts.labels is None else [texts.labels[i] for i in rows]
    return TextSet([texts.ids[i] for i in rows], [texts.texts[i] for i in rows], labels, source)


def long_tail_rows(gold: np.ndarray, num_classes: int, ratio: float, order: np.ndarray) -> np.ndarray:
    """Rows of a long-tailed subset: class ``order[k]`` keeps n_max * ratio^(-k / (C - 1)) of
    its rows (n_max = the smallest class count, so every class can supply its share), i.e. the
    usual exponential profile with imbalance ratio ``ratio`` (largest / smallest class). Within
    a class the first rows are kept, so the subset is fixed by the order alone."""
    gold = np.asarray(gold)
    per_class = [np.flatnonzero(gold == c) for c in range(num_classes)]
    n_max = min(len(r) for r in per_class)
    keep = []
    for rank, c in enumerate(order):
        n = max(1, int(round(n_max * ratio ** (-rank / max(num_classes - 1, 1)))))
        keep.append(per_class[int(c)][:n])
    return np.sort(np.concatenate(keep))


def carve_dev_from_pool(data: BenchData, size: int) -> BenchData:
    """The last ``size`` pool texts become the gold-labelled dev split (pool side; their
    teacher answers are the pool's), the rest stay the pool. Used where the dev split needs
    teacher answers, which the committed files hold for pool texts."""
    if not 0 < size < len(data.pool):
        raise DataError(f"{data.name}: a dev split of {size} cannot be carved from a pool of {len(data.pool)}")
    n = len(data.pool) - size
    gold = list(data.pool_gold)
    dev = TextSet(data.pool.ids[n:], data.pool.texts[n:], gold[n:], f"{data.name}:dev(pool)")
    pool = TextSet(data.pool.ids[:n], data.pool.texts[:n], None, data.pool.source)
    prov = {**data.provenance, "pool_size": n, "pool_digest": _digest(pool.texts), "dev_size": size, "dev_digest": _digest(dev.texts), "dev_from_pool": size}
    return BenchData(data.name, data.schema, pool, gold[:n], data.test, prov, dev)


def skew_pool(data: BenchData, ratio: float, head: int = 0) -> BenchData:
    """The pool (and a dev split, if any) resampled to a long-tailed prior with imbalance ratio
    ``ratio`` (:func:`long_tail_rows`): class ``head`` is the largest, the others follow in
    schema order (wrapping round), each smaller than the one before. Gold labels pick the rows:
    the benchmark builds the stress case, no method sees them. The test split keeps its own
    distribution."""
    c = data.schema.num_labels
    order = np.roll(np.arange(c), -(head % c))
    rows = long_tail_rows(np.asarray(data.pool_gold), c, ratio, order)
    pool = _subset(data.pool, rows, f"{data.pool.source}:lt{ratio:g}")
    gold = [data.pool_gold[i] for i in rows]
    dev = data.dev
    if dev is not None and dev.labels is not None:
        dev = _subset(dev, long_tail_rows(np.asarray(dev.labels), c, ratio, order), f"{dev.source}:lt{ratio:g}")
    prov = {**data.provenance, "pool_size": len(pool), "pool_digest": _digest(pool.texts), "imbalance_ratio": ratio,
            "imbalance_order": [int(k) for k in order], "pool_prior": [round(float(v), 4) for v in np.bincount(gold, minlength=c) / len(gold)]}
    if dev is not None:
        prov.update(dev_size=len(dev), dev_digest=_digest(dev.texts))
    return BenchData(data.name, data.schema, pool, gold, data.test, prov, dev)
