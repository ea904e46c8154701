"""Hugging Face datasets in (save_to_disk folders, Dataset objects, DataFrames) and out
(pseudo-label exports), without a model."""

import sys

import numpy as np
import pytest

from llkd.data import DataError, as_text_set, load_texts
from llkd.data.export import answer_rows, write_answers

datasets = pytest.importorskip("datasets")
pd = pytest.importorskip("pandas")

NAMES = ["World", "Sports", "Business", "Sci/Tech"]


@pytest.fixture
def folders(tmp_path):
    """A Dataset folder with string labels and a DatasetDict folder whose label column is a
    ClassLabel (integers on disk, as Hub datasets store them)."""
    rows = [{"text": "Stocks rally", "label": "Business"}, {"text": "Cup final tonight", "label": "Sports"}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "one"))
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=NAMES)})
    split = datasets.Dataset.from_dict({"text": ["Peace talks resume", "New chip"], "label": [0, 3]}, features=features)
    datasets.DatasetDict({"train": split, "test": split.select([1])}).save_to_disk(str(tmp_path / "dd"))
    return tmp_path


def test_dataset_folder_and_split_forms(folders, agnews_schema):
    one = load_texts(folders / "one", schema=agnews_schema)
    assert one.texts == ["Stocks rally", "Cup final tonight"] and one.labels == [2, 1] and one.ids == ["0", "1"]
    colon = load_texts(f"{folders / 'dd'}:train", schema=agnews_schema)
    assert colon.labels == [0, 3] and colon.source.endswith("dd:train")  # ClassLabel ints -> names -> schema
    sub = load_texts(folders / "dd" / "test", schema=agnews_schema, require_labels=True)
    assert sub.texts == ["New chip"] and sub.labels == [3]


@pytest.mark.parametrize("path, message", [
    ("dd", r"a DatasetDict with splits train, test; name one as .*dd:SPLIT"),
    ("dd:dev", r"no split 'dev'; splits are: train, test"),
    ("one:train", r"a single Dataset has no splits; drop ':train'"),
    (".", r"a folder, but not a Hugging Face dataset"),
])
def test_dataset_folder_errors(folders, path, message):
    with pytest.raises(DataError, match=message):
        load_texts(folders / path if ":" not in path else f"{folders}/{path}")


def test_missing_datasets_package_says_how_to_install(folders, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(DataError, match=r"needs the Hugging Face `datasets` package: pip install 'llkd\[hf\]'"):
        load_texts(folders / "one")


def test_in_memory_inputs(agnews_schema):
    df = pd.DataFrame({"body": ["Stocks rally", "Cup final"], "label": ["Business", "Sports"]})
    ts = as_text_set(df, text_column="body", schema=agnews_schema)
    assert ts.texts == ["Stocks rally", "Cup final"] and ts.labels == [2, 1] and ts.source == "DataFrame"
    assert as_text_set(pd.Series(["a", "b"])).texts == ["a", "b"]
    assert as_text_set(["a", "b"]).ids == ["0", "1"]
    ds = datasets.Dataset.from_dict({"text": ["x"], "label": [1]}, features=datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=NAMES)}))
    assert as_text_set(ds, schema=agnews_schema).labels == [1]
    with pytest.raises(DataError, match=r"a DatasetDict with splits train; pass one split"):
        as_text_set(datasets.DatasetDict({"train": ds}))
    with pytest.raises(DataError, match=r"DataFrame: row 2, column 'text': text is not a string"):
        as_text_set(pd.DataFrame({"text": ["ok", None]}))


@pytest.mark.parametrize("name", ["answers.jsonl", "answers.parquet", "answers"])
def test_answer_export_round_trips_as_a_pool(tmp_path, name):
    probs = np.array([[0.7, 0.1, 0.1, 0.1], [np.nan] * 4])
    rows = answer_rows(["a", "b"], ["Peace talks", "Cup final"], probs, NAMES, ["verbalizer", ""], {1: "timeout"})
    fmt = write_answers(rows, tmp_path / name)
    assert fmt == {"answers.jsonl": "jsonl", "answers.parquet": "parquet", "answers": "dataset"}[name]
    back = load_texts(tmp_path / name, id_column="id", label_column=None)
    assert back.ids == ["a", "b"] and back.texts == ["Peace talks", "Cup final"]
    if fmt == "dataset":
        ds = datasets.load_from_disk(str(tmp_path / name))
        assert ds[0]["pseudo_label"] == "World" and ds[0]["probs"] == pytest.approx([0.7, 0.1, 0.1, 0.1])
        assert ds[1]["pseudo_label"] is None and ds[1]["failure"] == "timeout"
