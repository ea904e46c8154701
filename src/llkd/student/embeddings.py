"""On-disk cache of frozen-encoder embeddings (SQLite, WAL), keyed by the encoder's identity
and each text's SHA-256, so reruns, other selectors and other seeds never re-encode a text."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from llkd.config import cache_dir
from llkd.data.loading import text_hash


def encoder_identity(model: Any, max_length: int, dtype: str) -> str:
    """Weights fingerprint of the encoder + how the embedding is made. A change of any of them
    is another key space, never a stale hit."""
    # The backbone's parameters themselves (not a file: a trained student's file also holds
    # its head): ~0.1 s for MiniLM, exact.
    h = hashlib.sha256()
    for name, t in sorted(model.backbone.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    weights_id = h.hexdigest()[:16]
    how = {"pooling": model.config.llkd_pooling, "normalize": bool(model.config.llkd_normalize), "max_length": max_length, "dtype": dtype}
    return f"{weights_id}|{json.dumps(how, sort_keys=True)}"


class EmbeddingCache:
    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else cache_dir() / "embeddings.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS embeddings (encoder TEXT, text_hash TEXT, dim INTEGER, vector BLOB, PRIMARY KEY (encoder, text_hash))")

    def get_many(self, encoder: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(hashes))
        for start in range(0, len(unique), 500):  # SQLite's bound-parameter limit
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for h, dim, blob in self.db.execute(f"SELECT text_hash, dim, vector FROM embeddings WHERE encoder=? AND text_hash IN ({marks})", [encoder, *chunk]):
                vec = np.frombuffer(blob, dtype=np.float32)
                if len(vec) == dim:
                    out[h] = vec
        return out

    def put_many(self, encoder: str, hashes: Sequence[str], vectors: np.ndarray) -> None:
        with self.db:  # one transaction
            self.db.executemany(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)",
                [(encoder, h, int(v.shape[0]), np.ascontiguousarray(v, dtype=np.float32).tobytes()) for h, v in zip(hashes, vectors)],
            )

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "EmbeddingCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cached_embeddings(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int, dtype: str, cache: EmbeddingCache | None = None, batch_size: int = 64, chunk: int = 512) -> tuple[np.ndarray, int]:
    """Embeddings [N, D] of ``texts``, encoding only those not in the cache (in committed chunks,
    so a killed run keeps what it encoded). Returns (embeddings, texts encoded now)."""
    from llkd.student.model import embed_texts

    own = cache is None
    cache = cache or EmbeddingCache()
    try:
        key = encoder_identity(model, max_length, dtype)
        hashes = [text_hash(t) for t in texts]
        found = cache.get_many(key, hashes)
        todo = [i for i, h in enumerate(hashes) if h not in found]
        for start in range(0, len(todo), chunk):
            rows = todo[start : start + chunk]
            vecs = embed_texts(model, tokenizer, [texts[i] for i in rows], max_length, batch_size, dtype)
            cache.put_many(key, [hashes[i] for i in rows], vecs)
            found.update({hashes[i]: v for i, v in zip(rows, vecs)})
        dim = model.config.hidden_size
        out = np.stack([found[h] for h in hashes]) if texts else np.zeros((0, dim), dtype=np.float32)
        return out.astype(np.float32), len(todo)
    finally:
        if own:
            cache.close()
