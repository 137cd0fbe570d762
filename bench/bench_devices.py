"""Benchmark: device-compliance on a generated tenant (default 100,000 Intune + 100,000 Entra).

Runs the real job through the runner and the real GraphClient over the sandbox transport,
then prints requests made vs. the lower bound (every collection read once at its largest
page size), wall time of the run, and memory.

    .venv/bin/python bench/bench_devices.py [--managed 100000] [--entra 100000]
        [--keys 70000] [--own-generator] [--tracemalloc] [--json]

Memory: `peak_rss_mb` is the process high-water mark (it includes the in-process sandbox
tenant, which holds the whole generated tenant as JSON); `tenant_rss_mb` is the RSS
with only the tenant built, so `peak - tenant` bounds what the run itself added. With
`--tracemalloc` the Python allocations of the run alone are traced (slower).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.graph import devices as dev
from agent.sandbox import builders as b
from agent.sandbox.routes import RECOVERY_KEYS
from agent.sandbox.tenant import SandboxTenant

NOW = datetime(2026, 3, 18, 8, 0, tzinfo=UTC)
OSES = ("Windows",) * 6 + ("iOS", "Android", "macOS", "Linux")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def generated_tenant(managed: int, entra: int, keys: int, now: datetime, *,
                     own: bool = False) -> SandboxTenant:
    """The sandbox's `generate.generate_tenant` (the shared scale generator), or with
    `own` a local one: Intune devices of every platform (most Windows, each with an
    OS-volume key), their Entra registrations and Entra-only ones up to `entra`."""
    if not own:
        from agent.sandbox.generate import generate_tenant

        tenant = generate_tenant(managed_devices=managed, entra_devices=entra,
                                 recovery_keys=keys, now=now)
        _declare_nulls(tenant)
        return tenant
    tenant = SandboxTenant(now)
    registered = 0
    for n in range(managed):
        name = f"DEV-{n:06d}"
        os_name = OSES[n % len(OSES)]
        tenant.add("managedDevices", b.managed_device(
            name, os=os_name, last_sync=now - timedelta(days=(n % 33)),
            compliance="noncompliant" if n % 53 == 0 else "compliant",
            encrypted=n % 71 != 0))
        if n % 20 and registered < entra:  # 1 in 20 Intune devices lacks a registration
            tenant.add("devices", b.device(name, os=os_name, last_sign_in=now))
            registered += 1
        if os_name == "Windows" and n % 97 != 0:
            tenant.add("recoveryKeys", b.recovery_key(name, created=now))
    for n in range(max(0, entra - registered)):
        tenant.add("devices", b.device(f"ENTRA-{n:06d}", managed=False,
                                       last_sign_in=now - timedelta(days=n % 200)))
    config_id = b.oid("deviceConfiguration:bench removable")
    tenant.add("deviceConfigurations", b.device_configuration(
        "bench removable", assignments=[b.assignment(config_id, all_devices=True)],
        bitLockerRemovableDrivePolicy={"requireEncryptionForWriteAccess": True,
                                       "blockCrossOrganizationWriteAccess": False,
                                       "encryptionMethod": "aesCbc256"}))
    return tenant


def _declare_nulls(tenant: SandboxTenant) -> None:
    """Make every `$select`ed property present (null) on generated objects.

    The generator leaves null properties out and the sandbox learns a type's properties
    from the objects it holds, so it would refuse `$select=model` on a tenant where no
    device has a model (real Graph knows the property from the schema). Requested from
    the sandbox helper; harmless once done.
    """
    for collection, names in (("managedDevices", dev.MANAGED_DEVICE_SELECT),
                              ("devices", dev.DEVICE_SELECT),
                              ("recoveryKeys", dev.RECOVERY_KEY_SELECT)):
        for obj in tenant.collections[collection].values():
            for name in names:
                obj.setdefault(name, None)
    tenant.touch()


def lower_bound(tenant: SandboxTenant, key_page: int) -> dict[str, int]:
    managed = len(tenant.all("managedDevices"))
    entra = len(tenant.all("devices"))
    keys = len(tenant.all("recoveryKeys"))
    return {
        dev.MANAGED_DEVICES_PATH: max(1, math.ceil(managed / dev.MANAGED_DEVICES_TOP)),
        dev.DEVICES_PATH: max(1, math.ceil(entra / dev.DEVICES_TOP)),
        dev.RECOVERY_KEYS_PATH: max(1, math.ceil(keys / key_page)),
        dev.CONFIGURATIONS_PATH: 1,
        dev.MANAGED_OVERVIEW_PATH: 1,  # the completeness guard's count
        dev.CATALOG_POLICIES_PATH: 1,  # settings catalog (no Windows policy: no settings reads)
    }


async def run_once(tenant: SandboxTenant, workdir: Path) -> Any:
    from agent.sandbox.harness import run_on_tenant as run_on
    from agent.sandbox.harness import sandbox_settings as make_settings

    settings = make_settings(workdir, device_compliance={"stale_after_days": 30})
    return await run_on(tenant, settings, "device-compliance", now=NOW)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--managed", type=int, default=100_000)
    parser.add_argument("--entra", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=70_000,
                        help="BitLocker keys (generate: one OS key per Windows registration "
                             "first, the rest of mixed volume types)")
    parser.add_argument("--own-generator", action="store_true",
                        help="build the tenant with this script's generator instead")
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    tenant = generated_tenant(args.managed, args.entra, args.keys, NOW,
                              own=args.own_generator)
    build_seconds = time.perf_counter() - started
    tenant_rss = current_rss_mb()

    if args.tracemalloc:
        tracemalloc.start()
    with tempfile.TemporaryDirectory(prefix="bench-devices-") as tmp:
        started = time.perf_counter()
        report = asyncio.run(run_once(tenant, Path(tmp)))
        wall = time.perf_counter() - started
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20 if args.tracemalloc else None

    paths = Counter(r.path for r in tenant.requests)
    keys = len(tenant.all("recoveryKeys"))
    # no $top on recoveryKeys: the page size is the service's (the sandbox's default)
    key_page = RECOVERY_KEYS.page_size
    bound = lower_bound(tenant, key_page)
    result = {
        "managed_devices": len(tenant.all("managedDevices")),
        "entra_devices": len(tenant.all("devices")),
        "recovery_keys": keys,
        "status": report.status,
        "findings": len(report.findings),
        "findings_by_rule": report.summary.get("findings_by_rule"),
        "requests": sum(paths.values()),
        "requests_by_path": dict(paths),
        "lower_bound": sum(bound.values()),
        "lower_bound_by_path": bound,
        "recovery_key_page_size": key_page,
        "tenant_build_seconds": round(build_seconds, 2),
        "wall_seconds": round(wall, 2),
        "tenant_rss_mb": round(tenant_rss, 1),
        "peak_rss_mb": round(rss_mb(), 1),
        "run_traced_peak_mb": round(traced_peak, 1) if traced_peak is not None else None,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:28} {value}")
    return 0 if report.status == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
