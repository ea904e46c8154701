"""Bad input gets a clear error naming file, row and column."""

import json

import pytest

from llkd.data import DataError, LabelSchema, from_records, load_texts


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_loads_csv_tsv_jsonl_parquet(tmp_path, agnews_schema):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": "a", "text": "Stocks rally", "label": "Business"}, {"id": "b", "text": "Cup final", "label": "Sports"}]
    (tmp_path / "d.csv").write_text('id,text,label\na,"Stocks rally",Business\nb,Cup final,Sports\n', encoding="utf-8")
    (tmp_path / "d.tsv").write_text("id\ttext\tlabel\na\tStocks rally\tBusiness\nb\tCup final\tSports\n", encoding="utf-8")
    write_jsonl(tmp_path / "d.jsonl", rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    for name in ("d.csv", "d.tsv", "d.jsonl", "d.parquet"):
        ts = load_texts(tmp_path / name, id_column="id", label_column="label", schema=agnews_schema)
        assert ts.ids == ["a", "b"] and ts.texts == ["Stocks rally", "Cup final"] and ts.labels == [2, 1], name


def test_records_and_default_ids(agnews_schema):
    ts = from_records([{"text": "x"}, {"text": "y"}])
    assert ts.ids == ["0", "1"] and ts.labels is None


def test_an_id_column_is_used_when_none_is_named(tmp_path, caplog):
    """A file with an 'id' column gets its ids from it (before: row numbers, which disagreed with
    the file's own ids in exports and predictions), and the log says so; values that cannot be
    ids fall back to row numbers, with a warning."""
    import logging

    path = write_jsonl(tmp_path / "d.jsonl", [{"id": "t-7", "text": "x"}, {"id": 12, "text": "y"}])
    with caplog.at_level(logging.INFO, logger="llkd.data.loading"):
        assert load_texts(path).ids == ["t-7", "12"]
    assert "ids come from its 'id' column" in caplog.text
    assert load_texts(path, id_column="text").ids == ["x", "y"]  # a named column still wins
    assert from_records([{"id": "a", "text": "x"}, {"id": "b", "text": "y"}]).ids == ["a", "b"]
    caplog.clear()
    for bad in ([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], [{"id": "a", "text": "x"}, {"id": " ", "text": "y"}], [{"id": "a", "text": "x"}, {"text": "y"}]):
        with caplog.at_level(logging.WARNING, logger="llkd.data.loading"):
            assert from_records(bad).ids == ["0", "1"]
        assert "empty or repeated values; ids are row numbers" in caplog.text


def test_missing_column_names_file_and_columns(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"body": "x"}])
    with pytest.raises(DataError, match=r"d\.jsonl: missing text column 'text'; columns are: body"):
        load_texts(path)


def test_missing_label_column_when_required(tmp_path, agnews_schema):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "x"}])
    with pytest.raises(DataError, match="missing label column 'label'"):
        load_texts(path, schema=agnews_schema, label_column="label", require_labels=True)


def test_empty_and_whitespace_text_name_row_and_column(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "ok"}, {"text": "   "}, {"text": ""}])
    with pytest.raises(DataError) as e:
        load_texts(path)
    msg = str(e.value)
    assert "2 problem(s)" in msg
    assert "d.jsonl: row 2, column 'text': text is empty or whitespace-only" in msg
    assert "row 3, column 'text'" in msg


def test_csv_row_reports_line_number(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text\n"multi\nline"\n  \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"row 2 \(line 4\), column 'text': text is empty"):
        load_texts(path)


def test_non_utf8_bytes_name_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"text\nfine\ncaf\xe9 au lait\n")
    with pytest.raises(DataError, match=r"d\.csv: line 3: not valid UTF-8 \(byte 0xe9"):
        load_texts(path)


def test_duplicate_ids(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": 1, "text": "a"}, {"id": 2, "text": "b"}, {"id": 1, "text": "c"}])
    with pytest.raises(DataError, match=r"row 3, column 'id': duplicate id '1' \(first seen at row 1\)"):
        load_texts(path, id_column="id")


def test_unknown_gold_label(tmp_path, agnews_schema):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": "Sports"}, {"text": "b", "label": "Weather"}])
    with pytest.raises(DataError, match=r"row 2, column 'label': label 'Weather' is not in the label schema \(World, Sports, Business, Sci/Tech\)"):
        load_texts(path, schema=agnews_schema)


def test_schema_needs_two_labels(tmp_path):
    path = tmp_path / "labels.yaml"
    path.write_text("labels:\n  - only\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"labels\.yaml: a label schema needs at least 2 labels, got 1"):
        LabelSchema.from_yaml(path)


def test_schema_aliases_and_duplicate_verbalizers():
    s = LabelSchema.from_dict({"labels": [{"name": "negative", "aliases": ["0"]}, {"name": "positive", "aliases": [1]}]})
    assert s.index("0") == 0 and s.index(1) == 1
    with pytest.raises(DataError, match="share a verbalizer"):
        LabelSchema.from_dict({"labels": [{"name": "a", "verbalizer": "x"}, {"name": "b", "verbalizer": "X"}]})


def test_invalid_json_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"line 2: not valid JSON"):
        load_texts(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_texts(tmp_path / "nope.csv")


def test_schema_yaml_keeps_label_names_as_written(tmp_path):
    """YAML 1.1 reads yes/no/on as booleans and 007 as 7; label names are text."""
    path = tmp_path / "labels.yaml"
    path.write_text("labels: [yes, no, on, 007, 1.0]\n", encoding="utf-8")
    s = LabelSchema.from_yaml(path)
    assert s.names == ["yes", "no", "on", "007", "1.0"]
    assert s.index("yes") == 0 and s.index("no") == 1
    path.write_text("task: ~\nlabels:\n  - name: positive\n    aliases: pos\n    description:\n  - name: negative\n    aliases: [neg, 0]\n", encoding="utf-8")
    s = LabelSchema.from_yaml(path)
    assert s.labels[0].aliases == ("pos",)  # one alias, not the characters p, o, s
    assert s.labels[1].aliases == ("neg", "0") and s.task == "" and s.labels[0].description == ""
    assert s.index("pos") == 0 and s.index("neg") == 1


def test_folder_and_truncated_parquet_are_data_errors(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "pool.jsonl"
    folder.mkdir()
    with pytest.raises(DataError, match="a folder"):
        load_texts(folder)
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": f"row {i}"} for i in range(100)]), path)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match=r"d\.parquet: not a readable Parquet file"):
        load_texts(path)


def test_answers_export_to_csv_reads_back(tmp_path):
    """`label --export x.csv` writes CSV (it used to write JSONL under a .csv name)."""
    import csv

    import numpy as np

    from llkd.data.export import answer_rows, write_answers

    probs = np.array([[0.7, 0.3], [np.nan, np.nan]])
    rows = answer_rows(["a", "b"], ["Stocks, rally", 'say "hi"'], probs, ["up", "down"], ["verbalizer", ""], {1: "timed out"})
    path = tmp_path / "out" / "answers.csv"
    assert write_answers(rows, path) == "csv"
    with open(path, newline="", encoding="utf-8") as f:
        got = list(csv.DictReader(f))
    assert [r["id"] for r in got] == ["a", "b"] and got[0]["text"] == "Stocks, rally" and got[1]["text"] == 'say "hi"'
    assert got[0]["pseudo_label"] == "up" and json.loads(got[0]["probs"]) == [0.7, 0.3]
    assert got[1]["pseudo_label"] == "" and got[1]["failure"] == "timed out"
    assert load_texts(path, id_column="id").texts == ["Stocks, rally", 'say "hi"']  # usable as a pool
