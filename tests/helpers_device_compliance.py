"""Helpers for the device-compliance tests: a seeded tenant and its inventory, no HTTP."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from agent.graph import devices as dev
from agent.sandbox.seed import base
from agent.sandbox.seed import devices as seed_devices
from agent.sandbox.tenant import SandboxTenant
from jobs.device_compliance import Evaluation, Inventory, Policy

NOW = datetime(2026, 3, 18, 8, 0, tzinfo=UTC)
TENANT = "00000000-0000-4000-8000-0000000000aa"


def device_tenant(now: datetime = NOW) -> SandboxTenant:
    """Base staff plus this job's seed (the other domains' seeds left out)."""
    tenant = SandboxTenant(now)
    base.seed(tenant, tenant.now)
    seed_devices.seed(tenant, tenant.now)
    return tenant


def _served(obj: dict[str, Any]) -> dict[str, Any]:
    """An object as Graph serves it: no underscore relationship keys."""
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def inventory_from(tenant: SandboxTenant, policy: Policy) -> Inventory:
    """What `read_inventory` would read, mapped by the same parsers, without HTTP."""
    managed = [dev.managed_device_from(_served(d)) for d in tenant.all("managedDevices")]
    entra = [dev.entra_device_from(_served(d)) for d in tenant.all("devices")]
    keys = [dev.recovery_key_from(_served(k)) for k in tenant.all("recoveryKeys")]
    configs = [dev.device_configuration_from({**_served(c), "assignments": c["_assignments"]})
               for c in tenant.all("deviceConfigurations")]
    policies = {p["id"]: p for p in tenant.all("deviceCompliancePolicies")}
    found = [dev.CompliancePolicy(id=i, name=policies[i]["displayName"],
                                  odata_type=policies[i].get("@odata.type"))
             for i in policy.linux_encryption_policy_ids if i in policies]
    statuses = [dev.device_status_from(s, p.id) for p in found
                for s in policies[p.id].get("_deviceStatuses", [])]
    return Inventory(
        managed=managed, entra=entra, keys=keys, configurations=configs,
        linux_policies=found, linux_statuses=statuses,
        completeness=(dev.Completeness("managedDevices", len(managed), len(managed)),
                      dev.Completeness("devices", len(entra), len(entra))),
        missing_linux_policies=[i for i in policy.linux_encryption_policy_ids
                                if i not in policies])


def demo_policy(**overrides: Any) -> Policy:
    return Policy(**{**seed_devices.DEMO_POLICY["device_compliance"], **overrides})


def fired(result: Evaluation) -> dict[str, set[str]]:
    """rule -> names of the subjects it fired on."""
    out: dict[str, set[str]] = defaultdict(set)
    for finding in result.findings:
        out[finding.rule].add(finding.subject.name or finding.subject.id)
    return dict(out)


def fired_from_report(findings: list[Any]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for finding in findings:
        out[finding.rule].add(finding.subject.name or finding.subject.id)
    return dict(out)
