"""Graph payload oddities: what real Graph sends now and then, through a transport that
rewrites the sandbox's list pages on their way to the agent.

- the same object twice across pages (Graph pages over a changing directory);
- missing optional properties and explicit nulls, for every object of every collection;
- enum values the agent has never heard of (Graph adds members: `unknownFutureValue`,
  new compliance and management states);
- users without a userPrincipalName.

Each job must finish (or fail with a clear Graph data error), never with an internal error,
and where the oddity matters it must not change a count or a decision silently.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.sandbox.seed import devices as device_seed
from agent.sandbox.seed import leavers
from tests.helpers_hardening import (
    JOB_IDS,
    NOW,
    FakeClock,
    MutatingTransport,
    demo_settings,
    demo_tenant,
    run_job_over,
    sandbox_transport,
)

DAY = timedelta(days=1)




def paged_tenant() -> Any:
    """The demo tenant with 1,000 more (unlicensed) users and 1,000 more clean devices, so
    /users, /devices and managedDevices each take two pages."""
    from agent.sandbox import builders as b

    tenant = demo_tenant()
    for n in range(1000):
        tenant.add("users", b.user(f"filler.{n:04d}@{b.DOMAIN}", f"Filler {n:04d}",
                                   created=NOW))
        device_seed.add_managed(tenant, f"FILL-{n:04d}", now=tenant.now)
    return tenant


Mutate = Callable[[str, int, dict[str, Any]], dict[str, Any] | bytes | None]


async def run(tmp: Path, job: str, mutate: Mutate | None = None, *, tenant: Any = None,
              **sections: Any) -> Any:
    tenant = tenant if tenant is not None else demo_tenant()
    transport: Any = sandbox_transport(tenant)
    if mutate is not None:
        transport = MutatingTransport(transport, mutate)
    settings = demo_settings(tmp, **sections)
    report, _ = await run_job_over(transport, settings, job, sleep=FakeClock())
    return report


def rules(report: Any) -> Counter[str]:
    return Counter(f.rule for f in report.findings)


def subjects(report: Any, rule: str) -> Counter[str]:
    return Counter(str(f.subject.name) for f in report.findings if f.rule == rule)


def items(body: dict[str, Any]) -> list[dict[str, Any]]:
    value = body.get("value")
    return value if isinstance(value, list) else []


# ---- the same object twice, across pages --------------------------------------------------------

class Duplicator:
    """Repeats on page 2 of `path` the first object of page 1 that `pick` accepts."""

    def __init__(self, path: str, pick: Callable[[dict[str, Any]], bool]) -> None:
        self.path, self.pick = path, pick
        self.copied: dict[str, Any] | None = None

    def __call__(self, path: str, number: int, body: dict[str, Any]) -> dict[str, Any] | None:
        if path != self.path:
            return None
        if number == 0:
            self.copied = next((copy.deepcopy(o) for o in items(body) if self.pick(o)), None)
            return None
        if number == 1 and self.copied is not None:
            body["value"].append(self.copied)
            return body
        return None


def counted_user(user: dict[str, Any]) -> bool:
    return bool(user.get("assignedLicenses")) and user.get("accountEnabled") is True \
        and user.get("userType") == "Member"


async def test_active_users_counts_a_user_listed_twice_once(tmp_path: Path) -> None:
    clean = await run(tmp_path / "clean", "active-users", tenant=paged_tenant())
    duplicate = Duplicator("/users", counted_user)
    twice = await run(tmp_path / "dup", "active-users", duplicate, tenant=paged_tenant())
    assert duplicate.copied is not None
    assert twice.status == "ok"
    for key in ("active", "e5", "exchange_only", "licensed_users"):
        assert twice.summary[key] == clean.summary[key], key
    assert twice.summary["export_sha256"] == clean.summary["export_sha256"]
    assert any("twice" in w or "duplicate" in w for w in twice.warnings), twice.warnings


async def test_offboarding_disables_a_leaver_listed_twice_once(tmp_path: Path) -> None:
    duplicate = Duplicator("/users",
                           lambda u: u.get("userPrincipalName") == leavers.LARS)
    report = await run(tmp_path, "offboarding", duplicate, tenant=paged_tenant(),
                       offboarding={"mode": "enforce"})
    assert duplicate.copied is not None
    lars_id = duplicate.copied["id"]
    assert report.status in ("ok", "partial")
    made = Counter((a.action, a.target["id"]) for a in report.actions)
    assert made[("disable-user", lars_id)] == 1, report.actions
    assert made[("revoke-sessions", lars_id)] == 1


async def test_device_compliance_with_a_device_listed_twice(tmp_path: Path) -> None:
    """Graph's own @odata.count then disagrees with the rows read: the run stops as for an
    incomplete list, or reads on with each device once; never a device counted twice."""
    clean = await run(tmp_path / "clean", "device-compliance", tenant=paged_tenant())
    duplicate = Duplicator("/deviceManagement/managedDevices",
                           lambda d: d.get("deviceName") == "LT-IVO")
    twice = await run(tmp_path / "dup", "device-compliance", duplicate, tenant=paged_tenant())
    assert duplicate.copied is not None
    if twice.status == "failed":
        assert "@odata.count" in (twice.error or "") or "twice" in (twice.error or "")
        assert list((tmp_path / "dup" / "state" / "exports").glob("devices-*.csv")) == []
    else:
        assert rules(twice) == rules(clean)
        assert subjects(twice, "DEV-NONCOMPLIANT")["LT-IVO"] == 1


async def test_privileged_roles_with_an_assignment_listed_twice(tmp_path: Path) -> None:
    path = "/roleManagement/directory/roleEligibilityScheduleInstances"
    clean = await run(tmp_path / "clean", "privileged-roles")

    def twice(p: str, number: int, body: dict[str, Any]) -> dict[str, Any] | None:
        if p != path or number != 0 or not items(body):
            return None
        body["value"] = body["value"] + copy.deepcopy(body["value"])  # every one twice
        return body

    doubled = await run(tmp_path / "dup", "privileged-roles", twice)
    assert doubled.status == "ok", doubled.error
    assert doubled.summary["global_admin_holders"] == clean.summary["global_admin_holders"]
    assert doubled.summary["eligible"] == clean.summary["eligible"], \
        "each eligible assignment counted once"
    assert rules(doubled) == rules(clean)


# ---- nulls and missing properties, everywhere ----------------------------------------------------

def blank_everything(mode: str) -> Mutate:
    """Every property but `id` (and @odata.type) of every listed object set to null, or
    removed."""

    def mutate(path: str, number: int, body: dict[str, Any]) -> dict[str, Any] | None:
        if "value" not in body:
            return None
        for obj in items(body):
            for key in list(obj):
                if key in ("id", "@odata.type"):
                    continue
                if mode == "null":
                    obj[key] = None
                else:
                    del obj[key]
        return body

    return mutate


@pytest.mark.parametrize("mode", ["null", "missing"])
@pytest.mark.parametrize("job", JOB_IDS)
async def test_null_or_missing_properties_never_crash_a_job(tmp_path: Path, job: str,
                                                            mode: str) -> None:
    """Nothing but ids: the job must finish, or fail with a Graph data error saying what it
    cannot trust; it must not die with an internal error (KeyError, TypeError ...)."""
    report = await run(tmp_path, job, blank_everything(mode), offboarding={"mode": "enforce"})
    assert report.status in ("ok", "partial", "failed"), report.status
    if report.status == "failed":  # only a Graph error may fail it (an internal one raises)
        assert report.error, "a failed run says why"
    # without accountEnabled and a leave date nobody may be deleted (leave-group members,
    # whose membership is intact, may still be disabled: that is the group's meaning)
    destructive = [a for a in report.actions if a.status == "done"
                   and a.action in ("delete-user", "purge-user", "wipe-device")]
    assert destructive == [], destructive


def drop(path: str, keys: tuple[str, ...], pick: Callable[[dict[str, Any]], bool],
         value: Any = ...) -> Mutate:
    """Remove (or set to `value`) `keys` of the objects of `path` that `pick` accepts."""

    def mutate(p: str, number: int, body: dict[str, Any]) -> dict[str, Any] | None:
        if p != path:
            return None
        for obj in items(body):
            if pick(obj):
                for key in keys:
                    if value is ...:
                        obj.pop(key, None)
                    else:
                        obj[key] = value
        return body

    return mutate


def device_named(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda d: d.get("deviceName") == name or d.get("displayName") == name


async def test_a_device_whose_compliance_state_is_missing_is_flagged(tmp_path: Path) -> None:
    report = await run(tmp_path, "device-compliance",
                       drop("/deviceManagement/managedDevices", ("complianceState",),
                            device_named("LT-ANNA")))
    assert report.status == "ok"
    assert subjects(report, "DEV-NONCOMPLIANT")["LT-ANNA"] == 1  # unknown is not compliant


async def test_a_device_whose_encryption_is_not_reported_is_not_called_encrypted(
        tmp_path: Path) -> None:
    clean = await run(tmp_path / "clean", "device-compliance")
    report = await run(tmp_path / "odd", "device-compliance",
                       drop("/deviceManagement/managedDevices", ("isEncrypted",),
                            device_named("LT-ANNA"), value=None))
    assert report.status == "ok"
    flagged = subjects(report, "DEV-NOT-ENCRYPTED")["LT-ANNA"] == 1
    warned = any("LT-ANNA" in w for w in report.warnings)
    changed = report.summary["encrypted_percent"] != clean.summary["encrypted_percent"]
    assert flagged or warned or changed, "an unknown encryption state passed as encrypted"


async def test_a_leaver_whose_account_state_is_missing_is_never_purged(tmp_path: Path) -> None:
    """accountEnabled missing on a leaver past retention: not 'disabled', so not purged."""
    report = await run(tmp_path, "offboarding",
                       drop("/users", ("accountEnabled",),
                            lambda u: u.get("userPrincipalName") == leavers.OLAF),
                       offboarding={"mode": "enforce"})
    assert report.status in ("ok", "partial")
    purged = [a for a in report.actions if a.target["name"] == leavers.OLAF
              and a.action in ("delete-user", "purge-user") and a.status == "done"]
    assert purged == []


# ---- enum values the agent does not know ---------------------------------------------------------

async def test_an_unknown_compliance_state_is_flagged(tmp_path: Path) -> None:
    report = await run(tmp_path, "device-compliance",
                       drop("/deviceManagement/managedDevices", ("complianceState",),
                            device_named("LT-ANNA"), value="unknownFutureValue"))
    assert report.status == "ok"
    assert subjects(report, "DEV-NONCOMPLIANT")["LT-ANNA"] == 1


async def test_an_unknown_owner_type_is_retired_never_wiped(tmp_path: Path) -> None:
    report = await run(tmp_path, "offboarding",
                       drop("/deviceManagement/managedDevices", ("managedDeviceOwnerType",),
                            device_named("LT-LARS"), value="unknownFutureValue"),
                       offboarding={"mode": "enforce"})
    done = {(a.action, a.target["name"]) for a in report.actions if a.status == "done"}
    assert ("retire-device", "LT-LARS") in done
    assert ("wipe-device", "LT-LARS") not in done


async def test_a_leavers_device_in_an_unknown_management_state_is_reported(
        tmp_path: Path) -> None:
    report = await run(tmp_path, "offboarding",
                       drop("/deviceManagement/managedDevices", ("managementState",),
                            device_named("LT-LARS"), value="someNewState"),
                       offboarding={"mode": "enforce"})
    assert report.status in ("ok", "partial")
    mentioned = any("LT-LARS" in w for w in report.warnings) or any(
        a.target["name"] == "LT-LARS" for a in report.actions)
    assert mentioned, "LT-LARS was neither wiped nor reported"


async def test_unknown_licence_and_user_types_are_not_counted_blindly(tmp_path: Path) -> None:
    clean = await run(tmp_path / "clean", "active-users")

    def odd(path: str, number: int, body: dict[str, Any]) -> dict[str, Any] | None:
        if path != "/users":
            return None
        changed = 0
        for user in items(body):
            if counted_user(user) and changed < 2:
                user["licenseAssignmentStates"] = [
                    {**s, "state": "unknownFutureValue"}
                    for s in user.get("licenseAssignmentStates") or []]
                user["assignedLicenses"] = []
                changed += 1
        return body

    report = await run(tmp_path / "odd", "active-users", odd)
    assert report.status == "ok"
    assert report.summary["active"] == clean.summary["active"] - 2
    assert report.summary["not_held_users"] >= clean.summary["not_held_users"] + 2


async def test_an_unknown_principal_type_in_a_role_assignment(tmp_path: Path) -> None:
    def odd(path: str, number: int, body: dict[str, Any]) -> dict[str, Any] | None:
        if not path.endswith("ScheduleInstances"):
            return None
        for instance in items(body):
            principal = instance.get("principal")
            if isinstance(principal, dict):
                principal["@odata.type"] = "#microsoft.graph.agentIdentity"
            instance["memberType"] = "unknownFutureValue"
        return body

    report = await run(tmp_path, "privileged-roles", odd)
    assert report.status == "ok", report.error
    assert report.summary["assignments"] > 0


# ---- users without a userPrincipalName -----------------------------------------------------------

@pytest.mark.parametrize("job", ["active-users", "device-compliance", "privileged-roles"])
async def test_users_without_upn(tmp_path: Path, job: str) -> None:
    """No UPN anywhere: the jobs work on ids. Only what the configuration names by UPN can
    no longer match, and the run says so."""
    clean = await run(tmp_path / "clean", job)
    report = await run(tmp_path / "odd", job,
                       drop("/users", ("userPrincipalName",), lambda u: True))
    assert report.status == clean.status, report.error
    if job == "active-users":
        by_upn = [u for u in demo_config_excluded() if "@" in u]
        assert report.summary["active"] == clean.summary["active"] + len(by_upn)
        for entry in by_upn:
            assert any(entry in w and "matches no user" in w for w in report.warnings)


def demo_config_excluded() -> list[str]:
    from agent.sandbox import DEMO_POLICY

    return list(DEMO_POLICY["active_users"]["exclude_users"])


def renamed(upn: str, new: str) -> Mutate:
    return drop("/users", ("userPrincipalName",),
                lambda u: u.get("userPrincipalName") == upn, value=new)


async def test_a_protected_leaver_whose_upn_was_renamed_is_not_silently_offboarded(
        tmp_path: Path) -> None:
    report = await run(tmp_path, "offboarding",
                       renamed(leavers.PETRA, "petra.jansen@contoso.nl"),
                       offboarding={"mode": "enforce"})
    touched = [a for a in report.actions if a.status == "done"
               and a.target["name"] == "petra.jansen@contoso.nl"]
    warned = any(leavers.PETRA in w and "no user" in w for w in report.warnings)
    assert warned, report.warnings
    assert touched == [], "protection by a UPN that no longer exists must not fail open"


def entra_deleted_upn(path: str, number: int, body: dict[str, Any]) -> dict[str, Any] | None:
    """Real Entra ID renames a soft-deleted user to `<object id without dashes><UPN>`
    (the sandbox keeps the UPN): the UPN is free for a new account meanwhile."""
    if not path.startswith("/directory/deletedItems"):
        return None
    for user in items(body):
        upn = user.get("userPrincipalName")
        if isinstance(upn, str) and "@" in upn:
            user["userPrincipalName"] = str(user["id"]).replace("-", "") + upn
    return body


async def test_a_protected_user_in_deleted_items_is_never_purged(tmp_path: Path) -> None:
    from agent.sandbox import builders as b

    tenant = demo_tenant()
    upn = f"karel.beschermd@{b.DOMAIN}"
    deleted = b.user(upn, "Karel Beschermd", leave=tenant.now - 200 * DAY, enabled=False)
    tenant.add("deletedItems", {**deleted, "@odata.type": "#microsoft.graph.user",
                                "deletedDateTime": b.iso(tenant.now - 2 * DAY)})
    protected = [leavers.PETRA, upn]
    report = await run(tmp_path, "offboarding", entra_deleted_upn, tenant=tenant,
                       offboarding={"mode": "enforce", "protected_users": protected})
    purged = [a for a in report.actions if a.action == "purge-user" and a.status == "done"
              and a.target["id"] == deleted["id"]]
    assert purged == [], "a protected user was purged"


async def test_deleted_items_with_entra_style_upns_are_still_completed(tmp_path: Path) -> None:
    """The same rename for the demo's own half-done purge: it is still completed (by id)."""
    clean = await run(tmp_path / "clean", "offboarding", offboarding={"mode": "enforce"})
    report = await run(tmp_path / "odd", "offboarding", entra_deleted_upn,
                       offboarding={"mode": "enforce"})
    done = Counter(a.action for a in report.actions if a.status == "done")
    assert done == Counter(a.action for a in clean.actions if a.status == "done")
