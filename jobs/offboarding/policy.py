"""The `[offboarding]` policy table."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from agent.job import Accounts, ChangingJobPolicy

GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


class Policy(ChangingJobPolicy):
    schedule: str = "0 6 * * *"
    leave_group_id: str = ""
    retention_months: int = Field(default=3, ge=1, le=120)
    protected_users: Accounts = Field(default_factory=list)
    max_disable_per_run: int = Field(default=25, ge=0)
    max_purge_per_run: int = Field(default=10, ge=0)
    max_device_actions_per_run: int = Field(default=10, ge=0)  # wipes + retires together
    wipe_devices: bool = True
    # a purge is made only after an earlier run announced it this many days before
    purge_notice_days: int = Field(default=7, ge=0, le=365)
    purge_requires_approval: bool = False  # true: a purge also needs `dap-agent approve`

    @field_validator("leave_group_id")
    @classmethod
    def _group_id(cls, value: str) -> str:
        value = value.strip()
        if value and not GUID.match(value):
            raise ValueError("must be the group's object id (a GUID) or empty")
        return value
