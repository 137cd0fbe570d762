"""The audit log's hash chain detects every kind of tampering, and `Run` writes it right."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.audit import AuditLog
from agent.errors import GraphError, GraphPermissionError
from agent.run import Run, Subject, load_report, read_report_bytes


def _log(tmp_path: Path, n: int = 5) -> AuditLog:
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(n):
        log.append({"run_id": "r1", "event": "action", "n": i})
    return log


def _lines(log: AuditLog) -> list[bytes]:
    return log.path.read_bytes().splitlines(keepends=True)


def test_intact_log_verifies(tmp_path: Path) -> None:
    log = _log(tmp_path)
    result = log.verify()
    assert result.ok and result.entries == 5
    entries = list(log.entries())
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert entries[1]["prev"] == entries[0]["hash"]


def test_files_are_private(tmp_path: Path) -> None:
    log = _log(tmp_path, 1)
    assert log.path.stat().st_mode & 0o777 == 0o600


def test_edit_is_detected(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = _lines(log)
    entry = json.loads(lines[2])
    entry["n"] = 99
    lines[2] = json.dumps(entry).encode() + b"\n"
    log.path.write_bytes(b"".join(lines))
    result = log.verify()
    assert not result.ok and result.bad_line == 3 and "edited" in result.problem


def test_edit_with_recomputed_hash_is_detected_by_the_next_line(tmp_path: Path) -> None:
    from agent.audit import entry_hash

    log = _log(tmp_path)
    lines = _lines(log)
    entry = json.loads(lines[1])
    entry["n"] = 42
    entry["hash"] = entry_hash(entry)
    lines[1] = json.dumps(entry).encode() + b"\n"
    log.path.write_bytes(b"".join(lines))
    result = log.verify()
    assert not result.ok and result.bad_line == 3


def test_deletion_in_the_middle_is_detected(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = _lines(log)
    del lines[2]
    log.path.write_bytes(b"".join(lines))
    result = log.verify()
    assert not result.ok and result.bad_line == 3


def test_reordering_is_detected(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = _lines(log)
    lines[1], lines[2] = lines[2], lines[1]
    log.path.write_bytes(b"".join(lines))
    assert log.verify().bad_line == 2


def test_cutting_entries_off_the_end_is_detected(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = _lines(log)
    log.path.write_bytes(b"".join(lines[:3]))
    result = log.verify()
    assert not result.ok and "cut off" in result.problem


def test_truncation_mid_line_is_detected(tmp_path: Path) -> None:
    log = _log(tmp_path)
    data = log.path.read_bytes()
    log.path.write_bytes(data[:-20])
    result = log.verify()
    assert not result.ok and result.bad_line == 5


def test_crash_between_append_and_head_update_still_verifies(tmp_path: Path) -> None:
    log = _log(tmp_path, 3)
    head = json.loads(log.head_path.read_text())
    log.append({"run_id": "r1", "event": "action", "n": 3})
    log.head_path.write_text(json.dumps(head))  # as if the process died before the head write
    assert log.verify().ok


def test_appending_continues_the_chain_across_instances(tmp_path: Path) -> None:
    _log(tmp_path, 2)
    again = AuditLog(tmp_path / "audit.jsonl")
    again.append({"event": "x"})
    assert again.verify().ok and again.verify().entries == 3


# ---- Run -----------------------------------------------------------------------------------

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def _run(tmp_path: Path, dry_run: bool) -> Run:
    return Run(audit=AuditLog(tmp_path / "audit.jsonl"), runs_dir=tmp_path / "runs",
               job="offboarding", trigger="cli", dry_run=dry_run, now=NOW)


def test_run_audits_a_change_before_and_after(tmp_path: Path) -> None:
    run = _run(tmp_path, dry_run=False)
    with run, run.change("disable-user", Subject("user", "u1", "a@x"), "left",
                    before={"accountEnabled": True}) as ch:
        assert ch.execute
        ch.done(request_id="req-1", after={"accountEnabled": False})
    events = list(run.audit.entries())
    assert [e["event"] for e in events] == ["run-started", "action", "action", "run-finished"]
    assert events[1]["status"] == "planned" and events[2]["status"] == "done"
    assert events[2]["request_id"] == "req-1" and events[2]["after"] == {"accountEnabled": False}
    assert run.report.status == "ok" and run.report.actions[0].status == "done"
    stored = load_report(run.run_id, tmp_path / "runs")
    assert stored["actions"][0]["status"] == "done"
    assert run.audit.verify().ok


def test_dry_run_plans_and_never_executes(tmp_path: Path) -> None:
    run = _run(tmp_path, dry_run=True)
    with run, run.change("delete-user", Subject("user", "u1"), "retention over") as ch:
        assert not ch.execute
    assert run.report.actions[0].status == "planned"
    events = [e for e in run.audit.entries() if e["event"] == "action"]
    assert len(events) == 1 and events[0]["dry_run"] is True


def test_a_failed_change_does_not_stop_the_batch(tmp_path: Path) -> None:
    run = _run(tmp_path, dry_run=False)
    with run:
        with run.change("wipe-device", Subject("device", "d1"), "leaver"):
            raise GraphError("boom", status=500, code="InternalError", request_id="req-9")
        with run.change("wipe-device", Subject("device", "d2"), "leaver") as ch:
            ch.done(request_id="req-10")
    statuses = [a.status for a in run.report.actions]
    assert statuses == ["failed", "done"]
    assert run.report.actions[0].request_id == "req-9"
    assert run.report.status == "partial"


def test_a_permission_error_ends_the_run_as_failed(tmp_path: Path) -> None:
    run = _run(tmp_path, dry_run=False)
    with pytest.raises(GraphPermissionError), run, run.change(
            "wipe-device", Subject("device", "d1"), "leaver"):
        raise GraphPermissionError("DeviceManagementManagedDevices.PrivilegedOperations.All")
    assert run.report.status == "failed"
    last = list(run.audit.entries())[-1]
    assert last["event"] == "run-failed"
    assert "PrivilegedOperations" in last["error"]


def test_the_stored_report_is_the_report_and_its_hash_is_audited(tmp_path: Path) -> None:
    import hashlib

    run = _run(tmp_path, dry_run=False)
    with run:
        run.finding("DEV-STALE", "low", Subject("device", "d1", "LT-1"), "no contact")
        run.report.summary["when"] = NOW  # not JSON by itself: stored as text
    path = tmp_path / "runs" / f"{run.run_id}.json.gz"  # stored compressed
    assert load_report(path) == json.loads(json.dumps(run.report.to_dict(), default=str))
    finished = list(run.audit.entries())[-1]
    # the checksum is of the JSON, not of its compressed file
    assert finished["report_sha256"] == hashlib.sha256(read_report_bytes(path)).hexdigest()
    assert finished["report_path"] == str(path)
