"""Issue #11, end to end on the sandbox: one gate, device actions that fit, notice, veto,
approval, replication lag, crash after a disable, "gone" only on evidence, the state-dir lock.

Each test names the finding of the issue it reproduces; the request log proves which
mutations reached Graph.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import decisions
from agent.decisions import Decision
from agent.errors import LockBusyError
from agent.lock import job_lock, lock_path
from agent.sandbox.tenant import SandboxTenant
from tests.helpers_offboarding import (
    DAY,
    NOW,
    Crash,
    CrashingTransport,
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
    writes,
)

D = "contoso.nl"


def mutations(tenant: SandboxTenant) -> list[tuple[str, str]]:
    """Every write request that reached the sandbox (whatever its answer)."""
    return [(r.method, r.path) for r in tenant.requests if r.method != "GET"]


def handmade_leaver(tenant: SandboxTenant) -> dict[str, object]:
    """Disabled by the helpdesk on the leave date; sessions and laptop not done yet."""
    dirk = add_leaver(tenant, "dirk.handmatig", left_days_ago=3, enabled=False)
    add_device(tenant, "LT-DIRK", dirk)
    return dirk


# ---- finding 1: wipes ignore the brakes --------------------------------------------------

async def test_fail_closed_protection_stops_every_change_also_wipes(tmp_path: Path) -> None:
    tenant = small_tenant()
    handmade_leaver(tenant)
    add_leaver(tenant, "new.leaver")
    add_leaver(tenant, "old.gone", left_days_ago=130, enabled=False, revoked_days_after=1)
    cfg = settings(tmp_path, protected_users=["nobody.here@contoso.nl"])
    announce(cfg, "old.gone")
    report = await run_off(tenant, cfg)
    assert mutations(tenant) == []
    assert report.summary["fail_closed"] is True
    skipped = by_status(report, "skipped")
    assert {("revoke-sessions", f"dirk.handmatig@{D}"), ("wipe-device", "LT-DIRK"),
            ("disable-user", f"new.leaver@{D}"), ("delete-user", f"old.gone@{D}")} <= skipped
    assert any("nobody.here@contoso.nl" in w for w in report.warnings)


async def test_disable_limit_also_stops_revoke_and_wipe_of_those_leavers(
        tmp_path: Path) -> None:
    tenant = small_tenant()
    for n in range(3):
        leaver = add_leaver(tenant, f"leaver.{n}")
        add_device(tenant, f"LT-{n}", leaver)
    handmade_leaver(tenant)  # already disabled: not stopped by the disable limit
    report = await run_off(tenant, settings(tmp_path, max_disable_per_run=2))
    assert rules(report) == {"OFF-LIMIT-REACHED": {"max_disable_per_run"}}
    sent = mutations(tenant)
    for n in range(3):
        assert not any(uid(f"leaver.{n}@{D}") in p or did(f"LT-{n}") in p for _, p in sent)
    assert set(done(report)) == {("revoke-sessions", f"dirk.handmatig@{D}"),
                                 ("wipe-device", "LT-DIRK")}


async def test_device_action_limit_stops_every_wipe_and_retire(tmp_path: Path) -> None:
    tenant = small_tenant()
    lars = add_leaver(tenant, "lars.laptop")
    add_device(tenant, "LT-LARS", lars)
    add_device(tenant, "IPH-LARS", lars, owner_type="personal")
    report = await run_off(tenant, settings(tmp_path, max_device_actions_per_run=1))
    assert rules(report) == {"OFF-LIMIT-REACHED": {"max_device_actions_per_run"}}
    assert not any(p.startswith("/deviceManagement") for _, p in mutations(tenant))
    assert {a for a, _ in done(report)} == {"disable-user", "revoke-sessions"}
    assert {("wipe-device", "LT-LARS"), ("retire-device", "IPH-LARS")} <= \
        by_status(report, "skipped")
    # at the limit it goes ahead
    report = await run_off(tenant, settings(tmp_path, max_device_actions_per_run=2),
                           now=NOW + DAY)
    assert {a for a, _ in done(report)} == {"wipe-device", "retire-device"}


# ---- finding 2: device actions that fit the device ---------------------------------------

async def test_linux_cloud_pc_and_non_mdm_get_no_remote_action(tmp_path: Path) -> None:
    tenant = small_tenant()
    mila = add_leaver(tenant, "mila.vertrek")
    add_device(tenant, "LNX-MILA", mila, os="Linux")
    add_device(tenant, "CPC-MILA", mila, model="Cloud PC Enterprise 2vCPU/8GB/128GB")
    add_device(tenant, "EAS-MILA", mila, os="iOS", managementAgent="eas")
    add_device(tenant, "LT-MILA", mila)
    cfg = settings(tmp_path)
    report = await run_off(tenant, cfg)
    assert report.status == "ok"
    device_writes = [p for _, p in mutations(tenant) if p.startswith("/deviceManagement")]
    assert device_writes == [f"/deviceManagement/managedDevices/{did('LT-MILA')}/wipe"]
    manual = {f.subject.name: f.detail for f in report.findings if f.rule == "OFF-MANUAL-TASK"}
    assert set(manual) == {"LNX-MILA", "EAS-MILA"}
    assert "Linux" in manual["LNX-MILA"] and "'eas'" in manual["EAS-MILA"]
    assert ("wipe-device", "CPC-MILA") in by_status(report, "skipped")
    # the leaver is not stuck: nothing failed, and the purge follows in due time
    announce(cfg, "mila.vertrek", now=NOW + 92 * DAY)
    later = await run_off(tenant, cfg, now=NOW + 92 * DAY)
    assert ("purge-user", f"mila.vertrek@{D}") in done(later)


# ---- finding 5: notice, veto -------------------------------------------------------------

async def test_overdue_purge_first_seen_is_announced_not_made(tmp_path: Path) -> None:
    tenant = small_tenant()
    add_leaver(tenant, "olaf.oud", left_days_ago=125, enabled=False, revoked_days_after=1)
    cfg = settings(tmp_path)
    report = await run_off(tenant, cfg)
    assert mutations(tenant) == []
    [entry] = report.summary["veto_window"]
    assert entry["user_principal_name"] == f"olaf.oud@{D}"
    assert entry["announced_on"] == "2026-03-18" and entry["purge_date"] == "2026-03-25"
    audit = [e for e in (cfg.state_dir / "audit.jsonl").read_text().splitlines()
             if '"purge-announced"' in e]
    assert len(audit) == 1
    # within the notice: still nothing; after it: purged
    assert done(await run_off(tenant, cfg, now=NOW + 6 * DAY)) == []
    report = await run_off(tenant, cfg, now=NOW + 7 * DAY)
    assert done(report) == [("delete-user", f"olaf.oud@{D}"), ("purge-user", f"olaf.oud@{D}")]


async def test_veto_stops_delete_and_purge_until_lifted(tmp_path: Path) -> None:
    tenant = small_tenant()
    add_leaver(tenant, "victor.veto", left_days_ago=125, enabled=False, revoked_days_after=1)
    cfg = settings(tmp_path)
    announce(cfg, "victor.veto")
    decisions.append(cfg.state_dir, Decision(
        ts="2026-03-17T10:00:00Z", kind="veto", user_id=uid(f"victor.veto@{D}"),
        user_principal_name=f"victor.veto@{D}", by="J. Jansen", reason="legal hold",
        until="2026-04-01"))
    report = await run_off(tenant, cfg)
    assert mutations(tenant) == []
    assert rules(report) == {"OFF-VETOED": {f"victor.veto@{D}"}}
    [entry] = report.summary["veto_window"]
    assert entry["vetoed"] is True and entry["veto_until"] == "2026-04-01"
    # --until ends it on that day
    report = await run_off(tenant, cfg, now=NOW + 14 * DAY)  # 1 April
    assert ("purge-user", f"victor.veto@{D}") in done(report)


async def test_lift_ends_a_veto_now(tmp_path: Path) -> None:
    tenant = small_tenant()
    add_leaver(tenant, "victor.veto", left_days_ago=125, enabled=False, revoked_days_after=1)
    cfg = settings(tmp_path)
    announce(cfg, "victor.veto")
    user_id = uid(f"victor.veto@{D}")
    for kind in ("veto", "lift"):
        decisions.append(cfg.state_dir, Decision(
            ts="2026-03-17T10:00:00Z", kind=kind, user_id=user_id,  # type: ignore[arg-type]
            user_principal_name=None, by="J. Jansen", reason="checked"))
    assert ("purge-user", f"victor.veto@{D}") in done(await run_off(tenant, cfg))


# ---- finding 6: approval -----------------------------------------------------------------

async def test_purge_requires_an_approval_after_the_announcement(tmp_path: Path) -> None:
    tenant = small_tenant()
    add_leaver(tenant, "olaf.oud", left_days_ago=125, enabled=False, revoked_days_after=1)
    cfg = settings(tmp_path, purge_requires_approval=True)
    user_id = uid(f"olaf.oud@{D}")
    # an approval given before the announcement does not count
    decisions.append(cfg.state_dir, Decision(
        ts="2026-03-01T10:00:00Z", kind="approve", user_id=user_id,
        user_principal_name=f"olaf.oud@{D}", by="J. Jansen", reason=None))
    announce(cfg, "olaf.oud")
    report = await run_off(tenant, cfg)
    assert mutations(tenant) == []
    assert report.summary["veto_window"][0]["approved"] is False
    decisions.append(cfg.state_dir, Decision(
        ts="2026-03-18T10:00:00Z", kind="approve", user_id=user_id,
        user_principal_name=f"olaf.oud@{D}", by="J. Jansen", reason=None))
    report = await run_off(tenant, cfg, now=NOW + DAY)
    assert ("purge-user", f"olaf.oud@{D}") in done(report)


# ---- finding 4: replication lag ----------------------------------------------------------

@pytest.mark.parametrize("lag", [2, 50])
async def test_purge_survives_replication_lag(tmp_path: Path, lag: int) -> None:
    tenant = small_tenant()
    add_leaver(tenant, "olaf.oud", left_days_ago=125, enabled=False, revoked_days_after=1)
    tenant.faults.deleted_lag_requests = lag
    cfg = settings(tmp_path)
    announce(cfg, "olaf.oud")
    report = await run_off(tenant, cfg)
    record = ledger_of(cfg).get(uid(f"olaf.oud@{D}"))
    assert record is not None and record.deleted_at is not None
    in_deleted = tenant.get("deletedItems", uid(f"olaf.oud@{D}")) is not None
    # "purged" only with evidence: never while the user still sits in deleted items
    assert (record.purged_at is not None) == (not in_deleted)
    if lag == 2:  # visible within the bounded backoff: purged in this run
        assert ("purge-user", f"olaf.oud@{D}") in done(report)
    else:  # still invisible: purge pending, the next run finishes it
        assert record.purge_pending and ("purge-user", f"olaf.oud@{D}") in \
            by_status(report, "skipped")
        tenant.replicating.clear()
        report = await run_off(tenant, cfg, now=NOW + DAY)
        assert done(report) == [("purge-user", f"olaf.oud@{D}")]
        assert tenant.get("deletedItems", uid(f"olaf.oud@{D}")) is None
    assert sum(n for (m, _), n in writes(tenant).items() if m == "DELETE") == 2


# ---- finding 8: a crash right after a disable --------------------------------------------

async def test_crash_after_disable_does_not_purge_on_the_next_run(tmp_path: Path) -> None:
    tenant = small_tenant()
    # leave date long past: without the intent, retention would count from it
    add_leaver(tenant, "finn.toekomst", left_days_ago=200)
    cfg = settings(tmp_path)
    with pytest.raises(Crash):
        await run_off(tenant, cfg, transport=CrashingTransport(tenant, after_write=1))
    assert tenant.get("users", uid(f"finn.toekomst@{D}"))["accountEnabled"] is False  # type: ignore[index]
    report = await run_off(tenant, cfg, now=NOW + DAY / 24)
    assert not any(a in ("delete-user", "purge-user") for a, _ in done(report))
    record = ledger_of(cfg).get(uid(f"finn.toekomst@{D}"))
    assert record is not None and record.inactive_since == NOW  # the intent's date
    assert report.summary["reconciled"][0]["outcome"] == "happened"
    assert report.summary["veto_window"] == []  # purge in three months, not today
    assert writes(tenant)[("PATCH", f"/users/{uid(f'finn.toekomst@{D}')}")] == 1


# ---- finding 10: the lock cannot be deleted from under a run ------------------------------

def test_deleting_the_lock_file_does_not_let_a_second_run_in(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    with job_lock(state, "offboarding", wait=False, tenant_changes=True):
        lock_path(state, "offboarding").unlink()
        with pytest.raises(LockBusyError), \
                job_lock(state, "offboarding", wait=False, tenant_changes=True):
            pass
    with job_lock(state, "offboarding", wait=False, tenant_changes=True):
        pass  # free again once the first run ends


# ---- finding 11: "gone" needs evidence ---------------------------------------------------

async def test_user_missing_from_a_list_is_not_recorded_purged(tmp_path: Path) -> None:
    tenant = small_tenant()
    add_leaver(tenant, "olaf.oud", left_days_ago=125, enabled=False, revoked_days_after=1)
    tenant.faults.deleted_lag_requests = 1000  # our delete is not visible for a long time
    cfg = settings(tmp_path)
    announce(cfg, "olaf.oud")
    await run_off(tenant, cfg)
    # the next run's deleted-items list misses the user (lag, a lost page): a direct
    # read is what counts, and it finds the user: not "found gone"
    tenant.faults.deleted_lag_requests = 0
    tenant.replicating.clear()
    obj = tenant.get("deletedItems", uid(f"olaf.oud@{D}"))
    assert obj is not None

    def hide_from_lists(request: object) -> None:
        path = getattr(request, "url").path  # noqa: B009
        tenant.replicating.pop(uid(f"olaf.oud@{D}"), None)
        if path.endswith("/deletedItems/microsoft.graph.user"):
            tenant.replicating[uid(f"olaf.oud@{D}")] = 1  # invisible to this one request

    report = await run_off(tenant, cfg, now=NOW + DAY,
                           transport=CrashingTransport(tenant, on_request=hide_from_lists))
    record = ledger_of(cfg).get(uid(f"olaf.oud@{D}"))
    # the direct read found it in deleted items, and the purge was made with a 204
    assert record is not None and record.purge_source == "purged"
    assert ("purge-user", f"olaf.oud@{D}") in done(report)
    assert tenant.get("deletedItems", uid(f"olaf.oud@{D}")) is None


# ---- crash between the announcement's audit entry and its ledger line --------------------

async def test_crash_while_announcing_announces_again_and_purges_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.ledger import Ledger

    tenant = small_tenant()
    add_leaver(tenant, "olaf.oud", left_days_ago=125, enabled=False, revoked_days_after=1)
    cfg = settings(tmp_path)
    real = Ledger.record

    def dies_on_announce(self: Ledger, event: str, *args: object, **kw: object) -> None:
        if event == "announced":
            raise Crash("killed after the audit entry, before the ledger line")
        real(self, event, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Ledger, "record", dies_on_announce)
    with pytest.raises(Crash):
        await run_off(tenant, cfg)
    monkeypatch.setattr(Ledger, "record", real)
    assert mutations(tenant) == []
    report = await run_off(tenant, cfg, now=NOW + DAY)  # announced again, from this day
    assert mutations(tenant) == [] and report.summary["announced"] == 1
    assert done(await run_off(tenant, cfg, now=NOW + 7 * DAY)) == []  # notice from day 1
    report = await run_off(tenant, cfg, now=NOW + 8 * DAY)
    assert done(report) == [("delete-user", f"olaf.oud@{D}"), ("purge-user", f"olaf.oud@{D}")]
    assert sum(writes(tenant).values()) == 2
    announced = [line for line in (cfg.state_dir / "audit.jsonl").read_text().splitlines()
                 if '"purge-announced"' in line]
    assert len(announced) == 2
