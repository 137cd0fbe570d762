"""`run` on a terminal names the subjects of findings and actions, capped for big tenants."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.cli import print_report
from agent.run import Action, Finding, RunReport, Subject
from agent.run_lines import REASONS_PER_ACTION, report_lines
from agent.sandbox.seed import demo_tenant
from tests.conftest import make_settings, run_on


def report(findings: list[Finding] = [], actions: list[Action] = []) -> RunReport:  # noqa: B006
    return RunReport(run_id="r", job="offboarding", trigger="cli", dry_run=False,
                     started_at="2026-03-18T09:00:00Z", findings=findings, actions=actions)


def test_a_finding_names_its_subject() -> None:
    lines = list(report_lines(report([Finding(
        "OFF-PRIVILEGED-LEAVER", "high", Subject("user", "id-1", "jan@contoso.nl"),
        "holds Global Administrator")])))
    assert lines == ["finding OFF-PRIVILEGED-LEAVER: 1 (high) — jan@contoso.nl"]


def test_many_subjects_are_capped_with_and_n_more() -> None:
    findings = [Finding("DEV-STALE", "low", Subject("device", f"d{i}", f"PC-{i:03d}"), "x")
                for i in range(240)]
    findings.append(Finding("DEV-UNMANAGED", "high", Subject("device", "e1", None), "x"))
    lines = list(report_lines(report(findings)))
    assert lines == [
        "finding DEV-UNMANAGED: 1 (high) — device e1",  # no name: its id; high first
        "finding DEV-STALE: 240 (low) — PC-000, PC-001, PC-002, PC-003, PC-004 and 235 more"]


def test_failed_and_skipped_actions_say_who_and_why() -> None:
    target = {"type": "user", "id": "u1", "name": "jan@contoso.nl"}
    actions = [Action("delete-user", target, "failed", "leaver", error="403 Forbidden"),
               Action("disable-user", {"type": "user", "id": "u2", "name": "piet@contoso.nl"},
                      "done", "leaver")]
    actions += [Action("wipe-device", {"type": "device", "id": f"d{i}", "name": f"PC-{i}"},
                       "skipped", "limit reached") for i in range(REASONS_PER_ACTION + 3)]
    lines = list(report_lines(report(actions=actions)))
    assert lines[:4] == ["action delete-user failed: 1", "  - jan@contoso.nl: 403 Forbidden",
                         "action disable-user done: 1 — piet@contoso.nl",
                         f"action wipe-device skipped: {REASONS_PER_ACTION + 3}"]
    assert lines[4] == "  - PC-0: limit reached"
    assert lines[-1] == "  - and 3 more (see --json)"
    assert len(lines) == 4 + REASONS_PER_ACTION + 1


def test_run_on_a_terminal_names_the_findings_subjects(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agent.sandbox.seed import roles as seed

    now = datetime(2026, 3, 18, 9, 0, tzinfo=UTC)
    settings = make_settings(tmp_path,
                             privileged_roles=seed.demo_policy(now)["privileged_roles"])
    done = asyncio.run(run_on(demo_tenant(now), settings, "privileged-roles", now=now))
    capsys.readouterr()
    print_report(done)
    out = capsys.readouterr().out
    for f in done.findings:
        line = next(x for x in out.splitlines() if x.startswith(f"  finding {f.rule}: "))
        assert "—" in line
    first = done.findings[0]
    assert str(first.subject.name or first.subject.id) in out
