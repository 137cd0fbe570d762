"""Writing the agent's files: atomically, privately (0600 in 0700 directories), durably.

Every state, report and export file goes through `write_atomic`, so a process killed at any
moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically, mode 0600, creating the directories (0700).

    The temporary file is `.<name>.<pid>.<random>.tmp`: a process killed before its rename
    leaves it behind, and `remove_stale_temporaries` knows it by the dead pid.
    """
    write_atomic_chunks(path, (data,))


def write_atomic_chunks(path: Path, chunks: Iterable[bytes]) -> str:
    """`write_atomic` for data made piece by piece (a 100k-row export never sits in memory
    whole); returns the SHA-256 of what was written."""
    make_private_dirs(path.parent)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp",
                               dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                digest.update(chunk)
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return digest.hexdigest()


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an flock on `path` (a private lock file, kept): serialises writers across the
    daemon and CLI processes; the kernel drops it if the holder dies."""
    make_private_dirs(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def make_private_dirs(directory: Path) -> None:
    """mkdir -p where every directory created is 0700 (mkdir's mode covers only the last)."""
    missing = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        path.mkdir(mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)  # the umask may have taken bits away, never added: be exact


def fsync_directory(directory: Path) -> None:
    """Make a rename durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(directory: Path) -> list[str]:
    """Delete the temporary files `write_atomic` left when its process was killed.

    Only files whose writer is gone (the pid in the name no longer runs); another live
    process's file in flight is left alone. Returns the names removed.
    """
    removed: list[str] = []
    if not directory.is_dir():
        return removed
    for candidate in directory.glob(".*.tmp"):
        parts = candidate.name[:-len(".tmp")].rsplit(".", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid == os.getpid() or _running(pid):
            continue
        candidate.unlink(missing_ok=True)
        removed.append(candidate.name)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
