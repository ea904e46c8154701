"""The entity pipeline (``data.task: entities``): entity data -> entity teacher -> token
student with token-level selection -> strict span evaluation. The commands ``label``,
``train``, ``predict`` and ``export`` branch here once, at the top of their ``run()``; the
Python API's ``EntityTeacher`` and ``EntityStudent`` use the same functions.

What the one config means for entities:

* ``data.labels`` is the entity schema YAML (:meth:`EntitySchema.from_yaml`); ``data.pool``,
  ``data.test`` and ``data.dev`` are CoNLL/IOB or JSONL files (:func:`load_entities`); test and
  dev need gold tags or spans. A pool's gold, if it has any, is read for the teacher's score only.
* The teacher is the ``hf`` backend's model (:class:`HFEntityTeacher`) with ``teacher.model``,
  ``template``, ``dtype``, ``device``, ``batch_size`` and ``cache``; it writes at most
  :data:`MAX_NEW_TOKENS` tokens per text and reads the first :data:`MAX_TEXT_TOKENS` of it.
* ``selection.selector`` is one of the token selectors (:data:`TOKEN_SELECTORS`), with
  ``momentum``, ``fixed_threshold``, ``weighted`` and ``student_threshold``.
* The student fine-tunes (``student.mode`` finetune) on the CPU with ``model``, ``max_length``,
  ``batch_size``, ``epochs`` (whole passes), ``lr``, ``head_lr`` (default
  :data:`TOKEN_HEAD_LR`), ``seed``, ``threads`` and ``output`` (the model goes to
  ``output/model``).

Any other setting given with a value other than its default is refused in one line (it would
be silently ignored otherwise), before a model loads.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from llkd.config import ConfigError, DataConfig, LLKDConfig, SelectionConfig, TeacherConfig
from llkd.data.entities import CONLL_SUFFIXES, JSONL_SUFFIXES, EntitySchema, EntitySet, load_entities
from llkd.data.errors import DataError
from llkd.models import ModelNotFound

TASK = "entities"
STUDENT_TASK = "token-classification"  # llkd.json's task of a token student (llkd.student.tokens.TASK)
MAX_NEW_TOKENS = 64  # tokens the entity teacher may write per text (part of its cache identity)
MAX_TEXT_TOKENS = 256  # tokens of each text the entity teacher reads
TOKEN_HEAD_LR = 1e-2  # the token student's head learning rate when student.head_lr is not given
TOKEN_SELECTORS = ("llkd", "all", "fixed", "teacher_adaptive", "soft")  # llkd.selection.tokens.TOKEN_MODES

# The settings the entity pipeline reads, per section; the others must stay at their defaults.
USED: dict[str, set[str]] = {
    "data": {"task", "pool", "test", "dev", "labels"},
    "teacher": {"backend", "model", "template", "dtype", "device", "batch_size", "cache"},
    "selection": {"selector", "momentum", "fixed_threshold", "weighted", "student_threshold"},
    "student": {"model", "max_length", "batch_size", "epochs", "lr", "head_lr", "seed", "device", "threads", "output"},
}


# --------------------------------------------------------------------------- checks


def check_settings(cfg: LLKDConfig, sections: Sequence[str]) -> None:
    """One line for a backend other than hf, a setting that entities do not read, a selector
    without a token form, or a student option the token student lacks."""
    if "teacher" in sections and cfg.teacher.backend != "hf":
        raise ConfigError(f"the entity teacher runs on the hf backend only, not '{cfg.teacher.backend}'")
    for section in sections:
        part = getattr(cfg, section)
        unused = sorted(f for f in part.model_fields_set - USED[section] if getattr(part, f) != type(part).model_fields[f].default)
        if unused:
            given = ", ".join(f"{section}.{f}" for f in unused)
            raise ConfigError(f"{given} does not apply to data.task entities (it reads: {', '.join(f'{section}.{f}' for f in sorted(USED[section]))})")
    if "selection" in sections and cfg.selection.selector not in TOKEN_SELECTORS:
        raise ConfigError(f"selector '{cfg.selection.selector}' has no token-level form for entities; choose one of: {', '.join(TOKEN_SELECTORS)}")
    if "student" in sections:
        student = cfg.student  # student.mode stays finetune (checked above): the token student has no frozen mode
        if student.device not in ("auto", "cpu"):
            raise ConfigError(f"the entity student trains on the CPU for now; student.device '{student.device}' is not available for entities")
        epochs = student.resolved_epochs()
        if epochs != int(epochs):
            raise ConfigError(f"student.epochs must be a whole number of passes for entities, not {epochs}")


def check_teacher_settings(teacher: TeacherConfig) -> None:
    """Backend options, device and model as for classification, then the entity template."""
    from llkd.preflight import check_teacher
    from llkd.teacher.entities import EntityPromptTemplate

    check_teacher(teacher.model_copy(update={"template": "auto"}))  # a classification template check would refuse an entity one
    if teacher.template != "auto":
        EntityPromptTemplate.load(teacher.template)


def check_run(cfg: LLKDConfig) -> None:
    from llkd.preflight import check_student

    check_settings(cfg, ("data", "teacher", "selection", "student"))
    check_teacher_settings(cfg.teacher)
    check_student(cfg.student)


# --------------------------------------------------------------------------- data


def load_schema(data: DataConfig) -> EntitySchema:
    if data.labels is None:
        raise DataError("no entity schema given (data.labels / --data-labels: a YAML file with an 'entities:' list)")
    return EntitySchema.from_yaml(data.labels)


def load_split(data: DataConfig, which: str, schema: EntitySchema, require_gold: bool = False) -> EntitySet:
    path = getattr(data, which)
    if path is None:
        raise DataError(f"no {which} file given (data.{which} / --data-{which})")
    split = load_entities(path, schema)
    if require_gold and split.spans is None:
        raise DataError(f"{path}: no gold tags or spans; the {which} split needs them")
    return split


def _has_text_header(path: Path, text_column: str) -> bool:
    """Whether the first line of a .tsv/.txt file is a column header naming ``text_column``."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            first = f.readline()
    except (OSError, UnicodeDecodeError):
        return False  # the CoNLL reader reports it
    fields = [c.strip().strip('"') for c in re.split(r"[\t,;]", first.rstrip("\r\n"))]
    return text_column in fields


def load_texts(path: Path, text_column: str = "text", id_column: str | None = None) -> tuple[list[str], list[str]]:
    """(ids, texts) of a file to predict: CoNLL/IOB or JSONL as entity data (tags, if any,
    ignored), other formats (CSV, Parquet) as text columns. A .tsv/.txt file whose header
    names ``text_column`` is read as columns, any other as CoNLL."""
    suffix = path.suffix.lower()
    conll = suffix in CONLL_SUFFIXES and not (suffix in (".tsv", ".txt") and _has_text_header(path, text_column))
    if conll or (suffix in JSONL_SUFFIXES and text_column == "text" and id_column is None):
        data = load_entities(path)
        return data.ids, data.texts
    from llkd.data.loading import load_texts as load_columns

    rows = load_columns(path, text_column, id_column)
    return rows.ids, rows.texts


# --------------------------------------------------------------------------- teacher


def build_teacher(cfg: TeacherConfig, schema: EntitySchema, examples: Sequence[dict[str, Any]] | None = None,
                  max_new_tokens: int | None = None, max_text_tokens: int | None = None) -> Any:
    from llkd.teacher.entities import HFEntityTeacher

    return HFEntityTeacher(schema, model=cfg.model, template=cfg.template, dtype=cfg.dtype, device=cfg.device, batch_size=cfg.batch_size,
                           max_text_tokens=max_text_tokens or MAX_TEXT_TOKENS, max_new_tokens=max_new_tokens or MAX_NEW_TOKENS,
                           examples=examples)


def ask(teacher: Any, cache_path: Path, texts: Sequence[str], ids: Sequence[str] | None = None, progress: bool = True,
        desc: str = "entity teacher") -> Any:
    """The teacher's :class:`EntityLabels` for ``texts`` through the SQLite cache (each batch
    committed before the next; a re-run asks only for texts without an answer)."""
    from llkd.teacher.cache import TeacherCache
    from llkd.teacher.entities import label_entities

    with TeacherCache(cache_path) as cache:
        return label_entities(teacher, list(texts), cache, ids=list(ids) if ids is not None else None, progress=progress, desc=desc)


def answer_stats(labels: Any) -> dict[str, Any]:
    answers = [a for a in labels.answers if a is not None]
    u = labels.usage
    return {"texts": len(labels), "cached": labels.n_cached, "asked": labels.n_asked, "failed": len(labels.failures),
            "spans": sum(len(a.spans) for a in answers), "dropped": labels.dropped, "malformed": sum(a.malformed for a in answers),
            "truncated": sum(a.truncated for a in answers),
            "usage": {"calls": u.calls, "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "seconds": round(u.seconds, 2)}}


def answer_records(ids: Sequence[str], texts: Sequence[str], labels: Any) -> list[dict[str, Any]]:
    """One JSON record per answered text: its spans (with their text and confidence) and the
    outside confidence (null when the teacher's reply says nothing about it). Texts without an
    answer (failed) are left out, so ``load_entities`` reads the file back as gold spans."""
    rows = []
    for rid, text, answer in zip(ids, texts, labels.answers):
        if answer is None:
            continue
        spans = [{"start": s.start, "end": s.end, "type": s.type, "text": text[s.start:s.end], "confidence": round(s.confidence, 5)}
                 for s in answer.spans]
        outside = None if answer.outside_confidence is None else round(answer.outside_confidence, 5)
        rows.append({"id": rid, "text": text, "spans": spans, "outside_confidence": outside})
    return rows


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- student


def token_selector(cfg: SelectionConfig, schema: EntitySchema) -> Any:
    from llkd.selection.tokens import TokenSelector

    if cfg.selector not in TOKEN_SELECTORS:
        raise ConfigError(f"selector '{cfg.selector}' has no token-level form for entities; choose one of: {', '.join(TOKEN_SELECTORS)}")
    return TokenSelector(cfg.selector, schema.num_tags, momentum=cfg.momentum, fixed_threshold=cfg.fixed_threshold, weighted=cfg.weighted,
                         student_threshold=cfg.student_threshold)


def teacher_targets(labels: Any) -> tuple[list[int], list[list[tuple[int, int, str, float]]], list[float | None]]:
    """(answered rows, their spans with confidences, their outside confidences; None where the
    teacher's reply says nothing about them, for the student's default)."""
    rows = [i for i, a in enumerate(labels.answers) if a is not None]
    spans = [[(s.start, s.end, s.type, s.confidence) for s in labels.answers[i].spans] for i in rows]
    return rows, spans, [labels.answers[i].outside_confidence for i in rows]


def train_student(cfg: LLKDConfig, schema: EntitySchema, texts: Sequence[str], spans: Sequence[Sequence[Any]],
                  outside: Sequence[float | None] | None = None, dev: EntitySet | None = None) -> Any:
    """A token student trained on teacher spans, saved to ``student.output/model``."""
    import torch

    from llkd.student.tokens import train_token_student

    if not texts:
        raise DataError("no pool text has a teacher answer; nothing to train on")
    s = cfg.student
    threads = torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(s.threads)
    try:
        return train_token_student(list(texts), spans, schema, selector=token_selector(cfg.selection, schema), epochs=int(s.resolved_epochs()),
                                   batch_size=s.batch_size, lr=s.lr, max_length=s.max_length, seed=s.seed, output=s.output / "model", dev=dev,
                                   student=s.model, head_lr=s.head_lr if s.head_lr is not None else TOKEN_HEAD_LR,
                                   outside_confidence=list(outside) if outside is not None else None)
    finally:
        torch.set_num_threads(threads)


def load_student(folder: str | Path) -> tuple[Any, Any, EntitySchema, str, int]:
    """(model, tokenizer, schema, rest, max_length) of a saved token student; one line for a
    folder that is not one."""
    from llkd.student.tokens import load_token_trained

    folder = Path(folder)
    try:
        model, tokenizer, schema, rest = load_token_trained(folder)
        meta = json.loads((folder / "llkd.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelNotFound(f"{folder}: cannot load the entity student: {first}") from e
    return model, tokenizer, schema, rest, int(meta.get("max_length", 128))


def predict_texts(model: Any, tokenizer: Any, texts: Sequence[str], schema: EntitySchema, max_length: int, rest: str = "label") -> list[list[Any]]:
    from llkd.student.tokens import predict_spans

    return predict_spans(model, tokenizer, list(texts), schema, max_length, rest=rest)


def is_entity_student(folder: str | Path) -> bool:
    """Whether ``folder``'s llkd.json says it holds a token (entity) student; False for
    anything else, so the classification path reports its own problems."""
    try:
        meta = json.loads((Path(folder) / "llkd.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("task") == STUDENT_TASK


# --------------------------------------------------------------------------- reports


def report_table(student: Any, teacher: Any = None) -> str:
    """Markdown: per type, support, then teacher and student precision / recall / F1."""
    sides = ([("teacher", teacher)] if teacher is not None else []) + [("student", student)]
    head = ["type", "support"] + [f"{who} {m}" for who, _ in sides for m in ("P", "R", "F1")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cells(r: Any, name: str | None) -> list[str]:
        if name is None:
            return [f"{r.micro_precision:.3f}", f"{r.micro_recall:.3f}", f"{r.micro_f1:.3f}"]
        if name not in r.types:
            return ["-"] * 3
        k = r.types.index(name)
        return [f"{r.precision[k]:.3f}", f"{r.recall[k]:.3f}", f"{r.f1[k]:.3f}"]

    for k, name in enumerate(student.types):
        lines.append("| " + " | ".join([name, str(student.support[k])] + [c for _, r in sides for c in cells(r, name)]) + " |")
    lines.append("| " + " | ".join(["micro", str(sum(student.support))] + [c for _, r in sides for c in cells(r, None)]) + " |")
    return "\n".join(lines)


def write_report(path: Path, summary: dict[str, Any], student: Any = None, teacher: Any = None) -> Path:
    """A short report.md: settings, the teacher's answers, selection, and the per-type table."""
    t, tr = summary["teacher"]["pool"], summary["train"]
    lines = ["# llkd entity run", "",
             f"- entity types: {', '.join(summary['types'])}; selector `{summary['selector']}`; student `{summary['student_model']}`",
             f"- teacher `{summary['teacher_model']}` on the pool: {t['texts']} texts, {t['cached']} from cache, {t['asked']} asked, {t['failed']} failed; "
             f"{t['spans']} spans ({t['dropped']} strings not in the text dropped, {t['malformed']} malformed lines, {t['truncated']} replies truncated)",
             f"- training: {tr['steps']} steps, {tr['optimizer_updates']} updates, {tr['gradient_tokens']} of {tr['token_steps_seen']} token-steps carried loss; "
             f"data usage {tr['data_usage']:.1%} of the pool's tokens; {tr['wall_s']:.1f}s"]
    if tr.get("dev_history"):
        lines.append("- dev F1 per epoch: " + ", ".join(f"{h['f1']:.3f}" for h in tr["dev_history"]))
    if "teacher_pool" in summary:
        lines.append(f"- teacher micro-F1 on the pool's gold (not used for training): {summary['teacher_pool']['micro_f1']:.3f}")
    if student is not None:
        lines += ["", f"## Test ({student.texts} texts, strict span match)", "", report_table(student, teacher), "",
                  f"Student errors: {student.errors['wrong_type']} wrong type, {student.errors['wrong_boundary']} wrong boundary, "
                  f"{student.errors['wrong_type_and_boundary']} both, {student.errors['spurious']} spurious, {student.errors['missed']} missed."]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- commands


def label(cfg: LLKDConfig, args: argparse.Namespace) -> int:
    """``llkd label`` for entities: the teacher's spans for one split, into the cache."""
    from llkd.evaluation.entity_metrics import entity_report

    if args.export and args.export.suffix.lower() not in JSONL_SUFFIXES:
        raise DataError(f"--export {args.export.name}: entity answers are written as JSONL (.jsonl)")
    check_settings(cfg, ("data", "teacher"))
    check_teacher_settings(cfg.teacher)
    schema = load_schema(cfg.data)
    data = load_split(cfg.data, args.split, schema)
    teacher = build_teacher(cfg.teacher, schema)
    labels = ask(teacher, cfg.teacher.cache_path(), data.texts, data.ids, progress=not args.no_progress)
    st = answer_stats(labels)
    print(f"{st['texts']} texts: {st['cached']} from cache, {st['asked']} asked, {st['failed']} failed; {st['spans']} spans "
          f"({st['dropped']} dropped, {st['malformed']} malformed lines, {st['truncated']} truncated); "
          f"{st['usage']['seconds']:.1f}s; cache {cfg.teacher.cache_path()}")
    for row, reason in list(labels.failures.items())[:20]:
        print(f"  failed: id={data.ids[row]}: {reason}")
    if data.spans is not None:
        print(f"teacher entity micro-F1 against this file's gold: {entity_report(data.spans, labels.spans(), schema.names).micro_f1:.3f}")
    if args.export:
        records = answer_records(data.ids, data.texts, labels)
        write_jsonl(args.export, records)
        left_out = f"; {len(data) - len(records)} failed texts left out" if len(records) < len(data) else ""
        print(f"exported {len(records)} answers to {args.export} (jsonl){left_out}")
    return 1 if labels.failures else 0


def _teacher_half(cfg: LLKDConfig, schema: EntitySchema, pool: EntitySet, test: EntitySet | None, progress: bool) -> tuple[Any, Any, dict[str, Any]]:
    """The teacher's labels for the pool (and the test split, for its side of the report),
    with one model load; and the summary's teacher entry."""
    from llkd.evaluation.metering import StageMeter

    with StageMeter("teacher") as meter:
        teacher = build_teacher(cfg.teacher, schema)
        labels = ask(teacher, cfg.teacher.cache_path(), pool.texts, pool.ids, progress=progress)
        on_test = ask(teacher, cfg.teacher.cache_path(), test.texts, test.ids, progress=progress, desc="entity teacher[test]") if test is not None else None
        identity = teacher.identity()
        teacher.close()
        del teacher
    entry = {"model": cfg.teacher.model, "identity": identity, "pool": answer_stats(labels), **meter.as_dict()}
    if on_test is not None:
        entry["test"] = answer_stats(on_test)
    return labels, on_test, entry


def train(cfg: LLKDConfig, args: argparse.Namespace) -> int:
    """``llkd train`` for entities: teacher spans on the pool, a token student, test scores."""
    from llkd.evaluation.entity_metrics import entity_report

    check_run(cfg)
    schema = load_schema(cfg.data)
    pool = load_split(cfg.data, "pool", schema)
    dev = load_split(cfg.data, "dev", schema, require_gold=True) if cfg.data.dev else None
    test = load_split(cfg.data, "test", schema, require_gold=True) if cfg.data.test else None
    labels, on_test, teacher_entry = _teacher_half(cfg, schema, pool, None if args.no_report else test, not args.no_progress)
    rows, spans, outside = teacher_targets(labels)
    if labels.failures:
        print(f"warning: {len(labels.failures)} pool texts have no teacher answer and are left out (re-run `llkd label` to retry)")
    result = train_student(cfg, schema, [pool.texts[i] for i in rows], spans, outside, dev)
    summary: dict[str, Any] = {"task": TASK, "types": schema.names, "selector": cfg.selection.selector, "student_model": cfg.student.model,
                               "teacher_model": cfg.teacher.model, "model_dir": str(result.model_dir), "teacher": teacher_entry,
                               "train": {**result.summary(), "data_usage": result.data_usage}}
    if pool.spans is not None:
        summary["teacher_pool"] = entity_report(pool.spans, labels.spans(), schema.names).as_dict()
    write_jsonl(cfg.student.output / "steps.jsonl", result.step_log)
    print(f"student saved to {result.model_dir}")
    print(f"data usage {result.data_usage:.1%} of the pool's tokens; {result.gradient_tokens} token-steps carried loss in "
          f"{result.optimizer_updates} updates over {result.steps} steps; train {result.wall_s:.1f}s")
    student_report = teacher_report = None
    if test is not None:
        pred = predict_texts(result.model, result.tokenizer, test.texts, schema, cfg.student.max_length)
        student_report = entity_report(test.spans, pred, schema.names)
        summary["test"] = student_report.as_dict()
        print(student_report.table())
        if on_test is not None:
            teacher_report = entity_report(test.spans, on_test.spans(), schema.names)
            summary["teacher_test"] = teacher_report.as_dict()
            print(f"teacher on test: micro-F1 {teacher_report.micro_f1:.3f}; student: {student_report.micro_f1:.3f}")
    if not args.no_report:
        print(f"report written to {write_report(cfg.student.output / 'report.md', summary, student_report, teacher_report)}")
    (cfg.student.output / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return 0


def predict(args: argparse.Namespace) -> int:
    """``llkd predict`` with an entity student: JSONL of {id, text, spans: [{start, end, type, text}]}."""
    if args.input:
        ids, texts = load_texts(args.input, args.text_column, args.id_column)
    else:
        texts = [t for t in args.text if t.strip()]
        if len(texts) != len(args.text):
            print("llkd predict: error: empty --text", file=sys.stderr)
            return 2
        ids = [str(i) for i in range(len(texts))]
    model, tokenizer, schema, rest, trained_length = load_student(args.model)
    found = predict_texts(model, tokenizer, texts, schema, args.max_length or trained_length, rest)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        for i, text, spans in zip(ids, texts, found):
            items = [{"start": s.start, "end": s.end, "type": s.type, "text": text[s.start:s.end]} for s in spans]
            out.write(json.dumps({"id": i, "text": text, "spans": items}, ensure_ascii=False) + "\n")
    finally:
        if args.output:
            out.close()
    return 0


def export(args: argparse.Namespace) -> int:
    """``llkd export`` with an entity student: ONNX with inputs input_ids, attention_mask and
    output logits [batch, sequence, tags]."""
    from torch.onnx import _constants

    low, high = _constants.ONNX_MIN_OPSET, _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET
    if not low <= args.opset <= high:
        raise ConfigError(f"--opset {args.opset} is not supported; this torch exports opsets {low} to {high}")
    out = args.output or Path(args.model) / "model.onnx"
    if out.is_dir():
        raise ConfigError(f"--output {out} is a folder; name the .onnx file")
    try:
        import onnx  # noqa: F401 - torch.onnx.export needs it
    except ImportError as e:
        raise ConfigError("ONNX export needs the onnx package: pip install 'llkd[onnx]'") from e
    from llkd.student.tokens import export_token_onnx

    load_student(args.model)  # one line for a broken folder, before the exporter's traceback
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"wrote {export_token_onnx(args.model, out, args.opset)}")
    return 0
