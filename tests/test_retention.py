"""Run reports stored gzipped, one reader for old and new, and `[retention]` (issue 14.9)."""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from agent.audit import AuditLog
from agent.cli import main
from agent.errors import ConfigError
from agent.retention import RetentionPolicy, months_before, plan, prune
from agent.run import Run, load_report, read_report_bytes
from tests.conftest import make_settings, write_config

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def test_a_run_report_is_stored_gzipped_and_its_checksum_is_of_the_json(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    run = Run(audit=log, runs_dir=tmp_path / "runs", job="device-compliance", trigger="cli",
              dry_run=False, now=NOW)
    with run:
        run.report.summary["devices"] = 3
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [f"{run.run_id}.json.gz"]
    path = tmp_path / "runs" / f"{run.run_id}.json.gz"
    raw = gzip.decompress(path.read_bytes())
    assert raw == "".join(run.report.json_pieces()).encode("utf-8")  # what --json prints
    finished = [e for e in log.entries() if e["event"] == "run-finished"][-1]
    assert finished["report_sha256"] == hashlib.sha256(raw).hexdigest()
    assert finished["report_path"] == str(path)
    assert load_report(run.run_id, tmp_path / "runs")["summary"] == {"devices": 3}


def test_load_report_reads_plain_json_of_older_runs_and_names_a_damaged_one(
        tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "20250101T000000Z-offboarding-aaaaaa.json").write_text('{"job": "offboarding"}')
    assert load_report("20250101T000000Z-offboarding-aaaaaa", runs) == {"job": "offboarding"}
    assert load_report(runs / "20250101T000000Z-offboarding-aaaaaa.json")["job"] == "offboarding"
    (runs / "20250102T000000Z-offboarding-bbbbbb.json.gz").write_bytes(b"\x1f\x8bnot gzip")
    with pytest.raises(ValueError, match="damaged"):
        read_report_bytes("20250102T000000Z-offboarding-bbbbbb", runs)
    with pytest.raises(FileNotFoundError):
        load_report("20250103T000000Z-offboarding-cccccc", runs)


def test_jobs_and_audit_show_read_the_gzipped_reports(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings(tmp_path)
    config = tmp_path / "agent.toml"
    assert main(["--config", str(config), "run", "privileged-roles", "--json"]) == 0
    printed = capsys.readouterr().out
    run_id = json.loads(printed)["run_id"]
    (settings.state_dir / "jobs" / "privileged-roles.json").unlink()  # rebuilt from runs/
    assert main(["--config", str(config), "jobs"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines()
               if line.startswith("privileged-roles"))
    assert " ok " in row
    assert main(["--config", str(config), "audit", "show", run_id, "--report"]) == 0
    assert capsys.readouterr().out == printed
    assert main(["--config", str(config), "audit", "show", "../../etc/passwd", "--report"]) == 2


def test_months_before_counts_calendar_months() -> None:
    assert months_before(date(2026, 12, 3), 13) == date(2025, 11, 3)
    assert months_before(date(2026, 3, 31), 1) == date(2026, 2, 28)
    assert months_before(date(2026, 1, 15), -1) == date(2026, 2, 15)


def _state(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    runs, exports, snapshots = state / "runs", state / "exports", state / "snapshots"
    for d in (runs, exports, snapshots / "active-users"):
        d.mkdir(parents=True)
    for name in ("20251102T235959Z-device-compliance-aaaaaa.json.gz",  # older than 13 months
                 "20251001T050000Z-offboarding-bbbbbb.json",  # an old plain one
                 "20251103T000000Z-device-compliance-cccccc.json.gz",  # exactly 13 months
                 "20261203T050000Z-active-users-dddddd.json.gz", "notes.txt"):
        (runs / name).write_bytes(b"x")
    for name in ("devices-2025-11-02.csv", "devices-2025-11-03.csv",
                 "privileged-access-2024-06-30.csv", "active-users-2025-10.csv",
                 "active-users-2025-10.xlsx", "active-users-2025-11.csv",
                 "deleted-accounts-2024-01.csv", "my-own-file.csv"):
        (exports / name).write_bytes(b"x")
    (snapshots / "active-users" / "2020-01.json").write_text("{}")
    return state


def test_plan_prunes_by_the_date_in_the_name_and_never_the_kept_kinds(tmp_path: Path) -> None:
    state = _state(tmp_path)
    pruning = plan(state, RetentionPolicy(), NOW.date())
    assert sorted(p.name for p in pruning.run_reports) == [
        "20251001T050000Z-offboarding-bbbbbb.json",
        "20251102T235959Z-device-compliance-aaaaaa.json.gz"]
    assert sorted(p.name for p in pruning.exports) == [
        "active-users-2025-10.csv", "active-users-2025-10.xlsx", "devices-2025-11-02.csv",
        "privileged-access-2024-06-30.csv"]
    assert not plan(state, RetentionPolicy(run_reports_months=0, exports_months=0), NOW.date())


def test_prune_audits_what_goes_before_it_goes(tmp_path: Path) -> None:
    state = _state(tmp_path)
    seen: list[dict[str, object]] = []

    def audit(entry: dict[str, object]) -> None:
        # the files are still there when the log is written
        assert (state / "exports" / "devices-2025-11-02.csv").exists()
        seen.append(entry)

    pruned = prune(state, RetentionPolicy(), NOW, audit)
    assert len(pruned.run_reports) == 2 and len(pruned.exports) == 4
    assert seen == [{"event": "retention-pruned",
                     "run_reports": ["20251001T050000Z-offboarding-bbbbbb",
                                     "20251102T235959Z-device-compliance-aaaaaa"],
                     "exports": ["active-users-2025-10.csv", "active-users-2025-10.xlsx",
                                 "devices-2025-11-02.csv", "privileged-access-2024-06-30.csv"],
                     "run_reports_months": 13, "exports_months": 13}]
    left = {p.name for p in (state / "exports").iterdir()}
    assert left == {"devices-2025-11-03.csv", "active-users-2025-11.csv",
                    "deleted-accounts-2024-01.csv", "my-own-file.csv"}
    assert (state / "snapshots" / "active-users" / "2020-01.json").exists()
    assert prune(state, RetentionPolicy(), NOW, audit).run_reports == []  # nothing twice
    assert len(seen) == 1


def test_a_run_prunes_old_reports_and_the_log_names_them(tmp_path: Path) -> None:
    import asyncio

    from agent.runner import run_job

    settings = make_settings(tmp_path, retention={"run_reports_months": 2})
    asyncio.run(run_job(settings, "privileged-roles", now=datetime(2026, 9, 1, tzinfo=UTC)))
    old = next((settings.state_dir / "runs").iterdir()).name
    report = asyncio.run(run_job(settings, "privileged-roles", now=NOW))
    names = [p.name for p in (settings.state_dir / "runs").iterdir()]
    assert old not in names and names == [f"{report.run_id}.json.gz"]
    log = AuditLog(settings.state_dir / "audit.jsonl")
    pruned = [e for e in log.entries() if e["event"] == "retention-pruned"]
    assert [e["run_reports"] for e in pruned] == [[old.removesuffix(".json.gz")]]
    assert pruned[0]["run_id"] == report.run_id
    assert report.summary["retention_pruned"] == {"run_reports": 1, "exports": 0}
    assert log.verify().ok


def test_retention_settings_are_validated(tmp_path: Path) -> None:
    from agent.settings import load_settings
    from tests.conftest import CLIENT_ID, TENANT_ID

    config = write_config(tmp_path / "a.toml", tenant_id=TENANT_ID, client_id=CLIENT_ID,
                          graph_url="sandbox:", retention={"run_reports_months": -1,
                                                           "keep": 3})
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    assert any("retention.run_reports_months" in p for p in err.value.problems)
    assert any("retention.keep: unknown key" in p for p in err.value.problems)
