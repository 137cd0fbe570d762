"""Helpers for the offboarding tests: small sandbox tenants, a crashing transport, counters."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from agent.graph.client import GraphClient
from agent.graph.connect import SANDBOX_GRAPH_URL, _with_sdk_middleware
from agent.ledger import Ledger
from agent.run import RunReport
from agent.runner import run_job
from agent.sandbox import SandboxTokenSource
from agent.sandbox import builders as b
from agent.sandbox.seed import base
from agent.sandbox.tenant import SandboxTenant
from agent.sandbox.transport import SandboxTransport
from agent.settings import Settings
from jobs.offboarding import LEDGER_FILE
from tests.conftest import RecordingSleep, make_settings

NOW = datetime(2026, 3, 18, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
D = b.DOMAIN


def uid(upn: str) -> str:
    return b.oid(f"user:{upn.lower()}")


def did(name: str) -> str:
    return b.oid(f"managedDevice:{name}")


def small_tenant(now: datetime = NOW) -> SandboxTenant:
    """Base staff only (no leavers): each test adds the leavers it is about."""
    tenant = SandboxTenant(now)
    base.seed(tenant, tenant.now)
    return tenant


def add_leaver(tenant: SandboxTenant, local: str, *, left_days_ago: float | None = 2,
               enabled: bool = True, revoked_days_after: float | None = None,
               leave: datetime | None = None, **extra: Any) -> dict[str, Any]:
    """A user whose leave date is `left_days_ago` days before the tenant's now (None: none).
    `revoked_days_after`: sessions were revoked that many days after the leave date."""
    upn = f"{local}@{D}"
    if leave is None and left_days_ago is not None:
        leave = tenant.now - left_days_ago * DAY
    if revoked_days_after is not None and leave is not None:
        extra["signInSessionsValidFromDateTime"] = b.iso(leave + revoked_days_after * DAY)
    return tenant.add("users", b.user(upn, local.replace(".", " ").title(), leave=leave,
                                      enabled=enabled, created=tenant.now - 900 * DAY, **extra))


def add_device(tenant: SandboxTenant, name: str, owner: dict[str, Any], *,
               owner_type: str = "company", **extra: Any) -> dict[str, Any]:
    return tenant.add("managedDevices", b.managed_device(name, owner=owner,
                                                         owner_type=owner_type, **extra))


def add_deleted(tenant: SandboxTenant, local: str, *, left_days_ago: float | None,
                enabled: bool = False) -> dict[str, Any]:
    leave = tenant.now - left_days_ago * DAY if left_days_ago is not None else None
    obj = b.user(f"{local}@{D}", local.title(), leave=leave, enabled=enabled)
    obj["@odata.type"] = "#microsoft.graph.user"
    obj["deletedDateTime"] = b.iso(tenant.now - DAY)
    return tenant.add("deletedItems", obj)


def settings(tmp_path: Path, **policy: Any) -> Settings:
    """Enforce mode unless the test says otherwise; other sections via `extra_sections`."""
    sections = policy.pop("extra_sections", {})
    return make_settings(tmp_path, offboarding={"mode": "enforce", **policy}, **sections)


class Crash(BaseException):
    """The process dying: not an Exception, so nothing in the agent catches it."""


class CrashingTransport(httpx.AsyncBaseTransport):
    """The sandbox, but the process 'dies' at a chosen write (counted from 1):
    `after_write=n`: right after write n was applied, before its answer is read;
    `before_write=n`: right before write n is sent (everything up to n-1 completed).
    `on_request`: a hook called with each request before the sandbox sees it."""

    def __init__(self, tenant: SandboxTenant, *, after_write: int = 0, before_write: int = 0,
                 on_request: Callable[[httpx.Request], None] | None = None) -> None:
        self.inner = SandboxTransport(tenant)
        self.after_write = after_write
        self.before_write = before_write
        self.on_request = on_request
        self.writes = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.on_request is not None:
            self.on_request(request)
        write = request.method != "GET"
        if write:
            self.writes += 1
            if self.writes == self.before_write:
                raise Crash(f"crash before write {self.writes}")
        response = await self.inner.handle_async_request(request)
        if write and self.writes == self.after_write:
            raise Crash(f"crash after write {self.writes}")
        return response


async def run_off(tenant: SandboxTenant, cfg: Settings, *, now: datetime = NOW,
                  dry_run: bool = False,
                  transport: httpx.AsyncBaseTransport | None = None) -> RunReport:
    """Run offboarding through the real runner over the sandbox (or `transport`)."""
    http = _with_sdk_middleware(
        httpx.AsyncClient(transport=transport or SandboxTransport(tenant)))
    async with GraphClient(http, SandboxTokenSource(), graph_url=SANDBOX_GRAPH_URL,
                           sleep=RecordingSleep()) as graph:
        return await run_job(cfg, "offboarding", dry_run=dry_run, now=now, graph=graph)


def writes(tenant: SandboxTenant) -> Counter[tuple[str, str]]:
    """Successful writes the sandbox applied, by (method, path)."""
    return Counter((r.method, r.path) for r in tenant.requests
                   if r.method != "GET" and 200 <= r.status < 300)


def write_attempts(tenant: SandboxTenant) -> int:
    return sum(1 for r in tenant.requests if r.method != "GET")


def done(report: RunReport) -> list[tuple[str, str | None]]:
    return [(a.action, a.target["name"]) for a in report.actions if a.status == "done"]


def by_status(report: RunReport, status: str) -> set[tuple[str, str | None]]:
    return {(a.action, a.target["name"]) for a in report.actions if a.status == status}


def rules(report: RunReport) -> dict[str, set[str | None]]:
    found: dict[str, set[str | None]] = {}
    for f in report.findings:
        found.setdefault(f.rule, set()).add(f.subject.name)
    return found


def ledger_of(cfg: Settings) -> Ledger:
    return Ledger.open(cfg.state_dir / LEDGER_FILE, write=False)


def announce(cfg: Settings | Path, *upns: str, days_ago: float = 8, now: datetime = NOW) -> None:
    """What an earlier run did: list these users' purges in the veto window (the notice
    rule then lets a purge whose retention has ended go ahead). `cfg`: settings or the
    state dir."""
    state_dir = cfg if isinstance(cfg, Path) else cfg.state_dir
    ledger = Ledger.open(state_dir / LEDGER_FILE)
    for upn in upns:
        upn = upn if "@" in upn else f"{upn}@{D}"
        ledger.record("announced", uid(upn), at=now - days_ago * DAY, run_id="earlier-run",
                      upn=upn)
