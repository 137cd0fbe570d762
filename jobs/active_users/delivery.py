"""Delivering the month: the audit record of the delivery (once), and the mail of the
export and totals to `deliver_to` (at least once).

The delivery is audited once (`month-delivered`: month, count, export and snapshot
checksums); a run killed between snapshot and audit entry is made good by the next run.
The mail is recorded as action `send-mail` (audited, planned in a dry run); a send whose
outcome is unknown is repeated, marked as a possible repeat.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.errors import GraphError
from agent.exports import sha256_hex
from agent.files import read_state_bytes, write_atomic
from agent.graph.mail import UPLOAD_MAX, Attachment, send_mail
from agent.job import JobContext
from agent.run import Subject, iso_z
from jobs.active_users.export import render_export
from jobs.active_users.policy import Policy
from jobs.active_users.snapshot import (
    SNAPSHOT_FORMAT,
    changes_of,
    dump,
    export_name,
    snapshot_path,
)

MAIL_NAMES = 50  # joiners / leavers named in the mail; all are in the export


def marker(state_dir: Path, month: str, kind: str) -> Path:
    """Small state files next to the month's snapshot: `audit` (its delivery is in the
    audit log), `mail` (the delivery mail's progress)."""
    return snapshot_path(state_dir, month).with_suffix(f".{kind}.json")


def _delivery_entry(ctx: JobContext, snapshot: dict[str, Any], snapshot_sha256: str,
                    export_path: Path) -> dict[str, Any]:
    month = snapshot["month"]
    return {"run_id": ctx.run.run_id, "job": "active-users", "event": "month-delivered",
            "month": month, "active": snapshot["totals"]["active"],
            "delivered_by_run": snapshot["run_id"], "delivered_at": snapshot["delivered_at"],
            "export_path": str(export_path), "export_sha256": snapshot["export"]["sha256"],
            "snapshot_path": str(snapshot_path(ctx.state_dir, month)),
            "snapshot_sha256": snapshot_sha256}


def record_delivery(ctx: JobContext, snapshot: dict[str, Any], snapshot_sha256: str,
                     export_path: Path) -> None:
    """Audit the delivery once; the marker file says it is done.

    Written after the delivered snapshot (which makes the month delivered): a run killed in
    between leaves no marker, and the next run records it (`_recover_delivery_record`).
    """
    record = ctx.run.audit.append(_delivery_entry(ctx, snapshot, snapshot_sha256, export_path))
    write_atomic(marker(ctx.state_dir, snapshot["month"], "audit"),
                 dump({"seq": record.get("seq"), "hash": record.get("hash"),
                        "run_id": ctx.run.run_id}))


def recover_delivery_record(ctx: JobContext, snapshot: dict[str, Any],
                             export_path: Path) -> None:
    """A delivered month without its audit marker: the delivering run was killed after the
    snapshot. Audit the delivery now, unless the entry made it into the log already."""
    month, digest = snapshot["month"], snapshot["export"]["sha256"]
    for entry in ctx.run.audit.entries():
        if (entry.get("event") == "month-delivered" and entry.get("month") == month
                and entry.get("export_sha256") == digest):
            write_atomic(marker(ctx.state_dir, month, "audit"),
                         dump({"seq": entry.get("seq"), "hash": entry.get("hash"),
                                "run_id": entry.get("run_id")}))
            return
    ctx.run.warn(f"the delivery of {month} by run {snapshot['run_id']} was not in the audit "
                 "log (that run was interrupted): recorded now")
    snapshot_sha256 = sha256_hex(read_state_bytes(snapshot_path(ctx.state_dir, month)))
    record_delivery(ctx, snapshot, snapshot_sha256, export_path)


def already_delivered(ctx: JobContext, existing: dict[str, Any], export_path: Path,
                       summary: dict[str, Any]) -> None:
    month = existing["month"]
    delivered_totals = existing["totals"]
    summary.update({
        "export_path": str(export_path),
        "export_sha256": existing["export"]["sha256"],
        "snapshot_path": str(snapshot_path(ctx.state_dir, month)),
        "delivered": True,
        "written": False,
        "delivered_at": existing["delivered_at"],
        "delivered_active": delivered_totals["active"],
        "note": (f"{month} was delivered at {existing['delivered_at']}: export and snapshot "
                 "left as they are; the counts above are today's live count"),
    })
    if delivered_totals["active"] != summary["active"]:
        ctx.run.warn(f"live count {summary['active']} differs from the {delivered_totals['active']}"
                     f" delivered for {month}; the delivered export stays as it is")
    try:
        intact = sha256_hex(read_state_bytes(export_path)) == existing["export"]["sha256"]
    except FileNotFoundError:
        intact = False
    if not intact:
        ctx.run.warn(f"{export_path} is missing or differs from the delivered export of "
                     f"{month}; reproduce it with `dap-agent export active-users --month "
                     f"{month} --output PATH`")


async def deliver_mail(ctx: JobContext, policy: Policy, snapshot: dict[str, Any],
                        export_path: Path) -> None:
    """Mail the delivered export and totals once per month (retried by a later final run).

    At least once: a "sending" record is written before the request and "sent" after it.
    A run killed in between leaves "sending": nobody knows whether Graph got the mail, and
    a missed delivery costs more than a second copy, so the next delivering run sends it
    again, marked as a possible repeat. A send Graph refused (an HTTP error) is not sent:
    its record is removed and the next delivering run simply sends it.
    """
    if not policy.deliver_to:
        return
    month = snapshot["month"]
    state_file = marker(ctx.state_dir, month, "mail")
    previous = _read_state(state_file)
    if previous.get("status") == "sent":
        ctx.run.report.summary["mail"] = "already sent"
        return
    repeat = previous.get("status") == "sending"
    if repeat:
        ctx.run.warn(f"the delivery mail of {month} may have been sent already by run "
                     f"{previous.get('run_id')}, which was interrupted while sending it: "
                     "sending it again, marked as a possible repeat")
    data = render_export(snapshot)
    attach = len(data) <= UPLOAD_MAX  # over 3 MiB it goes through an upload session
    if not attach:
        ctx.run.warn(f"export is {len(data)} bytes, over the {UPLOAD_MAX}-byte limit for a "
                     "mail attachment: mailing the totals and checksum only")
    subject = f"Active users {month}: {snapshot['totals']['active']}"
    text = _mail_text(snapshot, ctx.run.report.summary, export_path, attach)
    if repeat:
        subject += " (possible repeat)"
        text = (f"This message may repeat one sent by run {previous.get('run_id')}, which was "
                "interrupted before it could record the sending.\n\n" + text)
    target = Subject("mailbox", policy.sender, policy.sender)
    reason = f"deliver the active-user overview {month} to {', '.join(policy.deliver_to)}"
    record = {"format": SNAPSHOT_FORMAT, "month": month, "run_id": ctx.run.run_id,
              "to": list(policy.deliver_to), "export_sha256": snapshot["export"]["sha256"]}
    with ctx.run.change("send-mail", target, reason,
                        before={"to": list(policy.deliver_to), "month": month,
                                "possible_repeat": repeat}) as change:
        if change.execute:
            attachments = ([Attachment(export_name(month), "text/csv", data)]
                           if attach else [])
            write_atomic(state_file, dump({**record, "status": "sending",
                                            "started_at": iso_z(ctx.now)}))
            try:
                result = await send_mail(ctx.graph, sender=policy.sender,
                                         to=policy.deliver_to, subject=subject, text=text,
                                         attachments=attachments)
            except GraphError as exc:
                if exc.status is not None:  # Graph answered: the mail was not sent
                    state_file.unlink(missing_ok=True)
                raise  # no answer (connection lost): outcome unknown, "sending" stays
            write_atomic(state_file, dump({**record, "status": "sent",
                                            "sent_at": iso_z(ctx.now),
                                            "request_id": result.request_id}))
            change.done(request_id=result.request_id, after={
                "to": list(policy.deliver_to), "attachment": attach, "via": result.via,
                "export_sha256": snapshot["export"]["sha256"]})
    ctx.run.report.summary["mail"] = change.action.status


def _read_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_state_bytes(path))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {"status": "sending"}  # unreadable: treat as unknown outcome
    return data if isinstance(data, dict) else {"status": "sending"}


def _mail_text(snapshot: dict[str, Any], summary: dict[str, Any], export_path: Path,
               attached: bool) -> str:
    t = snapshot["totals"]
    lines = [
        f"Active-user overview for {snapshot['month']} (tenant {snapshot['tenant_id']}).",
        "",
        f"Active users (invoiced): {t['active']}",
        f"  E5: {t['e5']}",
        f"  Exchange-only: {t['exchange_only']}",
        f"Licensed, disabled (not counted): {t['licensed_disabled']}",
        f"Excluded (not counted): {t['excluded']}",
    ]
    changes = changes_of(snapshot)
    if changes is not None and changes.previous_basis is not None:
        # format 2: the delivered month's own joiners and leavers, by name
        lines.append(f"Change since {changes.previous_month} ({changes.previous_basis}): "
                     f"{t['active'] - (changes.previous_active or 0):+d} "
                     f"(joined {len(changes.joined)}, left {len(changes.left)})")
        for title, people in (("Joined", changes.joined), ("Left", changes.left)):
            if people:
                lines += ["", f"{title} ({len(people)}):"]
                lines += [f"  {p.label}" + (f" ({p.display_name})" if p.display_name else "")
                          for p in people[:MAIL_NAMES]]
                if len(people) > MAIL_NAMES:
                    lines.append(f"  and {len(people) - MAIL_NAMES} more (see the export's "
                                 "change column)")
    elif summary.get("previous_active") is not None:
        lines.append(f"Change since {summary['previous_month']} "
                     f"({summary['previous_basis']}): {summary['active_change']:+d} "
                     f"(joined {len(summary['joined'])}, left {len(summary['left'])})")
    lines += [
        "",
        f"Export: {export_path.name} ({'attached' if attached else 'too large to attach'})",
        f"SHA-256: {snapshot['export']['sha256']}",
        f"Counted at: {snapshot['taken_at']} (run {snapshot['run_id']})",
        "",
        "Reproduce it byte for byte: dap-agent export active-users --month "
        f"{snapshot['month']}",
    ]
    return "\n".join(lines) + "\n"
