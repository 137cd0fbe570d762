"""A process killed around a seal or an epoch change leaves a log that verifies with the
key, and the next run goes on (issue #12, item 7). The CLI in a child process, killed at
an `os.replace` (`tests.helpers_hardening` kill points)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.audit import AuditLog
from agent.audit.seal import parse_key
from tests.helpers_hardening import (
    NOW,
    ForkServer,
    clean_env,
    demo_config,
    demo_tenant,
)

JOB = "privileged-roles"  # reads only: the crash is the audit log's alone


def _env() -> dict[str, str]:
    return clean_env(DAP_AGENT_NOW=NOW.isoformat())


def scratch_dir(prefix: str) -> Path:
    """On tmpfs when there is one: every audit entry is fsynced."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


@pytest.fixture(scope="module")
def server() -> Iterator[ForkServer]:
    scratch = scratch_dir("dap-audit-crash-")
    fork = ForkServer(scratch)
    yield fork
    fork.close()
    shutil.rmtree(scratch, ignore_errors=True)


def _sealed_state(server: ForkServer, root: Path) -> tuple[Path, bytes]:
    root.mkdir(parents=True, exist_ok=True)
    demo_tenant().save(root / "tenant.json")
    config = demo_config(root)
    init = server.run("--config", str(config), "audit", "init", env=_env())
    assert init.returncode == 0, init.stderr
    return config, parse_key(init.stdout.splitlines()[-1].removeprefix("verification key: "))


def test_a_kill_around_each_epoch_change_leaves_a_verifiable_log(
        server: ForkServer, tmp_path: Path) -> None:
    config, key = _sealed_state(server, tmp_path / "count")
    counted = server.run("--config", str(config), "run", JOB, env=_env(),
                         point="count-replaces")
    assert counted.returncode == 0, counted.stderr
    names = json.loads(counted.stderr.rsplit("replaced=", 1)[1].splitlines()[0])
    # the epoch-closed entry's head update, then the new key replacing the old one
    seal = len(names) - names[::-1].index("audit.seal")
    points = [f"after-replace:{seal - 1}", f"before-replace:{seal}", f"after-replace:{seal}"]
    assert names[seal - 2] == "audit.head" and names[seal - 1] == "audit.seal", names
    for point in points:
        root = tmp_path / point.replace(":", "-")
        config, key = _sealed_state(server, root)
        killed = server.run("--config", str(config), "run", JOB, env=_env(), point=point)
        assert killed.returncode == 137, (point, killed.stderr[-2000:])
        log = AuditLog(root / "state" / "audit.jsonl")
        result = log.verify(key=key)
        assert result.ok, (point, result.problem)
        again = server.run("--config", str(config), "run", JOB, env=_env())
        assert again.returncode == 0, (point, again.stderr[-2000:])
        result = log.verify_all(key=key)
        assert result.ok, (point, result.problem)


def test_a_kill_inside_audit_init_leaves_a_log_init_can_finish(server: ForkServer,
                                                               tmp_path: Path) -> None:
    (tmp_path / "state").mkdir(parents=True)
    demo_tenant().save(tmp_path / "tenant.json")
    config = demo_config(tmp_path)
    # replace 1: the new log's head; 2: the sealing state, before its seal-init entry
    killed = server.run("--config", str(config), "audit", "init", env=_env(),
                        point="after-replace:2")
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert "verification key" not in killed.stdout  # nobody saw a key
    init = server.run("--config", str(config), "audit", "init", env=_env())
    assert init.returncode == 0, init.stderr
    key = parse_key(init.stdout.splitlines()[-1].removeprefix("verification key: "))
    assert AuditLog(tmp_path / "state" / "audit.jsonl").verify(key=key).ok
