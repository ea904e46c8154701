"""The entity teacher: an LLM lists the named entities of each text, llkd finds them in it.

Conventions (one place, so the student, the selection and the reports agree):

* **Prompt** (``resources/templates/entities.yaml``): the schema's types with their
  descriptions (verbalizers are the names the model writes), optional few-shot examples, then
  the text. **Reply format**: one ``type: words`` line per entity mention, or ``none``.
  Decoding is greedy; a reply ends at a control token (a chat model's end of turn), at its
  first blank line after some text (a base model's end of answer), or at ``max_new_tokens``
  (then it is *truncated*).
* **Parsing** is lenient about what small models add: list bullets (``-``, ``*``, ``1.``),
  quotes and ``**bold**`` around the type or the words, code fences (ignored), a type written
  in another case or in the plural, several mentions on one line separated by commas (tried
  only when the whole string is not in the text). A line that names no schema type, has no ``:`` or no words is
  *malformed* (counted, skipped); so is the unterminated last line of a truncated reply (its
  words may be cut).
* **Alignment** of the words to character offsets: exact match first, then case-insensitive,
  then whitespace-flexible (``ataxia-telangiectasia`` finds ``ataxia - telangiectasia`` in a
  pre-tokenised corpus, and a space between two words may stand for a hyphen: ``ataxia
  telangiectasia`` finds it too); a match never cuts a word (no letter or digit just outside it).
  Repeated strings take the leftmost occurrence not already taken by the same type, preferring
  one that overlaps no span placed so far; longer strings are placed first, so ``cancer`` does
  not take the ``cancer`` of ``breast cancer`` when the text has another. Words found nowhere
  are *dropped* (counted).
* **Overlaps** (BIO cannot tag them): the span with the higher confidence is kept, on a tie
  the longer, then the leftmost; each removed one is counted (*overlapping*).
* **Span confidence**: the geometric mean of the probabilities of the tokens that wrote its
  line -- type, separator, words and the line break (or end token) that closed it, so the
  decision to start an entity, its type and both boundaries all count -- as the model gave them
  while generating greedily. The geometric mean is length-normalised (the product, available as
  ``span_confidence="product"``, makes every long name unlikely); it lies in (0, 1]. Spans of
  one comma-separated line share its confidence.
* **Outside confidence** (for the O tokens of a text): the probability of the token that ended
  the list, i.e. the first token after the last entity line (end of turn, a blank line, or any
  text that is not another entity): P(no further entity | those listed). For a ``none`` reply,
  the confidence of the ``none`` line. 0.0 where nothing is known: a truncated reply, or one
  with no line in the format at all.
* **Caching**: the cache keeps the *generation* (reply, token ends, log-probs, stop reason)
  with the parsed answer; reading back re-parses the generation, so a parser fix or another
  confidence rule applies to cached answers without asking the model again. The identity
  holds what changes the generation: task kind, backend, weights, dtype, template, schema,
  text truncation and decoding settings.
* **Usage**: prompt tokens = the whole prompt (prefix + text + cue, though the prefix's KV is
  computed once); completion tokens = the tokens generated, the stop token included.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import yaml

from llkd.config import ConfigError
from llkd.data.entities import EntitySchema, EntitySet, Span
from llkd.errors import CacheError, yaml_problem
from llkd.teacher.base import TeacherFailure, total_usage
from llkd.teacher.cache import TeacherCache, text_hash
from llkd.teacher.cost import TokenUsage, UsageEstimate

log = logging.getLogger(__name__)

__all__ = ["ScoredSpan", "Generation", "EntityAnswer", "EntityLabels", "EntityPromptTemplate", "EntityTeacherBackend", "HFEntityTeacher",
           "parse_generation", "label_entities", "examples_from"]

METHOD = "greedy_lines"
CONFIDENCE_RULES = ("geomean", "product")
STOPS = ("eos", "blank", "length")
_WORD = re.compile(r"\w+|[^\w\s]")  # as llkd.data.entities: words, and each other non-space character
_BULLET = re.compile(r"^(?:[-*\u2022+]|\d{1,3}[.)])\s+")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_QUOTES = "\"'`\u201c\u201d\u2018\u2019"
_NONE = {"none", "no entities", "no entity", "no named entities", "n/a", "nothing"}


class ScoredSpan(NamedTuple):
    start: int
    end: int
    type: str
    confidence: float

    @property
    def span(self) -> Span:
        return Span(self.start, self.end, self.type)


# --------------------------------------------------------------------------- containers


@dataclass(frozen=True)
class Generation:
    """What the model wrote: the reply text, each generated token's end in it (a stop token
    not in the text ends at ``len(reply)``) and log-probability, and why it stopped."""

    reply: str
    token_ends: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()
    stop: str = "eos"  # "eos" (a control token), "blank" (a blank line), "length" (max_new_tokens)

    def __post_init__(self) -> None:
        if len(self.token_ends) != len(self.logprobs):
            raise ValueError(f"{len(self.token_ends)} token ends for {len(self.logprobs)} log-probs")
        if self.stop not in STOPS:
            raise ValueError(f"stop must be one of {', '.join(STOPS)}, not {self.stop!r}")

    def tokens(self) -> list[tuple[int, int, float]]:
        """(start, end, log-prob) per token, ends made non-decreasing."""
        out, pos = [], 0
        for end, lp in zip(self.token_ends, self.logprobs):
            end = min(max(int(end), pos), len(self.reply))
            out.append((pos, end, float(lp)))
            pos = end
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"reply": self.reply, "token_ends": list(self.token_ends), "logprobs": list(self.logprobs), "stop": self.stop}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Generation":
        return cls(str(raw["reply"]), tuple(int(x) for x in raw.get("token_ends", ())), tuple(float(x) for x in raw.get("logprobs", ())),
                   str(raw.get("stop", "eos")))


@dataclass
class EntityAnswer:
    """One text's entities: ``spans`` sorted, not overlapping, with confidences in (0, 1]."""

    spans: list[ScoredSpan]
    outside_confidence: float | None  # P(no entity beyond ``spans``): the weight of the text's O tokens; None when
    # the reply says nothing about them (truncated, or no line in the format): the student's default applies
    dropped: int = 0  # entity strings the text does not contain (or no occurrence left)
    malformed: int = 0  # lines not in the "type: words" format, or naming no schema type
    overlapping: int = 0  # spans removed by the overlap policy
    truncated: bool = False  # the reply hit max_new_tokens
    method: str = METHOD
    generation: Generation | None = field(default=None, compare=False)
    prompt_tokens: int = field(default=0, kw_only=True, compare=False)
    completion_tokens: int = field(default=0, kw_only=True, compare=False)
    calls: int = field(default=0, kw_only=True, compare=False)
    usage_estimated: bool = field(default=False, kw_only=True, compare=False)

    def usage(self) -> TokenUsage:
        return TokenUsage(self.calls, self.prompt_tokens, self.completion_tokens, estimated=self.calls if self.usage_estimated else 0)

    def plain_spans(self) -> list[Span]:
        return [s.span for s in self.spans]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"spans": [[s.start, s.end, s.type, s.confidence] for s in self.spans],
                               "outside_confidence": self.outside_confidence, "dropped": self.dropped,
                               "malformed": self.malformed, "overlapping": self.overlapping, "truncated": self.truncated, "method": self.method}
        if self.generation is not None:
            out["generation"] = self.generation.to_dict()
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "EntityAnswer":
        gen = raw.get("generation")
        return cls([ScoredSpan(int(s), int(e), str(t), float(c)) for s, e, t, c in raw["spans"]],
                   None if raw.get("outside_confidence") is None else float(raw["outside_confidence"]),
                   int(raw.get("dropped", 0)), int(raw.get("malformed", 0)), int(raw.get("overlapping", 0)), bool(raw.get("truncated", False)),
                   str(raw.get("method", METHOD)), Generation.from_dict(gen) if gen else None)


# --------------------------------------------------------------------------- parsing and alignment


class _Item(NamedTuple):
    order: int
    type: str
    surface: str
    confidence: float


def _type_forms(schema: EntitySchema) -> dict[str, str]:
    """Lower-cased verbalizer, name and aliases of each type -> its canonical name."""
    forms: dict[str, str] = {}
    for t in schema.types:
        for form in (t.answer, t.name, *t.aliases):
            forms.setdefault(form.strip().lower(), t.name)
    return forms


def _reply_lines(reply: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, content) of each line; ``end`` is where its line break is (or the end)."""
    pos = 0
    for piece in reply.split("\n"):
        yield pos, pos + len(piece), piece
        pos += len(piece) + 1


def parse_line(line: str, forms: dict[str, str]) -> tuple[str, str, str]:
    """(kind, type, words) of one reply line; kind is "entity", "none", "blank", "ignored"
    (a code fence) or "malformed"."""
    s = _BULLET.sub("", line.strip(), count=1).strip()
    if not s:
        return "blank", "", ""
    if s.startswith("```"):
        return "ignored", "", ""
    if s.strip(_QUOTES + "*_.!").strip().lower() in _NONE:
        return "none", "", ""
    head, sep, tail = s.partition(":")
    head = head.strip(_QUOTES + "*_ \t").lower()
    typ = (forms.get(head) or forms.get(head.removesuffix("s"))) if sep else None  # "Diseases: ..." too
    words = tail.strip().strip("*").strip().strip(_QUOTES).strip()
    if typ is None or not words:
        return "malformed", "", ""
    if words.lower().strip(".") in _NONE:
        return "none", "", ""
    return "entity", typ, words


def _pattern(surface: str, flexible: bool) -> str | None:
    if flexible:
        pieces = _WORD.findall(surface)
        if not pieces:
            return None
        body = re.escape(pieces[0])
        for prev, cur in zip(pieces, pieces[1:]):
            body += (r"(?:\s*-\s*|\s+)" if prev[-1].isalnum() and cur[0].isalnum() else r"\s*") + re.escape(cur)
    else:
        body = re.escape(surface)
    left = r"(?<!\w)" if re.match(r"\w", surface) else ""
    right = r"(?!\w)" if re.search(r"\w$", surface) else ""
    return left + body + right


def occurrences(text: str, surface: str) -> list[list[tuple[int, int]]]:
    """Where ``surface`` is in ``text``, per matching stage: exact, case-insensitive,
    whitespace-flexible (each a list of (start, end), left to right; never cutting a word)."""
    stages = []
    for flexible, flags in ((False, 0), (False, re.IGNORECASE), (True, re.IGNORECASE)):
        pattern = _pattern(surface, flexible)
        stages.append([m.span() for m in re.finditer(pattern, text, flags)] if pattern else [])
    return stages


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _place(stages: list[list[tuple[int, int]]], typ: str, placed: list[ScoredSpan], used: set[tuple[int, int, str]]) -> tuple[int, int] | None:
    """The occurrence a string takes: in the first stage with one not yet used by this type,
    the leftmost overlapping no placed span, else the leftmost."""
    for found in stages:
        free = [o for o in found if (*o, typ) not in used]
        if free:
            clear = [o for o in free if not any(_overlaps(o, (p.start, p.end)) for p in placed)]
            return (clear or free)[0]
    return None


def align(text: str, items: Sequence[_Item]) -> tuple[list[ScoredSpan], int, int]:
    """(spans, dropped, overlapping) for the items of a reply (the conventions are above)."""
    placed: list[ScoredSpan] = []
    used: set[tuple[int, int, str]] = set()
    dropped = 0
    queue = sorted(items, key=lambda it: (-len(it.surface), it.order))
    while queue:
        item = queue.pop(0)
        stages = occurrences(text, item.surface)
        where = _place(stages, item.type, placed, used)
        if where is None:
            parts = [p.strip().strip(_QUOTES).strip() for p in re.split(r"[,;]", item.surface)]
            parts = [p for p in parts if p]
            if len(parts) > 1 and not any(stages):  # "cancer, leukaemia": several mentions on one line
                queue = sorted(queue + [item._replace(surface=p) for p in parts], key=lambda it: (-len(it.surface), it.order))
                continue
            dropped += 1
            continue
        used.add((*where, item.type))
        placed.append(ScoredSpan(where[0], where[1], item.type, item.confidence))
    kept: list[ScoredSpan] = []
    for span in sorted(placed, key=lambda s: (-s.confidence, -(s.end - s.start), s.start)):
        if not any(_overlaps((span.start, span.end), (k.start, k.end)) for k in kept):
            kept.append(span)
    return sorted(kept), dropped, len(placed) - len(kept)


def _line_confidence(tokens: list[tuple[int, int, float]], start: int, end: int, rule: str) -> float:
    """The confidence of the reply line at [start, end) from the tokens that wrote it,
    including the one holding its line break (or a zero-width stop token right after it)."""
    lps = [lp for a, b, lp in tokens if (a < end + 1 and b > start) or (a == b and start <= a <= end)]
    if not lps:  # a reply without token log-probs (hand-written, or a backend that gives none)
        return 1.0
    total = sum(lps)
    return math.exp(total / len(lps) if rule == "geomean" else total)


def _stop_probability(tokens: list[tuple[int, int, float]], reply: str, line_end: int) -> float:
    """The probability of the first token after the line ending at ``line_end`` and its line
    break: the model's choice not to write another entity."""
    q = line_end + 1 if reply[line_end : line_end + 1] == "\n" else line_end
    for a, b, lp in tokens:
        if b > q or (a == b and a >= q):
            return math.exp(lp)
    return 0.0


def parse_generation(text: str, generation: Generation, schema: EntitySchema, span_confidence: str = "geomean") -> EntityAnswer:
    """The entities a generation names in ``text``, aligned, scored and made non-overlapping."""
    if span_confidence not in CONFIDENCE_RULES:
        raise ValueError(f"span_confidence must be one of {', '.join(CONFIDENCE_RULES)}, not {span_confidence!r}")
    forms = _type_forms(schema)
    tokens = generation.tokens()
    lines = list(_reply_lines(generation.reply))
    truncated = generation.stop == "length"
    malformed = 0
    if truncated and lines and lines[-1][2].strip():  # its words may be cut short
        lines.pop()
        malformed += 1
    items: list[_Item] = []
    none_line: tuple[int, int] | None = None
    last_end = -1
    for k, (start, end, content) in enumerate(lines):
        kind, typ, words = parse_line(content, forms)
        if kind == "entity":
            items.append(_Item(k, typ, words, _line_confidence(tokens, start, end, span_confidence)))
            last_end = end
        elif kind == "none" and none_line is None:
            none_line = (start, end)
        elif kind == "malformed":
            malformed += 1
    spans, dropped, overlapping = align(text, items)
    outside: float | None
    if truncated:  # cut short: nothing is known about the O tokens
        outside = None
    elif items:
        outside = _stop_probability(tokens, generation.reply, last_end) if tokens else 1.0
    elif none_line is not None:
        outside = _line_confidence(tokens, *none_line, span_confidence)
    else:  # no line in the format: nothing is known about the O tokens
        outside = None
    return EntityAnswer(spans, outside, dropped, malformed, overlapping, truncated, METHOD, generation)


# --------------------------------------------------------------------------- prompt


def format_entities(schema: EntitySchema, entities: Sequence[Sequence[str]]) -> str:
    """The reply lines for (type, words) pairs: what a few-shot example shows the model."""
    lines = [f"{schema.types[schema.index(t)].answer}: {w}" for t, w in entities]
    return "\n".join(lines) if lines else "none"


def examples_from(data: EntitySet, rows: Sequence[int]) -> list[dict[str, Any]]:
    """Few-shot examples ({text, entities: [[type, words], ...]}) from gold-labelled rows."""
    if data.spans is None:
        raise ValueError(f"{data.source or 'entity texts'}: no gold spans to make examples of")
    return [{"text": data.texts[i], "entities": [[s.type, data.texts[i][s.start:s.end]] for s in data.spans[i]]} for i in rows]


@dataclass(frozen=True)
class EntityPromptTemplate:
    kind: str  # "chat" (the model's chat template wraps it) or "completion" (plain text)
    instruction: str
    body: str
    system: str | None = None
    examples: tuple[dict[str, Any], ...] = ()  # {text, entities: [[type, words], ...]}
    example_format: str = "Text: {text}\nEntities:\n{entities}\n\n"

    @classmethod
    def load(cls, name_or_path: str) -> "EntityPromptTemplate":
        """A built-in template (``chat``, ``completion``) or a YAML file holding one mapping."""
        if name_or_path in ("chat", "completion"):
            raw = yaml.safe_load(resources.files("llkd.resources.templates").joinpath("entities.yaml").read_text("utf-8"))[name_or_path]
            return cls.from_dict(raw, name_or_path)
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(f"entity prompt template '{name_or_path}' is neither built in (auto, chat, completion) nor a file")
        try:
            raw = yaml.safe_load(path.read_text("utf-8")) or {}
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read entity prompt template: {e}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: entity prompt template is not valid YAML: {yaml_problem(e)}") from e
        return cls.from_dict(raw, str(path))

    @classmethod
    def from_dict(cls, raw: Any, source: str) -> "EntityPromptTemplate":
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: an entity prompt template is a mapping (kind, instruction, body, ...)")
        unknown = set(raw) - {"kind", "instruction", "body", "system", "examples", "example_format"}
        missing = [k for k in ("kind", "instruction", "body") if k not in raw]
        if unknown or missing:
            raise ConfigError(f"{source}: " + (f"unknown template keys {sorted(unknown)}" if unknown else f"template needs '{missing[0]}'"))
        if raw["kind"] not in ("chat", "completion"):
            raise ConfigError(f"{source}: template kind must be chat or completion, not '{raw['kind']}'")
        if "{text}" not in str(raw["body"]):
            raise ConfigError(f"{source}: template body must contain {{text}}")
        return cls(**{**raw, "examples": tuple(raw.get("examples") or ())})

    def fingerprint(self) -> str:
        blob = json.dumps(self.__dict__ | {"examples": list(self.examples)}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def render_user(self, schema: EntitySchema, text: str) -> str:
        descriptions = "\n".join(f"- {t.answer}: {t.description}" if t.description else f"- {t.answer}" for t in schema.types)
        instruction = self.instruction.format(type_list=", ".join(t.answer for t in schema.types), type_descriptions=descriptions,
                                              task=schema.task or "text").strip()
        examples = "".join(self.example_format.format(text=ex["text"], entities=format_entities(schema, ex.get("entities") or []))
                           for ex in self.examples)
        return self.body.format(instruction=instruction, examples=examples, text=text)

    def split(self, schema: EntitySchema, tokenizer: Any) -> tuple[str, str]:
        """(prefix, suffix) around the text, with the model's chat markup applied."""
        sentinel = "\u241f__LLKD_TEXT__\u241f"
        user = self.render_user(schema, sentinel)
        if self.kind == "chat":
            messages = [{"role": "system", "content": self.system}] if self.system else []
            full = tokenizer.apply_chat_template([*messages, {"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
        else:
            full = (tokenizer.bos_token or "") + user
        prefix, _, suffix = full.partition(sentinel)
        return prefix, suffix


# --------------------------------------------------------------------------- backends


class EntityTeacherBackend(ABC):
    """An entity-extracting LLM: texts in, one :class:`EntityAnswer` (or a TeacherFailure,
    recorded and retried) per text out, each carrying its usage."""

    batch_size: int = 8
    span_confidence: str = "geomean"

    def __init__(self, schema: EntitySchema) -> None:
        self.schema = schema

    @abstractmethod
    def identity(self) -> str:
        """Everything that changes the generation: part of each cache key."""

    @abstractmethod
    def extract(self, texts: Sequence[str]) -> list[EntityAnswer | TeacherFailure]:
        """Answer each text, in order."""

    def parse(self, text: str, generation: Generation) -> EntityAnswer:
        """The answer a (cached) generation gives under this teacher's schema and rules."""
        return parse_generation(text, generation, self.schema, self.span_confidence)

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class HFEntityTeacher(EntityTeacherBackend):
    """Batched greedy generation with a local causal LM (an HF folder, a GGUF file or a
    packaged teacher such as ``smollm2-135m`` or ``qwen2.5-1.5b``). The prompt prefix shared by
    all texts runs once and its KV cache is reused; texts are batched by length (right padding,
    explicit positions), and rows leave the batch as they finish."""

    def __init__(self, schema: EntitySchema, model: str = "smollm2-135m", template: str = "auto", dtype: str = "auto", device: str = "auto",
                 batch_size: int = 8, max_text_tokens: int = 256, max_new_tokens: int = 64, examples: Sequence[dict[str, Any]] | None = None,
                 span_confidence: str = "geomean") -> None:
        super().__init__(schema)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from llkd.hardware import resolve_dtype
        from llkd.models import resolve_teacher
        from llkd.teacher.hf import _DTYPES, HFTeacher, pick_device

        if span_confidence not in CONFIDENCE_RULES:
            raise ConfigError(f"span_confidence must be one of {', '.join(CONFIDENCE_RULES)}, not '{span_confidence}'")
        if max_new_tokens < 1 or batch_size < 1:
            raise ConfigError("max_new_tokens and batch_size must be at least 1")
        folder, kind = resolve_teacher(model)
        self.model_name, self.batch_size, self.span_confidence = model, batch_size, span_confidence
        self.max_text_tokens, self.max_new_tokens = max_text_tokens, max_new_tokens
        self.device = pick_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=_DTYPES[self.dtype]).to(self.device).eval()
        if template == "auto":
            template = kind if kind != "auto" else ("chat" if self.tokenizer.chat_template else "completion")
        self.template = EntityPromptTemplate.load(template)
        if examples is not None:
            self.template = replace(self.template, examples=tuple(examples))
        self._stop_ids = HFTeacher._check_plain_text_tokenisation(self, model)  # type: ignore[arg-type]  # control tokens end a reply
        self._weights_id = HFTeacher._model_identity(folder)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self._pad_id = int(pad) if pad is not None else 0
        softcap = getattr(self.model.config, "final_logit_softcapping", None)
        self._softcap = float(softcap) if softcap else None
        self._build_prompt()

    def _build_prompt(self) -> None:
        prefix, suffix = self.template.split(self.schema, self.tokenizer)
        self.prefix_ids = self.tokenizer(prefix, add_special_tokens=False)["input_ids"]  # markup: control tokens
        self.suffix_ids = self.tokenizer(suffix, add_special_tokens=False)["input_ids"]
        self._prefix_kv: list[tuple[Any, Any]] | None = None

    def for_schema(self, schema: EntitySchema, examples: Sequence[dict[str, Any]] | None = None) -> "HFEntityTeacher":
        """The same model (weights shared, not reloaded) asked about another schema."""
        other = copy.copy(self)
        other.schema = schema
        if examples is not None:
            other.template = replace(self.template, examples=tuple(examples))
        other._build_prompt()
        return other

    def identity(self) -> str:
        return (f"entities|hf|{self._weights_id}|{self.dtype}|tmpl={self.template.fingerprint()}|schema={self.schema.fingerprint()}"
                f"|max_text_tokens={self.max_text_tokens}|greedy|max_new_tokens={self.max_new_tokens}|stop=control,blank_line")

    def _encode_plain(self, text: str) -> list[int]:
        """A text as the characters it is: chat markup inside it never becomes control tokens."""
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def text_token_ids(self, text: str) -> list[int]:
        return self._encode_plain(text)[: self.max_text_tokens] + self.suffix_ids

    def estimate_usage(self, texts: Sequence[str]) -> UsageEstimate:
        prompt = sum(len(self.prefix_ids) + len(self.text_token_ids(t)) for t in texts)
        usage = TokenUsage(calls=len(texts), prompt_tokens=prompt, completion_tokens=len(texts) * self.max_new_tokens)
        return UsageEstimate(usage, exact=True, basis=f"tokenizer and prompt of {self.model_name}",
                             notes=(f"completion tokens: at most {self.max_new_tokens} per text",))

    # -- generation -----------------------------------------------------------------------
    def _head(self, hidden: Any) -> Any:
        import torch

        logits = self.model.get_output_embeddings()(hidden).float()
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return torch.log_softmax(logits, dim=-1)

    def _batch_cache(self, batch: int) -> Any:
        """A KV cache holding the shared prefix for ``batch`` rows (the prefix runs once)."""
        import torch
        from transformers import DynamicCache

        if self._prefix_kv is None:
            with torch.inference_mode():
                out = self.model.base_model(input_ids=torch.tensor([self.prefix_ids], device=self.device), use_cache=True)
            self._prefix_kv = [(layer.keys, layer.values) for layer in out.cache.layers]
        cache = DynamicCache(config=self.model.config)
        for layer, (k, v) in enumerate(self._prefix_kv):
            cache.update(k.expand(batch, -1, -1, -1).contiguous(), v.expand(batch, -1, -1, -1).contiguous(), layer)
        return cache

    def _finished(self, ids: list[int]) -> str | None:
        if ids[-1] in self._stop_ids:
            return "eos"
        if _BLANK_LINE.search(self.tokenizer.decode(ids, clean_up_tokenization_spaces=False).lstrip()):
            return "blank"
        return None

    def generate(self, batch: list[list[int]]) -> list[tuple[list[int], list[float], str]]:
        """Greedy continuations of text+cue token ids after the shared prefix: (token ids,
        their log-probs, stop reason) per row; a stop token is the last id."""
        import torch

        dev, p, b = self.device, len(self.prefix_ids), len(batch)
        lengths = torch.tensor([len(x) for x in batch], device=dev)
        width = int(lengths.max())
        ids = torch.full((b, width), self._pad_id, dtype=torch.long, device=dev)
        for r, x in enumerate(batch):
            ids[r, : len(x)] = torch.tensor(x, device=dev)
        mask = torch.cat([torch.ones(b, p, dtype=torch.long, device=dev), (torch.arange(width, device=dev)[None, :] < lengths[:, None]).long()], 1)
        cache = self._batch_cache(b)
        out_ids: list[list[int]] = [[] for _ in range(b)]
        out_lps: list[list[float]] = [[] for _ in range(b)]
        stops = ["length"] * b
        with torch.inference_mode():
            out = self.model.base_model(input_ids=ids, attention_mask=mask, position_ids=(p + torch.arange(width, device=dev))[None, :].expand(b, -1),
                                        cache=cache, use_cache=True)
            logp = self._head(out.last_hidden_state[torch.arange(b, device=dev), lengths - 1])
            rows, position = list(range(b)), p + lengths
            for step in range(self.max_new_tokens):
                lp, tok = logp.max(dim=-1)
                keep = []
                for j, r in enumerate(rows):
                    out_ids[r].append(int(tok[j]))
                    out_lps[r].append(float(lp[j]))
                    why = self._finished(out_ids[r])
                    if why:
                        stops[r] = why
                    else:
                        keep.append(j)
                if not keep or step == self.max_new_tokens - 1:
                    break
                if len(keep) < len(rows):  # finished rows leave the batch
                    idx = torch.tensor(keep, device=dev)
                    cache.batch_select_indices(idx)
                    mask, position, tok = mask[idx], position[idx], tok[idx]
                    rows = [rows[j] for j in keep]
                mask = torch.cat([mask, torch.ones(len(rows), 1, dtype=torch.long, device=dev)], 1)
                out = self.model.base_model(input_ids=tok[:, None], attention_mask=mask, position_ids=position[:, None], cache=cache, use_cache=True)
                position = position + 1
                logp = self._head(out.last_hidden_state[:, -1])
        return [(out_ids[r], out_lps[r], stops[r]) for r in range(b)]

    def to_generation(self, ids: list[int], logprobs: list[float], stop: str) -> Generation:
        """The reply text of generated ids and each token's end in it (a control token at the
        end is not text: it ends at the reply's end)."""
        text_ids = ids[:-1] if ids and ids[-1] in self._stop_ids else ids
        reply = self.tokenizer.decode(text_ids, clean_up_tokenization_spaces=False)
        ends = [len(self.tokenizer.decode(text_ids[: k + 1], clean_up_tokenization_spaces=False)) for k in range(len(text_ids))]
        ends += [len(reply)] * (len(ids) - len(text_ids))
        return Generation(reply, tuple(ends), tuple(logprobs), stop)

    def extract(self, texts: Sequence[str]) -> list[EntityAnswer | TeacherFailure]:
        encoded = [self.text_token_ids(t) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        results: list[EntityAnswer | TeacherFailure] = [TeacherFailure("not asked")] * len(texts)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            for i, (ids, lps, stop) in zip(idx, self.generate([encoded[i] for i in idx])):
                answer = self.parse(texts[i], self.to_generation(ids, lps, stop))
                answer.prompt_tokens, answer.completion_tokens, answer.calls = len(self.prefix_ids) + len(encoded[i]), len(ids), 1
                results[i] = answer
        return results


# --------------------------------------------------------------------------- labelling loop


@dataclass
class EntityLabels:
    """An entity teacher's answers, rows aligned with the texts; None where it gave none (the
    reason in ``failures``)."""

    answers: list[EntityAnswer | None]
    failures: dict[int, str]
    identity: str
    schema: EntitySchema
    n_cached: int = 0
    n_asked: int = 0
    usage: TokenUsage = field(default_factory=TokenUsage)

    def __len__(self) -> int:
        return len(self.answers)

    def spans(self) -> list[list[Span]]:
        """Spans per text without confidences ([] where no answer): entity_report's input."""
        return [a.plain_spans() if a is not None else [] for a in self.answers]

    @property
    def dropped(self) -> int:
        return sum(a.dropped for a in self.answers if a is not None)


def _read_cached(teacher: EntityTeacherBackend, texts: Sequence[str], hashes: list[str], stored: dict[str, dict]) -> list[EntityAnswer | None]:
    """Cached answers, re-parsed from their generations under the teacher's current rules."""
    out: list[EntityAnswer | None] = [None] * len(texts)
    for i, h in enumerate(hashes):
        if h in stored:
            answer = EntityAnswer.from_dict(stored[h])
            out[i] = teacher.parse(texts[i], answer.generation) if answer.generation is not None else answer
    return out


def label_entities(teacher: EntityTeacherBackend, texts: Sequence[str], cache: TeacherCache, ids: Sequence[str] | None = None,
                   chunk_size: int | None = None, progress: bool = True, desc: str = "entity teacher") -> EntityLabels:
    """Answer every text, reusing cached answers (as ``label_texts``): each chunk is committed
    before the next, so a killed run resumes where it stopped; duplicate texts are asked once;
    failures are recorded and retried next run."""
    from tqdm.auto import tqdm

    chunk_size = chunk_size or int(teacher.batch_size)
    identity = teacher.identity()
    hashes = [text_hash(t) for t in texts]
    answers = _read_cached(teacher, texts, hashes, cache.get_entity_answers(identity, set(hashes)))
    todo, first_row = [], {}
    for i, h in enumerate(hashes):
        if answers[i] is None and h not in first_row:
            first_row[h] = i
            todo.append(i)
    n_cached = sum(a is not None for a in answers)
    if todo and cache.read_only:
        raise cache.read_only_error(f"{len(texts) - n_cached} of {len(texts)} texts have no cached entity answer")
    failures: dict[int, str] = {}
    usage, saved = TokenUsage(), 0
    bar = tqdm(total=len(todo), desc=desc, unit="text", disable=not progress or not todo, dynamic_ncols=True)
    for start in range(0, len(todo), chunk_size):
        rows = todo[start : start + chunk_size]
        t0 = time.perf_counter()
        results = teacher.extract([texts[i] for i in rows])
        usage = usage + total_usage(results, time.perf_counter() - t0)  # type: ignore[arg-type]
        if len(results) != len(rows):
            raise RuntimeError(f"entity teacher returned {len(results)} answers for {len(rows)} texts")
        try:
            cache.put_entity_answers(identity, [(hashes[i], ids[i] if ids is not None else None, r if isinstance(r, TeacherFailure) else r.to_dict())
                                                for i, r in zip(rows, results)])
        except CacheError as e:
            bar.close()
            raise CacheError(f"{e}. Stopped: the {saved} answers of this run before it are saved ({n_cached + saved} of {len(texts)} texts "
                             f"have one), the {len(rows)} texts of the batch being written are not; a re-run asks only for texts without an answer") from e
        for i, r in zip(rows, results):
            if isinstance(r, EntityAnswer):
                answers[i] = r
                saved += 1
            else:
                failures[i] = r.reason
        bar.update(len(rows))
    bar.close()
    for i, h in enumerate(hashes):  # duplicates share the first row's answer
        j = first_row.get(h)
        if j is not None and j != i:
            answers[i] = answers[j]
            if j in failures:
                failures[i] = failures[j]
    if failures:
        log.warning("%d of %d texts have no entity answer (recorded in the cache; a re-run retries them)", len(failures), len(texts))
    return EntityLabels(answers, failures, identity, teacher.schema, n_cached=n_cached, n_asked=len(todo), usage=usage)
