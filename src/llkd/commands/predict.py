"""llkd predict: label new texts with a trained student."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llkd import entity_pipeline
from llkd.data.loading import load_texts
from llkd.pipeline import student_probs
from llkd.preflight import trained_student
from llkd.student.model import load_trained

HELP = "Predict labels for texts with a trained student; writes JSONL (id, label, confidence, probs)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="Trained student folder.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", type=Path, help="Texts to label (CSV, TSV, JSONL, Parquet).")
    src.add_argument("--text", action="append", help="A text to label (repeatable).")
    p.add_argument("--text-column", default="text")
    p.add_argument("--id-column", default=None)
    p.add_argument("--output", type=Path, help="JSONL output (default: stdout).")
    p.add_argument("--max-length", type=int, default=None, help="Tokens per text (default: what the student was trained with).")


def run(args: argparse.Namespace) -> int:
    if entity_pipeline.is_entity_student(args.model):  # its llkd.json says task token-classification
        return entity_pipeline.predict(args)
    _, _, schema = load_trained(trained_student(args.model))  # refuses a folder llkd did not train
    if args.input:
        data = load_texts(args.input, args.text_column, args.id_column)
        ids, texts = data.ids, data.texts
    else:
        texts = [t for t in args.text if t.strip()]
        if len(texts) != len(args.text):
            print("llkd predict: error: empty --text", file=sys.stderr)
            return 2
        ids = [str(i) for i in range(len(texts))]
    probs, _ = student_probs(args.model, texts, args.max_length, reuse_embeddings=False)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        for i, p in zip(ids, probs):
            k = int(p.argmax())
            out.write(json.dumps({"id": i, "label": schema.names[k], "confidence": round(float(p[k]), 5), "probs": dict(zip(schema.names, p.round(5).tolist()))}) + "\n")
    finally:
        if args.output:
            out.close()
    return 0
