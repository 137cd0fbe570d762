"""Job `device-compliance`: every device managed, compliant, encrypted, key escrowed.

(Stub: the device-compliance issue builds it.)
"""

from __future__ import annotations

from pydantic import Field

from agent.job import JobContext, JobPolicy, JobSpec


class Policy(JobPolicy):
    schedule: str = "0 7 * * 1-5"
    stale_after_days: int = Field(default=30, ge=1)


async def run(ctx: JobContext) -> None:
    ctx.run.warn("device-compliance is not implemented yet")


JOB = JobSpec(
    id="device-compliance",
    title="Intune coverage, compliance, encryption, recovery keys, removable media",
    policy_section="device_compliance",
    policy_model=Policy,
    permissions=("DeviceManagementManagedDevices.Read.All",
                 "DeviceManagementConfiguration.Read.All", "Device.Read.All",
                 "BitlockerKey.ReadBasic.All"),
    changes_tenant=False,
    run=run,
)
