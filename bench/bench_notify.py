"""Benchmark: what notifications cost after a big run. Not a test.

A device-compliance-sized run (default 100,000 findings over 100,000 devices) against its
previous run stored in `runs/` (the same findings but 1% new): the time and memory to
find and read the previous report, compute the new-finding digest and build the message
(the channels are not called). This is the work `agent.notify.after_run` adds to every
run when `[notify]` has a channel and `new-finding` is on.

    .venv/bin/python bench/bench_notify.py [--findings 100000] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.files import write_atomic_chunks
from agent.notify import messages, previous_report
from agent.run import Finding, RunReport, Subject

RULES = ("DEV-STALE", "DEV-NONCOMPLIANT", "DEV-NOT-ENCRYPTED", "DEV-NO-RECOVERY-KEY")
SEVERITY = {"DEV-STALE": "low", "DEV-NONCOMPLIANT": "medium", "DEV-NOT-ENCRYPTED": "high",
            "DEV-NO-RECOVERY-KEY": "medium"}


def report(run_id: str, n: int, offset: int) -> RunReport:
    out = RunReport(run_id=run_id, job="device-compliance", trigger="schedule", dry_run=False,
                    started_at="2026-12-03T07:00:00Z", status="ok")
    for i in range(offset, offset + n):
        rule = RULES[i % len(RULES)]
        out.findings.append(Finding(rule, SEVERITY[rule],  # type: ignore[arg-type]
                                    Subject("device", f"{i:08d}-0000-4000-8000-000000000000",
                                            f"PC-{i:06d}"), "no contact for 45 days"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--findings", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        before = report("20261202T070000Z-device-compliance-aaaaaa", args.findings, 0)
        write_atomic_chunks(runs / f"{before.run_id}.json",
                            (p.encode() for p in before.json_pieces()))
        now = report("20261203T070000Z-device-compliance-bbbbbb", args.findings,
                     args.findings // 100)
        size = (runs / f"{before.run_id}.json").stat().st_size
        del before
        cpu, wall = time.process_time(), time.perf_counter()
        previous = previous_report(runs, "device-compliance", now.run_id)
        digest = messages.new_findings(now, previous, "tenant", "low")
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    result = {"findings": args.findings, "previous_report_mb": round(size / 1e6, 1),
              "new": (digest.omitted + len(digest.items)) if digest else 0,
              "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    print(json.dumps(result) if args.json else
          "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
