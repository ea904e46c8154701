"""Student encoders: load with a fresh classification head, save as a standard HF folder,
predict, export to ONNX.

Two model shapes:
- a sentence-embedding checkpoint (a sentence-transformers folder: ``modules.json`` with a
  Pooling module), or any encoder in frozen mode, becomes a
  :class:`~llkd.student.modeling_llkd.PooledEncoderClassifier` that classifies from the
  pooled embedding the checkpoint was trained to produce;
- any other encoder gets transformers' own ``AutoModelForSequenceClassification`` head.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from llkd.data.schema import LabelSchema
from llkd.hardware import DTYPES
from llkd.models import student_path
from llkd.student.modeling_llkd import PooledEncoderClassifier

METADATA = "llkd.json"
MODELING_FILE = Path(__file__).with_name("modeling_llkd.py")
REMOTE_CLASS = "modeling_llkd.PooledEncoderClassifier"


def sentence_embedding_pooling(folder: Path) -> tuple[str, bool] | None:
    """(pooling, normalize) of a sentence-transformers folder, or None for a plain encoder."""
    modules = folder / "modules.json"
    if not modules.exists():
        return None
    try:
        entries = json.loads(modules.read_text())
        kinds = {str(e.get("type", "")).rsplit(".", 1)[-1]: e for e in entries}
    except (ValueError, AttributeError):
        return None
    if "Pooling" not in kinds:
        return None
    pooling = "mean"
    cfg_path = folder / str(kinds["Pooling"].get("path", "1_Pooling")) / "config.json"
    if cfg_path.exists():
        cfg = json.loads(cfg_path.read_text())
        if cfg.get("pooling_mode_cls_token") and not cfg.get("pooling_mode_mean_tokens"):
            pooling = "cls"
    return pooling, "Normalize" in kinds


def load_student(name_or_path: str, schema: LabelSchema, frozen: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) for a packaged short name or an HF folder, with a fresh head sized to
    the schema. ``frozen``: always the pooled-embedding classifier (mean pooling for encoders
    that are not sentence-embedding checkpoints)."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    folder = student_path(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    labels = {"num_labels": schema.num_labels, "id2label": dict(enumerate(schema.names)), "label2id": {n: i for i, n in enumerate(schema.names)}}
    pooling = sentence_embedding_pooling(folder)
    if pooling is None and not frozen:
        model = AutoModelForSequenceClassification.from_pretrained(str(folder), ignore_mismatched_sizes=True, **labels)
        return model, tokenizer
    mode, normalize = pooling or ("mean", False)
    config = AutoConfig.from_pretrained(str(folder), **labels)
    config.llkd_pooling, config.llkd_normalize = mode, normalize
    config.architectures = ["PooledEncoderClassifier"]
    config.auto_map = {"AutoModelForSequenceClassification": REMOTE_CLASS}
    model = PooledEncoderClassifier(config)
    encoder = AutoModel.from_pretrained(str(folder))
    missing, unexpected = model.backbone.load_state_dict(encoder.state_dict(), strict=False)
    if missing:
        raise ValueError(f"{folder}: encoder weights missing for {missing[:3]}")
    del encoder
    return model, tokenizer


def load_trained(folder: str | Path) -> tuple[Any, Any, LabelSchema]:
    """Load a student that llkd saved (a plain HF folder; the schema is read from its config).
    Only safetensors weights and transformers' own model classes: a folder that would need
    pickled weights or its own code is refused with ModelNotFound, one line, nothing run."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from llkd.models import ModelNotFound

    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder}: not a trained student folder (no config.json)")
    try:
        config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
        if getattr(config, "llkd_pooling", None):
            # llkd's own class; outside llkd the copy of modeling_llkd.py in the folder is used
            model = PooledEncoderClassifier.from_pretrained(str(folder), config=config, use_safetensors=True).eval()
        else:
            model = AutoModelForSequenceClassification.from_pretrained(str(folder), trust_remote_code=False, use_safetensors=True).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError) as e:  # what transformers raises for a folder it cannot load as asked
        reason = " ".join(str(e).split())
        raise ModelNotFound(f"{folder}: cannot load the student: {reason[:300]}") from e
    meta = folder / METADATA
    if meta.exists():
        schema = LabelSchema.from_dict(json.loads(meta.read_text())["schema"])
    else:
        names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        schema = LabelSchema.from_names(names)
    return model, tokenizer, schema


def save_student(model: Any, tokenizer: Any, schema: LabelSchema, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    if isinstance(model, PooledEncoderClassifier):
        shutil.copyfile(MODELING_FILE, folder / MODELING_FILE.name)  # loads without llkd
    (folder / METADATA).write_text(json.dumps({"schema": schema.to_dict(), **(extra or {})}, indent=2))
    return folder


def encode(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]


def collate(tokenizer: Any, encoded: Sequence[list[int]], device: torch.device) -> dict[str, torch.Tensor]:
    """Pad a batch of token id lists to its own longest row."""
    width = max(len(x) for x in encoded)
    pad = tokenizer.pad_token_id or 0
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for r, x in enumerate(encoded):
        ids[r, : len(x)] = torch.tensor(x)
        mask[r, : len(x)] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


@contextlib.contextmanager
def autocast(dtype: str, device: torch.device) -> Iterator[None]:
    """Mixed precision for a student's forward pass: weights stay fp32, matmuls run in the
    given dtype (bf16 on CPUs with native bf16 or on GPUs); fp32 is a no-op."""
    if dtype == "float32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=DTYPES[dtype]):
        yield


def _forward_sorted(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int, dtype: str,
                    device: torch.device | None, width: int, forward: Any) -> np.ndarray:
    """Run ``forward(batch) -> [B, width]`` over ``texts`` in length-sorted batches (less
    padding) in eval mode, under the compute dtype; rows come back in input order."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    encoded = encode(tokenizer, texts, max_length)
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
    out = np.zeros((len(texts), width), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        with autocast(dtype, device):
            values = forward(collate(tokenizer, [encoded[i] for i in rows], device))
        out[rows] = values.float().cpu().numpy()
    model.train(was_training)
    return out


@torch.inference_mode()
def embed_texts(model: PooledEncoderClassifier, tokenizer: Any, texts: Sequence[str], max_length: int = 128, batch_size: int = 64, dtype: str = "float32", device: torch.device | None = None) -> np.ndarray:
    """Pooled embeddings [N, D] (float32) of a :class:`PooledEncoderClassifier`'s encoder."""
    return _forward_sorted(model, tokenizer, texts, max_length, batch_size, dtype, device, model.config.hidden_size,
                           lambda batch: model.embed(**batch))


@torch.inference_mode()
def predict_probs(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int = 128, batch_size: int = 64, device: torch.device | None = None, dtype: str = "float32", embeddings: np.ndarray | None = None) -> np.ndarray:
    """Class probabilities [N, C]. ``embeddings``: precomputed pooled embeddings of ``texts``
    (frozen students), so only the head runs."""
    if embeddings is not None:
        device = device or next(model.parameters()).device
        logits = model.classifier(torch.from_numpy(np.asarray(embeddings, dtype=np.float32)).to(device))
        return torch.softmax(logits.float(), dim=-1).cpu().numpy()
    return _forward_sorted(model, tokenizer, texts, max_length, batch_size, dtype, device, model.config.num_labels,
                           lambda batch: torch.softmax(model(**batch).logits.float(), dim=-1))


def export_onnx(folder: str | Path, out: str | Path | None = None, opset: int = 17) -> Path:
    """Export a trained student to ONNX (logits output, dynamic batch and length)."""
    model, tokenizer, _ = load_trained(folder)
    out = Path(out) if out else Path(folder) / "model.onnx"
    return export_logits_onnx(model, tokenizer, out, opset, {0: "batch"})


def export_logits_onnx(model: Any, tokenizer: Any, out: Path, opset: int, logits_axes: dict[int, str]) -> Path:
    """``model``'s logits as an ONNX graph of input_ids and attention_mask (dynamic batch and
    length; ``logits_axes``: the dynamic axes of the output). Shared by both student kinds."""
    sample = tokenizer(["an example text"], return_tensors="pt")

    class _Logits(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    torch.onnx.export(
        _Logits(model.eval()),
        (sample["input_ids"], sample["attention_mask"]),
        str(out),
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}, "logits": logits_axes},
        opset_version=opset,
        dynamo=False,
    )
    return out
