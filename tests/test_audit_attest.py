"""What the log vouches for: stored run reports and delivered exports (issue #12, items 4-5)."""

from __future__ import annotations

import asyncio
import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.audit import AuditLog
from agent.errors import DapError
from agent.exports import sha256_hex
from agent.run import Run
from agent.sandbox.seed import demo_tenant
from agent.sandbox.seed import licensing as seed
from jobs.active_users import export_month, render_export, snapshot_path
from tests.conftest import make_settings, run_on

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
MAY_12 = datetime(2026, 5, 12, 8, 0, tzinfo=UTC)


def _runs(tmp_path: Path, n: int = 3) -> tuple[AuditLog, list[str]]:
    log = AuditLog(tmp_path / "state" / "audit.jsonl")
    ids = []
    for _ in range(n):
        run = Run(audit=log, runs_dir=log.path.parent / "runs", job="device-compliance",
                  trigger="cli", dry_run=True, now=NOW)
        with run:
            run.report.summary["devices"] = 3
        ids.append(run.run_id)
    return log, ids


def test_stored_run_reports_match_the_log(tmp_path: Path) -> None:
    log, _ = _runs(tmp_path)
    result = log.verify_all()
    assert result.ok and "3 run reports match the log" in result.notes[-1]


def test_an_edited_run_report_is_named(tmp_path: Path) -> None:
    log, ids = _runs(tmp_path)
    path = log.path.parent / "runs" / f"{ids[1]}.json.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()).replace(
        b'"devices": 3', b'"devices": 2')))
    result = log.verify_all()
    assert not result.ok and str(path) in result.problem and "differs" in result.problem
    assert log.verify().ok  # the chain itself is fine


def test_a_deleted_run_report_is_missing_unless_retention_removed_it(tmp_path: Path) -> None:
    log, ids = _runs(tmp_path)
    (log.path.parent / "runs" / f"{ids[0]}.json.gz").unlink()
    result = log.verify_all()
    assert not result.ok and "is missing" in result.problem and ids[0] in result.problem
    log.append({"event": "retention-pruned", "run_reports": [ids[0]], "exports": []})
    assert log.verify_all().ok


def test_a_compressed_run_report_is_checked_uncompressed(tmp_path: Path) -> None:
    log, ids = _runs(tmp_path)
    packed = log.path.parent / "runs" / f"{ids[2]}.json.gz"  # as runs are stored
    plain = packed.with_name(packed.name.removesuffix(".gz"))  # as older runs were stored
    plain.write_bytes(gzip.decompress(packed.read_bytes()))
    packed.unlink()
    assert log.verify_all().ok
    plain.unlink()
    packed.write_bytes(gzip.compress(b"{}\n"))
    assert not log.verify_all().ok


def test_export_of_a_delivered_month_is_checked_against_the_log(tmp_path: Path) -> None:
    """Edit rows of the delivered snapshot and its own checksum together: the checksum
    the audit log recorded at delivery still tells."""
    settings = make_settings(tmp_path, active_users=seed.DEMO_POLICY["active_users"])
    asyncio.run(run_on(demo_tenant(MAY_12), settings, "active-users", now=MAY_12, final=True))
    state = settings.state_dir
    path = snapshot_path(state, "2026-05")
    snapshot = json.loads(path.read_bytes())
    snapshot["rows"] = snapshot["rows"][1:]  # one billed user fewer
    snapshot["export"]["sha256"] = sha256_hex(render_export(snapshot))
    path.write_text(json.dumps(snapshot))
    for fmt in ("csv", "xlsx"):
        with pytest.raises(DapError, match="the audit log recorded"):
            export_month(state, "2026-05", fmt, tmp_path / f"copy.{fmt}")
    assert not (tmp_path / "copy.csv").exists()


def test_a_delivered_month_without_its_log_entry_is_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, active_users=seed.DEMO_POLICY["active_users"])
    asyncio.run(run_on(demo_tenant(MAY_12), settings, "active-users", now=MAY_12, final=True))
    log = AuditLog(settings.state_dir / "audit.jsonl")
    log.path.write_bytes(b"".join(line for line in log.path.read_bytes().splitlines(True)
                                  if b"month-delivered" not in line))
    with pytest.raises(DapError, match="no month-delivered entry"):
        export_month(settings.state_dir, "2026-05", output=tmp_path / "copy.csv")
