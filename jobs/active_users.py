"""Job `active-users`: the monthly count of active users (E5 or Exchange-only) and its export.

(Stub: the active-users issue builds it.)
"""

from __future__ import annotations

from pydantic import Field

from agent.job import JobContext, JobPolicy, JobSpec

# Full E5 seats (not the E5 Security / Compliance add-ons), from Microsoft's licensing reference.
DEFAULT_E5_SKU_IDS = [
    "06ebc4ee-1bb5-47dd-8120-11324bc54e06",  # SPE_E5: Microsoft 365 E5
]
DEFAULT_EXCHANGE_ONLY_SKU_IDS = [
    "4b9405b0-7788-4568-add1-99614e613b69",  # EXCHANGESTANDARD: Exchange Online (Plan 1)
    "19ec0d23-8335-4cbd-94ac-6050e30712fa",  # EXCHANGEENTERPRISE: Exchange Online (Plan 2)
    "80b2d799-d2ba-4d2a-8842-fb0d0f3a4b82",  # EXCHANGEDESKLESS: Exchange Online Kiosk
]


class Policy(JobPolicy):
    schedule: str = "last-working-day 07:00"
    e5_sku_ids: list[str] = Field(default_factory=lambda: list(DEFAULT_E5_SKU_IDS))
    exchange_only_sku_ids: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EXCHANGE_ONLY_SKU_IDS))
    count_disabled: bool = False
    exclude_users: list[str] = Field(default_factory=list)


async def run(ctx: JobContext) -> None:
    ctx.run.warn("active-users is not implemented yet")


JOB = JobSpec(
    id="active-users",
    title="Monthly active-user count and export",
    policy_section="active_users",
    policy_model=Policy,
    permissions=("User.Read.All", "Organization.Read.All"),
    changes_tenant=False,
    run=run,
)
