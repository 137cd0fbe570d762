"""Job `offboarding`: disable leavers, wipe/retire their devices, purge them after retention.

(Stub: the offboarding issue builds it.)
"""

from __future__ import annotations

from pydantic import Field

from agent.job import ChangingJobPolicy, JobContext, JobSpec


class Policy(ChangingJobPolicy):
    schedule: str = "0 6 * * *"
    leave_group_id: str = ""
    retention_months: int = Field(default=3, ge=1, le=120)
    protected_users: list[str] = Field(default_factory=list)
    max_disable_per_run: int = Field(default=25, ge=0)
    max_purge_per_run: int = Field(default=10, ge=0)
    wipe_devices: bool = True


async def run(ctx: JobContext) -> None:
    ctx.run.warn("offboarding is not implemented yet")


JOB = JobSpec(
    id="offboarding",
    title="Disable leavers, wipe/retire their devices, purge after retention",
    policy_section="offboarding",
    policy_model=Policy,
    permissions=("User.ReadWrite.All", "GroupMember.Read.All",
                 "DeviceManagementManagedDevices.PrivilegedOperations.All",
                 "DeviceManagementManagedDevices.Read.All"),
    changes_tenant=True,
    run=run,
)
