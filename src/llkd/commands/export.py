"""llkd export: ONNX export of a trained student (the HF folder is already standard)."""

from __future__ import annotations

import argparse
from pathlib import Path

from llkd import entity_pipeline
from llkd.config import ConfigError
from llkd.preflight import trained_student

HELP = "Export a trained student to ONNX (needs the onnx extra); the saved folder already loads with plain transformers."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="Trained student folder.")
    p.add_argument("--output", type=Path, help="ONNX file (default: <model>/model.onnx); a missing parent folder is created.")
    p.add_argument("--opset", type=int, default=17)


def opset_range() -> tuple[int, int]:
    """Opsets torch's TorchScript exporter (the one llkd uses) can write."""
    from torch.onnx import _constants

    return _constants.ONNX_MIN_OPSET, _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET


def run(args: argparse.Namespace) -> int:
    if entity_pipeline.is_entity_student(args.model):  # its llkd.json says task token-classification
        return entity_pipeline.export(args)
    model = trained_student(args.model)
    low, high = opset_range()
    if not low <= args.opset <= high:
        raise ConfigError(f"--opset {args.opset} is not supported; this torch exports opsets {low} to {high}")
    out = args.output or model / "model.onnx"
    if out.is_dir():
        raise ConfigError(f"--output {out} is a folder; name the .onnx file")
    try:
        import onnx  # noqa: F401 - torch.onnx.export needs it
    except ImportError as e:
        raise ConfigError("ONNX export needs the onnx package: pip install 'llkd[onnx]'") from e
    import torch

    from llkd.student.model import export_onnx

    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        written = export_onnx(model, out, args.opset)
    except torch.onnx.errors.OnnxExporterError as e:  # e.g. an operator this opset lacks
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"ONNX export at opset {args.opset} failed: {first}; the default, 17, works for llkd's students") from e
    print(f"wrote {written}")
    return 0
