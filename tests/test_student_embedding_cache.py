"""A frozen run's embeddings go where ``StudentTrainer(embedding_cache=...)`` says, pool and dev
texts alike, and only there; without it, to the llkd cache dir (MiniLM on eight texts)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from llkd.config import SelectionConfig, StudentConfig
from llkd.data.loading import TextSet
from llkd.data.schema import LabelSchema

POOL = ["Stocks fall", "Arsenal win", "Oil climbs", "Federer wins", "Bank rates rise", "Coach resigns", "Markets rally", "Goal in extra time"]
DEV = ["Shares slide", "Team loses final"]


def _train(out: Path, embedding_cache: Path | None) -> None:
    from llkd.student.trainer import StudentTrainer

    schema = LabelSchema.from_names(["Business", "Sports"])
    pool = TextSet(texts=POOL, ids=[str(i) for i in range(len(POOL))], labels=None)
    dev = TextSet(texts=DEV, ids=["d0", "d1"], labels=[0, 1])
    probs = np.tile([[0.8, 0.2], [0.3, 0.7]], (len(POOL) // 2, 1))
    cfg = StudentConfig(model="minilm", mode="frozen", epochs=1, batch_size=4, max_length=16, dtype="float32", device="cpu", threads=1, output=out)
    StudentTrainer(cfg, SelectionConfig(selector="all"), schema, pool, probs, dev=dev, progress=False, embedding_cache=embedding_cache).train()


def _rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])


def test_a_frozen_run_writes_its_embeddings_to_the_given_cache_only(tmp_path, monkeypatch):
    default = tmp_path / "llkd-cache" / "embeddings.sqlite"
    monkeypatch.setenv("LLKD_CACHE_DIR", str(default.parent))
    given = tmp_path / "e.sqlite"
    _train(tmp_path / "run", given)
    assert given.exists() and _rows(given) == len(POOL) + len(DEV)  # the dev split's embeddings too
    assert not default.exists()

    _train(tmp_path / "run-default", None)  # None: today's default location
    assert _rows(default) == len(POOL) + len(DEV)
