"""llkd export: ONNX export of a trained student (the HF folder is already standard)."""

from __future__ import annotations

import argparse
from pathlib import Path

from llkd.student.model import export_onnx

HELP = "Export a trained student to ONNX (needs the onnx extra); the saved folder already loads with plain transformers."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="Trained student folder.")
    p.add_argument("--output", type=Path, help="ONNX file (default: <model>/model.onnx).")
    p.add_argument("--opset", type=int, default=17)


def run(args: argparse.Namespace) -> int:
    out = export_onnx(args.model, args.output, args.opset)
    print(f"wrote {out}")
    return 0
