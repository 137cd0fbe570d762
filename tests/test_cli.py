"""The CLI through the product-spec contract: commands, --json, exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main
from tests.conftest import CLIENT_ID, TENANT_ID, write_config

ROOT = Path(__file__).resolve().parents[1]


def config(tmp_path: Path, **extra: object) -> Path:
    return write_config(tmp_path / "agent.toml", tenant_id=TENANT_ID, client_id=CLIENT_ID,
                        graph_url=f"sandbox:{tmp_path / 'tenant.json'}",
                        state_dir=str(tmp_path / "state"), **extra)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, **(env or {})}, timeout=120)


def test_help_does_not_import_the_graph_sdk() -> None:
    code = ("import sys\nfrom agent.cli import build_parser\nbuild_parser().format_help()\n"
            "heavy = [m for m in ('msgraph', 'msgraph_core', 'azure.identity', 'kiota_http', "
            "'apscheduler') if m in sys.modules]\nprint(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


def test_config_check_with_a_bad_key_exits_2_naming_it(tmp_path: Path) -> None:
    path = config(tmp_path, offboarding={"mode": "report", "max_deletes": 5})
    result = cli("--config", str(path), "config", "check")
    assert result.returncode == 2
    assert f"{path}: offboarding.max_deletes: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_check_passes_on_a_good_file(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config(tmp_path)), "config", "check"]) == 0
    assert "configuration valid" in capsys.readouterr().out


def test_config_check_online_lists_missing_permissions(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAP_AGENT_SANDBOX_ROLES", "User.Read.All,Device.Read.All")
    code = main(["--config", str(config(tmp_path)), "config", "check", "--online"])
    out = capsys.readouterr()
    assert code == 3
    assert "MISSING permission BitlockerKey.ReadBasic.All (needed by device-compliance)" in out.out
    assert "MISSING permission User.Read.All" not in out.out


def test_config_check_online_passes_with_every_permission(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config(tmp_path)), "config", "check", "--online"]) == 0
    assert "online check passed" in capsys.readouterr().out


def test_run_json_prints_exactly_one_report_document(tmp_path: Path) -> None:
    result = cli("--config", str(config(tmp_path)), "run", "device-compliance", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # the whole of stdout is one JSON document
    from agent.run import read_report_bytes

    stored = read_report_bytes(report["run_id"], tmp_path / "state" / "runs")
    assert result.stdout == stored.decode("utf-8")  # one serialisation
    assert report["job"] == "device-compliance" and report["trigger"] == "cli"
    assert report["status"] == "ok"
    for key in ("run_id", "dry_run", "started_at", "finished_at", "summary", "findings",
                "actions"):
        assert key in report
    assert report["started_at"].endswith("Z")
    finding = report["findings"][0]
    assert set(finding) >= {"rule", "severity", "subject", "detail"}
    assert set(finding["subject"]) >= {"type", "id", "name"}


def test_missing_permission_exits_3_and_names_it(tmp_path: Path) -> None:
    result = cli("--config", str(config(tmp_path)), "run", "device-compliance",
                 env={"DAP_AGENT_SANDBOX_ROLES": "DeviceManagementManagedDevices.Read.All"})
    assert result.returncode == 3
    assert "missing Graph permission" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_failure_still_prints_the_report_with_json(tmp_path: Path) -> None:
    result = cli("--config", str(config(tmp_path)), "run", "privileged-roles", "--json",
                 env={"DAP_AGENT_SANDBOX_ROLES": "User.Read.All"})
    assert result.returncode == 3
    assert json.loads(result.stdout)["status"] == "failed"


def test_unknown_job_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "no-such-job"])
    assert info.value.code == 2


def test_export_of_a_month_without_snapshot_exits_2(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--config", str(config(tmp_path)), "export", "active-users",
                 "--month", "2020-01"])
    assert code == 2
    assert "2020-01" in capsys.readouterr().err


def test_audit_verify_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(config(tmp_path))
    assert main(["--config", path, "run", "active-users"]) == 0
    capsys.readouterr()
    assert main(["--config", path, "audit", "verify"]) == 0
    assert "intact" in capsys.readouterr().out
    assert main(["--config", path, "audit", "show"]) == 0
    listing = capsys.readouterr().out
    run_id = listing.splitlines()[1].split()[0]
    assert "active-users" in listing
    assert main(["--config", path, "audit", "show", run_id]) == 0
    events = [json.loads(line)["event"] for line in capsys.readouterr().out.splitlines()]
    assert events[0] == "run-started" and events[-1] == "run-finished"
    # tamper: edit one entry
    log = tmp_path / "state" / "audit.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    lines[0] = lines[0].replace('"trigger":"cli"', '"trigger":"schedule"')
    log.write_text("".join(lines))
    assert main(["--config", path, "audit", "verify"]) == 1
    assert "line 1" in capsys.readouterr().out


def test_jobs_lists_every_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config(tmp_path)), "jobs"]) == 0
    out = capsys.readouterr().out
    for job in ("active-users", "offboarding", "device-compliance", "privileged-roles"):
        assert job in out


def test_demo_runs_every_job_and_leaves_a_verifiable_log(tmp_path: Path) -> None:
    result = cli("demo", "--dir", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    for job in ("active-users", "offboarding", "device-compliance", "privileged-roles",
                "secure-score"):
        assert f"{job}: ok" in result.stdout
    assert "audit log: intact" in result.stdout
    report = re.search(r"^service report: (\S+)$", result.stdout, re.MULTILINE)
    assert report is not None and Path(report[1]).is_file()
    assert "Servicerapport" in Path(report[1]).read_text(encoding="utf-8")
    again = cli("--config", str(tmp_path / "demo" / "agent.toml"), "audit", "verify")
    assert again.returncode == 0


def test_demo_refuses_a_directory_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    result = cli("demo", "--dir", str(tmp_path))
    assert result.returncode == 2 and (tmp_path / "mine.txt").exists()


def test_config_check_online_asks_for_mail_send_only_when_mailing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.sandbox import ALL_PERMISSIONS

    monkeypatch.setenv("DAP_AGENT_SANDBOX_ROLES",
                       ",".join(p for p in ALL_PERMISSIONS if p != "Mail.Send"))
    assert main(["--config", str(config(tmp_path)), "config", "check", "--online"]) == 0
    mailing = config(tmp_path, active_users={"deliver_to": ["sm@contoso.nl"],
                                             "sender": "dap-agent@contoso.nl"})
    assert main(["--config", str(mailing), "config", "check", "--online"]) == 3
    assert "MISSING permission Mail.Send (needed by active-users)" in capsys.readouterr().out
