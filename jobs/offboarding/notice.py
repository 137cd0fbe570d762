"""Notice, veto and approval: whether a purge whose retention ended may be made today.

Pure. A purge is made only when all of these hold:
- **notice**: an earlier run listed it in `summary.veto_window` (the ledger's `announced`)
  at least `purge_notice_days` days before (0: any earlier run). An overdue purge seen for
  the first time is announced, not made: the first enforce run after an install announces
  every overdue leaver and purges none;
- **veto**: no veto stands for the user (`dap-agent veto`); a user restored from deleted
  items after our delete is a veto for good;
- **approval**: with `purge_requires_approval`, an `approve` recorded after the announcement.
The veto window lists every purge whose retention ends within `max(14, notice)` days, with
the earliest day it may be made (`purge_date`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal

from agent.decisions import Decision, Decisions
from agent.ledger import LeaverRecord

VETO_DAYS = 14
Status = Literal["make", "announce", "notice", "vetoed", "approval", "upcoming"]


@dataclass(frozen=True)
class PurgeCheck:
    user_id: str
    status: Status
    retention_ends: date
    purge_date: date  # the earliest day the purge may be made
    announced_on: date  # stored, or today when this run announces it
    announce: bool  # this run records the announcement
    veto: Decision | None = None
    approval: Decision | None = None

    @property
    def may_purge(self) -> bool:
        return self.status == "make"

    def reason(self, notice_days: int) -> str:
        if self.status == "announce":
            return (f"announced today in the veto window; purged from "
                    f"{self.purge_date.isoformat()} ({notice_days} days' notice) unless vetoed")
        if self.status == "notice":
            return (f"announced on {self.announced_on.isoformat()}: notice of {notice_days} "
                    f"days runs until {self.purge_date.isoformat()}")
        if self.status == "vetoed" and self.veto is not None:
            until = f" until {self.veto.until}" if self.veto.until else ""
            return (f"vetoed by {self.veto.by or 'unknown'} on {self.veto.ts[:10]}{until}: "
                    f"{self.veto.reason or ''}").rstrip(": ")
        if self.status == "approval":
            return ("purge_requires_approval: no `dap-agent approve` recorded since the "
                    f"announcement on {self.announced_on.isoformat()}")
        return "retention not yet ended"


def horizon(notice_days: int) -> int:
    return max(VETO_DAYS, notice_days)


def check(user_id: str, record: LeaverRecord | None, retention_ends: date, *, today: date,
          run_id: str, decisions: Decisions, notice_days: int,
          requires_approval: bool) -> PurgeCheck | None:
    """The purge of one leaver today; None when it is beyond the veto window."""
    if retention_ends > today + timedelta(days=horizon(notice_days)):
        return None
    announced_at: datetime | None = record.announced_at if record is not None else None
    earlier = announced_at is not None and (
        record is None or record.announced_run_id != run_id)
    announced_on = announced_at.date() if announced_at is not None else today
    purge_date = max(retention_ends, announced_on + timedelta(days=notice_days))
    if not earlier and announced_at is None:
        # listed for the first time now: the day after at the soonest, even with notice 0
        purge_date = max(purge_date, today + timedelta(days=1 if notice_days == 0 else 0))
    veto = decisions.veto(user_id, today)
    approval = decisions.approval(user_id, announced_at) if announced_at is not None else None
    announce = announced_at is None

    def result(status: Status) -> PurgeCheck:
        return PurgeCheck(user_id, status, retention_ends, purge_date, announced_on, announce,
                          veto=veto, approval=approval)

    if veto is not None:
        return result("vetoed")
    if retention_ends > today:
        return result("upcoming")
    if announce:
        return result("announce")
    if not earlier or purge_date > today:
        return result("notice")
    if requires_approval and approval is None:
        return result("approval")
    return result("make")
