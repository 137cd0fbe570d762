"""The per-job lock shared by the daemon and the CLI: contention, waiting, stale locks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import LockBusyError
from agent.lock import job_lock, lock_path, read_holder, running_holder

HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from agent.lock import job_lock
    from agent.logs import configure
    configure(json_lines=True)  # logs to stderr, as in the CLI
    with job_lock(Path(sys.argv[1]), sys.argv[2], wait=sys.argv[3] == "wait"):
        print("locked", flush=True)
        sys.stdin.readline()  # hold until the test says so (or closes stdin)
    print("released", flush=True)
""")


def start_holder(state: Path, job: str = "offboarding", *, wait: bool = False,
                 ) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(state), job,
                             "wait" if wait else "nowait"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_lock_is_exclusive_and_names_the_holder(tmp_path: Path) -> None:
    with job_lock(tmp_path, "offboarding", wait=False) as path:
        assert path == lock_path(tmp_path, "offboarding")
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        holder = read_holder(path)
        assert holder is not None and holder["pid"] == os.getpid()
        # a second open in the same process conflicts too (the daemon's own tasks)
        with pytest.raises(LockBusyError) as info, job_lock(tmp_path, "offboarding",
                                                            wait=False):
            pass
        message = str(info.value)
        assert "job offboarding is already running" in message
        assert f"pid {os.getpid()}" in message and "--wait" in message
        assert info.value.exit_code == 2
        # other jobs are independent
        with job_lock(tmp_path, "device-compliance", wait=False):
            pass
    assert read_holder(path) is None  # emptied on release
    with job_lock(tmp_path, "offboarding", wait=False):
        pass


def test_lock_released_when_the_block_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), job_lock(tmp_path, "offboarding", wait=False):
        raise RuntimeError("job failed")
    with job_lock(tmp_path, "offboarding", wait=False):
        pass


def test_contention_between_two_processes(tmp_path: Path,
                                          holders: list[subprocess.Popen[str]]) -> None:
    first = start_holder(tmp_path)
    holders.append(first)
    assert first.stdout is not None and first.stdout.readline().strip() == "locked"
    with pytest.raises(LockBusyError, match=f"pid {first.pid}"), \
            job_lock(tmp_path, "offboarding", wait=False):
        pass
    assert running_holder(tmp_path, "offboarding") == read_holder(
        lock_path(tmp_path, "offboarding"))

    # a second process that waits: it says so, blocks, and gets the lock on release
    second = start_holder(tmp_path, wait=True)
    holders.append(second)
    assert second.stderr is not None and "waiting for the job's lock" in second.stderr.readline()
    assert second.poll() is None
    first.communicate("\n")
    assert first.returncode == 0
    assert second.stdout is not None and second.stdout.readline().strip() == "locked"
    assert running_holder(tmp_path, "offboarding")["pid"] == second.pid  # type: ignore[index]
    second.communicate("\n")
    assert second.returncode == 0
    assert running_holder(tmp_path, "offboarding") is None


def test_stale_lock_of_a_killed_process_is_taken_over(
        tmp_path: Path, holders: list[subprocess.Popen[str]]) -> None:
    dead = start_holder(tmp_path)
    holders.append(dead)
    assert dead.stdout is not None and dead.stdout.readline().strip() == "locked"
    os.kill(dead.pid, signal.SIGKILL)
    dead.wait()
    path = lock_path(tmp_path, "offboarding")
    assert read_holder(path)["pid"] == dead.pid  # type: ignore[index]  # file says: dead pid
    assert running_holder(tmp_path, "offboarding") is None  # ... which is not running
    with job_lock(tmp_path, "offboarding", wait=False):  # the kernel released its flock
        assert read_holder(path)["pid"] == os.getpid()  # type: ignore[index]


def test_garbage_in_the_lock_file_is_harmless(tmp_path: Path) -> None:
    path = lock_path(tmp_path, "offboarding")
    path.parent.mkdir(parents=True)
    path.write_text("not json")
    assert read_holder(path) is None and running_holder(tmp_path, "offboarding") is None
    with job_lock(tmp_path, "offboarding", wait=False):
        assert read_holder(path)["pid"] == os.getpid()  # type: ignore[index]
