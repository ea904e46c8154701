"""The teacher cache on bad storage: read-only media, a full disk (at open and mid-run), a file
that is not a cache. Each gives a working run or one line that says what to do, and no
committed answer is lost.

Read-only media and small disks are real where this runs as root (a read-only bind mount, a
tmpfs of a few KiB); elsewhere read-only is file modes and the tmpfs cases skip. A full disk
mid-run is also simulated portably with SQLite's max_page_count (the same SQLITE_FULL)."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pytest

from llkd.data.schema import LabelSchema
from llkd.errors import CacheError
from llkd.teacher import TeacherBackend, TeacherAnswer, TeacherCache, TeacherFailure, label_texts

SCHEMA = LabelSchema.from_names(["World", "Sports", "Business", "Sci/Tech"])
TEXTS = [f"headline number {i}: markets, matches and missions" for i in range(64)]


class CountingTeacher(TeacherBackend):
    """Deterministic answers; records every text it is asked."""

    batch_size = 8

    def __init__(self) -> None:
        super().__init__(SCHEMA)
        self.asked: list[str] = []

    def identity(self) -> str:
        return "counting|v1"

    def score(self, texts: Sequence[str]) -> list[TeacherAnswer | TeacherFailure]:
        self.asked += texts
        return [TeacherAnswer([1.0 + (len(t) + k) % 3 for k in range(4)], "verbalizer") for t in texts]


def fill(path: Path, texts: Sequence[str] = TEXTS, ids: Sequence[str] | None = None) -> None:
    with TeacherCache(path) as cache:
        label_texts(CountingTeacher(), texts, cache, ids=ids, progress=False)


def answers_in(path: Path) -> int:
    """Answers in the file, read without llkd (immutable only where the WAL files cannot be made)."""
    for query in ("mode=ro", "mode=ro&immutable=1"):
        try:
            with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?{query}", uri=True)) as db:
                return db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        except sqlite3.OperationalError:
            continue
    raise AssertionError(f"{path}: unreadable")


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def read_only() -> Iterator[Callable[[Path], None]]:
    """Makes a folder read-only as media are: a read-only bind mount as root (file modes do not
    stop root), file modes otherwise."""
    undo: list[Callable[[], None]] = []

    def make(folder: Path) -> None:
        if os.geteuid() == 0:
            if not (_mount("--bind", str(folder), str(folder)) and _mount("-o", "remount,ro,bind", str(folder))):
                subprocess.run(["umount", "-l", str(folder)], capture_output=True)
                pytest.skip("cannot bind-mount read-only here")
            undo.append(lambda: subprocess.run(["umount", "-l", str(folder)], capture_output=True))
        else:
            modes = {p: p.stat().st_mode for p in [folder, *folder.iterdir()]}
            for p in modes:
                p.chmod(0o555 if p.is_dir() else 0o444)
            undo.append(lambda: [p.chmod(m) for p, m in modes.items()])

    yield make
    for u in reversed(undo):
        u()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """A tmpfs of the given size (root only; skips elsewhere)."""
    mounted: list[Path] = []

    def make(kib: int) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        if os.geteuid() != 0 or not _mount("-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(where)):
            pytest.skip("needs root to mount a small tmpfs")
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill_disk(folder: Path) -> Path:
    """Take every free byte of the disk under ``folder``; delete the returned file to free it."""
    filler = folder / "filler"
    with contextlib.suppress(OSError), open(filler, "wb", buffering=0) as f:
        while True:
            f.write(b"\0" * 4096)
    return filler


def one_line(message: str) -> str:
    assert "\n" not in message and "Traceback" not in message, message
    return message


# -- read-only -------------------------------------------------------------------------------


def test_fully_cached_run_on_read_only_media_is_read(tmp_path: Path, read_only: Callable[[Path], None]) -> None:
    folder = tmp_path / "media"
    folder.mkdir()
    fill(folder / "teacher.sqlite")
    read_only(folder)
    teacher = CountingTeacher()
    with TeacherCache(folder / "teacher.sqlite") as cache:  # before: opening switched to WAL and failed
        assert cache.read_only
        labels = label_texts(teacher, TEXTS, cache, progress=False)
    assert teacher.asked == [] and labels.n_cached == len(TEXTS) and labels.answered.all()
    assert sorted(os.listdir(folder)) == ["teacher.sqlite"]


def test_read_only_cache_missing_texts_is_refused_before_the_teacher(tmp_path: Path, read_only: Callable[[Path], None]) -> None:
    folder = tmp_path / "media"
    folder.mkdir()
    fill(folder / "teacher.sqlite", TEXTS[:56])
    read_only(folder)
    teacher = CountingTeacher()
    with TeacherCache(folder / "teacher.sqlite") as cache, pytest.raises(CacheError) as err:
        label_texts(teacher, TEXTS, cache, progress=False)
    message = one_line(str(err.value))
    assert "is read-only" in message and "8 of 64 texts have no cached answer" in message and "--teacher-cache" in message
    assert teacher.asked == []
    assert answers_in(folder / "teacher.sqlite") == 56


def test_a_read_only_file_in_a_writable_folder_is_read_and_refuses_writes_up_front(tmp_path: Path) -> None:
    path = tmp_path / "teacher.sqlite"
    fill(path, TEXTS[:60])
    if os.geteuid() == 0:  # file modes do not stop root; the immutable attribute does
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not available here")
        undo = ["chattr", "-i", str(path)]
    else:
        path.chmod(0o444)
        undo = ["chmod", "644", str(path)]
    try:
        teacher = CountingTeacher()
        with TeacherCache(path) as cache:
            assert cache.read_only
            assert label_texts(teacher, TEXTS[:60], cache, progress=False).answered.all()
            with pytest.raises(CacheError, match=r"is read-only \(the file is not writable\) and 4 of 64 texts have no cached answer"):
                label_texts(teacher, TEXTS, cache, progress=False)
        assert teacher.asked == []  # before: the first batch was scored, then the write failed
    finally:
        subprocess.run(undo, capture_output=True)


def test_no_cache_in_a_read_only_folder_says_so(tmp_path: Path, read_only: Callable[[Path], None]) -> None:
    folder = tmp_path / "media"
    folder.mkdir()
    read_only(folder)
    with pytest.raises(CacheError) as err:
        TeacherCache(folder / "teacher.sqlite")
    message = one_line(str(err.value))
    assert message.startswith(f"cannot open the teacher cache {folder / 'teacher.sqlite'}: ")
    assert "not writable" in message and "--teacher-cache" in message


# -- not a cache -------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"hello, this is a text file, not a database\n" * 50, None], ids=["text", "other-sqlite"])
def test_a_file_that_is_not_a_cache_is_named_and_left_alone(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "teacher.sqlite"
    if content is None:  # another program's SQLite file: llkd must not add its tables to it
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("CREATE TABLE notes (x)")
            db.commit()
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    with pytest.raises(CacheError) as err:
        TeacherCache(path)
    assert "not an llkd teacher cache" in one_line(str(err.value))
    assert path.read_bytes() == before
    with pytest.raises(CacheError, match="is a folder, not a file"):
        TeacherCache(tmp_path)


# -- a full disk ---------------------------------------------------------------------------------


def test_full_disk_at_open_new_cache_says_so(small_disk: Callable[[int], Path]) -> None:
    disk = small_disk(64)
    fill_disk(disk)
    with pytest.raises(CacheError) as err:
        TeacherCache(disk / "teacher.sqlite")
    message = one_line(str(err.value))
    assert "the disk is full" in message or "I/O error" in message, message
    assert not (disk / "teacher.sqlite").exists()  # no empty file left to look like a damaged cache


def test_full_disk_at_open_still_reads_a_full_cache(small_disk: Callable[[int], Path]) -> None:
    disk = small_disk(256)
    fill(disk / "teacher.sqlite")
    fill_disk(disk)
    teacher = CountingTeacher()
    with TeacherCache(disk / "teacher.sqlite") as cache:
        labels = label_texts(teacher, TEXTS, cache, progress=False)
    assert teacher.asked == [] and labels.answered.all()


def _check_mid_run_stop(err: pytest.ExceptionInfo[CacheError], saved_rows: int) -> None:
    message = one_line(str(err.value))
    assert message.startswith("cannot save teacher answers to ") and "the disk is full" in message
    assert 0 < saved_rows < len(TEXTS)
    assert f"the {saved_rows} answers of this run before it are saved ({saved_rows} of {len(TEXTS)} texts have one)" in message
    assert "a re-run asks only for texts without an answer" in message


def test_disk_full_mid_run_keeps_every_committed_answer(small_disk: Callable[[int], Path]) -> None:
    disk = small_disk(1024)
    ids = [f"{i:04d}-" + "x" * 1000 for i in range(len(TEXTS))]  # long ids: the disk fills within the run
    filler = disk / "filler"
    filler.write_bytes(b"\0" * 890 * 1024)  # about 130 KiB left: room for a few batches
    with TeacherCache(disk / "teacher.sqlite") as cache, pytest.raises(CacheError) as err:
        label_texts(CountingTeacher(), TEXTS, cache, ids=ids, progress=False)
    saved = answers_in(disk / "teacher.sqlite")
    _check_mid_run_stop(err, saved)
    filler.unlink()  # space freed: the re-run asks only for what is missing
    teacher = CountingTeacher()
    with TeacherCache(disk / "teacher.sqlite") as cache:
        labels = label_texts(teacher, TEXTS, cache, ids=ids, progress=False)
    assert len(teacher.asked) == len(TEXTS) - saved and labels.n_cached == saved and labels.answered.all()


def test_disk_full_mid_run_simulated_by_sqlite(tmp_path: Path) -> None:
    """The same stop without root: SQLite's page limit raises SQLITE_FULL as a full disk does."""
    ids = [f"{i:04d}-" + "x" * 3000 for i in range(len(TEXTS))]
    with TeacherCache(tmp_path / "teacher.sqlite") as cache:
        pages = cache._db.execute("PRAGMA page_count").fetchone()[0]
        cache._db.execute(f"PRAGMA max_page_count={pages + 30}")
        with pytest.raises(CacheError) as err:
            label_texts(CountingTeacher(), TEXTS, cache, ids=ids, progress=False)
    saved = answers_in(tmp_path / "teacher.sqlite")
    _check_mid_run_stop(err, saved)
    teacher = CountingTeacher()
    with TeacherCache(tmp_path / "teacher.sqlite") as cache:
        labels = label_texts(teacher, TEXTS, cache, ids=ids, progress=False)
    assert len(teacher.asked) == len(TEXTS) - saved and labels.answered.all()


# -- through the CLI: one line, exit 2 ------------------------------------------------------------


def test_cli_reads_a_read_only_cache_and_refuses_one_line(tmp_path: Path, read_only: Callable[[Path], None], monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from llkd.cli import main
    from llkd.config import TeacherConfig
    from llkd.teacher import build_teacher
    from llkd.teacher.cache import text_hash

    # The openai backend against a port where nothing listens: a run that asks the teacher fails,
    # so a run that succeeds read everything from the cache.
    url = "http://127.0.0.1:9/v1"
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS[:6]))
    labels = tmp_path / "labels.yaml"
    labels.write_text("labels: [World, Sports, Business, Sci/Tech]\n")
    media = tmp_path / "media"
    media.mkdir()
    cfg = TeacherConfig(backend="openai", model="m", base_url=url)
    identity = build_teacher(cfg, SCHEMA).identity()
    with TeacherCache(media / "teacher.sqlite") as cache:
        cache.put_many(identity, [(text_hash(t), None, TeacherAnswer([4, 3, 2, 1], "vote")) for t in TEXTS[:5]])
    read_only(media)
    args = ["label", "--data-pool", str(pool), "--data-labels", str(labels), "--teacher-backend", "openai", "--teacher-model", "m",
            "--teacher-base-url", url, "--teacher-cache", str(media / "teacher.sqlite"), "--teacher-calibration", "none", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("llkd label: error: teacher cache ") and "is read-only" in one_line(err) and "1 of 6 texts have no cached answer" in err
    pool.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS[:5]))
    assert main(args) == 0
    assert "5 texts: 5 from cache, 0 asked, 0 failed" in capsys.readouterr().out


def test_cli_disk_full_at_open_is_one_line(small_disk: Callable[[int], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from llkd.cli import main

    disk = small_disk(64)
    fill_disk(disk)
    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps({"text": "a headline"}) + "\n")
    labels = tmp_path / "labels.yaml"
    labels.write_text("labels: [World, Sports]\n")
    args = ["label", "--data-pool", str(pool), "--data-labels", str(labels), "--teacher-backend", "openai", "--teacher-base-url",
            "http://127.0.0.1:9/v1", "--teacher-cache", str(disk / "sub" / "teacher.sqlite"), "--no-progress"]
    assert main(args) == 2
    err = one_line(capsys.readouterr().err.strip())
    assert err.startswith("llkd label: error: cannot open the teacher cache ") and "the disk is full" in err
