"""Committed teacher answers: compact per-(dataset, teacher) files so a benchmark rerun needs
no teacher.

Format: gzip JSONL. Line 1 is a header ``{"format", "dataset", "teacher", "identity",
"schema"}`` (``schema`` is the label schema's fingerprint: answers for another label set or
other verbalizers are refused). Every further line is ``{"k": <text key>, "p": [probs]}`` with
the text key of :func:`llkd_bench.datasets.text_key` and the teacher's raw (uncalibrated)
distribution over labels, rounded to 5 decimals. Files are merged on write, so exporting a
larger split adds to what is there.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from llkd.data.errors import DataError
from llkd.data.schema import LabelSchema

FORMAT = "llkd-bench-answers/1"
PACKAGED = Path(__file__).parent / "answers"


def answers_file(folder: str | Path, dataset: str, teacher: str) -> Path:
    slug = "".join(ch if ch.isalnum() or ch in "-._" else "_" for ch in teacher)
    return Path(folder) / f"{dataset}.{slug}.jsonl.gz"


def read_answers(path: str | Path, schema: LabelSchema | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(header, text key -> probs). Missing file: ({}, {})."""
    path = Path(path)
    if not path.exists():
        return {}, {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    if not lines:
        return {}, {}
    header = json.loads(lines[0])
    if header.get("format") != FORMAT:
        raise DataError(f"{path}: not a {FORMAT} file")
    if schema is not None and header.get("schema") != schema.fingerprint():
        raise DataError(f"{path}: answers were made for another label schema or verbalizers; re-export them (llkd bench --export-answers)")
    answers = {}
    for line in lines[1:]:
        row = json.loads(line)
        answers[row["k"]] = np.asarray(row["p"], dtype=np.float64)
    return header, answers


def write_answers(path: str | Path, dataset: str, teacher: str, identity: str, schema: LabelSchema, keys: Sequence[str], probs: np.ndarray) -> int:
    """Merge answers into ``path``; rows with NaN are skipped. Returns the number of answers.
    A file holds one teacher identity: answers of another identity (other weights, dtype,
    template) are replaced, not mixed in."""
    path = Path(path)
    old_header, existing = read_answers(path, schema) if path.exists() else ({}, {})
    if existing and old_header.get("identity") != identity:
        existing = {}
    for k, p in zip(keys, probs):
        if not np.isnan(p).any():
            existing[k] = np.asarray(p)
    header = {"format": FORMAT, "dataset": dataset, "teacher": teacher, "identity": identity, "schema": schema.fingerprint(), "labels": schema.names}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # mtime=0: the same answers always give the same bytes (clean diffs when re-exported)
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as gz:
        gz.write((json.dumps(header, separators=(",", ":")) + "\n").encode())
        for k in sorted(existing):
            p = [round(float(v), 5) for v in existing[k]]
            gz.write((json.dumps({"k": k, "p": p}, separators=(",", ":")) + "\n").encode())
    tmp.replace(path)
    return len(existing)


def file_answers_usable(header: dict[str, Any], identity: str | None) -> bool:
    """The one rule of both answer cascades (the benchmark's and the teacher table's): a file's
    answers stand in for the teacher unless a loaded teacher says it is another identity
    (other weights, dtype, template); then the file is left out, never mixed in."""
    return identity is None or not header or header.get("identity") == identity


def lookup(answers: dict[str, np.ndarray], keys: Sequence[str], num_labels: int) -> np.ndarray:
    """[N, C] probs for the keys; NaN rows where there is no answer."""
    out = np.full((len(keys), num_labels), np.nan)
    for i, k in enumerate(keys):
        p = answers.get(k)
        if p is not None and len(p) == num_labels:
            out[i] = p / p.sum()
    return out
