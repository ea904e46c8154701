"""Entity data (issue 21): the entity schema and its tags, CoNLL/IOB and JSONL readers, one-line
errors naming file and line, span <-> tag round trips, sub-word labels, and the real datasets."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from llkd.data.entities import (
    IGNORE_INDEX,
    EntitySchema,
    Span,
    entities_from_records,
    join_tokens,
    load_entities,
    locate_tokens,
    spans_to_tags,
    subword_labels,
    subword_spans,
    tags_to_spans,
    word_tokens,
)
from llkd.data.errors import DataError

PER_LOC = EntitySchema.from_names(["PER", "LOC"])


def write(path, text: str, encoding: str = "utf-8"):
    path.write_text(text, encoding=encoding)
    return path


def write_jsonl(path, rows):
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


def one_line_error(fn, *where: str, match: str) -> str:
    """Call ``fn``; it must raise a DataError of one line that holds each of ``where`` and
    matches ``match``."""
    with pytest.raises(DataError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg, msg
    for part in where:
        assert part in msg, msg
    assert re.search(match, msg), msg
    return msg


# --------------------------------------------------------------------------- schema


def test_schema_tags_and_lookup():
    s = EntitySchema.from_names(["person", "creative-work"])
    assert s.tags == ("O", "B-person", "I-person", "B-creative-work", "I-creative-work")
    assert s.num_tags == 5 and s.names == ["person", "creative-work"] and s.num_types == 2
    assert s.tag_index("I-creative-work") == 4 and s.tag_index("O") == 0
    with pytest.raises(KeyError):
        s.tag_index("B-place")


def test_schema_from_yaml_with_descriptions_verbalizers_aliases(tmp_path):
    path = write(tmp_path / "ents.yaml", (
        "task: biomedical abstracts\n"
        "entities:\n"
        "  - name: Disease\n    description: a disease or syndrome\n    verbalizer: disease\n    aliases: [DIS]\n"
        "  - name: Chemical\n    aliases: CHEM\n"
        "  - yes\n"))
    s = EntitySchema.from_yaml(path)
    assert s.names == ["Disease", "Chemical", "yes"]  # 'yes' stays text, not True
    assert s.canonical("DIS") == "Disease" and s.canonical("CHEM") == "Chemical"
    assert s.tag_index("B-DIS") == s.tag_index("B-Disease") == 1
    assert s.types[0].answer == "disease" and s.types[1].answer == "Chemical" and s.task == "biomedical abstracts"
    assert EntitySchema.from_dict(s.to_dict()) == s
    other = EntitySchema.from_dict({"entities": [{"name": "Disease", "description": "other"}, "Chemical", "yes"], "task": "biomedical abstracts"})
    assert s.fingerprint() != other.fingerprint() and s.fingerprint() == EntitySchema.from_dict(s.to_dict()).fingerprint()
    assert s.fingerprint() != EntitySchema.from_names(["Disease", "Chemical", "yes"]).fingerprint()


@pytest.mark.parametrize("raw, match", [
    ({"entities": []}, "at least 1 entity type"),
    ({"entities": ["New York"]}, "whitespace"),
    ({"entities": [" "]}, "blank name"),
    ({"entities": ["O"]}, "the outside tag"),
    ({"entities": ["PER", "PER"]}, "'PER' names two entity types"),
    ({"entities": [{"name": "PER", "verbalizer": "person"}, {"name": "P", "verbalizer": "Person"}]}, "share a verbalizer"),
    ({"labels": ["PER"]}, "expected an 'entities:' list"),
    ({"entities": [{"description": "x"}]}, "needs a 'name'"),
])
def test_schema_errors_are_one_line(raw, match):
    one_line_error(lambda: EntitySchema.from_dict(raw, source="s.yaml"), match=match)


def test_schema_file_errors(tmp_path):
    one_line_error(lambda: EntitySchema.from_yaml(tmp_path / "none.yaml"), "none.yaml", match="not found")
    bad = write(tmp_path / "bad.yaml", "entities: [PER\n")
    one_line_error(lambda: EntitySchema.from_yaml(bad), "bad.yaml", match=r"cannot parse entity schema: line \d+")


# --------------------------------------------------------------------------- CoNLL


CONLL = (
    "-DOCSTART-\tO\n"
    "\n"
    "John\tB-PER\n"
    "Smith\tI-PER\n"
    "visited\tO\n"
    "New\tB-LOC\n"
    "York\tI-LOC\n"
    ".\tO\n"
    "\t\n"  # a whitespace-only line ends a sentence too (WNUT-17's train file)
    "Paris\tB-LOC\n"
    "Berlin\tB-LOC\n"
)


def test_conll_reads_tokens_offsets_spans(tmp_path):
    es = load_entities(write(tmp_path / "a.conll", CONLL), PER_LOC)
    assert len(es) == 2 and es.ids == ["0", "1"] and es.repaired == 0
    assert es.texts == ["John Smith visited New York .", "Paris Berlin"]
    assert es.offsets[0][3] == (19, 22) and es.texts[0][19:22] == "New"
    assert es.spans == [[Span(0, 10, "PER"), Span(19, 27, "LOC")], [Span(0, 5, "LOC"), Span(6, 12, "LOC")]]
    assert es.tags()[0] == ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"] and es.tags()[1] == ["B-LOC", "B-LOC"]
    assert es.types == ["PER", "LOC"]
    first = es[0]
    assert first.id == "0" and first.tokens[0] == "John" and first.spans[0].type == "PER"
    sub = es.subset([1])
    assert sub.texts == ["Paris Berlin"] and sub.spans == [es.spans[1]] and len(list(sub)) == 1


def test_conll_space_columns_crlf_and_no_schema(tmp_path):
    """CoNLL-2003 style: space-separated columns, the tag last; Windows line ends."""
    text = "EU NNP B-NP B-ORG\r\nrejects VBZ B-VP O\r\nGerman JJ B-NP B-MISC\r\n\r\n"
    es = load_entities(write(tmp_path / "a.txt", text))
    assert es.texts == ["EU rejects German"] and es.spans == [[Span(0, 2, "ORG"), Span(11, 17, "MISC")]]


def test_iob1_is_read_leniently_and_counted_strict_refuses(tmp_path):
    """IOB1: I- starts an entity, B- only separates two adjacent ones of one type. Read as
    seqeval does by default (an I- that continues nothing begins an entity); strict refuses."""
    path = write(tmp_path / "iob1.tsv", "Ann\tI-PER\nBob\tB-PER\nin\tO\nRome\tI-LOC\nNice\tI-PER\n")
    es = load_entities(path, PER_LOC)
    assert es.spans == [[Span(0, 3, "PER"), Span(4, 7, "PER"), Span(11, 15, "LOC"), Span(16, 20, "PER")]]
    assert es.repaired == 3  # Ann, Rome, Nice (Nice: I-PER after LOC)
    one_line_error(lambda: load_entities(path, PER_LOC, strict_iob=True), "iob1.tsv: line 1:",
                   match=r"'I-PER' at the start of the sentence continues no entity")
    path2 = write(tmp_path / "loose.tsv", "Ann\tB-PER\nin\tO\nRome\tI-LOC\n")
    one_line_error(lambda: load_entities(path2, strict_iob=True), "loose.tsv: line 3:", match=r"'I-LOC' after 'O' continues no entity")


@pytest.mark.parametrize("body, line, match", [
    ("John\tB-PER\nSmith\tX-PER\n", 2, r"malformed tag 'X-PER'"),
    ("John\tB-\n", 1, r"tag 'B-' has no entity type"),
    ("John\tb-PER\n", 1, r"malformed tag 'b-PER'"),
    ("John\tS-PER\n", 1, r"BIOES is not read"),
    ("John\t\n", 1, r"malformed tag ''"),
    ("\n\nJohn\tB-PER\n\nAcme\tB-ORG\n", 5, r"entity type 'ORG' is not in the entity schema \(PER, LOC\)"),
    ("John\tB-PER\nSmith\n", 2, r"a token without a tag, but lines before have tags"),
    ("John\nSmith\tO\n", 2, r"a tag, but lines before have none"),
    ("\tO\n", 1, r"empty token"),
])
def test_conll_errors_name_file_and_line(tmp_path, body, line, match):
    path = write(tmp_path / "bad.conll", body)
    one_line_error(lambda: load_entities(path, PER_LOC), f"bad.conll: line {line}:", match=match)


def test_conll_file_errors(tmp_path):
    bad = tmp_path / "latin1.conll"
    bad.write_bytes("Jos\tO\n\nJos\xe9\tB-PER\n".encode("latin-1"))
    one_line_error(lambda: load_entities(bad), "latin1.conll: line 3:", match="not valid UTF-8")
    one_line_error(lambda: load_entities(write(tmp_path / "empty.conll", "\n \n")), "empty.conll", match="no sentences")
    one_line_error(lambda: load_entities(tmp_path / "missing.conll"), "missing.conll", match="file not found")
    one_line_error(lambda: load_entities(write(tmp_path / "x.csv", "a")), "x.csv", match="unsupported entity data format")


def test_conll_without_tags_is_an_unlabeled_pool(tmp_path):
    es = load_entities(write(tmp_path / "pool.conll", "John\nran\n\nHi\n"))
    assert es.spans is None and es.texts == ["John ran", "Hi"]
    with pytest.raises(DataError, match="no gold spans"):
        es.tags()


def test_conll_limit(tmp_path):
    es = load_entities(write(tmp_path / "a.conll", CONLL), limit=1)
    assert len(es) == 1


# --------------------------------------------------------------------------- JSONL


def test_jsonl_text_and_spans_tokens_split_at_span_edges(tmp_path):
    rows = [{"id": "a", "text": "Dr. Smith-Jones lives in NYC.", "spans": [{"start": 4, "end": 9, "type": "PER", "text": "Smith"},
                                                                          {"start": 25, "end": 28, "label": "LOC"}]},
            {"id": "b", "text": "nothing here", "spans": []}]
    es = load_entities(write_jsonl(tmp_path / "d.jsonl", rows), PER_LOC)
    assert es.ids == ["a", "b"] and es.spans == [[Span(4, 9, "PER"), Span(25, 28, "LOC")], []]
    assert es.tokens[0] == ["Dr", ".", "Smith", "-", "Jones", "lives", "in", "NYC", "."]
    assert tags_to_spans(es.tags()[0], es.offsets[0]) == es.spans[0]


def test_jsonl_tokens_and_tags_or_spans(tmp_path):
    rows = [{"tokens": ["Ann", "met", "Bob"], "tags": ["B-PER", "O", "B-PER"]},
            {"tokens": ["in", "Rome"], "spans": [[3, 7, "LOC"]]},
            {"text": "  Ann  met\tBob ", "tokens": ["Ann", "met", "Bob"], "tags": ["B-PER", "O", "I-PER"]}]
    es = load_entities(write_jsonl(tmp_path / "d.jsonl", rows))
    assert es.ids == ["0", "1", "2"] and es.texts[:2] == ["Ann met Bob", "in Rome"]
    assert es.spans[0] == [Span(0, 3, "PER"), Span(8, 11, "PER")] and es.spans[1] == [Span(3, 7, "LOC")]
    assert es.offsets[2] == [(2, 5), (7, 10), (11, 14)] and es.spans[2] == [Span(2, 5, "PER"), Span(11, 14, "PER")]
    assert es.repaired == 1


def test_jsonl_unlabeled_pool_and_records():
    es = entities_from_records([{"text": "Ann met Bob."}, {"tokens": ["Hi", "!"]}])
    assert es.spans is None and es.tokens == [["Ann", "met", "Bob", "."], ["Hi", "!"]] and es.texts[1] == "Hi !"


@pytest.mark.parametrize("rows, line, match", [
    ([{"text": "Ann Bob", "spans": [[0, 3, "PER"], [2, 7, "PER"]]}], 1, r"span \[0, 3\) PER 'Ann' and span \[2, 7\) PER 'n Bob' overlap"),
    ([{"text": "ok", "spans": []}, {"text": "Ann", "spans": [[0, 4, "PER"]]}], 2, r"span 1 \[0, 4\) is out of range \(the text has 3 characters"),
    ([{"text": "Ann", "spans": [[2, 2, "PER"]]}], 1, r"out of range"),
    ([{"text": "Ann", "spans": [[-1, 2, "PER"]]}], 1, r"out of range"),
    ([{"text": "Ann Bob", "spans": [{"start": 0, "end": 3, "type": "PER", "text": "Bob"}]}], 1, r"its text 'Bob' is not the text at those offsets \('Ann'\)"),
    ([{"text": "Ann Bob", "spans": [[0, 4, "PER"]]}], 1, r"starts or ends with whitespace"),
    ([{"text": "Acme", "spans": [[0, 4, "ORG"]]}], 1, r"span 1: entity type 'ORG' is not in the entity schema \(PER, LOC\)"),
    ([{"tokens": ["Acme"], "tags": ["B-ORG"]}], 1, r"token 1 'Acme': entity type 'ORG' is not in the entity schema"),
    ([{"tokens": ["Ann", "Bob"], "tags": ["B-PER", "X-PER"]}], 1, r"token 2 'Bob': malformed tag 'X-PER'"),
    ([{"tokens": ["Ann"], "tags": ["B-"]}], 1, r"token 1 'Ann': tag 'B-' has no entity type"),
    ([{"tokens": ["Ann", "Bob"], "tags": ["O"]}], 1, r"'tags' must be a list of 2 strings, one per token"),
    ([{"text": "Ann", "tags": ["B-PER"]}], 1, r"'tags' need 'tokens'"),
    ([{"tokens": ["Annabel"], "spans": [[0, 3, "PER"]]}], 1, r"span \[0, 3\) PER 'Ann' cuts a token"),
    ([{"text": "Ann", "spans": [[0, 3, "PER"]], "tags": ["B-PER"]}], 1, r"give 'spans' or 'tags', not both"),
    ([{"text": " \n "}], 1, r"text is empty or whitespace-only"),
    ([{"text": ""}], 1, r"text is empty"),
    ([{"tokens": []}], 1, r"'tokens' is empty"),
    ([{"tokens": ["a", " "]}], 1, r"token 2 is empty or whitespace-only"),
    ([{"text": 5}], 1, r"'text' is not a string"),
    ([{"body": "x"}], 1, r"no 'text' or 'tokens'"),
    ([{"text": "Ann met", "tokens": ["Ann", "Bob"]}], 1, r"token 2 'Bob' is not at character 4"),
    ([{"id": "a", "text": "x"}, {"id": "b", "text": "y"}, {"id": "a", "text": "z"}], 3, r"duplicate id 'a' \(first at line 1\)"),
    ([{"id": "a", "text": "x"}, {"text": "y"}], 2, r"id is missing or empty"),
    ([{"text": "x", "spans": []}, {"text": "y"}], 2, r"no gold 'spans' or 'tags', but other rows have them"),
    ([{"text": "Ann", "spans": [[0, "3", "PER"]]}], 1, r"start and end must be integers"),
    ([{"text": "Ann", "spans": [{"start": 0, "end": 3}]}], 1, r"span 1: no entity 'type'"),
])
def test_jsonl_errors_name_file_and_line(tmp_path, rows, line, match):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    one_line_error(lambda: load_entities(path, PER_LOC), f"bad.jsonl: line {line}:", match=match)


def test_jsonl_file_errors_and_record_rows(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"text": "a"}\n\n{"text": \n')
    one_line_error(lambda: load_entities(path), "d.jsonl: line 3:", match="not valid JSON")
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes('{"text": "a"}\n{"text": "Jos\xe9"}\n'.encode("latin-1"))
    one_line_error(lambda: load_entities(bad), "latin1.jsonl: line 2:", match="not valid UTF-8")
    one_line_error(lambda: entities_from_records([{"id": 1, "text": "a"}, {"id": "1", "text": "b"}], source="mem"),
                   "mem: row 2:", match="duplicate id '1' \\(first at row 1\\)")
    one_line_error(lambda: entities_from_records([]), match="no rows")


# --------------------------------------------------------------------------- conversions


def test_spans_tags_round_trip_on_tokens():
    tokens = ["The", "New", "York", "Times", "said", "Ann", "Lee", "Bob", "."]
    text, offsets = join_tokens(tokens)
    assert locate_tokens(text, tokens) == offsets
    spans = [Span(4, 18, "ORG"), Span(24, 31, "PER"), Span(32, 35, "PER")]  # adjacent PER entities
    tags = spans_to_tags(spans, offsets)
    assert tags == ["O", "B-ORG", "I-ORG", "I-ORG", "O", "B-PER", "I-PER", "B-PER", "O"]
    assert tags_to_spans(tags, offsets) == spans
    assert [text[s:e] for s, e, _ in spans] == ["New York Times", "Ann Lee", "Bob"]
    assert tags_to_spans(["O"] * len(tokens), offsets) == [] and spans_to_tags([], offsets) == ["O"] * len(tokens)


def test_spans_to_tags_strict_and_lenient():
    text, offsets = join_tokens(["BRCA1-associated", "protein"])
    with pytest.raises(DataError, match=r"span \[0, 5\) Gene does not start and end on token boundaries"):
        spans_to_tags([(0, 5, "Gene")], offsets)
    assert spans_to_tags([(0, 5, "Gene")], offsets, strict=False) == ["B-Gene", "O"]  # widened to the token
    assert spans_to_tags([(0, 2, "A"), (2, 5, "B")], offsets, strict=False) == ["B-A", "O"]  # a token tags once
    with pytest.raises(DataError, match="overlap"):
        spans_to_tags([(0, 5, "A"), (3, 9, "B")], offsets)
    with pytest.raises(DataError, match="3 tags for 2 tokens"):
        tags_to_spans(["O"] * 3, offsets)


def test_word_tokens_split_at_cuts():
    tokens, offsets = word_tokens("IL-2R alpha", cuts=[3, 4])
    assert tokens == ["IL", "-", "2", "R", "alpha"] and offsets[2] == (3, 4)


# --------------------------------------------------------------------------- sub-words

TEXT = "John Smithson lives in New York"
#             [CLS]   John    Smith    ##son     lives     in        New       York      [SEP]
WORDPIECE = [(0, 0), (0, 4), (5, 10), (10, 13), (14, 19), (20, 22), (23, 26), (27, 31), (0, 0)]
# a byte-level BPE tokenizer without trimmed offsets counts the space before a word in it
BPE = [(0, 0), (0, 4), (4, 10), (10, 13), (13, 19), (19, 22), (22, 26), (26, 31), (0, 0)]
GOLD = [Span(0, 13, "PER"), Span(23, 31, "LOC")]


def ids(*tags):
    return [IGNORE_INDEX if t == -100 else PER_LOC.tag_index(t) for t in tags]


@pytest.mark.parametrize("offsets", [WORDPIECE, BPE])
def test_subword_labels_first_subword_and_rest(offsets):
    labels = subword_labels(TEXT, GOLD, offsets, PER_LOC)
    assert labels == ids(-100, "B-PER", "I-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", -100)
    ignored = subword_labels(TEXT, GOLD, offsets, PER_LOC, rest="ignore")
    assert ignored == ids(-100, "B-PER", "I-PER", -100, "O", "O", "B-LOC", "I-LOC", -100)
    assert subword_spans(TEXT, labels, offsets, PER_LOC) == GOLD
    assert subword_spans(TEXT, ignored, offsets, PER_LOC) == GOLD
    # a model trained with rest="ignore" predicts on every sub-word; only word starts count
    predicted = ids("O", "B-PER", "I-PER", "B-LOC", "O", "O", "B-LOC", "I-LOC", "O")
    assert subword_spans(TEXT, predicted, offsets, PER_LOC, first_only=True) == GOLD
    assert subword_spans(TEXT, predicted, offsets, PER_LOC)[1] == Span(10, 13, "LOC")


def test_subword_labels_entity_edges_inside_a_word():
    text = "BRCA1-associated"
    offsets = [(0, 2), (2, 5), (5, 6), (6, 16)]  # BR ##CA1 ##- ##associated
    gene = EntitySchema.from_names(["Gene"])
    spans = [Span(0, 5, "Gene")]
    labels = subword_labels(text, spans, offsets, gene, rest="ignore")
    assert labels == [1, IGNORE_INDEX, 0, IGNORE_INDEX]  # the O after the entity is kept: it ends it
    assert subword_spans(text, labels, offsets, gene) == spans
    # a span edge inside a sub-word widens to the sub-word
    assert subword_spans(text, subword_labels(text, [Span(0, 4, "Gene")], offsets, gene), offsets, gene) == spans
    # truncation: a span past the last sub-word is not labelled
    assert subword_labels(text, [Span(6, 16, "Gene")], offsets[:2], gene) == [0, 0]


def test_subword_errors():
    with pytest.raises(DataError, match="offset_mapping does not fit the text"):
        subword_labels("abc", [], [(0, 9)], PER_LOC)
    with pytest.raises(DataError, match="entity type 'ORG' is not in the entity schema"):
        subword_labels(TEXT, [Span(0, 4, "ORG")], WORDPIECE, PER_LOC)
    with pytest.raises(ValueError, match="rest must be"):
        subword_labels(TEXT, GOLD, WORDPIECE, PER_LOC, rest="drop")
    with pytest.raises(DataError, match="label 9 is not a tag index"):
        subword_spans(TEXT, [9] * len(WORDPIECE), WORDPIECE, PER_LOC)


# --------------------------------------------------------------------------- the real datasets


def raw_sentences(path, limit):
    """The file's own (token, tag) sentences, read without the library."""
    out, cur = [], []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            if cur:
                out.append(cur)
                cur = []
            if len(out) == limit:
                break
            continue
        cols = line.rstrip("\r").split("\t")
        cur.append((cols[0], cols[-1]))
    if cur and len(out) < limit:
        out.append(cur)
    return out


def shared_data_root() -> Path:
    """conftest.shared_data_root, loaded by path: ``from conftest import`` would get
    benchmarks/tests/conftest.py when that was collected first."""
    spec = importlib.util.spec_from_file_location("_llkd_tests_conftest", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.shared_data_root()


NER_SETS = {"NCBI-disease": ["Disease"], "BC5CDR": ["Chemical", "Disease"],
            "wnut17": ["person", "location", "group", "creative-work", "corporation", "product"]}


@pytest.mark.parametrize("name", sorted(NER_SETS))
def test_real_datasets_round_trip(name):
    folder = shared_data_root() / "ner" / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    schema = EntitySchema.from_names(NER_SETS[name])
    files = sorted(p for p in folder.iterdir() if p.suffix in (".tsv", ".conll"))
    assert files
    for path in files:
        es = load_entities(path, schema, strict_iob=True, limit=200)  # these files are clean IOB2
        raw = raw_sentences(path, 200)
        assert len(es) == len(raw) == 200, path
        for i, sentence in enumerate(raw):
            tokens, tags = [t for t, _ in sentence], [g for _, g in sentence]
            assert es.tokens[i] == tokens and es.texts[i] == " ".join(tokens)
            assert [es.texts[i][s:e] for s, e in es.offsets[i]] == tokens
            assert spans_to_tags(es.spans[i], es.offsets[i]) == tags, (path, i)
            assert tags_to_spans(tags, es.offsets[i]) == es.spans[i]
            # the spans as JSONL records read back to the same spans
            again = entities_from_records([{"text": es.texts[i], "spans": [list(s) for s in es.spans[i]]}], schema)
            assert again.spans[0] == es.spans[i]
        assert set(es.types) <= set(NER_SETS[name]) and sum(map(len, es.spans)) > 0
