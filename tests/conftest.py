import os
from importlib import resources
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEMO = Path(str(resources.files("llkd.resources").joinpath("demo")))
REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    """The shared benchmark datasets (``$LLKD_DATA_ROOT``, ``../shared/data``); skip if absent."""
    for cand in (os.environ.get("LLKD_DATA_ROOT"), Path("..") / "shared" / "data", REPO.parent / "shared" / "data"):
        if cand and Path(cand).is_dir():
            return Path(cand)
    pytest.skip("shared benchmark data not found (set LLKD_DATA_ROOT)")


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    return DEMO


@pytest.fixture(scope="session")
def agnews_schema():
    from llkd.data.schema import LabelSchema

    return LabelSchema.from_yaml(DEMO / "agnews_labels.yaml")
