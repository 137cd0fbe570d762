"""Benchmark: privileged-roles requests on a generated tenant (default 100,000 users, 1,000
role assignments). Not a test; needs only the README's install (no pytest).

    .venv/bin/python bench/bench_privileged_roles.py [--users 100000] [--assignments 1000]
        [--json]

Runs the real job through the runner and the real GraphClient over the in-process sandbox
transport (no latency), with a sleep that records waits instead of spending them: the
pacing of the MFA registration report (five requests per 10 seconds, Graph's documented
limit for the identity-and-access reports) shows as `paced_wait_seconds`, the time a real
tenant run would spend waiting for that budget.

Lower bound of the job's approach: every role list read once at the sandbox's page (Graph
documents no `$top` for them), each role-holding group's members once (`$top` 999), and
the MFA report filtered on 15 holders a request (the `$filter` clause limit), so
ceil(user holders / 15) report requests whatever the tenant's size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import re
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NOW = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)  # generate_tenant's default clock
GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                  r"[0-9a-fA-F]{12}")
FILTER_CHUNK = 15


class RecordingSleep:
    """Records each wait, spends none (the retry layer and the pacer both use it)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def settings_in(workdir: Path) -> Any:
    from agent.settings import load_settings
    from agent.tomlwrite import dumps

    config = workdir / "agent.toml"
    config.write_text(dumps({
        "tenant_id": "00000000-0000-4000-8000-0000000000aa",
        "client_id": "00000000-0000-4000-8000-0000000000bb",
        "graph_url": f"sandbox:{workdir / 'unused.json'}",
        "state_dir": str(workdir / "state"),
    }), encoding="utf-8")
    return load_settings(config)


async def run_once(tenant: Any, workdir: Path, sleep: RecordingSleep) -> Any:
    import httpx

    from agent.graph.client import GraphClient
    from agent.graph.connect import SANDBOX_GRAPH_URL, _with_sdk_middleware
    from agent.runner import run_job
    from agent.sandbox import SandboxTokenSource
    from agent.sandbox.transport import SandboxTransport

    http = _with_sdk_middleware(httpx.AsyncClient(transport=SandboxTransport(tenant)))
    async with GraphClient(http, SandboxTokenSource(), graph_url=SANDBOX_GRAPH_URL,
                           sleep=sleep) as graph:
        return await run_job(settings_in(workdir), "privileged-roles", now=NOW, graph=graph)


def lower_bound(tenant: Any, report: Any, user_holders: int) -> dict[str, int]:
    from agent.sandbox import routes

    def pages(items: int, size: int) -> int:
        return max(1, math.ceil(items / size))

    base = "/roleManagement/directory"
    bound = {
        f"{base}/roleDefinitions": pages(len(tenant.all("roleDefinitions")),
                                         routes.ROLE_DEFINITIONS.page_size),
        f"{base}/roleAssignmentScheduleInstances": pages(
            len(tenant.all("roleAssignmentScheduleInstances")),
            routes.ROLE_ASSIGNMENT_INSTANCES.page_size),
        f"{base}/roleEligibilityScheduleInstances": pages(
            len(tenant.all("roleEligibilityScheduleInstances")),
            routes.ROLE_ELIGIBILITY_INSTANCES.page_size),
        f"{base}/roleAssignments": pages(len(tenant.all("roleAssignments")),
                                         routes.ROLE_ASSIGNMENTS.page_size),
    }
    groups = report.summary.get("groups_expanded", 0)
    if groups:
        bound["/groups/{id}/transitiveMembers"] = groups
    bound["/reports/authenticationMethods/userRegistrationDetails"] = \
        math.ceil(user_holders / FILTER_CHUNK)
    return bound


def _user_holders(report: Any) -> int:
    import csv

    path = Path(report.summary["export_path"])
    with path.open(encoding="utf-8", newline="") as handle:
        return len({row["holder_id"] for row in csv.DictReader(handle)
                    if row["holder_type"] == "user"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--assignments", type=int, default=1_000)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)

    import structlog

    from agent.sandbox.generate import generate_tenant

    # the numbers, not the job's request log, go to stdout
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    started = time.perf_counter()
    tenant = generate_tenant(users=args.users, role_assignments=args.assignments, now=NOW)
    build = time.perf_counter() - started
    sleep = RecordingSleep()
    with tempfile.TemporaryDirectory(prefix="bench-pim-") as tmp:
        started = time.perf_counter()
        report = asyncio.run(run_once(tenant, Path(tmp), sleep))
        wall = time.perf_counter() - started
        holders = _user_holders(report) if report.status == "ok" else 0
        bound = lower_bound(tenant, report, holders) if report.status == "ok" else {}
    paths = Counter(GUID.sub("{id}", r.path) for r in tenant.requests)
    result = {
        "users": args.users,
        "role_assignments": args.assignments,
        "status": report.status,
        "error": report.error,
        "user_holders": holders,
        "requests": sum(paths.values()),
        "requests_by_path": dict(sorted(paths.items())),
        "lower_bound": sum(bound.values()),
        "lower_bound_by_path": bound,
        "throttled_429": sum(1 for r in tenant.requests if r.status == 429),
        "paced_wait_seconds": round(sum(sleep.waits), 1),
        "tenant_build_seconds": round(build, 1),
        "wall_seconds_without_waits": round(wall, 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:28} {value}")
    return 0 if report.status == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
