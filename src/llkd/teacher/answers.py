"""The one container for a teacher's answers, used by every layer: the labelling loop fills
it, the pipeline calibrates it, the Python API hands it to users, the student trains on its
probabilities. One meaning for "no answer" everywhere: a row of NaN probabilities, label id -1,
label None, confidence NaN, and the reason in ``failures``."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llkd.data.export import answer_rows, rows_to_dataset, write_answers
from llkd.data.loading import TextSet
from llkd.data.schema import LabelSchema
from llkd.teacher.cost import TokenUsage

if TYPE_CHECKING:
    from llkd.evaluation.metering import StageMeter
    from llkd.teacher.calibration import Calibrator

__all__ = ["TeacherLabels", "NO_ANSWER"]

NO_ANSWER = -1  # the label id of a text the teacher did not answer


@dataclass
class TeacherLabels:
    """A teacher's answers for a list of texts, rows aligned with ``texts``.

    ``probs`` [N, C] are raw as the teacher gave them, or calibrated when ``calibrator`` is set
    (fitted on the pool; a test split's answers are calibrated with the pool's calibrator)."""

    probs: np.ndarray  # [N, C]; a row of NaN: no answer
    methods: list[str]  # how each answer was read ("verbalizer", "first_token_logprobs", "vote"); "" for none
    failures: dict[int, str] = field(default_factory=dict)  # row -> why the teacher gave no answer (a re-run retries it)
    identity: str = ""  # the teacher's identity (model, template, backend): its cache key
    schema: LabelSchema | None = None
    texts: TextSet | None = None
    calibrator: Calibrator | None = None  # fitted on the pool; Teacher.label(..., calibrated_on=) reuses it
    n_cached: int = 0  # answers found in the cache
    n_asked: int = 0  # texts the teacher was asked about in this call
    meter: StageMeter | None = None  # wall time and memory of the call
    usage: TokenUsage = field(default_factory=TokenUsage)  # what this call's teacher requests cost (cache hits: nothing)

    def __len__(self) -> int:
        return len(self.probs)

    @property
    def answered(self) -> np.ndarray:
        return ~np.isnan(self.probs).any(axis=1)

    @property
    def label_ids(self) -> np.ndarray:
        """Pseudo-label index per text; ``NO_ANSWER`` (-1) where the teacher gave none."""
        return np.where(self.answered, np.nan_to_num(self.probs, nan=0.0).argmax(axis=1), NO_ANSWER)

    @property
    def labels(self) -> list[str | None]:
        """Pseudo-label name per text; None where the teacher gave no answer."""
        names = self._schema().names
        return [names[i] if i >= 0 else None for i in self.label_ids]

    @property
    def confidence(self) -> np.ndarray:
        """The teacher's top probability per text; NaN where it gave no answer."""
        return np.where(self.answered, np.nan_to_num(self.probs, nan=0.0).max(axis=1), np.nan)

    def with_probs(self, probs: np.ndarray, calibrator: Calibrator | None = None) -> "TeacherLabels":
        """The same answers with other probabilities (calibrated): a copy, so raw answers stay raw."""
        return replace(self, probs=probs, calibrator=calibrator if calibrator is not None else self.calibrator)

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per text: id, text, pseudo_label, confidence, probs, method, failure."""
        texts = self._texts()
        return answer_rows(texts.ids, texts.texts, self.probs, self._schema().names, self.methods, self.failures)

    def to_dataset(self) -> Any:
        """A Hugging Face ``datasets.Dataset`` of :meth:`to_records` (needs ``llkd[hf]``)."""
        return rows_to_dataset(self.to_records())

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame.from_records(self.to_records())

    def save(self, path: str | Path) -> Path:
        """A .jsonl or .parquet file, or (a path without a suffix) a ``save_to_disk`` folder."""
        write_answers(self.to_records(), path)
        return Path(path)

    def _schema(self) -> LabelSchema:
        if self.schema is None:
            raise ValueError("these answers carry no label schema")
        return self.schema

    def _texts(self) -> TextSet:
        if self.texts is None:
            raise ValueError("these answers carry no texts")
        return self.texts
