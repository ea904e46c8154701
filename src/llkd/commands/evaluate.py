"""llkd evaluate: score a trained student on a labelled split."""

from __future__ import annotations

import argparse
from pathlib import Path

from llkd.data.loading import load_texts
from llkd.pipeline import evaluate_student, write_json
from llkd.preflight import trained_student
from llkd.student.model import load_trained

HELP = "Evaluate a trained student on labelled texts: accuracy, macro-F1, per-class scores, confusion matrix."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="Trained student folder (…/model).")
    p.add_argument("--data", type=Path, required=True, help="Labelled texts (CSV, TSV, JSONL, Parquet).")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--id-column", default=None)
    p.add_argument("--max-length", type=int, default=None, help="Tokens per text (default: what the student was trained with).")
    p.add_argument("--json", type=Path, help="Also write the report as JSON.")


def run(args: argparse.Namespace) -> int:
    _, _, schema = load_trained(trained_student(args.model))  # refuses a folder llkd did not train
    test = load_texts(args.data, args.text_column, args.id_column, args.label_column, schema, require_labels=True)
    report, _, meter = evaluate_student(args.model, test, args.max_length)
    print(report.table())
    print(f"{len(test)} texts in {meter.seconds:.1f}s ({len(test) / max(meter.seconds, 1e-9):.0f} texts/s), peak {meter.peak_rss_mb:.0f} MB")
    if args.json:
        write_json(args.json, report.as_dict())
    return 0
