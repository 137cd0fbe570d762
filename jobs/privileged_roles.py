"""Job `privileged-roles`: PIM assignments against the approved register, GA count, MFA.

(Stub: the privileged-roles issue builds it.)
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.job import JobContext, JobPolicy, JobSpec


class RegisterEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    principal: str
    role: str
    kind: Literal["eligible", "active"]
    start: date
    end: date
    approved_by: list[str]
    reference: str = ""


class Policy(JobPolicy):
    schedule: str = "0 7 * * 1"
    global_admin_count: int = Field(default=2, ge=0)
    emergency_access_accounts: list[str] = Field(default_factory=list)
    register: list[RegisterEntry] = Field(default_factory=list)


async def run(ctx: JobContext) -> None:
    ctx.run.warn("privileged-roles is not implemented yet")


JOB = JobSpec(
    id="privileged-roles",
    title="PIM role assignments against the approved register",
    policy_section="privileged_roles",
    policy_model=Policy,
    permissions=("RoleManagement.Read.Directory", "RoleEligibilitySchedule.Read.Directory",
                 "RoleAssignmentSchedule.Read.Directory", "User.Read.All",
                 "GroupMember.Read.All", "AuditLog.Read.All"),
    changes_tenant=False,
    run=run,
)
