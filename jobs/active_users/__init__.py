"""Job `active-users`: the monthly count of active users (E5 or Exchange-only) and its export.

DAP 3.4.1: every month, at the latest on its last working day, the provider delivers an
overview of the active users; the customer approves it and the provider invoices that
number. So the count must be right, explainable line by line, and reproducible.

Flow of a run (this module; the parts live beside it):
1. One `/subscribedSkus` call and one paged pass over `/users` (licence properties only).
2. `counting` (pure) gives each licensed user a row: category, counted, and why; the
   totals; who joined and left the count since the previous month's snapshot.
3. The month's snapshot (`snapshot`: rows, policy, time, tenant, joiners and leavers) is
   stored in `<state>/snapshots/active-users/YYYY-MM.json` and the export rendered from it
   (`export`) to `<state>/exports/active-users-YYYY-MM.csv`. Until the month is delivered
   each run replaces this draft. The month is delivered by `run --final` or by the
   scheduled run (trigger "schedule") on its last working day; from then on snapshot and
   export are immutable and later runs that month only report the live count next to them.
4. On delivery (`delivery`) the delivery is audited once and, optionally (`deliver_to`,
   `sender`), the export and the totals with the joiners and leavers are mailed through
   Graph, at least once.

A dry run counts and reports (with the checksum the export would have) but writes no file
and sends nothing. `export_month` re-renders a month's export from its snapshot, byte for
byte, in the snapshot's own export format (`dap-agent export active-users --month YYYY-MM`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, cast

import structlog

from agent.exports import sha256_hex
from agent.files import remove_stale_temporaries, write_atomic
from agent.graph import licensing
from agent.graph.licensing import SubscribedSku
from agent.job import JobContext, JobSpec
from agent.workdays import local_date
from jobs.active_users import delivery
from jobs.active_users.counting import (
    CATEGORIES,
    CHANGE_COLUMN,
    COLUMNS,
    Category,
    Changes,
    Person,
    Row,
    Rules,
    Totals,
    categorise,
    changes_since,
    per_sku,
    sort_rows,
    totals,
)
from jobs.active_users.export import export_month, render_export
from jobs.active_users.policy import (
    ASSIGNMENT_STATES,
    DEFAULT_E5_SKU_IDS,
    DEFAULT_EXCHANGE_ONLY_SKU_IDS,
    Policy,
)
from jobs.active_users.snapshot import (
    EXPORT_FORMAT,
    SNAPSHOT_FORMAT,
    build_snapshot,
    deadline_of,
    dump,
    export_name,
    load_snapshot,
    month_of,
    parse_month,
    previous_month,
    snapshot_path,
)

__all__ = [
    "ASSIGNMENT_STATES", "CATEGORIES", "CHANGE_COLUMN", "COLUMNS", "DEFAULT_E5_SKU_IDS",
    "DEFAULT_EXCHANGE_ONLY_SKU_IDS", "EXPORT_FORMAT", "JOB", "SNAPSHOT_FORMAT", "Category",
    "Changes", "Person", "Policy", "Row", "Rules", "Totals", "categorise", "changes_since",
    "deadline_of", "export_month", "export_name", "load_snapshot", "month_of", "parse_month",
    "per_sku", "previous_month", "render_export", "run", "snapshot_path", "totals",
]

log = structlog.get_logger("jobs.active_users")


async def run(ctx: JobContext) -> None:
    policy = cast(Policy, ctx.policy)
    if not ctx.dry_run:  # debris of a killed run (the job lock keeps other runs out)
        for directory in (ctx.state_dir / "exports", snapshot_path(ctx.state_dir, "x").parent):
            for name in remove_stale_temporaries(directory):
                log.info("removed a temporary file left by a killed run", file=name)
    skus = await licensing.subscribed_skus(ctx.graph)
    rules = Rules.from_policy(policy, skus)
    rows: list[Row] = []
    users_seen = 0
    matched_exclusions: set[str] = set()
    async for user in licensing.iter_users(ctx.graph):
        users_seen += 1
        for key in (user.id.lower(), user.user_principal_name.lower()):
            if key in rules.exclude:
                matched_exclusions.add(key)
        row = categorise(user, rules)
        if row is not None:
            rows.append(row)
    sort_rows(rows)
    _warn_about_data(ctx, policy, rules, rows, skus, matched_exclusions)

    # The month a run counts for is the month of the time it serves: a scheduled run that
    # is caught up after a month end (daemon down over 30 Nov - 2 Dec) delivers November.
    served = ctx.scheduled_for or ctx.now
    month = month_of(served, ctx.tz)
    year, mon = parse_month(month)
    deadline = policy.calendar.last_working_day(year, mon)
    delivering = ctx.final or (ctx.run.report.trigger == "schedule"
                               and local_date(served, ctx.tz) == deadline)
    counts, by_sku = totals(rows), per_sku(rows, rules, skus)
    summary = ctx.run.report.summary
    summary.update({"month": month, **counts.as_dict(), "users_seen": users_seen,
                    "deadline": deadline.isoformat(), "per_sku": by_sku})
    changes = _change_since_last_month(ctx, month, rows, summary)

    snap_path = snapshot_path(ctx.state_dir, month)
    export_path = ctx.state_dir / "exports" / export_name(month)
    existing = load_snapshot(ctx.state_dir, month)
    if existing is not None and existing["delivered"]:
        delivery.already_delivered(ctx, existing, export_path, summary)
        if not ctx.dry_run and not delivery.marker(ctx.state_dir, month, "audit").exists():
            delivery.recover_delivery_record(ctx, existing, export_path)
        if delivering:
            await delivery.deliver_mail(ctx, policy, existing, export_path)
        return

    snapshot = build_snapshot(ctx, month, rows, rules, skus, policy, delivering, counts, by_sku,
                              changes)
    data = render_export(snapshot)
    digest = sha256_hex(data)
    snapshot["export"]["sha256"] = digest
    summary.update({"export_path": str(export_path), "export_sha256": digest,
                    "snapshot_path": str(snap_path), "delivered": False,
                    "written": not ctx.dry_run})
    if ctx.dry_run:
        summary["note"] = ("dry run: nothing written" +
                           (f"; would deliver {month}" if delivering else ""))
        if delivering:
            await delivery.deliver_mail(ctx, policy, snapshot, export_path)
        return
    # The export first, the snapshot last: the snapshot is what makes the month delivered.
    write_atomic(export_path, data)
    snapshot_bytes = dump(snapshot)
    write_atomic(snap_path, snapshot_bytes)
    summary["delivered"] = delivering
    if delivering:
        summary["note"] = f"{month} delivered: its export is now immutable"
        delivery.record_delivery(ctx, snapshot, sha256_hex(snapshot_bytes), export_path)
        await delivery.deliver_mail(ctx, policy, snapshot, export_path)
    else:
        summary["note"] = (f"draft for {month}: replaced by the next run until the month is "
                           f"delivered (deadline {deadline.isoformat()})")


def _change_since_last_month(ctx: JobContext, month: str, rows: Sequence[Row],
                             summary: dict[str, Any]) -> Changes:
    before_month = previous_month(month)
    previous = load_snapshot(ctx.state_dir, before_month)
    if previous is not None and not previous["delivered"]:
        ctx.run.warn(f"{before_month} was never delivered; comparing with its last draft")
    changes = changes_since(before_month, rows, previous)
    counted = sum(1 for r in rows if r.counted)
    summary.update({
        "previous_month": before_month,
        "previous_basis": changes.previous_basis,
        "previous_active": changes.previous_active,
        "active_change": (None if changes.previous_active is None
                          else counted - changes.previous_active),
        "joined": [p.label for p in changes.joined],
        "left": [p.label for p in changes.left],
    })
    return changes


def _warn_about_data(ctx: JobContext, policy: Policy, rules: Rules, rows: Sequence[Row],
                     skus: Sequence[SubscribedSku], matched: set[str]) -> None:
    tenant_skus = {s.sku_id for s in skus}
    # The long default lists name every E5 variant; only the SKUs someone configured by
    # hand are worth a warning when the tenant has none of them.
    for key in ("e5_sku_ids", "exchange_only_sku_ids"):
        if key in policy.model_fields_set:
            for sku in getattr(policy, key):
                if sku not in tenant_skus:
                    ctx.run.warn(f"active_users.{key}: SKU {sku} is not in this tenant's "
                                 "/subscribedSkus (a typo, or a subscription that ended?)")
    unknown = Counter(s for r in rows for s in r.held if s not in tenant_skus)
    for sku, n in sorted(unknown.items()):
        ctx.run.warn(f"SKU {sku} held by {n} user(s) is not in /subscribedSkus: shown by id")
    for entry in policy.exclude_users:
        if entry.lower() not in matched:
            ctx.run.warn(f"active_users.exclude_users: {entry!r} matches no user")
    failing = [r for r in rows if any(rules.category_of(a.sku_id) != "other"
                                      for a in r.not_held)]
    if failing:
        errors = Counter(f"{rules.name(a.sku_id)} {a.state}" + (f" ({a.error})" if a.error else "")
                         for r in failing for a in r.not_held
                         if rules.category_of(a.sku_id) != "other")
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(errors.items()))
        ctx.run.warn(f"{len(failing)} user(s) have E5/Exchange assignments that are not held "
                     f"({detail}); not counted for those SKUs, see the not_held column")


JOB = JobSpec(
    id="active-users",
    title="Monthly active-user count and export",
    policy_section="active_users",
    policy_model=Policy,
    # Mail.Send only when deliver_to is set: named in the 403 message if it is missing.
    permissions=("User.Read.All", "Organization.Read.All"),
    changes_tenant=False,
    run=run,
)
