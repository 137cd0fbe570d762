"""One run of a job at a time: a lock file per job, shared by the daemon and the CLI.

`<state>/locks/<job>.lock` is held with `flock(2)`. The kernel drops the lock when its
holder dies, however it dies (SIGKILL, OOM, power), so a lock file left by a dead process
is simply taken by the next run: no pid-alive guessing, no race between "is it stale?" and
"take it". The file is never deleted (deleting it would let two processes lock two
different inodes of the same name); it only says who holds it, for the error message.

flock locks belong to the open file description: two opens in one process conflict too,
so the daemon's own tasks are kept apart by the same lock.

A job that changes the tenant also flocks the state directory itself (`tenant_changes`):
a lock file can be deleted or replaced from under a running job (then a second run locks
a new inode of the same name and both act at once); the directory the job's ledger and
audit log live in cannot be, while the job runs in it.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from agent.errors import DapError, LockBusyError
from agent.files import make_private_dirs, open_state_file, read_state_bytes

log = structlog.get_logger("agent.lock")


def lock_path(state_dir: Path, job_id: str) -> Path:
    return state_dir / "locks" / f"{job_id}.lock"


@contextmanager
def job_lock(state_dir: Path, job_id: str, *, wait: bool,
             tenant_changes: bool = False) -> Iterator[Path]:
    """Hold the job's lock for the duration of the block.

    `wait=False`: raise LockBusyError naming the job and the holder if it is held.
    `wait=True`: block until the holder releases it (CLI `run --wait` only: this blocks
    the thread, so the daemon never waits here; it retries later instead).
    `tenant_changes`: also hold the state directory's own flock (see the module docstring).
    """
    path = lock_path(state_dir, job_id)
    make_private_dirs(path.parent)
    fd = open_state_file(path, os.O_RDWR | os.O_CREAT)  # no symlink, no truncation
    dir_fd = -1
    try:
        _take(fd, job_id, path, wait)
        if tenant_changes:
            dir_fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            _take(dir_fd, job_id, path, wait)
        _write_holder(fd, job_id)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)  # nobody holds it now; the lock itself goes with the fd
    finally:
        if dir_fd >= 0:
            os.close(dir_fd)
        os.close(fd)


def _take(fd: int, job_id: str, path: Path, wait: bool) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = describe_holder(read_holder(path))
        if not wait:
            raise LockBusyError(
                f"job {job_id} is already running ({holder}); run it again when that "
                "run has finished, or pass --wait to wait for it") from None
        log.info("waiting for the job's lock", job=job_id, holder=holder)
        fcntl.flock(fd, fcntl.LOCK_EX)


def read_holder(path: Path) -> dict[str, Any] | None:
    """Who holds (or last held) the lock, as written by the holder; None if unknown."""
    try:
        data = json.loads(read_state_bytes(path) or b"null")
    except (OSError, ValueError, DapError):
        return None
    return data if isinstance(data, dict) else None


def describe_holder(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "held by another process"
    text = f"held by pid {holder.get('pid', '?')}"
    if holder.get("host") and holder.get("host") != os.uname().nodename:
        text += f" on {holder['host']}"
    if holder.get("since"):
        text += f" since {holder['since']}"
    return text


def running_holder(state_dir: Path, job_id: str) -> dict[str, Any] | None:
    """Who runs the job right now, if anyone (for `dap-agent jobs`; display only).

    Reads the holder record instead of probing the lock: a probe would hold the lock for
    a moment and could make a run starting at that instant fail as "already running".
    The record is emptied on release; one left by a killed process names a dead pid.
    """
    holder = read_holder(lock_path(state_dir, job_id))
    if not holder or not isinstance(holder.get("pid"), int):
        return None
    if holder.get("host") not in (None, os.uname().nodename):
        return holder  # another host's process: cannot check, assume it is running
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        return holder
    return holder


def _write_holder(fd: int, job_id: str) -> None:
    info = {"job": job_id, "pid": os.getpid(), "host": os.uname().nodename,
            "since": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")}
    data = json.dumps(info).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
