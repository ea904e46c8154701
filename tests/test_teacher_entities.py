"""The entity teacher (llkd.teacher.entities): parsing and alignment of hand-made generations,
span and outside confidences, the answer's JSON form, the prompt, the labelling loop through
the SQLite cache (resume, failures, duplicates) with a fake backend, and the real smallest
packaged teacher (SmolLM2-135M) on a few short NCBI-disease sentences."""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest

from llkd.data.entities import EntitySchema, Span
from llkd.teacher.base import TeacherAnswer, TeacherFailure
from llkd.teacher.cache import TeacherCache, text_hash
from llkd.teacher.entities import (EntityAnswer, EntityPromptTemplate, EntityTeacherBackend, Generation, ScoredSpan, format_entities,
                                   label_entities, parse_generation)

SCHEMA = EntitySchema.from_dict({"entities": [{"name": "Disease", "description": "a disease or disorder", "aliases": ["DIS"]},
                                              {"name": "Chemical", "verbalizer": "drug"}], "task": "sentence"})


def gen(*pieces: str | tuple[str, float], stop: str = "eos", end: float = 0.9) -> Generation:
    """A hand-made generation: each piece one token (text, probability; 0.8 when not given);
    with stop="eos" a zero-width end token of probability ``end`` follows."""
    reply, ends, lps = "", [], []
    for piece in pieces:
        text, prob = piece if isinstance(piece, tuple) else (piece, 0.8)
        reply += text
        ends.append(len(reply))
        lps.append(math.log(prob))
    if stop == "eos":
        ends.append(len(reply))
        lps.append(math.log(end))
    return Generation(reply, tuple(ends), tuple(lps), stop)


def lines(*rows: str, stop: str = "eos") -> Generation:
    """A reply of whole lines, one token per line (its break included)."""
    return gen(*[r + ("\n" if k < len(rows) - 1 else "") for k, r in enumerate(rows)], stop=stop)


def spans(answer: EntityAnswer) -> list[tuple[int, int, str]]:
    return [tuple(s.span) for s in answer.spans]  # type: ignore[misc]


TEXT = "Ataxia - telangiectasia ( A - T ) is a recessive disorder ."


# --------------------------------------------------------------------------- alignment


def test_exact_then_case_insensitive_then_whitespace_flexible() -> None:
    assert spans(parse_generation(TEXT, lines("Disease: Ataxia - telangiectasia"), SCHEMA)) == [(0, 23, "Disease")]
    assert spans(parse_generation(TEXT, lines("disease: ataxia - TELANGIECTASIA"), SCHEMA)) == [(0, 23, "Disease")]
    assert spans(parse_generation(TEXT, lines("Disease: ataxia-telangiectasia"), SCHEMA)) == [(0, 23, "Disease")]
    assert spans(parse_generation(TEXT, lines("Disease: A-T"), SCHEMA)) == [(26, 31, "Disease")]
    assert spans(parse_generation(TEXT, lines("Disease: ataxia telangiectasia"), SCHEMA)) == [(0, 23, "Disease")]  # a space for a hyphen
    assert parse_generation("ataxiatelangiectasia", lines("Disease: ataxia telangiectasia"), SCHEMA).dropped == 1  # but never for nothing
    # exact beats case-insensitive: "Cancer" takes the capitalised occurrence though it is not leftmost
    assert spans(parse_generation("cancer and Cancer", lines("Disease: Cancer"), SCHEMA)) == [(11, 17, "Disease")]


def test_repeated_strings_take_the_leftmost_unused_occurrence() -> None:
    text = "cancer in mice and cancer in men"
    answer = parse_generation(text, lines("Disease: cancer", "Disease: cancer", "Disease: cancer"), SCHEMA)
    assert spans(answer) == [(0, 6, "Disease"), (19, 25, "Disease")]
    assert answer.dropped == 1  # a third mention the text does not hold


def test_a_string_the_text_does_not_contain_is_dropped_and_counted() -> None:
    answer = parse_generation(TEXT, lines("Disease: leukaemia", "Disease: recessive disorder", "drug: aspirin"), SCHEMA)
    assert spans(answer) == [(39, 57, "Disease")]
    assert (answer.dropped, answer.malformed, answer.overlapping) == (2, 0, 0)


def test_a_match_never_cuts_a_word() -> None:
    answer = parse_generation("The T cell leukaemia", lines("Disease: T", "Disease: he"), SCHEMA)
    assert spans(answer) == [(4, 5, "Disease")] and answer.dropped == 1


def test_longer_strings_are_placed_first_so_a_shorter_one_finds_its_own_occurrence() -> None:
    text = "breast cancer and cancer"
    answer = parse_generation(text, lines("Disease: cancer", "Disease: breast cancer"), SCHEMA)
    assert spans(answer) == [(0, 13, "Disease"), (18, 24, "Disease")] and answer.overlapping == 0


def test_overlaps_keep_the_higher_confidence_then_the_longer_span() -> None:
    text = "breast cancer patients"
    confident_short = gen(("Disease: breast cancer\n", 0.4), ("Disease: cancer", 0.9))
    answer = parse_generation(text, confident_short, SCHEMA)
    assert spans(answer) == [(7, 13, "Disease")] and answer.overlapping == 1
    tie = gen(("Disease: cancer\n", 0.7), ("Disease: breast cancer", 0.7), end=0.7)
    assert spans(parse_generation(text, tie, SCHEMA)) == [(0, 13, "Disease")]
    # the same span with two types: the more confident type wins
    typed = gen(("drug: cancer\n", 0.6), ("Disease: cancer", 0.95))
    answer = parse_generation(text, typed, SCHEMA)
    assert spans(answer) == [(7, 13, "Disease")] and answer.overlapping == 1


def test_format_variants_are_read_and_malformed_lines_counted() -> None:
    reply = lines("Here are the entities:", "```", "- Disease: \"Ataxia - telangiectasia\"", "2. **DIS**: A - T", "Diseases: recessive disorder",
                  "Organism: mouse", "just some words", "Disease:", "```")
    answer = parse_generation(TEXT, reply, SCHEMA)
    assert spans(answer) == [(0, 23, "Disease"), (26, 31, "Disease"), (39, 57, "Disease")]
    assert answer.malformed == 4 and answer.dropped == 0  # preamble, unknown type, no colon, no words; fences are ignored


def test_several_mentions_on_one_line() -> None:
    answer = parse_generation("cancer and leukaemia", lines("Disease: cancer, leukaemia"), SCHEMA)
    assert spans(answer) == [(0, 6, "Disease"), (11, 20, "Disease")]
    assert answer.spans[0].confidence == answer.spans[1].confidence


# --------------------------------------------------------------------------- confidences


def test_span_confidence_is_the_geometric_mean_of_its_line_tokens_or_their_product() -> None:
    g = gen(("Dis", 0.9), ("ease", 0.99), (":", 0.95), (" cancer", 0.5), ("\n", 0.8), ("drug", 0.6), (": cisplatin", 0.7), end=0.3)
    text = "cancer after cisplatin"
    geo = parse_generation(text, g, SCHEMA)
    assert geo.spans[0].confidence == pytest.approx((0.9 * 0.99 * 0.95 * 0.5 * 0.8) ** (1 / 5))
    assert geo.spans[1].confidence == pytest.approx((0.6 * 0.7 * 0.3) ** (1 / 3))  # the end token closed the line
    assert geo.outside_confidence == pytest.approx(0.3)  # the model's choice to stop after the last entity
    prod = parse_generation(text, g, SCHEMA, span_confidence="product")
    assert prod.spans[0].confidence == pytest.approx(0.9 * 0.99 * 0.95 * 0.5 * 0.8)
    assert all(0 < s.confidence <= 1 for s in geo.spans + prod.spans)
    with pytest.raises(ValueError, match="span_confidence"):
        parse_generation(text, g, SCHEMA, span_confidence="max")


def test_outside_confidence() -> None:
    none = gen(("none", 0.64), end=1.0)
    answer = parse_generation(TEXT, none, SCHEMA)
    assert answer.spans == [] and answer.outside_confidence == pytest.approx(0.8)  # geometric mean of "none" and the end token
    # the first token after the last entity line, whatever it is (here the start of a remark)
    remark = gen(("Disease: A - T\n", 0.9), ("Note", 0.2), (": it is rare", 0.9))
    assert parse_generation(TEXT, remark, SCHEMA).outside_confidence == pytest.approx(0.2)
    # a blank line that ends the list
    blank = gen(("Disease: A - T", 0.9), ("\n\n", 0.7), stop="blank")
    assert parse_generation(TEXT, blank, SCHEMA).outside_confidence == pytest.approx(0.7)
    # nothing in the format: nothing is known about the O tokens (None: the student's default applies)
    assert parse_generation(TEXT, gen("I cannot help with that."), SCHEMA).outside_confidence is None


def test_a_truncated_reply_loses_its_cut_last_line_and_says_nothing_about_o_tokens() -> None:
    g = gen("Disease: Ataxia - telangiectasia\n", "Disease: recessive", stop="length")
    answer = parse_generation(TEXT, g, SCHEMA)
    assert spans(answer) == [(0, 23, "Disease")] and answer.truncated
    assert answer.malformed == 1 and answer.outside_confidence is None
    back = EntityAnswer.from_dict(json.loads(json.dumps(answer.to_dict())))  # None survives the JSON round trip
    assert back == answer and back.outside_confidence is None
    assert parse_generation(TEXT, back.generation, SCHEMA) == answer  # a cached answer re-parses the same


def test_the_answer_is_json_serialisable() -> None:
    answer = parse_generation(TEXT, gen(("Disease: A - T\n", 0.9), ("drug: none", 0.5)), SCHEMA)
    answer.prompt_tokens, answer.completion_tokens, answer.calls = 100, 3, 1
    back = EntityAnswer.from_dict(json.loads(json.dumps(answer.to_dict())))
    assert back == answer and back.generation == answer.generation and back.usage().calls == 0
    assert answer.usage().total_tokens == 103 and back.spans == [ScoredSpan(26, 31, "Disease", 0.9)]


# --------------------------------------------------------------------------- prompt


class _PlainTokenizer:
    bos_token = "<s>"


def test_the_prompt_lists_types_with_descriptions_and_examples() -> None:
    template = EntityPromptTemplate.load("completion")
    prefix, suffix = template.split(SCHEMA, _PlainTokenizer())
    assert prefix.startswith("<s>") and "- Disease: a disease or disorder" in prefix and "- drug\n" in prefix and suffix == "\nEntities:\n"
    shots = replace(template, examples=({"text": "Aspirin for migraine .", "entities": [["Chemical", "Aspirin"], ["DIS", "migraine"]]},
                                        {"text": "No entity here .", "entities": []}))
    prefix2, _ = shots.split(SCHEMA, _PlainTokenizer())
    assert "Text: Aspirin for migraine .\nEntities:\ndrug: Aspirin\nDisease: migraine\n\n" in prefix2
    assert "Text: No entity here .\nEntities:\nnone\n\n" in prefix2
    assert shots.fingerprint() != template.fingerprint() != EntityPromptTemplate.load("chat").fingerprint()
    assert format_entities(SCHEMA, []) == "none"


def test_a_bad_template_file_is_one_config_error(tmp_path: Path) -> None:
    from llkd.config import ConfigError

    bad = tmp_path / "t.yaml"
    bad.write_text("kind: chat\ninstruction: x\nbody: no text placeholder\n")
    with pytest.raises(ConfigError, match="must contain"):
        EntityPromptTemplate.load(str(bad))
    with pytest.raises(ConfigError, match="neither built in"):
        EntityPromptTemplate.load(str(tmp_path / "missing.yaml"))


# --------------------------------------------------------------------------- labelling loop (fake backend)


class FakeEntityTeacher(EntityTeacherBackend):
    """Names every capitalised word as a Disease; fails on texts holding 'FAIL'; records what
    it is asked."""

    batch_size = 2

    def __init__(self, schema: EntitySchema, version: str = "1") -> None:
        super().__init__(schema)
        self.version = version
        self.asked: list[str] = []

    def identity(self) -> str:
        return f"entities|fake|{self.version}|schema={self.schema.fingerprint()}"

    def extract(self, texts: Sequence[str]) -> list[EntityAnswer | TeacherFailure]:
        self.asked += texts
        out: list[EntityAnswer | TeacherFailure] = []
        for t in texts:
            if "FAIL" in t:
                out.append(TeacherFailure("the model said no", calls=1, prompt_tokens=5))
                continue
            rows = [f"Disease: {w}" for w in t.split() if w[:1].isupper()] or ["none"]
            answer = self.parse(t, lines(*rows))
            answer.prompt_tokens, answer.completion_tokens, answer.calls = 10, len(rows), 1
            out.append(answer)
        return out


TEXTS = ["Cancer in mice", "no entity here", "Leukaemia and Anaemia", "Cancer in mice", "FAIL please", "rare Gout"]


def test_label_entities_caches_resumes_and_records_failures(tmp_path: Path) -> None:
    teacher = FakeEntityTeacher(SCHEMA)
    with TeacherCache(tmp_path / "teacher.sqlite") as cache:
        first = label_entities(teacher, TEXTS, cache, ids=[f"t{i}" for i in range(len(TEXTS))], progress=False)
        assert teacher.asked == [TEXTS[i] for i in (0, 1, 2, 4, 5)]  # the duplicate is asked once
        assert first.n_asked == 5 and first.n_cached == 0 and set(first.failures) == {4}
        assert first.spans()[0] == [Span(0, 6, "Disease")] and first.spans()[3] == first.spans()[0] and first.spans()[4] == []
        assert first.spans()[2] == [Span(0, 9, "Disease"), Span(14, 21, "Disease")]
        assert first.answers[1] is not None and first.answers[1].outside_confidence == pytest.approx(math.sqrt(0.8 * 0.9))
        assert first.usage.calls == 5 and first.usage.prompt_tokens == 45
        assert cache.count_entity_answers(teacher.identity()) == 4 and cache.count() == 0
        assert cache.failures(teacher.identity()) == [("t4", "the model said no", 1)]
        teacher.asked.clear()
        again = label_entities(teacher, TEXTS, cache, progress=False)
        assert teacher.asked == ["FAIL please"]  # only the failure is asked again
        assert again.n_cached == 5 and again.spans() == first.spans() and again.usage.calls == 1
        assert cache.failures(teacher.identity()) == [("t4", "the model said no", 2)]
        # another schema is another teacher: nothing of the first is reused
        other = FakeEntityTeacher(EntitySchema.from_names(["Disease"]))
        assert other.identity() != teacher.identity()
        assert label_entities(other, TEXTS[:2], cache, progress=False).n_asked == 2


def test_cached_answers_are_reparsed_under_the_current_rules(tmp_path: Path) -> None:
    teacher = FakeEntityTeacher(SCHEMA)
    with TeacherCache(tmp_path / "teacher.sqlite") as cache:
        label_entities(teacher, ["Gout and Cancer"], cache, progress=False)
        teacher.span_confidence = "product"
        teacher.asked.clear()
        (answer,) = label_entities(teacher, ["Gout and Cancer"], cache, progress=False).answers
        assert teacher.asked == [] and answer is not None
        assert answer.spans[0].confidence == pytest.approx(0.8)  # one token wrote "Disease: Gout\n"
        assert answer.spans[1].confidence == pytest.approx(0.8 * 0.9)  # re-parsed: the product of its line's token and the end token


def test_entity_answers_leave_the_classification_cache_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "teacher.sqlite"
    with TeacherCache(path) as cache:  # a cache written before entity answers existed
        cache.put_many("clf", [(text_hash("a text"), "0", TeacherAnswer([0.25, 0.75], "verbalizer"))])
        assert cache.get_entity_answers("entities|x", [text_hash("a text")]) == {} and cache.count_entity_answers() == 0
    with sqlite3.connect(path) as db:
        assert "entity_answers" not in {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    with TeacherCache(path) as cache:
        label_entities(FakeEntityTeacher(SCHEMA), ["Gout"], cache, progress=False)
        assert cache.get_many("clf", [text_hash("a text")])[text_hash("a text")].probs == [0.25, 0.75]
        assert cache.count() == 1 and cache.count_entity_answers() == 1


# --------------------------------------------------------------------------- the real smallest teacher


NCBI = EntitySchema.from_dict({"entities": [{"name": "Disease", "description": "a disease, disorder or syndrome"}],
                               "task": "sentence from a biomedical abstract"})


@pytest.fixture(scope="module")
def ncbi_texts() -> list[str]:
    import importlib.util

    from llkd.data.entities import load_entities

    # conftest loaded by path: ``from conftest import`` can find benchmarks/tests/conftest.py
    spec = importlib.util.spec_from_file_location("_llkd_tests_conftest", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    path = module.shared_data_root() / "ner" / "NCBI-disease" / "test.tsv"
    if not path.exists():
        pytest.skip(f"{path} not found")
    data = load_entities(path, limit=60)
    short = sorted((t for t in data.texts if 6 <= len(t.split()) <= 14), key=len)
    return short[:5]


@pytest.fixture(scope="module")
def smollm(ncbi_texts: list[str]) -> Iterator[Any]:
    from llkd.teacher.entities import HFEntityTeacher

    t = HFEntityTeacher(NCBI, model="smollm2-135m", device="cpu", dtype="float32", batch_size=8, max_new_tokens=48)
    yield t
    t.close()


@pytest.mark.timeout(240)
def test_the_smallest_teacher_through_the_cache(smollm: Any, ncbi_texts: list[str], tmp_path: Path) -> None:
    asked: list[str] = []
    extract = smollm.extract

    def counting(texts: Sequence[str]) -> list[Any]:
        asked.extend(texts)
        return extract(texts)

    smollm.extract = counting
    try:
        with TeacherCache(tmp_path / "teacher.sqlite") as cache:
            first = label_entities(smollm, ncbi_texts, cache, progress=False)
            assert asked == ncbi_texts and not first.failures
            for text, answer in zip(ncbi_texts, first.answers):
                assert answer is not None and answer.generation is not None and answer.generation.reply
                assert all(0 <= s.start < s.end <= len(text) and text[s.start:s.end].strip() == text[s.start:s.end] for s in answer.spans)
                assert all(0 < s.confidence <= 1 for s in answer.spans) and (answer.outside_confidence is None or 0 <= answer.outside_confidence <= 1)
                assert len(answer.generation.logprobs) == answer.completion_tokens <= 48
            assert first.usage.calls == len(ncbi_texts) and first.usage.prompt_tokens > 100 * len(ncbi_texts)
            assert 0 < first.usage.completion_tokens <= 48 * len(ncbi_texts)
            asked.clear()
            again = label_entities(smollm, ncbi_texts, cache, progress=False)
            assert asked == [] and again.n_asked == 0 and again.n_cached == len(ncbi_texts)
            assert again.spans() == first.spans() and [a.outside_confidence is None for a in again.answers] == [
                a.outside_confidence is None for a in first.answers]
            assert [a.outside_confidence for a in again.answers if a.outside_confidence is not None] == pytest.approx(
                [a.outside_confidence for a in first.answers if a.outside_confidence is not None], abs=1e-5)
    finally:
        del smollm.extract


def test_the_identity_changes_with_the_schema_and_the_examples(smollm: Any) -> None:
    identity = smollm.identity()
    assert identity.startswith("entities|hf|") and "greedy" in identity and "max_new_tokens=48" in identity
    renamed = smollm.for_schema(EntitySchema.from_dict({"entities": [{"name": "Disease", "description": "an illness"}], "task": NCBI.task}))
    assert renamed.identity() != identity and renamed.model is smollm.model and renamed.prefix_ids != smollm.prefix_ids
    shots = smollm.for_schema(NCBI, examples=[{"text": "Gout .", "entities": [["Disease", "Gout"]]}])
    assert shots.identity() not in (identity, renamed.identity())
    assert smollm.for_schema(NCBI).identity() == identity


@pytest.mark.timeout(240)
def test_batched_generation_is_the_models_own_greedy_decoding(smollm: Any, ncbi_texts: list[str]) -> None:
    """Prefix KV reuse, right padding and rows leaving the batch change nothing: the padded
    row's tokens are what transformers' generate() gives for its full prompt alone, the other
    row's what it gets in a batch of its own."""
    import torch

    rows = sorted((smollm.text_token_ids(t) for t in ncbi_texts[:3]), key=len)[::2]  # the shortest (padded) and the longest
    assert len(rows[0]) < len(rows[1])
    batched = smollm.generate(rows)
    padded, lps, stop = batched[0]
    prompt = torch.tensor([smollm.prefix_ids + rows[0]])
    ref = smollm.model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=len(padded), do_sample=False)
    assert ref[0, prompt.shape[1]:].tolist() == padded
    ((alone, alone_lps, alone_stop),) = smollm.generate(rows[1:])
    assert (alone, alone_stop) == (batched[1][0], batched[1][2]) and alone_lps == pytest.approx(batched[1][1], abs=1e-4)
    assert stop in ("eos", "blank", "length") and all(lp <= 0 for lp in lps)
