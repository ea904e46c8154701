"""Token-classification student (entity recognition) trained with token-level LLKD selection.

The packaged MiniLM (the weights :func:`llkd.student.model.load_student` uses) loads as
transformers' own ``AutoModelForTokenClassification`` (``BertForTokenClassification``) with a
fresh linear head over ``schema.tags`` (``id2label``/``label2id``); token classification
reads the encoder's token states, so no pooling and no llkd modeling file are needed. A saved
student is a standard Hugging Face folder (safetensors, tokenizer) plus ``llkd.json`` with the
entity schema; it loads with plain transformers.

Teacher targets per sub-word (:func:`subword_targets`):

* hard tag: :func:`llkd.data.entities.subword_labels` of the teacher's spans (``rest="label"``
  by default: every sub-word of a word is trained; ``rest="ignore"`` trains first sub-words);
* soft distribution ``q``: a sub-word inside a teacher span of confidence ``c`` gets
  ``q[its B-/I- tag] = c`` and ``q[O] = 1 - c``; an ``O`` sub-word gets ``q[O] = o``, the text's
  'no entity here' confidence (:data:`DEFAULT_OUTSIDE_CONFIDENCE` when it is None, as the
  teacher reports it for a truncated reply or one with no line in the format), and ``1 - o``
  spread evenly over the other tags; ignored sub-words get all zeros;
* confidence: ``q`` at the hard tag (``c`` or ``o``), the teacher signal of the selection.

Teacher spans are ``(start, end, type, confidence)`` tuples, ``{start, end, type,
confidence}`` dicts, or plain ``Span``/3-tuples (confidence :data:`DEFAULT_SPAN_CONFIDENCE`).
"""

from __future__ import annotations

import bisect
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from llkd.data.entities import IGNORE_INDEX, EntitySchema, Span, sorted_spans, subword_labels, subword_spans
from llkd.evaluation.entity_metrics import entity_f1
from llkd.models import student_path
from llkd.selection.tokens import TokenSelector, masked_labels, token_loss
from llkd.student.model import METADATA, export_logits_onnx
from llkd.student.trainer import seed_everything

log = logging.getLogger("llkd.student.tokens")

DEFAULT_OUTSIDE_CONFIDENCE = 0.9  # choice: a teacher that names spans says nothing of the rest
DEFAULT_SPAN_CONFIDENCE = 1.0
TASK = "token-classification"

OutsideConfidence = float | Sequence[float | None] | None  # None: unknown, the default applies


# --------------------------------------------------------------------------- model


def _label_maps(schema: EntitySchema) -> dict[str, Any]:
    tags = schema.tags
    return {"num_labels": len(tags), "id2label": dict(enumerate(tags)), "label2id": {t: i for i, t in enumerate(tags)}}


def load_token_student(name_or_path: str, schema: EntitySchema) -> tuple[Any, Any]:
    """(model, fast tokenizer) for a packaged short name (``minilm``) or an HF encoder folder,
    with a fresh token-classification head over ``schema.tags``."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    folder = student_path(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{folder}: the token student needs a fast tokenizer (offset mappings)")
    model = AutoModelForTokenClassification.from_pretrained(str(folder), ignore_mismatched_sizes=True, **_label_maps(schema))
    return model, tokenizer


def save_token_student(model: Any, tokenizer: Any, schema: EntitySchema, folder: str | Path, rest: str = "label",
                       extra: dict[str, Any] | None = None) -> Path:
    """A standard HF folder (safetensors) plus ``llkd.json``: task, entity schema, ``rest``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    meta = {"task": TASK, "entity_schema": schema.to_dict(), "rest": rest, **(extra or {})}
    (folder / METADATA).write_text(json.dumps(meta, indent=2))
    return folder


def load_token_trained(folder: str | Path) -> tuple[Any, Any, EntitySchema, str]:
    """(model in eval mode, tokenizer, entity schema, rest) of a saved token student; only
    safetensors weights and transformers' own classes (no remote code)."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    folder = Path(folder)
    meta_path = folder / METADATA
    if not (folder / "config.json").exists() or not meta_path.exists():
        raise FileNotFoundError(f"{folder}: not a token student folder (config.json and {METADATA} needed)")
    meta = json.loads(meta_path.read_text())
    if meta.get("task") != TASK:
        raise ValueError(f"{folder}: {METADATA} is not a token student's (task {meta.get('task')!r})")
    schema = EntitySchema.from_dict(meta["entity_schema"], source=str(meta_path))
    model = AutoModelForTokenClassification.from_pretrained(str(folder), trust_remote_code=False, use_safetensors=True).eval()
    tags = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if tags != list(schema.tags):
        raise ValueError(f"{folder}: the model's labels {tags} are not the schema's tags {list(schema.tags)}")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    return model, tokenizer, schema, str(meta.get("rest", "label"))


# --------------------------------------------------------------------------- targets


def teacher_span(item: Any) -> tuple[Span, float]:
    """(span, confidence) of one teacher span in any accepted form."""
    if isinstance(item, dict):
        span = Span(int(item["start"]), int(item["end"]), str(item["type"]))
        conf = float(item.get("confidence", DEFAULT_SPAN_CONFIDENCE))
    elif len(item) == 4:
        span, conf = Span(int(item[0]), int(item[1]), str(item[2])), float(item[3])
    else:
        span, conf = Span(int(item[0]), int(item[1]), str(item[2])), DEFAULT_SPAN_CONFIDENCE
    if not 0.0 <= conf <= 1.0:
        raise ValueError(f"span {tuple(span)}: confidence {conf} is not in [0, 1]")
    return span, conf


def _trimmed(text: str, pair: Any) -> tuple[int, int]:
    s, e = int(pair[0]), int(pair[1])
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    return s, e


def subword_targets(text: str, spans: Sequence[Any], offset_mapping: Any, schema: EntitySchema,
                    outside_confidence: float | None = None, rest: str = "label",
                    ignore_index: int = IGNORE_INDEX) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hard tags [L] int64, soft distributions [L, K] float32, confidence [L] float32) of one
    text's sub-words from its teacher spans (conventions in the module docstring)."""
    outside = DEFAULT_OUTSIDE_CONFIDENCE if outside_confidence is None else float(outside_confidence)
    if not 0.0 <= outside <= 1.0:
        raise ValueError(f"outside confidence {outside} is not in [0, 1]")
    items = [teacher_span(s) for s in spans]
    conf_of = {span: c for span, c in items}
    ordered = sorted_spans([span for span, _ in items], text)
    ends = [s.end for s in ordered]
    labels = np.asarray(subword_labels(text, ordered, offset_mapping, schema, rest=rest, ignore_index=ignore_index), dtype=np.int64)
    k = schema.num_tags
    probs = np.zeros((len(labels), k), dtype=np.float32)
    for j, (label, pair) in enumerate(zip(labels, offset_mapping)):
        if label == ignore_index:
            continue
        if label == 0:
            probs[j, :] = (1.0 - outside) / (k - 1)
            probs[j, 0] = outside
            continue
        s, _ = _trimmed(text, pair)
        owner = ordered[bisect.bisect_right(ends, s)]  # as subword_labels: the first span ending after s
        c = conf_of[owner]
        probs[j, label], probs[j, 0] = c, 1.0 - c
    valid = labels != ignore_index
    confidence = np.zeros(len(labels), dtype=np.float32)
    confidence[valid] = probs[np.nonzero(valid)[0], labels[valid]]
    return labels, probs, confidence


def _outside_for(outside_confidence: OutsideConfidence, n: int) -> list[float | None]:
    if outside_confidence is None or isinstance(outside_confidence, (int, float)):
        return [outside_confidence] * n  # type: ignore[list-item]
    values = list(outside_confidence)
    if len(values) != n:
        raise ValueError(f"{len(values)} outside confidences for {n} texts")
    return values


@dataclass
class TokenData:
    """Tokenised texts with their teacher targets, one entry per text (no padding)."""

    input_ids: list[list[int]]
    offsets: list[list[tuple[int, int]]]
    labels: list[np.ndarray]
    probs: list[np.ndarray]
    confidence: list[np.ndarray]


def encode_targets(tokenizer: Any, texts: Sequence[str], teacher_spans: Sequence[Sequence[Any]], schema: EntitySchema,
                   max_length: int, outside_confidence: OutsideConfidence = None, rest: str = "label") -> TokenData:
    """Tokenise (truncated to ``max_length``, offsets kept) and build every text's targets."""
    if len(texts) != len(teacher_spans):
        raise ValueError(f"{len(texts)} texts but {len(teacher_spans)} teacher span lists")
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, return_offsets_mapping=True)
    data = TokenData([], [], [], [], [])
    for i, (text, spans, outside) in enumerate(zip(texts, teacher_spans, _outside_for(outside_confidence, len(texts)))):
        offsets = [tuple(p) for p in enc["offset_mapping"][i]]
        labels, probs, conf = subword_targets(text, spans, offsets, schema, outside, rest)
        data.input_ids.append(list(enc["input_ids"][i]))
        data.offsets.append(offsets)
        data.labels.append(labels)
        data.probs.append(probs)
        data.confidence.append(conf)
    return data


def collate_tokens(data: TokenData, rows: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
    """A padded batch: input_ids, attention_mask, labels (ignore on padding), confidence, probs."""
    width = max(len(data.input_ids[i]) for i in rows)
    k = data.probs[rows[0]].shape[1]
    out = {"input_ids": torch.full((len(rows), width), pad_id, dtype=torch.long),
           "attention_mask": torch.zeros((len(rows), width), dtype=torch.long),
           "labels": torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long),
           "confidence": torch.zeros((len(rows), width)), "probs": torch.zeros((len(rows), width, k))}
    for r, i in enumerate(rows):
        n = len(data.input_ids[i])
        out["input_ids"][r, :n] = torch.tensor(data.input_ids[i])
        out["attention_mask"][r, :n] = 1
        out["labels"][r, :n] = torch.from_numpy(data.labels[i])
        out["confidence"][r, :n] = torch.from_numpy(data.confidence[i])
        out["probs"][r, :n] = torch.from_numpy(data.probs[i])
    return out


# --------------------------------------------------------------------------- prediction


@torch.inference_mode()
def token_probs(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int = 128,
                batch_size: int = 32) -> tuple[list[np.ndarray], list[list[tuple[int, int]]]]:
    """Per text: tag probabilities [L, K] of its sub-words and their offset mapping."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    probs, offsets = [], []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start:start + batch_size])
        enc = tokenizer(chunk, truncation=True, max_length=max_length, padding=True, return_offsets_mapping=True, return_tensors="pt")
        mapping = enc.pop("offset_mapping")
        logits = model(**{k: v.to(device) for k, v in enc.items()}).logits.float()
        p = torch.softmax(logits, dim=-1).cpu().numpy()
        for r in range(len(chunk)):
            n = int(enc["attention_mask"][r].sum())
            probs.append(p[r, :n])
            offsets.append([tuple(int(x) for x in pair) for pair in mapping[r, :n].tolist()])
    model.train(was_training)
    return probs, offsets


def predict_spans(model: Any, tokenizer: Any, texts: Sequence[str], schema: EntitySchema, max_length: int = 128,
                  batch_size: int = 32, rest: str = "label", words: bool = True) -> list[list[Span]]:
    """Character spans per text from the argmax tag of the sub-words (lenient IOB decoding).
    ``words`` (default): each whitespace-delimited word takes its first sub-word's tag, so
    spans start and end on word edges (a word's later sub-words are trained to continue it).
    ``words=False`` reads every sub-word's own tag (an entity may then begin inside a word);
    a model trained with ``rest="ignore"`` is always read by words."""
    probs, offsets = token_probs(model, tokenizer, texts, max_length, batch_size)
    first_only = words or rest == "ignore"
    return [subword_spans(text, p.argmax(-1).tolist(), o, schema, first_only=first_only)
            for text, p, o in zip(texts, probs, offsets)]


def export_token_onnx(folder: str | Path, out: str | Path | None = None, opset: int = 17) -> Path:
    """Export a saved token student to ONNX: inputs input_ids, attention_mask; output logits
    [batch, sequence, tags] (dynamic batch and length)."""
    model, tokenizer, _, _ = load_token_trained(folder)
    out = Path(out) if out else Path(folder) / "model.onnx"
    return export_logits_onnx(model, tokenizer, out, opset, {0: "batch", 1: "sequence"})


# --------------------------------------------------------------------------- training


@dataclass
class TokenTrainResult:
    model_dir: Path | None
    steps: int
    optimizer_updates: int
    gradient_tokens: int  # token-steps that carried loss
    token_steps_seen: int  # valid token-steps scored
    data_usage: float  # distinct valid tokens ever selected / valid tokens of the pool
    step_log: list[dict[str, Any]] = field(default_factory=list)
    dev_history: list[dict[str, Any]] = field(default_factory=list)  # {epoch, f1} per epoch with a dev split
    wall_s: float = 0.0
    model: Any = field(default=None, repr=False)  # the trained model and its tokenizer, in memory
    tokenizer: Any = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        return {"steps": self.steps, "optimizer_updates": self.optimizer_updates, "gradient_tokens": self.gradient_tokens,
                "token_steps_seen": self.token_steps_seen, "data_usage": round(self.data_usage, 4),
                "dev_history": self.dev_history, "wall_s": round(self.wall_s, 2)}


def make_selector(selector: str | TokenSelector, schema: EntitySchema) -> TokenSelector:
    if not isinstance(selector, TokenSelector):
        return TokenSelector(selector, schema.num_tags)
    if selector.num_classes != schema.num_types + 1:
        raise ValueError(f"the token selector has {selector.num_classes} type classes, the schema {schema.num_types} types and O")
    return selector


def _optimizer(model: Any, lr: float, head_lr: float, total_steps: int, warmup_ratio: float = 0.1) -> tuple[Any, Any]:
    """AdamW (the new head at its own rate) and a linear warm-up / decay schedule."""
    from transformers import get_linear_schedule_with_warmup

    head = [p for n, p in model.named_parameters() if n.startswith("classifier.")]
    body = [p for n, p in model.named_parameters() if not n.startswith("classifier.")]
    opt = torch.optim.AdamW([{"params": body, "lr": lr}, {"params": head, "lr": head_lr}], weight_decay=0.01)
    return opt, get_linear_schedule_with_warmup(opt, int(warmup_ratio * total_steps), total_steps)


@torch.no_grad()
def _score(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The student's tag probabilities in eval mode (no dropout, no grad): section 2's pass."""
    model.eval()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return torch.softmax(logits.float(), dim=-1)


def _train_step(model: Any, opt: Any, batch: dict[str, torch.Tensor], labels: torch.Tensor, weights: torch.Tensor,
                soft: bool) -> float | None:
    """Forward + backward on the sentences with a selected token; None when there are none."""
    rows = (labels != IGNORE_INDEX).any(dim=1)
    if not bool(rows.any()):
        return None
    model.train()
    logits = model(input_ids=batch["input_ids"][rows], attention_mask=batch["attention_mask"][rows]).logits
    loss = token_loss(logits, labels[rows], weights[rows], batch["probs"][rows] if soft else None)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def _dev_f1(model: Any, tokenizer: Any, dev: Any, schema: EntitySchema, max_length: int, rest: str) -> float:
    texts, gold = (dev.texts, dev.spans) if hasattr(dev, "texts") else dev
    return entity_f1(gold, predict_spans(model, tokenizer, texts, schema, max_length, rest=rest))


def train_token_student(texts: Sequence[str], teacher_spans: Sequence[Sequence[Any]], schema: EntitySchema,
                        selector: str | TokenSelector = "llkd", epochs: int = 3, batch_size: int = 16, lr: float = 1e-4,
                        max_length: int = 128, seed: int = 42, output: str | Path | None = None, dev: Any = None,
                        student: str = "minilm", head_lr: float = 1e-2, outside_confidence: OutsideConfidence = None,
                        rest: str = "label") -> TokenTrainResult:
    """Train a token student on teacher spans with a token selector (a mode of
    ``llkd.selection.tokens.TOKEN_MODES`` or a :class:`TokenSelector`). ``dev``: an EntitySet
    or (texts, gold spans), scored (strict micro-F1) after each epoch. ``output``: where the
    model folder goes (None: not saved). CPU, one process (no device placement yet)."""
    started = time.perf_counter()
    seed_everything(seed)
    model, tokenizer = load_token_student(student, schema)
    sel = make_selector(selector, schema)
    data = encode_targets(tokenizer, texts, teacher_spans, schema, max_length, outside_confidence, rest)
    ever = [np.zeros(len(x), dtype=bool) for x in data.labels]
    per_epoch = -(-len(texts) // batch_size)
    opt, schedule = _optimizer(model, lr, head_lr, epochs * per_epoch)
    rng = np.random.default_rng(seed)
    result = TokenTrainResult(None, 0, 0, 0, 0, 0.0)
    for epoch in range(epochs):
        order = rng.permutation(len(texts))
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size].tolist()
            batch = collate_tokens(data, rows, tokenizer.pad_token_id or 0)
            probs = _score(model, batch) if sel.needs_student else None
            picked = sel.select(batch["labels"], batch["confidence"], probs)
            for r, i in enumerate(rows):
                ever[i] |= picked.mask[r, : len(ever[i])].numpy()
            labels = masked_labels(batch["labels"], picked.mask)
            loss = _train_step(model, opt, batch, labels, picked.weights, sel.soft_targets)
            schedule.step()  # the schedule advances on empty steps too (method.md 4)
            result.steps += 1
            result.optimizer_updates += loss is not None
            result.gradient_tokens += picked.stats["selected"]
            result.token_steps_seen += picked.stats["tokens"]
            result.step_log.append({"step": result.steps, "epoch": epoch, "batch": len(rows), "loss": loss, **picked.stats})
        if dev is not None:
            result.dev_history.append({"epoch": epoch, "f1": _dev_f1(model, tokenizer, dev, schema, max_length, rest)})
    valid = sum(int((x != IGNORE_INDEX).sum()) for x in data.labels)
    result.data_usage = sum(int(e.sum()) for e in ever) / max(valid, 1)
    model.eval()
    if output is not None:
        result.model_dir = save_token_student(model, tokenizer, schema, output, rest,
                                              {"selector": sel.mode, "max_length": max_length, "train": result.summary()})
    result.wall_s, result.model, result.tokenizer = time.perf_counter() - started, model, tokenizer
    return result
