"""Student encoders: load with a fresh classification head, save as a standard HF folder,
predict, export to ONNX."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from llkd.data.schema import LabelSchema
from llkd.models import student_path

METADATA = "llkd.json"


def load_student(name_or_path: str, schema: LabelSchema) -> tuple[Any, Any]:
    """(model, tokenizer) for a packaged short name or an HF folder, with a head sized to the schema."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = student_path(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(folder),
        num_labels=schema.num_labels,
        id2label=dict(enumerate(schema.names)),
        label2id={n: i for i, n in enumerate(schema.names)},
        ignore_mismatched_sizes=True,
    )
    return model, tokenizer


def load_trained(folder: str | Path) -> tuple[Any, Any, LabelSchema]:
    """Load a student that llkd saved (a plain HF folder; the schema is read from its config)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder}: not a trained student folder (no config.json)")
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
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


@torch.inference_mode()
def predict_probs(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int = 128, batch_size: int = 64, device: torch.device | None = None) -> np.ndarray:
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    encoded = encode(tokenizer, texts, max_length)
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))  # less padding
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        logits = model(**collate(tokenizer, [encoded[i] for i in rows], device)).logits
        out[rows] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    model.train(was_training)
    return out


def export_onnx(folder: str | Path, out: str | Path | None = None, opset: int = 17) -> Path:
    """Export a trained student to ONNX (logits output, dynamic batch and length)."""
    model, tokenizer, _ = load_trained(folder)
    out = Path(out) if out else Path(folder) / "model.onnx"
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
        dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}},
        opset_version=opset,
        dynamo=False,
    )
    return out
