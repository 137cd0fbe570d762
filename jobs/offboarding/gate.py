"""The one gate every change of an offboarding run passes. Pure.

- **Fail closed**: a protection entry (`protected_users`, emergency-access accounts) that
  names no user stops *every* change of the run: disables, revokes, wipes, retires,
  deletes and purges. A renamed UPN must not leave its owner unprotected.
- **Limits**, per kind, counted on what would really be sent: past `max_disable_per_run`
  no account is disabled; past `max_device_actions_per_run` (wipes and retires together)
  no device is actioned; past `max_purge_per_run` nothing is deleted or purged. Each stop
  is an `OFF-LIMIT-REACHED` finding.
- A leaver whose **disable is stopped** (limit, fail-closed, or a recent privileged-role
  refusal) gets no revoke, wipe or retire either: its account still works, so a wiped
  laptop would only be re-enrolled, and a wrong leave date would hurt twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from jobs.offboarding.devices import DeviceStep
from jobs.offboarding.notice import PurgeCheck
from jobs.offboarding.planning import Plan
from jobs.offboarding.policy import Policy

LIMITS = ("max_disable_per_run", "max_device_actions_per_run", "max_purge_per_run")


@dataclass(frozen=True)
class Gate:
    fail_closed: bool
    disable: frozenset[str]  # user ids to disable
    revoke: frozenset[str]  # user ids whose sessions may be revoked
    devices: frozenset[str]  # user ids whose device actions may be sent
    purge: frozenset[str]  # user ids (directory or deleted items) to delete/purge
    counts: Mapping[str, int] = field(default_factory=dict)  # limit -> what would be sent
    stopped: tuple[str, ...] = ()  # limits that stopped a kind

    def allows(self, stage: str, user_id: str) -> bool:
        return user_id in getattr(self, stage)


def decide(plan: Plan, policy: Policy, *, device_steps: Mapping[str, Sequence[DeviceStep]],
           purges: Mapping[str, PurgeCheck]) -> Gate:
    """Which user may get which kind of change in this run."""
    to_disable = {p.user.id for p in plan.users
                  if p.kind == "set-inactive" and p.refused_on is None}
    inactive = {p.user.id for p in plan.users if p.kind == "inactive"}
    disable_stopped = len(to_disable) > policy.max_disable_per_run
    disabled_by_us = set() if disable_stopped else to_disable
    # a user about to be disabled or already inactive; nobody else gets device actions
    device_users = inactive | disabled_by_us
    device_count = sum(1 for uid in device_users for step in device_steps.get(uid, ())
                       if step.action is not None)
    devices_stopped = device_count > policy.max_device_actions_per_run
    to_purge = {uid for uid, check in purges.items() if check.may_purge}
    purge_stopped = len(to_purge) > policy.max_purge_per_run
    counts = {"max_disable_per_run": len(to_disable),
              "max_device_actions_per_run": device_count,
              "max_purge_per_run": len(to_purge)}
    stopped = tuple(name for name, hit in zip(
        LIMITS, (disable_stopped, devices_stopped, purge_stopped), strict=True) if hit)
    if plan.unmatched_protection:
        empty: frozenset[str] = frozenset()
        return Gate(True, empty, empty, empty, empty, counts, stopped)
    return Gate(
        fail_closed=False,
        disable=frozenset(disabled_by_us),
        revoke=frozenset(inactive | disabled_by_us),
        devices=frozenset() if devices_stopped else frozenset(device_users),
        purge=frozenset() if purge_stopped else frozenset(to_purge),
        counts=counts, stopped=stopped,
    )
