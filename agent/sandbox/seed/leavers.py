"""Demo-tenant seed for the offboarding job: one leaver per path the job must get right.

Every object below is built for one case; `CASES` says what an enforce run of
`offboarding` on a fresh state dir (empty ledger) must make of it, and the tests assert
exactly that. Dates are relative to `now`; the demo keeps `retention_months = 3`.

The leavers hold no licences on purpose: the active-users seed owns every licensing case
and its counts must not move because of this one (licences of a real leaver stay).
Their devices are added with `seed.devices.add_clean_device`, so device-compliance
findings stay exactly its own `EXPECTED`.

The privileged leaver holds an active User Administrator assignment (in roleAssignments
and roleAssignmentScheduleInstances); the privileged-roles job sees that assignment too.
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from agent.sandbox import builders as b

if TYPE_CHECKING:
    from agent.sandbox.tenant import SandboxTenant

D = b.DOMAIN
LEAVE_GROUP = "Offboarding - vertrekkers"
LEAVE_SUBGROUP = "Offboarding - vertrekkers batch maart"  # nested in LEAVE_GROUP
PRIVILEGED_ROLE = "User Administrator"

LARS = f"lars.laptop@{D}"  # leaver with a company laptop and a personal phone
MILA = f"mila.vertrek@{D}"  # leaver with a device of unknown ownership
FINN = f"finn.toekomst@{D}"  # leaves in 20 days
PETRA = f"petra.beschermd@{D}"  # leaver in protected_users
OLAF = f"olaf.oud@{D}"  # disabled, past retention: purged
RITA = f"rita.terug@{D}"  # offboarded, then enabled again
GERT = f"gert.groepslid@{D}"  # in the leave group, no leave date
SOFIE = f"sofie.genest@{D}"  # in the nested leave group
PIM = f"pim.beheerder@{D}"  # leaver who holds a privileged role: Graph refuses the disable
HUGO = f"hugo.halfweg@{D}"  # purge cut off: already in deleted items
NINA = f"nina.wachttijd@{D}"  # disabled, two months in: nothing to do yet
VICTOR = f"victor.veto@{D}"  # disabled, purge due in 7 days: in the veto window
DIRK = f"dirk.handmatig@{D}"  # disabled by the helpdesk; sessions and laptop not done
WOUT = f"wout.wist@{D}"  # leaver whose laptop is already being wiped
ELINE = f"eline.elders@{D}"  # someone else's deletion, no leave date: left alone

DEMO_POLICY: dict[str, Any] = {
    "offboarding": {
        "mode": "report",  # the demo shows the plan; enforce with DAP_AGENT_OFFBOARDING__MODE
        "leave_group_id": b.oid(f"group:{LEAVE_GROUP}"),
        "retention_months": 3,
        "protected_users": [PETRA],
        "max_disable_per_run": 25,
        "max_purge_per_run": 10,
        "max_device_actions_per_run": 10,
        "wipe_devices": True,
        "purge_notice_days": 7,
        "purge_requires_approval": False,
    },
}


class Case(NamedTuple):
    """What an enforce run on a fresh state dir does with one user (by UPN)."""

    actions: tuple[str, ...]  # planned actions on the user itself, in order
    devices: dict[str, str]  # device name -> "wipe" | "retire" | "manual" (OFF-MANUAL-TASK)
    finding: str | None  # rule id of its finding, if any
    skipped: bool  # reported as skipped (protected)
    veto: bool  # listed in the veto window after the enforce run
    refused: tuple[str, ...] = ()  # planned actions Graph refuses (a finding, not a failure)
    not_reached: tuple[str, ...] = ()  # planned actions never made (an earlier one failed)
    why: str = ""


CASES: dict[str, Case] = {
    LARS: Case(("disable-user", "revoke-sessions"), {"LT-LARS": "wipe", "IPH-LARS": "retire"},
               None, False, False, why="leave date passed; company laptop wiped, BYOD "
               "phone retired, never wiped"),
    MILA: Case(("disable-user", "revoke-sessions"), {"AND-MILA": "retire"}, None, False, False,
               why="ownership unknown: retired, not wiped"),
    FINN: Case((), {}, None, False, False, why="leave date 20 days ahead: not yet"),
    PETRA: Case((), {}, None, True, False, why="protected_users: never touched"),
    OLAF: Case((), {}, None, False, True,
               why="disabled, leave date 4 months ago, no ledger: overdue, so announced in "
               "the veto window first; purged by a run purge_notice_days later"),
    RITA: Case((), {}, "OFF-REENABLED", False, False,
               why="sessions revoked after the leave date, account enabled: re-enabled"),
    GERT: Case(("disable-user", "revoke-sessions"), {"IPH-GERT": "manual"}, None, False, False,
               why="member of the leave group; his phone is known only through Exchange "
               "ActiveSync (managementAgent eas): no remote wipe can reach it, a person must"),
    SOFIE: Case(("disable-user", "revoke-sessions"), {}, None, False, False,
                why="member of a group nested in the leave group"),
    PIM: Case(("disable-user", "revoke-sessions"), {}, "OFF-PRIVILEGED-LEAVER", False, False,
              refused=("disable-user",), not_reached=("revoke-sessions",),
              why="Graph refuses to disable a user holding an active admin role: a finding, "
              "the run stays ok"),
    HUGO: Case((), {}, None, False, True,
               why="disabled leaver past retention found in deleted items: announced first, "
               "purge completed after the notice"),
    NINA: Case((), {}, None, False, False, why="inactive two months: purge in a month"),
    VICTOR: Case((), {}, None, False, True, why="purge due in 7 days: veto window"),
    DIRK: Case(("revoke-sessions",), {"LT-DIRK": "wipe"}, None, False, False,
               why="disabled by hand: sessions still revoked, laptop still wiped"),
    WOUT: Case(("disable-user", "revoke-sessions"), {}, None, False, False,
               why="laptop already wipePending: not wiped again"),
    ELINE: Case((), {}, None, False, False, why="deleted by someone else, not a leaver"),
}


def user_id(upn: str) -> str:
    return b.oid(f"user:{upn.lower()}")


def seed(tenant: SandboxTenant, now: datetime) -> None:
    from agent.sandbox.seed.devices import add_clean_device

    day = timedelta(days=1)

    def add(upn: str, name: str, **kw: Any) -> dict[str, Any]:
        return tenant.add("users", b.user(upn, name, created=now - 800 * day,
                                          department="Advies", **kw))

    def local(upn: str) -> str:
        return upn.split("@", 1)[0]

    # set inactive: disable, revoke, devices
    add(LARS, "Lars Laptop", leave=now - 2 * day)
    add_clean_device(tenant, "LT-LARS", now=now, owner=local(LARS))
    add_clean_device(tenant, "IPH-LARS", now=now, owner=local(LARS), os="iOS",
                     owner_type="personal", model="iPhone 14", manufacturer="Apple")
    add(MILA, "Mila Vertrek", leave=now - 10 * day)
    add_clean_device(tenant, "AND-MILA", now=now, owner=local(MILA), os="Android",
                     owner_type="unknown", model="Galaxy S23", manufacturer="Samsung")
    add(WOUT, "Wout Wist", leave=now - 5 * day)
    add_clean_device(tenant, "LT-WOUT", now=now, owner=local(WOUT),
                     managementState="wipePending",
                     deviceActionResults=[{"actionName": "wipe", "actionState": "pending",
                                           "startDateTime": b.iso(now - day),
                                           "lastUpdatedDateTime": b.iso(now - day)}])
    # not yet, and protected
    add(FINN, "Finn Toekomst", leave=now + 20 * day)
    add(PETRA, "Petra Beschermd", leave=now - 5 * day)

    # the leave group (members have no leave date), with a nested group
    add(GERT, "Gert Groepslid")
    add_clean_device(tenant, "IPH-GERT", now=now, owner=local(GERT), os="iOS",
                     managementAgent="eas", model="iPhone 13", manufacturer="Apple")
    add(SOFIE, "Sofie Genest")
    tenant.add("groups", b.group(LEAVE_SUBGROUP, members=[user_id(SOFIE)]))
    tenant.add("groups", b.group(LEAVE_GROUP, members=[user_id(GERT),
                                                       b.oid(f"group:{LEAVE_SUBGROUP}")]))

    # already inactive (disabled, sessions revoked the day after leaving)
    def inactive(upn: str, name: str, left: datetime, **kw: Any) -> dict[str, Any]:
        return add(upn, name, leave=left, enabled=False,
                   signInSessionsValidFromDateTime=b.iso(left + day), **kw)

    inactive(OLAF, "Olaf Oud", now - 125 * day)
    inactive(NINA, "Nina Wachttijd", now - 60 * day)
    # purge date = leave date + 3 calendar months, 7 days from now
    inactive(VICTOR, "Victor Veto", _months_back(now, 3) + 7 * day)
    add(PIM, "Pim Beheerder", leave=now - 3 * day)
    tenant.add("roleAssignments", b.role_assignment(user_id(PIM), PRIVILEGED_ROLE))
    tenant.add("roleAssignmentScheduleInstances",
               b.role_assignment_instance(user_id(PIM), PRIVILEGED_ROLE,
                                          start=now - 700 * day))
    # disabled by the helpdesk on the leave date, nothing else done
    add(DIRK, "Dirk Handmatig", leave=now - 3 * day, enabled=False)
    add_clean_device(tenant, "LT-DIRK", now=now, owner=local(DIRK))

    # offboarded (sessions revoked after the leave date), then enabled again
    add(RITA, "Rita Terug", leave=now - 40 * day,
        signInSessionsValidFromDateTime=b.iso(now - 39 * day))

    # deleted items: a leaver whose purge stopped halfway, and someone else's deletion
    for upn, name, leave in ((HUGO, "Hugo Halfweg", now - 140 * day),
                             (ELINE, "Eline Elders", None)):
        obj = b.user(upn, name, leave=leave, enabled=leave is None,
                     created=now - 800 * day, department="Advies")
        obj["@odata.type"] = "#microsoft.graph.user"
        obj["deletedDateTime"] = b.iso(now - 2 * day)
        tenant.add("deletedItems", obj)


def _months_back(now: datetime, months: int) -> datetime:
    """The same wall-clock moment `months` calendar months earlier (day clamped)."""
    index = now.month - 1 - months
    year, month = now.year + index // 12, index % 12 + 1
    return now.replace(year=year, month=month,
                       day=min(now.day, calendar.monthrange(year, month)[1]))
