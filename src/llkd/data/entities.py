"""Entity data (named-entity recognition): the entity schema and its BIO tag set, validated
sentences with tokens, character offsets and gold spans, the CoNLL/IOB and JSONL readers, and
the conversions between spans, word-level BIO tags and a sub-word tokenizer's labels.

Conventions (one place, so the teacher, the student and the metrics agree):

* A span is ``Span(start, end, type)`` in characters of the text, ``end`` exclusive, ``type``
  the schema's canonical name. Spans of one text never overlap (BIO cannot tag nested
  entities); the readers refuse overlapping gold.
* A text rebuilt from tokens joins them with single spaces; token ``k`` is
  ``text[offsets[k][0]:offsets[k][1]]``.
* Tags are IOB2 (``O``, ``B-X``, ``I-X``). Reading is lenient by default, as seqeval's default
  and conlleval: an ``I-X`` that continues nothing (after ``O``, at the start, or after another
  type) begins an entity, as if it were ``B-X``. That reads IOB1 files correctly too; each such
  repair is counted (``EntitySet.repaired``, logged). ``strict_iob=True`` refuses them instead
  (file and line named). BIOES tags (``E-``, ``S-``) are not read.
* Sub-word labels (:func:`subword_labels`): the first sub-word of an entity gets ``B-X``, the
  first sub-word of each further word ``I-X``, outside words ``O``. The other sub-words of a
  word get the same label run (``I-X`` or ``O``, ``rest="label"``, the default) or the ignore
  index (-100, ``rest="ignore"``: the Hugging Face token-classification recipe). A word is
  what whitespace delimits in the text.

Every problem is a one-line :class:`DataError` naming the file and line (or the record).
"""

from __future__ import annotations

import bisect
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import yaml

from llkd.data.errors import DataError
from llkd.data.loading import decode_utf8
from llkd.data.schema import _SchemaLoader  # scalars kept as written (a type named "yes" stays text)
from llkd.errors import yaml_problem

log = logging.getLogger(__name__)

OUTSIDE = "O"
IGNORE_INDEX = -100
DOCSTART = "-DOCSTART-"  # CoNLL-2003's document marker: a sentence break, not a token
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
CONLL_SUFFIXES = (".conll", ".tsv", ".iob", ".iob2", ".bio", ".txt")
_WORD = re.compile(r"\w+|[^\w\s]")  # words, and each other non-space character alone
_SNIPPET = 40

Offsets = list[tuple[int, int]]


class Span(NamedTuple):
    start: int
    end: int
    type: str


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class EntityType:
    name: str
    description: str = ""
    verbalizer: str = ""  # the words the teacher uses for this type; defaults to the name
    aliases: tuple[str, ...] = ()  # other spellings in gold tags and spans (e.g. "PER")

    @property
    def answer(self) -> str:
        return self.verbalizer or self.name


@dataclass(frozen=True)
class EntitySchema:
    """Entity types and the BIO tag set derived from them: ``O``, then ``B-X``, ``I-X`` per type
    in schema order (tag index = position in :attr:`tags`)."""

    types: tuple[EntityType, ...]
    task: str = ""  # one line saying what the texts are, used in the prompt
    _index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    _tags: tuple[str, ...] = field(default=(), compare=False, repr=False)
    _tag_index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.types:
            raise DataError("an entity schema needs at least 1 entity type")
        index: dict[str, int] = {}
        for i, t in enumerate(self.types):
            # The name is written into tags (B-name) and CoNLL columns: no blanks, no whitespace.
            if not t.name.strip() or any(ch.isspace() for ch in t.name):
                raise DataError(f"entity schema: type {i + 1} has a blank name or one with whitespace ({t.name!r}); it is written in tags as B-NAME")
            if t.name == OUTSIDE:
                raise DataError(f"entity schema: type {i + 1} is named '{OUTSIDE}', the outside tag")
            if t.verbalizer and not t.verbalizer.strip():
                raise DataError(f"entity schema: type {i + 1} ('{t.name}') has a blank verbalizer ({t.verbalizer!r}); leave it out to use the name")
            for key in (t.name, *t.aliases):
                if key in index and index[key] != i:
                    raise DataError(f"entity schema: '{key}' names two entity types")
                index[key] = i
        answers = [t.answer.strip().lower() for t in self.types]
        if len(set(answers)) != len(answers):
            raise DataError("entity schema: two entity types share a verbalizer; the teacher could not tell them apart")
        tags = (OUTSIDE, *(f"{p}-{t.name}" for t in self.types for p in ("B", "I")))
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_tags", tags)
        object.__setattr__(self, "_tag_index", {tag: k for k, tag in enumerate(tags)})

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.types]

    @property
    def num_types(self) -> int:
        return len(self.types)

    @property
    def tags(self) -> tuple[str, ...]:
        return self._tags

    @property
    def num_tags(self) -> int:
        return len(self._tags)

    def index(self, value: Any) -> int:
        """Type index of a name or alias; KeyError if unknown."""
        return self._index[str(value).strip()]

    def canonical(self, value: Any) -> str:
        """The schema's name for a type name or alias; KeyError if unknown."""
        return self.types[self.index(value)].name

    def tag_index(self, tag: str) -> int:
        """Index of a BIO tag in :attr:`tags` (aliases allowed: ``B-PER`` for type ``person``
        with alias ``PER``); KeyError if unknown or malformed."""
        if tag in self._tag_index:
            return self._tag_index[tag]
        prefix, sep, name = tag.partition("-")
        if not sep or prefix not in ("B", "I"):
            raise KeyError(tag)
        return self._tag_index[f"{prefix}-{self.canonical(name)}"]

    def fingerprint(self) -> str:
        return "entities|" + "|".join(f"{t.name}={t.answer}:{t.description}" for t in self.types) + f"#{self.task}"

    @classmethod
    def from_names(cls, names: Sequence[str], task: str = "") -> "EntitySchema":
        return cls(tuple(EntityType(str(n)) for n in names), task=task)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "EntitySchema":
        """``entities:`` a list of names or of {name, description, verbalizer, aliases};
        optional ``task:``."""
        path = Path(path)
        try:
            raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_SchemaLoader)  # noqa: S506 - a SafeLoader subclass
        except FileNotFoundError as e:
            raise DataError(f"{path}: entity schema file not found") from e
        except IsADirectoryError as e:
            raise DataError(f"{path}: a folder, not an entity schema file") from e
        except yaml.YAMLError as e:
            raise DataError(f"{path}: cannot parse entity schema: {yaml_problem(e)}") from e
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: cannot parse entity schema: {e}") from e
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: Any, source: str = "entity schema") -> "EntitySchema":
        if isinstance(raw, list):
            raw = {"entities": raw}
        if not isinstance(raw, dict) or not isinstance(raw.get("entities"), list):
            raise DataError(f"{source}: expected an 'entities:' list")
        types = []
        for i, item in enumerate(raw["entities"]):
            if isinstance(item, (str, int)):
                types.append(EntityType(str(item)))
            elif isinstance(item, dict) and item.get("name") is not None:
                aliases = item.get("aliases") or []
                if isinstance(aliases, (str, int, float)):
                    aliases = [aliases]
                if not isinstance(aliases, list):
                    raise DataError(f"{source}: entity type {i + 1} ('{item['name']}'): aliases must be a list of strings")
                types.append(EntityType(str(item["name"]), str(item.get("description") or ""),
                                        str(item.get("verbalizer") or ""), tuple(str(a) for a in aliases)))
            else:
                raise DataError(f"{source}: entity type {i + 1} needs a 'name'")
        try:
            return cls(tuple(types), task=str(raw.get("task") or ""))
        except DataError as e:
            raise DataError(f"{source}: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"entities": []}
        if self.task:
            out["task"] = self.task
        for t in self.types:
            item: dict[str, Any] = {"name": t.name}
            if t.description:
                item["description"] = t.description
            if t.verbalizer:
                item["verbalizer"] = t.verbalizer
            if t.aliases:
                item["aliases"] = list(t.aliases)
            out["entities"].append(item)
        return out


# --------------------------------------------------------------------------- containers


@dataclass(frozen=True)
class EntityText:
    id: str
    text: str
    tokens: list[str]
    offsets: Offsets
    spans: list[Span] | None  # None: unlabeled


@dataclass
class EntitySet:
    """Texts with their tokens, character offsets per token and gold spans (None for an
    unlabeled pool). Gold spans are for evaluation and the supervised bound only."""

    ids: list[str]
    texts: list[str]
    tokens: list[list[str]]
    offsets: list[Offsets]
    spans: list[list[Span]] | None
    source: str = ""
    repaired: int = 0  # I- tags that began an entity and were read as B- (lenient IOB)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> EntityText:
        return EntityText(self.ids[i], self.texts[i], self.tokens[i], self.offsets[i],
                          self.spans[i] if self.spans is not None else None)

    def __iter__(self) -> Iterator[EntityText]:
        return (self[i] for i in range(len(self)))

    def subset(self, rows: Sequence[int]) -> "EntitySet":
        return EntitySet(
            [self.ids[i] for i in rows],
            [self.texts[i] for i in rows],
            [self.tokens[i] for i in rows],
            [self.offsets[i] for i in rows],
            [self.spans[i] for i in rows] if self.spans is not None else None,
            self.source,
        )

    @property
    def types(self) -> list[str]:
        """Entity types in the gold spans, in order of first appearance."""
        return list(dict.fromkeys(s.type for spans in (self.spans or []) for s in spans))

    def tags(self) -> list[list[str]]:
        """Gold IOB2 tags on each text's tokens."""
        if self.spans is None:
            raise DataError(f"{self.source or 'entity texts'}: no gold spans")
        return [spans_to_tags(s, o) for s, o in zip(self.spans, self.offsets)]


# --------------------------------------------------------------------------- tokens and tags


def join_tokens(tokens: Sequence[str]) -> tuple[str, Offsets]:
    """The text of tokens joined by single spaces, and each token's (start, end) in it."""
    offsets, pos = [], 0
    for tok in tokens:
        offsets.append((pos, pos + len(tok)))
        pos += len(tok) + 1
    return " ".join(tokens), offsets


def word_tokens(text: str, cuts: Sequence[int] = ()) -> tuple[list[str], Offsets]:
    """Words (``\\w+``) and single other non-space characters of ``text``, also split at each
    character position in ``cuts`` (span edges, so gold spans fall on token boundaries)."""
    cut = sorted(set(cuts))
    tokens, offsets = [], []
    for m in _WORD.finditer(text):
        start, end = m.span()
        k = bisect.bisect_right(cut, start)
        while k < len(cut) and cut[k] < end:
            tokens.append(text[start:cut[k]])
            offsets.append((start, cut[k]))
            start, k = cut[k], k + 1
        tokens.append(text[start:end])
        offsets.append((start, end))
    return tokens, offsets


def locate_tokens(text: str, tokens: Sequence[str]) -> Offsets:
    """Offsets of ``tokens`` found in order in ``text``, with only whitespace between them."""
    offsets, pos = [], 0
    for k, tok in enumerate(tokens):
        while pos < len(text) and text[pos].isspace() and not text.startswith(tok, pos):
            pos += 1
        if not text.startswith(tok, pos):
            raise DataError(f"token {k + 1} {_snip(tok)} is not at character {pos} of the text ({_snip(text[pos:pos + _SNIPPET])} is)")
        offsets.append((pos, pos + len(tok)))
        pos += len(tok)
    if text[pos:].strip():
        raise DataError(f"the text goes on after the last token: {_snip(text[pos:])}")
    return offsets


class TagError(DataError):
    """A tag problem at token ``index`` (0-based), so a reader can name the line."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


def parse_tag(tag: str) -> tuple[str, str | None]:
    """``'O'`` -> ('O', None), ``'B-X'`` -> ('B', 'X'), ``'I-X'`` -> ('I', 'X'); DataError
    for anything else (the type may hold hyphens: ``B-creative-work``)."""
    if tag == OUTSIDE:
        return OUTSIDE, None
    prefix, sep, typ = tag.partition("-")
    if not sep or prefix not in ("B", "I"):
        raise DataError(f"malformed tag {tag!r} (expected O, B-TYPE or I-TYPE; BIOES is not read)")
    if not typ.strip():
        raise DataError(f"tag {tag!r} has no entity type")
    return prefix, typ


def decode_tags(tags: Sequence[str], strict: bool = False) -> tuple[list[tuple[int, int, str]], int]:
    """Entities of a tag sequence as (first token, last token + 1, type), and how many ``I-``
    tags began one (read as ``B-``; with ``strict`` a TagError instead)."""
    found: list[tuple[int, int, str]] = []
    repaired, first, current = 0, -1, None
    for j, tag in enumerate(tags):
        try:
            prefix, typ = parse_tag(tag)
        except DataError as e:
            raise TagError(j, str(e)) from None
        if prefix == "I" and typ == current:
            continue
        if current is not None:
            found.append((first, j, current))
            current = None
        if prefix == OUTSIDE:
            continue
        if prefix == "I":
            if strict:
                before = f"after {tags[j - 1]!r}" if j else "at the start of the sentence"
                raise TagError(j, f"tag {tag!r} {before} continues no entity (strict IOB2 starts one with B-{typ}; strict_iob=False reads it as B-{typ})")
            repaired += 1
        first, current = j, typ
    if current is not None:
        found.append((first, len(tags), current))
    return found, repaired


def tags_to_spans(tags: Sequence[str], offsets: Sequence[tuple[int, int]], strict: bool = False) -> list[Span]:
    """Character spans of IOB tags on tokens at ``offsets`` (lenient IOB unless ``strict``)."""
    if len(tags) != len(offsets):
        raise DataError(f"{len(tags)} tags for {len(offsets)} tokens")
    found, _ = decode_tags(tags, strict)
    return [Span(offsets[a][0], offsets[b - 1][1], typ) for a, b, typ in found]


def sorted_spans(spans: Sequence[Sequence[Any]], text: str | None = None) -> list[Span]:
    """Spans as :class:`Span`, sorted; DataError if two overlap (BIO cannot tag them)."""
    out = sorted(Span(int(s), int(e), str(t)) for s, e, t in spans)
    for a, b in zip(out, out[1:]):
        if b.start < a.end:
            raise DataError(f"{_show(a, text)} and {_show(b, text)} overlap (nested or overlapping entities cannot be BIO-tagged)")
    return out


def spans_to_tags(spans: Sequence[Sequence[Any]], offsets: Sequence[tuple[int, int]], strict: bool = True) -> list[str]:
    """IOB2 tags on tokens at ``offsets`` (sorted, not overlapping) for character spans.
    ``strict``: each span must start at a token's start and end at a token's end (DataError
    otherwise). Not strict: a span tags every token it overlaps, tokens a span before it
    already tagged excepted (a span left with no token is dropped)."""
    tags = [OUTSIDE] * len(offsets)
    ends = [e for _, e in offsets]
    for span in sorted_spans(spans):
        j = bisect.bisect_right(ends, span.start)  # first token ending after the span's start
        covered = []
        while j < len(offsets) and offsets[j][0] < span.end:
            covered.append(j)
            j += 1
        if strict and (not covered or offsets[covered[0]][0] != span.start or offsets[covered[-1]][1] != span.end):
            raise DataError(f"{_show(span)} does not start and end on token boundaries")
        covered = [j for j in covered if tags[j] == OUTSIDE]
        for k, j in enumerate(covered):
            tags[j] = f"{'B' if k == 0 else 'I'}-{span.type}"
    return tags


# --------------------------------------------------------------------------- sub-words


def _pieces(text: str, offset_mapping: Any) -> list[tuple[int, int] | None]:
    """Each sub-word's character range with surrounding whitespace trimmed (some tokenizers
    count the space before a word in it); None for special tokens and whitespace pieces."""
    out: list[tuple[int, int] | None] = []
    for k, pair in enumerate(offset_mapping):
        s, e = int(pair[0]), int(pair[1])
        if not 0 <= s <= e <= len(text):
            raise DataError(f"offset_mapping does not fit the text: sub-word {k} is ({s}, {e}), the text has {len(text)} characters")
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        out.append((s, e) if e > s else None)
    return out


def _starts_word(text: str, piece: tuple[int, int]) -> bool:
    return piece[0] == 0 or text[piece[0] - 1].isspace()


def subword_labels(text: str, spans: Sequence[Sequence[Any]], offset_mapping: Any, schema: EntitySchema,
                   rest: str = "label", ignore_index: int = IGNORE_INDEX) -> list[int]:
    """Tag indices (``schema.tags``) for a Hugging Face fast tokenizer's ``offset_mapping`` of
    ``text`` (one text; special tokens, at (0, 0), get ``ignore_index``). A sub-word that
    overlaps a span takes its label, so a span edge inside a sub-word widens to it. The other
    sub-words of a word get the same run's label (``rest="label"``) or ``ignore_index``
    (``rest="ignore"``), except where an entity begins or ends inside the word."""
    if rest not in ("label", "ignore"):
        raise ValueError(f"rest must be 'label' or 'ignore', not {rest!r}")
    try:
        spans = [s._replace(type=_canonical_type(s.type, schema)) for s in sorted_spans(spans, text)]
    except DataError as e:
        raise DataError(f"subword_labels: {e}") from None
    ends = [s.end for s in spans]
    labels, previous = [], -1  # the span (index; -1 outside) of the last sub-word with text
    for piece in _pieces(text, offset_mapping):
        if piece is None:
            labels.append(ignore_index)
            continue
        j = bisect.bisect_right(ends, piece[0])
        owner = j if j < len(spans) and spans[j].start < piece[1] else -1
        if rest == "ignore" and owner == previous and not _starts_word(text, piece):
            labels.append(ignore_index)
        elif owner < 0:
            labels.append(0)
        else:
            labels.append(schema.tag_index(f"{'I' if owner == previous else 'B'}-{spans[owner].type}"))
        previous = owner
    return labels


def subword_spans(text: str, labels: Sequence[int], offset_mapping: Any, schema: EntitySchema,
                  first_only: bool = False, ignore_index: int = IGNORE_INDEX) -> list[Span]:
    """Character spans from sub-word tag indices (predicted or from :func:`subword_labels`).
    A sub-word labelled ``ignore_index`` -- or, with ``first_only`` (a model trained with
    ``rest="ignore"``), any sub-word that does not begin a word -- continues the label before
    it. Decoding is lenient IOB."""
    pieces = _pieces(text, offset_mapping)
    if len(labels) < len(pieces):
        raise DataError(f"{len(labels)} labels for {len(pieces)} sub-words")
    tags, offsets, previous = [], [], OUTSIDE
    for piece, label in zip(pieces, labels):
        if piece is None:
            continue
        label = int(label)
        if label == ignore_index or (first_only and not _starts_word(text, piece)):
            tag = OUTSIDE if previous == OUTSIDE else "I-" + previous[2:]
        elif 0 <= label < schema.num_tags:
            tag = schema.tags[label]
        else:
            raise DataError(f"label {label} is not a tag index (the schema has {schema.num_tags} tags)")
        tags.append(tag)
        offsets.append(piece)
        previous = tag
    return tags_to_spans(tags, offsets)


# --------------------------------------------------------------------------- readers


def _snip(s: str) -> str:
    return repr(s if len(s) <= _SNIPPET else s[:_SNIPPET] + "...")


def _show(span: Span, text: str | None = None) -> str:
    covered = f" {_snip(text[span.start:span.end])}" if text is not None else ""
    return f"span [{span.start}, {span.end}) {span.type}{covered}"


def _decode_file(path: Path) -> str:
    if path.is_dir():
        raise DataError(f"{path}: a folder, not an entity data file")
    if not path.exists():
        raise DataError(f"{path}: file not found")
    return decode_utf8(path)


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) split on newlines only (str.splitlines also splits on U+2028,
    form feeds and other characters a token may hold)."""
    for n, line in enumerate(text.split("\n"), start=1):
        yield n, line.rstrip("\r")


def _canonical_type(typ: str, schema: EntitySchema | None) -> str:
    if schema is None:
        return typ
    try:
        return schema.canonical(typ)
    except KeyError:
        raise DataError(f"entity type '{typ}' is not in the entity schema ({', '.join(schema.names)})") from None


def load_entities(path: str | Path, schema: EntitySchema | None = None, strict_iob: bool = False,
                  limit: int | None = None) -> EntitySet:
    """Read entity data by suffix: JSONL (``.jsonl``, ``.json``, ``.ndjson``) or CoNLL/IOB
    (``.conll``, ``.tsv``, ``.iob``, ``.iob2``, ``.bio``, ``.txt``). With a schema every type
    must be in it (aliases become its names); without, types are kept as written. ``limit``
    reads the first sentences (rows) only."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return read_entity_jsonl(path, schema, strict_iob, limit)
    if suffix in CONLL_SUFFIXES:
        return read_conll(path, schema, strict_iob, limit)
    raise DataError(f"{path}: unsupported entity data format '{suffix}' (use .conll/.tsv/.iob/.bio/.txt or .jsonl)")


def _conll_sentences(text: str, source: str) -> Iterator[list[tuple[int, str, str | None]]]:
    """Sentences as (line, token, tag or None) lists: the token in the first column, the tag in
    the last; blank (or whitespace-only) lines and -DOCSTART- lines end a sentence."""
    sentence: list[tuple[int, str, str | None]] = []
    for n, line in _lines(text):
        if not line.strip() or line.split()[0] == DOCSTART:
            if sentence:
                yield sentence
            sentence = []
            continue
        cols = line.split("\t") if "\t" in line else line.split()
        token = cols[0].strip()
        if not token:
            raise DataError(f"{source}: line {n}: empty token in {line!r}")
        sentence.append((n, token, cols[-1].strip() if len(cols) > 1 else None))
    if sentence:
        yield sentence


def _conll_sentence(sentence: list[tuple[int, str, str | None]], source: str, schema: EntitySchema | None,
                    strict_iob: bool) -> tuple[list[str], list[tuple[int, int, str]], int]:
    """Tokens, token-level entities (canonical types) and repairs of one labelled sentence."""
    tags = []
    for n, token, tag in sentence:
        assert tag is not None
        try:
            prefix, typ = parse_tag(tag)
            tags.append(tag if typ is None else f"{prefix}-{_canonical_type(typ, schema)}")
        except DataError as e:
            raise DataError(f"{source}: line {n}: {e}") from None
    try:
        found, repaired = decode_tags(tags, strict_iob)
    except TagError as e:
        raise DataError(f"{source}: line {sentence[e.index][0]}: {e}") from None
    return [token for _, token, _ in sentence], found, repaired


def read_conll(path: str | Path, schema: EntitySchema | None = None, strict_iob: bool = False,
               limit: int | None = None) -> EntitySet:
    """A CoNLL/IOB file: a token per line, its tag in the last column (tab- or
    space-separated), a blank line between sentences. Lines with one column only (no tags
    at all) make an unlabeled pool. Ids are sentence numbers from 0; texts are the tokens
    joined by single spaces."""
    path = Path(path)
    source = str(path)
    ids, texts, tokens, offsets, spans = [], [], [], [], []
    repaired, labelled = 0, None
    for sentence in _conll_sentences(_decode_file(path), source):
        if limit is not None and len(texts) >= limit:
            break
        for n, token, tag in sentence:
            if labelled is None:
                labelled = tag is not None
            if (tag is not None) != labelled:
                what = "a token without a tag, but lines before have tags" if labelled else "a tag, but lines before have none"
                raise DataError(f"{source}: line {n}: {what} ({token!r})")
        if labelled:
            words, found, count = _conll_sentence(sentence, source, schema, strict_iob)
            repaired += count
        else:
            words, found = [token for _, token, _ in sentence], []
        text, offs = join_tokens(words)
        ids.append(str(len(texts)))
        texts.append(text)
        tokens.append(words)
        offsets.append(offs)
        spans.append([Span(offs[a][0], offs[b - 1][1], typ) for a, b, typ in found])
    if not texts:
        raise DataError(f"{source}: no sentences")
    if repaired:
        log.info("%s: %d I- tag(s) began an entity and were read as B- (IOB1, or loose IOB2)", source, repaired)
    return EntitySet(ids, texts, tokens, offsets, spans if labelled else None, source, repaired)


def read_entity_jsonl(path: str | Path, schema: EntitySchema | None = None, strict_iob: bool = False,
                      limit: int | None = None) -> EntitySet:
    """JSONL, one object a line: ``text`` and/or ``tokens``, optional ``id``, and gold as
    ``spans`` ([{start, end, type}] in characters of the text; ``label`` for ``type`` and
    [start, end, type] lists are read too; an optional ``text`` per span is checked) or as
    ``tags`` (one per token). See :func:`entities_from_records`."""
    path = Path(path)
    rows, lines = [], []
    for n, line in _lines(_decode_file(path)):
        if not line.strip():
            continue
        if limit is not None and len(rows) >= limit:
            break
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {n}: not valid JSON ({e.msg})") from e
        if not isinstance(obj, dict):
            raise DataError(f"{path}: line {n}: expected a JSON object per line")
        rows.append(obj)
        lines.append(n)
    return entities_from_records(rows, schema, strict_iob, source=str(path), lines=lines)


def _record_tokens(row: dict[str, Any], where: str) -> tuple[str | None, list[str] | None, Offsets | None]:
    """(text, tokens, offsets) of a record; tokens None when only a text is given."""
    text, tokens = row.get("text"), row.get("tokens")
    if text is not None and not isinstance(text, str):
        raise DataError(f"{where}: 'text' is not a string")
    if tokens is not None:
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise DataError(f"{where}: 'tokens' is not a list of strings")
        blank = next((k for k, t in enumerate(tokens) if not t.strip()), None)
        if blank is not None:
            raise DataError(f"{where}: token {blank + 1} is empty or whitespace-only")
        if not tokens:
            raise DataError(f"{where}: 'tokens' is empty")
        if text is None:
            text, offsets = join_tokens(tokens)
            return text, tokens, offsets
    if text is None:
        raise DataError(f"{where}: no 'text' or 'tokens'")
    if not text.strip():
        raise DataError(f"{where}: text is empty or whitespace-only")
    if tokens is None:
        return text, None, None
    try:
        return text, tokens, locate_tokens(text, tokens)
    except DataError as e:
        raise DataError(f"{where}: {e}") from None


def _record_span(item: Any, k: int, text: str, schema: EntitySchema | None) -> Span:
    """Span ``k`` (0-based) of a record, checked against the text (no location in messages)."""
    if isinstance(item, (list, tuple)) and len(item) == 3:
        item = {"start": item[0], "end": item[1], "type": item[2]}
    if not isinstance(item, dict):
        raise DataError(f"span {k + 1} is not an object {{start, end, type}}")
    start, end, typ = item.get("start"), item.get("end"), item.get("type", item.get("label"))
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)):
        raise DataError(f"span {k + 1}: start and end must be integers, got {start!r} and {end!r}")
    if not isinstance(typ, str) or not typ.strip():
        raise DataError(f"span {k + 1}: no entity 'type'")
    if not 0 <= start < end <= len(text):
        raise DataError(f"span {k + 1} [{start}, {end}) is out of range (the text has {len(text)} characters; start < end)")
    span = Span(start, end, typ)
    covered = text[start:end]
    if "text" in item and item["text"] != covered:
        raise DataError(f"span {k + 1} [{start}, {end}): its text {_snip(str(item['text']))} is not the text at those offsets ({_snip(covered)})")
    if covered != covered.strip():
        raise DataError(f"{_show(span, text)} starts or ends with whitespace")
    try:
        return span._replace(type=_canonical_type(typ, schema))
    except DataError as e:
        raise DataError(f"span {k + 1}: {e}") from None


def _record_gold(row: dict[str, Any], text: str, tokens: list[str] | None, offsets: Offsets | None,
                 schema: EntitySchema | None, strict_iob: bool) -> tuple[list[str], Offsets, list[Span], int]:
    """Tokens, offsets, gold spans and IOB repairs of a labelled record (messages without
    the location: the caller adds it)."""
    if row.get("spans") is not None and row.get("tags") is not None:
        raise DataError("give 'spans' or 'tags', not both")
    if row.get("tags") is not None:
        tags = row["tags"]
        if tokens is None or offsets is None:
            raise DataError("'tags' need 'tokens' (one tag per token)")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags) or len(tags) != len(tokens):
            raise DataError(f"'tags' must be a list of {len(tokens)} strings, one per token")
        typed = []
        try:
            for k, tag in enumerate(tags):
                prefix, typ = parse_tag(tag)
                typed.append(tag if typ is None else f"{prefix}-{_canonical_type(typ, schema)}")
            found, repaired = decode_tags(typed, strict_iob)
        except DataError as e:
            k = e.index if isinstance(e, TagError) else len(typed)
            raise DataError(f"token {k + 1} {_snip(tokens[k])}: {e}") from None
        return tokens, offsets, [Span(offsets[a][0], offsets[b - 1][1], t) for a, b, t in found], repaired
    items = row["spans"]
    if not isinstance(items, list):
        raise DataError("'spans' is not a list")
    spans = sorted_spans([_record_span(item, k, text, schema) for k, item in enumerate(items)], text)
    if tokens is None or offsets is None:
        tokens, offsets = word_tokens(text, [p for s in spans for p in (s.start, s.end)])
    starts, ends = {s for s, _ in offsets}, {e for _, e in offsets}
    for span in spans:
        if span.start not in starts or span.end not in ends:
            raise DataError(f"{_show(span, text)} cuts a token (spans must start and end on token boundaries; "
                            "give 'text' without 'tokens' to split tokens at span edges)")
    return tokens, offsets, spans, 0


def entities_from_records(records: Sequence[dict[str, Any]], schema: EntitySchema | None = None,
                          strict_iob: bool = False, source: str = "records",
                          lines: list[int] | None = None) -> EntitySet:
    """Validate records: ``text`` (tokenised into words, split at span edges) or ``tokens``
    (the text their single-space join) or both (tokens found in order in the text); ``id``
    (all rows or none; otherwise row numbers from 0); gold ``spans`` or ``tags`` on all rows
    or none (an unlabeled pool)."""
    rows = list(records)
    if not rows:
        raise DataError(f"{source}: no rows")
    has_ids = any("id" in r for r in rows)
    labelled = any(r.get("spans") is not None or r.get("tags") is not None for r in rows)
    ids, texts, tokens, offsets, spans = [], [], [], [], []
    seen: dict[str, str] = {}
    repaired = 0
    for i, row in enumerate(rows):
        where = f"{source}: line {lines[i]}" if lines is not None else f"{source}: row {i + 1}"
        rid = str(i)
        if has_ids:
            if row.get("id") is None or not str(row["id"]).strip():
                raise DataError(f"{where}: id is missing or empty (other rows have one)")
            rid = str(row["id"])
            if rid in seen:
                raise DataError(f"{where}: duplicate id '{rid}' (first at {seen[rid]})")
            seen[rid] = where.rpartition(": ")[2]
        text, toks, offs = _record_tokens(row, where)
        assert text is not None
        found: list[Span] = []
        if labelled:
            if row.get("spans") is None and row.get("tags") is None:
                raise DataError(f"{where}: no gold 'spans' or 'tags', but other rows have them")
            try:
                toks, offs, found, count = _record_gold(row, text, toks, offs, schema, strict_iob)
            except DataError as e:
                raise DataError(f"{where}: {e}") from None
            repaired += count
        elif toks is None or offs is None:
            toks, offs = word_tokens(text)
        ids.append(rid)
        texts.append(text)
        tokens.append(toks)
        offsets.append(offs)
        spans.append(found)
    if repaired:
        log.info("%s: %d I- tag(s) began an entity and were read as B- (IOB1, or loose IOB2)", source, repaired)
    return EntitySet(ids, texts, tokens, offsets, spans if labelled else None, source, repaired)
