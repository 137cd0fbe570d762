"""Rendering a month's export (CSV, XLSX) from its snapshot, and reproducing it on request
(`dap-agent export active-users --month YYYY-MM`), in the snapshot's own export format."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.errors import DapError, UsageError
from agent.exports import Sheet, check_delivered, render_csv, render_xlsx, sha256_hex
from agent.files import read_state_bytes, write_atomic, write_output
from jobs.active_users.counting import Changes
from jobs.active_users.snapshot import (
    changes_of,
    export_format,
    export_name,
    load_snapshot,
    parse_month,
    snapshot_path,
)


def render_export(snapshot: dict[str, Any], fmt: str = "csv") -> bytes:
    """The month's export from its snapshot: the only way an export is ever rendered."""
    columns, rows = snapshot["columns"], snapshot["rows"]
    if fmt == "csv":
        return render_csv(columns, rows)
    if fmt == "xlsx":
        return render_xlsx(_sheets(snapshot), title=f"Active users {snapshot['month']}",
                           timestamp=datetime.fromisoformat(
                               snapshot["taken_at"].replace("Z", "+00:00")))
    raise UsageError(f"--format: {fmt!r} is not an export format; use csv or xlsx")


def _sheets(snapshot: dict[str, Any]) -> list[Sheet]:
    t = snapshot["totals"]
    counts: list[list[Any]] = [
        ["active (counted)", "", "", t["active"]],
        ["e5", "", "e5", t["e5"]],
        ["exchange-only", "", "exchange-only", t["exchange_only"]],
        ["licensed, disabled (not counted)", "", "", t["licensed_disabled"]],
        ["excluded (not counted)", "", "", t["excluded"]],
        ["other licences only (not counted)", "", "other", t["other"]],
        ["licensed users (rows)", "", "", t["licensed_users"]],
    ]
    skus: list[list[Any]] = [
        [part, info["sku_id"], info["category"], info["holders"], info["counted"],
         info["not_held"]]
        for part, info in snapshot["per_sku"].items()
    ]
    about: list[list[Any]] = [
        ["month", snapshot["month"]],
        ["tenant_id", snapshot["tenant_id"]],
        ["taken_at", snapshot["taken_at"]],
        ["run_id", snapshot["run_id"]],
        ["delivered", "true" if snapshot["delivered"] else "false (draft)"],
        ["csv export", snapshot["export"]["file"]],
        ["csv sha256", snapshot["export"]["sha256"]],
        ["policy", json.dumps(snapshot["policy"], sort_keys=True)],
    ]
    users = Sheet("users", snapshot["columns"], snapshot["rows"],
                  widths={0: 38, 1: 36, 2: 28, 4: 14, 7: 30, 9: 20, 10: 50, 11: 50, 12: 50})
    summary = Sheet("summary", ["total", "", "category", "users"], counts, widths={0: 36})
    per_sku = Sheet("per SKU", ["sku_part_number", "sku_id", "category", "holders", "counted",
                                "not_held"], skus, widths={0: 36, 1: 38, 2: 14})
    changes = changes_of(snapshot)
    if export_format(snapshot) < 2 or changes is None:  # format 1: exactly as delivered then
        return [users, summary, per_sku, Sheet("about", ["key", "value"], about,
                                               widths={0: 14, 1: 80})]
    about += [["export format", str(export_format(snapshot))],
              ["compared with", _basis(changes)]]
    moves: list[list[Any]] = [
        [kind, p.user_principal_name, p.display_name, p.user_id]
        for kind, people in (("joined", changes.joined), ("left", changes.left))
        for p in people]
    return [users, summary,
            Sheet("joiners and leavers", ["change", "user_principal_name", "display_name",
                                          "user_id"], moves, widths={1: 36, 2: 28, 3: 38}),
            per_sku, Sheet("about", ["key", "value"], about, widths={0: 14, 1: 80})]


def _basis(changes: Changes) -> str:
    if changes.previous_basis is None:
        return f"{changes.previous_month}: no snapshot (nothing to compare with)"
    return (f"{changes.previous_month} ({changes.previous_basis}, "
            f"{changes.previous_active} active)")


def export_month(state_dir: Path, month: str, fmt: str = "csv",
                 output: Path | None = None) -> Path:
    """Re-render a month's export from its stored snapshot; return the file written.

    `output` defaults to `<state>/exports/active-users-YYYY-MM.<fmt>` (a directory
    means that name inside it). The CSV must come out with the checksum recorded when the
    month's export was written; otherwise the snapshot was altered and nothing is written.
    A delivered month's own export file is never overwritten: if it is intact this is a
    no-op, if it differs (changed after delivery) this refuses; write the reproduction
    elsewhere with `--output`.
    """
    parse_month(month)
    if fmt not in ("csv", "xlsx"):
        raise UsageError(f"--format: {fmt!r} is not an export format; use csv or xlsx")
    snapshot = load_snapshot(state_dir, month)
    if snapshot is None:
        raise UsageError(f"no active-users snapshot for {month} in {state_dir}: the month "
                         "was never counted (run `dap-agent run active-users` in that month)")
    data = render_export(snapshot, fmt)
    csv_sha256 = sha256_hex(data if fmt == "csv" else render_export(snapshot, "csv"))
    if csv_sha256 != snapshot["export"]["sha256"]:
        raise DapError(f"{snapshot_path(state_dir, month)}: re-rendered export does not "
                       f"match the recorded sha256 {snapshot['export']['sha256']}: the "
                       "snapshot was altered; nothing written")
    if snapshot["delivered"]:
        check_delivered(state_dir, month, csv_sha256)
    canonical = state_dir / "exports" / export_name(month, fmt)
    target = canonical if output is None else Path(output)
    if target.is_dir():
        target = target / export_name(month, fmt)
    _refuse_state_files(state_dir, target, canonical)
    delivered_file = snapshot["delivered"] and fmt == "csv" and _same_file(target, canonical)
    if delivered_file and target.exists():
        current = read_state_bytes(target)
        if current == data:
            return target
        raise UsageError(
            f"{target} is the delivered export of {month} and differs from its snapshot "
            f"(sha256 {sha256_hex(current)}, delivered {snapshot['export']['sha256']}): "
            "it was changed after delivery; refusing to overwrite it. Write the "
            "reproduction elsewhere with --output PATH")
    if target == canonical:
        write_atomic(target, data)
    else:
        write_output(target, data)  # never over a device, fifo or symlink
    return target


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _refuse_state_files(state_dir: Path, target: Path, canonical: Path) -> None:
    """`--output` may write anywhere but over the agent's own records: inside the state
    directory only the month's own export in that format (snapshots, the delivered CSV
    under another format, the audit log, ... are what make the month reproducible)."""
    state = state_dir.resolve()
    resolved = target.resolve()
    if resolved != canonical.resolve() and (resolved == state or state in resolved.parents):
        raise UsageError(f"--output {target}: inside the state directory {state_dir} only "
                         f"{canonical.name} may be written; choose a path outside it")
