"""offboarding end to end: the real runner and GraphClient against the sandbox tenant."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import httpx

from agent.audit import AuditLog
from agent.sandbox import builders as b
from agent.sandbox.seed import demo_tenant
from agent.sandbox.seed import leavers as seed
from jobs.offboarding import LEDGER_FILE
from tests.helpers_offboarding import (
    DAY,
    NOW,
    CrashingTransport,
    add_deleted,
    add_device,
    add_leaver,
    announce,
    by_status,
    did,
    done,
    ledger_of,
    rules,
    run_off,
    settings,
    small_tenant,
    uid,
    write_attempts,
    writes,
)

DEMO = {**seed.DEMO_POLICY["offboarding"], "mode": "enforce"}


def expected_actions() -> set[tuple[str, str]]:
    """Every change planned for the demo tenant (CASES), as (action, name)."""
    found: set[tuple[str, str]] = set()
    for upn, case in seed.CASES.items():
        found |= {(action, upn) for action in case.actions}
        found |= {(f"{kind}-device", name) for name, kind in case.devices.items()
                  if kind != "manual"}
    return found


def expected(field: str) -> set[tuple[str, str]]:
    return {(a, upn) for upn, c in seed.CASES.items() for a in getattr(c, field)}


# ---- the demo tenant: report, enforce, enforce again ------------------------------------------

async def test_demo_report_run_lists_the_plan_and_changes_nothing(tmp_path: Path) -> None:
    tenant = demo_tenant(NOW)
    cfg = settings(tmp_path, **{**DEMO, "mode": "report"})
    report = await run_off(tenant, cfg)
    assert report.dry_run and report.status == "ok"
    assert by_status(report, "planned") == expected_actions()
    assert by_status(report, "done") == set() and write_attempts(tenant) == 0
    assert not (cfg.state_dir / LEDGER_FILE).exists()
    assert not (cfg.state_dir / "exports").exists()
    # the plan is audited as planned, each with its reason
    audited = [e for e in AuditLog(cfg.state_dir / "audit.jsonl").entries()
               if e["event"] == "action"]
    assert {(e["action"], e["target"]["name"]) for e in audited if e["status"] == "planned"} \
        == expected_actions()
    assert all(e["reason"] and e.get("dry_run") for e in audited if e["status"] == "planned")


async def test_demo_enforce_makes_exactly_the_plan_then_nothing(tmp_path: Path) -> None:
    tenant = demo_tenant(NOW)
    cfg = settings(tmp_path, **DEMO)
    planned = by_status(await run_off(tenant, cfg, dry_run=True), "planned")
    assert planned == expected_actions()
    report = await run_off(tenant, cfg)
    refused = expected("refused")
    made = planned - refused - expected("not_reached")
    assert by_status(report, "done") == made
    assert by_status(report, "failed") == set()
    assert report.status == "ok"  # the privileged leaver's refusal is a finding
    assert by_status(report, "skipped") == {
        ("disable-user", seed.PETRA), ("wipe-device", "LT-WOUT"),  # protected, wiping
        ("disable-user", seed.PIM),  # refused by Graph
        ("delete-user", seed.OLAF), ("purge-user", seed.HUGO)}  # announced, not made
    manual = {name for c in seed.CASES.values() for name, k in c.devices.items()
              if k == "manual"}
    assert rules(report) == {**{c.finding: {upn} for upn, c in seed.CASES.items()
                                if c.finding}, "OFF-MANUAL-TASK": manual}
    veto = {v["user_principal_name"] for v in report.summary["veto_window"]}
    assert veto == {upn for upn, c in seed.CASES.items() if c.veto}
    # every change made exactly once
    assert all(n == 1 for n in writes(tenant).values())
    assert sum(writes(tenant).values()) == len(made)
    # the tenant now looks offboarded
    users = {u["userPrincipalName"]: u for u in tenant.all("users")}
    for upn in (seed.LARS, seed.MILA, seed.GERT, seed.SOFIE, seed.WOUT):
        assert users[upn]["accountEnabled"] is False

    assert users[seed.PETRA]["accountEnabled"] is True
    assert users[seed.RITA]["accountEnabled"] is True
    assert users[seed.PIM]["accountEnabled"] is True
    assert seed.OLAF in users and tenant.get("deletedItems", uid(seed.HUGO)) is not None
    states = {d["deviceName"]: d["managementState"] for d in tenant.all("managedDevices")}
    assert states["LT-LARS"] == "wipePending" and states["IPH-LARS"] == "retirePending"
    assert states["AND-MILA"] == "retirePending" and states["LT-DIRK"] == "wipePending"

    attempts = write_attempts(tenant)
    again = await run_off(tenant, cfg)
    assert by_status(again, "done") == set() and by_status(again, "failed") == set()
    # the refused disable is not tried again every morning; its finding stays
    assert write_attempts(tenant) == attempts
    assert rules(again)["OFF-PRIVILEGED-LEAVER"] == {seed.PIM}

    # after the notice: the announced purges are made, each once
    later = await run_off(tenant, cfg, now=NOW + 8 * DAY)
    purged = {n for a, n in done(later) if a == "purge-user"}
    assert purged == {seed.OLAF, seed.HUGO, seed.VICTOR}
    assert seed.OLAF not in {u["userPrincipalName"] for u in tenant.all("users")}
    assert tenant.get("deletedItems", uid(seed.HUGO)) is None
    assert tenant.get("deletedItems", uid(seed.ELINE)) is not None  # someone else's
    assert AuditLog(cfg.state_dir / "audit.jsonl").verify().ok


async def test_changes_are_audited_planned_then_done_with_state_and_request_id(
        tmp_path: Path) -> None:
    tenant = small_tenant()
    lars = add_leaver(tenant, "lars.laptop")
    add_device(tenant, "LT-LARS", lars)
    cfg = settings(tmp_path)
    await run_off(tenant, cfg)
    entries = [e for e in AuditLog(cfg.state_dir / "audit.jsonl").entries()
               if e["event"] == "action"]
    sandbox_ids = {r.request_id for r in tenant.requests if r.method != "GET"}
    pairs = [(entries[i], entries[i + 1]) for i in range(0, len(entries), 2)]
    assert [p["action"] for p, _ in pairs] == ["disable-user", "revoke-sessions", "wipe-device"]
    for planned, outcome in pairs:
        assert planned["status"] == "planned" and outcome["status"] == "done"
        assert planned["seq"] < outcome["seq"] and planned["action"] == outcome["action"]
        assert outcome["request_id"] in sandbox_ids
        assert "before" in planned and "after" in outcome
    assert pairs[0][0]["before"] == {"accountEnabled": True}
    assert pairs[0][1]["after"] == {"accountEnabled": False}


async def test_deleted_accounts_overview_lists_the_purged(tmp_path: Path) -> None:
    tenant = demo_tenant(NOW)
    cfg = settings(tmp_path, **DEMO)
    announce(cfg, seed.OLAF, seed.HUGO)
    report = await run_off(tenant, cfg)
    path = Path(report.summary["deleted_accounts_export"])
    assert path.name == "deleted-accounts-2026-03.csv"
    assert os.stat(path).st_mode & 0o777 == 0o600
    with open(path, encoding="utf-8") as fh:  # noqa: ASYNC230 (a test reading a small file)
        rows = {r["user_principal_name"]: r for r in csv.DictReader(io.StringIO(fh.read()))}
    assert set(rows) == {seed.OLAF, seed.HUGO}
    ids = {r.request_id for r in tenant.requests}
    olaf = rows[seed.OLAF]
    assert olaf["purge_run_id"] == olaf["delete_run_id"] == report.run_id
    assert olaf["delete_request_id"] in ids and olaf["purge_request_id"] in ids
    assert olaf["inactive_since"].startswith(olaf["leave_date"])
    assert rows[seed.HUGO]["delete_run_id"] == ""  # deleted by someone else, purged by us
    assert rows[seed.HUGO]["deleted_at"] and rows[seed.HUGO]["purge_request_id"] in ids


# ---- limits -----------------------------------------------------------------------------------

async def test_disable_limit_stops_every_disable_but_not_other_work(tmp_path: Path) -> None:
    tenant = small_tenant()
    for n in range(3):
        add_leaver(tenant, f"leaver.{n}")
    add_leaver(tenant, "old.one", left_days_ago=130, enabled=False, revoked_days_after=1)
    cfg = settings(tmp_path, max_disable_per_run=2)
    announce(cfg, "old.one")
    report = await run_off(tenant, cfg)
    assert rules(report) == {"OFF-LIMIT-REACHED": {"max_disable_per_run"}}
    assert {a for a, _ in by_status(report, "skipped")} == {"disable-user"}
    assert len(by_status(report, "skipped")) == 3
    assert all(u["accountEnabled"] for u in tenant.all("users")
               if u["userPrincipalName"].startswith("leaver."))
    assert set(done(report)) == {("delete-user", f"old.one@{b.DOMAIN}"),
                                 ("purge-user", f"old.one@{b.DOMAIN}")}
    assert report.summary["limit_reached"] == ["max_disable_per_run"]


async def test_purge_limit_stops_every_purge(tmp_path: Path) -> None:
    tenant = small_tenant()
    for n in range(2):
        add_leaver(tenant, f"old.{n}", left_days_ago=130, enabled=False, revoked_days_after=1)
    add_deleted(tenant, "half.way", left_days_ago=140)
    add_leaver(tenant, "new.leaver")
    cfg = settings(tmp_path, max_purge_per_run=2)
    announce(cfg, "old.0", "old.1", "half.way")
    report = await run_off(tenant, cfg)
    assert rules(report) == {"OFF-LIMIT-REACHED": {"max_purge_per_run"}}
    assert not any(m == "DELETE" for m, _ in writes(tenant))
    assert set(done(report)) == {("disable-user", f"new.leaver@{b.DOMAIN}"),
                                 ("revoke-sessions", f"new.leaver@{b.DOMAIN}")}
    # at the limit exactly, it goes ahead
    (tmp_path / "b").mkdir()
    announce(settings(tmp_path / "b"), "old.0", "old.1", "half.way")
    report = await run_off(tenant, settings(tmp_path / "b", max_purge_per_run=3))
    assert len(by_status(report, "done")) == 5  # 2 x (delete, purge) + 1 purge


# ---- protected, re-enabled -----------------------------------------------------------------

async def test_protected_and_emergency_accounts_are_never_touched(tmp_path: Path) -> None:
    tenant = small_tenant()
    prot = add_leaver(tenant, "prot.upn")
    add_device(tenant, "LT-PROT", prot)
    add_leaver(tenant, "prot.id", left_days_ago=130, enabled=False)
    add_leaver(tenant, "break.glass")
    add_deleted(tenant, "prot.deleted", left_days_ago=140)
    cfg = settings(tmp_path, protected_users=["PROT.UPN@contoso.nl", uid("prot.id@contoso.nl"),
                                              "prot.deleted@contoso.nl"],
                   extra_sections={"privileged_roles": {
                       "emergency_access_accounts": ["break.glass@contoso.nl"]}})
    announce(cfg, "prot.id", "prot.deleted")
    report = await run_off(tenant, cfg)
    assert write_attempts(tenant) == 0
    assert by_status(report, "skipped") == {
        ("disable-user", "prot.upn@contoso.nl"), ("delete-user", "prot.id@contoso.nl"),
        ("disable-user", "break.glass@contoso.nl"), ("purge-user", "prot.deleted@contoso.nl")}
    assert report.summary["veto_window"] == []  # a protected account is never due


async def test_reenabled_account_is_flagged_never_disabled_again_nor_purged(
        tmp_path: Path) -> None:
    tenant = small_tenant()
    add_leaver(tenant, "rita.terug")
    cfg = settings(tmp_path)
    await run_off(tenant, cfg)
    rita = tenant.get("users", uid("rita.terug@contoso.nl"))
    assert rita is not None and rita["accountEnabled"] is False
    rita["accountEnabled"] = True  # the customer's veto
    before = write_attempts(tenant)
    for later in (NOW + DAY, NOW + 120 * DAY):  # the next day, and past the retention
        report = await run_off(tenant, cfg, now=later)
        assert rules(report) == {"OFF-REENABLED": {"rita.terug@contoso.nl"}}
        assert write_attempts(tenant) == before
    # disabled again by an admin: a new inactive period starts that day; the sessions of
    # the enabled weeks are revoked again; the purge counts from the new date
    rita["accountEnabled"] = False
    report = await run_off(tenant, cfg, now=NOW + 121 * DAY)
    assert rules(report) == {}
    assert done(report) == [("revoke-sessions", "rita.terug@contoso.nl")]
    assert done(await run_off(tenant, cfg, now=NOW + 121 * DAY + 85 * DAY)) == []  # announced
    assert done(await run_off(tenant, cfg, now=NOW + 121 * DAY + 91 * DAY)) == []
    report = await run_off(tenant, cfg, now=NOW + 121 * DAY + 92 * DAY)
    assert ("delete-user", "rita.terug@contoso.nl") in done(report)


async def test_enabled_during_the_run_is_not_purged(tmp_path: Path) -> None:
    tenant = small_tenant()
    add_leaver(tenant, "last.minute", left_days_ago=130, enabled=False, revoked_days_after=1)
    target = uid("last.minute@contoso.nl")
    announce(settings(tmp_path), "last.minute")

    def enable_on_fresh_read(request: httpx.Request) -> None:
        if request.method == "GET" and request.url.path.endswith(f"/users/{target}"):
            tenant.get("users", target)["accountEnabled"] = True  # type: ignore[index]

    report = await run_off(tenant, settings(tmp_path),
                           transport=CrashingTransport(tenant, on_request=enable_on_fresh_read))
    assert write_attempts(tenant) == 0
    assert rules(report) == {"OFF-REENABLED": {"last.minute@contoso.nl"}}


# ---- devices -------------------------------------------------------------------------------------

async def test_company_devices_wiped_personal_retired_each_once(tmp_path: Path) -> None:
    tenant = small_tenant()
    lars = add_leaver(tenant, "lars.laptop")
    add_device(tenant, "LT-CORP", lars)
    add_device(tenant, "IPH-OWN", lars, owner_type="personal")
    add_device(tenant, "TAB-WHO", lars, owner_type="unknown")
    add_device(tenant, "LT-WIPING", lars, managementState="wipePending")
    add_device(tenant, "LT-CANCELLED", lars, managementState="wipeCanceled")
    cfg = settings(tmp_path)
    report = await run_off(tenant, cfg)
    assert {a for a in done(report) if a[0].endswith("-device")} == {
        ("wipe-device", "LT-CORP"), ("retire-device", "IPH-OWN"), ("retire-device", "TAB-WHO")}
    paths = {p for _, p in writes(tenant)}
    assert f"/deviceManagement/managedDevices/{did('IPH-OWN')}/wipe" not in paths
    assert any("LT-CANCELLED" in w for w in report.warnings)
    record = ledger_of(cfg).get(lars["id"])
    assert record is not None and record.devices[did("LT-WIPING")].source == "observed"
    attempts = write_attempts(tenant)
    report = await run_off(tenant, cfg, now=NOW + DAY)
    assert write_attempts(tenant) == attempts and done(report) == []


async def test_no_devices_touched_when_wipe_devices_is_off(tmp_path: Path) -> None:
    tenant = small_tenant()
    lars = add_leaver(tenant, "lars.laptop")
    add_device(tenant, "LT-CORP", lars)
    report = await run_off(tenant, settings(tmp_path, wipe_devices=False))
    assert {a for a, _ in done(report)} == {"disable-user", "revoke-sessions"}
    assert not any(r.path.startswith("/deviceManagement") for r in tenant.requests)


# ---- purge ---------------------------------------------------------------------------------

async def test_purge_after_retention_calendar_months_with_veto_window(tmp_path: Path) -> None:
    tenant = small_tenant()
    add_leaver(tenant, "nov.leaver")
    cfg = settings(tmp_path)
    await run_off(tenant, cfg)  # disabled on 18 March: purge date 18 June
    report = await run_off(tenant, cfg, now=NOW + 80 * DAY)  # 6 June
    assert done(report) == []
    [veto] = report.summary["veto_window"]
    assert (veto["inactive_since"], veto["purge_date"], veto["days_left"]) == \
        ("2026-03-18", "2026-06-18", 12)
    report = await run_off(tenant, cfg, now=NOW + 91 * DAY)  # 17 June
    assert done(report) == []
    report = await run_off(tenant, cfg, now=NOW + 92 * DAY)  # 18 June
    assert done(report) == [("delete-user", "nov.leaver@contoso.nl"),
                            ("purge-user", "nov.leaver@contoso.nl")]
    assert report.summary["veto_window"] == []


async def test_delete_404_is_already_gone(tmp_path: Path) -> None:
    tenant = small_tenant()
    add_leaver(tenant, "gone.meanwhile", left_days_ago=130, enabled=False, revoked_days_after=1)
    add_leaver(tenant, "purged.meanwhile", left_days_ago=130, enabled=False, revoked_days_after=1)
    gone, purged = uid("gone.meanwhile@contoso.nl"), uid("purged.meanwhile@contoso.nl")

    def someone_else_acts(request: httpx.Request) -> None:
        # between our fresh read and our DELETE, another admin deletes (and purges) it
        if request.method == "DELETE" and request.url.path.endswith(f"/users/{gone}"):
            tenant.remove("users", gone)
        if request.method == "DELETE" and request.url.path.endswith(f"/deletedItems/{purged}"):
            tenant.remove("deletedItems", purged)

    announce(settings(tmp_path), "gone.meanwhile", "purged.meanwhile")
    cfg = settings(tmp_path)
    report = await run_off(tenant, cfg,
                           transport=CrashingTransport(tenant, on_request=someone_else_acts))
    assert report.status == "ok"
    assert set(done(report)) == {("delete-user", f"{n}@contoso.nl")
                                 for n in ("gone.meanwhile", "purged.meanwhile")}
    notes = {(a.action, a.target["name"]): a.reason for a in report.actions}
    assert notes[("delete-user", "gone.meanwhile@contoso.nl")].endswith("already gone")
    # a 404 on the permanent delete right after ours is "not visible yet", never "purged"
    for name in ("gone.meanwhile", "purged.meanwhile"):
        assert ("purge-user", f"{name}@contoso.nl") in by_status(report, "skipped")
        record = ledger_of(cfg).get(uid(f"{name}@contoso.nl"))
        assert record is not None and record.purged_at is None and record.purge_pending
    # the next day direct reads find them nowhere: that is the evidence
    report = await run_off(tenant, cfg, now=NOW + DAY)
    assert {n for a, n in by_status(report, "skipped") if a == "purge-user"} == {
        "gone.meanwhile@contoso.nl", "purged.meanwhile@contoso.nl"}
    for name in ("gone.meanwhile", "purged.meanwhile"):
        record = ledger_of(cfg).get(uid(f"{name}@contoso.nl"))
        assert record is not None and record.purge_source == "verified gone"


async def test_privileged_leaver_refusal_is_a_finding_not_a_daily_failure(
        tmp_path: Path) -> None:
    tenant = small_tenant()
    admin = add_leaver(tenant, "old.admin", left_days_ago=130, enabled=False,
                       revoked_days_after=1)
    new_admin = add_leaver(tenant, "new.admin")
    lt = add_device(tenant, "LT-NEWADMIN", new_admin)
    for user in (admin, new_admin):
        tenant.add("roleAssignments", b.role_assignment(user["id"], "User Administrator"))
    add_leaver(tenant, "plain.leaver")
    cfg = settings(tmp_path)
    announce(cfg, "old.admin")
    report = await run_off(tenant, cfg)
    assert report.status == "ok" and report.error is None
    assert by_status(report, "failed") == set()
    assert {("delete-user", "old.admin@contoso.nl"),
            ("disable-user", "new.admin@contoso.nl")} <= by_status(report, "skipped")
    assert rules(report) == {"OFF-PRIVILEGED-LEAVER": {"old.admin@contoso.nl",
                                                       "new.admin@contoso.nl"}}
    assert ("disable-user", "plain.leaver@contoso.nl") in done(report)
    # the refused disable stops the rest for that leaver: no revoke, no wipe
    assert not any(n == "new.admin@contoso.nl" for _, n in done(report))
    assert tenant.get("managedDevices", lt["id"])["managementState"] == "managed"  # type: ignore[index]
    # the refused purge left no half purge behind
    record = ledger_of(cfg).get(admin["id"])
    assert record is not None and not record.purge_pending
    # the next morning: the finding again, no request, still ok
    attempts = write_attempts(tenant)
    again = await run_off(tenant, cfg, now=NOW + DAY)
    assert again.status == "ok" and write_attempts(tenant) == attempts
    assert set(rules(again)["OFF-PRIVILEGED-LEAVER"]) == {"old.admin@contoso.nl",
                                                          "new.admin@contoso.nl"}
    # the role is removed; a week after the refusal the agent tries again
    for assignment in tenant.all("roleAssignments"):
        if assignment["principalId"] == new_admin["id"]:
            tenant.remove("roleAssignments", assignment["id"])
    later = await run_off(tenant, cfg, now=NOW + 7 * DAY)
    assert ("disable-user", "new.admin@contoso.nl") in done(later)
    assert ("wipe-device", "LT-NEWADMIN") in done(later)


async def test_one_failure_does_not_stop_the_batch(tmp_path: Path) -> None:
    tenant = small_tenant()
    add_leaver(tenant, "a.first")
    add_leaver(tenant, "b.broken")
    add_leaver(tenant, "c.last")
    tenant.faults.fail_writes = {f"/users/{uid('b.broken@contoso.nl')}$": 400}
    report = await run_off(tenant, settings(tmp_path))
    assert report.status == "partial"
    assert by_status(report, "failed") == {("disable-user", "b.broken@contoso.nl")}
    assert {n for _, n in done(report)} == {"a.first@contoso.nl", "c.last@contoso.nl"}


async def test_dry_run_flag_beats_enforce_mode(tmp_path: Path) -> None:
    tenant = demo_tenant(NOW)
    report = await run_off(tenant, settings(tmp_path, **DEMO), dry_run=True)
    assert report.dry_run and write_attempts(tenant) == 0
    assert by_status(report, "planned") == expected_actions()


async def test_leave_group_members_nested_and_future_leave_date_waits(tmp_path: Path) -> None:
    tenant = small_tenant()
    member = add_leaver(tenant, "in.group", left_days_ago=None)
    nested = add_leaver(tenant, "in.nested", left_days_ago=None)
    waiting = add_leaver(tenant, "in.group.later", left_days_ago=-10)
    tenant.add("groups", b.group("sub", members=[nested["id"]]))
    group = tenant.add("groups", b.group("leavers", members=[
        member["id"], waiting["id"], b.oid("group:sub")]))
    report = await run_off(tenant, settings(tmp_path, leave_group_id=group["id"]))
    assert {n for a, n in done(report) if a == "disable-user"} == {
        "in.group@contoso.nl", "in.nested@contoso.nl"}


async def test_unknown_leave_group_is_a_configuration_error(tmp_path: Path) -> None:
    from agent.errors import ConfigError

    tenant = small_tenant()
    add_leaver(tenant, "any.one")
    cfg = settings(tmp_path, leave_group_id="00000000-0000-4000-8000-000000000001")
    try:
        await run_off(tenant, cfg)
    except ConfigError as exc:
        assert "offboarding.leave_group_id" in str(exc)
        assert exc.report.status == "failed"  # type: ignore[attr-defined]
    else:
        raise AssertionError("expected a ConfigError")
    assert write_attempts(tenant) == 0


async def test_restored_from_deleted_items_is_never_deleted_again(tmp_path: Path) -> None:
    tenant = small_tenant()
    add_leaver(tenant, "comes.back", left_days_ago=130, enabled=False, revoked_days_after=1)
    target = uid("comes.back@contoso.nl")
    cfg = settings(tmp_path)
    announce(cfg, "comes.back")
    # the run dies between delete and permanent delete; the customer restores the user
    transport = CrashingTransport(tenant, before_write=2)
    try:
        await run_off(tenant, cfg, transport=transport)
    except BaseException as exc:
        assert type(exc).__name__ == "Crash"
    restored = tenant.remove("deletedItems", target)
    assert restored is not None
    from agent.graph.lifecycle import original_upn

    tenant.add("users", {**{k: v for k, v in restored.items()
                            if k not in ("@odata.type", "deletedDateTime")},
                         # a restore gives the user its UPN back, as Entra does
                         "userPrincipalName": original_upn(target,
                                                           restored["userPrincipalName"])})
    attempts = write_attempts(tenant)
    report = await run_off(tenant, cfg, now=NOW + DAY)
    assert write_attempts(tenant) == attempts and done(report) == []
    assert any("restored" in w for w in report.warnings)
    # a restore is a veto for good: never deleted again, however long it stays disabled
    for later in (NOW + 60 * DAY, NOW + 200 * DAY, NOW + 400 * DAY):
        report = await run_off(tenant, cfg, now=later)
        assert done(report) == [] and write_attempts(tenant) == attempts
        assert ("delete-user", "comes.back@contoso.nl") in by_status(report, "skipped")
        assert report.summary["veto_window"] == []


async def test_enabled_after_a_cut_off_purge_is_never_purged_later(tmp_path: Path) -> None:
    tenant = small_tenant()
    add_leaver(tenant, "almost.gone", left_days_ago=130, enabled=False, revoked_days_after=1)
    target = uid("almost.gone@contoso.nl")
    cfg = settings(tmp_path)
    announce(cfg, "almost.gone")
    try:  # dies after writing its purge intent, before the DELETE
        await run_off(tenant, cfg, transport=CrashingTransport(tenant, before_write=1))
    except BaseException as exc:
        assert type(exc).__name__ == "Crash"
    tenant.get("users", target)["accountEnabled"] = True  # type: ignore[index]
    report = await run_off(tenant, cfg, now=NOW + DAY)
    assert rules(report) == {"OFF-REENABLED": {"almost.gone@contoso.nl"}}
    # later an admin deletes the (enabled) account by hand: it stays restorable
    user = tenant.remove("users", target)
    assert user is not None
    tenant.add("deletedItems", {**user, "@odata.type": "#microsoft.graph.user",
                                "deletedDateTime": b.iso(NOW + 2 * DAY)})
    report = await run_off(tenant, cfg, now=NOW + 3 * DAY)
    assert write_attempts(tenant) == 0 and done(report) == []


async def test_warns_when_leave_dates_vanish(tmp_path: Path) -> None:
    # Graph returns employeeLeaveDateTime as null when the app lacks
    # User-LifeCycleInfo.Read.All: every leaver would silently disappear
    tenant = small_tenant()
    add_leaver(tenant, "lars.laptop")
    cfg = settings(tmp_path)
    await run_off(tenant, cfg)
    for u in tenant.all("users"):
        u["employeeLeaveDateTime"] = None
    report = await run_off(tenant, cfg, now=NOW + DAY)
    assert any("User-LifeCycleInfo.Read.All" in w for w in report.warnings)
