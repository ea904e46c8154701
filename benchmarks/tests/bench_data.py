"""Where the benchmark tests find the shared datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def shared_data_root() -> Path:
    """The shared benchmark datasets (``$LLKD_DATA_ROOT``, ``../shared/data``); skip if absent."""
    from llkd_bench.datasets import default_data_root

    for cand in (os.environ.get("LLKD_DATA_ROOT"), default_data_root(), REPO.parent / "shared" / "data"):
        if cand and Path(cand).is_dir():
            return Path(cand)
    pytest.skip("shared benchmark data not found (set LLKD_DATA_ROOT)")
