"""Who is due for what: pure functions of Graph's state, the ledger and the policy.

`reconcile()` first settles the intents a killed run left (did its change happen?), then
`plan()` decides per leaver. Both are pure: no I/O, the same input gives the same answer.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from agent.graph.lifecycle import DeletedUser, DirectoryUser
from agent.ledger import LeaverRecord, Ledger
from jobs.offboarding.policy import Policy

# a revoke within this margin of the inactive moment counts (clock skew between us and Graph)
CLOCK_SKEW = timedelta(minutes=5)
# a 403 for a privileged leaver is tried again after this long (the role may be gone)
REFUSAL_RETRY = timedelta(days=7)


def add_months(day: date, months: int) -> date:
    """`months` calendar months after `day`, clamped to the month's end (30 Nov + 3 = 28 Feb)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def local_date(moment: datetime, tz: ZoneInfo) -> date:
    return moment.astimezone(tz).date()


@dataclass(frozen=True)
class Protection:
    """Protected users and emergency-access accounts, matched by object id or UPN."""

    keys: frozenset[str]

    @classmethod
    def of(cls, *lists: Iterable[str]) -> Protection:
        return cls(frozenset(k.strip().lower() for entries in lists for k in entries))

    def covers(self, user_id: str, upn: str | None) -> bool:
        return bool(self.keys & _names(user_id, upn))

    def unmatched(self, users: Iterable[DirectoryUser],
                  deleted: Iterable[DeletedUser]) -> tuple[str, ...]:
        """Entries that name no user: a renamed or mistyped UPN protects nobody."""
        known: set[str] = set()
        for user in users:
            known |= _names(user.id, user.upn)
        for gone in deleted:
            known |= _names(gone.id, gone.upn)
        return tuple(sorted(self.keys - known))


def _names(user_id: str, upn: str | None) -> set[str]:
    """How a user may be named in a protection list: object id or UPN (a deleted user's
    UPN is already its original one: `lifecycle.original_upn` undoes Entra's prefix)."""
    return {user_id.lower(), (upn or user_id).lower()}


# ---- reconciling a killed run's intents ---------------------------------------------------

@dataclass(frozen=True)
class Settlement:
    """How one unsettled intent ends: a ledger event to append (`event`, `data`)."""

    user_id: str
    key: str
    event: str  # "inactive", "revoked", "deleted" (it happened) or "intent-void"
    data: dict[str, Any]
    happened: bool
    run_id: str | None  # the run that wrote the intent


def reconcile(records: Iterable[LeaverRecord], users: Sequence[DirectoryUser],
              deleted: Sequence[DeletedUser]) -> list[Settlement]:
    """Settle the disable, revoke and delete intents of killed runs against Graph.

    Device intents are settled by `devices.plan_device` (managementState shows a wipe under
    way); purge intents by the pending-purge completion (a direct read before "gone").
    """
    by_id = {u.id: u for u in users}
    gone = {d.id: d for d in deleted}
    out: list[Settlement] = []
    for record in records:
        for key, intent in sorted(record.intents.items()):
            user = by_id.get(record.user_id)
            if key == "disable":
                if user is not None and not user.enabled:
                    # the PATCH went through: the inactive period starts at the intent
                    out.append(Settlement(record.user_id, key, "inactive", {
                        "since": intent.at, "source": "disabled", "reconciled": True,
                        "upn": user.upn, "name": user.display_name,
                        "leave_date": _date_or_none(user.leave_date)}, True, intent.run_id))
                else:
                    out.append(Settlement(record.user_id, key, "intent-void", {"key": key},
                                          False, intent.run_id))
            elif key == "revoke":
                if user is not None and user.sessions_valid_from is not None \
                        and user.sessions_valid_from >= intent.at - CLOCK_SKEW:
                    out.append(Settlement(record.user_id, key, "revoked",
                                          {"source": "reconciled"}, True, intent.run_id))
                else:
                    out.append(Settlement(record.user_id, key, "intent-void", {"key": key},
                                          False, intent.run_id))
            elif key == "delete":
                if user is not None:  # still there: the delete never happened
                    out.append(Settlement(record.user_id, key, "intent-void", {"key": key},
                                          False, intent.run_id))
                elif record.user_id in gone or record.deleted_at is None:
                    # in deleted items (or not visible anywhere yet): it was deleted
                    found = gone.get(record.user_id)
                    out.append(Settlement(record.user_id, key, "deleted", {
                        "deleted_at": (found.deleted_at if found else None) or intent.at,
                        "source": "reconciled"}, True, intent.run_id))
    return out


def _date_or_none(moment: datetime | None) -> str | None:
    return moment.date().isoformat() if moment is not None else None


# ---- the plan -----------------------------------------------------------------------------

UserKind = Literal["protected", "reenabled", "restored", "set-inactive", "inactive"]


@dataclass(frozen=True)
class UserPlan:
    user: DirectoryUser
    kind: UserKind
    why: str  # why this user is a leaver
    inactive_since: datetime | None = None  # kind "inactive": the date the purge counts from
    record_inactive: str | None = None  # ledger lacks the date: record it with this source
    revoke: bool = False  # kind "inactive": sessions not yet revoked
    record_revoked: bool = False  # Graph shows them revoked, the ledger does not yet
    purge_date: date | None = None  # retention ends (the notice may put the purge later)
    purge_due: bool = False
    evidence: str = ""  # kind "reenabled": how we know it was set inactive before
    refused_on: datetime | None = None  # Graph refused this change recently (privileged)
    newly_restored: bool = False  # kind "restored": first seen restored in this run


@dataclass(frozen=True)
class DeletedPlan:
    user: DeletedUser
    protected: bool
    ours: bool  # our own purge, cut off between delete and permanent delete
    why: str
    purge_date: date | None = None
    inactive_since: datetime | None = None


@dataclass(frozen=True)
class Plan:
    users: tuple[UserPlan, ...]
    deleted: tuple[DeletedPlan, ...]
    upcoming: int  # leave date still in the future
    stale: tuple[tuple[DirectoryUser, LeaverRecord], ...]  # ledger-inactive, no longer leavers
    newly_enabled: tuple[str, ...]  # ledger-inactive users now enabled: record "reenabled"
    vanished: tuple[LeaverRecord, ...]  # our purge pending, user listed nowhere
    # protected_users / emergency-access entries that name no user: while there are any,
    # nothing at all is changed (a protection that silently matches nobody fails open)
    unmatched_protection: tuple[str, ...] = ()

    @property
    def to_disable(self) -> int:
        return sum(1 for p in self.users if p.kind == "set-inactive" and p.refused_on is None)


def leaver_reason(user: DirectoryUser, in_group: bool, now: datetime) -> str | None:
    """Why `user` is a leaver now, or None. A set leave date is *when*: a group member
    whose leave date is still ahead waits for it (set inactive on or after the leave date)."""
    if user.leave_date is not None:
        if user.leave_date <= now:
            return f"leave date {user.leave_date.date().isoformat()} has passed"
        return None
    if in_group:
        return "member of the leave group"
    return None


def plan(
    *,
    users: Sequence[DirectoryUser],
    deleted: Sequence[DeletedUser],
    group_members: frozenset[str],
    ledger: Ledger,
    protection: Protection,
    policy: Policy,
    now: datetime,
    tz: ZoneInfo,
) -> Plan:
    """Decide who is due for what. Pure: no I/O, the same input gives the same plan."""
    plans: list[UserPlan] = []
    stale: list[tuple[DirectoryUser, LeaverRecord]] = []
    newly_enabled: list[str] = []
    upcoming = 0
    for user in sorted(users, key=lambda u: (u.upn.lower(), u.id)):
        record = ledger.get(user.id)
        why = leaver_reason(user, user.id in group_members, now)
        if record is not None and (record.restored_at is not None or (
                record.deleted_at is not None and record.purged_at is None)):
            # we deleted it and someone restored it from deleted items: a veto, for good
            plans.append(UserPlan(user, "restored", why or "restored",
                                  newly_restored=record.restored_at is None))
            continue
        if record is not None and record.inactive and user.enabled:
            newly_enabled.append(user.id)  # the inactive period is over, leaver or not
        if why is None:
            if user.leave_date is not None and user.leave_date > now:
                upcoming += 1
            if record is not None and record.inactive and not user.enabled \
                    and record.purged_at is None:
                stale.append((user, record))
            continue
        if protection.covers(user.id, user.upn):
            plans.append(UserPlan(user, "protected", why))
            continue
        if user.enabled:
            evidence = _reenabled_evidence(user, record)
            if evidence:
                plans.append(UserPlan(user, "reenabled", why, evidence=evidence))
            else:
                plans.append(UserPlan(user, "set-inactive", why,
                                      refused_on=_refused(record, "disable", now)))
            continue
        plans.append(_inactive_plan(user, why, record, policy, now, tz))

    deleted_plans = _deleted_plans(deleted, ledger, protection, policy, now, tz)
    present = {u.id for u in users} | {d.id for d in deleted}
    vanished = tuple(r for r in ledger.records()
                     if r.purge_pending and r.user_id not in present)
    return Plan(
        users=tuple(plans), deleted=deleted_plans, upcoming=upcoming,
        stale=tuple(stale), newly_enabled=tuple(newly_enabled), vanished=vanished,
        unmatched_protection=protection.unmatched(users, deleted),
    )


def _refused(record: LeaverRecord | None, action: str, now: datetime) -> datetime | None:
    """When Graph last refused this change, if that is recent enough not to ask again."""
    at = record.refused.get(action) if record is not None else None
    return at if at is not None and now - at < REFUSAL_RETRY else None


def _reenabled_evidence(user: DirectoryUser, record: LeaverRecord | None) -> str:
    """How we know an enabled leaver was set inactive before ('' if we don't)."""
    if record is not None and record.inactive_since is not None:
        return (f"set inactive on {record.inactive_since.date().isoformat()} "
                "(ledger) and enabled again since")
    # No ledger entry (e.g. a new state dir): sessions revoked after the leave date mean
    # it went through offboarding already. Wrong at worst in the safe direction: an
    # account flagged for a person to look at instead of disabled by us.
    if user.leave_date is not None and user.sessions_valid_from is not None \
            and user.sessions_valid_from > user.leave_date:
        return (f"sign-in sessions revoked on {user.sessions_valid_from.date().isoformat()}, "
                "after the leave date, and the account is enabled")
    return ""


def _inactive_plan(user: DirectoryUser, why: str, record: LeaverRecord | None,
                   policy: Policy, now: datetime, tz: ZoneInfo) -> UserPlan:
    """A disabled leaver: since when it is inactive, whether its sessions still need
    revoking, and whether its retention has ended."""
    source: str | None = None
    if record is not None and record.inactive and record.inactive_since is not None:
        since = record.inactive_since
    elif record is not None and record.reenabled_at is not None:
        # enabled again after we set it inactive, now disabled again by someone: a new
        # inactive period that starts now, not back at the old leave date
        since, source = now, "observed"
    elif user.leave_date is not None:
        # found disabled with no intent of ours: the spec's fallback (and the notice rule
        # keeps such a purge from happening on first sight)
        since, source = user.leave_date, "leave-date"
    else:
        since, source = now, "observed"  # a group member found disabled: count from now
    in_ledger = record is not None and record.inactive and record.revoked_at is not None
    # revokeSignInSessions moves signInSessionsValidFromDateTime: a revoke whose answer
    # was lost in a crash shows here, so it is not sent twice
    in_graph = user.sessions_valid_from is not None \
        and user.sessions_valid_from >= since - CLOCK_SKEW
    purge_date = add_months(local_date(since, tz), policy.retention_months)
    return UserPlan(user, "inactive", why, inactive_since=since, record_inactive=source,
                    revoke=not (in_ledger or in_graph),
                    record_revoked=in_graph and not in_ledger, purge_date=purge_date,
                    purge_due=purge_date <= local_date(now, tz),
                    refused_on=_refused(record, "delete", now))


def _deleted_plans(deleted: Sequence[DeletedUser], ledger: Ledger, protection: Protection,
                   policy: Policy, now: datetime, tz: ZoneInfo) -> tuple[DeletedPlan, ...]:
    """Users in deleted items to remove for good: our own cut-off purges, and leavers whose
    purge date has passed and who were disabled when deleted (a purge made half by hand).
    Anything else in deleted items is someone else's and stays restorable."""
    plans: list[DeletedPlan] = []
    for user in sorted(deleted, key=lambda d: (d.upn.lower(), d.id)):
        record = ledger.get(user.id)
        protected = protection.covers(user.id, user.upn) or (
            record is not None and protection.covers(user.id, record.upn))
        if record is not None and record.restored_at is not None:
            continue  # restored once (a veto), deleted again by someone: theirs, not ours
        if record is not None and (record.purge_pending or record.purged_at is not None):
            plans.append(DeletedPlan(user, protected, True,
                                     "purge started by this agent: deleted, not yet purged"))
            continue
        if user.enabled is not False or user.leave_date is None or user.leave_date > now:
            continue
        since = record.inactive_since if record is not None and record.inactive \
            and record.inactive_since is not None else user.leave_date
        purge_date = add_months(local_date(since, tz), policy.retention_months)
        if purge_date <= local_date(now, tz):
            plans.append(DeletedPlan(
                user, protected, False,
                f"disabled leaver in deleted items; retention ended {purge_date.isoformat()}",
                purge_date=purge_date, inactive_since=since))
    return tuple(plans)
