"""A state dir this user cannot use is exit 2 naming it and the cause (issue 14.8), and one
daemon per state dir."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli import main
from tests.conftest import CLIENT_ID, TENANT_ID, write_config

ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's tmp dirs are private to us)."""
    path = Path(tempfile.mkdtemp(prefix="dap-statedir-"))
    path.chmod(0o755)
    yield path
    for sub in path.rglob("*"):
        if sub.is_dir():
            sub.chmod(0o700)
    shutil.rmtree(path)


def as_another_user(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a user who does not own the state: `nobody` when we are root (root reads
    everything), else ourselves with the state made unreadable by the caller."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("as root this needs setpriv (util-linux) to become another user")
        prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAP_AGENT_")}
    return subprocess.run([*prefix, sys.executable, "-m", "agent", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=60)


def private_state(shared: Path, *, dir_mode: int, file_mode: int) -> Path:
    config = write_config(shared / "agent.toml", tenant_id=TENANT_ID, client_id=CLIENT_ID,
                          graph_url=f"sandbox:{shared / 'tenant.json'}",
                          state_dir=str(shared / "state"))
    config.chmod(0o644)
    state = shared / "state"
    state.mkdir()
    (state / "audit.jsonl").write_text("")
    (state / "audit.jsonl").chmod(file_mode)
    if os.geteuid() != 0 and dir_mode == 0o700:
        dir_mode = 0o000  # we own it: only no permission at all keeps us out
    state.chmod(dir_mode)
    return config


@pytest.mark.parametrize("command", [
    ["jobs"], ["audit", "verify"], ["audit", "show"], ["config", "check"],
    ["run", "active-users"], ["serve"],
])
def test_an_unreadable_state_dir_is_exit_2_naming_it_and_the_cause(
        shared_dir: Path, command: list[str]) -> None:
    config = private_state(shared_dir, dir_mode=0o700, file_mode=0o600)
    result = as_another_user("--config", str(config), *command)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"state_dir: {shared_dir / 'state'}: " in result.stderr
    assert "service user" in result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr


def test_an_unreadable_file_in_the_state_is_exit_2_naming_the_file(shared_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs a second user: as the owner every file of ours is readable")
    config = private_state(shared_dir, dir_mode=0o755, file_mode=0o600)
    result = as_another_user("--config", str(config), "audit", "verify")
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{shared_dir / 'state' / 'audit.jsonl'}: permission denied" in result.stderr
    assert "internal error" not in result.stderr


def test_a_second_serve_on_the_same_state_dir_refuses_to_start(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agent.serve import serve_lock
    from agent.settings import load_settings

    config = write_config(tmp_path / "agent.toml", tenant_id=TENANT_ID, client_id=CLIENT_ID,
                          graph_url=f"sandbox:{tmp_path / 'tenant.json'}",
                          state_dir=str(tmp_path / "state"))
    with serve_lock(load_settings(config)):  # the first daemon
        code = main(["--config", str(config), "serve"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"another dap-agent serve already uses state_dir {tmp_path / 'state'}" in err
    assert f"pid {os.getpid()}" in err
