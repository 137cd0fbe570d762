"""No silent gaps: a missing log, head or state dir, a cut log, a broken chain before a run,
short and failed writes, torn last lines, checkpoints (issue #12, items 2-4)."""

from __future__ import annotations

import errno
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.audit import AuditBrokenError, AuditLog, AuditWriteError, parse_checkpoint
from agent.audit import log as audit_log_module
from agent.errors import UsageError
from agent.run import Run, load_report

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def _log(tmp_path: Path, n: int = 10) -> AuditLog:
    log = AuditLog(tmp_path / "state" / "audit.jsonl")
    for i in range(n):
        log.append({"run_id": "r1", "event": "action", "n": i})
    return log


def _lines(log: AuditLog) -> list[bytes]:
    return log.path.read_bytes().splitlines(keepends=True)


def _run(log: AuditLog) -> Run:
    return Run(audit=log, runs_dir=log.path.parent / "runs", job="privileged-roles",
               trigger="cli", dry_run=False, now=NOW)


# ---- missing pieces are "not intact", naming what is missing ------------------------------

def test_deleted_log_with_its_head_left_is_not_intact(tmp_path: Path) -> None:
    log = _log(tmp_path, 30)
    log.path.unlink()
    result = log.verify()
    assert not result.ok
    assert "audit log is missing" in result.problem and "records 30 entries" in result.problem
    with pytest.raises(AuditBrokenError, match="missing"):
        log.append({"event": "x"})  # nor does a run start a fresh log over it


def test_a_state_dir_that_does_not_exist_is_not_intact(tmp_path: Path) -> None:
    result = AuditLog(tmp_path / "nowhere" / "audit.jsonl").verify()
    assert not result.ok
    assert f"state directory {tmp_path / 'nowhere'} does not exist" in result.problem


def test_a_log_never_written_is_not_intact_but_a_first_run_may_start_it(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    assert not log.verify().ok and "missing" in log.verify().problem
    log.check()  # a fresh state: the first run starts the log
    with _run(log):
        pass
    assert log.verify().ok


def test_a_deleted_head_is_not_intact(tmp_path: Path) -> None:
    log = _log(tmp_path)
    log.head_path.unlink()
    result = log.verify()
    assert not result.ok and "audit.head is missing" in result.problem


def test_cutting_lines_and_deleting_the_head_is_not_intact(tmp_path: Path) -> None:
    log = _log(tmp_path)
    log.path.write_bytes(b"".join(_lines(log)[:-5]))
    log.head_path.unlink()
    assert not log.verify().ok


def test_cutting_one_line_and_lowering_head_seq_is_not_intact(tmp_path: Path) -> None:
    log = _log(tmp_path)
    log.path.write_bytes(b"".join(_lines(log)[:-1]))
    head = json.loads(log.head_path.read_bytes())
    for lowered in (head["seq"] - 1, head["seq"] - 2):
        log.head_path.write_text(json.dumps({**head, "seq": lowered}))
        result = log.verify()
        assert not result.ok, lowered
        assert "audit.head" in result.problem


def test_cutting_lines_behind_a_rewritten_head_fails_against_a_held_checkpoint(
        tmp_path: Path) -> None:
    log = _log(tmp_path)
    held = parse_checkpoint(log.checkpoint())
    assert held[0] == 10
    lines = _lines(log)[:-5]
    log.path.write_bytes(b"".join(lines))
    last = json.loads(lines[-1])
    log.head_path.write_text(json.dumps({"seq": last["seq"], "hash": last["hash"]}))
    assert log.verify().ok  # the chain alone cannot tell a consistent cut
    result = log.verify(checkpoints=[held])
    assert not result.ok
    assert "entry 10 is missing, the log ends at entry 5" in result.problem


def test_a_checkpoint_of_a_changed_entry_fails(tmp_path: Path) -> None:
    log = _log(tmp_path, 3)
    seq, digest = parse_checkpoint(log.checkpoint())
    assert not log.verify(checkpoints=[(seq, "f" * 64)]).ok
    assert log.verify(checkpoints=[(seq, digest), (0, "0" * 64)]).ok
    with pytest.raises(UsageError):
        parse_checkpoint("3:abc")


# ---- a run never appends to a broken log -------------------------------------------------

def test_a_run_on_a_corrupted_log_stops_before_anything_naming_the_line(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = _lines(log)
    lines[6] = lines[6].replace(b'"n":6', b'"n":66')
    log.path.write_bytes(b"".join(lines))
    before = log.path.read_bytes()
    run = _run(log)
    with pytest.raises(AuditBrokenError) as caught, run:
        pytest.fail("the job must not start")
    assert caught.value.exit_code == 1
    assert f"{log.path} line 7: hash does not match" in str(caught.value)
    assert log.path.read_bytes() == before
    assert run.report.status == "failed" and "line 7" in (run.report.error or "")


def test_cli_run_on_a_corrupted_log_exits_1_and_appends_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main
    from tests.conftest import CLIENT_ID, TENANT_ID, write_config

    config = write_config(tmp_path / "agent.toml", tenant_id=TENANT_ID, client_id=CLIENT_ID,
                          graph_url=f"sandbox:{tmp_path / 'tenant.json'}",
                          state_dir=str(tmp_path / "state"))
    log = _log(tmp_path)
    lines = _lines(log)
    lines[6] = b'{"seq":7,"garbage\n'
    log.path.write_bytes(b"".join(lines))
    before = log.path.read_bytes()
    assert main(["--config", str(config), "run", "privileged-roles"]) == 1
    err = capsys.readouterr().err
    assert "audit log not intact" in err and "line 7: line is not valid JSON" in err
    assert "Traceback" not in err
    assert log.path.read_bytes() == before
    assert main(["--config", str(config), "audit", "show"]) == 0  # read-only: works, says so
    assert "warning: audit log not intact" in capsys.readouterr().err


# ---- writes that cannot tear -------------------------------------------------------------

def test_a_short_write_is_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _log(tmp_path, 2)
    real = audit_log_module._write
    monkeypatch.setattr(audit_log_module, "_write", lambda fd, data: real(fd, data[:7]))
    log.append({"event": "action", "n": "written seven bytes at a time"})
    monkeypatch.undo()
    assert log.verify().ok and log.verify().entries == 3


def test_a_failed_write_leaves_nothing_and_names_the_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _log(tmp_path, 2)
    before = log.path.read_bytes()
    real = audit_log_module._write
    calls = []

    def full_disk(fd: int, data: memoryview) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real(fd, data[:20])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(audit_log_module, "_write", full_disk)
    with pytest.raises(AuditWriteError, match=f"{log.path}: No space left on device"):
        log.append({"event": "action", "n": 2})
    monkeypatch.undo()
    assert log.path.read_bytes() == before
    log.append({"event": "action", "n": 2})  # space freed: the chain goes on
    assert log.verify().ok and log.verify().entries == 3


def test_a_run_whose_entry_cannot_be_written_makes_no_change(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.run import Subject

    log = _log(tmp_path, 2)
    run = _run(log)
    made = []
    with pytest.raises(AuditWriteError), run:
        def broken(fd: int, data: memoryview) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(audit_log_module, "_write", broken)
        with run.change("remove-role", Subject("user", "u1"), "not approved"):
            made.append("change")
    assert made == []


def test_a_torn_last_line_is_cut_off_and_recorded_by_the_next_append(tmp_path: Path) -> None:
    log = _log(tmp_path, 3)
    torn = b'{"seq":4,"prev":"abc'  # a crash mid-write: no newline, the head never moved
    with log.path.open("ab") as fh:
        fh.write(torn)
    assert log.verify().ok and "torn line" in log.verify().notes[0]
    log.append({"event": "action", "n": 3})
    entries = list(log.entries())
    repaired = entries[3]
    assert repaired["event"] == "audit-repaired" and repaired["seq"] == 4
    assert repaired["removed_bytes"] == len(torn)
    assert repaired["removed_sha256"] == hashlib.sha256(torn).hexdigest()
    assert entries[4]["n"] == 3
    assert log.verify().ok and log.verify().entries == 5


def test_a_cut_last_line_of_a_written_entry_is_broken_not_repaired(tmp_path: Path) -> None:
    log = _log(tmp_path, 3)
    log.path.write_bytes(log.path.read_bytes()[:-20])  # entry 3 was complete: the head says so
    result = log.verify()
    assert not result.ok and result.bad_line == 3
    with pytest.raises(AuditBrokenError):
        log.append({"event": "x"})


# ---- checkpoints in run reports ------------------------------------------------------------

def test_every_run_report_carries_the_checkpoint_before_its_own_entry(tmp_path: Path) -> None:
    log = _log(tmp_path, 2)
    run = _run(log)
    with run:
        pass
    stored = load_report(run.run_id, log.path.parent / "runs")
    entries = list(log.entries())
    finished = next(e for e in entries if e.get("event") == "run-finished")
    before = entries[finished["seq"] - 2]
    assert stored["audit_checkpoint"] == f"{before['seq']}:{before['hash']}"
    assert run.report.audit_checkpoint == stored["audit_checkpoint"]
    assert log.verify(checkpoints=[parse_checkpoint(stored["audit_checkpoint"])]).ok


def test_checkpoint_of_an_empty_log_is_genesis(tmp_path: Path) -> None:
    assert AuditLog(tmp_path / "audit.jsonl").checkpoint() == "0:" + "0" * 64


def test_cli_verify_with_a_held_checkpoint_after_the_log_was_deleted_or_cut(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main
    from tests.conftest import CLIENT_ID, TENANT_ID, write_config

    config = write_config(tmp_path / "agent.toml", tenant_id=TENANT_ID, client_id=CLIENT_ID,
                          graph_url=f"sandbox:{tmp_path / 'tenant.json'}",
                          state_dir=str(tmp_path / "state"))
    log = _log(tmp_path, 6)
    held = log.checkpoint()
    verify = ["--config", str(config), "audit", "verify", "--checkpoint", held]
    assert main(verify) == 0
    assert f"checkpoint: {held}" in capsys.readouterr().out
    lines = _lines(log)[:3]  # cut back, head made consistent: only the checkpoint tells
    log.path.write_bytes(b"".join(lines))
    last = json.loads(lines[-1])
    log.head_path.write_text(json.dumps({"seq": last["seq"], "hash": last["hash"]}))
    assert main(verify) == 1
    assert "entry 6 is missing, the log ends at entry 3" in capsys.readouterr().out
    log.path.unlink()
    log.head_path.unlink()
    assert main(verify) == 1
    assert "the audit log is missing" in capsys.readouterr().out
    assert main(["--config", str(config), "audit", "verify", "--checkpoint", "6:xyz"]) == 2


def test_a_torn_first_line_of_a_new_month_is_cut_off_too(tmp_path: Path) -> None:
    import os

    log = AuditLog(tmp_path / "audit.jsonl")
    log.append({"ts": "2026-10-31T23:00:00.000Z", "event": "x"})
    log.append({"ts": "2026-11-01T00:00:00.000Z", "event": "x"})  # a new segment
    # December's first append moved November aside and died mid-line:
    os.replace(log.path, log.segments_dir / "000000000002-2026-11.jsonl")
    log.path.write_bytes(b'{"seq":3,"pr')
    log.append({"event": "y"})
    entries = list(log.entries())
    assert [e["event"] for e in entries] == ["x", "x", "audit-repaired", "y"]
    assert log.verify().ok


def test_a_head_one_behind_must_name_the_entry_before(tmp_path: Path) -> None:
    log = _log(tmp_path, 3)
    log.head_path.write_text(json.dumps({"seq": 2, "hash": "f" * 64}))
    assert not log.verify().ok
    with pytest.raises(AuditBrokenError, match="does not match"):
        log.append({"event": "x"})


def test_the_runner_stops_before_graph_and_logs_the_break(tmp_path: Path) -> None:
    """What the daemon does with a broken log: no request, no change, an error log line
    naming file and line (runner.audit_broken is where the notification goes)."""
    import asyncio

    from structlog.testing import capture_logs

    from agent.sandbox.seed import demo_tenant
    from tests.conftest import make_settings, run_on

    settings = make_settings(tmp_path)
    log = AuditLog(settings.state_dir / "audit.jsonl")
    for i in range(9):
        log.append({"event": "action", "n": i})
    lines = _lines(log)
    lines[6] = lines[6].replace(b'"n":6', b'"n":60')
    log.path.write_bytes(b"".join(lines))
    tenant = demo_tenant(NOW)
    with capture_logs() as logs, pytest.raises(AuditBrokenError):
        asyncio.run(run_on(tenant, settings, "privileged-roles", now=NOW, trigger="schedule"))
    broken = [e for e in logs if e["event"].startswith("audit log not intact")]
    assert broken and broken[0]["line"] == 7 and broken[0]["file"] == str(log.path)
    assert tenant.requests == []


def test_a_log_written_before_this_format_still_verifies_and_goes_on(tmp_path: Path) -> None:
    """Lines of the previous release: canonical JSON with `hash` among the sorted keys."""
    from agent.audit import canonical

    log = AuditLog(tmp_path / "audit.jsonl")
    prev, lines = "0" * 64, []
    for seq in (1, 2, 3):
        entry = {"seq": seq, "ts": "2026-11-01T08:00:00.000Z", "event": "action", "prev": prev}
        entry["hash"] = prev = hashlib.sha256(canonical(entry)).hexdigest()
        lines.append(canonical(entry) + b"\n")
    log.path.write_bytes(b"".join(lines))
    log.head_path.write_text(json.dumps({"seq": 3, "hash": prev}))
    assert log.verify().ok
    log.append({"event": "action"})
    assert log.verify().ok and log.verify().entries == 4
    old = log.files()[0]  # November's lines, a segment now
    edited = lines[1].replace(b'"action"', b'"edited"')
    old.write_bytes(lines[0] + edited + b"".join(lines[2:]))
    result = log.verify()
    assert not result.ok and result.bad_line == 2 and "edited" in result.problem
