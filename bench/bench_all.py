"""Scale benchmark: all four jobs on generated tenants, behind 20 ms of latency. Not a test.

    .venv/bin/python bench/bench_all.py                      # 10k and 100k users
    .venv/bin/python bench/bench_all.py --users 10000 --json

Set-up, so that each number means what it says:
- the Graph side is the sandbox tenant (agent/sandbox/generate.py: N users, 100k Intune +
  100k Entra devices, their BitLocker keys, 1k role assignments) served over real HTTP on
  127.0.0.1 by a separate process, with `--latency` (20 ms) added to every request
  (SandboxTransport's latency option). Its memory and CPU are not the agent's.
- each job runs in its own client process through the real runner and GraphClient (httpx +
  the SDK's middleware), so its peak RSS (resource.getrusage) is the job's alone, with the
  interpreter and its imports included (`rss_base_mb` is that floor).
- requests: counted by the server per collection (GUID path segments folded into {id}),
  with the items each returned; the lower bound of a collection is ceil(items / the
  endpoint's largest page) (at least 1), i.e. every object read once at the biggest
  page Graph allows (the sandbox's default page where Graph documents no maximum).
- CPU: process time of the run; split by a second, profiled run (cProfile) into our code
  (agent/, jobs/), the SDK and HTTP stack (httpx, httpcore, h11, anyio, kiota, msgraph,
  tenacity, opentelemetry), asyncio, logging and the rest. Time in builtins and the
  standard library (json, csv, hashlib, ...) is charged to whoever called it. "per 10k"
  divides by the objects the job read (the items of its collections, in 10,000s).

Targets (issue 8): requests = lower bound; our CPU < 1 s per 10k objects; RSS < 300 MB at
100k; `dap-agent --help` < 0.5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import math
import os
import pstats
import re
import resource
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NOW = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)  # generate_tenant's default clock
JOBS = ("active-users", "offboarding", "device-compliance", "privileged-roles")
GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                  r"[0-9a-fA-F]{12}")
STDLIB = sysconfig.get_paths()["stdlib"]
SDK = ("/httpx/", "/httpcore/", "/h11/", "/anyio/", "/sniffio/", "/kiota", "/msgraph",
       "/tenacity/", "/opentelemetry/", "/azure/", "/certifi/", "/idna/")


# ---- the Graph side: a generated sandbox tenant behind HTTP --------------------------------

def _declare_nulls(tenant: Any) -> None:
    """Give generated objects every property the jobs `$select` (null when unset): real
    Graph knows a property from its schema, the sandbox from the objects it holds."""
    from agent.graph import devices as dev
    from agent.graph import licensing, lifecycle

    for collection, names in (
            ("managedDevices", (*dev.MANAGED_DEVICE_SELECT, *lifecycle.DEVICE_FIELDS)),
            ("devices", dev.DEVICE_SELECT), ("recoveryKeys", dev.RECOVERY_KEY_SELECT),
            ("users", (*licensing.USER_SELECT, *lifecycle.USER_FIELDS))):
        for obj in tenant.collections[collection].values():
            for name in names:
                obj.setdefault(name, None)
    tenant.touch()


async def serve(args: argparse.Namespace) -> None:
    import httpx
    from aiohttp import web

    from agent.sandbox import routes
    from agent.sandbox.generate import generate_tenant
    from agent.sandbox.transport import SandboxTransport

    started = time.perf_counter()
    tenant = generate_tenant(users=args.users[0], managed_devices=args.managed,
                             entra_devices=args.entra, recovery_keys=args.keys,
                             role_assignments=args.roles, now=NOW)
    _declare_nulls(tenant)
    transport = SandboxTransport(tenant, latency=args.latency)
    stats: dict[str, Counter[str]] = defaultdict(Counter)
    pages: dict[str, int] = {}

    def key_and_page(method: str, path: str) -> tuple[str, int]:
        version, _, rest = path.lstrip("/").partition("/")
        found = routes.match(version, method, "/" + rest)
        route = found.route
        key = f"{method} {'' if version == 'v1.0' else version + ' '}" + \
            (route.template if route else GUID.sub("{id}", "/" + rest))
        spec = route.spec if route else None
        page = 1 if spec is None else (spec.max_top or spec.page_size)
        return key, page

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/__stats":
            return web.json_response({"stats": stats, "pages": pages})
        if request.path == "/__reset":
            stats.clear()
            return web.json_response({})
        body = await request.read()
        outgoing = httpx.Request(request.method, str(request.url),
                                 headers=list(request.headers.items()), content=body)
        response = await transport.handle_async_request(outgoing)
        content = await response.aread()
        key, page = key_and_page(request.method, request.path)
        pages[key] = page
        stats[key]["requests"] += 1
        if response.status_code >= 400:
            stats[key][f"status_{response.status_code}"] += 1
        elif request.method == "GET" and content[:1] == b"{":
            value = json.loads(content).get("value")
            stats[key]["items"] += len(value) if isinstance(value, list) else 1
        headers = {k: v for k, v in response.headers.items()
                   if k.lower() not in ("content-length", "transfer-encoding",
                                        "content-encoding", "connection")}
        return web.Response(status=response.status_code, body=content, headers=headers)

    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    counts = {name: len(objs) for name, objs in tenant.collections.items() if objs}
    print(json.dumps({"port": port, "counts": counts,
                      "build_seconds": round(time.perf_counter() - started, 1)}), flush=True)
    await asyncio.Event().wait()


class Server:
    def __init__(self, args: argparse.Namespace, users: int) -> None:
        command = [sys.executable, __file__, "--serve", "--users", str(users),
                   "--managed", str(args.managed), "--entra", str(args.entra),
                   "--keys", str(args.keys), "--roles", str(args.roles),
                   "--latency", str(args.latency)]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("the sandbox server did not start")
        info = json.loads(line)
        self.port: int = info["port"]
        self.counts: dict[str, int] = info["counts"]
        self.build_seconds: float = info["build_seconds"]

    def get(self, path: str) -> dict[str, Any]:
        import httpx

        data: dict[str, Any] = httpx.get(f"http://127.0.0.1:{self.port}{path}",
                                         timeout=60, trust_env=False).json()
        return data

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


# ---- the agent side: one job in its own process ------------------------------------------------

def _bucket(filename: str) -> str | None:
    """Who owns a function's own time; None: its callers (builtins, the standard library)."""
    if filename == "~" or filename.startswith("<"):
        return None
    if "site-packages" in filename:
        if any(p in filename for p in SDK):
            return "sdk_http"
        if "/structlog/" in filename:
            return "logging"
        return "other_libraries"
    if "/asyncio/" in filename:
        return "asyncio"
    if filename.startswith(STDLIB):
        return None
    if "/bench/" in filename:
        return "harness"
    if "/agent/" in filename or "/jobs/" in filename:
        return "ours"
    return "other"


def cpu_shares(stats: pstats.Stats) -> dict[str, float]:
    """Each function's own time, charged to its bucket, or (builtins, stdlib) split over
    its callers by their cumulative time in it, recursively (memoised; cycles and
    orphans end up 'unattributed')."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    memo: dict[Any, dict[str, float]] = {}
    busy: set[Any] = set()

    def owners(func: Any) -> dict[str, float]:
        if func in memo:
            return memo[func]
        owner = _bucket(func[0])
        if owner is not None:
            memo[func] = {owner: 1.0}
            return memo[func]
        callers = raw.get(func, (0, 0, 0, 0, {}))[4]
        total = sum(edge[3] for edge in callers.values())
        if func in busy or not callers or total <= 0:
            return {"unattributed": 1.0}
        busy.add(func)
        mix: Counter[str] = Counter()
        for caller, edge in callers.items():
            for name, part in owners(caller).items():
                mix[name] += part * edge[3] / total
        busy.discard(func)
        memo[func] = dict(mix)
        return memo[func]

    shares: Counter[str] = Counter()
    for func, (_, _, tottime, _, _) in raw.items():
        if tottime:
            for name, part in owners(func).items():
                shares[name] += tottime * part
    shares.pop("harness", None)
    total = sum(shares.values()) or 1.0
    return {k: v / total for k, v in shares.most_common()}


def _config(workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "agent.toml"
    config.write_text(f'tenant_id = "00000000-0000-4000-8000-0000000000aa"\n'
                      f'client_id = "00000000-0000-4000-8000-0000000000bb"\n'
                      f'graph_url = "sandbox:"\nstate_dir = "{workdir / "state"}"\n',
                      encoding="utf-8")
    return config


async def _run_job(port: int, job: str, workdir: Path) -> Any:
    import httpx

    from agent.graph.client import GraphClient
    from agent.graph.connect import _with_sdk_middleware
    from agent.runner import run_job
    from agent.sandbox import SandboxTokenSource
    from agent.settings import load_settings

    settings = load_settings(_config(workdir))
    http = _with_sdk_middleware(httpx.AsyncClient(timeout=httpx.Timeout(120.0),
                                                  trust_env=False))
    async with GraphClient(http, SandboxTokenSource(),
                           graph_url=f"http://127.0.0.1:{port}") as graph:
        return await run_job(settings, job, now=NOW, graph=graph)


def client(args: argparse.Namespace) -> int:
    """Run one job twice (timed, then profiled); print one JSON line."""
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    import httpx

    import agent.graph.connect
    import agent.runner

    agent.graph.connect._with_sdk_middleware(httpx.AsyncClient())
    rss_base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory(prefix="bench-all-") as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        report = asyncio.run(_run_job(args.port, args.job, Path(tmp) / "timed"))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result: dict[str, Any] = {
            "job": args.job, "status": report.status, "error": report.error,
            "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "rss_base_mb": round(rss_base, 1), "rss_peak_mb": round(rss_peak, 1),
            "findings": len(report.findings), "actions": len(report.actions),
        }
        if not args.no_profile:
            profiler = cProfile.Profile(time.process_time)  # CPU, not waiting on latency
            profiler.enable()
            asyncio.run(_run_job(args.port, args.job, Path(tmp) / "profiled"))
            profiler.disable()
            result["cpu_split"] = {k: round(v, 3)
                                   for k, v in cpu_shares(pstats.Stats(profiler)).items()}
    print(json.dumps(result), flush=True)
    return 0


def run_client(args: argparse.Namespace, server: Server, job: str) -> dict[str, Any]:
    server.get("/__reset")
    command = [sys.executable, __file__, "--client", "--port", str(server.port), "--job", job]
    if args.no_profile:
        command.append("--no-profile")
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False,
                          timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{job}: client failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    served = server.get("/__stats")
    # the profiled run read everything again: halve the server's counts when profiled
    runs = 1 if args.no_profile else 2
    collections = {}
    objects = 0
    for key, counter in sorted(served["stats"].items()):
        requests = counter.get("requests", 0) // runs
        items = counter.get("items", 0) // runs
        page = served["pages"].get(key, 1)
        is_list = not key.endswith("{id}") and not key.startswith(("PATCH", "POST", "DELETE"))
        bound = max(1, math.ceil(items / page)) if is_list else requests
        collections[key] = {"requests": requests, "lower_bound": bound, "items": items,
                            "page": page if is_list else None}
        objects += items
    key = "GET /reports/authenticationMethods/userRegistrationDetails/{id}"
    if key in collections:
        # the report has one row per user: listing it is one pass over the users
        listing = max(1, math.ceil(server.counts.get("users", 0) / 999))
        if listing < collections[key]["requests"]:
            collections[key]["lower_bound"] = listing
            collections[key]["note"] = ("one GET per role holder; listing the report "
                                        f"takes {listing} pages")
    result["collections"] = collections
    result["requests"] = sum(c["requests"] for c in collections.values())
    result["lower_bound"] = sum(c["lower_bound"] for c in collections.values())
    result["objects"] = objects
    split = result.get("cpu_split", {})
    ours = result["cpu_s"] * split.get("ours", 0.0)
    result["our_cpu_s"] = round(ours, 2)
    result["our_cpu_s_per_10k"] = round(ours / max(objects / 10_000, 1e-9), 3) if objects else None
    result["sdk_http_cpu_s"] = round(result["cpu_s"] * split.get("sdk_http", 0.0), 2)
    return result


# ---- dap-agent --help ------------------------------------------------------------------------

def help_time() -> dict[str, Any]:
    program = Path(sys.executable).with_name("dap-agent")
    times = []
    for _ in range(7):
        started = time.perf_counter()
        subprocess.run([str(program), "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    imported = subprocess.run([sys.executable, "-X", "importtime", "-c",
                               "import agent.cli; agent.cli.build_parser()"],
                              capture_output=True, text=True, check=True).stderr
    rows = [(int(line.split("|")[1]) / 1000, line.rsplit("|", 1)[1].strip())
            for line in imported.splitlines()[1:] if line.count("|") == 2]
    heavy = [{"module": name, "cumulative_ms": ms} for ms, name in sorted(rows, reverse=True)[:5]]
    return {"median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3),
            "msgraph_imported": "msgraph" in imported, "heaviest_imports": heavy}


# ---- the report --------------------------------------------------------------------------------

def verdicts(size: int, result: dict[str, Any]) -> list[str]:
    missed = []
    if result["requests"] > result["lower_bound"]:
        missed.append(f"requests {result['requests']} > lower bound {result['lower_bound']}")
    per10k = result.get("our_cpu_s_per_10k")
    if per10k is not None and per10k >= 1.0:
        missed.append(f"our CPU {per10k} s per 10k objects >= 1 s")
    if size >= 100_000 and result["rss_peak_mb"] >= 300:
        missed.append(f"peak RSS {result['rss_peak_mb']} MB >= 300 MB")
    if result["status"] == "failed":
        missed.append(f"run failed: {result['error']}")
    return missed


def print_table(size: int, server: Server, results: list[dict[str, Any]]) -> None:
    print(f"\n=== {size:,} users; tenant {json.dumps(server.counts)}; "
          f"built in {server.build_seconds} s ===")
    for r in results:
        print(f"\n{r['job']}: {r['status']}  wall {r['wall_s']} s  cpu {r['cpu_s']} s "
              f"(ours {r['our_cpu_s']} s = {r['our_cpu_s_per_10k']} s/10k objects, "
              f"sdk/http {r['sdk_http_cpu_s']} s)  rss peak {r['rss_peak_mb']} MB "
              f"(floor {r['rss_base_mb']} MB)  objects {r['objects']:,}")
        print(f"  requests {r['requests']} vs lower bound {r['lower_bound']}")
        for key, c in r["collections"].items():
            mark = "" if c["requests"] <= c["lower_bound"] else "   <-- above the bound"
            note = f"  ({c['note']})" if c.get("note") else ""
            print(f"    {key:78} {c['requests']:6} / {c['lower_bound']:<6} items "
                  f"{c['items']:>7}{mark}{note}")
        if r.get("cpu_split"):
            print("  cpu split: " + ", ".join(f"{k} {v:.0%}" for k, v in r["cpu_split"].items()))
        for miss in r["missed"]:
            print(f"  TARGET MISSED: {miss}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, action="append",
                        help="tenant size(s) in users (default: 10000 and 100000)")
    parser.add_argument("--managed", type=int, default=100_000)
    parser.add_argument("--entra", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=60_000)
    parser.add_argument("--roles", type=int, default=1_000)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--jobs", default=",".join(JOBS))
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve(args))
        return 0
    if args.client:
        return client(args)

    os.environ.pop("DAP_AGENT_NOW", None)
    sizes = args.users or [10_000, 100_000]
    everything: dict[str, Any] = {"latency_s": args.latency, "help": help_time(), "sizes": {}}
    ok = everything["help"]["median_s"] < 0.5
    for size in sizes:
        server = Server(args, size)
        try:
            results = []
            for job in args.jobs.split(","):
                result = run_client(args, server, job)
                result["missed"] = verdicts(size, result)
                ok = ok and not result["missed"]
                results.append(result)
        finally:
            server.close()
        everything["sizes"][str(size)] = {"tenant": server.counts,
                                          "build_seconds": server.build_seconds,
                                          "jobs": results}
        if not args.json:
            print_table(size, server, results)
    if args.json:
        print(json.dumps(everything, indent=2))
    else:
        h = everything["help"]
        print(f"\ndap-agent --help: median {h['median_s']} s (max {h['max_s']} s), "
              f"msgraph imported: {h['msgraph_imported']}")
        print("all targets met" if ok else "some targets missed (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
