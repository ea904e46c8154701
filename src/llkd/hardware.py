"""What this machine can do fast: CPU feature flags, native bf16, and the dtype choice.

bf16 pays on CPUs with native bf16 dot products (AVX512-BF16 or AMX) and on GPUs; elsewhere
PyTorch emulates it and it is slower than fp32. We detect the features, never guess.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

# Flags that matter for matmul speed; printed next to every speed figure.
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8", "avx_vnni")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def cpu_summary() -> str:
    """One line: CPU model, core count and the speed-relevant flags present."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = cpu_flags()
    present = [f for f in SPEED_FLAGS if f in flags]
    return f"{model}, {torch.get_num_threads()} torch threads, flags: {' '.join(present) or 'none of ' + '/'.join(SPEED_FLAGS)}"


def resolve_dtype(requested: str, device: torch.device | str = "cpu", flags: frozenset[str] | None = None) -> str:
    """``auto`` -> ``bfloat16`` on a GPU or a CPU with native bf16, else ``float32``.
    Any explicit dtype is returned unchanged (after checking its name)."""
    if requested != "auto":
        if requested not in DTYPES:
            raise ValueError(f"unknown dtype '{requested}'; choose auto, {', '.join(DTYPES)}")
        return requested
    kind = torch.device(device).type
    if kind == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if kind == "cpu":
        return "bfloat16" if cpu_has_native_bf16(flags) else "float32"
    return "float32"  # mps and others: fp32 is the safe choice
