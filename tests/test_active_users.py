"""active-users against the sandbox tenant: categories, totals, export, delivery, mail."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import math
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.audit import AuditLog
from agent.errors import UsageError
from agent.exports import sha256_hex
from agent.run import RunReport
from agent.runner import run_job
from agent.sandbox import builders as b
from agent.sandbox.seed import base, demo_tenant
from agent.sandbox.seed import licensing as seed
from agent.sandbox.tenant import SandboxTenant
from agent.settings import Settings
from jobs.active_users import (
    DEFAULT_E5_SKU_IDS,
    DEFAULT_EXCHANGE_ONLY_SKU_IDS,
    export_month,
    snapshot_path,
)
from tests.conftest import make_settings, run_on, sandbox_client

MAY_12 = datetime(2026, 5, 12, 8, 0, tzinfo=UTC)  # a Tuesday, mid-month
MAY_29_0700 = datetime(2026, 5, 29, 5, 0, tzinfo=UTC)  # Fri 29 May 07:00 CEST: last working day
JOB = "active-users"


def go(tenant: SandboxTenant, settings: Settings, job: str = JOB, **kwargs: Any) -> RunReport:
    """Run the job through the real runner (tests stay synchronous: plain file checks)."""
    return asyncio.run(run_on(tenant, settings, job, **kwargs))


def settings_for(tmp_path: Path, **policy: Any) -> Settings:
    return make_settings(tmp_path, active_users={**seed.DEMO_POLICY["active_users"], **policy})


def export_rows(report: RunReport) -> dict[str, dict[str, str]]:
    text = Path(report.summary["export_path"]).read_text(encoding="utf-8")
    return {r["user_principal_name"]: r for r in csv.DictReader(io.StringIO(text))}


def oracle(tenant: SandboxTenant, exclude: set[str]) -> dict[str, tuple[str, bool]]:
    """An independent reading of the raw tenant: upn -> (category, counted)."""
    e5, exo = set(DEFAULT_E5_SKU_IDS), set(DEFAULT_EXCHANGE_ONLY_SKU_IDS)
    result = {}
    for u in tenant.all("users"):
        states = u.get("licenseAssignmentStates") or []
        licences = [x["skuId"] for x in u.get("assignedLicenses") or []]
        if not states and not licences:
            continue
        held = {s["skuId"] for s in states if s["state"] == "Active"}
        held |= {sku for sku in licences if sku not in {s["skuId"] for s in states}}
        category = "e5" if held & e5 else "exchange-only" if held & exo else "other"
        counted = (category != "other" and u["accountEnabled"]
                   and not {u["id"].lower(), u["userPrincipalName"].lower()} & exclude)
        result[u["userPrincipalName"]] = (category, bool(counted))
    return result


# ---- the count ------------------------------------------------------------------------------

def test_demo_tenant_every_user_in_its_category(tmp_path: Path) -> None:
    tenant = demo_tenant(MAY_12)
    report = go(tenant, settings_for(tmp_path), JOB, now=MAY_12)
    assert report.status == "ok"
    rows = export_rows(report)
    for upn, expected in seed.EXPECTED.items():
        if expected.category is None:
            assert upn not in rows, expected.why
            continue
        row = rows[upn]
        assert (row["category"], row["counted"]) == (
            expected.category, "true" if expected.counted else "false"), expected.why
    for upn, category in base.STAFF_CATEGORY.items():
        assert (rows[upn]["category"], rows[upn]["counted"]) == (category, "true")

    exclude = {e.lower() for e in seed.DEMO_POLICY["active_users"]["exclude_users"]}
    truth = oracle(tenant, exclude)
    assert {upn: (r["category"], r["counted"] == "true") for upn, r in rows.items()} == truth
    s = report.summary
    counted = [c for c, ok in truth.values() if ok]
    assert s["active"] == len(counted)
    assert s["e5"] == counted.count("e5")
    assert s["exchange_only"] == counted.count("exchange-only")
    assert s["licensed_disabled"] >= 1  # wim.uitdienst
    assert s["excluded"] == 2
    assert s["month"] == "2026-05"
    assert s["delivered"] is False
    assert s["export_sha256"] == sha256_hex(Path(s["export_path"]).read_bytes())
    assert s["per_sku"]["SPE_E5"]["not_held"] >= 2  # fleur and frank: CountViolation
    assert s["per_sku"]["IDENTITY_THREAT_PROTECTION"]["category"] == "other"


def test_demo_tenant_own_cases_give_exact_totals(tmp_path: Path) -> None:
    """Base staff plus this seed only: totals known exactly, independent of other seeds."""
    tenant = SandboxTenant(MAY_12)
    base.seed(tenant, tenant.now)
    seed.seed(tenant, tenant.now)
    report = go(tenant, settings_for(tmp_path), JOB, now=MAY_12)
    staff_e5 = sum(1 for c in base.STAFF_CATEGORY.values() if c == "e5")
    staff_exo = len(base.STAFF_CATEGORY) - staff_e5
    own = [e for e in seed.EXPECTED.values() if e.counted]
    e5 = staff_e5 + sum(1 for e in own if e.category == "e5")
    exo = staff_exo + sum(1 for e in own if e.category == "exchange-only")
    s = report.summary
    assert (s["active"], s["e5"], s["exchange_only"]) == (e5 + exo, e5, exo)
    assert (s["licensed_disabled"], s["excluded"], s["other"]) == (1, 2, 5)


def test_one_pass_no_per_user_requests(tmp_path: Path) -> None:
    tenant = SandboxTenant(MAY_12)
    base.seed(tenant, tenant.now)
    for n in range(2500):
        tenant.add("users", b.user(f"user{n:05d}@{b.DOMAIN}", licenses=[base.SPE_E5]))
    report = go(tenant, settings_for(tmp_path, deliver_to=[], sender=""), JOB,
                          now=MAY_12)
    users = len(tenant.all("users"))
    assert len(tenant.requests) == math.ceil(users / 999) + 1 == report.summary["graph_requests"]
    first = next(r for r in tenant.requests if r.path == "/users")
    assert first.query["$top"] == "999"
    assert set(first.query["$select"].split(",")) == {
        "id", "userPrincipalName", "displayName", "accountEnabled", "userType",
        "assignedLicenses", "licenseAssignmentStates"}
    assert report.summary["users_seen"] == users


def test_each_row_explains_itself(tmp_path: Path) -> None:
    report = go(demo_tenant(MAY_12), settings_for(tmp_path), JOB, now=MAY_12)
    rows = export_rows(report)
    e5_group = seed.group_id(seed.E5_GROUP)
    dirk = rows[f"dirk.dubbel@{b.DOMAIN}"]
    assert dirk["category_skus"] == "SPE_E5"
    assert dirk["category_sources"] == f"SPE_E5: direct + group {e5_group}"
    gert = rows[f"gert.tweegroepen@{b.DOMAIN}"]
    assert gert["category_sources"].count("group ") == 2
    fleur = rows[f"fleur.fout@{b.DOMAIN}"]
    assert fleur["not_held"] == f"SPE_E5: Error (CountViolation) group {e5_group}"
    assert "not held" in fleur["reason"]
    frank = rows[f"frank.terugval@{b.DOMAIN}"]
    assert frank["category_skus"] == "EXCHANGEENTERPRISE"
    assert frank["not_held"].startswith("SPE_E5: Error (CountViolation)")
    assert rows[f"wim.uitdienst@{b.DOMAIN}"]["reason"] == "not counted: licensed, disabled (E5)"
    assert rows[seed.EXCLUDED_BY_UPN]["reason"] == "not counted: in exclude_users (E5)"
    assert rows[f"esther.beide@{b.DOMAIN}"]["sku_part_numbers"] == "EXCHANGESTANDARD;SPE_E5"
    assert any("CountViolation" in w for w in report.warnings)


# ---- snapshot, export, delivery -------------------------------------------------------------

def test_export_rerenders_byte_identical(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    report = go(demo_tenant(MAY_12), settings, JOB, now=MAY_12)
    original = Path(report.summary["export_path"]).read_bytes()
    copy = export_month(settings.state_dir, "2026-05", output=tmp_path / "copy.csv")
    assert copy.read_bytes() == original
    assert export_month(settings.state_dir, "2026-05") == Path(report.summary["export_path"])
    assert Path(report.summary["export_path"]).read_bytes() == original
    one = export_month(settings.state_dir, "2026-05", "xlsx", tmp_path / "one.xlsx")
    two = export_month(settings.state_dir, "2026-05", "xlsx", tmp_path / "two.xlsx")
    assert one.read_bytes() == two.read_bytes()
    assert one.read_bytes()[:2] == b"PK"
    snapshot = json.loads(Path(report.summary["snapshot_path"]).read_text())
    assert snapshot["tenant_id"] == settings.tenant_id
    assert snapshot["taken_at"] == "2026-05-12T08:00:00Z"
    assert snapshot["policy"]["exclude_users"] == settings.active_users.exclude_users
    assert snapshot["export"]["sha256"] == report.summary["export_sha256"]


def test_xlsx_has_rows_and_summary_sheets(tmp_path: Path) -> None:
    from openpyxl import load_workbook

    settings = settings_for(tmp_path)
    report = go(demo_tenant(MAY_12), settings, JOB, now=MAY_12)
    path = export_month(settings.state_dir, "2026-05", "xlsx")
    assert path == settings.state_dir / "exports" / "active-users-2026-05.xlsx"
    book = load_workbook(path, read_only=True)
    assert book.sheetnames == ["users", "summary", "joiners and leavers", "per SKU", "about"]
    users = list(book["users"].iter_rows(values_only=True))
    assert len(users) - 1 == report.summary["licensed_users"]
    summary = {r[0]: r[3] for r in book["summary"].iter_rows(values_only=True)}
    assert summary["active (counted)"] == report.summary["active"]
    skus = {r[0]: r for r in book["per SKU"].iter_rows(values_only=True)}
    assert skus["SPE_E5"][4] == report.summary["per_sku"]["SPE_E5"]["counted"]


def test_draft_is_replaced_by_later_runs(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    tenant = demo_tenant(MAY_12)
    first = go(tenant, settings, JOB, now=MAY_12)
    tenant.add("users", b.user(f"nieuw@{b.DOMAIN}", "Nieuw Medewerker", licenses=[base.SPE_E5]))
    later = MAY_12 + timedelta(days=2)
    second = go(tenant, settings, JOB, now=later)
    assert second.summary["active"] == first.summary["active"] + 1
    assert second.summary["export_path"] == first.summary["export_path"]
    assert second.summary["export_sha256"] != first.summary["export_sha256"]
    assert sha256_hex(Path(second.summary["export_path"]).read_bytes()) == \
        second.summary["export_sha256"]
    assert f"nieuw@{b.DOMAIN}" in export_rows(second)
    snapshot = json.loads(Path(second.summary["snapshot_path"]).read_text())
    assert (snapshot["delivered"], snapshot["run_id"]) == (False, second.run_id)


def test_final_run_makes_the_month_immutable(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    tenant = demo_tenant(MAY_12)
    delivered = go(tenant, settings, JOB, now=MAY_12, final=True)
    assert delivered.summary["delivered"] is True
    export = Path(delivered.summary["export_path"])
    snapshot = Path(delivered.summary["snapshot_path"])
    before = (export.read_bytes(), snapshot.read_bytes())

    tenant.add("users", b.user(f"laat@{b.DOMAIN}", "Laat Erbij", licenses=[base.SPE_E5]))
    later = go(tenant, settings, JOB, now=MAY_12 + timedelta(days=3))
    again = go(tenant, settings, JOB, now=MAY_12 + timedelta(days=4), final=True)
    for report in (later, again):
        assert report.summary["delivered"] is True
        assert report.summary["written"] is False
        assert report.summary["export_sha256"] == delivered.summary["export_sha256"]
        assert report.summary["delivered_active"] == delivered.summary["active"]
        assert report.summary["active"] == delivered.summary["active"] + 1  # live count
        assert "left as they are" in report.summary["note"]
        assert any("differs from the" in w for w in report.warnings)
    assert (export.read_bytes(), snapshot.read_bytes()) == before
    assert export_month(settings.state_dir, "2026-05") == export  # intact: nothing to do
    assert export.read_bytes() == before[0]


def test_a_changed_delivered_export_is_not_overwritten(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    report = go(demo_tenant(MAY_12), settings, JOB, now=MAY_12, final=True)
    export = Path(report.summary["export_path"])
    original = export.read_bytes()
    export.write_bytes(original.replace(b"counted: E5", b"counted: E3", 1))
    with pytest.raises(UsageError, match="refusing to overwrite"):
        export_month(settings.state_dir, "2026-05")
    restored = export_month(settings.state_dir, "2026-05", output=tmp_path / "restored.csv")
    assert restored.read_bytes() == original
    later = go(demo_tenant(MAY_12), settings, JOB, now=MAY_12 + timedelta(days=1))
    assert any("differs from the delivered export" in w for w in later.warnings)
    export.unlink()  # a lost delivered export is restored from the snapshot
    assert export_month(settings.state_dir, "2026-05").read_bytes() == original


def test_scheduled_run_on_the_last_working_day_delivers(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, deliver_to=[], sender="")
    tenant = demo_tenant(MAY_12)
    day_before = go(tenant, settings, JOB, now=MAY_29_0700 - timedelta(days=1),
                              trigger="schedule")
    assert day_before.summary["delivered"] is False
    assert day_before.summary["deadline"] == "2026-05-29"
    by_hand = go(tenant, settings, JOB, now=MAY_29_0700)  # trigger cli: a draft
    assert by_hand.summary["delivered"] is False
    scheduled = go(tenant, settings, JOB, now=MAY_29_0700, trigger="schedule")
    assert scheduled.summary["delivered"] is True
    entries = list(AuditLog(settings.state_dir / "audit.jsonl").entries())
    delivered = [e for e in entries if e.get("event") == "month-delivered"]
    assert len(delivered) == 1
    assert delivered[0]["export_sha256"] == scheduled.summary["export_sha256"]
    assert delivered[0]["run_id"] == scheduled.run_id


def test_the_month_and_its_last_day_are_local_time(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, deliver_to=[], sender="")
    # 22:30 UTC on Wed 29 April is 00:30 on Thu 30 April in Amsterdam: April's last working day
    moment = datetime(2026, 4, 29, 22, 30, tzinfo=UTC)
    report = go(demo_tenant(moment), settings, JOB, now=moment, trigger="schedule")
    assert report.summary["month"] == "2026-04"
    assert report.summary["delivered"] is True
    # 22:30 UTC on 30 April is already 1 May there: May's draft, April stays delivered
    moment = datetime(2026, 4, 30, 22, 30, tzinfo=UTC)
    may = go(demo_tenant(moment), settings, JOB, now=moment, trigger="schedule")
    assert (may.summary["month"], may.summary["delivered"]) == ("2026-05", False)
    assert may.summary["previous_basis"] == "delivered"


def test_a_caught_up_scheduled_run_delivers_the_month_it_served(tmp_path: Path) -> None:
    """The daemon was down over the month end: on 2 December it catches up the missed
    last-working-day run of Monday 30 November (07:00 CET), which must deliver November."""
    settings = settings_for(tmp_path, deliver_to=[], sender="")
    now = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    missed = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)

    async def catch_up() -> RunReport:
        async with sandbox_client(demo_tenant(now)) as graph:
            return await run_job(settings, JOB, trigger="schedule", final=True, now=now,
                                 scheduled_for=missed, graph=graph)

    report = asyncio.run(catch_up())
    assert (report.summary["month"], report.summary["delivered"]) == ("2026-11", True)
    assert report.summary["deadline"] == "2026-11-30"
    snapshot = json.loads(Path(report.summary["snapshot_path"]).read_text())
    assert (snapshot["scheduled_for"], snapshot["taken_at"]) == (
        "2026-11-30T06:00:00Z", "2026-12-02T09:00:00Z")
    assert not snapshot_path(settings.state_dir, "2026-12").exists()


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    tenant = demo_tenant(MAY_12)
    dry = go(tenant, settings, JOB, now=MAY_12, dry_run=True, final=True)
    assert dry.summary["written"] is False
    assert not (settings.state_dir / "exports" / "active-users-2026-05.csv").exists()
    assert not Path(dry.summary["snapshot_path"]).exists()
    assert [(a.action, a.status) for a in dry.actions] == [("send-mail", "planned")]
    assert tenant.all("sentMail") == []
    real = go(tenant, settings, JOB, now=MAY_12)
    # the export depends on the rows only: a dry run reports the checksum a real run writes
    assert real.summary["export_sha256"] == dry.summary["export_sha256"]


def test_change_since_last_months_delivered_count(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, deliver_to=[], sender="")
    tenant = demo_tenant(MAY_12)
    april = datetime(2026, 4, 20, 8, tzinfo=UTC)
    delivered = go(tenant, settings, JOB, now=april, final=True)
    tenant.add("users", b.user(f"nieuw@{b.DOMAIN}", "Nieuw", licenses=[base.EXCHANGESTANDARD]))
    bram = tenant.find_user(f"bram.jansen@{b.DOMAIN}")
    assert bram is not None
    bram["accountEnabled"] = False
    tenant.touch()
    may = go(tenant, settings, JOB, now=MAY_12)
    s = may.summary
    assert s["previous_month"] == "2026-04"
    assert s["previous_basis"] == "delivered"
    assert s["previous_active"] == delivered.summary["active"]
    assert s["active_change"] == 0
    assert s["joined"] == [f"nieuw@{b.DOMAIN}"]
    assert s["left"] == [f"bram.jansen@{b.DOMAIN}"]


def test_an_undelivered_previous_month_is_a_warning(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, deliver_to=[], sender="")
    tenant = demo_tenant(MAY_12)
    go(tenant, settings, JOB, now=datetime(2026, 4, 20, 8, tzinfo=UTC))
    may = go(tenant, settings, JOB, now=MAY_12)
    assert may.summary["previous_basis"] == "draft"
    assert any("2026-04 was never delivered" in w for w in may.warnings)


# ---- mail --------------------------------------------------------------------------------------

def test_delivery_mails_the_export_and_is_audited(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    tenant = demo_tenant(MAY_12)
    draft = go(tenant, settings, JOB, now=MAY_12)
    assert draft.actions == [] and tenant.all("sentMail") == []  # drafts are not mailed
    report = go(tenant, settings, JOB, now=MAY_12, final=True)
    assert report.status == "ok"
    [action] = report.actions
    assert (action.action, action.status) == ("send-mail", "done")
    [mail] = tenant.all("sentMail")
    assert mail["from"] == seed.SENDER
    message = mail["message"]
    assert message["toRecipients"] == [{"emailAddress": {"address": seed.SERVICE_MANAGER}}]
    assert f"Active users (invoiced): {report.summary['active']}" in message["body"]["content"]
    assert report.summary["export_sha256"] in message["body"]["content"]
    [attachment] = message["attachments"]
    export = Path(report.summary["export_path"]).read_bytes()
    assert base64.b64decode(attachment["contentBytes"]) == export

    entries = list(AuditLog(settings.state_dir / "audit.jsonl").entries())
    mine = [e for e in entries if e.get("run_id") == report.run_id]
    statuses = [e.get("status") for e in mine if e.get("event") == "action"]
    assert statuses == ["planned", "done"]
    [finished] = [e for e in mine if e.get("event") == "run-finished"]
    assert finished["summary"]["export_sha256"] == report.summary["export_sha256"]
    again = go(tenant, settings, JOB, now=MAY_12, final=True)
    assert again.actions == [] and len(tenant.all("sentMail")) == 1
    assert again.summary["mail"] == "already sent"


def test_a_failed_mail_is_partial_and_retried_by_the_next_final_run(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    tenant = demo_tenant(MAY_12)
    tenant.faults.fail_writes = {"sendMail": 500}
    failed = go(tenant, settings, JOB, now=MAY_12, final=True)
    assert failed.status == "partial"
    assert failed.summary["delivered"] is True  # the month is delivered all the same
    assert [a.status for a in failed.actions] == ["failed"]
    tenant.faults.fail_writes = {}
    retried = go(tenant, settings, JOB, now=MAY_12 + timedelta(hours=1), final=True)
    assert [a.status for a in retried.actions] == ["done"]
    assert len(tenant.all("sentMail")) == 1


def test_an_export_just_under_3_mib_is_still_attached(tmp_path: Path) -> None:
    """Exports between ~2.9 and 3 MiB went inline as base64 over Graph's 4 MB request
    limit (413 on every delivering run). Sizes around the limits: tests/test_mail.py."""
    target = int(2.95 * 1024 * 1024)
    settings = settings_for(tmp_path)
    tenant = demo_tenant(MAY_12)
    fillers = [tenant.add("users", b.user(f"vulling{i:05d}@{b.DOMAIN}", "x" * 200,
                                          licenses=[base.EXCHANGESTANDARD]))
               for i in range(6500)]
    draft = go(tenant, settings, JOB, now=MAY_12)
    missing = target - Path(draft.summary["export_path"]).stat().st_size
    assert 0 < missing < len(fillers) * 56  # display names (256 at most) make up the rest
    for user in fillers:
        extra = min(56, missing)
        user["displayName"] = "x" * (200 + extra)
        missing -= extra
    tenant.touch()
    report = go(tenant, settings, JOB, now=MAY_12, final=True)
    export = Path(report.summary["export_path"]).read_bytes()
    assert len(export) == target
    assert [(a.action, a.status) for a in report.actions] == [("send-mail", "done")]
    assert report.actions[0].after is not None and report.actions[0].after["via"] == "draft"
    [mail] = tenant.all("sentMail")
    [attachment] = mail["message"]["attachments"]
    assert base64.b64decode(attachment["contentBytes"]) == export
    assert "(attached)" in mail["message"]["body"]["content"]


# ---- warnings ------------------------------------------------------------------------------------

def test_policy_mistakes_are_warnings(tmp_path: Path) -> None:
    missing = "cd2925a3-5076-4233-8931-638a8c94f773"  # SPE_E5_NOPSTNCONF: not in this tenant
    settings = settings_for(tmp_path, e5_sku_ids=[base.SPE_E5, missing],
                            exclude_users=["nobody@contoso.nl"], deliver_to=[], sender="")
    report = go(demo_tenant(MAY_12), settings, JOB, now=MAY_12)
    assert report.status == "ok"
    assert any(missing in w and "e5_sku_ids" in w for w in report.warnings)
    assert any("'nobody@contoso.nl' matches no user" in w for w in report.warnings)
    # with the default SKU lists nothing is said about the variants the tenant lacks
    (tmp_path / "defaults").mkdir()
    default = go(demo_tenant(MAY_12), settings_for(tmp_path / "defaults"), JOB,
                           now=MAY_12)
    assert not any("subscribedSkus (a typo" in w for w in default.warnings)


def test_a_mail_whose_outcome_is_unknown_is_sent_again_marked_as_a_repeat(
        tmp_path: Path) -> None:
    """The connection drops after Graph took the sendMail (the third request): nobody knows
    whether it went out. At least once: the next delivering run sends it again, marked."""
    settings = settings_for(tmp_path)
    tenant = demo_tenant(MAY_12)
    tenant.faults.reset_every = 3  # /subscribedSkus, /users, then the sendMail
    lost = go(tenant, settings, now=MAY_12, final=True)
    assert [a.status for a in lost.actions] == ["failed"]
    assert len(tenant.all("sentMail")) == 1  # it did go out
    tenant.faults.reset_every = 0
    again = go(tenant, settings, now=MAY_12 + timedelta(hours=1), final=True)
    assert [a.status for a in again.actions] == ["done"]
    assert any("may have been sent already" in w for w in again.warnings)
    first, second = (m["message"] for m in tenant.all("sentMail"))
    assert not first["subject"].endswith("(possible repeat)")
    assert second["subject"].endswith("(possible repeat)")
    assert second["body"]["content"].startswith("This message may repeat one sent by run")
    third = go(tenant, settings, now=MAY_12 + timedelta(hours=2), final=True)
    assert third.actions == [] and len(tenant.all("sentMail")) == 2


def test_a_delivery_missing_from_the_audit_log_is_recorded_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after the delivered snapshot, before its audit entry: the next run records it."""
    import jobs.active_users as job

    settings = settings_for(tmp_path, deliver_to=[], sender="")
    tenant = demo_tenant(MAY_12)
    with monkeypatch.context() as patch:
        patch.setattr(job.delivery, "record_delivery", lambda *args: None)
        delivered = go(tenant, settings, now=MAY_12, final=True)
    log = AuditLog(settings.state_dir / "audit.jsonl")

    def entries() -> list[dict[str, Any]]:
        return [e for e in log.entries() if e.get("event") == "month-delivered"]

    assert entries() == []
    later = go(tenant, settings, now=MAY_12 + timedelta(days=1))
    assert any("was not in the audit log" in w for w in later.warnings)
    [entry] = entries()
    assert (entry["delivered_by_run"], entry["run_id"]) == (delivered.run_id, later.run_id)
    assert entry["export_sha256"] == delivered.summary["export_sha256"]
    go(tenant, settings, now=MAY_12 + timedelta(days=2))
    assert len(entries()) == 1
    # killed after the entry, before its marker: found in the log, not written twice
    (settings.state_dir / "snapshots" / "active-users" / "2026-05.audit.json").unlink()
    go(tenant, settings, now=MAY_12 + timedelta(days=3))
    assert len(entries()) == 1


def test_temporary_files_of_a_killed_run_are_removed(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, deliver_to=[], sender="")
    exports = settings.state_dir / "exports"
    exports.mkdir(parents=True)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = exports / f".active-users-2026-05.csv.{gone.stdout.strip()}.k1ll3d.tmp"
    live = exports / f".active-users-2026-05.csv.{os.getpid()}.inflight.tmp"
    dead.write_bytes(b"half an export")
    live.write_bytes(b"being written")
    go(demo_tenant(MAY_12), settings, now=MAY_12)
    assert not dead.exists()
    assert live.exists()
