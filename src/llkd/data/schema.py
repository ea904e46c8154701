"""Label schema: the label set, what each label means, and the words the teacher is scored on."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llkd.data.errors import DataError
from llkd.errors import yaml_problem


class _SchemaLoader(yaml.SafeLoader):
    """YAML with scalars kept as written, except null: label names such as ``yes``/``no``,
    ``on``, ``1.0`` or ``007`` are text to the teacher and in gold columns, and YAML 1.1 would
    turn them into booleans and numbers (``[yes, no]`` -> ``True``/``False``)."""


_SchemaLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag == "tag:yaml.org,2002:null"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True)
class Label:
    name: str
    description: str = ""
    verbalizer: str = ""  # words scored as the teacher's answer; defaults to the name
    aliases: tuple[str, ...] = ()  # other spellings of this label in gold columns (e.g. "0")

    @property
    def answer(self) -> str:
        return self.verbalizer or self.name


@dataclass(frozen=True)
class LabelSchema:
    labels: tuple[Label, ...]
    task: str = ""  # one line saying what the texts are, used in the prompt
    _index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.labels) < 2:
            raise DataError(f"a label schema needs at least 2 labels, got {len(self.labels)}")
        index: dict[str, int] = {}
        for i, label in enumerate(self.labels):
            # A blank name would become a pseudo-label no one can read; a blank verbalizer would
            # score the teacher on whitespace.
            if not label.name.strip():
                raise DataError(f"label schema: label {i + 1} has a blank name ({label.name!r})")
            if label.verbalizer and not label.verbalizer.strip():
                raise DataError(f"label schema: label {i + 1} ('{label.name}') has a blank verbalizer ({label.verbalizer!r}); leave it out to use the name")
            for key in (label.name, *label.aliases):
                if key in index and index[key] != i:
                    raise DataError(f"label schema: '{key}' names two labels")
                index[key] = i
        answers = [lab.answer.strip().lower() for lab in self.labels]
        if len(set(answers)) != len(answers):
            raise DataError("label schema: two labels share a verbalizer; the teacher could not tell them apart")
        object.__setattr__(self, "_index", index)

    @property
    def names(self) -> list[str]:
        return [lab.name for lab in self.labels]

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def index(self, value: Any) -> int:
        """Label index of a gold value (name or alias); KeyError if unknown."""
        return self._index[str(value).strip()]

    def fingerprint(self) -> str:
        return "|".join(f"{lab.name}={lab.answer}:{lab.description}" for lab in self.labels) + f"#{self.task}"

    @classmethod
    def from_names(cls, names: list[str], task: str = "") -> "LabelSchema":
        return cls(tuple(Label(n) for n in names), task=task)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "LabelSchema":
        path = Path(path)
        try:
            raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_SchemaLoader)  # noqa: S506 - a SafeLoader subclass
        except FileNotFoundError as e:
            raise DataError(f"{path}: label schema file not found") from e
        except IsADirectoryError as e:
            raise DataError(f"{path}: a folder, not a label schema file") from e
        except yaml.YAMLError as e:
            raise DataError(f"{path}: cannot parse label schema: {yaml_problem(e)}") from e
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: cannot parse label schema: {e}") from e
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: Any, source: str = "label schema") -> "LabelSchema":
        if isinstance(raw, list):
            raw = {"labels": raw}
        if not isinstance(raw, dict) or not isinstance(raw.get("labels"), list):
            raise DataError(f"{source}: expected a 'labels:' list")
        labels = []
        for i, item in enumerate(raw["labels"]):
            if isinstance(item, (str, int)):
                labels.append(Label(str(item)))
            elif isinstance(item, dict) and item.get("name") is not None:
                aliases = item.get("aliases") or []
                if isinstance(aliases, (str, int, float)):  # one alias written without a list
                    aliases = [aliases]
                if not isinstance(aliases, list):
                    raise DataError(f"{source}: label {i + 1} ('{item['name']}'): aliases must be a list of strings")
                labels.append(Label(
                    name=str(item["name"]),
                    description=str(item.get("description") or ""),
                    verbalizer=str(item.get("verbalizer") or ""),
                    aliases=tuple(str(a) for a in aliases),
                ))
            else:
                raise DataError(f"{source}: label {i + 1} needs a 'name'")
        try:
            return cls(tuple(labels), task=str(raw.get("task") or ""))
        except DataError as e:
            raise DataError(f"{source}: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"labels": []}
        if self.task:
            out["task"] = self.task
        for lab in self.labels:
            item: dict[str, Any] = {"name": lab.name}
            if lab.description:
                item["description"] = lab.description
            if lab.verbalizer:
                item["verbalizer"] = lab.verbalizer
            if lab.aliases:
                item["aliases"] = list(lab.aliases)
            out["labels"].append(item)
        return out
