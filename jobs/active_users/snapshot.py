"""The month's snapshot: the rows, totals and policy of a count, stored once per month in
`<state>/snapshots/active-users/YYYY-MM.json`; every export is rendered from it alone.

Formats (`format` in the file): 1, the first; 2 adds `export_format` and `changes` (who
joined and left since the previous month). A snapshot renders its export in its own
`export_format` (1 when absent), so a month delivered before a format change re-renders
byte for byte as it was delivered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from agent.errors import DapError, UsageError
from agent.files import read_state_bytes
from agent.graph.licensing import SubscribedSku
from agent.run import iso_z
from agent.workdays import local_date
from jobs.active_users.counting import CHANGE_COLUMN, COLUMNS, Changes, Row, Rules, Totals
from jobs.active_users.policy import Policy

if TYPE_CHECKING:
    from agent.job import JobContext

SNAPSHOT_FORMATS = (1, 2)
SNAPSHOT_FORMAT = 2  # what new snapshots are written in
EXPORT_FORMAT = 2  # 2: the `change` column and the joiners/leavers sheet
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def month_of(moment: datetime, tz: ZoneInfo) -> str:
    day = local_date(moment, tz)
    return f"{day.year:04d}-{day.month:02d}"


def parse_month(month: str) -> tuple[int, int]:
    match = _MONTH.match(month)
    if not match:
        raise UsageError(f"--month: {month!r} is not a month; use YYYY-MM, e.g. 2026-05")
    return int(match[1]), int(match[2])


def previous_month(month: str) -> str:
    year, mon = parse_month(month)
    return f"{year - 1:04d}-12" if mon == 1 else f"{year:04d}-{mon - 1:02d}"


def snapshot_path(state_dir: Path, month: str) -> Path:
    return state_dir / "snapshots" / "active-users" / f"{month}.json"


def export_name(month: str, fmt: str = "csv") -> str:
    return f"active-users-{month}.{fmt}"


def load_snapshot(state_dir: Path, month: str) -> dict[str, Any] | None:
    path = snapshot_path(state_dir, month)
    try:
        data = json.loads(read_state_bytes(path))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DapError(f"{path}: cannot read the active-users snapshot: {exc}") from None
    if not isinstance(data, dict) or data.get("format") not in SNAPSHOT_FORMATS:
        raise DapError(f"{path}: not an active-users snapshot (formats "
                       f"{', '.join(map(str, SNAPSHOT_FORMATS))})")
    return data


def export_format(snapshot: dict[str, Any]) -> int:
    return int(snapshot.get("export_format", 1))


def changes_of(snapshot: dict[str, Any]) -> Changes | None:
    """The joiners and leavers a snapshot recorded (format 2), else None."""
    data = snapshot.get("changes")
    return Changes.from_dict(data) if isinstance(data, dict) else None


def deadline_of(month: str, policy: Policy | None = None) -> date:
    """The month's last working day under the policy's calendar."""
    year, mon = parse_month(month)
    return (policy or Policy()).calendar.last_working_day(year, mon)


def build_snapshot(ctx: JobContext, month: str, rows: Sequence[Row], rules: Rules,
                   skus: Sequence[SubscribedSku], policy: Policy, delivered: bool,
                   counts: Totals, by_sku: dict[str, dict[str, Any]],
                   changes: Changes) -> dict[str, Any]:
    return {
        "format": SNAPSHOT_FORMAT,
        "export_format": EXPORT_FORMAT,
        "job": "active-users",
        "month": month,
        "tenant_id": ctx.settings.tenant_id,
        "taken_at": iso_z(ctx.now),
        "scheduled_for": iso_z(ctx.scheduled_for) if ctx.scheduled_for else None,
        "run_id": ctx.run.run_id,
        "trigger": ctx.run.report.trigger,
        "delivered": delivered,
        "delivered_at": iso_z(ctx.now) if delivered else None,
        "deadline": deadline_of(month, policy).isoformat(),
        "policy": policy.model_dump(mode="json"),
        "skus": [{"sku_id": s.sku_id, "part_number": s.part_number,
                  "capability_status": s.capability_status,
                  "prepaid_units": s.enabled_units, "consumed_units": s.consumed_units}
                 for s in sorted(skus, key=lambda s: (s.part_number, s.sku_id))],
        "totals": counts.as_dict(),
        "per_sku": by_sku,
        "changes": changes.as_dict(),
        "columns": [*COLUMNS, CHANGE_COLUMN],
        "rows": [[*row.cells(rules), changes.change_of(row)] for row in rows],
        "export": {"file": export_name(month), "sha256": ""},
    }


def dump(snapshot: dict[str, Any]) -> bytes:
    return (json.dumps(snapshot, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
