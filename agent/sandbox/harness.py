"""Running a job against an in-memory sandbox tenant, for benchmarks and scripts.

What the test suite's fixtures do, without pytest: `bench/` runs after the README's first
command (`pip install -e .`), which does not install the test extra.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.run import RunReport
from agent.settings import Settings, load_settings
from agent.tomlwrite import dumps

TENANT_ID = "00000000-0000-4000-8000-0000000000aa"
CLIENT_ID = "00000000-0000-4000-8000-0000000000bb"


def sandbox_settings(workdir: Path, **sections: Any) -> Settings:
    """Settings on a sandbox tenant with the state under `workdir`; sections are tables."""
    config = workdir / "agent.toml"
    config.write_text(dumps({"tenant_id": TENANT_ID, "client_id": CLIENT_ID,
                             "graph_url": f"sandbox:{workdir / 'tenant.json'}",
                             "state_dir": str(workdir / "state"), **sections}),
                      encoding="utf-8")
    return load_settings(config)


async def run_on_tenant(tenant: Any, settings: Settings, job_id: str, *, now: datetime,
                        dry_run: bool = False, final: bool = False,
                        sleep: Callable[[float], Any] | None = None) -> RunReport:
    """The job through the real runner, GraphClient and SDK middleware, on `tenant`
    (waits of the retry layer are skipped unless `sleep` is given)."""
    import httpx

    from agent.graph.client import GraphClient
    from agent.graph.connect import SANDBOX_GRAPH_URL, _with_sdk_middleware
    from agent.runner import run_job
    from agent.sandbox import SandboxTokenSource
    from agent.sandbox.transport import SandboxTransport

    async def no_wait(_: float) -> None:
        return None

    http = _with_sdk_middleware(httpx.AsyncClient(transport=SandboxTransport(tenant)))
    async with GraphClient(http, SandboxTokenSource(), graph_url=SANDBOX_GRAPH_URL,
                           sleep=sleep or no_wait) as graph:
        return await run_job(settings, job_id, now=now, dry_run=dry_run, final=final,
                             graph=graph)
