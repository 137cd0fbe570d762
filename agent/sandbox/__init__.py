"""Sandbox tenant: an in-repo fake of the Microsoft Graph endpoints the jobs use.

`graph_url = "sandbox:"` serves a fresh in-memory demo tenant; `"sandbox:/abs/path.json"` a
file-backed one (created from the demo seed when missing, saved after every write) that
several processes share. Nothing here ever talks to a Microsoft endpoint.

    transport = open_sandbox("sandbox:")
    http = httpx.AsyncClient(transport=transport)
    client = GraphClient(http, SandboxTokenSource(), graph_url=SANDBOX_GRAPH_URL)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from agent.sandbox import auth
from agent.sandbox.builders import TENANT_ID
from agent.sandbox.routes import ALL_PERMISSIONS
from agent.sandbox.seed import DEMO_POLICY, demo_tenant
from agent.sandbox.tenant import Faults, SandboxTenant
from agent.sandbox.transport import SandboxTransport

SANDBOX_GRAPH_URL = "https://graph.sandbox.invalid"
SCHEME = "sandbox:"

__all__ = [
    "ALL_PERMISSIONS",
    "DEMO_POLICY",
    "SANDBOX_GRAPH_URL",
    "Faults",
    "SandboxTenant",
    "SandboxTokenSource",
    "SandboxTransport",
    "demo_tenant",
    "is_sandbox_url",
    "open_sandbox",
]


def is_sandbox_url(url: str) -> bool:
    return url.startswith(SCHEME)


def open_sandbox(url: str, now: datetime | None = None) -> SandboxTransport:
    """The transport for a `sandbox:` graph_url; faults come from DAP_AGENT_SANDBOX_FAULTS."""
    if not is_sandbox_url(url):
        raise ValueError(f"not a sandbox URL: {url!r}")
    now = now or datetime.now(UTC)
    location = url[len(SCHEME):]
    if not location:
        tenant = demo_tenant(now)
        path = None
    else:
        path = Path(location)
        if not path.is_absolute():
            raise ValueError(f"sandbox tenant path must be absolute: {location!r}")
        if path.exists():
            tenant = SandboxTenant.load(path, now=now)
        else:
            tenant = demo_tenant(now)
            tenant.save(path)
    tenant.faults = Faults.from_env()
    return SandboxTransport(tenant, path=path)


class SandboxTokenSource:
    """TokenSource for the sandbox: unsigned tokens carrying `roles` (default: every
    permission the sandbox knows, or DAP_AGENT_SANDBOX_ROLES when set)."""

    def __init__(self, roles: Sequence[str] | None = None, *, tenant_id: str = TENANT_ID,
                 lifetime: float = auth.LIFETIME_SECONDS) -> None:
        self.roles: tuple[str, ...] = (auth.roles_from_env(ALL_PERMISSIONS) if roles is None
                                       else tuple(roles))
        self._tenant_id = tenant_id
        self._lifetime = lifetime
        self._token: str | None = None
        self._expires = 0.0
        self.minted = 0  # how many tokens were issued (tests: refresh happened)

    async def token(self, *, refresh: bool = False) -> str:
        if refresh or self._token is None or time.time() > self._expires - 60:
            self._token = auth.mint(self.roles, tenant_id=self._tenant_id,
                                    lifetime=self._lifetime)
            self._expires = time.time() + self._lifetime
            self.minted += 1
        return self._token

    async def close(self) -> None:
        self._token = None
