"""Benchmark: `audit verify` over a sealed log of a million entries. Not a test.

Builds a realistic log straight from `agent.audit.entry.encode` (appending a million
entries through `AuditLog.append` would measure a million fsyncs instead): runs of 50
change entries, each run with its run-started, run-finished (with a report checksum) and
epoch-closed entry, one sealing epoch per run, in 12 monthly segments. Reports of all but
the last 100 runs are recorded as removed by retention, as in a long-lived deployment.
Then it times, in this process:

- `verify()`              the chain, epochs, head and sealing state (what a run checks);
- `verify(key=...)`       the same plus every seal (`audit verify --key`);
- `verify_all(key=...)`   the whole `audit verify --key` (run reports included).

Wall time on a shared machine includes waiting for a CPU; CPU time is the steady number.

    .venv/bin/python bench/bench_audit_verify.py [--entries 1000000] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.audit import AuditLog
from agent.audit.entry import GENESIS, encode
from agent.audit.seal import SealState, evolve, key_id, new_key, store_state

PER_RUN = 50
KEEP_REPORTS = 100


def build(state: Path, entries: int) -> tuple[AuditLog, bytes, int]:
    log = AuditLog(state / "audit.jsonl")
    log.segments_dir.mkdir(parents=True)
    (state / "runs").mkdir()
    k0 = new_key()
    key, epoch, seq, prev = k0, 0, 0, GENESIS
    months = [f"2026-{m:02d}" for m in range(1, 13)]
    per_month = entries // len(months) + 1
    runs_total = entries // (PER_RUN + 3) + 1
    out = None
    first_of_file = 0
    run_ids: list[str] = []

    def emit(body: dict[str, Any]) -> None:
        nonlocal seq, prev, out, first_of_file
        seq += 1
        month = months[min((seq - 1) // per_month, len(months) - 1)]
        if out is None or month != out[1]:
            if out is not None:
                out[0].close()
                current = out[2]
                current.rename(log.segments_dir / f"{first_of_file:012d}-{out[1]}.jsonl")
            out = (log.path.open("wb"), month, log.path)
            first_of_file = seq
        record = {"seq": seq, "prev": prev, "epoch": epoch,
                  "ts": f"{month}-15T08:00:{seq % 60:02d}.000Z", **body}
        line, prev = encode(record, key)
        out[0].write(line)

    emit({"event": "seal-init", "key_id": key_id(k0), "epochs": "an epoch ends with every run"})
    key, epoch = evolve(key), 1
    run = 0
    while seq < entries - (PER_RUN + 3):
        run += 1
        run_id = f"20260101T000000Z-offboarding-{run:06x}"
        emit({"event": "run-started", "run_id": run_id, "job": "offboarding",
              "trigger": "schedule", "dry_run": False, "mode": "enforce"})
        for i in range(PER_RUN):
            emit({"event": "action", "run_id": run_id, "job": "offboarding",
                  "action": "disable-user", "status": "done" if i % 2 else "planned",
                  "reason": "left the organisation on 2026-01-01 (HR feed)",
                  "request_id": f"{run:08x}-0000-4000-8000-{i:012x}",
                  "target": {"type": "user", "id": f"{run:08x}-1111-4000-8000-{i:012x}",
                             "name": f"user{i}@contoso.example"}})
        report = json.dumps({"run_id": run_id, "status": "ok"}).encode()
        if runs_total - run <= KEEP_REPORTS:
            (state / "runs" / f"{run_id}.json").write_bytes(report)
        else:
            run_ids.append(run_id)
        emit({"event": "run-finished", "run_id": run_id, "job": "offboarding", "status": "ok",
              "report_path": str(state / "runs" / f"{run_id}.json"),
              "report_sha256": hashlib.sha256(report).hexdigest(),
              "actions_by_status": {"done": PER_RUN // 2, "planned": PER_RUN // 2}})
        emit({"event": "epoch-closed"})
        key, epoch = evolve(key), epoch + 1
    emit({"event": "retention-pruned", "run_reports": run_ids, "exports": []})
    while seq < entries:
        emit({"event": "notify-sent", "channel": "mail", "subject": "run report"})
    assert out is not None
    out[0].close()
    log.head_path.write_text(json.dumps({"seq": seq, "hash": prev}))
    store_state(log.seal_path, SealState(epoch, key, key_id(k0)))
    return log, k0, run


def timed(label: str, call: Any, repeat: int) -> dict[str, Any]:
    """The best of `repeat` runs (other processes on a shared machine only add time)."""
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = call()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        assert result.ok, result.problem
    return {"what": label, "wall_s": round(min(walls), 2), "cpu_s": round(min(cpus), 2),
            "ok": result.ok, "entries": result.entries}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (best is shown)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dap-audit-bench-") as tmp:
        started = time.perf_counter()
        log, k0, runs = build(Path(tmp), args.entries)
        size = sum(p.stat().st_size for p in log.files())
        built = round(time.perf_counter() - started, 1)
        rows = [timed("verify (chain, epochs, head)", log.verify, args.repeat),
                timed("verify --key (every seal)", lambda: log.verify(key=k0), args.repeat),
                timed("audit verify --key (with run reports)",
                      lambda: log.verify_all(key=k0), args.repeat)]
    summary = {"entries": args.entries, "runs_epochs": runs, "segments": 12,
               "log_mb": round(size / 1e6, 1), "build_s": built, "timings": rows}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{args.entries} entries, {runs} runs/epochs, 12 segments, "
              f"{summary['log_mb']} MB (built in {built} s)")
        for row in rows:
            print(f"  {row['what']:<40} wall {row['wall_s']:>6} s   cpu {row['cpu_s']:>6} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
