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
    Plan,
    Protection,
    UserPlan,
    local_date,
    plan,
    reconcile,
)
from jobs.offboarding.policy import Policy
from jobs.offboarding.purge import Purger

LEDGER_FILE = "offboarding-ledger.jsonl"


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
                self.reenabled(p.user, p.evidence)
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
        purger = Purger(self)
        for p in self._of(the_plan, "inactive"):  # 4. deletes and purges
            if p.purge_due:
                await purger.purge_user(p, the_gate)
        for d in the_plan.deleted:  # 5. completions
            await purger.complete(d, the_gate)
        for record in the_plan.vanished:
            await purger.vanished(record.user_id, record.upn, the_gate)
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

    def reenabled(self, user: DirectoryUser, evidence: str) -> None:
        self.run.finding(
            "OFF-REENABLED", severity_of("OFF-REENABLED"), _subject(user),
            f"account of a leaver is enabled again: {evidence}. It is not disabled again "
            "nor purged by this job; disable it to resume offboarding, or clear its leave "
            "date.")

    def stopped(self, the_gate: Gate, limit: str) -> str | None:
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

    def refused_before(self, user: DirectoryUser, action: str, name: str,
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
            self.refused_before(user, "disable", "disable-user", p.refused_on)
            return
        stop = self.stopped(the_gate, "max_disable_per_run")
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
                    self.refuse(user, "disable", exc, ch)
                    return
                self.note("inactive", user.id, since=self.now, source="disabled",
                          request_id=result.request_id, upn=user.upn,
                          name=user.display_name, leave_date=_date_or_none(user.leave_date))
                ch.done(request_id=result.request_id, after={"accountEnabled": False})
        if ch.execute and not ch.ok:
            self.tally.failed.add(user.id)
        elif ch.execute or ch.action.status == "planned":
            self.tally.disabled.add(user.id)  # dry run: the plan goes on as if made

    def refuse(self, user: DirectoryUser, action: str, exc: ChangeRefused,
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
            stop = self.stopped(the_gate, "max_device_actions_per_run")
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
