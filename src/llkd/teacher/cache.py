"""On-disk teacher answer cache: SQLite in WAL mode.

Keyed by (teacher identity, text hash): the identity folds in backend, model weights,
prompt template, label set and scoring method, so changing any of them never returns a stale
answer. Each batch is committed as one transaction, so a SIGKILL loses at most the batch in
flight and never corrupts the file; WAL lets readers (reports, a second labeller) run
concurrently with a writer.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Iterable

from llkd.teacher.base import TeacherAnswer, TeacherFailure

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
  teacher TEXT NOT NULL,
  text_hash TEXT NOT NULL,
  text_id TEXT,
  probs TEXT NOT NULL,
  method TEXT NOT NULL,
  created REAL NOT NULL,
  PRIMARY KEY (teacher, text_hash)
);
CREATE TABLE IF NOT EXISTS failures (
  teacher TEXT NOT NULL,
  text_hash TEXT NOT NULL,
  text_id TEXT,
  reason TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 1,
  updated REAL NOT NULL,
  PRIMARY KEY (teacher, text_hash)
);
CREATE TABLE IF NOT EXISTS teachers (
  key TEXT PRIMARY KEY,
  identity TEXT NOT NULL
);
"""


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def teacher_key(identity: str) -> str:
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:24]


class TeacherCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable against process kills
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "TeacherCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def register(self, identity: str) -> str:
        key = teacher_key(identity)
        self._db.execute("INSERT OR IGNORE INTO teachers(key, identity) VALUES (?, ?)", (key, identity))
        return key

    def get_many(self, identity: str, hashes: Iterable[str]) -> dict[str, TeacherAnswer]:
        key = teacher_key(identity)
        hashes = list(hashes)
        found: dict[str, TeacherAnswer] = {}
        for start in range(0, len(hashes), 500):
            chunk = hashes[start : start + 500]
            q = f"SELECT text_hash, probs, method FROM answers WHERE teacher=? AND text_hash IN ({','.join('?' * len(chunk))})"
            for h, probs, method in self._db.execute(q, [key, *chunk]):
                found[h] = TeacherAnswer(json.loads(probs), method)
        return found

    def put_many(self, identity: str, rows: Iterable[tuple[str, str | None, TeacherAnswer | TeacherFailure]]) -> None:
        """Store one batch atomically: (text_hash, text_id, answer-or-failure) rows."""
        key = self.register(identity)
        now = time.time()
        with self._transaction():
            for h, text_id, result in rows:
                if isinstance(result, TeacherAnswer):
                    self._db.execute(
                        "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?)",
                        (key, h, text_id, json.dumps([round(p, 7) for p in result.probs]), result.method, now),
                    )
                    self._db.execute("DELETE FROM failures WHERE teacher=? AND text_hash=?", (key, h))
                else:
                    self._db.execute(
                        "INSERT INTO failures VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT(teacher, text_hash) "
                        "DO UPDATE SET reason=excluded.reason, attempts=attempts+1, updated=excluded.updated",
                        (key, h, text_id, result.reason, now),
                    )

    def failures(self, identity: str) -> list[tuple[str | None, str, int]]:
        q = "SELECT text_id, reason, attempts FROM failures WHERE teacher=? ORDER BY updated"
        return list(self._db.execute(q, (teacher_key(identity),)))

    def count(self, identity: str | None = None) -> int:
        if identity is None:
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM answers WHERE teacher=?", (teacher_key(identity),)).fetchone()[0]

    def _transaction(self):  # noqa: ANN202
        db = self._db

        class _Tx:
            def __enter__(self) -> None:
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type: object, *_: object) -> None:
                db.execute("ROLLBACK" if exc_type else "COMMIT")

        return _Tx()
