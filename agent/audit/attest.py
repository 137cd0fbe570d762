"""What the log vouches for beyond itself: stored run reports and delivered exports.

The log records each run report's SHA-256 (`run-finished`/`run-failed`) and each delivered
month's export checksum (`month-delivered`); retention records what it removed
(`retention-pruned`: `{run_reports: [ids], exports: [names]}`), which is then not missing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPORT_EVENTS = ("run-finished", "run-failed")


@dataclass
class Recorded:
    reports: dict[str, tuple[int, str]] = field(default_factory=dict)  # run id -> seq, sha
    pruned_reports: set[str] = field(default_factory=set)
    pruned_exports: set[str] = field(default_factory=set)
    deliveries: dict[str, dict[str, Any]] = field(default_factory=dict)  # month -> entry

    def __call__(self, entry: dict[str, Any]) -> None:
        event = entry.get("event")
        if event in REPORT_EVENTS and entry.get("report_sha256") and entry.get("run_id"):
            self.reports[str(entry["run_id"])] = (int(entry["seq"]), str(entry["report_sha256"]))
        elif event == "retention-pruned":
            self.pruned_reports.update(str(i) for i in entry.get("run_reports") or ())
            self.pruned_exports.update(str(i) for i in entry.get("exports") or ())
        elif event == "month-delivered" and entry.get("month"):
            self.deliveries[str(entry["month"])] = entry


def report_problems(recorded: Recorded, runs_dir: Path) -> list[str]:
    """Each stored run report against the checksum the log recorded for it."""
    from agent.run import find_report, read_report_bytes

    problems = []
    for run_id, (seq, digest) in recorded.reports.items():
        if run_id in recorded.pruned_reports:
            continue
        try:
            path = find_report(run_id, runs_dir)
            data = read_report_bytes(path)
        except FileNotFoundError:
            problems.append(f"run report {runs_dir / run_id}.json.gz is missing (recorded in "
                            f"entry {seq}, never removed by retention)")
            continue
        except (OSError, EOFError, ValueError) as exc:  # gzip errors are OSError/EOFError
            problems.append(f"run report of {run_id} in {runs_dir} is unreadable ({exc})")
            continue
        if hashlib.sha256(data).hexdigest() != digest:
            problems.append(f"run report {path} differs from the checksum "
                            f"the log recorded in entry {seq}: it was changed")
    return problems
