"""The Python API: a teacher that labels texts, a student trained on its answers, and the
selection rule on plain arrays. ``llkd train`` runs the same pipeline functions underneath.

    from llkd import Student, Teacher

    teacher = Teacher("smollm2-135m", labels="labels.yaml")
    answers = teacher.label(texts)                 # cached on disk: a re-run asks only for new texts
    student = Student.train(texts, answers, mode="frozen")
    student.predict(["The Yankees won the series"])
    student.save("my-classifier")                  # a plain Hugging Face folder

Texts can be a list of strings, a list of records, a pandas DataFrame or Series, a Hugging Face
``datasets.Dataset``, or a path (CSV, TSV, JSONL, Parquet, ``save_to_disk`` folder). Labels are
a list of names, the schema YAML's path, or a :class:`LabelSchema`.

:func:`select` runs a selector (LLKD by default) over teacher and student probabilities you
already have, cleanlab-style: arrays in, a mask and loss weights out.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np

from llkd.config import ConfigError, LLKDConfig, SelectionConfig, StudentConfig
from llkd.data.errors import DataError
from llkd.data.loading import TextSet, as_text_set
from llkd.data.schema import LabelSchema
from llkd.evaluation.metrics import ClassificationReport, classification_report
from llkd.pipeline import calibrate_split, pseudo_label, student_probs, train_student
from llkd.teacher.answers import TeacherLabels

LabelsLike = Union[LabelSchema, str, Path, Sequence[str], Mapping[str, Any]]

__all__ = ["EntityStudent", "EntityTeacher", "Student", "Teacher", "TeacherLabels", "as_entity_schema", "as_schema", "select"]


def as_schema(labels: LabelsLike) -> LabelSchema:
    """A label schema from a schema, a YAML path, a list of names or a schema mapping."""
    if isinstance(labels, LabelSchema):
        return labels
    if isinstance(labels, (str, Path)):
        return LabelSchema.from_yaml(labels)
    if isinstance(labels, Mapping):
        return LabelSchema.from_dict(dict(labels))
    names = list(labels)
    if not all(isinstance(n, str) for n in names):
        raise DataError("labels: pass label names (strings), a schema YAML path or a LabelSchema")
    return LabelSchema.from_names(names)


class Teacher:
    """An LLM that labels texts: a packaged short name (``smollm2-135m``), an HF folder or GGUF
    file, or a model on an OpenAI-compatible server (``base_url=``). Answers are cached in
    SQLite (``cache=``, default under ``~/.cache/llkd``), so labelling resumes after a kill
    and a second call asks only for texts not answered yet. ``calibration`` (default: the
    config's, ``auto``) is fitted on the texts of each :meth:`label` call.

    ``options`` are further teacher settings (``batch_size``, ``template``, ``device``,
    ``dtype``, ``concurrency``, ...; see ``llkd label --help``)."""

    def __init__(self, model: str = "smollm2-135m", *, labels: LabelsLike, base_url: str | None = None, backend: str | None = None,
                 calibration: str | None = None, cache: str | Path | None = None, **options: Any) -> None:
        self.schema = as_schema(labels)
        given = {"base_url": base_url, "calibration": calibration, "cache": cache}  # None: the config's default
        raw = {"model": model, "backend": backend or ("openai" if base_url else "hf"), **{k: v for k, v in given.items() if v is not None}, **options}
        self.config = LLKDConfig.validated({"teacher": raw}, source="Teacher").teacher

    def label(self, texts: Any, *, calibrated_on: TeacherLabels | None = None, dev: Any = None, text_column: str = "text",
              id_column: str | None = None, label_column: str = "label", progress: bool = True) -> TeacherLabels:
        """The teacher's answers for ``texts``. Calibration (if any) is fitted on these texts,
        or, with ``calibrated_on``, reuses the calibrator fitted on another call's texts (label
        the pool first, then a test split ``calibrated_on=pool_answers``). ``dev``: gold-labelled
        texts; ``auto`` calibration chooses its calibrator on them and ``prior`` estimates the
        class prior from the teacher's answers calibrated there (``answers.calibrator.state()`` says
        what was chosen and why)."""
        data = as_text_set(texts, text_column, id_column, schema=self.schema)
        if calibrated_on is not None:
            if calibrated_on.calibrator is None:
                raise ValueError("calibrated_on: these answers carry no fitted calibrator (pass answers returned by Teacher.label)")
            return calibrate_split(self.config, self.schema, data, calibrated_on.calibrator, progress=progress)
        dev_set = as_text_set(dev, text_column, id_column, label_column, self.schema, require_labels=True) if dev is not None else None
        return pseudo_label(self.config, self.schema, data, progress=progress, dev=dev_set)

    def __repr__(self) -> str:
        return f"Teacher({self.config.model!r}, backend={self.config.backend!r}, labels={self.schema.names})"


def _teacher_probs(teacher: Any, n: int, schema: LabelSchema | None) -> np.ndarray:
    """[N, C] probabilities from TeacherLabels, any object with ``.probs``, an
    array, or hard pseudo-labels (names or indices; one-hot, so the teacher side of LLKD sees
    confidence 1 everywhere)."""
    arr = np.asarray(getattr(teacher, "probs", teacher))
    if arr.ndim == 1:
        if schema is None:
            raise DataError("hard pseudo-labels need labels= (the label names)")
        try:
            ids = [schema.index(v) if isinstance(v, str) else int(v) for v in arr.tolist()]
        except KeyError as e:
            raise DataError(f"pseudo-label {e} is not in the label schema ({', '.join(schema.names)})") from e
        arr = np.eye(schema.num_labels)[ids]
    arr = arr.astype(np.float64)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise DataError(f"teacher answers have shape {arr.shape} for {n} texts")
    return arr


class Student:
    """A trained student: a plain Hugging Face folder (safetensors, config with ``id2label``,
    tokenizer) plus ``llkd.json``. Make one with :meth:`train` or :meth:`load`."""

    def __init__(self, folder: str | Path, schema: LabelSchema, *, result: Any = None, config: LLKDConfig | None = None,
                 pool: TextSet | None = None, teacher_probs: np.ndarray | None = None, train_seconds: float | None = None) -> None:
        self.folder = Path(folder)
        self.schema = schema
        self.result = result  # TrainResult of the run that made it (None when loaded)
        self.config = config
        self._pool = pool
        self._teacher_probs = teacher_probs
        self.train_seconds = train_seconds
        self.distillation: dict[str, Any] | None = None  # Student.distill's rounds, calls, tokens and cost

    @property
    def labels(self) -> list[str]:
        return self.schema.names

    @classmethod
    def train(cls, texts: Any, teacher: Any, *, labels: LabelsLike | None = None, selector: str = "llkd", mode: str = "finetune",
              model: str = "minilm", dev: Any = None, output: str | Path | None = None, text_column: str = "text",
              id_column: str | None = None, label_column: str = "label", progress: bool = True, **options: Any) -> "Student":
        """Train a student on ``texts`` with the teacher's answers (:class:`TeacherLabels`,
        an [N, C] probability array, or hard pseudo-labels). ``mode``: ``finetune`` (encoder
        and head) or ``frozen`` (encoder run once, embeddings cached, only the head trains:
        seconds on a CPU). ``dev``: gold-labelled texts scored after each epoch.

        ``options`` are selection settings (``momentum``, ``weighted``, ``soft_targets``, ...)
        and student settings (``epochs``, ``batch_size``, ``lr``, ``max_length``, ``seed``, ...),
        routed by name; ``llkd train --help`` documents each. ``output`` (default: a new
        temporary folder) receives the model (``output/model``), the step log and checkpoints;
        training there again resumes."""
        schema = as_schema(labels) if labels is not None else getattr(teacher, "schema", None)
        if schema is None:
            raise DataError("labels= is needed (label names or the schema YAML) unless the teacher's answers carry them")
        if texts is None and isinstance(teacher, TeacherLabels) and teacher.texts is not None:
            pool = teacher.texts
        else:  # gold labels in the pool, if any, are read for the report's reliability only
            pool = as_text_set(texts, text_column, id_column, label_column, schema=schema)
        probs = _teacher_probs(teacher, len(pool), schema)
        selection: dict[str, Any] = {"selector": selector}
        student: dict[str, Any] = {"model": model, "mode": mode, "output": output or tempfile.mkdtemp(prefix="llkd-student-")}
        for key, value in options.items():
            if key in SelectionConfig.model_fields:
                selection[key] = value
            elif key in StudentConfig.model_fields:
                student[key] = value
            else:
                raise ConfigError(f"Student.train: unknown option '{key}'; selection options: {', '.join(SelectionConfig.model_fields)}; "
                                  f"student options: {', '.join(StudentConfig.model_fields)}")
        cfg = LLKDConfig.validated({"selection": selection, "student": student}, source="Student.train")
        dev_set = as_text_set(dev, text_column, id_column, label_column, schema, require_labels=True) if dev is not None else None
        calibrator = getattr(teacher, "calibrator", None)
        prior = getattr(calibrator, "class_prior", None)  # the guard's target; None: the pseudo-labels' shares
        result, meter = train_student(cfg, schema, pool, probs, dev_set, progress=progress, class_prior=prior)
        return cls(result.model_dir, schema, result=result, config=cfg, pool=pool, teacher_probs=probs, train_seconds=meter.seconds)

    @classmethod
    def distill(cls, texts: Any, teacher: "Teacher", *, budget: str | int = "20%", acquisition: str | None = None, selector: str = "llkd",
                mode: str = "finetune", model: str = "minilm", dev: Any = None, output: str | Path | None = None, text_column: str = "text",
                id_column: str | None = None, label_column: str = "label", progress: bool = True, **options: Any) -> "Student":
        """Train a student asking ``teacher`` about as few of ``texts`` as ``budget`` allows (a
        count, or a share such as ``"20%"``): rounds of train -> choose the most useful unanswered
        texts (``acquisition``, default the config's) -> ask, then the final student on every
        answer (``llkd distill``; docs/method.md section 10). ``options``: selection, student and
        distill settings by name (``budget_tokens``, ``budget_usd``, ``seed_size``, ``growth``,
        ``stop_change``, ``epochs``, ...). ``student.distillation`` holds the rounds, calls,
        tokens and cost; training in the same ``output`` again resumes, asking nothing twice."""
        from llkd.config import DistillConfig
        from llkd.distill import TeacherSource, distill, resolve_limits

        schema = teacher.schema
        pool = as_text_set(texts, text_column, id_column, label_column, schema=schema)
        sections: dict[str, dict[str, Any]] = {"selection": {"selector": selector}, "distill": {"budget": str(budget)},
                                               "student": {"model": model, "mode": mode, "output": output or tempfile.mkdtemp(prefix="llkd-student-")}}
        if acquisition is not None:
            sections["distill"]["acquisition"] = acquisition
        for key, value in options.items():
            where = next((name for name, kind in (("selection", SelectionConfig), ("student", StudentConfig), ("distill", DistillConfig))
                          if key in kind.model_fields), None)
            if where is None:
                raise ConfigError(f"Student.distill: unknown option '{key}' (selection, student or distill settings by name)")
            sections[where][key] = value
        cfg = LLKDConfig.validated({**sections, "teacher": teacher.config.model_dump()}, source="Student.distill")
        dev_set = as_text_set(dev, text_column, id_column, label_column, schema, require_labels=True) if dev is not None else None
        resolve_limits(cfg, len(pool))  # a bad budget: one line, before the teacher loads
        source = TeacherSource(cfg, schema, pool, progress=progress)
        try:
            result = distill(cfg, schema, pool, source, dev=dev_set, progress=progress)
        finally:
            source.close()
        trained, meter = train_student(cfg, schema, pool, result.probs, dev_set, progress=progress, class_prior=result.class_prior)
        student = cls(trained.model_dir, schema, result=trained, config=cfg, pool=pool, teacher_probs=result.probs, train_seconds=meter.seconds)
        student.distillation = result.summary()
        return student

    @classmethod
    def load(cls, folder: str | Path) -> "Student":
        """A student saved by llkd (``Student.save``, ``llkd train``'s ``output/model``)."""
        from llkd.student.model import METADATA

        folder = Path(folder)
        meta = folder / METADATA
        if not (folder / "config.json").exists() or not meta.exists():
            raise FileNotFoundError(f"{folder}: not a student saved by llkd (needs config.json and {METADATA})")
        return cls(folder, LabelSchema.from_dict(json.loads(meta.read_text(encoding="utf-8"))["schema"], source=str(meta)))

    def save(self, folder: str | Path) -> Path:
        """Copy the model folder to ``folder`` (loads with :meth:`load`, or with plain
        transformers: ``AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)``)."""
        folder = Path(folder)
        if folder.resolve() != self.folder.resolve():
            shutil.copytree(self.folder, folder, dirs_exist_ok=True)
        return folder

    def predict_proba(self, texts: Any, *, text_column: str = "text") -> np.ndarray:
        """Class probabilities [N, C], columns in the order of :attr:`labels`."""
        data = as_text_set(texts, text_column, label_column=None)
        probs, _ = student_probs(self.folder, data.texts)
        return probs

    def predict(self, texts: Any, *, text_column: str = "text") -> list[str]:
        """The predicted label name per text."""
        return [self.schema.names[i] for i in self.predict_proba(texts, text_column=text_column).argmax(axis=1)]

    def evaluate(self, data: Any, *, text_column: str = "text", label_column: str = "label") -> ClassificationReport:
        """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix on
        gold-labelled texts (a file, DataFrame, Dataset or records with a label column)."""
        gold = as_text_set(data, text_column, None, label_column, self.schema, require_labels=True)
        assert gold.labels is not None
        probs, _ = student_probs(self.folder, gold.texts)
        return classification_report(gold.labels, probs.argmax(axis=1), self.schema.names)

    def write_report(self, test: Any = None, *, test_teacher: TeacherLabels | np.ndarray | None = None, text_column: str = "text",
                     label_column: str = "label") -> Path:
        """Write ``report.md`` and its plots next to the training run's step log (what
        ``llkd train`` writes): selection over steps, the class mix of the selected samples,
        dev history, and with gold-labelled ``test`` texts the per-class F1, confusion matrix and
        reliability; ``test_teacher`` (the teacher's answers for ``test``) adds the teacher's side."""
        from llkd.reporting.run_report import ScoredSplit, run_settings, write_run_report

        if self.result is None or self.config is None or self._teacher_probs is None:
            raise RuntimeError("a report needs the training run: only a student made by Student.train in this session has one")
        scored = None
        if test is not None:
            gold = as_text_set(test, text_column, None, label_column, self.schema, require_labels=True)
            assert gold.labels is not None
            teacher_probs = test_teacher.probs if isinstance(test_teacher, TeacherLabels) else test_teacher
            scored = ScoredSplit(gold.source or "test", np.asarray(gold.labels), student_probs(self.folder, gold.texts)[0], teacher_probs)
        pool_gold = self._pool.labels if self._pool is not None else None
        return write_run_report(self.config.student.output, self.schema, self.result, self._teacher_probs,
                                settings=run_settings(self.config, self.train_seconds), pool_gold=pool_gold, test=scored)

    def __repr__(self) -> str:
        return f"Student({str(self.folder)!r}, labels={self.labels})"


def select(teacher_probs: Any, student_probs: Any = None, *, selector: str = "llkd", batch_size: int | None = None, seed: int = 0,
           class_prior: Any = None, **options: Any) -> tuple[np.ndarray, np.ndarray]:
    """Run a selector over arrays: which samples to train on, and with what loss weight.

    ``teacher_probs`` [N, C] (rows with NaN: no teacher answer, never selected) and, for
    selectors that look at the student (``llkd``, ``student_adaptive``, ``freematch``),
    ``student_probs`` [N, C]. Samples are taken in order in batches of ``batch_size`` (default:
    all N as one batch); adaptive thresholds start from the first batch and move by ``momentum``
    per batch, as in training. ``class_prior``: the class shares the class-balance guard aims
    at (default: the shares of the teacher's pseudo-labels). ``options`` are selection
    settings (``momentum``, ``weighted``, ``init``, ``fixed_threshold``, ``keep_rate``, ...).

    Returns ``(mask, weights)``: mask [N] bool; weights [N] float, mean 1 over the selected
    samples of each batch and 0 elsewhere."""
    import torch

    from llkd.selection.selectors import SelectionBatch, build_selector

    t = np.asarray(teacher_probs, dtype=np.float64)
    if t.ndim != 2 or t.shape[1] < 2:
        raise ValueError(f"teacher_probs must be [N, C] with C >= 2, got shape {t.shape}")
    s = None if student_probs is None else np.asarray(student_probs, dtype=np.float64)
    if s is not None and s.shape != t.shape:
        raise ValueError(f"student_probs has shape {s.shape}, teacher_probs {t.shape}")
    cfg = LLKDConfig.validated({"selection": {"selector": selector, **options}}, source="select").selection
    rows = np.flatnonzero(~np.isnan(t).any(axis=1))
    mask = np.zeros(len(t), dtype=bool)
    weights = np.zeros(len(t), dtype=np.float64)
    if not len(rows):
        return mask, weights
    if class_prior is None:
        from llkd.teacher.calibration import vote_shares

        class_prior = vote_shares(t[rows])  # the pseudo-labels' class mix
    chooser = build_selector(cfg, t.shape[1], len(rows), seed, np.asarray(class_prior, dtype=np.float64))
    if chooser.needs_student and s is None:
        raise ValueError(f"selector '{selector}' needs student_probs")
    size = batch_size or len(rows)
    if size < 1:
        raise ValueError("batch_size must be >= 1")
    for start in range(0, len(rows), size):
        idx = rows[start : start + size]
        probs = torch.from_numpy(t[idx]).float()
        batch = SelectionBatch(
            indices=torch.arange(start, start + len(idx)),  # position among the answered rows (the random selector's keep set)
            pseudo_labels=probs.argmax(dim=1),
            teacher_probs=probs,
            student_probs=None if s is None else torch.from_numpy(s[idx]).float(),
        )
        out = chooser.select(batch)
        mask[idx] = out.mask.numpy()
        weights[idx] = out.weights.numpy()
    return mask, weights


# --------------------------------------------------------------------------- entities

EntitiesLike = Union["EntitySchema", str, Path, Sequence[str], Mapping[str, Any]]


def as_entity_schema(entities: Any) -> Any:
    """An entity schema from a schema, a YAML path, a list of type names or a schema mapping."""
    from llkd.data.entities import EntitySchema

    if isinstance(entities, EntitySchema):
        return entities
    if isinstance(entities, (str, Path)):
        return EntitySchema.from_yaml(entities)
    if isinstance(entities, Mapping):
        return EntitySchema.from_dict(dict(entities))
    names = list(entities)
    if not names or not all(isinstance(n, str) for n in names):
        raise DataError("entities: pass entity type names (strings), a schema YAML path or an EntitySchema")
    return EntitySchema.from_names(names)


def _entity_texts(texts: Any, schema: Any = None) -> tuple[list[str], list[str], Any]:
    """(ids, texts, the EntitySet or None) of a list of strings, an EntitySet, or a CoNLL/IOB
    or JSONL path (gold spans, if the file has them, come with the EntitySet)."""
    from llkd.data.entities import EntitySet, load_entities

    if isinstance(texts, (str, Path)):
        texts = load_entities(texts, schema)
    if isinstance(texts, EntitySet):
        return texts.ids, texts.texts, texts
    items = list(texts)
    if not all(isinstance(t, str) for t in items):
        raise DataError("texts: pass a list of strings, an EntitySet, or a CoNLL/IOB or JSONL path")
    blank = next((i for i, t in enumerate(items) if not t.strip()), None)
    if blank is not None:
        raise DataError(f"texts: text {blank + 1} is empty or whitespace-only")
    return [str(i) for i in range(len(items))], items, None


class EntityTeacher:
    """An LLM that lists the named entities of texts (a packaged short name such as
    ``smollm2-135m``, an HF folder or a GGUF file; the ``hf`` backend). Answers are cached in
    SQLite (``cache=``) like the classification teacher's, so a second call asks only for new
    texts. ``entities``: type names, the entity schema YAML's path or an ``EntitySchema``.
    ``options``: ``batch_size``, ``template``, ``device``, ``dtype``."""

    def __init__(self, model: str = "smollm2-135m", *, entities: EntitiesLike, cache: str | Path | None = None, max_new_tokens: int | None = None,
                 max_text_tokens: int | None = None, examples: Sequence[dict[str, Any]] | None = None, **options: Any) -> None:
        from llkd import entity_pipeline

        self.schema = as_entity_schema(entities)
        raw = {"model": model, "backend": "hf", **({"cache": cache} if cache is not None else {}), **options}
        cfg = LLKDConfig.validated({"teacher": raw}, source="EntityTeacher")
        entity_pipeline.check_settings(cfg, ("teacher",))
        entity_pipeline.check_teacher_settings(cfg.teacher)
        self.config = cfg.teacher
        self.max_new_tokens = max_new_tokens or entity_pipeline.MAX_NEW_TOKENS
        self.max_text_tokens = max_text_tokens or entity_pipeline.MAX_TEXT_TOKENS
        self.examples = examples
        self._backend: Any = None  # loaded on the first label()

    def label(self, texts: Any, *, progress: bool = True) -> Any:
        """The teacher's :class:`~llkd.teacher.entities.EntityLabels`: ``.answers[i].spans``
        (start, end, type, confidence in characters of text i; None where it gave no answer),
        ``.spans()`` without confidences, ``.failures``, ``.n_cached`` / ``.n_asked``."""
        from llkd import entity_pipeline

        ids, items, _ = _entity_texts(texts, self.schema)
        if self._backend is None:
            self._backend = entity_pipeline.build_teacher(self.config, self.schema, self.examples, self.max_new_tokens, self.max_text_tokens)
        return entity_pipeline.ask(self._backend, self.config.cache_path(), items, ids, progress=progress)

    def close(self) -> None:
        """Free the model (the next label() loads it again)."""
        self._backend = None

    def __repr__(self) -> str:
        return f"EntityTeacher({self.config.model!r}, entities={self.schema.names})"


class EntityStudent:
    """A trained token-classification student: a plain Hugging Face folder
    (``AutoModelForTokenClassification``, labels the BIO tags) plus ``llkd.json`` with the
    entity schema. Make one with :meth:`train` or :meth:`load`."""

    def __init__(self, folder: str | Path, *, result: Any = None) -> None:
        from llkd import entity_pipeline

        self.folder = Path(folder)
        self.model, self.tokenizer, self.schema, self.rest, self.max_length = entity_pipeline.load_student(self.folder)
        self.result = result  # TokenTrainResult of the run that made it (None when loaded)

    @property
    def entities(self) -> list[str]:
        return self.schema.names

    @classmethod
    def train(cls, texts: Any, answers: Any, *, entities: EntitiesLike | None = None, selector: str = "llkd", model: str = "minilm",
              dev: Any = None, output: str | Path | None = None, **options: Any) -> "EntityStudent":
        """Train on ``texts`` with the teacher's answers: the :class:`EntityLabels` of
        :meth:`EntityTeacher.label` (texts it did not answer are left out), or one list of
        spans per text ((start, end, type[, confidence]) tuples or dicts; then ``entities=``
        names the types). ``selector``: llkd, all, fixed, teacher_adaptive or soft. ``dev``:
        gold entity data scored after each epoch. ``options``: selection and student settings
        by name (``epochs``, ``batch_size``, ``lr``, ``max_length``, ``seed``, ``threads``,
        ``momentum``, ...). The model goes to ``output/model`` (default: a temporary folder)."""
        from llkd import entity_pipeline
        from llkd.data.entities import EntitySet

        schema = as_entity_schema(entities) if entities is not None else getattr(answers, "schema", None)
        if schema is None:
            raise DataError("entities= is needed (type names or the schema YAML) unless the answers carry the schema")
        _, items, _ = _entity_texts(texts, schema)
        if hasattr(answers, "answers"):  # EntityLabels
            rows, spans, outside = entity_pipeline.teacher_targets(answers)
            if len(answers) != len(items):
                raise DataError(f"{len(answers)} teacher answers for {len(items)} texts")
            items = [items[i] for i in rows]
        else:
            spans, outside = [list(s) for s in answers], None
            if len(spans) != len(items):
                raise DataError(f"{len(spans)} span lists for {len(items)} texts")
        sections: dict[str, dict[str, Any]] = {"selection": {"selector": selector},
                                               "student": {"model": model, "output": output or tempfile.mkdtemp(prefix="llkd-entities-")}}
        for key, value in options.items():
            where = next((name for name, kind in (("selection", SelectionConfig), ("student", StudentConfig)) if key in kind.model_fields), None)
            if where is None:
                raise ConfigError(f"EntityStudent.train: unknown option '{key}' (selection or student settings by name)")
            sections[where][key] = value
        cfg = LLKDConfig.validated(sections, source="EntityStudent.train")
        entity_pipeline.check_settings(cfg, ("selection", "student"))
        dev_set = dev if dev is None or isinstance(dev, EntitySet) else _entity_texts(dev, schema)[2]
        result = entity_pipeline.train_student(cfg, schema, items, spans, outside, dev_set)
        return cls(result.model_dir, result=result)

    @classmethod
    def load(cls, folder: str | Path) -> "EntityStudent":
        """A student saved by :meth:`save` or ``llkd train`` (``output/model``)."""
        return cls(folder)

    def save(self, folder: str | Path) -> Path:
        """Copy the model folder to ``folder`` (loads with :meth:`load`, or with plain
        transformers: ``AutoModelForTokenClassification.from_pretrained(folder)``)."""
        folder = Path(folder)
        if folder.resolve() != self.folder.resolve():
            shutil.copytree(self.folder, folder, dirs_exist_ok=True)
        return folder

    def predict(self, texts: Any) -> list[list[Any]]:
        """Per text, its entity spans ``Span(start, end, type)`` in characters of the text."""
        from llkd import entity_pipeline

        _, items, _ = _entity_texts(texts, self.schema)
        return entity_pipeline.predict_texts(self.model, self.tokenizer, items, self.schema, self.max_length, self.rest)

    def evaluate(self, gold: Any) -> Any:
        """Strict span precision / recall / F1 per type (``EntityReport``; ``.table()`` prints
        it) on gold entity data: an EntitySet, a CoNLL/IOB or JSONL path, or (texts, spans)."""
        from llkd.evaluation.entity_metrics import entity_report

        if isinstance(gold, tuple) and len(gold) == 2:
            texts, spans = list(gold[0]), list(gold[1])
        else:
            _, texts, data = _entity_texts(gold, self.schema)
            if data is None or data.spans is None:
                raise DataError("evaluate needs gold spans: an EntitySet, a labelled CoNLL/IOB or JSONL file, or (texts, spans)")
            spans = data.spans
        return entity_report(spans, self.predict(texts), self.schema.names)

    def __repr__(self) -> str:
        return f"EntityStudent({str(self.folder)!r}, entities={self.entities})"
