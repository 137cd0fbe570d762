"""`dap-agent serve` as a process against the sandbox tenant: a scheduled run, SIGTERM mid-run.

The schedule is accelerated with the sandbox-only clock hook `DAP_AGENT_NOW` (the daemon's
clock starts there and runs on), set two seconds before offboarding's 06:00 run. The
sandbox answers every second request with 429 + Retry-After so the run takes seconds,
and the test sends SIGTERM once the first change is done. systemd's side is a real
AF_UNIX datagram socket in `$NOTIFY_SOCKET`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.audit import AuditLog
from agent.run import load_report
from tests.conftest import CLIENT_ID, TENANT_ID, write_config

pytestmark = pytest.mark.slow
DAP_AGENT = Path(sys.executable).with_name("dap-agent")
WAIT = 60.0  # guards against a hang only


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(WAIT)
    yield sock, path
    sock.close()


def receive_until(sock: socket.socket, wanted: str) -> list[str]:
    seen: list[str] = []
    while not any(line.startswith(wanted) for line in seen):
        seen.extend(sock.recv(65536).decode().split("\n"))
    return seen


def wait_for_entry(audit: Path, proc: subprocess.Popen[bytes], predicate: Any) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the daemon exited early"
        if audit.exists() and any(predicate(e) for e in AuditLog(audit).entries()):
            return
        time.sleep(0.05)  # polling a file another process writes
    raise AssertionError("timed out waiting for an audit entry")


def test_sigterm_during_a_scheduled_run(tmp_path: Path,
                                        notify_socket: tuple[socket.socket, str]) -> None:
    sock, sock_path = notify_socket
    state = tmp_path / "state"
    config = write_config(
        tmp_path / "agent.toml", tenant_id=TENANT_ID, client_id=CLIENT_ID,
        graph_url=f"sandbox:{tmp_path / 'tenant.json'}", state_dir=str(state),
        active_users={"enabled": False}, device_compliance={"enabled": False},
        privileged_roles={"enabled": False}, secure_score={"enabled": False},
        service_report={"enabled": False},
        offboarding={"mode": "enforce", "schedule": "0 6 * * *"})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAP_AGENT_", "WATCHDOG_"))}
    env.update(DAP_AGENT_NOW="2026-12-02T05:59:58+01:00", NOTIFY_SOCKET=sock_path,
               DAP_AGENT_SANDBOX_FAULTS=json.dumps({"throttle_every": 2, "retry_after": 0.3}))
    stderr = (tmp_path / "stderr.log").open("wb")
    proc = subprocess.Popen([str(DAP_AGENT), "--config", str(config), "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        ready = receive_until(sock, "READY=1")
        assert "STATUS=next: offboarding 2026-12-02 06:00 CET" in ready
        audit = state / "audit.jsonl"
        wait_for_entry(audit, proc, lambda e: e.get("event") == "action"
                       and e.get("status") == "done")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT) == 0
        stopping = receive_until(sock, "STOPPING=1")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr.close()
    assert any(line.startswith("STATUS=stopping") for line in stopping)

    # the audit log verifies, with the CLI too
    verify = subprocess.run([str(DAP_AGENT), "--config", str(config), "audit", "verify"],
                            env=env, capture_output=True, text=True, timeout=WAIT)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    entries = list(AuditLog(audit).entries())
    started = [e for e in entries if e["event"] == "run-started"]
    assert len(started) == 1
    assert (started[0]["trigger"], started[0]["scheduled_for"]) == (
        "schedule", "2026-12-02T05:00:00Z")
    finished = [e for e in entries if e["event"] in ("run-finished", "run-failed")]
    assert len(finished) == 1 and finished[0]["status"] == "partial"
    report = load_report(finished[0]["report_path"])
    assert report["status"] == "partial"
    assert "the service is shutting down" in report["error"]
    # the change in flight was finished and audited: every planned change has an outcome
    outcomes: dict[tuple[str, str], list[str]] = {}
    for entry in entries:
        if entry["event"] == "action" and entry["status"] != "skipped":
            outcomes.setdefault((entry["action"], entry["target"]["id"]), []).append(
                entry["status"])
    assert outcomes and all(len(s) == 2 and s[0] == "planned" and s[1] in ("done", "failed")
                            for s in outcomes.values()), outcomes
    # the logs are JSON lines, with the run id on the run's lines
    lines = [json.loads(line) for line in (tmp_path / "stderr.log").read_text().splitlines()
             if line.startswith("{")]
    run_lines = [line for line in lines if line.get("event", "").startswith("changing: ")]
    assert run_lines and all(line.get("run_id") == report["run_id"] for line in run_lines)
    assert any(line["event"] == "daemon stopped" for line in lines)

    # `dap-agent jobs` shows it (its clock is DAP_AGENT_NOW, fixed: 05:59:58)
    jobs = subprocess.run([str(DAP_AGENT), "--config", str(config), "jobs"], env=env,
                          capture_output=True, text=True, timeout=WAIT)
    assert jobs.returncode == 0
    row = next(line for line in jobs.stdout.splitlines() if line.startswith("offboarding"))
    assert row.split()[-2:] == ["partial", str(len(report["findings"]))]
    assert "2026-12-02 06:00 CET" in row
