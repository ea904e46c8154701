import os
from importlib import resources
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEMO = Path(str(resources.files("llkd.resources").joinpath("demo")))


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    return DEMO


@pytest.fixture(scope="session")
def agnews_schema():
    from llkd.data.schema import LabelSchema

    return LabelSchema.from_yaml(DEMO / "agnews_labels.yaml")
