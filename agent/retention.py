"""Retention: old run reports and exports go, after the audit log says which.

At 100k devices one device-compliance run writes a ~29 MB CSV and a ~37 MB report (about
16 GB a year on weekdays, before gzip). `[retention]` keeps run reports and exports for N
months (default 13: the service report's 12-month trends need a year back and the month
before it). Never pruned: the audit log, the active-users snapshots (the invoice's source:
every delivered export re-renders from them), the deleted-accounts lists, the ledger,
decisions and secure-score records.

Ages come from the names (a run id starts with its UTC start time; exports carry their
day or month), not from mtimes, which a copy or restore resets. The audit entry
`retention-pruned` is written *before* the files go: a crash in between leaves files the
log already calls pruned (the next run removes them), never a report missing unexplained.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field

from agent.files import exclusive_lock, remove_state_file, state_files

log = structlog.get_logger("agent.retention")

RUN_REPORT = re.compile(r"(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})T\d{6}Z-.+\.json(?:\.gz)?")
# the exports a job rewrites every run; deleted-accounts lists are kept for good
PRUNABLE_EXPORTS = re.compile(
    r"(?:devices|privileged-access)-(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})\.csv"
    r"|active-users-(?P<ay>\d{4})-(?P<am>\d{2})\.(?:csv|xlsx)")


class RetentionPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_reports_months: int = Field(
        13, ge=0, description="months a run report (runs/<id>.json.gz) is kept; 0 keeps "
                              "them all")
    exports_months: int = Field(
        13, ge=0, description="months a device, privileged-access or active-users export is "
                              "kept (active-users re-renders from its snapshot); 0 keeps "
                              "them all. Deleted-accounts lists are never pruned")


@dataclass
class Pruning:
    run_reports: list[Path] = field(default_factory=list)
    exports: list[Path] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.run_reports or self.exports)


def months_before(day: date, months: int) -> date:
    """The same day `months` calendar months earlier (the month's last day if shorter)."""
    year, month = divmod(day.year * 12 + day.month - 1 - months, 12)
    month += 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def plan(state_dir: Path, policy: RetentionPolicy, today: date) -> Pruning:
    """What is past its time (pure apart from listing two directories)."""
    pruning = Pruning()
    if policy.run_reports_months:
        cutoff = months_before(today, policy.run_reports_months)
        for path in _listing(state_dir / "runs"):
            m = RUN_REPORT.fullmatch(path.name)
            if m and _day(m["y"], m["m"], m["d"]) < cutoff:
                pruning.run_reports.append(path)
    if policy.exports_months:
        cutoff = months_before(today, policy.exports_months)
        for path in _listing(state_dir / "exports"):
            m = PRUNABLE_EXPORTS.fullmatch(path.name)
            if not m:
                continue
            # a month's export counts from the month's end: it was current until then
            when = (_day(m["y"], m["m"], m["d"]) if m["y"]
                    else months_before(_day(m["ay"], m["am"], "01"), -1))
            if when < cutoff:
                pruning.exports.append(path)
    return pruning


def prune(state_dir: Path, policy: RetentionPolicy, now: datetime,
          audit: Callable[[dict[str, Any]], object]) -> Pruning:
    """Audit, then delete, what `plan` finds; one process at a time (a lock)."""
    with exclusive_lock(state_dir / "locks" / "retention.lock"):
        pruning = plan(state_dir, policy, now.date())
        if not pruning:
            return pruning
        audit({"event": "retention-pruned",
               "run_reports": [_run_id(p) for p in pruning.run_reports],
               "exports": [p.name for p in pruning.exports],
               "run_reports_months": policy.run_reports_months,
               "exports_months": policy.exports_months})
        for path in (*pruning.run_reports, *pruning.exports):
            remove_state_file(path)
        log.info("retention pruned old files", run_reports=len(pruning.run_reports),
                 exports=len(pruning.exports))
        return pruning


def _run_id(path: Path) -> str:
    return path.name.removesuffix(".gz").removesuffix(".json")


def _listing(directory: Path) -> list[Path]:
    return state_files(directory)  # a symlinked runs/ or exports/ is refused, not pruned


def _day(year: str, month: str, day: str) -> date:
    try:
        return date(int(year), int(month), int(day))
    except ValueError:
        return date.max  # not a date after all: never pruned
