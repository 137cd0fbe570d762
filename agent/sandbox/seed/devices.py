"""Demo-tenant seed for this domain (stub; filled in by the job's helper)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.sandbox.tenant import SandboxTenant

DEMO_POLICY: dict[str, Any] = {}


def seed(tenant: SandboxTenant, now: datetime) -> None:
    pass
