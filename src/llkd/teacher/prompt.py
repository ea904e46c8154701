"""Prompt templates: editable YAML files that say how a text becomes a teacher prompt.

A template renders to ``prefix + text + suffix``; the prefix (instruction, labels, few-shot
examples) is the same for every text, which is what lets local backends compute it once.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from llkd.config import ConfigError
from llkd.data.schema import LabelSchema
from llkd.errors import yaml_problem

_SENTINEL = "\u241f__LLKD_TEXT__\u241f"
BUILTIN = ("chat", "completion")


@dataclass(frozen=True)
class PromptTemplate:
    kind: str  # "chat" uses the model's chat template; "completion" is plain text
    instruction: str
    body: str
    system: str | None = None
    verbalizer_prefix: str = ""
    examples: tuple[dict[str, str], ...] = field(default_factory=tuple)
    example_format: str = "Text: {text}\nCategory: {label}\n"

    @classmethod
    def load(cls, name_or_path: str) -> "PromptTemplate":
        """A built-in template by name or a YAML file; ConfigError says what is wrong."""
        if name_or_path in BUILTIN:
            text = resources.files("llkd.resources.templates").joinpath(f"{name_or_path}.yaml").read_text("utf-8")
            source = name_or_path
        else:
            path = Path(name_or_path)
            if not path.is_file():
                raise ConfigError(f"prompt template '{name_or_path}' is neither built in (auto, {', '.join(BUILTIN)}) nor a file")
            try:
                text, source = path.read_text("utf-8"), str(path)
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(f"{path}: cannot read prompt template: {e}") from e
        try:
            raw: Any = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: prompt template is not valid YAML: {yaml_problem(e)}") from e
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: a prompt template is a mapping (kind, instruction, body, ...)")
        unknown = set(raw) - {"kind", "instruction", "body", "system", "verbalizer_prefix", "examples", "example_format"}
        if unknown:
            raise ConfigError(f"{source}: unknown template keys {sorted(unknown)}")
        for key in ("kind", "instruction", "body"):
            if key not in raw:
                raise ConfigError(f"{source}: template needs '{key}'")
        if raw["kind"] not in ("chat", "completion"):
            raise ConfigError(f"{source}: template kind must be chat or completion, not '{raw['kind']}'")
        if "{text}" not in str(raw["body"]):
            raise ConfigError(f"{source}: template body must contain {{text}}")
        raw["examples"] = tuple(raw.get("examples") or ())
        return cls(**raw)

    def fingerprint(self) -> str:
        blob = yaml.safe_dump(self.__dict__ | {"examples": list(self.examples)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def render_user(self, schema: LabelSchema, text: str) -> str:
        label_list = ", ".join(lab.answer for lab in schema.labels)
        descriptions = "\n".join(f"- {lab.answer}: {lab.description}" for lab in schema.labels if lab.description)
        instruction = self.instruction.format(
            label_list=label_list,
            label_descriptions=descriptions,
            task=schema.task or "text",
        ).strip()
        examples = "".join(
            self.example_format.format(text=ex["text"], label=schema.labels[schema.index(ex["label"])].answer)
            for ex in self.examples
        )
        return self.body.format(instruction=instruction, examples=examples, text=text)

    def split(self, schema: LabelSchema, tokenizer: Any) -> tuple[str, str]:
        """(prefix, suffix) strings around the text, with the model's chat markup applied."""
        user = self.render_user(schema, _SENTINEL)
        if self.kind == "chat":
            messages = [{"role": "user", "content": user}]
            if self.system:
                messages.insert(0, {"role": "system", "content": self.system})
            full = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            full = (tokenizer.bos_token or "") + user
        prefix, _, suffix = full.partition(_SENTINEL)
        return prefix, suffix


_EDGE_PUNCT = " \t\r\n\"'`*_.,:;!?()[]{}<>"


def label_from_reply(schema: LabelSchema, reply: str) -> int | None:
    """The label a free-text teacher reply names, or None. The one reply parser, shared by
    the openai backend and the naive generate loop of the speed harness.

    An exact match (ignoring case, whitespace and surrounding punctuation) of a verbalizer or
    label name wins; otherwise the label mentioned first, as a whole word, in the reply (the
    longer name on a tie, so "Sci/Tech" beats "Sci"). Gold-column aliases are not used: they
    are often codes such as "0" that a free-text reply uses in other senses.
    """
    forms = [(i, f.strip().lower()) for i, lab in enumerate(schema.labels) for f in dict.fromkeys((lab.answer, lab.name)) if f.strip()]
    text = reply.strip().lower()
    core = text.strip(_EDGE_PUNCT)
    for i, form in forms:
        if core == form:
            return i
    best: tuple[int, int, int] | None = None  # (position, -length, label)
    for i, form in forms:
        m = re.search(rf"(?<!\w){re.escape(form)}(?!\w)", text)
        if m and (best is None or (m.start(), -len(form)) < best[:2]):
            best = (m.start(), -len(form), i)
    return None if best is None else best[2]
