"""The demo tenant: one seed module per domain, composed in a fixed order.

Each module has `seed(tenant, now)` and `DEMO_POLICY` (its job's TOML tables for the demo
configuration). Later seeds may refer to objects of earlier ones (base staff, SKUs).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agent.sandbox.seed import base, devices, leavers, licensing, roles, secure_score
from agent.sandbox.tenant import SandboxTenant

SEEDS = (base, licensing, leavers, devices, roles, secure_score)


def demo_tenant(now: datetime) -> SandboxTenant:
    """A fresh demo tenant with dates placed relative to `now`."""
    tenant = SandboxTenant(now)
    for module in SEEDS:
        module.seed(tenant, tenant.now)
    return tenant


def _merge_policy() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for module in SEEDS:
        for section, table in module.DEMO_POLICY.items():
            if isinstance(table, dict) and isinstance(merged.get(section), dict):
                merged[section] = {**merged[section], **table}
            else:
                merged[section] = table
    return merged


# section -> table, e.g. {"offboarding": {"mode": "enforce", ...}, "privileged_roles": {...}}
DEMO_POLICY: dict[str, Any] = _merge_policy()
