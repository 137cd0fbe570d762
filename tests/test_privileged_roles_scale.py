"""Many role holders: MFA registration in a few filtered requests, paced to the reports'
documented five requests per 10 seconds."""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path

from agent.graph import roles
from agent.sandbox.generate import generate_tenant
from tests.conftest import RecordingSleep, make_settings, run_on


async def test_many_holders_cost_one_report_request_per_15_and_stay_paced(
        tmp_path: Path) -> None:
    tenant = generate_tenant(users=400, role_assignments=300)
    sleep = RecordingSleep()
    started = time.monotonic()
    report = await run_on(tenant, make_settings(tmp_path), "privileged-roles", now=tenant.now,
                          sleep=sleep)
    elapsed = time.monotonic() - started
    assert report.status == "ok", report.error
    holders = report.summary["holders"]
    assert holders > 100
    paths = Counter(r.path for r in tenant.requests)
    assert not any(p.startswith(roles.REGISTRATION_PATH + "/") for p in paths)
    requests = paths[roles.REGISTRATION_PATH]
    assert requests == math.ceil(holders / 15)
    # 5 requests per 10 s: waits (recorded, not spent) plus the real time of the run
    # cover a window for each five requests after the first five
    assert sum(sleep.waits) + elapsed >= (math.ceil(requests / 5) - 1) * roles.REPORT_WINDOW
    assert sum(sleep.waits) > 0
    assert all(r.status == 200 for r in tenant.requests)


class FakeTime:
    """One clock for client and sandbox, moved only by the client's sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def _client_on(tenant: object, fake: FakeTime) -> object:
    import httpx

    from agent.graph.client import GraphClient
    from agent.graph.connect import SANDBOX_GRAPH_URL
    from agent.sandbox import SandboxTokenSource
    from agent.sandbox.transport import SandboxTransport

    transport = SandboxTransport(tenant)  # type: ignore[arg-type]
    transport.clock = fake.clock
    return GraphClient(httpx.AsyncClient(transport=transport), SandboxTokenSource(),
                       graph_url=SANDBOX_GRAPH_URL, sleep=fake.sleep, clock=fake.clock)


async def test_the_sandbox_enforces_the_reports_limit_and_the_job_stays_inside_it(
        tmp_path: Path) -> None:
    """With Graph's "five requests per 10 seconds" enforced (429 beyond), a burst is
    refused, and the job's paced reads never meet a 429."""
    from agent.graph.client import GraphClient
    from agent.runner import run_job

    # 1,000 users: a pass over the whole report (the old way) is 10 pages, 5 too many
    tenant = generate_tenant(users=1000, role_assignments=300)
    tenant.faults.reports_per_10s = roles.REPORT_REQUESTS
    fake = FakeTime()
    async with _client_on(tenant, fake) as graph:  # type: ignore[attr-defined]
        assert isinstance(graph, GraphClient)
        for _ in range(roles.REPORT_REQUESTS + 1):  # unpaced: the sixth is throttled
            await graph.get(roles.REGISTRATION_PATH, permission=roles.MFA_PERMISSION)
        assert [r.status for r in tenant.requests][-2:] == [429, 200]
        assert graph.stats.throttled == 1
        tenant.requests.clear()
        fake.now += 60  # a quiet minute
        report = await run_job(make_settings(tmp_path), "privileged-roles", now=tenant.now,
                               graph=graph)
    assert report.status == "ok", report.error
    statuses = Counter(r.status for r in tenant.requests)
    assert statuses[429] == 0
    assert sum(1 for r in tenant.requests if r.path == roles.REGISTRATION_PATH) > 10
