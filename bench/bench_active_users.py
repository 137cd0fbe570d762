"""Benchmark: active-users on a generated tenant (default 100,000 users). Not a test.

Runs the real job through the runner and the real GraphClient (with the SDK's middleware)
over the in-process sandbox transport, and prints:

- Graph requests made vs. the lower bound `ceil(N/999) + 1` (the /users pages at $top=999
  plus one /subscribedSkus);
- wall and CPU time of the run, and CPU per 1,000 users;
- the CPU split by who spends it, from a second, profiled run (cProfile; shares of its
  own total applied to the unprofiled CPU time): our code (agent/, jobs/), the SDK/httpx
  stack (httpx, msgraph-core/kiota middleware, tenacity), the
  sandbox (the fake Graph server: it would not run in production), the asyncio loop, and
  the rest. Our GraphClient (agent/graph/client.py: paging, retries, JSON decoding of the
  pages) is listed on its own, apart from the SDK/httpx share. Time in builtins and the
  standard library (json, csv, hashlib, ...) is charged to the caller that asked for it;
- peak RSS (the process high-water mark; it includes the generated tenant held by the
  in-process sandbox, so `tenant_rss_mb` is printed too: `peak - tenant` bounds the run).

Wall time on a shared machine includes waiting for a CPU; CPU time is the steady number.
The generated tenant is frozen out of the garbage collector (gc.freeze) before the run.

    .venv/bin/python bench/bench_active_users.py [--users 100000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import logging
import math
import pstats
import resource
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.run import RunReport  # noqa: E402
from agent.sandbox.generate import generate_tenant  # noqa: E402
from agent.sandbox.tenant import SandboxTenant  # noqa: E402

NOW = datetime(2026, 6, 12, 8, 0, tzinfo=UTC)
STDLIB = sysconfig.get_paths()["stdlib"]
CLIENT_PACKAGES = ("/httpx/", "/httpcore/", "/h11/", "/anyio/", "/kiota", "/msgraph",
                   "/tenacity/", "/opentelemetry/")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


async def run_once(tenant: SandboxTenant, workdir: Path) -> RunReport:
    from agent.sandbox.harness import run_on_tenant as run_on
    from agent.sandbox.harness import sandbox_settings as make_settings

    settings = make_settings(workdir)
    return await run_on(tenant, settings, "active-users", now=NOW)


async def _warm_up() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-active-users-") as tmp:
        await run_once(generate_tenant(users=10, now=NOW), Path(tmp))


def timed_run(tenant: SandboxTenant) -> tuple[RunReport, float, float, int]:
    tenant.requests.clear()
    with tempfile.TemporaryDirectory(prefix="bench-active-users-") as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        report = asyncio.run(run_once(tenant, Path(tmp)))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return report, wall, cpu, Path(report.summary["export_path"]).stat().st_size


# ---- CPU attribution -------------------------------------------------------------------------

def _bucket(filename: str) -> str | None:
    """Who owns a function's time; None: charge it to its callers (builtins, stdlib)."""
    if filename == "~" or filename.startswith("<"):
        return None
    if "site-packages" in filename:
        if any(p in filename for p in CLIENT_PACKAGES):
            return "SDK/httpx (httpx, kiota + msgraph-core middleware, tenacity)"
        if "/structlog/" in filename:
            return "logging (structlog)"
        return "other libraries (pydantic, ...)"
    if "/asyncio/" in filename:
        return "asyncio loop"
    if filename.startswith(STDLIB):
        return None
    if "/agent/sandbox/" in filename:
        return "sandbox (fake Graph server)"
    if "/agent/graph/client.py" in filename:
        return "GraphClient (agent/graph/client.py, incl. json.loads of pages)"
    if "/tests/" in filename or "/bench/" in filename:
        return "harness"
    if "/agent/" in filename or "/jobs/" in filename:
        return "our code (agent/, jobs/)"
    return "other"


def attribute(stats: pstats.Stats) -> Counter[str]:
    """Seconds per owner. A builtin/stdlib function's own time is split over its callers
    in proportion to the cumulative time each call edge took, up to the first owner."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    memo: dict[Any, dict[str, float]] = {}

    def owners(func: Any, seen: frozenset[Any]) -> dict[str, float]:
        """The fractions of `func`'s time that belong to each owner."""
        owner = _bucket(func[0])
        if owner is not None:
            return {owner: 1.0}
        if func in memo:
            return memo[func]
        callers = raw.get(func, (0, 0, 0, 0, {}))[4]
        edges = {c: e[3] for c, e in callers.items() if c not in seen and e[3] > 0}
        total = sum(edges.values())
        if not edges or total <= 0:
            result = {"builtins/stdlib (no caller)": 1.0}
        else:
            result = {}
            for caller, weight in edges.items():
                for name, part in owners(caller, seen | {func}).items():
                    result[name] = result.get(name, 0.0) + part * weight / total
        if not seen:
            memo[func] = result
        return result

    shares: Counter[str] = Counter()
    for func, (_, _, tottime, _, _) in raw.items():
        if tottime:
            for name, part in owners(func, frozenset()).items():
                shares[name] += tottime * part
    return shares


def profiled_shares(tenant: SandboxTenant) -> dict[str, float]:
    profiler = cProfile.Profile()
    tenant.requests.clear()
    with tempfile.TemporaryDirectory(prefix="bench-active-users-") as tmp:
        profiler.enable()
        asyncio.run(run_once(tenant, Path(tmp)))
        profiler.disable()
    shares = attribute(pstats.Stats(profiler))
    shares.pop("harness", None)
    total = sum(shares.values())
    return {k: v / total for k, v in shares.most_common()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled run")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    # warm up: imports (msgraph-core, kiota, pydantic models, ...) are not the run's cost
    asyncio.run(_warm_up())
    started = time.perf_counter()
    tenant = generate_tenant(users=args.users, now=NOW)
    build_seconds = time.perf_counter() - started
    # In production the tenant lives in Microsoft's datacentre, not in our heap: keep the
    # generated tenant's millions of objects out of the garbage collector's passes, or
    # every gen-2 collection during the run would be charged to the run.
    gc.collect()
    gc.freeze()
    tenant_rss = current_rss_mb()
    users = len(tenant.all("users"))

    report, wall, cpu, export_bytes = timed_run(tenant)
    requests = Counter(f"{r.method} {r.path}" for r in tenant.requests)
    bound = math.ceil(users / 999) + 1
    per_k = 1000 / users
    result: dict[str, Any] = {
        "users": users,
        "status": report.status,
        "active": report.summary["active"],
        "e5": report.summary["e5"],
        "exchange_only": report.summary["exchange_only"],
        "licensed_disabled": report.summary["licensed_disabled"],
        "requests": sum(requests.values()),
        "lower_bound": bound,
        "requests_by_path": dict(requests),
        "tenant_build_seconds": round(build_seconds, 2),
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "cpu_ms_per_1000_users": round(cpu * 1000 * per_k, 1),
        "tenant_rss_mb": round(tenant_rss, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "export_bytes": export_bytes,
    }
    if not args.no_profile:
        shares = profiled_shares(tenant)
        result["cpu_split"] = {
            name: {"share": round(share, 3),
                   "cpu_ms_per_1000_users": round(cpu * share * 1000 * per_k, 1)}
            for name, share in shares.items()}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            if key == "cpu_split":
                print("cpu_split (share of CPU, ms per 1,000 users):")
                for name, part in value.items():
                    print(f"  {name:64} {part['share']:6.1%} {part['cpu_ms_per_1000_users']:8.1f}")
            else:
                print(f"{key:28} {value}")
    return 0 if report.status == "ok" and result["requests"] == bound else 1


if __name__ == "__main__":
    raise SystemExit(main())
