"""The rough edges an admin hits (issue 14.10, 14.11): option order, --final, --output,
pipes, None, --help, unknown variables, and the log lines of a run."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import build_parser, main
from tests.conftest import CLIENT_ID, TENANT_ID, write_config

ROOT = Path(__file__).resolve().parents[1]
UTC_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "agent.toml", tenant_id=TENANT_ID, client_id=CLIENT_ID,
                        graph_url=f"sandbox:{tmp_path / 'tenant.json'}",
                        state_dir=str(tmp_path / "state"))


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DAP_AGENT_")}
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True,
                          text=True, cwd=ROOT, env={**clean, **(env or {})}, timeout=120)


def test_config_works_after_the_subcommand_too(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(config(tmp_path))
    assert main(["config", "check", "--config", path]) == 0
    assert "configuration valid" in capsys.readouterr().out
    assert main(["rules", "--config", path]) == 0
    capsys.readouterr()
    # given before the command, a subcommand's own default does not reset it
    args = build_parser().parse_args(["--config", path, "-v", "jobs"])
    assert args.config == path and args.verbose


def test_final_is_for_active_users_only(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config(tmp_path)), "run", "device-compliance", "--final"]) == 2
    assert "--final delivers the active-users month" in capsys.readouterr().err
    assert not (tmp_path / "state" / "runs").exists()  # refused before anything ran


def test_export_output_refuses_a_missing_directory(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = str(config(tmp_path))
    assert main(["--config", path, "run", "active-users"]) == 0
    month = json.loads(next((tmp_path / "state" / "snapshots" / "active-users").glob("*.json"))
                       .read_text())["month"]
    capsys.readouterr()
    target = tmp_path / "typo" / "deeper" / "out.csv"
    assert main(["--config", path, "export", "active-users", "--month", month,
                 "--output", str(target)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()
    assert main(["--config", path, "export", "active-users", "--month", month,
                 "--output", str(tmp_path / "out.csv")]) == 0


def test_piping_into_head_ends_quietly(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    # `dap-agent rules --json | head -1`: head exits, our next write hits a closed pipe
    read_end, write_end = os.pipe()
    os.close(read_end)
    with os.fdopen(write_end, "w", buffering=1) as closed_pipe:
        monkeypatch.setattr(sys, "stdout", closed_pipe)
        code = main(["rules", "--json"])
        monkeypatch.undo()
    assert code == 0
    err = capsys.readouterr().err
    assert "BrokenPipe" not in err and "internal error" not in err


def test_human_output_never_prints_python_none(capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import print_report
    from agent.run import RunReport

    report = RunReport(run_id="r", job="offboarding", trigger="cli", dry_run=True,
                       started_at="2026-12-03T06:00:00Z",
                       summary={"leave_group": None, "enforced": False,
                                "veto_window": [{"user": "a@contoso.nl", "vetoed": None}]})
    print_report(report)
    out = capsys.readouterr().out
    assert "None" not in out and "False" not in out
    assert "leave_group: -" in out and "vetoed=-" in out


def _parsers(parser: argparse.ArgumentParser, name: str = "dap-agent") -> list[
        tuple[str, argparse.ArgumentParser]]:
    found = [(name, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                found += _parsers(sub, f"{name} {sub_name}")
    return found


def test_every_option_of_every_subcommand_has_a_help_text() -> None:
    missing = []
    for name, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                missing.append(f"{name}: {action.option_strings or action.dest}")
    assert missing == []


def test_an_unknown_top_level_variable_is_an_error_like_a_nested_one(tmp_path: Path) -> None:
    path = str(config(tmp_path))
    for variable in ("DAP_AGENT_TENANTID", "DAP_AGENT_OFFBOARDING__MODEE"):
        result = cli("--config", path, "config", "check", env={variable: "x"})
        assert result.returncode == 2, (variable, result.stderr)
        assert f"environment {variable}" in result.stderr
    assert "did you mean DAP_AGENT_TENANT_ID?" in cli(
        "--config", path, "config", "check", env={"DAP_AGENT_TENANTID": "x"}).stderr
    # the variables that are not settings stay allowed
    assert cli("--config", path, "config", "check",
               env={"DAP_AGENT_CONFIG": path, "DAP_AGENT_NOW": "2026-12-01T06:00:00Z"}
               ).returncode == 0


def test_every_log_line_of_a_run_names_run_and_job_with_one_timestamp_format(
        tmp_path: Path) -> None:
    result = cli("--config", str(config(tmp_path)), "run", "privileged-roles", "--json")
    assert result.returncode == 0, result.stderr
    run_id = json.loads(result.stdout)["run_id"]
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert "run started" in events and "run finished" in events
    start, end = events.index("run started"), events.index("run finished")
    for line in lines[start:end + 1]:
        assert line.get("run_id") == run_id and line.get("job") == "privileged-roles", line
    for line in lines:
        assert UTC_Z.fullmatch(line["timestamp"]), line


def test_stdlib_log_lines_share_the_format_and_the_run_context(
        capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    import structlog

    from agent.logs import configure

    for json_lines in (True, False):
        configure(json_lines=json_lines)
        structlog.contextvars.bind_contextvars(run_id="r-1", job="offboarding")
        try:
            logging.getLogger("azure.identity").warning("token request failed")
            structlog.get_logger("agent.x").warning("ours")
        finally:
            structlog.contextvars.unbind_contextvars("run_id", "job")
        err = capsys.readouterr().err.splitlines()
        stamps = [UTC_Z.search(line) for line in err]
        assert all(stamps), err
        if json_lines:
            library = json.loads(err[0])
            assert library["run_id"] == "r-1" and library["job"] == "offboarding"
            assert UTC_Z.fullmatch(library["timestamp"])
            assert UTC_Z.fullmatch(json.loads(err[1])["timestamp"])
