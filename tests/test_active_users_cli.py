"""active-users through the command line, on a file-backed sandbox tenant (the spec's contract)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from agent.cli import main
from agent.exports import sha256_hex
from agent.sandbox.seed import licensing as seed
from tests.conftest import write_config


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """main() points structlog at this test's (captured, then closed) stderr: undo that."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DAP_AGENT_NOW", "2026-05-12T10:00:00+02:00")
    return write_config(
        tmp_path / "agent.toml", tenant_id="00000000-0000-4000-8000-0000000000aa",
        client_id="00000000-0000-4000-8000-0000000000bb",
        graph_url=f"sandbox:{tmp_path / 'tenant.json'}", state_dir=str(tmp_path / "state"),
        active_users=seed.DEMO_POLICY["active_users"])


def run_json(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    capsys.readouterr()
    assert main(["--config", str(config), "run", "active-users", "--json", *args]) == 0
    report: dict[str, object] = json.loads(capsys.readouterr().out)
    return report


def test_run_json_then_export_reproduces_byte_for_byte(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = run_json(config, capsys, "--final")
    summary = report["summary"]
    assert isinstance(summary, dict)
    for key in ("active", "e5", "exchange_only", "licensed_disabled", "month", "export_path",
                "export_sha256"):
        assert key in summary
    assert (summary["month"], summary["delivered"]) == ("2026-05", True)
    export = Path(summary["export_path"])
    assert export == tmp_path / "state" / "exports" / "active-users-2026-05.csv"
    rows = {r["user_principal_name"]: r
            for r in csv.DictReader(io.StringIO(export.read_text(encoding="utf-8")))}
    assert sum(r["counted"] == "true" for r in rows.values()) == summary["active"]
    for upn, expected in seed.EXPECTED.items():
        if expected.category is not None:
            assert rows[upn]["category"] == expected.category, expected.why

    copy = tmp_path / "copy.csv"
    assert main(["--config", str(config), "export", "active-users", "--month", "2026-05",
                 "--output", str(copy)]) == 0
    assert copy.read_bytes() == export.read_bytes()
    assert sha256_hex(copy.read_bytes()) == summary["export_sha256"]
    assert main(["--config", str(config), "export", "active-users", "--month", "2026-05",
                 "--format", "xlsx", "--output", str(tmp_path / "x.xlsx")]) == 0

    again = run_json(config, capsys)  # delivered: left as it is
    assert again["summary"]["export_sha256"] == summary["export_sha256"]  # type: ignore[index]


def test_export_of_a_month_without_snapshot_is_exit_2(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config), "export", "active-users", "--month", "2026-04"]) == 2
    assert "no active-users snapshot for 2026-04" in capsys.readouterr().err
    assert main(["--config", str(config), "export", "active-users", "--month", "2026-4"]) == 2
    assert "YYYY-MM" in capsys.readouterr().err
