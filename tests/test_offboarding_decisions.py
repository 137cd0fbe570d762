"""`veto` / `veto --lift` / `veto --list` / `approve` through the CLI: decisions.jsonl, the
audit log, exit codes; and the offboarding run obeying them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent import decisions
from agent.audit import AuditLog
from agent.cli import main
from agent.sandbox.seed import leavers as seed
from tests.test_cli import config


def audit_events(tmp_path: Path) -> list[dict[str, object]]:
    return [e for e in AuditLog(tmp_path / "state" / "audit.jsonl").entries()
            if e.get("job") == "offboarding" and e.get("event") in (
                "veto", "veto-lifted", "purge-approved")]


def test_veto_list_lift_and_approve(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(config(tmp_path))
    assert main(["--config", path, "veto", seed.VICTOR, "--reason", "legal hold",
                 "--by", "J. Jansen", "--until", "2099-01-01"]) == 0
    assert "veto recorded for victor.veto@contoso.nl until 2099-01-01" in capsys.readouterr().out
    [row] = decisions.load(tmp_path / "state").all
    assert (row.kind, row.user_id, row.user_principal_name, row.by, row.reason, row.until) == (
        "veto", seed.user_id(seed.VICTOR), seed.VICTOR, "J. Jansen", "legal hold",
        "2099-01-01")
    raw = json.loads((tmp_path / "state" / "decisions.jsonl").read_text().splitlines()[0])
    assert set(raw) == {"ts", "kind", "user_id", "user_principal_name", "by", "reason", "until"}

    assert main(["--config", path, "veto", "--list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [v["user_principal_name"] for v in listed] == [seed.VICTOR]
    assert main(["--config", path, "veto", "--list"]) == 0
    assert "legal hold" in capsys.readouterr().out

    # by object id, and the lift ends it now
    assert main(["--config", path, "veto", "--lift", seed.user_id(seed.VICTOR),
                 "--reason", "hold released", "--by", "J. Jansen"]) == 0
    assert main(["--config", path, "veto", "--list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1]) == []

    assert main(["--config", path, "approve", seed.OLAF, "--by", "J. Jansen"]) == 0
    events = audit_events(tmp_path)
    assert [e["event"] for e in events] == ["veto", "veto-lifted", "purge-approved"]
    assert events[0]["by"] == "J. Jansen" and events[0]["until"] == "2099-01-01"
    assert events[2]["user_principal_name"] == seed.OLAF
    assert AuditLog(tmp_path / "state" / "audit.jsonl").verify().ok


@pytest.mark.parametrize("argv", [
    ["veto", "nobody@contoso.nl", "--reason", "x"],          # unknown user
    ["veto", seed.VICTOR],                                   # no reason
    ["veto", seed.VICTOR, "--reason", "x", "--until", "2020-01-01"],  # past
    ["veto", seed.VICTOR, "--reason", "x", "--until", "soon"],
    ["veto"],                                                # no user
    ["approve", seed.OLAF],                                  # no --by
    ["approve", "00000000-0000-4000-8000-00000000dead", "--by", "J"],
])
def test_bad_decisions_are_usage_errors(tmp_path: Path, argv: list[str],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(["--config", str(config(tmp_path)), *argv])
    except SystemExit as exc:  # argparse: a missing required option
        code = int(exc.code or 0)
    assert code == 2
    assert "Traceback" not in capsys.readouterr().err
    assert decisions.load(tmp_path / "state").all == ()


def test_a_run_obeys_a_veto_given_through_the_cli(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(config(tmp_path, offboarding={**seed.DEMO_POLICY["offboarding"],
                                             "mode": "enforce"}))
    assert main(["--config", path, "veto", seed.OLAF, "--reason", "still needed"]) == 0
    capsys.readouterr()
    assert main(["--config", path, "run", "offboarding", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    entry = {v["user_principal_name"]: v for v in report["summary"]["veto_window"]}[seed.OLAF]
    assert entry["vetoed"] is True
    assert any(f["rule"] == "OFF-VETOED" for f in report["findings"])
