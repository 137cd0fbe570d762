"""Joiners and leavers of the month in the export, the XLSX and the mail; the export format
version that keeps a month delivered before this change reproducible byte for byte."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.run import RunReport
from agent.sandbox import builders as b
from agent.sandbox.seed import base, demo_tenant
from agent.sandbox.seed import licensing as seed
from agent.sandbox.tenant import SandboxTenant
from agent.settings import Settings
from jobs.active_users import EXPORT_FORMAT, export_month, render_export, snapshot_path
from tests.conftest import make_settings, run_on

FIXTURE = Path(__file__).parent / "data" / "active-users-v1"
APRIL = datetime(2026, 4, 20, 8, tzinfo=UTC)  # the fixture's delivered month
MAY = datetime(2026, 5, 12, 8, tzinfo=UTC)


def go(tenant: SandboxTenant, settings: Settings, **kwargs: Any) -> RunReport:
    return asyncio.run(run_on(tenant, settings, "active-users", **kwargs))


def settings_for(tmp_path: Path, **policy: Any) -> Settings:
    return make_settings(tmp_path, active_users={**seed.DEMO_POLICY["active_users"], **policy})


def v1_state(tmp_path: Path) -> Settings:
    """A state dir holding April 2026 as the agent delivered it in export format 1."""
    settings = settings_for(tmp_path, deliver_to=[], sender="")
    shutil.copytree(FIXTURE / "state", settings.state_dir, dirs_exist_ok=True)
    return settings


def rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


def change_the_tenant(tenant: SandboxTenant) -> tuple[str, str]:
    """One joiner (a new E5 user), one leaver (a counted user disabled)."""
    tenant.add("users", b.user(f"nieuw@{b.DOMAIN}", "Nieuwe Collega", licenses=[base.SPE_E5]))
    leaver = tenant.find_user(f"bram.jansen@{b.DOMAIN}")
    assert leaver is not None
    leaver["accountEnabled"] = False
    tenant.touch()
    return f"nieuw@{b.DOMAIN}", f"bram.jansen@{b.DOMAIN}"


def test_a_month_delivered_in_format_1_reproduces_byte_for_byte(tmp_path: Path) -> None:
    settings = v1_state(tmp_path)
    snapshot = json.loads(snapshot_path(settings.state_dir, "2026-04").read_bytes())
    assert snapshot["format"] == 1 and "export_format" not in snapshot
    delivered = (FIXTURE / "state" / "exports" / "active-users-2026-04.csv").read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    csv_copy = export_month(settings.state_dir, "2026-04", "csv", out)
    xlsx_copy = export_month(settings.state_dir, "2026-04", "xlsx", out)
    assert csv_copy.read_bytes() == delivered
    assert "change" not in rows(delivered)[0]
    assert xlsx_copy.read_bytes() == (FIXTURE / "expected" / "active-users-2026-04.xlsx"
                                      ).read_bytes()
    # and the delivered file in the state dir is left as it is
    assert export_month(settings.state_dir, "2026-04").read_bytes() == delivered


def test_the_next_month_names_joiners_and_leavers_against_a_format_1_month(
        tmp_path: Path) -> None:
    settings = v1_state(tmp_path)
    tenant = demo_tenant(MAY)
    joiner, leaver = change_the_tenant(tenant)
    report = go(tenant, settings, now=MAY)
    assert (report.summary["joined"], report.summary["left"]) == ([joiner], [leaver])
    assert report.summary["previous_basis"] == "delivered"
    snapshot = json.loads(Path(report.summary["snapshot_path"]).read_bytes())
    assert (snapshot["format"], snapshot["export_format"]) == (2, EXPORT_FORMAT)
    assert snapshot["changes"]["joined"] == [{"user_id": b.oid(f"user:{joiner}"),
                                              "user_principal_name": joiner,
                                              "display_name": "Nieuwe Collega"}]
    assert [p["user_principal_name"] for p in snapshot["changes"]["left"]] == [leaver]
    export = {r["user_principal_name"]: r
              for r in rows(Path(report.summary["export_path"]).read_bytes())}
    assert export[joiner]["change"] == "joined"
    assert (export[leaver]["change"], export[leaver]["counted"]) == ("left", "false")
    assert {r["change"] for u, r in export.items() if u not in (joiner, leaver)} == {""}
    # the month's own re-render is byte for byte what was written
    assert render_export(snapshot) == Path(report.summary["export_path"]).read_bytes()


def test_the_xlsx_has_a_joiners_and_leavers_sheet(tmp_path: Path) -> None:
    from openpyxl import load_workbook

    settings = v1_state(tmp_path)
    tenant = demo_tenant(MAY)
    joiner, leaver = change_the_tenant(tenant)
    go(tenant, settings, now=MAY)
    book = load_workbook(export_month(settings.state_dir, "2026-05", "xlsx"), read_only=True)
    moves = list(book["joiners and leavers"].iter_rows(values_only=True))
    assert moves[0] == ("change", "user_principal_name", "display_name", "user_id")
    assert [(m[0], m[1]) for m in moves[1:]] == [("joined", joiner), ("left", leaver)]
    about = {r[0]: r[1] for r in book["about"].iter_rows(values_only=True)}
    assert about["export format"] == str(EXPORT_FORMAT)
    assert about["compared with"].startswith("2026-04 (delivered, ")


def test_the_delivery_mail_names_joiners_and_leavers(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)  # with deliver_to: the demo's service manager
    shutil.copytree(FIXTURE / "state", settings.state_dir, dirs_exist_ok=True)
    tenant = demo_tenant(MAY)
    joiner, leaver = change_the_tenant(tenant)
    go(tenant, settings, now=MAY, final=True)
    [mail] = tenant.all("sentMail")
    text = mail["message"]["body"]["content"]
    assert f"Joined (1):\n  {joiner} (Nieuwe Collega)" in text
    assert f"Left (1):\n  {leaver}" in text
    assert "Change since 2026-04 (delivered): +0 (joined 1, left 1)" in text


def test_a_first_month_has_no_comparison(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, deliver_to=[], sender="")
    report = go(demo_tenant(MAY), settings, now=MAY)
    assert report.summary["previous_basis"] is None and report.summary["joined"] == []
    data = Path(report.summary["export_path"]).read_bytes()
    assert {r["change"] for r in rows(data)} == {""}
    snapshot = json.loads(Path(report.summary["snapshot_path"]).read_bytes())
    assert snapshot["changes"]["previous_basis"] is None
