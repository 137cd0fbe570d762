"""What each event says: small pure functions from run reports (and facts) to a Message.

Run-derived events compare the run with the job's previous completed run, so a finding
that stays open, or a purge already announced, is not sent again. Every message names
its subjects (capped, "and N more") and carries the audit checkpoint of the moment it was
made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from agent.notify.settings import SEVERITY_RANK
from agent.run import RunReport
from agent.run_lines import subject_label as subject_text

ITEM_LIMIT = 50  # lines of one message; the rest is "and N more" (all are in the report)


@dataclass(frozen=True)
class Message:
    event: str
    title: str  # one line: a mail's subject, a card's heading
    items: tuple[str, ...] = ()  # one line per subject
    facts: tuple[tuple[str, str], ...] = ()  # (label, value): job, run, status, ...
    severity: str | None = None
    job: str | None = None
    run_id: str | None = None
    checkpoint: str = ""
    omitted: int = 0  # items left out past ITEM_LIMIT
    data: Mapping[str, Any] = field(default_factory=dict)  # machine-readable, for JSON hooks

    def with_checkpoint(self, checkpoint: str) -> Message:
        return replace(self, checkpoint=checkpoint)

    def text(self) -> str:
        lines = [self.title, ""]
        lines += [f"- {item}" for item in self.items]
        if self.omitted:
            lines.append(f"- and {self.omitted} more (see the run report)")
        if self.items:
            lines.append("")
        lines += [f"{label}: {value}" for label, value in self.facts]
        lines.append(f"audit checkpoint: {self.checkpoint}")
        return "\n".join(lines) + "\n"

    def as_json(self) -> dict[str, Any]:
        return {"source": "dap-agent", "event": self.event, "title": self.title,
                "severity": self.severity, "job": self.job, "run_id": self.run_id,
                "items": list(self.items), "omitted": self.omitted,
                "facts": dict(self.facts), "audit_checkpoint": self.checkpoint,
                "data": dict(self.data)}


def _capped(items: Sequence[str]) -> tuple[tuple[str, ...], int]:
    return tuple(items[:ITEM_LIMIT]), max(0, len(items) - ITEM_LIMIT)


def _facts(report: RunReport, tenant_id: str) -> tuple[tuple[str, str], ...]:
    mode = "dry run" if report.dry_run else "live"
    return (("tenant", tenant_id), ("job", report.job), ("run", report.run_id),
            ("status", report.status), ("mode", mode), ("started", report.started_at))


def finding_key(rule: str, subject: Mapping[str, Any] | Any) -> tuple[str, str, str]:
    get = subject.get if isinstance(subject, Mapping) else lambda k: getattr(subject, k, None)
    return rule, str(get("type") or ""), str(get("id") or "")


def run_failed(report: RunReport, tenant_id: str) -> Message | None:
    """A run that failed, or ended partial (failed actions, interrupted)."""
    if report.status == "ok":
        return None
    failed = [a for a in report.actions if a.status == "failed"]
    items = [f"{a.action} failed: {subject_text(a.target)}" + (f": {a.error}" if a.error else "")
             for a in failed]
    lines, omitted = _capped(items)
    what = "failed" if report.status == "failed" else "ended partial"
    title = f"{report.job}: run {what}"
    if failed:
        title += f" ({len(failed)} failed action{'s' if len(failed) != 1 else ''})"
    facts = _facts(report, tenant_id) + ((("error", report.error),) if report.error else ())
    return Message("run-failed", title, lines, facts, "high", report.job, report.run_id,
                   omitted=omitted, data={"status": report.status, "error": report.error,
                                          "failed_actions": len(failed)})


def new_findings(report: RunReport, previous: Mapping[str, Any] | None, tenant_id: str,
                 min_severity: str) -> Message | None:
    """One digest of the findings at or above `min_severity` that the previous completed
    run of the job did not have (no previous run: all of them are new)."""
    floor = SEVERITY_RANK[min_severity]
    before = {finding_key(str(f.get("rule")), f.get("subject") or {})
              for f in (previous or {}).get("findings") or [] if isinstance(f, Mapping)}
    fresh = [f for f in report.findings if SEVERITY_RANK.get(f.severity, 0) >= floor
             and finding_key(f.rule, f.subject) not in before]
    if not fresh:
        return None
    fresh.sort(key=lambda f: (-SEVERITY_RANK.get(f.severity, 0), f.rule, subject_text(f.subject)))
    items = [f"{f.rule} ({f.severity}): {subject_text(f.subject)}: {f.detail}" for f in fresh]
    lines, omitted = _capped(items)
    top = fresh[0].severity
    n = len(fresh)
    title = f"{report.job}: {n} new finding{'s' if n != 1 else ''} (highest: {top})"
    return Message("new-finding", title, lines, _facts(report, tenant_id), top, report.job,
                   report.run_id, omitted=omitted,
                   data={"findings": [{"rule": f.rule, "severity": f.severity,
                                       "subject": _subject_dict(f.subject)}
                                      for f in fresh[:ITEM_LIMIT]]})


def _subject_dict(subject: Any) -> dict[str, Any]:
    return {"type": subject.type, "id": subject.id, "name": subject.name}


def purge_announced(report: RunReport, previous: Mapping[str, Any] | None,
                    tenant_id: str) -> Message | None:
    """Leavers entering the veto window (`summary.veto_window`) in this run."""
    window = _entries(report.summary.get("veto_window"))
    before = {e.get("user_id") for e in _entries(((previous or {}).get("summary") or {})
                                                  .get("veto_window"))}
    entering = [e for e in window if e.get("user_id") not in before]
    if not entering:
        return None
    entering.sort(key=lambda e: (str(e.get("purge_date")), str(e.get("user_principal_name"))))
    items = [f"{e.get('user_principal_name') or e.get('user_id')}: purge from "
             f"{e.get('purge_date')}" + (" (vetoed)" if e.get("vetoed") else "")
             for e in entering]
    lines, omitted = _capped(items)
    n = len(entering)
    title = (f"{report.job}: {n} account{'s' if n != 1 else ''} to be purged for good "
             "(veto window open)")
    facts = (*_facts(report, tenant_id),
             ("veto", "dap-agent veto USER --reason TEXT stops a purge"))
    return Message("purge-announced", title, lines, facts, "medium", report.job,
                   report.run_id, omitted=omitted, data={"entering": entering[:ITEM_LIMIT]})


def _entries(value: Any) -> list[dict[str, Any]]:
    return [e for e in value if isinstance(e, dict)] if isinstance(value, list) else []


def month_delivered(report: RunReport, tenant_id: str) -> Message | None:
    """The run that delivered the month (active-users, summary `delivered` and `written`)."""
    s = report.summary
    if report.dry_run or not (s.get("delivered") is True and s.get("written") is True):
        return None
    items = [f"active users: {s.get('active')}",
             f"export: {s.get('export_path')}", f"sha256: {s.get('export_sha256')}"]
    joined, left = s.get("joined") or [], s.get("left") or []
    if isinstance(joined, list) and isinstance(left, list) and s.get("previous_month"):
        items.append(f"since {s.get('previous_month')}: {len(joined)} joined, "
                     f"{len(left)} left")
    title = f"active users {s.get('month')} delivered: {s.get('active')}"
    return Message("month-delivered", title, tuple(items), _facts(report, tenant_id), "info",
                   report.job, report.run_id,
                   data={k: s.get(k) for k in ("month", "active", "e5", "exchange_only",
                                              "export_sha256")})


def audit_broken(problem: str, log_path: str, tenant_id: str) -> Message:
    return Message("audit-broken", "dap-agent audit log is NOT intact: runs are refused",
                   (problem,), (("tenant", tenant_id), ("log", log_path),
                                ("next step", "dap-agent audit verify; after investigation "
                                              "dap-agent audit rotate --reason TEXT")),
                   "high", data={"problem": problem})


def certificate_expiring(not_after: date, days_left: int, subject: str, thumbprint: str,
                         tenant_id: str) -> Message:
    title = (f"dap-agent client certificate expires in {days_left} day"
             f"{'s' if days_left != 1 else ''} ({not_after.isoformat()})")
    return Message("certificate-expiring", title,
                   (f"subject {subject}, thumbprint {thumbprint}",),
                   (("tenant", tenant_id),
                    ("next step", "upload a new certificate to the app registration and "
                                  "point client_certificate_path at it")),
                   "high" if days_left <= 7 else "medium",
                   data={"not_after": not_after.isoformat(), "days_left": days_left,
                         "thumbprint": thumbprint})
