"""Generated big tenants, and the demo tenant served end to end on every list endpoint."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest

from agent.sandbox import demo_tenant, routes
from agent.sandbox.generate import generate_tenant
from agent.sandbox.listing import Cursors
from tests.helpers_sandbox import NOW, connect


def test_generated_tenant_sizes_and_mix() -> None:
    tenant = generate_tenant(users=2000, managed_devices=300, entra_devices=320,
                             recovery_keys=150, role_assignments=40, seed=7)
    counts = {k: len(v) for k, v in tenant.collections.items()}
    assert counts["users"] == 2000 and counts["managedDevices"] == 300
    assert counts["devices"] == 320 and counts["recoveryKeys"] == 150
    assert counts["roleAssignmentScheduleInstances"] + \
        counts["roleEligibilityScheduleInstances"] == 40
    users = tenant.all("users")
    assert 0.01 < sum(not u["accountEnabled"] for u in users) / 2000 < 0.1
    assert any(u["userType"] == "Guest" for u in users)
    assert any(s["assignedByGroup"] for u in users for s in u["licenseAssignmentStates"])
    assert any(s["state"] == "Error" for u in users for s in u["licenseAssignmentStates"])
    compliance = Counter(d["complianceState"] for d in tenant.all("managedDevices"))
    assert compliance["compliant"] > 200 and compliance["noncompliant"] > 0
    managed_ids = {d["azureADDeviceId"] for d in tenant.all("managedDevices")}
    assert any(d["deviceId"] not in managed_ids for d in tenant.all("devices"))  # unmanaged


def test_generation_is_deterministic_per_seed() -> None:
    one = generate_tenant(users=50, managed_devices=10, seed=1)
    assert one.to_json() == generate_tenant(users=50, managed_devices=10, seed=1).to_json()
    assert one.to_json() != generate_tenant(users=50, managed_devices=10, seed=2).to_json()


async def test_a_listing_is_a_snapshot_sliced_by_offset(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Later pages come from the cursor of the first page: no rescan, no filter re-run."""
    tenant = generate_tenant(users=5000, seed=2)
    graph, _, _ = connect(tenant)
    calls = Counter[str]()
    original = Cursors.add

    def counting_add(self: Cursors, items: list[Mapping[str, Any]]) -> str:
        calls["snapshots"] += 1
        return original(self, items)

    monkeypatch.setattr(Cursors, "add", counting_add)
    async with graph:
        result = await graph.collect("/users", permission="x", top=999,
                                     filter="accountEnabled eq true", select=("id",))
    assert result.pages == 5 and calls["snapshots"] == 1
    assert len(result.items) == sum(u["accountEnabled"] for u in tenant.all("users"))


LIST_ROUTES = [r for r in routes.ROUTES if r.method == "GET" and "{" not in r.template
               and r.spec is not None]


@pytest.mark.parametrize("route", LIST_ROUTES, ids=lambda r: f"{r.version}{r.template}")
async def test_every_list_endpoint_serves_the_demo_tenant(route: routes.Route) -> None:
    graph, transport, _ = connect(demo_tenant(NOW))
    async with graph:
        result = await graph.collect(route.template, permission="x", version=route.version)
    assert all(not k.startswith("_") for item in result.items for k in item)
    assert all(r.status == 200 for r in transport.tenant.requests)


async def test_latency_is_awaited_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    tenant = generate_tenant(users=30, seed=4)
    graph, transport, _ = connect(tenant)
    transport.latency = 0.25
    monkeypatch.setattr("agent.sandbox.transport.asyncio.sleep", fake_sleep)
    async with graph:
        await graph.collect("/users", permission="x", top=10)
    assert waits == [0.25, 0.25, 0.25]


async def test_registration_details_page_over_a_big_tenant() -> None:
    tenant = generate_tenant(users=1500, seed=6)
    graph, _, _ = connect(tenant)
    async with graph:
        result = await graph.collect("/reports/authenticationMethods/userRegistrationDetails",
                                     permission="AuditLog.Read.All", top=999)
    assert result.pages == 2 and len({r["id"] for r in result.items}) == 1500
