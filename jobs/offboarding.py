"""Job `offboarding`: disable leavers, wipe/retire their devices, purge them after retention.

DAP 3.13.3, 3.2.1, 3.2.2, 3.3 (dap-rules.md §2). Safety before completeness:
- report mode by default, `--dry-run` always: every change is planned and audited, none made;
- protected users and the declared emergency-access accounts are never touched;
- a run that would disable (or purge) more accounts than its limit makes no change of that
  kind at all (`OFF-LIMIT-REACHED`): a wrong signal must not take down the tenant;
- the purge date comes from the ledger's inactive date (else the leave date) and a purge
  only happens while the account is still disabled, re-checked right before the delete;
- a leaver we set inactive that is enabled again is never re-disabled nor purged
  (`OFF-REENABLED`): enabling an account is how the customer vetoes a purge;
- re-runs are idempotent: each step checks Graph's state and the ledger before acting,
  so a run cut off anywhere is completed, not repeated, by the next one.

Flow: read (users, leave group, deleted items) -> `plan()` (pure: who is due for what) ->
for each leaver: disable, revoke sessions, wipe/retire devices, purge -> deleted items
completions -> summary with the veto window -> the month's deleted-accounts overview.
"""

from __future__ import annotations

import calendar
import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator

from agent.errors import ConfigError, GraphError, GraphNotFoundError, GraphUnavailableError
from agent.files import write_atomic
from agent.graph import lifecycle
from agent.graph.lifecycle import (
    ChangeRefused,
    DeletedUser,
    DirectoryUser,
    ManagedDevice,
)
from agent.job import Accounts, ChangingJobPolicy, JobContext, JobSpec
from agent.ledger import LeaverRecord, Ledger
from agent.run import Subject

VETO_DAYS = 14
# a revoke within this margin of the inactive moment counts (clock skew between us and Graph)
CLOCK_SKEW = timedelta(minutes=5)
LEDGER_FILE = "offboarding-ledger.jsonl"
GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
# managementState values in which a wipe/retire may be sent
ACTIONABLE_STATES = frozenset({"managed", "unhealthy"})
FAILED_STATES = frozenset({"wipeFailed", "wipeCanceled", "retireFailed", "retireCanceled"})
IDLE_STATES = frozenset({"deletePending", "discovered"})
CSV_COLUMNS = ("user_id", "user_principal_name", "display_name", "leave_date",
               "inactive_since", "deleted_at", "purged_at", "delete_run_id", "purge_run_id",
               "delete_request_id", "purge_request_id", "source")


class Policy(ChangingJobPolicy):
    schedule: str = "0 6 * * *"
    leave_group_id: str = ""
    retention_months: int = Field(default=3, ge=1, le=120)
    protected_users: Accounts = Field(default_factory=list)
    max_disable_per_run: int = Field(default=25, ge=0)
    max_purge_per_run: int = Field(default=10, ge=0)
    wipe_devices: bool = True

    @field_validator("leave_group_id")
    @classmethod
    def _group_id(cls, value: str) -> str:
        value = value.strip()
        if value and not GUID.match(value):
            raise ValueError("must be the group's object id (a GUID) or empty")
        return value


# ---- pure planning -----------------------------------------------------------------------

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
    purge_date: date | None = None
    purge_due: bool = False
    evidence: str = ""  # kind "reenabled": how we know it was set inactive before


@dataclass(frozen=True)
class DeletedPlan:
    user: DeletedUser
    protected: bool
    ours: bool  # our own purge, cut off between delete and permanent delete
    why: str


@dataclass(frozen=True)
class Plan:
    users: tuple[UserPlan, ...]
    deleted: tuple[DeletedPlan, ...]
    disable_blocked: bool
    purge_blocked: bool
    to_disable: int
    to_purge: int
    upcoming: int  # leave date still in the future
    stale: tuple[tuple[DirectoryUser, LeaverRecord], ...]  # ledger-inactive, no longer leavers
    newly_enabled: tuple[str, ...]  # ledger-inactive users now enabled: record "reenabled"
    vanished: tuple[LeaverRecord, ...]  # our purge pending, user gone everywhere
    # protected_users / emergency-access entries that name no user: while there are any,
    # nothing is disabled or purged (a protection that silently matches nobody fails open)
    unmatched_protection: tuple[str, ...] = ()


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
        if record is not None and record.deleted_at is not None and record.purged_at is None:
            # we deleted it and someone restored it from deleted items: a veto
            plans.append(UserPlan(user, "restored", why or "restored"))
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
                plans.append(UserPlan(user, "set-inactive", why))
            continue
        plans.append(_inactive_plan(user, why, record, policy, now, tz))

    deleted_plans = _deleted_plans(deleted, ledger, protection, policy, now, tz)
    present = {u.id for u in users} | {d.id for d in deleted}
    vanished = tuple(r for r in ledger.records()
                     if r.purge_pending and r.user_id not in present)

    to_disable = sum(1 for p in plans if p.kind == "set-inactive")
    to_purge = sum(1 for p in plans if p.kind == "inactive" and p.purge_due) \
        + sum(1 for d in deleted_plans if not d.protected and not d.ours)
    unmatched = protection.unmatched(users, deleted)
    return Plan(
        users=tuple(plans), deleted=deleted_plans,
        disable_blocked=to_disable > policy.max_disable_per_run or bool(unmatched),
        purge_blocked=to_purge > policy.max_purge_per_run or bool(unmatched),
        to_disable=to_disable, to_purge=to_purge, upcoming=upcoming,
        stale=tuple(stale), newly_enabled=tuple(newly_enabled), vanished=vanished,
        unmatched_protection=unmatched,
    )


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
    revoking, and whether its purge is due."""
    source: str | None = None
    if record is not None and record.inactive and record.inactive_since is not None:
        since = record.inactive_since
    elif record is not None and record.reenabled_at is not None:
        # enabled again after we set it inactive, now disabled again by someone: a new
        # inactive period that starts now, not back at the old leave date
        since, source = now, "observed"
    elif user.leave_date is not None:
        since, source = user.leave_date, "leave-date"  # the spec's fallback
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
                    purge_due=purge_date <= local_date(now, tz))


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
                f"disabled leaver in deleted items; retention ended {purge_date.isoformat()}"))
    return tuple(plans)


DeviceAction = Literal["wipe", "retire"]


@dataclass(frozen=True)
class DeviceStep:
    device: ManagedDevice
    action: DeviceAction | None  # None: nothing to send
    observed: str | None = None  # already wiping/retiring: record it in the ledger only
    warning: str | None = None


def plan_device(device: ManagedDevice, record: LeaverRecord | None) -> DeviceStep:
    """What to do with one managed device of a leaver. Each device is actioned once:
    the ledger says we sent it; managementState says a wipe/retire is already under way."""
    done = record.devices.get(device.id) if record is not None else None
    state = device.management_state
    if done is not None:
        warning = None
        if state in FAILED_STATES:
            warning = (f"device {device.name}: the {done.action} sent on "
                       f"{done.at.date().isoformat()} is now {state}; not sent again "
                       "automatically: check it in Intune")
        return DeviceStep(device, None, warning=warning)
    if state in lifecycle.WIPING or "wipe" in device.actions_in_progress:
        return DeviceStep(device, None, observed="wipe")
    if state in lifecycle.RETIRING or "retire" in device.actions_in_progress:
        return DeviceStep(device, None, observed="retire")
    if state in FAILED_STATES:
        return DeviceStep(device, None, warning=(
            f"device {device.name}: managementState {state} (a wipe/retire by someone else "
            "failed or was cancelled); not sent automatically: check it in Intune"))
    if state in IDLE_STATES:
        return DeviceStep(device, None)  # deletePending, discovered: nothing to send
    if state not in ACTIONABLE_STATES:
        return DeviceStep(device, None, warning=(
            f"device {device.name}: managementState {state!r} is unknown to this agent; "
            "not wiped or retired: check it in Intune"))
    # Never wipe what is not known to be the company's: unknown ownership is retired.
    return DeviceStep(device, "wipe" if device.owner_type == "company" else "retire")


# ---- the run -----------------------------------------------------------------------------

@dataclass
class _Tally:
    failed_users: set[str] = field(default_factory=set)  # a step failed: no purge this run
    purged_ids: set[str] = field(default_factory=set)


class _Job:
    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.policy: Policy = ctx.policy
        self.run = ctx.run
        self.now = ctx.now
        self.ledger = Ledger.open(ctx.state_dir / LEDGER_FILE, write=not ctx.dry_run)
        self.devices_by_user: dict[str, list[ManagedDevice]] | None = None
        self.tally = _Tally()
        self.group_members: frozenset[str] = frozenset()

    def note(self, event: str, user_id: str, **data: Any) -> None:
        self.ledger.record(event, user_id, at=self.now, run_id=self.run.run_id, **data)

    async def execute(self) -> None:
        ctx, policy = self.ctx, self.policy
        if self.ledger.discarded_tail:
            self.run.warn("the offboarding ledger's last line was cut off (a crash while "
                          "writing it); that step is re-checked against Graph")
        users = await lifecycle.list_users(ctx.graph)
        if policy.leave_group_id:
            try:
                self.group_members = await lifecycle.group_user_ids(ctx.graph,
                                                                   policy.leave_group_id)
            except GraphNotFoundError:
                raise ConfigError([f"offboarding.leave_group_id: no group with id "
                                   f"{policy.leave_group_id} in the tenant"]) from None
        deleted = await lifecycle.deleted_users(ctx.graph)
        protection = Protection.of(policy.protected_users,
                                   ctx.settings.privileged_roles.emergency_access_accounts)
        the_plan = plan(users=users, deleted=deleted, group_members=self.group_members,
                        ledger=self.ledger, protection=protection, policy=policy,
                        now=self.now, tz=ctx.tz)
        self._check_signal(users)
        self._observe(the_plan)
        self._limits(the_plan)

        if policy.wipe_devices and any(
                p.kind == "inactive" or (p.kind == "set-inactive" and not the_plan.disable_blocked)
                for p in the_plan.users):
            self.devices_by_user = {}
            for device in await lifecycle.managed_devices(ctx.graph):
                if device.user_id:
                    self.devices_by_user.setdefault(device.user_id, []).append(device)

        for user_plan in the_plan.users:
            if user_plan.kind == "protected":
                self._protected(user_plan)
            elif user_plan.kind == "reenabled":
                self._reenabled(user_plan.user, user_plan.evidence)
            elif user_plan.kind == "restored":
                self._restored(user_plan.user)
            elif user_plan.kind == "set-inactive":
                if not the_plan.disable_blocked:
                    await self._set_inactive(user_plan)
            else:
                await self._inactive(user_plan, the_plan.purge_blocked)
        for deleted_plan in the_plan.deleted:
            await self._complete(deleted_plan, the_plan.purge_blocked)
        for record in the_plan.vanished:
            # deleted, then gone from deleted items: the previous run was cut off after
            # its permanent delete (or someone else purged it). Done; said so in the audit.
            self.note("purged", record.user_id, source="found gone", already_gone=True)
            self.tally.purged_ids.add(record.user_id)
            self.run.skip("purge-user", Subject("user", record.user_id, record.upn),
                          "already purged: gone from users and deleted items (a run cut off "
                          "after its permanent delete, or purged by someone else)")
        self._summary(the_plan)
        if not ctx.dry_run:  # a dry run writes nothing but its report and audit entries
            self._export()

    # ---- observations, limits ----------------------------------------------------------

    def _check_signal(self, users: Sequence[DirectoryUser]) -> None:
        if any(u.leave_date is not None for u in users):
            return
        known = {r.user_id for r in self.ledger.records() if r.leave_date}
        if known & {u.id for u in users}:
            self.run.warn("no user has an employeeLeaveDateTime, but the ledger knows "
                          "leavers that had one: Graph returns it as null when the app lacks "
                          "User-LifeCycleInfo.Read.All; check the app's permissions")

    def _observe(self, the_plan: Plan) -> None:
        for user_id in the_plan.newly_enabled:
            record = self.ledger.get(user_id)
            if record is not None and record.purge_pending:  # a veto: no half purge left
                self.note("purge-failed", user_id, error="enabled again")
            self.note("reenabled", user_id)
        for user, record in the_plan.stale:
            self.run.warn(f"{user.upn} was set inactive on "
                          f"{(record.inactive_since or self.now).date().isoformat()} but is no "
                          "longer a leaver (leave date cleared or moved, or left the leave "
                          "group): left disabled, not purged")

    def _limits(self, the_plan: Plan) -> None:
        policy = self.policy
        if the_plan.unmatched_protection:
            for entry in the_plan.unmatched_protection:
                self.run.warn(f"protection entry {entry!r} (protected_users or "
                              "emergency_access_accounts) matches no user in the tenant: "
                              "renamed or mistyped? No account is disabled or purged until "
                              "every entry names a user")
            for p in the_plan.users:
                if p.kind == "set-inactive" or (p.kind == "inactive" and p.purge_due):
                    self.run.skip("disable-user" if p.kind == "set-inactive" else "delete-user",
                                  _subject(p.user), "a protection entry matches no user")
            return
        if the_plan.disable_blocked:
            self.run.finding(
                "OFF-LIMIT-REACHED", "high",
                Subject("policy", "offboarding.max_disable_per_run", "max_disable_per_run"),
                f"{the_plan.to_disable} leavers would be disabled, more than "
                f"max_disable_per_run = {policy.max_disable_per_run}: no account was disabled "
                "in this run. Check the leave dates / leave group; raise the limit if right.")
            for p in the_plan.users:
                if p.kind == "set-inactive":
                    self.run.skip("disable-user", _subject(p.user),
                                  f"safety limit: {the_plan.to_disable} to disable > "
                                  f"max_disable_per_run {policy.max_disable_per_run}")
        if the_plan.purge_blocked:
            self.run.finding(
                "OFF-LIMIT-REACHED", "high",
                Subject("policy", "offboarding.max_purge_per_run", "max_purge_per_run"),
                f"{the_plan.to_purge} accounts are due for purging, more than "
                f"max_purge_per_run = {policy.max_purge_per_run}: none was purged in this "
                "run. Check the list; raise the limit if right.")

    # ---- one leaver --------------------------------------------------------------------

    def _protected(self, p: UserPlan) -> None:
        action = "disable-user" if p.user.enabled else "delete-user"
        self.run.skip(action, _subject(p.user),
                      f"protected ({p.why}): protected_users or emergency-access account; "
                      "never changed by this job")

    def _restored(self, user: DirectoryUser) -> None:
        # the customer's veto: this purge is off, and a new retention period starts today
        self.note("purge-failed", user.id, error="restored from deleted items")
        self.note("inactive", user.id, since=self.now, source="restored", upn=user.upn,
                  name=user.display_name)
        self.run.warn(f"{user.upn} was restored from deleted items after this job deleted "
                      "it: its purge is called off; a new retention period starts today")

    def _reenabled(self, user: DirectoryUser, evidence: str) -> None:
        self.run.finding(
            "OFF-REENABLED", "high", _subject(user),
            f"account of a leaver is enabled again: {evidence}. It is not disabled again "
            "nor purged by this job; disable it to resume offboarding, or clear its leave "
            "date.")

    async def _set_inactive(self, p: UserPlan) -> None:
        user = p.user
        with self.run.change("disable-user", _subject(user),
                             f"leaver ({p.why}): set inactive; licences kept",
                             before={"accountEnabled": True}) as ch:
            if ch.execute:
                try:
                    result = await lifecycle.disable_user(self.ctx.graph, user.id)
                except ChangeRefused as exc:
                    self._refused(user, exc)
                    raise
                self.note("inactive", user.id, since=self.now, source="disabled",
                          request_id=result.request_id, upn=user.upn,
                          name=user.display_name, leave_date=_date_or_none(user.leave_date))
                ch.done(request_id=result.request_id, after={"accountEnabled": False})
        if not ch.ok and ch.execute:
            self.tally.failed_users.add(user.id)
            return  # not disabled: no revoke, no devices
        await self._revoke(user, since=self.now)
        await self._devices(user)

    async def _inactive(self, p: UserPlan, purge_blocked: bool) -> None:
        user = p.user
        if p.record_inactive is not None:
            assert p.inactive_since is not None
            self.note("inactive", user.id, since=p.inactive_since, source=p.record_inactive,
                      upn=user.upn, name=user.display_name,
                      leave_date=_date_or_none(user.leave_date))
        if p.record_revoked:
            self.note("revoked", user.id, source="observed")
        if p.revoke:
            await self._revoke(user, since=p.inactive_since or self.now)
        await self._devices(user)
        if not p.purge_due:
            return
        if purge_blocked:
            self.run.skip("delete-user", _subject(user),
                          f"safety limit: purges due exceed max_purge_per_run "
                          f"{self.policy.max_purge_per_run}")
            return
        if user.id in self.tally.failed_users:
            return
        await self._purge(p)

    async def _revoke(self, user: DirectoryUser, *, since: datetime) -> None:
        before = {"signInSessionsValidFromDateTime": _iso_or_none(user.sessions_valid_from)}
        with self.run.change("revoke-sessions", _subject(user),
                             "leaver set inactive: revoke sign-in sessions",
                             before=before) as ch:
            if ch.execute:
                result = await lifecycle.revoke_sessions(self.ctx.graph, user.id)
                self.note("revoked", user.id, request_id=result.request_id)
                ch.done(request_id=result.request_id, after={"sessionsRevoked": True})
        if not ch.ok and ch.execute:
            self.tally.failed_users.add(user.id)

    async def _devices(self, user: DirectoryUser) -> None:
        if self.devices_by_user is None:
            return
        record = self.ledger.get(user.id)
        for device in sorted(self.devices_by_user.get(user.id, ()), key=lambda d: d.name):
            step = plan_device(device, record)
            if step.warning:
                self.run.warn(step.warning)
            if step.observed:
                # under way already (sent by us before a crash, or by an admin): never twice
                self.note("device", user.id, device_id=device.id, device_name=device.name,
                          action=step.observed, source="observed")
                self.run.skip(f"{step.observed}-device", Subject("device", device.id, device.name),
                              f"a {step.observed} is already under way "
                              f"(managementState {device.management_state})")
            if step.action is None:
                continue
            await self._device_action(user, device, step.action)

    async def _device_action(self, user: DirectoryUser, device: ManagedDevice,
                             action: DeviceAction) -> None:
        if action == "wipe":
            reason = f"company-owned device of leaver {user.upn}: wipe"
        elif device.owner_type == "personal":
            reason = f"personal (BYOD) device of leaver {user.upn}: retire, never wipe"
        else:
            reason = (f"device of leaver {user.upn} with ownership {device.owner_type!r}: "
                      "retire (only company-owned devices are wiped)")
        before = {"managementState": device.management_state,
                  "managedDeviceOwnerType": device.owner_type}
        with self.run.change(f"{action}-device", Subject("device", device.id, device.name),
                             reason, before=before) as ch:
            if ch.execute:
                call = lifecycle.wipe_device if action == "wipe" else lifecycle.retire_device
                result = await call(self.ctx.graph, device.id)
                self.note("device", user.id, device_id=device.id, device_name=device.name,
                          action=action, source="issued", request_id=result.request_id)
                if result.already_gone:
                    ch.done(request_id=result.request_id, note="device already gone")
                else:
                    ch.done(request_id=result.request_id, after={f"{action}Issued": True})

    async def _purge(self, p: UserPlan) -> None:
        user = p.user
        # the last gate: the account as it is now, not as it was at the start of the run
        fresh = await lifecycle.get_user(self.ctx.graph, user.id)
        if fresh is None:
            self.run.warn(f"{user.upn} disappeared during the run (deleted by someone "
                          "else?); the next run completes its purge if it is due")
            return
        if fresh.enabled:
            self.note("reenabled", user.id)
            self._reenabled(fresh, "enabled again during this run")
            return
        if leaver_reason(fresh, user.id in self.group_members, self.now) is None:
            self.run.skip("delete-user", _subject(fresh),
                          "no longer a leaver (leave date cleared or moved): not purged")
            return
        assert p.inactive_since is not None and p.purge_date is not None
        since = p.inactive_since.astimezone(self.ctx.tz).date().isoformat()
        if not self.ctx.dry_run:
            # write-ahead: a crash from here on is completed from deleted items next run
            self.note("purge-started", user.id, upn=user.upn, name=user.display_name)
        with self.run.change(
                "delete-user", _subject(user),
                f"inactive since {since}; retention of {self.policy.retention_months} "
                f"months ended {p.purge_date.isoformat()}",
                before={"accountEnabled": False, "inactiveSince": since}) as ch:
            if ch.execute:
                try:
                    result = await lifecycle.delete_user(self.ctx.graph, user.id)
                except GraphError as exc:
                    # a definite refusal: not deleted, so no half purge to complete later.
                    # (Unavailable: the delete may have happened; keep the intent.)
                    if not isinstance(exc, GraphUnavailableError):
                        self.note("purge-failed", user.id, error=str(exc)[:300])
                    if isinstance(exc, ChangeRefused):
                        self._refused(user, exc)
                    raise
                self.note("deleted", user.id, request_id=result.request_id,
                          already_gone=result.already_gone)
                ch.done(request_id=result.request_id, after={"inDeletedItems": True},
                        note="already gone" if result.already_gone else None)
        if not ch.ok and ch.execute:
            return
        await self._purge_deleted(user.id, _subject(user), "step 2 of 2 of the purge")

    async def _complete(self, d: DeletedPlan, purge_blocked: bool) -> None:
        subject = Subject("user", d.user.id, d.user.upn)
        if d.protected:
            self.run.skip("purge-user", subject,
                          "protected: protected_users or emergency-access account")
            return
        if not d.ours and purge_blocked:
            self.run.skip("purge-user", subject, "safety limit: purges due exceed "
                          f"max_purge_per_run {self.policy.max_purge_per_run}")
            return
        if not d.ours:
            # deleted by someone else: record what the overview needs before purging
            user, record = d.user, self.ledger.get(d.user.id)
            if record is None or record.inactive_since is None:
                self.note("inactive", user.id, since=user.leave_date, source="leave-date",
                          upn=user.upn, name=user.display_name,
                          leave_date=_date_or_none(user.leave_date))
            self.note("purge-started", user.id)
            self.ledger.record("deleted", user.id, at=user.deleted_at or self.now,
                               run_id=None, source="found in deleted items")
        await self._purge_deleted(d.user.id, subject, d.why)

    async def _purge_deleted(self, user_id: str, subject: Subject, reason: str) -> None:
        with self.run.change("purge-user", subject,
                             f"permanently delete from deleted items ({reason})",
                             before={"inDeletedItems": True}) as ch:
            if ch.execute:
                result = await lifecycle.purge_deleted_user(self.ctx.graph, user_id)
                self.note("purged", user_id, request_id=result.request_id,
                          already_gone=result.already_gone, source="purged")
                ch.done(request_id=result.request_id, after={"inDeletedItems": False},
                        note="already gone" if result.already_gone else None)
        if ch.ok:
            self.tally.purged_ids.add(user_id)

    def _refused(self, user: DirectoryUser, exc: ChangeRefused) -> None:
        """Graph refused to change this leaver (403): most likely it holds a privileged
        role, which app-only callers cannot disable or delete. The action fails; this
        finding says why."""
        self.run.finding("OFF-PRIVILEGED-LEAVER", "high", _subject(user), str(exc))

    # ---- report ------------------------------------------------------------------------

    def _summary(self, the_plan: Plan) -> None:
        ctx, tally = self.ctx, self.tally
        today = local_date(self.now, ctx.tz)
        horizon = today + timedelta(days=VETO_DAYS)
        veto = [
            {"user_id": p.user.id, "user_principal_name": p.user.upn,
             "display_name": p.user.display_name,
             "inactive_since": p.inactive_since.astimezone(ctx.tz).date().isoformat()
             if p.inactive_since else None,
             "purge_date": p.purge_date.isoformat(),
             "days_left": max(0, (p.purge_date - today).days)}
            for p in the_plan.users
            if p.kind == "inactive" and p.purge_date is not None and p.purge_date <= horizon
            and p.user.id not in tally.purged_ids
        ]
        planned = ctx.dry_run
        counts: dict[str, int] = {}
        for action in self.run.report.actions:
            if action.status == ("planned" if planned else "done"):
                counts[action.action] = counts.get(action.action, 0) + 1
        ctx.run.report.summary.update({
            "mode": self.policy.mode,
            "leavers": sum(1 for p in the_plan.users),
            "upcoming_leavers": the_plan.upcoming,
            "to_disable": the_plan.to_disable,
            "due_for_purge": the_plan.to_purge,
            "protected_skipped": sum(1 for p in the_plan.users if p.kind == "protected"),
            "reenabled": sum(1 for p in the_plan.users if p.kind == "reenabled"),
            "changes_planned" if planned else "changes_made": counts,
            "limit_reached": [name for name, hit in (
                ("max_disable_per_run", the_plan.disable_blocked),
                ("max_purge_per_run", the_plan.purge_blocked)) if hit],
            "veto_window_days": VETO_DAYS,
            "veto_window": veto,
            "ledger": str(self.ledger.path),
        })

    def _export(self) -> None:
        month = local_date(self.now, self.ctx.tz).replace(day=1)
        previous = (month - timedelta(days=1)).replace(day=1)
        paths = {}
        for first in (previous, month):
            path = write_deleted_accounts(self.ctx.exports_dir, self.ledger.records(),
                                          first, self.ctx.tz)
            paths[first.strftime("%Y-%m")] = str(path)
        self.run.report.summary["deleted_accounts_export"] = paths[month.strftime("%Y-%m")]


def deleted_accounts_rows(records: Iterable[LeaverRecord], month: date,
                          tz: ZoneInfo) -> list[dict[str, str]]:
    """The users purged for good in `month` (local time), oldest first."""
    rows = []
    for r in records:
        if r.purged_at is None or local_date(r.purged_at, tz).replace(day=1) != month:
            continue
        rows.append({
            "user_id": r.user_id, "user_principal_name": r.upn or "",
            "display_name": r.name or "", "leave_date": r.leave_date or "",
            "inactive_since": _iso_or_none(r.inactive_since) or "",
            "deleted_at": _iso_or_none(r.deleted_at) or "",
            "purged_at": _iso_or_none(r.purged_at) or "",
            "delete_run_id": r.delete_run_id or "", "purge_run_id": r.purge_run_id or "",
            "delete_request_id": r.delete_request_id or "",
            "purge_request_id": r.purge_request_id or "",
            "source": r.purge_source or "",
        })
    rows.sort(key=lambda row: (row["purged_at"], row["user_id"]))
    return rows


def write_deleted_accounts(exports: Path, records: Iterable[LeaverRecord], month: date,
                           tz: ZoneInfo) -> Path:
    """`deleted-accounts-YYYY-MM.csv`, replaced atomically and only when its content changed."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(deleted_accounts_rows(records, month, tz))
    data = buffer.getvalue().encode("utf-8")
    path = exports / f"deleted-accounts-{month.strftime('%Y-%m')}.csv"
    try:
        if path.read_bytes() == data:
            return path
    except FileNotFoundError:
        pass
    write_atomic(path, data)
    return path


def _subject(user: DirectoryUser) -> Subject:
    return Subject("user", user.id, user.upn)


def _iso_or_none(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _date_or_none(moment: datetime | None) -> str | None:
    return moment.date().isoformat() if moment is not None else None


async def run(ctx: JobContext) -> None:
    await _Job(ctx).execute()


JOB = JobSpec(
    id="offboarding",
    title="Disable leavers, wipe/retire their devices, purge after retention",
    policy_section="offboarding",
    policy_model=Policy,
    permissions=("User.Read.All", "User-LifeCycleInfo.Read.All", "GroupMember.Read.All",
                 lifecycle.USERS_ENABLE_DISABLE, lifecycle.USERS_REVOKE, lifecycle.USERS_DELETE,
                 "DeviceManagementManagedDevices.PrivilegedOperations.All",
                 "DeviceManagementManagedDevices.Read.All"),
    changes_tenant=True,
    run=run,
)
