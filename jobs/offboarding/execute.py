"""One offboarding run: read, reconcile, plan, gate, then the changes stage by stage.

Stage order (what a run cut off anywhere leaves behind, safest first):
1. disables: access ends first; a disable is undone with one click;
2. session revokes: only for disabled accounts (a revoke of a working account is undone by
   its next sign-in);
3. device wipes/retires: only for accounts that are disabled by now (a wiped laptop of a
   working account just re-enrols);
4. deletes and permanent deletes: last, because they cannot be undone and are never urgent;
   each needs notice, no veto, and approval where the policy asks for it;
5. completions: our own purges a killed run left half made, checked by direct reads.
Every change is written to the ledger as an intent before it is sent and as an outcome
after Graph's 2xx answer (see agent/ledger.py); an intent without outcome is reconciled
against Graph by the next run before it plans, so nothing is done twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from agent import decisions as decisions_mod
from agent.errors import ConfigError, GraphNotFoundError
from agent.graph import lifecycle
from agent.graph.lifecycle import ChangeRefused, DirectoryUser, ManagedDevice
from agent.job import JobContext
from agent.ledger import Ledger
from agent.rules import severity_of
from agent.run import Subject
from jobs.offboarding import gate as gate_mod
from jobs.offboarding import notice
from jobs.offboarding.devices import DeviceStep, plan_device
from jobs.offboarding.gate import Gate
from jobs.offboarding.notice import PurgeCheck
from jobs.offboarding.overview import iso_or_none, write_deleted_accounts
from jobs.offboarding.planning import (
    REFUSAL_RETRY,
    DeletedPlan,
    Plan,
    Protection,
    UserPlan,
    leaver_reason,
    local_date,
    plan,
    reconcile,
)
from jobs.offboarding.policy import Policy

LEDGER_FILE = "offboarding-ledger.jsonl"
# after DELETE /users/{id} the deleted item may take a while to replicate: the permanent
# delete is retried this often (waits 1, 2, 4, 8 s); still 404 -> the next run completes it
PURGE_ATTEMPTS = 5
# "gone" from both users and deleted items counts as evidence only this long after our
# delete (a read right after it may hit a replica that has seen neither)
LAG_GRACE = timedelta(hours=1)


@dataclass
class _Tally:
    failed: set[str] = field(default_factory=set)  # a change failed or was refused: stop here
    disabled: set[str] = field(default_factory=set)  # disabled in this run
    purged_ids: set[str] = field(default_factory=set)
    reconciled: list[dict[str, Any]] = field(default_factory=list)
    announced: list[str] = field(default_factory=list)


def _subject(user: DirectoryUser) -> Subject:
    return Subject("user", user.id, user.upn)


def _date_or_none(moment: datetime | None) -> str | None:
    return moment.date().isoformat() if moment is not None else None


class OffboardingRun:
    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.policy: Policy = ctx.policy
        self.run = ctx.run
        self.now = ctx.now
        self.today = local_date(ctx.now, ctx.tz)
        self.ledger = Ledger.open(ctx.state_dir / LEDGER_FILE, write=not ctx.dry_run)
        self.decisions = decisions_mod.load(ctx.state_dir)
        self.devices_by_user: dict[str, list[ManagedDevice]] = {}
        self.steps: dict[str, list[DeviceStep]] = {}
        self.purges: dict[str, PurgeCheck] = {}
        self.tally = _Tally()
        self.group_members: frozenset[str] = frozenset()

    def note(self, event: str, user_id: str, **data: Any) -> None:
        self.ledger.record(event, user_id, at=self.now, run_id=self.run.run_id, **data)

    def intent(self, user_id: str, key: str) -> None:
        """Write-ahead: recorded (fsynced) before the change is sent."""
        self.note("intent", user_id, key=key)

    # ---- the run -----------------------------------------------------------------------

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
        self._reconcile(users, deleted)
        protection = Protection.of(policy.protected_users,
                                   ctx.settings.privileged_roles.emergency_access_accounts)
        the_plan = plan(users=users, deleted=deleted, group_members=self.group_members,
                        ledger=self.ledger, protection=protection, policy=policy,
                        now=self.now, tz=ctx.tz)
        self._check_signal(users)
        self._observe(the_plan)
        await self._read_devices(the_plan)
        self._check_purges(the_plan)
        the_gate = gate_mod.decide(the_plan, policy, device_steps=self.steps,
                                   purges=self.purges)
        self._limits(the_plan, the_gate)
        self._announce(the_plan)

        for p in the_plan.users:
            if p.kind == "protected":
                self._protected(p)
            elif p.kind == "reenabled":
                self._reenabled(p.user, p.evidence)
            elif p.kind == "restored":
                self._restored(p)
        for p in self._of(the_plan, "set-inactive"):  # 1. disables
            await self._disable(p, the_gate)
        for p in the_plan.users:  # 2. revokes
            if p.kind == "inactive":
                self._record_inactive(p)
            if p.user.id in self.tally.disabled or (p.kind == "inactive" and p.revoke):
                await self._revoke(p.user, the_gate)
        for p in the_plan.users:  # 3. devices
            if p.kind == "inactive" or p.kind == "set-inactive":
                await self._devices(p, the_gate)
        for p in self._of(the_plan, "inactive"):  # 4. deletes and purges
            if p.purge_due:
                await self._purge_user(p, the_gate)
        for d in the_plan.deleted:  # 5. completions
            await self._complete(d, the_gate)
        for record in the_plan.vanished:
            await self._vanished(record.user_id, record.upn, the_gate)
        self._summary(the_plan, the_gate)
        if not ctx.dry_run:  # a dry run writes nothing but its report and audit entries
            self._export()

    @staticmethod
    def _of(the_plan: Plan, kind: str) -> list[UserPlan]:
        return [p for p in the_plan.users if p.kind == kind]

    # ---- before planning ---------------------------------------------------------------

    def _reconcile(self, users: Sequence[DirectoryUser],
                   deleted: Sequence[lifecycle.DeletedUser]) -> None:
        """Settle what a killed run left between its intent and its outcome."""
        for s in reconcile(self.ledger.records(), users, deleted):
            data = dict(s.data)
            data.pop("reconciled", None)
            self.note(s.event, s.user_id, **data)
            entry = {"user_id": s.user_id, "intent": s.key, "run_id": s.run_id,
                     "outcome": "happened" if s.happened else "did not happen"}
            self.tally.reconciled.append(entry)
            self.run.event("intent-reconciled", **entry)

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

    async def _read_devices(self, the_plan: Plan) -> None:
        if not self.policy.wipe_devices or not any(
                p.kind in ("inactive", "set-inactive") for p in the_plan.users):
            return
        for device in await lifecycle.managed_devices(self.ctx.graph):
            if device.user_id:
                self.devices_by_user.setdefault(device.user_id, []).append(device)
        for p in the_plan.users:
            if p.kind in ("inactive", "set-inactive"):
                record = self.ledger.get(p.user.id)
                self.steps[p.user.id] = [
                    plan_device(d, record)
                    for d in sorted(self.devices_by_user.get(p.user.id, ()),
                                    key=lambda d: d.name)]

    def _check_purges(self, the_plan: Plan) -> None:
        policy = self.policy
        candidates: list[tuple[str, Any]] = [
            (p.user.id, p.purge_date) for p in the_plan.users
            if p.kind == "inactive" and p.purge_date is not None]
        candidates += [(d.user.id, d.purge_date) for d in the_plan.deleted
                       if not d.ours and not d.protected and d.purge_date is not None]
        for user_id, retention_ends in candidates:
            found = notice.check(user_id, self.ledger.get(user_id), retention_ends,
                                 today=self.today, run_id=self.run.run_id,
                                 decisions=self.decisions,
                                 notice_days=policy.purge_notice_days,
                                 requires_approval=policy.purge_requires_approval)
            if found is not None:
                self.purges[user_id] = found

    def _limits(self, the_plan: Plan, the_gate: Gate) -> None:
        policy = self.policy
        if the_gate.fail_closed:
            for entry in the_plan.unmatched_protection:
                self.run.warn(f"protection entry {entry!r} (protected_users or "
                              "emergency_access_accounts) matches no user in the tenant: "
                              "renamed or mistyped? No change at all is made (no disable, "
                              "revoke, wipe, retire, delete or purge) until every entry "
                              "names a user")
        what = {"max_disable_per_run": ("leavers would be disabled", "no account was disabled"),
                "max_device_actions_per_run": ("device wipes/retires would be sent",
                                               "no device was wiped or retired"),
                "max_purge_per_run": ("accounts are due for purging", "none was purged")}
        for name in the_gate.stopped:
            count, outcome = the_gate.counts[name], what[name]
            self.run.finding(
                "OFF-LIMIT-REACHED", severity_of("OFF-LIMIT-REACHED"),
                Subject("policy", f"offboarding.{name}", name),
                f"{count} {outcome[0]}, more than {name} = {getattr(policy, name)}: "
                f"{outcome[1]} in this run. Check the list; raise the limit if right.")

    def _announce(self, the_plan: Plan) -> None:
        """List the purges of the veto window; a first listing is the announcement (audited
        first, then in the ledger: a crash between them announces again, later)."""
        if self.ctx.dry_run:
            return  # report mode lists the window but starts no notice clock
        for user_id, check in self.purges.items():
            if not check.announce:
                continue
            upn = self._upn(the_plan, user_id)
            self.run.event("purge-announced", user_id=user_id, user_principal_name=upn,
                           purge_date=check.purge_date.isoformat(),
                           retention_ends=check.retention_ends.isoformat(),
                           announced_on=check.announced_on.isoformat())
            self.note("announced", user_id, purge_date=check.purge_date.isoformat(), upn=upn)
            self.tally.announced.append(user_id)

    @staticmethod
    def _upn(the_plan: Plan, user_id: str) -> str | None:
        for p in the_plan.users:
            if p.user.id == user_id:
                return p.user.upn
        for d in the_plan.deleted:
            if d.user.id == user_id:
                return d.user.upn
        return None

    # ---- per kind ----------------------------------------------------------------------

    def _protected(self, p: UserPlan) -> None:
        action = "disable-user" if p.user.enabled else "delete-user"
        self.run.skip(action, _subject(p.user),
                      f"protected ({p.why}): protected_users or emergency-access account; "
                      "never changed by this job")

    def _restored(self, p: UserPlan) -> None:
        user = p.user
        if p.newly_restored:
            # the customer's veto, for good: never deleted by this agent again
            self.note("restored", user.id, upn=user.upn, name=user.display_name)
            self.run.warn(f"{user.upn} was restored from deleted items after this job "
                          "deleted it: its purge is called off, and the agent never deletes "
                          "it again")
        self.run.skip("delete-user", _subject(user),
                      "restored from deleted items after this agent deleted it: a veto; "
                      "never deleted again by this agent")

    def _reenabled(self, user: DirectoryUser, evidence: str) -> None:
        self.run.finding(
            "OFF-REENABLED", severity_of("OFF-REENABLED"), _subject(user),
            f"account of a leaver is enabled again: {evidence}. It is not disabled again "
            "nor purged by this job; disable it to resume offboarding, or clear its leave "
            "date.")

    def _stopped(self, the_gate: Gate, limit: str) -> str | None:
        """Why the gate stops this kind of change ('' if it does not)."""
        if the_gate.fail_closed:
            return "a protection entry matches no user: no change is made in this run"
        if limit in the_gate.stopped:
            return (f"safety limit: {the_gate.counts[limit]} > {limit} "
                    f"{getattr(self.policy, limit)}")
        return None

    def _privileged(self, user: DirectoryUser, action: str, detail: str) -> None:
        self.run.finding("OFF-PRIVILEGED-LEAVER", severity_of("OFF-PRIVILEGED-LEAVER"),
                         _subject(user), detail)

    def _refused_before(self, user: DirectoryUser, action: str, name: str,
                        at: datetime) -> None:
        retry = (at + REFUSAL_RETRY).date().isoformat()
        detail = (f"Graph refused to {action} this leaver on {at.date().isoformat()} (403: "
                  "app-only callers cannot change an account that holds a privileged admin "
                  "role). Remove its role assignments and PIM eligibilities; the agent tries "
                  f"again from {retry}.")
        self._privileged(user, action, detail)
        self.run.skip(name, _subject(user), detail)

    async def _disable(self, p: UserPlan, the_gate: Gate) -> None:
        user = p.user
        if p.refused_on is not None:
            self._refused_before(user, "disable", "disable-user", p.refused_on)
            return
        stop = self._stopped(the_gate, "max_disable_per_run")
        if stop is not None:
            self.run.skip("disable-user", _subject(user), stop)
            return
        with self.run.change("disable-user", _subject(user),
                             f"leaver ({p.why}): set inactive; licences kept",
                             before={"accountEnabled": True}) as ch:
            if ch.execute:
                self.intent(user.id, "disable")
                try:
                    result = await lifecycle.disable_user(self.ctx.graph, user.id)
                except ChangeRefused as exc:
                    self._refuse(user, "disable", exc, ch)
                    return
                self.note("inactive", user.id, since=self.now, source="disabled",
                          request_id=result.request_id, upn=user.upn,
                          name=user.display_name, leave_date=_date_or_none(user.leave_date))
                ch.done(request_id=result.request_id, after={"accountEnabled": False})
        if ch.execute and not ch.ok:
            self.tally.failed.add(user.id)
        elif ch.execute or ch.action.status == "planned":
            self.tally.disabled.add(user.id)  # dry run: the plan goes on as if made

    def _refuse(self, user: DirectoryUser, action: str, exc: ChangeRefused,
                ch: Any) -> None:
        """A 403 for a privileged account: a finding, not a failed action every morning."""
        self.note("refused", user.id, action=action, error=str(exc)[:300])
        self.tally.failed.add(user.id)
        retry = (self.now + REFUSAL_RETRY).date().isoformat()
        detail = f"{exc} The agent tries again from {retry}."
        self._privileged(user, action, detail)
        ch.action.reason = f"{ch.action.reason}; refused by Graph (privileged account)"
        ch.action.error = str(exc)

    def _record_inactive(self, p: UserPlan) -> None:
        user = p.user
        if p.record_inactive is not None and p.inactive_since is not None:
            self.note("inactive", user.id, since=p.inactive_since, source=p.record_inactive,
                      upn=user.upn, name=user.display_name,
                      leave_date=_date_or_none(user.leave_date))
        if p.record_revoked:
            self.note("revoked", user.id, source="observed")

    async def _revoke(self, user: DirectoryUser, the_gate: Gate) -> None:
        if user.id in self.tally.failed:
            return
        if the_gate.fail_closed:
            self.run.skip("revoke-sessions", _subject(user),
                          "a protection entry matches no user: no change is made in this run")
            return
        before = {"signInSessionsValidFromDateTime": iso_or_none(user.sessions_valid_from)}
        with self.run.change("revoke-sessions", _subject(user),
                             "leaver set inactive: revoke sign-in sessions",
                             before=before) as ch:
            if ch.execute:
                self.intent(user.id, "revoke")
                result = await lifecycle.revoke_sessions(self.ctx.graph, user.id)
                self.note("revoked", user.id, request_id=result.request_id)
                ch.done(request_id=result.request_id, after={"sessionsRevoked": True})
        if ch.execute and not ch.ok:
            self.tally.failed.add(user.id)

    async def _devices(self, p: UserPlan, the_gate: Gate) -> None:
        user = p.user
        for step in self.steps.get(user.id, ()):
            device = step.device
            subject = Subject("device", device.id, device.name)
            if step.warning:
                self.run.warn(step.warning)
            if step.manual:
                self.run.finding("OFF-MANUAL-TASK", severity_of("OFF-MANUAL-TASK"), subject,
                                 f"device {device.name} of leaver {user.upn}: {step.manual}")
            if step.note:
                self.run.skip("wipe-device", subject, f"not wiped: {step.note}")
            if step.observed:
                # under way already (sent by us before a crash, or by an admin): never twice
                self.note("device", user.id, device_id=device.id, device_name=device.name,
                          action=step.observed, source="observed")
                self.run.skip(f"{step.observed}-device", subject,
                              f"a {step.observed} is already under way "
                              f"(managementState {device.management_state})")
            if step.action is None:
                continue
            name = f"{step.action}-device"
            if user.id not in self.tally.disabled and p.kind == "set-inactive":
                self.run.skip(name, subject, "the account was not disabled in this run: "
                              "no device action before the account is off")
                continue
            stop = self._stopped(the_gate, "max_device_actions_per_run")
            if stop is not None or user.id in self.tally.failed:
                self.run.skip(name, subject, stop or "an earlier change of this leaver "
                              "failed in this run")
                continue
            await self._device_action(user, device, step)

    async def _device_action(self, user: DirectoryUser, device: ManagedDevice,
                             step: DeviceStep) -> None:
        action = step.action
        assert action is not None
        before = {"managementState": device.management_state,
                  "managedDeviceOwnerType": device.owner_type,
                  "managementAgent": device.management_agent}
        with self.run.change(f"{action}-device", Subject("device", device.id, device.name),
                             f"device of leaver {user.upn}: {step.reason}",
                             before=before) as ch:
            if ch.execute:
                self.intent(user.id, f"{action}:{device.id}")
                call = lifecycle.wipe_device if action == "wipe" else lifecycle.retire_device
                result = await call(self.ctx.graph, device.id)
                self.note("device", user.id, device_id=device.id, device_name=device.name,
                          action=action, source="issued", request_id=result.request_id)
                if result.already_gone:
                    ch.done(request_id=result.request_id, note="device already gone")
                else:
                    ch.done(request_id=result.request_id, after={f"{action}Issued": True})

    # ---- purges ------------------------------------------------------------------------

    def _purge_blocked(self, user_id: str, subject: Subject, action: str,
                       the_gate: Gate) -> bool:
        """Notice, veto, approval, fail-closed and the purge limit; True if stopped here."""
        check = self.purges.get(user_id)
        if check is None or not check.may_purge:
            if check is not None and check.status == "vetoed":
                self.run.finding("OFF-VETOED", severity_of("OFF-VETOED"), subject,
                                 check.reason(self.policy.purge_notice_days))
            reason = check.reason(self.policy.purge_notice_days) if check is not None \
                else "not announced in the veto window yet"
            self.run.skip(action, subject, f"not purged: {reason}")
            return True
        stop = self._stopped(the_gate, "max_purge_per_run")
        if stop is not None:
            self.run.skip(action, subject, stop)
            return True
        return False

    async def _purge_user(self, p: UserPlan, the_gate: Gate) -> None:
        user = p.user
        if user.id in self.tally.failed:
            return
        if self._purge_blocked(user.id, _subject(user), "delete-user", the_gate):
            return
        if p.refused_on is not None:
            self._refused_before(user, "delete", "delete-user", p.refused_on)
            return
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
        check = self.purges[user.id]
        with self.run.change(
                "delete-user", _subject(user),
                f"inactive since {since}; retention of {self.policy.retention_months} "
                f"months ended {p.purge_date.isoformat()}; announced on "
                f"{check.announced_on.isoformat()}",
                before={"accountEnabled": False, "inactiveSince": since}) as ch:
            if ch.execute:
                self.intent(user.id, "delete")
                try:
                    result = await lifecycle.delete_user(self.ctx.graph, user.id)
                except ChangeRefused as exc:
                    self.note("purge-failed", user.id, error=str(exc)[:300])
                    self._refuse(user, "delete", exc, ch)
                    return
                self.note("deleted", user.id, request_id=result.request_id,
                          already_gone=result.already_gone)
                ch.done(request_id=result.request_id, after={"inDeletedItems": True},
                        note="already gone" if result.already_gone else None)
        if ch.execute and not ch.ok:
            return
        await self._purge_deleted(user.id, _subject(user), "step 2 of 2 of the purge",
                                  just_deleted=True)

    async def _complete(self, d: DeletedPlan, the_gate: Gate) -> None:
        subject = Subject("user", d.user.id, d.user.upn)
        if d.protected:
            self.run.skip("purge-user", subject,
                          "protected: protected_users or emergency-access account")
            return
        if d.ours:
            veto = self.decisions.veto(d.user.id, self.today)
            if veto is not None:
                self.run.finding("OFF-VETOED", severity_of("OFF-VETOED"), subject,
                                 f"vetoed by {veto.by or 'unknown'}: {veto.reason or ''}")
                self.run.skip("purge-user", subject, "not purged: a veto stands")
                return
            if the_gate.fail_closed:
                self.run.skip("purge-user", subject, "a protection entry matches no user: "
                              "no change is made in this run")
                return
        elif self._purge_blocked(d.user.id, subject, "purge-user", the_gate):
            return
        if not d.ours and not self.ctx.dry_run:
            # deleted by someone else: record what the overview needs before purging
            user, record = d.user, self.ledger.get(d.user.id)
            if record is None or record.inactive_since is None:
                self.note("inactive", user.id, since=user.leave_date, source="leave-date",
                          upn=user.upn, name=user.display_name,
                          leave_date=_date_or_none(user.leave_date))
            # not deleted by a run of ours: no delete run id
            self.ledger.record("deleted", user.id, at=self.now, run_id=None,
                               deleted_at=user.deleted_at or self.now,
                               source="found in deleted items")
        await self._purge_deleted(d.user.id, subject, d.why, just_deleted=False)

    async def _purge_deleted(self, user_id: str, subject: Subject, reason: str, *,
                             just_deleted: bool) -> None:
        with self.run.change("purge-user", subject,
                             f"permanently delete from deleted items ({reason})",
                             before={"inDeletedItems": True}) as ch:
            if ch.execute:
                self.intent(user_id, "purge")
                result = await lifecycle.purge_deleted_user(self.ctx.graph, user_id)
                wait = 1.0
                for _ in range(PURGE_ATTEMPTS - 1 if just_deleted else 0):
                    if not result.already_gone:
                        break
                    # 404 right after our delete: not replicated yet, not "gone"
                    await self.ctx.graph.sleep(wait)
                    wait *= 2
                    result = await lifecycle.purge_deleted_user(self.ctx.graph, user_id)
                if not result.already_gone:
                    self.note("purged", user_id, request_id=result.request_id, source="purged")
                    ch.done(request_id=result.request_id, after={"inDeletedItems": False})
                elif not just_deleted and await self._gone(user_id):
                    self.note("purged", user_id, request_id=result.request_id,
                              source="verified gone")
                    ch.done(request_id=result.request_id, after={"inDeletedItems": False},
                            note="already gone: neither in users nor in deleted items")
                else:
                    ch.action.reason += ("; deleted, the deleted item is not visible yet "
                                         "(replication): the next run completes the purge")
        if ch.ok:
            self.tally.purged_ids.add(user_id)

    async def _gone(self, user_id: str) -> bool:
        """Evidence of a purge: direct reads answer 404 for the user and the deleted item."""
        if await lifecycle.get_user(self.ctx.graph, user_id) is not None:
            return False
        return await lifecycle.get_deleted_user(self.ctx.graph, user_id) is None

    async def _vanished(self, user_id: str, upn: str | None, the_gate: Gate) -> None:
        """Our purge pending, the user listed neither in users nor in deleted items: a list
        can miss an object (a lost page, lag); only direct reads are evidence."""
        subject = Subject("user", user_id, upn)
        record = self.ledger.get(user_id)
        if the_gate.fail_closed or record is None:
            return
        if await lifecycle.get_user(self.ctx.graph, user_id) is not None:
            self.run.warn(f"{upn or user_id}: our purge is pending but the user was not "
                          "listed; a direct read finds it in users: nothing done")
            return
        if await lifecycle.get_deleted_user(self.ctx.graph, user_id) is not None:
            await self._purge_deleted(user_id, subject, "completing our purge",
                                      just_deleted=False)
            return
        deleted_at = record.deleted_at or self.now
        if self.now - deleted_at < LAG_GRACE:
            self.run.skip("purge-user", subject, "deleted moments ago and not visible yet: "
                          "the next run checks again")
            return
        self.note("purged", user_id, source="verified gone", already_gone=True)
        self.tally.purged_ids.add(user_id)
        self.run.skip("purge-user", subject,
                      "already purged: direct reads find it neither in users nor in deleted "
                      "items (a run cut off after its permanent delete, or purged by someone "
                      "else)")

    # ---- report ------------------------------------------------------------------------

    def _summary(self, the_plan: Plan, the_gate: Gate) -> None:
        ctx, tally = self.ctx, self.tally
        window = []
        names = {p.user.id: p for p in the_plan.users}
        deleted = {d.user.id: d for d in the_plan.deleted}
        for user_id, check in sorted(self.purges.items(),
                                     key=lambda kv: (kv[1].purge_date, kv[0])):
            if user_id in tally.purged_ids:
                continue
            up = names.get(user_id)
            dp = deleted.get(user_id)
            upn = up.user.upn if up else dp.user.upn if dp else None
            since = up.inactive_since if up else dp.inactive_since if dp else None
            entry: dict[str, Any] = {
                "user_id": user_id, "user_principal_name": upn,
                "display_name": up.user.display_name if up else
                dp.user.display_name if dp else None,
                "inactive_since": since.astimezone(ctx.tz).date().isoformat() if since else None,
                "retention_ends": check.retention_ends.isoformat(),
                "purge_date": check.purge_date.isoformat(),
                "days_left": max(0, (check.purge_date - self.today).days),
                "announced_on": check.announced_on.isoformat(),
                "status": check.status,
            }
            if check.veto is not None:
                entry["vetoed"] = True
                entry["vetoed_by"] = check.veto.by
                entry["veto_until"] = check.veto.until
            if self.policy.purge_requires_approval:
                entry["approved"] = check.approval is not None
                if check.approval is not None:
                    entry["approved_by"] = check.approval.by
            window.append(entry)
        planned = ctx.dry_run
        counts: dict[str, int] = {}
        for action in self.run.report.actions:
            if action.status == ("planned" if planned else "done"):
                counts[action.action] = counts.get(action.action, 0) + 1
        ctx.run.report.summary.update({
            "mode": self.policy.mode,
            "leavers": len(the_plan.users),
            "upcoming_leavers": the_plan.upcoming,
            "to_disable": the_plan.to_disable,
            "due_for_purge": sum(1 for c in self.purges.values() if c.retention_ends
                                 <= self.today),
            "protected_skipped": sum(1 for p in the_plan.users if p.kind == "protected"),
            "reenabled": sum(1 for p in the_plan.users if p.kind == "reenabled"),
            "changes_planned" if planned else "changes_made": counts,
            "fail_closed": the_gate.fail_closed,
            "limit_reached": list(the_gate.stopped),
            "veto_window_days": notice.horizon(self.policy.purge_notice_days),
            "purge_notice_days": self.policy.purge_notice_days,
            "veto_window": window,
            "announced": len(tally.announced),
            # the customer's standing vetoes, as decided with `dap-agent veto`
            "vetoes": [v.to_json() for v in self.decisions.standing_vetoes(self.today)],
            "reconciled": tally.reconciled,
            "ledger": str(self.ledger.path),
        })

    def _export(self) -> None:
        month = self.today.replace(day=1)
        previous = (month - timedelta(days=1)).replace(day=1)
        paths = {}
        for first in (previous, month):
            path = write_deleted_accounts(self.ctx.exports_dir, self.ledger.records(),
                                          first, self.ctx.tz)
            paths[first.strftime("%Y-%m")] = str(path)
        self.run.report.summary["deleted_accounts_export"] = paths[month.strftime("%Y-%m")]
