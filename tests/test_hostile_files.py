"""Issue 15 item 1-2: a planted symlink or special file in the state dir is refused, never
written through; `--output` never replaces a device, fifo or symlink."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from agent.cli import main
from agent.errors import UnsafePathError
from agent.files import (
    append_line,
    exclusive_lock,
    make_private_dirs,
    trust_state_dir,
    write_atomic,
)
from agent.sandbox.seed import licensing as seed
from tests.conftest import write_config


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "elsewhere" / "precious.txt"
    path.parent.mkdir()
    path.write_bytes(b"not the agent's")
    return path


def config_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state: Path) -> Path:
    monkeypatch.setenv("DAP_AGENT_NOW", "2026-05-12T10:00:00+02:00")
    return write_config(
        tmp_path / "agent.toml", tenant_id="00000000-0000-4000-8000-0000000000aa",
        client_id="00000000-0000-4000-8000-0000000000bb",
        graph_url=f"sandbox:{tmp_path / 'tenant.json'}", state_dir=str(state),
        active_users=seed.DEMO_POLICY["active_users"])


def run(config: Path, *args: str) -> int:
    return main(["--config", str(config), "run", "active-users", *args])


def test_a_symlinked_lock_file_is_refused_and_its_target_not_truncated(
        tmp_path: Path, victim: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    (state / "locks").mkdir(parents=True)
    (state / "locks" / "active-users.lock").symlink_to(victim)
    config = config_for(tmp_path, monkeypatch, state)
    assert run(config) == 2
    err = capsys.readouterr().err
    assert "active-users.lock is a symlink" in err and "Traceback" not in err
    assert victim.read_bytes() == b"not the agent's"
    with pytest.raises(UnsafePathError), exclusive_lock(state / "locks" / "active-users.lock"):
        pass  # the shared flock helper alike
    assert victim.read_bytes() == b"not the agent's"


@pytest.mark.parametrize("name", ["locks/active-users.lock", "locks/active-users.state.lock"])
def test_a_hard_link_to_another_file_is_refused_and_that_file_not_changed(
        tmp_path: Path, victim: Path, name: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """O_NOFOLLOW does not see a hard link: a lock file hard-linked to another file had
    that file truncated by the holder record (an audit log, appended to)."""
    state = tmp_path / "state"
    (state / "locks").mkdir(parents=True)
    content = victim.read_bytes()
    os.link(victim, state / name)
    config = config_for(tmp_path, monkeypatch, state)
    assert run(config) == 2
    err = capsys.readouterr().err
    assert "hard links" in err and "Traceback" not in err
    assert victim.read_bytes() == content
    with pytest.raises(UnsafePathError, match="hard links"):
        append_line(state / name, b"line\n")  # the ledger's and decisions' appends alike
    assert victim.read_bytes() == content


def test_a_lock_file_is_not_truncated_when_opened(tmp_path: Path) -> None:
    trust_state_dir(tmp_path)
    path = tmp_path / "locks" / "job.lock"
    make_private_dirs(path.parent)
    path.write_bytes(b'{"pid": 1}')
    with exclusive_lock(path):
        assert path.read_bytes() == b'{"pid": 1}'


def test_a_symlinked_exports_dir_is_refused_and_nothing_written_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    state.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (state / "exports").symlink_to(elsewhere)
    config = config_for(tmp_path, monkeypatch, state)
    assert run(config, "--final", "--json") == 2
    out = capsys.readouterr()
    assert "exports is a symlink" in out.err and "Traceback" not in out.err
    assert json.loads(out.out)["status"] == "failed"  # --json still prints the run report
    assert list(elsewhere.iterdir()) == []


def test_a_symlinked_audit_log_gets_no_line(
        tmp_path: Path, victim: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    config = config_for(tmp_path, monkeypatch, state)
    assert run(config) == 0
    log = state / "audit.jsonl"
    victim.write_bytes(log.read_bytes())  # a copy that passes the chain check
    log.unlink()
    log.symlink_to(victim)
    before = victim.read_bytes()
    assert run(config) == 2
    err = capsys.readouterr().err
    assert "audit.jsonl is a symlink" in err and "Traceback" not in err
    assert victim.read_bytes() == before
    with pytest.raises(UnsafePathError):
        append_line(log, b"x\n")
    assert victim.read_bytes() == before


def test_a_symlinked_state_dir_is_used_but_never_chmoded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "volume"
    target.mkdir()
    os.chmod(target, 0o755)
    state = tmp_path / "state"
    state.symlink_to(target)
    config = config_for(tmp_path, monkeypatch, state)
    assert run(config) == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert (target / "audit.jsonl").is_file()
    real = tmp_path / "real-state"  # a real directory is kept 0700
    real.mkdir(mode=0o755)
    os.chmod(real, 0o755)
    assert run(config_for(tmp_path, monkeypatch, real)) == 0
    assert stat.S_IMODE(real.stat().st_mode) == 0o700


def test_write_atomic_refuses_to_replace_a_planted_fifo(tmp_path: Path) -> None:
    trust_state_dir(tmp_path)
    os.mkfifo(tmp_path / "jobs.json")
    with pytest.raises(UnsafePathError, match="not a regular file"):
        write_atomic(tmp_path / "jobs.json", b"{}")
    assert stat.S_ISFIFO(os.lstat(tmp_path / "jobs.json").st_mode)


@pytest.fixture
def delivered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = config_for(tmp_path, monkeypatch, tmp_path / "state")
    assert run(config, "--final") == 0
    return config


def export(config: Path, output: Path) -> int:
    return main(["--config", str(config), "export", "active-users", "--month", "2026-05",
                 "--output", str(output)])


def test_output_to_a_fifo_is_refused(delivered: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert export(delivered, fifo) == 2
    assert "not a regular file" in capsys.readouterr().err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_output_to_a_symlink_is_refused_and_the_link_kept(
        delivered: Path, tmp_path: Path, victim: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    link = tmp_path / "link.csv"
    link.symlink_to(victim)
    assert export(delivered, link) == 2
    assert "symlink" in capsys.readouterr().err
    assert link.is_symlink() and victim.read_bytes() == b"not the agent's"


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/null"),
                    reason="replacing a device node needs root")
def test_output_to_a_device_is_refused(delivered: Path) -> None:
    assert export(delivered, Path("/dev/null")) == 2
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)


def test_output_over_a_regular_file_replaces_it(delivered: Path, tmp_path: Path) -> None:
    target = tmp_path / "old.csv"
    target.write_bytes(b"old")
    assert export(delivered, target) == 0
    assert target.read_bytes().startswith(b"user_principal_name") or target.read_bytes() != b"old"


def test_retention_never_deletes_through_a_symlinked_exports_dir(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from agent.retention import RetentionPolicy, prune

    state = tmp_path / "state"
    state.mkdir()
    trust_state_dir(state)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "devices-2020-01-01.csv").write_bytes(b"someone else's")
    (state / "exports").symlink_to(elsewhere)
    with pytest.raises(UnsafePathError, match="exports is a symlink"):
        prune(state, RetentionPolicy(), datetime(2026, 5, 1, tzinfo=UTC), lambda entry: None)
    assert (elsewhere / "devices-2020-01-01.csv").read_bytes() == b"someone else's"


def test_a_symlinked_state_file_is_not_read_through(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Reads too: a snapshot (or ledger, run report, score record) replaced by a symlink
    to a file of the attacker's choosing is refused, not rendered or believed."""
    state = tmp_path / "state"
    config = config_for(tmp_path, monkeypatch, state)
    assert run(config, "--final") == 0
    snapshot = state / "snapshots" / "active-users" / "2026-05.json"
    forged = tmp_path / "elsewhere.json"
    forged.write_bytes(snapshot.read_bytes())
    snapshot.unlink()
    snapshot.symlink_to(forged)
    capsys.readouterr()
    code = main(["--config", str(config), "export", "active-users", "--month", "2026-05",
                 "--output", str(tmp_path / "out.csv")])
    err = capsys.readouterr().err
    assert code == 2
    assert "2026-05.json is a symlink" in err and "Traceback" not in err
    assert not (tmp_path / "out.csv").exists()
