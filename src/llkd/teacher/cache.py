"""On-disk teacher answer cache: SQLite in WAL mode.

Keyed by (teacher identity, text hash): the identity folds in backend, model weights,
prompt template, label set and scoring method, so changing any of them never returns a stale
answer. Each batch is committed as one transaction, so a SIGKILL loses at most the batch in
flight and never corrupts the file; WAL lets readers (reports, a second labeller) run
concurrently with a writer.

Storage faults are one-line :class:`CacheError` s that say what to do, and never cost a
committed answer: a cache that cannot be written (read-only media, permissions, a full disk)
but holds answers opens read-only, so a fully cached run still works and one that needs new
answers is refused before the teacher runs; a disk that fills mid-run stops the run at the
batch that could not be written (every earlier batch is committed, a re-run asks only for the
rest); a file that is not a cache is named, never overwritten.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Iterable, Iterator

from llkd.data.loading import text_hash  # noqa: F401  (a text's cache key; callers import it from here too)
from llkd.errors import CacheError
from llkd.teacher.base import TeacherAnswer, TeacherFailure

log = logging.getLogger(__name__)

ELSEWHERE = "or pass --teacher-cache PATH (or set LLKD_CACHE_DIR) to use another"

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

# The entity teacher's answers (llkd.teacher.entities): one JSON object per (teacher, text).
# Created on the first write, so a cache that never held entity answers is left as it was; its
# failures go to the ``failures`` table above (their teacher keys are the entity teachers').
_ENTITY_TABLE = """
CREATE TABLE IF NOT EXISTS entity_answers (
  teacher TEXT NOT NULL,
  text_hash TEXT NOT NULL,
  text_id TEXT,
  answer TEXT NOT NULL,
  created REAL NOT NULL,
  PRIMARY KEY (teacher, text_hash)
)
"""


def teacher_key(identity: str) -> str:
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:24]


def _reason(e: BaseException) -> str:
    """One line for a storage error: SQLite's words, or the OS's."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return " ".join(str(e).split()) or type(e).__name__


def _hint(e: BaseException) -> str:
    """What the user can do about a storage error."""
    name = str(getattr(e, "sqlite_errorname", "") or "")
    code = getattr(e, "errno", None)
    if name.startswith("SQLITE_FULL") or code == errno.ENOSPC:
        return f"the disk is full: free space, {ELSEWHERE}"
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")) or code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"it is not writable (read-only media or permissions): make it writable, {ELSEWHERE}"
    if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or "no such table" in str(e):
        return f"it is not an llkd teacher cache (not SQLite, damaged, or another program's): move it away, {ELSEWHERE}"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return f"another process holds it locked: wait for it to finish, {ELSEWHERE}"
    if name.startswith("SQLITE_IOERR"):
        return f"the disk reported an I/O error (it may be full or failing): check it, {ELSEWHERE}"
    return ELSEWHERE.removeprefix("or ")


def _is_not_a_cache(e: BaseException) -> bool:
    name = str(getattr(e, "sqlite_errorname", "") or "")
    return name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or "no such table" in str(e)


class TeacherCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.read_only = False  # True: opened for reading only (see _open_read_only)
        self._read_only_reason = ""
        if self.path.is_dir():
            raise CacheError(f"teacher cache {self.path} is a folder, not a file; {ELSEWHERE.removeprefix('or ')}")
        existed = self.path.exists()
        try:
            self._db = self._open_read_write()
        except (sqlite3.Error, OSError) as e:
            if not existed:
                self._remove_empty_file()
            if _is_not_a_cache(e) or not existed:
                raise CacheError(f"cannot open the teacher cache {self.path}: {_reason(e)}; {_hint(e)}") from e
            self._db = self._open_read_only(e)
            return
        if not os.access(self.path, os.W_OK):  # SQLite opened a read-only file quietly: say so before any write
            self.read_only, self._read_only_reason = True, "the file is not writable"
            log.warning("teacher cache %s is read-only (%s): cached answers are used, new ones cannot be saved", self.path, self._read_only_reason)

    def _open_read_write(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        try:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and "answers" not in tables:  # another program's database: not ours to add tables to
                raise sqlite3.DatabaseError(f"no such table: answers (it holds {', '.join(sorted(tables)[:3])})")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable against process kills
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def _open_read_only(self, why: BaseException) -> sqlite3.Connection:
        """Read the answers of a cache that cannot be written. WAL needs its -shm file beside the
        database; where that cannot be created either (read-only media, a full disk), the file
        is opened as immutable, which is what it is there."""
        uri = self.path.resolve().as_uri()
        last: BaseException = why
        wal = self.path.with_name(self.path.name + "-wal")
        # immutable ignores the WAL: right only when every answer is in the database file itself
        queries = ("mode=ro",) if wal.exists() and wal.stat().st_size > 0 else ("mode=ro", "mode=ro&immutable=1")
        for query in queries:
            db = None
            try:
                db = sqlite3.connect(f"{uri}?{query}", uri=True, timeout=60, isolation_level=None, check_same_thread=False)
                for table in ("answers", "failures", "teachers"):  # a cache's tables, or not a cache
                    db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchall()
            except sqlite3.Error as e:
                if db is not None:
                    db.close()
                if _is_not_a_cache(e):
                    raise CacheError(f"cannot open the teacher cache {self.path}: {_reason(e)}; {_hint(e)}") from e
                last = e
                continue
            self.read_only = True
            self._read_only_reason = _reason(why)
            log.warning("teacher cache %s opened read-only (%s): cached answers are used, new ones cannot be saved", self.path, self._read_only_reason)
            return db
        raise CacheError(f"cannot open the teacher cache {self.path}: {_reason(why)} (nor read it: {_reason(last)}); {_hint(why)}") from why

    def _remove_empty_file(self) -> None:
        """A failed first open can leave an empty file behind; it holds nothing, and would make
        the next open look like a damaged cache."""
        with contextlib.suppress(OSError):
            if self.path.stat().st_size == 0:
                self.path.unlink()

    def read_only_error(self, missing: str) -> CacheError:
        """Why a run that needs new answers cannot use this read-only cache, and what to do."""
        return CacheError(f"teacher cache {self.path} is read-only ({self._read_only_reason}) and {missing}; make it writable, "
                          f"or copy it somewhere writable and pass --teacher-cache (or set LLKD_CACHE_DIR) there")

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
        try:
            for start in range(0, len(hashes), 500):
                chunk = hashes[start : start + 500]
                q = f"SELECT text_hash, probs, method FROM answers WHERE teacher=? AND text_hash IN ({','.join('?' * len(chunk))})"
                for h, probs, method in self._db.execute(q, [key, *chunk]):
                    found[h] = TeacherAnswer(json.loads(probs), method)
        except sqlite3.Error as e:
            raise CacheError(f"cannot read the teacher cache {self.path}: {_reason(e)}; {_hint(e)}") from e
        return found

    def put_many(self, identity: str, rows: Iterable[tuple[str, str | None, TeacherAnswer | TeacherFailure]]) -> None:
        """Store one batch atomically: (text_hash, text_id, answer-or-failure) rows. A batch that
        cannot be written (disk full, read-only) is rolled back whole and raises CacheError;
        the batches before it stay committed."""
        if self.read_only:
            raise self.read_only_error("new answers cannot be saved")
        now = time.time()
        try:
            with self._transaction():
                key = self.register(identity)
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
        except sqlite3.Error as e:
            raise CacheError(f"cannot save teacher answers to {self.path}: {_reason(e)}; {_hint(e)}") from e

    def failures(self, identity: str) -> list[tuple[str | None, str, int]]:
        q = "SELECT text_id, reason, attempts FROM failures WHERE teacher=? ORDER BY updated"
        return list(self._db.execute(q, (teacher_key(identity),)))

    def count(self, identity: str | None = None) -> int:
        if identity is None:
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM answers WHERE teacher=?", (teacher_key(identity),)).fetchone()[0]

    # -- entity answers (a sibling table; payloads are EntityAnswer.to_dict() objects) ------
    def get_entity_answers(self, identity: str, hashes: Iterable[str]) -> dict[str, dict]:
        """The stored entity answers (JSON objects) of these text hashes; {} where the cache
        never held any (the table is created by the first write)."""
        key = teacher_key(identity)
        hashes = list(hashes)
        found: dict[str, dict] = {}
        try:
            for start in range(0, len(hashes), 500):
                chunk = hashes[start : start + 500]
                q = f"SELECT text_hash, answer FROM entity_answers WHERE teacher=? AND text_hash IN ({','.join('?' * len(chunk))})"
                for h, answer in self._db.execute(q, [key, *chunk]):
                    found[h] = json.loads(answer)
        except sqlite3.OperationalError as e:
            if "no such table: entity_answers" in str(e):
                return {}
            raise CacheError(f"cannot read the teacher cache {self.path}: {_reason(e)}; {_hint(e)}") from e
        except sqlite3.Error as e:
            raise CacheError(f"cannot read the teacher cache {self.path}: {_reason(e)}; {_hint(e)}") from e
        return found

    def put_entity_answers(self, identity: str, rows: Iterable[tuple[str, str | None, dict | TeacherFailure]]) -> None:
        """Store one batch of (text_hash, text_id, answer-object-or-failure) rows atomically,
        as :meth:`put_many` does for classification answers (same failures table, same errors)."""
        if self.read_only:
            raise self.read_only_error("new answers cannot be saved")
        now = time.time()
        try:
            with self._transaction():
                self._db.execute(_ENTITY_TABLE)
                key = self.register(identity)
                for h, text_id, result in rows:
                    if isinstance(result, TeacherFailure):
                        self._db.execute(
                            "INSERT INTO failures VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT(teacher, text_hash) "
                            "DO UPDATE SET reason=excluded.reason, attempts=attempts+1, updated=excluded.updated",
                            (key, h, text_id, result.reason, now),
                        )
                        continue
                    self._db.execute("INSERT OR REPLACE INTO entity_answers VALUES (?, ?, ?, ?, ?)",
                                     (key, h, text_id, json.dumps(result, ensure_ascii=False), now))
                    self._db.execute("DELETE FROM failures WHERE teacher=? AND text_hash=?", (key, h))
        except sqlite3.Error as e:
            raise CacheError(f"cannot save teacher answers to {self.path}: {_reason(e)}; {_hint(e)}") from e

    def count_entity_answers(self, identity: str | None = None) -> int:
        try:
            if identity is None:
                return self._db.execute("SELECT COUNT(*) FROM entity_answers").fetchone()[0]
            return self._db.execute("SELECT COUNT(*) FROM entity_answers WHERE teacher=?", (teacher_key(identity),)).fetchone()[0]
        except sqlite3.OperationalError as e:
            if "no such table: entity_answers" in str(e):
                return 0
            raise

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
            db.execute("COMMIT")  # can fail too (a full disk when the WAL grows)
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL does)
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise
