"""Storage per run at scale: the device-compliance report and export at N devices.

Retention (issue 14.9) is sized from these numbers: the run report as stored
(`runs/<id>.json.gz`) against its JSON, and the day's device export. Runs after the
README's first command (no pytest):

    .venv/bin/python bench/bench_storage.py --devices 100000
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.sandbox.generate import generate_tenant  # noqa: E402
from agent.sandbox.harness import run_on_tenant, sandbox_settings  # noqa: E402

NOW = datetime(2026, 6, 12, 8, 0, tzinfo=UTC)
WEEKDAYS_A_YEAR = 261


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--devices", type=int, default=100_000,
                        help="devices in Intune and in Entra ID (60%% with a BitLocker key)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    tenant = generate_tenant(users=max(100, args.devices // 2), managed_devices=args.devices,
                             entra_devices=args.devices, recovery_keys=args.devices * 6 // 10,
                             now=NOW)
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        settings = sandbox_settings(Path(tmp))
        started = time.perf_counter()
        report = asyncio.run(run_on_tenant(tenant, settings, "device-compliance", now=NOW))
        wall = time.perf_counter() - started
        stored = settings.state_dir / "runs" / f"{report.run_id}.json.gz"
        packed = stored.stat().st_size
        raw = gzip.decompress(stored.read_bytes())
        began = time.perf_counter()
        gzip.compress(raw, 6)
        gzip_seconds = time.perf_counter() - began
        export = Path(str(report.summary["export_path"])).stat().st_size
    result = {
        "devices": args.devices, "findings": len(report.findings), "run_wall_s": round(wall, 1),
        "report_json_mb": round(len(raw) / 2**20, 1), "report_gz_mb": round(packed / 2**20, 2),
        "ratio": round(len(raw) / packed, 1), "gzip_level6_s": round(gzip_seconds, 2),
        "export_csv_mb": round(export / 2**20, 1),
        "year_of_weekdays_gb_plain": round((len(raw) + export) * WEEKDAYS_A_YEAR / 2**30, 1),
        "year_of_weekdays_gb_stored": round((packed + export) * WEEKDAYS_A_YEAR / 2**30, 1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:>28}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
