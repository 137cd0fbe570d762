"""Job `offboarding`: disable leavers, wipe/retire their devices, purge them after retention.

DAP 3.13.3, 3.2.1, 3.2.2, 3.3, 3.6 (dap-rules.md §2). Safety before completeness:
- report mode by default, `--dry-run` always: every change is planned and audited, none made;
- one gate for every change (`gate.py`): fail-closed protection, per-kind limits, and a
  leaver whose disable is stopped gets nothing else;
- device actions that fit the device (`devices.py`: wipe, retire, or a task for a person);
- a purge needs retention, notice, no veto and (optionally) the customer's approval
  (`notice.py`, decisions from `dap-agent veto` / `approve` in agent/decisions.py);
- write-ahead intents in the ledger, reconciled after a crash (`planning.reconcile`);
  execution stage by stage (`execute.py`).

Modules: `policy` (the TOML table), `planning` (pure: who is due for what), `devices` (pure:
the device-action table), `notice` (pure: notice, veto, approval), `gate` (pure: what may
change in this run), `execute` (the run, stages 1-3), `purge` (stages 4-5: deletes, permanent
deletes, completions), `overview` (deleted-accounts CSV).
"""

from __future__ import annotations

from agent.graph import lifecycle
from agent.job import JobContext, JobSpec
from jobs.offboarding.devices import DeviceStep, fit, plan_device
from jobs.offboarding.execute import LEDGER_FILE, OffboardingRun
from jobs.offboarding.overview import deleted_accounts_rows, write_deleted_accounts
from jobs.offboarding.planning import (
    DeletedPlan,
    Plan,
    Protection,
    UserPlan,
    add_months,
    leaver_reason,
    plan,
    reconcile,
)
from jobs.offboarding.policy import Policy

__all__ = ["JOB", "LEDGER_FILE", "DeletedPlan", "DeviceStep", "Plan", "Policy", "Protection",
           "UserPlan", "add_months", "deleted_accounts_rows", "fit", "leaver_reason", "plan",
           "plan_device", "reconcile", "run", "write_deleted_accounts"]


async def run(ctx: JobContext) -> None:
    await OffboardingRun(ctx).execute()


JOB = JobSpec(
    id="offboarding",
    title="Disable leavers, wipe/retire their devices, purge after retention",
    policy_section="offboarding",
    policy_model=Policy,
    permissions=("User.Read.All", "User-LifeCycleInfo.Read.All", lifecycle.GROUP_MEMBERS_READ,
                 lifecycle.USERS_ENABLE_DISABLE, lifecycle.USERS_REVOKE, lifecycle.USERS_DELETE,
                 "DeviceManagementManagedDevices.PrivilegedOperations.All",
                 "DeviceManagementManagedDevices.Read.All"),
    changes_tenant=True,
    run=run,
)
