"""`<state>/jobs/<job>.json`: what the runner records, what `dap-agent jobs` shows."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.jobstate import (
    job_status,
    mark_scheduled,
    read_state,
    record_run,
    state_path,
)
from agent.lock import job_lock
from agent.run import Finding, RunReport, Subject
from tests.conftest import make_settings

AMS = ZoneInfo("Europe/Amsterdam")


def report(job: str, started: str, status: str = "ok", trigger: str = "schedule",
           findings: int = 0) -> RunReport:
    stamp = started.replace("-", "").replace(":", "")
    return RunReport(
        run_id=f"{stamp}-{job}-abcdef", job=job, trigger=trigger, dry_run=False,
        started_at=started, finished_at=started, status=status,  # type: ignore[arg-type]
        findings=[Finding("DEV-STALE", "low", Subject("device", str(i)), "x")
                  for i in range(findings)])


def test_record_run_writes_the_documented_fields_atomically(tmp_path: Path) -> None:
    stale = state_path(tmp_path, "offboarding").with_name(".offboarding.json.99999.tmp")
    stale.parent.mkdir(parents=True)
    stale.write_text("{")  # left by a writer that was killed mid-write
    state = record_run(tmp_path, report("offboarding", "2026-11-02T05:00:00Z", findings=3))
    path = state_path(tmp_path, "offboarding")
    data = json.loads(path.read_text())
    assert {"job", "last_run_id", "last_status", "last_started_at", "last_finished_at",
            "last_success_at", "findings", "trigger"} <= set(data)
    assert data["last_status"] == "ok" and data["findings"] == 3
    assert data["last_success_at"] == data["last_scheduled_success_at"] == "2026-11-02T05:00:00Z"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    assert read_state(tmp_path, "offboarding") == state


def test_failures_and_runs_by_hand_do_not_count_as_scheduled_success(tmp_path: Path) -> None:
    record_run(tmp_path, report("active-users", "2026-10-30T06:00:00Z"))
    record_run(tmp_path, report("active-users", "2026-11-29T10:00:00Z", trigger="cli"))
    state = record_run(tmp_path, report("active-users", "2026-11-30T06:00:00Z",
                                        status="failed"))
    assert state.last_status == "failed" and state.trigger == "schedule"
    assert state.last_success_at == "2026-11-29T10:00:00Z"  # the CLI run
    assert state.last_scheduled_success_at == "2026-10-30T06:00:00Z"  # the daemon's last ok
    partial = record_run(tmp_path, report("active-users", "2026-12-01T06:00:00Z",
                                          status="partial", trigger="catch-up"))
    assert partial.last_scheduled_success_at == "2026-10-30T06:00:00Z"


def test_mark_scheduled_keeps_the_first_time(tmp_path: Path) -> None:
    first = mark_scheduled(tmp_path, "offboarding", datetime(2026, 1, 1, tzinfo=UTC))
    again = mark_scheduled(tmp_path, "offboarding", datetime(2026, 6, 1, tzinfo=UTC))
    assert first.scheduled_since == again.scheduled_since == "2026-01-01T00:00:00Z"
    state = record_run(tmp_path, report("offboarding", "2026-06-02T05:00:00Z"))
    assert state.scheduled_since == "2026-01-01T00:00:00Z"  # the runner keeps it


def test_lost_or_damaged_state_is_rebuilt_from_the_run_reports(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    for rep in (report("active-users", "2026-09-30T05:00:00Z"),
                report("active-users", "2026-10-30T06:00:00Z", findings=1),
                report("active-users", "2026-11-10T09:00:00Z", trigger="cli",
                       status="partial"),
                report("offboarding", "2026-11-11T05:00:00Z")):
        (runs / f"{rep.run_id}.json").write_text(json.dumps(rep.to_dict()))
    (runs / "garbage-active-users-000000.json").write_text("{not json")
    state = read_state(tmp_path, "active-users")  # no state file at all
    assert state.last_scheduled_success_at == "2026-10-30T06:00:00Z"
    assert state.last_status == "partial" and state.trigger == "cli"
    path = state_path(tmp_path, "active-users")
    path.parent.mkdir()
    path.write_text('{"job": "active-users", "last_sta')  # torn
    assert read_state(tmp_path, "active-users").last_scheduled_success_at == (
        "2026-10-30T06:00:00Z")


def test_job_status_rows(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, device_compliance={"enabled": False})
    state = settings.state_dir
    record_run(state, report("offboarding", "2026-11-30T05:00:00Z", status="partial",
                             findings=2))
    now = datetime(2026, 11, 30, 12, 0, tzinfo=AMS)
    with job_lock(state, "privileged-roles", wait=False):
        rows = {row.job: row for row in job_status(settings, now)}
    assert list(rows) == ["active-users", "offboarding", "device-compliance",
                          "privileged-roles", "secure-score", "service-report"]
    assert rows["active-users"].next_run == "2026-12-31 07:00 CET"  # last working day
    assert rows["active-users"].last_run is None and rows["active-users"].status is None
    assert rows["offboarding"].next_run == "2026-12-01 06:00 CET"
    assert rows["offboarding"].last_run == "2026-11-30 06:00 CET"
    assert (rows["offboarding"].status, rows["offboarding"].findings) == ("partial", 2)
    assert rows["device-compliance"].next_run == "disabled"
    assert rows["privileged-roles"].status == "running"
    assert rows["privileged-roles"].running_pid == os.getpid()


@pytest.mark.parametrize("now", [datetime(2026, 3, 27, 12, tzinfo=AMS)])
def test_job_status_next_run_is_in_local_time_across_dst(tmp_path: Path,
                                                          now: datetime) -> None:
    settings = make_settings(tmp_path)
    rows = {row.job: row for row in job_status(settings, now)}
    assert rows["device-compliance"].next_run == "2026-03-30 07:00 CEST"  # Mon, summer time
    assert rows["active-users"].next_run == "2026-03-31 07:00 CEST"


def test_job_status_uses_the_policys_workday_calendar(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, active_users={"good_friday_is_holiday": False})
    rows = {row.job: row for row in job_status(settings, datetime(2029, 3, 1, tzinfo=AMS))}
    assert rows["active-users"].next_run == "2029-03-30 07:00 CEST"
