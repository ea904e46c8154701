"""Write teacher answers (pseudo-labels) for a set of texts: JSONL, CSV, Parquet, or a Hugging
Face dataset folder (``Dataset.save_to_disk``) that ``--data-pool`` and ``datasets.load_from_disk``
read back. CSV has no lists, so its ``probs`` column holds the JSON list as text."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from llkd.data.errors import DataError
from llkd.data.loading import require_datasets

ANSWER_COLUMNS = ("id", "text", "pseudo_label", "confidence", "probs", "method", "failure")


def answer_rows(ids: Sequence[str], texts: Sequence[str], probs: np.ndarray, names: Sequence[str],
                methods: Sequence[str] | None = None, failures: Mapping[int, str] | None = None) -> list[dict[str, Any]]:
    """One row per text; a text the teacher did not answer (NaN probabilities) has no label."""
    failures = failures or {}
    rows = []
    for i, (rid, text) in enumerate(zip(ids, texts)):
        answered = not np.isnan(probs[i]).any()
        rows.append({
            "id": rid,
            "text": text,
            "pseudo_label": names[int(np.argmax(probs[i]))] if answered else None,
            "confidence": float(np.max(probs[i])) if answered else None,
            "probs": [float(p) for p in probs[i]] if answered else None,
            "method": (methods[i] if methods is not None else "") or None,
            "failure": failures.get(i),
        })
    return rows


SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}


def export_format(path: str | Path) -> str:
    """jsonl, parquet or dataset (a path without a suffix, or an existing folder); an unknown
    suffix is a DataError, raised before any teacher work is spent."""
    path = Path(path)
    if path.is_dir() or not path.suffix:
        return "dataset"
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path.name}: unknown export format '{path.suffix}'; use .jsonl, .csv, .parquet, "
                        "or a path without a suffix for a Hugging Face Dataset folder")
    return fmt


def rows_to_dataset(rows: list[dict[str, Any]]) -> Any:
    """The rows as a ``datasets.Dataset`` (``probs`` a list of floats per row)."""
    datasets = require_datasets("a Dataset export")
    features = datasets.Features({
        "id": datasets.Value("string"), "text": datasets.Value("string"), "pseudo_label": datasets.Value("string"),
        "confidence": datasets.Value("float64"), "probs": datasets.Sequence(datasets.Value("float64")),
        "method": datasets.Value("string"), "failure": datasets.Value("string"),
    })
    return datasets.Dataset.from_list(rows, features=features)


def write_answers(rows: list[dict[str, Any]], path: str | Path) -> str:
    """Write rows in the format the path asks for; returns the format written."""
    path = Path(path)
    fmt = export_format(path)
    if fmt == "dataset":
        rows_to_dataset(rows).save_to_disk(str(path))
        return fmt
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif fmt == "csv":
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else list(ANSWER_COLUMNS))
            writer.writeheader()
            for r in rows:  # None -> empty cell; the probs list as JSON text
                writer.writerow({k: ("" if v is None else json.dumps(v) if isinstance(v, list) else v) for k, v in r.items()})
    else:
        with open(path, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return fmt
