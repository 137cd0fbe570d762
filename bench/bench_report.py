"""Benchmark: the monthly service report over a year of demo state. Not a test.

Builds the state the demo builds (11 earlier month ends of active-users, device-compliance
and secure-score, then every job once for the current month) in a temporary directory,
then renders the month's report several times and prints the median wall and CPU time of
each step: reading the state (`collect`), the HTML with its three matplotlib charts, and
the PDF (WeasyPrint, when the `pdf` extra is installed), with the sizes written.

    .venv/bin/python bench/bench_report.py [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
MONTH = "2026-11"


def build(directory: Path) -> Any:
    from agent.runner import run_job
    from agent.sandbox import DEMO_POLICY
    from agent.sandbox.history import seed_history
    from agent.sandbox.seed import roles
    from agent.settings import load_settings
    from agent.tomlwrite import dumps
    from jobs import REGISTRY

    policy = {**DEMO_POLICY, "privileged_roles": roles.demo_policy(NOW)["privileged_roles"]}
    config = directory / "agent.toml"
    config.write_text(dumps({"tenant_id": "00000000-0000-4000-8000-00000000d3a0",
                             "client_id": "00000000-0000-4000-8000-0000000c11e0",
                             "graph_url": f"sandbox:{directory / 'tenant.json'}",
                             "state_dir": str(directory / "state"), **policy}))
    settings = load_settings(config)

    async def seed() -> None:
        await seed_history(settings, NOW)
        for job in REGISTRY:
            if job != "service-report":
                await run_job(settings, job, trigger="demo", now=NOW)

    asyncio.run(seed())
    return settings


def measure(step: Callable[[], Any], repeat: int) -> dict[str, float]:
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"wall_s": round(statistics.median(walls), 3),
            "cpu_s": round(statistics.median(cpus), 3)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from agent.logs import configure

    configure(quiet=True)
    logging.disable(logging.INFO)
    from agent.report import render_report
    from agent.report.render import render_html
    from agent.report.state import collect

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        settings = build(Path(tmp))
        state_dir, tz = settings.state_dir, settings.zone
        results: dict[str, Any] = {"build_state_s": round(time.perf_counter() - started, 1),
                                   "run_reports": len(list((state_dir / "runs").iterdir())),
                                   "score_records": len(list((state_dir / "secure-score")
                                                             .iterdir()))}
        render_report(state_dir, MONTH, tz=tz, language="nl")  # imports, font cache
        state = collect(state_dir, MONTH, tz)
        results["collect"] = measure(lambda: collect(state_dir, MONTH, tz), args.repeat)
        results["html"] = measure(lambda: render_html(state, "nl"), args.repeat)
        html = render_html(state, "nl")
        results["html_bytes"] = len(html)
        results["deterministic"] = all(render_html(collect(state_dir, MONTH, tz), "nl") == html
                                       for _ in range(2))
        try:
            import weasyprint  # noqa: F401
        except (ImportError, OSError):
            results["pdf"] = "skipped: pip install -e '.[pdf]'"
        else:
            from agent.report.pdf import html_to_pdf

            results["pdf"] = measure(lambda: html_to_pdf(html), max(1, args.repeat // 2))
            results["pdf_bytes"] = len(html_to_pdf(html))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key:>16}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
