"""Read texts (and optional ids and gold labels) from CSV, TSV, JSONL, Parquet, a Hugging Face
dataset folder, or in-memory data (strings, records, a pandas DataFrame, a ``datasets.Dataset``).

Every problem names the file, the row (1-based, data rows; for CSV/TSV/JSONL the line number
too) and the column. All problems found are reported together, up to a limit, so a user can
fix a file in one pass.

A Hugging Face dataset is a folder written by ``Dataset.save_to_disk``; for a ``DatasetDict``
folder name the split as ``folder:split`` (or give the split's subfolder, ``folder/split``).
Reading one needs the optional ``datasets`` package (``pip install 'llkd[hf]'``).
"""

from __future__ import annotations

import hashlib

import csv
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from llkd.data.errors import DataError
from llkd.data.schema import LabelSchema

log = logging.getLogger(__name__)

MAX_REPORTED = 10
DEFAULT_ID_COLUMN = "id"  # used when no id column is named and the data has one
HF_INSTALL = "pip install 'llkd[hf]'"


@dataclass
class TextSet:
    ids: list[str]
    texts: list[str]
    labels: list[int] | None  # gold label indices, for evaluation only
    source: str = ""

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, rows: Sequence[int]) -> "TextSet":
        return TextSet(
            [self.ids[i] for i in rows],
            [self.texts[i] for i in rows],
            [self.labels[i] for i in rows] if self.labels is not None else None,
            self.source,
        )


def text_hash(text: str) -> str:
    """A text's key in every on-disk cache (teacher answers, encoder embeddings): its SHA-256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def decode_utf8(path: Path) -> str:
    """A data file's text; non-UTF-8 bytes get one line naming the line and offset."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}: line {line}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); re-encode the file as UTF-8") from e


def require_datasets(why: str) -> Any:
    """The ``datasets`` module, or a DataError that says how to install it (it is an optional,
    heavy dependency)."""
    try:
        import datasets
    except ImportError as e:
        raise DataError(f"{why} needs the Hugging Face `datasets` package: {HF_INSTALL}") from e
    return datasets


def is_dataset_folder(path: Path) -> bool:
    """A folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists())


def split_data_path(path: str | Path) -> tuple[Path, str | None]:
    """``folder:split`` -> (folder, split) when ``folder`` is a dataset folder and the whole
    string is not an existing path; any other path -> (path, None)."""
    path = Path(path)
    if path.exists():
        return path, None
    head, sep, split = str(path).rpartition(":")
    if sep and split and "/" not in split and is_dataset_folder(Path(head)):
        return Path(head), split
    return path, None


def dataset_rows(ds: Any) -> tuple[list[dict[str, Any]], list[int], list[str]]:
    """Rows of a ``datasets.Dataset``; ClassLabel columns give their label names (the schema
    speaks names, a Hub dataset stores integers), -1 (no label) gives None."""
    rows = ds.to_list()
    for name, feature in ds.features.items():
        names = getattr(feature, "names", None)
        if type(feature).__name__ == "ClassLabel" and names:
            for row in rows:
                v = row.get(name)
                row[name] = names[v] if isinstance(v, int) and 0 <= v < len(names) else None
    return rows, list(range(1, len(rows) + 1)), list(ds.column_names)


def _read_dataset_folder(path: Path, split: str | None) -> tuple[list[dict[str, Any]], list[int], list[str]]:
    datasets = require_datasets(f"{path}: reading a Hugging Face dataset folder")
    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as e:
        raise DataError(f"{path}: cannot load the dataset folder: {e}") from e
    if isinstance(ds, datasets.DatasetDict):
        splits = ", ".join(ds)
        if split is None:
            if len(ds) != 1:
                raise DataError(f"{path}: a DatasetDict with splits {splits}; name one as {path}:SPLIT")
            split = next(iter(ds))
        if split not in ds:
            raise DataError(f"{path}: no split '{split}'; splits are: {splits}")
        ds = ds[split]
    elif split is not None:
        raise DataError(f"{path}: a single Dataset has no splits; drop ':{split}'")
    return dataset_rows(ds)


def _read_rows(path: Path, split: str | None = None) -> tuple[list[dict[str, Any]], list[int], list[str]]:
    """(rows, line number of each row, column names)."""
    if is_dataset_folder(path):
        return _read_dataset_folder(path, split)
    if path.is_dir():
        raise DataError(f"{path}: a folder, but not a Hugging Face dataset (no state.json or dataset_dict.json from save_to_disk)")
    if not path.exists():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as e:  # truncated, still being written, or not Parquet
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(f"{path}: not a readable Parquet file ({reason})") from e
        rows = table.to_pylist()
        return rows, list(range(1, len(rows) + 1)), list(table.column_names)
    text = decode_utf8(path)
    if suffix in (".jsonl", ".json", ".ndjson"):
        rows, lines, columns = [], [], {}
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {n}: not valid JSON ({e.msg})") from e
            if not isinstance(obj, dict):
                raise DataError(f"{path}: line {n}: expected a JSON object per line")
            rows.append(obj)
            lines.append(n)
            columns.update(dict.fromkeys(obj))
        return rows, lines, list(columns)
    if suffix in (".csv", ".tsv", ".txt"):
        delimiter = "\t" if suffix == ".tsv" else ","
        if suffix == ".txt":
            delimiter = csv.Sniffer().sniff(text[:4096], delimiters=",\t;").delimiter
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
        rows, lines = [], []
        for row in reader:
            rows.append(row)
            lines.append(reader.line_num)
        return rows, lines, list(reader.fieldnames or [])
    raise DataError(f"{path}: unsupported format '{suffix}' (use .csv, .tsv, .jsonl, .parquet or a save_to_disk folder)")


def load_texts(
    path: str | Path,
    text_column: str = "text",
    id_column: str | None = None,
    label_column: str | None = "label",
    schema: LabelSchema | None = None,
    require_labels: bool = False,
) -> TextSet:
    """Load a file or dataset folder (``folder:split`` for a DatasetDict). Gold labels are read
    when a schema is given and ``label_column`` exists."""
    folder, split = split_data_path(path)
    rows, lines, columns = _read_rows(folder, split)
    source = f"{folder}:{split}" if split else str(folder)
    return from_records(rows, text_column, id_column, label_column, schema, require_labels, source=source, lines=lines, columns=columns)


def as_text_set(
    data: Any,
    text_column: str = "text",
    id_column: str | None = None,
    label_column: str | None = "label",
    schema: LabelSchema | None = None,
    require_labels: bool = False,
) -> TextSet:
    """Whatever a user holds, as a validated TextSet: a TextSet, a path (file or dataset folder),
    a list of strings, a list of records, a pandas DataFrame or a ``datasets.Dataset``."""
    if isinstance(data, TextSet):
        if require_labels and data.labels is None:
            raise DataError(f"{data.source or 'texts'}: gold labels are needed")
        return data
    if isinstance(data, (str, Path)):
        return load_texts(data, text_column, id_column, label_column, schema, require_labels)
    kind = type(data).__module__.split(".")[0]
    if kind == "datasets":
        if not hasattr(data, "features"):  # a DatasetDict: which split is not ours to guess
            raise DataError(f"a DatasetDict with splits {', '.join(data)}; pass one split, e.g. dd['train']")
        rows, lines, columns = dataset_rows(data)
        return from_records(rows, text_column, id_column, label_column, schema, require_labels, source="Dataset", lines=lines, columns=columns)
    if kind == "pandas" and hasattr(data, "to_dict"):
        if not hasattr(data, "columns"):  # a Series: the texts themselves
            data = data.to_frame(text_column)
        columns = [str(c) for c in data.columns]
        return from_records(data.to_dict("records"), text_column, id_column, label_column, schema, require_labels, source="DataFrame", columns=columns)
    if isinstance(data, Sequence) or hasattr(data, "__iter__"):
        items = list(data)
        if items and all(isinstance(t, str) for t in items):
            return from_records([{text_column: t} for t in items], text_column, None, None, schema, require_labels, source="texts")
        return from_records(items, text_column, id_column, label_column, schema, require_labels, source="records")
    raise DataError(f"cannot read texts from {type(data).__name__}: pass a list of strings, records, a DataFrame, a datasets.Dataset or a path")


def _default_id_column(rows: Sequence[dict[str, Any]], columns: Sequence[str], text_column: str, source: str) -> str | None:
    """The data's own ``id`` column when no id column was named (row numbers would silently
    disagree with it), unless its values cannot be ids (empty or repeated); says which."""
    if DEFAULT_ID_COLUMN not in columns or text_column == DEFAULT_ID_COLUMN:
        return None
    values = [row.get(DEFAULT_ID_COLUMN) for row in rows]
    ids = [str(v) for v in values if v is not None and str(v).strip()]
    if len(ids) != len(rows) or len(set(ids)) != len(ids):
        log.warning("%s: its '%s' column has empty or repeated values; ids are row numbers (name an id column with data.id_column)",
                    source, DEFAULT_ID_COLUMN)
        return None
    log.info("%s: ids come from its '%s' column (data.id_column names another)", source, DEFAULT_ID_COLUMN)
    return DEFAULT_ID_COLUMN


def from_records(
    records: Iterable[dict[str, Any]],
    text_column: str = "text",
    id_column: str | None = None,
    label_column: str | None = "label",
    schema: LabelSchema | None = None,
    require_labels: bool = False,
    source: str = "records",
    lines: list[int] | None = None,
    columns: list[str] | None = None,
) -> TextSet:
    """Validate records (dicts, a pandas-free list, or a Hugging Face ``datasets.Dataset``)."""
    rows = list(records)
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    if not rows:
        raise DataError(f"{source}: no rows")

    def where(i: int) -> str:
        line = f" (line {lines[i]})" if lines is not None and lines[i] != i + 1 else ""
        return f"{source}: row {i + 1}{line}"

    if id_column is None:
        id_column = _default_id_column(rows, columns, text_column, source)
    for col, role in ((text_column, "text"), (id_column, "id")):
        if col is not None and col not in columns:
            raise DataError(f"{source}: missing {role} column '{col}'; columns are: {', '.join(map(str, columns))}")
    # Gold labels are read only against a schema (they are for evaluation).
    has_labels = schema is not None and label_column is not None and label_column in columns
    if require_labels and schema is None:
        raise DataError(f"{source}: gold labels need a label schema")
    if require_labels and not has_labels:
        raise DataError(f"{source}: missing label column '{label_column}'; columns are: {', '.join(map(str, columns))}")

    problems: list[str] = []
    ids: list[str] = []
    texts: list[str] = []
    labels: list[int] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        text = row.get(text_column)
        if text is None or not isinstance(text, str) or not text.strip():
            kind = "missing" if text is None else ("not a string" if not isinstance(text, str) else "empty or whitespace-only")
            problems.append(f"{where(i)}, column '{text_column}': text is {kind}")
            text = ""
        texts.append(text)
        rid = str(row.get(id_column)) if id_column is not None else str(i)
        if id_column is not None and (row.get(id_column) is None or not rid.strip()):
            problems.append(f"{where(i)}, column '{id_column}': id is empty")
        if rid in seen:
            problems.append(f"{where(i)}, column '{id_column}': duplicate id '{rid}' (first seen at row {seen[rid] + 1})")
        else:
            seen[rid] = i
        ids.append(rid)
        if has_labels:
            assert schema is not None and label_column is not None
            value = row.get(label_column)
            try:
                labels.append(schema.index(value))
            except KeyError:
                problems.append(f"{where(i)}, column '{label_column}': label '{value}' is not in the label schema ({', '.join(schema.names)})")
                labels.append(-1)
    if problems:
        more = f"\n... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        raise DataError(f"{len(problems)} problem(s) in {source}:\n" + "\n".join(problems[:MAX_REPORTED]) + more)
    return TextSet(ids, texts, labels if has_labels else None, source)
