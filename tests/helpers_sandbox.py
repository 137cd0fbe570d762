"""Fixtures for the sandbox tests: a small tenant and GraphClients on it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from agent.graph.client import GraphClient, RetryPolicy
from agent.graph.connect import _with_sdk_middleware
from agent.sandbox import SANDBOX_GRAPH_URL, SandboxTokenSource
from agent.sandbox import builders as b
from agent.sandbox.tenant import SandboxTenant
from agent.sandbox.transport import SandboxTransport
from tests.conftest import RecordingSleep

NOW = datetime(2026, 6, 15, 9, 0, tzinfo=UTC)
E5 = "06ebc4ee-1bb5-47dd-8120-11324bc54e06"
EXO1 = "4b9405b0-7788-4568-add1-99614e613b69"
BASE = SANDBOX_GRAPH_URL + "/v1.0"


def small_tenant(users: int = 25) -> SandboxTenant:
    """`users` staff (every 5th Exchange-only, every 7th disabled), an admin, a guest,
    groups, devices, keys, policies and roles."""
    tenant = SandboxTenant(NOW)
    tenant.add("subscribedSkus", b.subscribed_sku(E5, "SPE_E5", 50))
    tenant.add("subscribedSkus", b.subscribed_sku(EXO1, "EXCHANGESTANDARD", 50))
    for i in range(users):
        tenant.add("users", b.user(f"user{i:03d}@{b.DOMAIN}", f"User {i:03d}",
                                   licenses=(EXO1,) if i % 5 == 0 else (E5,),
                                   enabled=i % 7 != 0,
                                   leave=NOW - timedelta(days=10) if i == 3 else None))
    admin = tenant.add("users", b.user(f"admin@{b.DOMAIN}", "Admin", licenses=(E5,)))
    guest = tenant.add("users", b.user("ext_partner.example#EXT#@contoso.nl", "Gast",
                                       user_type="Guest"))
    app = tenant.add("servicePrincipals", b.service_principal("backup-app"))
    inner = tenant.add("groups", b.group("Inner", members=[guest, app]))
    tenant.add("groups", b.group("Outer", members=[admin, inner]))
    for name in ("Global Administrator", "User Administrator"):
        tenant.add("roleDefinitions", b.role_definition(name))
    tenant.add("roleAssignments", b.role_assignment(admin["id"], "Global Administrator"))
    tenant.add("roleAssignmentScheduleInstances",
               b.role_assignment_instance(admin["id"], "Global Administrator"))
    tenant.add("roleEligibilityScheduleInstances",
               b.role_eligibility_instance(guest["id"], "User Administrator",
                                           end=NOW + timedelta(days=30)))
    owner = tenant.get("users", b.oid(f"user:user001@{b.DOMAIN}"))
    for i, os_name in enumerate(("Windows", "Windows", "iOS")):
        name = f"DEV-{i}"
        tenant.add("devices", b.device(name, os=os_name))
        tenant.add("managedDevices", b.managed_device(name, owner=owner, os=os_name,
                                                      owner_type="personal" if i == 2
                                                      else "company"))
    tenant.add("recoveryKeys", b.recovery_key("DEV-0"))
    tenant.add("deviceConfigurations", b.device_configuration(
        "Endpoint protection", assignments=[b.assignment("x", all_devices=True)],
        bitLockerRemovableDrivePolicy={"requireEncryptionForWriteAccess": True}))
    tenant.add("configurationPolicies", b.configuration_policy(
        "Removable media", settings=[b.catalog_setting(
            "device_vendor_msft_bitlocker_removabledrivesrequireencryption", "1")]))
    return tenant


def user_id(n: int) -> str:
    return b.oid(f"user:user{n:03d}@{b.DOMAIN}")


ADMIN_ID = b.oid(f"user:admin@{b.DOMAIN}")


def connect(tenant: SandboxTenant, *, roles: Sequence[str] | None = None,
            path: Path | None = None, sleep: RecordingSleep | None = None,
            retry: RetryPolicy | None = None) -> tuple[GraphClient, SandboxTransport,
                                                       SandboxTokenSource]:
    """A GraphClient (with the SDK's middleware, as in production) on the tenant."""
    transport = SandboxTransport(tenant, path=path)
    tokens = SandboxTokenSource(roles)
    http = _with_sdk_middleware(httpx.AsyncClient(transport=transport))
    client = GraphClient(http, tokens, graph_url=SANDBOX_GRAPH_URL, sleep=sleep or RecordingSleep(),
                         retry=retry)
    return client, transport, tokens


async def raw(transport: SandboxTransport, method: str, path: str, *,
              token: str | None = "default", headers: dict[str, str] | None = None,
              **kwargs: Any) -> httpx.Response:
    """A bare request (no GraphClient), to look at statuses, headers and bodies."""
    sent = dict(headers or {})
    if token == "default":
        token = await SandboxTokenSource().token()
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient(transport=transport) as http:
        url = path if path.startswith("http") else BASE + path
        return await http.request(method, url, headers=sent, **kwargs)
