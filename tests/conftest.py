"""Shared fixtures: settings on a sandbox tenant, and running a job against a tenant object."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from agent.graph.client import GraphClient, RetryPolicy
from agent.graph.connect import SANDBOX_GRAPH_URL, _with_sdk_middleware
from agent.run import RunReport
from agent.runner import run_job
from agent.settings import Settings, load_settings
from agent.tomlwrite import dumps

TENANT_ID = "00000000-0000-4000-8000-0000000000aa"
CLIENT_ID = "00000000-0000-4000-8000-0000000000bb"


class RecordingSleep:
    """Stands in for asyncio.sleep in the retry layer: records each wait, waits no time."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def write_config(path: Path, **data: Any) -> Path:
    path.write_text(dumps(data), encoding="utf-8")
    return path


def make_settings(tmp_path: Path, *, graph_url: str | None = None, **sections: Any) -> Settings:
    """Settings on a sandbox tenant with the state under tmp_path; sections are policy tables."""
    config = write_config(
        tmp_path / "agent.toml",
        tenant_id=TENANT_ID,
        client_id=CLIENT_ID,
        graph_url=graph_url or f"sandbox:{tmp_path / 'tenant.json'}",
        state_dir=str(tmp_path / "state"),
        **sections,
    )
    return load_settings(config)


def sandbox_client(tenant: Any, *, sleep: Callable[[float], Any] | None = None,
                   retry: RetryPolicy | None = None, roles: list[str] | None = None) -> GraphClient:
    from agent.sandbox import SandboxTokenSource
    from agent.sandbox.transport import SandboxTransport

    http = _with_sdk_middleware(httpx.AsyncClient(transport=SandboxTransport(tenant)))
    return GraphClient(http, SandboxTokenSource(roles), graph_url=SANDBOX_GRAPH_URL,
                       retry=retry, sleep=sleep or RecordingSleep())


async def run_on(tenant: Any, settings: Settings, job_id: str, *, now: datetime,
                 dry_run: bool = False, final: bool = False, trigger: str = "cli",
                 sleep: Callable[[float], Any] | None = None,
                 scheduled_for: datetime | None = None) -> RunReport:
    """Run a job through the real runner against an in-memory sandbox tenant."""
    async with sandbox_client(tenant, sleep=sleep) as graph:
        return await run_job(settings, job_id, trigger=trigger, dry_run=dry_run, final=final,
                             now=now, graph=graph, scheduled_for=scheduled_for)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No DAP_AGENT_* setting leaks in from the outside, and a test that ran the CLI
    in-process (which configures structlog) leaves the logging set-up as it found it."""
    for key in list(os.environ):
        if key.startswith("DAP_AGENT_"):
            monkeypatch.delenv(key)
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def recording_sleep() -> RecordingSleep:
    return RecordingSleep()
