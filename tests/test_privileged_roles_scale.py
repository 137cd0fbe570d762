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
