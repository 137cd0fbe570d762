"""The monthly deleted-accounts overview (`<state>/exports/deleted-accounts-YYYY-MM.csv`).

Built from the ledger only, and only from purges with evidence (a 204 on the permanent
delete, or direct reads that found the user neither in users nor in deleted items).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from agent.files import read_state_bytes, write_atomic
from agent.ledger import LeaverRecord

CSV_COLUMNS = ("user_id", "user_principal_name", "display_name", "leave_date",
               "inactive_since", "deleted_at", "purged_at", "delete_run_id", "purge_run_id",
               "delete_request_id", "purge_request_id", "source")


def iso_or_none(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def deleted_accounts_rows(records: Iterable[LeaverRecord], month: date,
                          tz: ZoneInfo) -> list[dict[str, str]]:
    """The users purged for good in `month` (local time), oldest first."""
    rows = []
    for r in records:
        if r.purged_at is None or r.purged_at.astimezone(tz).date().replace(day=1) != month:
            continue
        rows.append({
            "user_id": r.user_id, "user_principal_name": r.upn or "",
            "display_name": r.name or "", "leave_date": r.leave_date or "",
            "inactive_since": iso_or_none(r.inactive_since) or "",
            "deleted_at": iso_or_none(r.deleted_at) or "",
            "purged_at": iso_or_none(r.purged_at) or "",
            "delete_run_id": r.delete_run_id or "", "purge_run_id": r.purge_run_id or "",
            "delete_request_id": r.delete_request_id or "",
            "purge_request_id": r.purge_request_id or "",
            "source": r.purge_source or "",
        })
    rows.sort(key=lambda row: (row["purged_at"], row["user_id"]))
    return rows


def write_deleted_accounts(exports: Path, records: Iterable[LeaverRecord], month: date,
                           tz: ZoneInfo) -> Path:
    """`deleted-accounts-YYYY-MM.csv`, replaced atomically and only when its content changed."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(deleted_accounts_rows(records, month, tz))
    data = buffer.getvalue().encode("utf-8")
    path = exports / f"deleted-accounts-{month.strftime('%Y-%m')}.csv"
    try:
        if read_state_bytes(path) == data:
            return path
    except FileNotFoundError:
        pass
    write_atomic(path, data)
    return path
