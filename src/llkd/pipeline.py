"""The pipeline as functions: data -> teacher -> selection/student -> evaluation.

The CLI commands and the benchmark are thin layers over these.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llkd.config import DataConfig, LLKDConfig, TeacherConfig
from llkd.data.errors import DataError
from llkd.data.loading import TextSet, load_texts
from llkd.data.schema import LabelSchema
from llkd.evaluation.metering import StageMeter
from llkd.evaluation.metrics import ClassificationReport, classification_report
from llkd.teacher.cache import TeacherCache
from llkd.teacher.calibration import CALIBRATORS, CONTENT_FREE, Calibrator, LabelledAnswers
from llkd.teacher.answers import TeacherLabels
from llkd.teacher.labeling import build_teacher, label_texts

log = logging.getLogger(__name__)


def bundled_demo_data() -> DataConfig:
    """The AG News slice shipped with llkd (400 pool texts, 300 labelled test texts, 4 labels)."""
    from importlib import resources

    root = Path(str(resources.files("llkd.resources").joinpath("demo")))
    return DataConfig(test=root / "agnews_test.jsonl", pool=root / "agnews_pool.jsonl", labels=root / "agnews_labels.yaml", id_column="id")


def load_schema(data: DataConfig) -> LabelSchema:
    if data.labels is None:
        raise DataError("no label schema given (data.labels / --data-labels)")
    return LabelSchema.from_yaml(data.labels)


def load_split(data: DataConfig, which: str, schema: LabelSchema, require_labels: bool = False) -> TextSet:
    path = getattr(data, which)
    if path is None:
        raise DataError(f"no {which} file given (data.{which} / --data-{which})")
    return load_texts(path, data.text_column, data.id_column, data.label_column, schema, require_labels=require_labels)


def pseudo_label(cfg: TeacherConfig, schema: LabelSchema, texts: TextSet, progress: bool = True, desc: str = "teacher",
                 dev: TextSet | None = None) -> TeacherLabels:
    """Teacher answers for the unlabeled pool (cached), calibrated as configured: the
    calibrator is fitted on these answers and returned, so other splits get the same reference
    (:func:`calibrate_split`). ``dev``: a labelled split; calibrators that use one (auto,
    prior) also get the teacher's answers on it (cached too)."""
    calibrator = CALIBRATORS.get(cfg.calibration)()
    run = _answers(cfg, schema, texts, progress, desc, calibrator, fit=True, dev=dev)
    log.info("calibration fitted on the pool: %s", calibrator.state())
    return run


def calibrate_split(cfg: TeacherConfig, schema: LabelSchema, texts: TextSet, calibrator: Calibrator, progress: bool = True,
                    desc: str = "teacher") -> TeacherLabels:
    """Teacher answers for another split (test, dev), calibrated with the pool's fitted
    calibrator: a split is never calibrated with its own statistics."""
    return _answers(cfg, schema, texts, progress, desc, calibrator, fit=False)


def calibration_summary(calibrator: Calibrator) -> str:
    """One line for the console and the run report: which calibration, fitted how."""
    st = calibrator.state()
    prior = ", ".join(f"{v:.3f}" for v in st.get("class_prior") or [])
    if st["name"] == "auto":
        inner = st["fitted"]
        where = f" ({inner['target']})" if "target" in inner else ""
        return f"calibration auto -> {st['chosen']}{where}: {st['reason']}; estimated class prior [{prior}]"
    where = f" toward {st['target']}" if "target" in st else ""
    return f"calibration {st['name']}{where}; estimated class prior [{prior}]"


def _answers(cfg: TeacherConfig, schema: LabelSchema, texts: TextSet, progress: bool, desc: str, calibrator: Calibrator, fit: bool,
             dev: TextSet | None = None) -> TeacherLabels:
    """Raw answers through the cache, then ``calibrator`` (fitted on these answers first when ``fit``)."""
    with StageMeter("teacher") as meter, TeacherCache(cfg.cache_path()) as cache:
        teacher = build_teacher(cfg, schema)
        try:
            raw = label_texts(teacher, texts.texts, cache, ids=texts.ids, progress=progress, desc=desc)
            if fit:
                content_free = None
                if calibrator.needs_content_free:
                    content_free = label_texts(teacher, [CONTENT_FREE], cache, progress=False).probs[0]
                dev_answers = None
                if calibrator.uses_dev and dev is not None and dev.labels is not None:
                    dev_probs = label_texts(teacher, dev.texts, cache, ids=dev.ids, progress=progress, desc=f"{desc}[dev]").probs
                    dev_answers = LabelledAnswers(dev_probs, np.asarray(dev.labels))
                calibrator.fit(raw.probs, content_free, dev_answers)
        finally:
            teacher.close()
    answers = raw.with_probs(calibrator.apply(raw.probs), calibrator)
    answers.texts, answers.meter = texts, meter
    return answers


def evaluate_probs(probs: np.ndarray, gold: list[int], schema: LabelSchema) -> ClassificationReport:
    return classification_report(gold, probs.argmax(axis=1), schema.names)


def train_student(cfg: LLKDConfig, schema: LabelSchema, pool: TextSet, teacher_probs: np.ndarray, dev: TextSet | None = None, progress: bool = True,
                  class_prior: np.ndarray | None = None) -> tuple[Any, StageMeter]:
    """``class_prior``: the pool's class shares from the teacher's calibration
    (``TeacherLabels.calibrator.class_prior``), the class-balance guard's target."""
    from llkd.student.trainer import StudentTrainer

    trainer = StudentTrainer(cfg.student, cfg.selection, schema, pool, teacher_probs, dev=dev, progress=progress, class_prior=class_prior)
    with StageMeter("student") as meter:
        result = trainer.train()
    return result, meter


def student_probs(model_dir: str | Path, texts: list[str], max_length: int | None = None, reuse_embeddings: bool = True) -> tuple[np.ndarray, LabelSchema]:
    """A trained student's class probabilities, computed the way it was trained: same dtype,
    same token budget; a frozen student reuses the cached embeddings of its encoder."""
    from llkd.student.embeddings import cached_embeddings
    from llkd.student.model import METADATA, load_trained, predict_probs

    model, tokenizer, schema = load_trained(model_dir)
    meta_path = Path(model_dir) / METADATA
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    max_length = max_length or int(meta.get("max_length", 128))
    dtype = str(meta.get("dtype", "float32"))
    embeddings = None
    if meta.get("mode") == "frozen" and reuse_embeddings:
        embeddings, _ = cached_embeddings(model, tokenizer, texts, max_length, dtype)
    return predict_probs(model, tokenizer, texts, max_length, dtype=dtype, embeddings=embeddings), schema


def evaluate_student(model_dir: str | Path, test: TextSet, max_length: int | None = None) -> tuple[ClassificationReport, np.ndarray, StageMeter]:
    with StageMeter("evaluate") as meter:
        probs, schema = student_probs(model_dir, test.texts, max_length)
    if test.labels is None:
        raise DataError(f"{test.source}: evaluation needs gold labels")
    return evaluate_probs(probs, test.labels, schema), probs, meter


def require_answers(answers: TeacherLabels) -> None:
    """Stop with one line when no pool text got a teacher answer (nothing to train on)."""
    if not answers.answered.any():
        failures = answers.failures
        example = next(iter(failures.values()), "no reason recorded")
        raise DataError(f"no pool text got a teacher answer ({len(failures)} failed; e.g. {example}); nothing to train on")


@dataclass
class StudentRun:
    """A trained student and what it scored on each labelled split it was evaluated on."""

    result: Any  # llkd.student.result.TrainResult
    train: StageMeter
    reports: dict[str, ClassificationReport]
    probs: dict[str, np.ndarray]  # the student's probabilities per split, rows as the split's texts
    evaluate: dict[str, StageMeter]
    main_process: bool = True  # False on the other ranks of a multi-process run: they evaluate nothing


def is_main_process() -> bool:
    """Rank 0 of a torchrun / accelerate launch (or the only process). Asked after training,
    once the trainer has set up the distributed state."""
    from accelerate import PartialState

    return PartialState().is_main_process


def train_and_evaluate(cfg: LLKDConfig, schema: LabelSchema, pool: TextSet, teacher_probs: np.ndarray, *, class_prior: np.ndarray | None = None,
                       dev: TextSet | None = None, evaluate_on: dict[str, TextSet] | None = None, progress: bool = True) -> StudentRun:
    """The pipeline's student half, the one place its order is written: train on the
    calibrated answers (``dev`` scored after each epoch, the class-balance guard aiming at
    ``class_prior``), then score the saved student on each labelled split of ``evaluate_on``
    the way it was trained (same dtype and token budget; under several processes rank 0 alone). The teacher half is
    :func:`pseudo_label` on the pool and :func:`calibrate_split` for every other split."""
    result, meter = train_student(cfg, schema, pool, teacher_probs, dev, progress=progress, class_prior=class_prior)
    run = StudentRun(result, meter, {}, {}, {}, is_main_process())
    for name, texts in (evaluate_on or {}).items() if run.main_process else ():
        run.reports[name], run.probs[name], run.evaluate[name] = evaluate_student(result.model_dir, texts, cfg.student.max_length)
    return run


def write_json(path: str | Path, obj: Any) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=2, default=str))
