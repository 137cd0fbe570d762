"""The one file writer: atomic, private, durable, and chunked output equal to whole output."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from agent.exports import csv_chunks, render_csv
from agent.files import make_private_dirs, write_atomic, write_atomic_chunks


def test_chunked_csv_is_byte_identical_across_batch_boundaries() -> None:
    rows = [[f"user{i}", i, i % 2 == 0, None, "=cmd()" if i == 3 else "x"] for i in range(7)]
    whole = render_csv(("a", "b", "c", "d", "e"), rows)
    for batch in (1, 2, 3, 7, 100):
        assert b"".join(csv_chunks(("a", "b", "c", "d", "e"), rows, batch=batch)) == whole
    assert b"'=cmd()" in whole  # formula-looking text stays text


def test_write_atomic_chunks_returns_the_files_sha256(tmp_path: Path) -> None:
    path = tmp_path / "out" / "x.csv"
    digest = write_atomic_chunks(path, iter([b"a,b\r\n", b"1,2\r\n"]))
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    write_atomic(path, b"old")

    def chunks() -> object:
        yield b"new, half"
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_atomic_chunks(path, chunks())  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.csv"]


def test_every_directory_created_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        make_private_dirs(tmp_path / "a" / "b" / "c")
    finally:
        os.umask(old)
    for part in ("a", "a/b", "a/b/c"):
        assert stat.S_IMODE((tmp_path / part).stat().st_mode) == 0o700
