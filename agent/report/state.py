"""What the service report knows: the month as the agent's stored state records it.

Only files the jobs wrote are read (the active-users snapshots, stored run reports, the
offboarding ledger, `decisions.jsonl`, the secure-score records, the audit log); Graph is
never called. Everything here is pure reading into plain data the template shows, so the
same state always gives the same `MonthState`.

Which run a section reports on: the last run of that job started in the month (local time)
that did not fail. Run ids begin with their UTC start time (`20261130T060000Z-job-abc123`),
so runs are chosen by file name and only the chosen reports are read (a device-compliance
report of a large tenant is tens of MB).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from agent.audit import AuditLog
from agent.audit.log import parse_checkpoint
from agent.errors import UsageError
from agent.ledger import Ledger
from agent.run import load_report

MONTH_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
RUN_NAME = re.compile(r"^(\d{8}T\d{6}Z)-([a-z][a-z0-9-]*)-[0-9a-f]+\.json(?:\.gz)?$")
TREND_MONTHS = 12
SUBJECTS_PER_RULE = 10  # names listed per rule; the rest is "and N more"
OFFBOARDING_LEDGER = "offboarding-ledger.jsonl"


def parse_month(month: str) -> date:
    """`YYYY-MM` -> the first day of that month; anything else is a usage error."""
    found = MONTH_RE.match(month or "")
    if not found:
        raise UsageError(f"--month: {month!r} is not a month as YYYY-MM (e.g. 2026-11)")
    return date(int(found[1]), int(found[2]), 1)


def month_key(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def shift_month(first: date, months: int) -> date:
    index = first.year * 12 + first.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def trend_months(first: date) -> list[str]:
    """The 12 months ending with `first`'s month, oldest first."""
    return [month_key(shift_month(first, -n)) for n in range(TREND_MONTHS - 1, -1, -1)]


# ---- the run reports ----------------------------------------------------------------------

@dataclass(frozen=True)
class StoredRun:
    run_id: str
    job: str
    started: datetime  # UTC, from the run id
    path: Path

    def month(self, tz: ZoneInfo) -> str:
        return month_key(self.started.astimezone(tz).date())


def stored_runs(state_dir: Path) -> list[StoredRun]:
    """Every stored run report, oldest first, known by its file name alone."""
    directory = state_dir / "runs"
    if not directory.is_dir():
        return []
    runs = []
    for path in directory.iterdir():
        found = RUN_NAME.match(path.name)
        if not found:
            continue
        started = datetime.strptime(found[1], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        run_id = path.name.removesuffix(".gz").removesuffix(".json")
        runs.append(StoredRun(run_id, found[2], started, path))
    runs.sort(key=lambda r: (r.started, r.run_id))
    return runs


class Runs:
    """The stored runs by job and month; reports loaded on demand, each once."""

    def __init__(self, state_dir: Path, tz: ZoneInfo) -> None:
        self.tz = tz
        self._by_key: dict[tuple[str, str], list[StoredRun]] = {}
        for run in stored_runs(state_dir):
            self._by_key.setdefault((run.job, run.month(tz)), []).append(run)
        self._loaded: dict[str, dict[str, Any] | None] = {}

    def months_with_runs(self) -> set[str]:
        return {month for _, month in self._by_key}

    def last(self, job: str, month: str) -> dict[str, Any] | None:
        """The month's last run of `job` that completed (ok or partial), or None."""
        for run in reversed(self._by_key.get((job, month), [])):
            report = self._load(run)
            if report is not None and report.get("status") in ("ok", "partial"):
                return report
        return None

    def _load(self, run: StoredRun) -> dict[str, Any] | None:
        if run.run_id not in self._loaded:
            try:
                report = load_report(run.path)
            except (OSError, ValueError):
                report = None  # unreadable: audit verify names it; the report skips it
            self._loaded[run.run_id] = report if isinstance(report, dict) else None
        return self._loaded[run.run_id]


# ---- what each section shows -----------------------------------------------------------------

@dataclass
class ActiveUsers:
    month: str
    delivered: bool
    export_file: str
    export_sha256: str
    taken_at: str
    totals: dict[str, int]
    per_sku: list[dict[str, Any]]  # part_number, category, holders, counted
    joiners: list[dict[str, str]]  # name, upn
    leavers: list[dict[str, str]]
    previous_month: str
    previous_known: bool


@dataclass
class RuleGroup:
    rule: str
    severity: str
    count: int
    subjects: list[str]  # the first SUBJECTS_PER_RULE names

    @property
    def more(self) -> int:
        return self.count - len(self.subjects)


@dataclass
class MonthState:
    month: str
    first_day: date
    tenant_id: str | None
    months: list[str]  # the trend's 12 months, oldest first
    active_users: ActiveUsers | None
    active_trend: list[dict[str, Any]]  # month, active, e5, exchange_only (None: no data)
    deleted_accounts: list[dict[str, str]]
    veto_window: list[dict[str, Any]]
    decisions: list[dict[str, Any]]
    manual_tasks: list[dict[str, str]]
    offboarding_run: str | None
    devices: dict[str, Any] | None  # the last device-compliance summary of the month
    device_findings: list[RuleGroup]
    device_trend: list[dict[str, Any]]  # month, compliant, encrypted, escrowed (percent)
    device_run: str | None
    privileged: dict[str, Any] | None
    privileged_findings: list[RuleGroup]
    privileged_run: str | None
    score: dict[str, Any] | None  # the month's last secure-score record
    score_previous: dict[str, Any] | None  # the previous month's last record
    score_trend: list[dict[str, Any]]  # month, current, max, percent
    score_categories: list[dict[str, Any]]  # category, points, controls
    reported_runs: list[str]
    last_run: dict[str, Any] | None  # run_id, job, finished_at, audit_checkpoint
    audit: dict[str, Any] = field(default_factory=dict)  # checkpoint, verified, problem

    @property
    def has_data(self) -> bool:
        return bool(self.active_users or self.reported_runs or self.score
                    or self.deleted_accounts or self.decisions)


def collect(state_dir: Path, month: str, tz: ZoneInfo) -> MonthState:
    """The month's state, or UsageError (exit 2) when nothing at all was stored for it."""
    first = parse_month(month)
    runs = Runs(state_dir, tz)
    months = trend_months(first)

    offboarding = runs.last("offboarding", month)
    devices = runs.last("device-compliance", month)
    privileged = runs.last("privileged-roles", month)
    active_run = runs.last("active-users", month)
    score_run = runs.last("secure-score", month)
    reported = [r for r in (active_run, offboarding, devices, privileged, score_run) if r]

    scores = _score_records(state_dir)
    score = _last_record_in(scores, month)
    score_previous = _last_record_in(scores, month_key(shift_month(first, -1)))

    state = MonthState(
        month=month, first_day=first,
        tenant_id=None,
        months=months,
        active_users=_active_users(state_dir, month, first),
        active_trend=[_active_point(state_dir, m) for m in months],
        deleted_accounts=_deleted_accounts(state_dir, first, tz),
        veto_window=list((offboarding or {}).get("summary", {}).get("veto_window") or []),
        decisions=_decisions(state_dir, month, tz),
        manual_tasks=[_finding_row(f) for f in _findings(offboarding)
                      if f.get("rule") == "OFF-MANUAL-TASK"],
        offboarding_run=_run_id(offboarding),
        devices=(devices or {}).get("summary") if devices else None,
        device_findings=_by_rule(_findings(devices)),
        device_trend=[_device_point(runs.last("device-compliance", m), m) for m in months],
        device_run=_run_id(devices),
        privileged=(privileged or {}).get("summary") if privileged else None,
        privileged_findings=_by_rule(_findings(privileged)),
        privileged_run=_run_id(privileged),
        score=score,
        score_previous=score_previous,
        score_trend=[_score_point(_last_record_in(scores, m), m) for m in months],
        score_categories=_categories(score),
        reported_runs=[str(r["run_id"]) for r in reported],
        last_run=_last_run(reported),
    )
    if state.active_users is not None:
        state.tenant_id = _snapshot_tenant(state_dir, month)
    if not state.has_data:
        raise UsageError(f"no stored data for {month} in {state_dir}: no active-users "
                         "snapshot, no run report, no Secure Score record of that month")
    state.audit = _audit(state_dir, state.last_run)
    return state


# ---- active users ----------------------------------------------------------------------------

def _snapshot(state_dir: Path, month: str) -> dict[str, Any] | None:
    from jobs.active_users import load_snapshot

    return load_snapshot(state_dir, month)


def _snapshot_tenant(state_dir: Path, month: str) -> str | None:
    snapshot = _snapshot(state_dir, month)
    return str(snapshot.get("tenant_id")) if snapshot else None


def _counted(snapshot: dict[str, Any]) -> dict[str, dict[str, str]]:
    """user id -> name and UPN of the users the snapshot counts."""
    cols = snapshot["columns"]
    i_id, i_upn, i_name, i_counted = (cols.index("user_id"), cols.index("user_principal_name"),
                                      cols.index("display_name"), cols.index("counted"))
    return {row[i_id]: {"name": row[i_name] or row[i_upn], "upn": row[i_upn]}
            for row in snapshot["rows"] if row[i_counted] == "true"}


def _people(users: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    return sorted(users, key=lambda u: (u["name"].casefold(), u["upn"].casefold()))


def _active_users(state_dir: Path, month: str, first: date) -> ActiveUsers | None:
    snapshot = _snapshot(state_dir, month)
    if snapshot is None:
        return None
    previous_month = month_key(shift_month(first, -1))
    previous = _snapshot(state_dir, previous_month)
    now = _counted(snapshot)
    then = _counted(previous) if previous else {}
    per_sku = [{"part_number": part, **{k: info.get(k) for k in
                                        ("category", "holders", "counted")}}
               for part, info in snapshot.get("per_sku", {}).items()
               if info.get("category") != "other" or info.get("counted")]
    return ActiveUsers(
        month=month, delivered=bool(snapshot.get("delivered")),
        export_file=str(snapshot["export"]["file"]),
        export_sha256=str(snapshot["export"]["sha256"]),
        taken_at=str(snapshot.get("taken_at") or ""),
        totals={k: int(v) for k, v in snapshot["totals"].items()},
        per_sku=per_sku,
        joiners=_people(now[u] for u in now.keys() - then.keys()) if previous else [],
        leavers=_people(then[u] for u in then.keys() - now.keys()) if previous else [],
        previous_month=previous_month, previous_known=previous is not None)


def _active_point(state_dir: Path, month: str) -> dict[str, Any]:
    snapshot = _snapshot(state_dir, month)
    totals = snapshot["totals"] if snapshot else {}
    return {"month": month, "active": totals.get("active"), "e5": totals.get("e5"),
            "exchange_only": totals.get("exchange_only"),
            "delivered": bool(snapshot and snapshot.get("delivered"))}


# ---- offboarding -----------------------------------------------------------------------------

def _local_month(moment: datetime | None, tz: ZoneInfo) -> date | None:
    return moment.astimezone(tz).date().replace(day=1) if moment else None


def _deleted_accounts(state_dir: Path, first: date, tz: ZoneInfo) -> list[dict[str, str]]:
    """The users purged for good in the month (DAP 3.13.3), from the offboarding ledger."""
    path = state_dir / OFFBOARDING_LEDGER
    if not path.is_file():
        return []
    rows = []
    for record in Ledger.open(path, write=False).records():
        if _local_month(record.purged_at, tz) != first or record.purged_at is None:
            continue
        rows.append({
            "name": record.name or record.upn or record.user_id,
            "upn": record.upn or "",
            "leave_date": record.leave_date or "",
            "deleted_on": _local_day(record.deleted_at, tz),
            "purged_on": _local_day(record.purged_at, tz),
        })
    rows.sort(key=lambda r: (r["purged_on"], r["name"].casefold()))
    return rows


def _local_day(moment: datetime | None, tz: ZoneInfo) -> str:
    return moment.astimezone(tz).date().isoformat() if moment else ""


def _decisions(state_dir: Path, month: str, tz: ZoneInfo) -> list[dict[str, Any]]:
    """Vetoes, lifts and approvals recorded in the month, read through agent.decisions (a
    damaged decisions.jsonl is its DecisionsError: the report does not guess either)."""
    from agent import decisions

    found = []
    for decision in decisions.load(state_dir):
        day = decision.at.astimezone(tz).date()
        if month_key(day) != month:
            continue
        found.append({"day": day.isoformat(), "kind": decision.kind,
                      "user": decision.user_principal_name or decision.user_id,
                      "by": decision.by or "", "reason": decision.reason or "",
                      "until": decision.until or ""})
    found.sort(key=lambda d: (d["day"], d["user"].casefold()))
    return found


# ---- findings --------------------------------------------------------------------------------

def _findings(report: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [f for f in (report or {}).get("findings") or [] if isinstance(f, dict)]


def _subject_name(finding: dict[str, Any]) -> str:
    subject = finding.get("subject") or {}
    return str(subject.get("name") or subject.get("id") or "?")


def _finding_row(finding: dict[str, Any]) -> dict[str, str]:
    return {"subject": _subject_name(finding), "detail": str(finding.get("detail") or "")}


SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2, "info": 3}


def _by_rule(findings: list[dict[str, Any]]) -> list[RuleGroup]:
    groups: dict[str, RuleGroup] = {}
    for finding in findings:
        rule = str(finding.get("rule"))
        group = groups.setdefault(rule, RuleGroup(rule, str(finding.get("severity")), 0, []))
        group.count += 1
        name = _subject_name(finding)
        if len(group.subjects) < SUBJECTS_PER_RULE and name not in group.subjects:
            group.subjects.append(name)
    for group in groups.values():
        group.subjects.sort(key=str.casefold)
    return sorted(groups.values(),
                  key=lambda g: (SEVERITY_ORDER.get(g.severity, 9), g.rule))


def _device_point(report: dict[str, Any] | None, month: str) -> dict[str, Any]:
    summary = (report or {}).get("summary") or {}
    return {"month": month, "compliant": summary.get("compliant_percent"),
            "encrypted": summary.get("encrypted_percent"),
            "escrowed": summary.get("escrowed_percent")}


# ---- secure score ----------------------------------------------------------------------------

def _score_records(state_dir: Path) -> list[dict[str, Any]]:
    from jobs.secure_score import load_records

    return load_records(state_dir)


def _last_record_in(records: list[dict[str, Any]], month: str) -> dict[str, Any] | None:
    inside = [r for r in records if str(r.get("date", "")).startswith(month + "-")]
    return inside[-1] if inside else None


def _score_point(record: dict[str, Any] | None, month: str) -> dict[str, Any]:
    if record is None:
        return {"month": month, "current": None, "max": None, "percent": None}
    return {"month": month, "current": record["current"], "max": record["max"],
            "percent": record.get("percent"), "date": record["date"]}


def _categories(record: dict[str, Any] | None) -> list[dict[str, Any]]:
    if record is None:
        return []
    points: dict[str, float] = {}
    controls: dict[str, int] = {}
    for control in record.get("controls") or []:
        category = str(control.get("category") or "?")
        points[category] = round(points.get(category, 0.0) + float(control.get("score") or 0),
                                 2)
        controls[category] = controls.get(category, 0) + 1
    return [{"category": c, "points": points[c], "controls": controls[c]}
            for c in sorted(points)]


# ---- runs and the audit log ------------------------------------------------------------------

def _run_id(report: dict[str, Any] | None) -> str | None:
    return str(report["run_id"]) if report else None


def _last_run(reported: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not reported:
        return None
    last = max(reported, key=lambda r: (str(r.get("finished_at") or r.get("started_at")),
                                        str(r["run_id"])))
    return {"run_id": last["run_id"], "job": last.get("job"),
            "finished_at": last.get("finished_at"),
            "audit_checkpoint": last.get("audit_checkpoint")}


def _entries(log: AuditLog) -> Iterator[dict[str, Any]]:
    try:
        yield from log.entries()
    except (OSError, ValueError):
        return


def _audit(state_dir: Path, last_run: dict[str, Any] | None) -> dict[str, Any]:
    """The checkpoint of the last reported run and whether the log verifies through it.

    The checkpoint is the run report's own `audit_checkpoint` (the last entry written before
    the report was stored); a report stored before reports carried one gets the entry
    before its `run-finished` entry, which is the same entry.
    """
    log = AuditLog(state_dir / "audit.jsonl")
    checkpoint = last_run.get("audit_checkpoint") if last_run else None
    if last_run is not None and not checkpoint:
        previous: dict[str, Any] | None = None
        for entry in _entries(log):
            if (entry.get("run_id") == last_run["run_id"]
                    and entry.get("event") in ("run-finished", "run-failed")):
                if previous is not None:
                    checkpoint = f"{previous.get('seq')}:{previous.get('hash')}"
                break
            previous = entry
    expected: list[tuple[int, str]] = []
    if checkpoint:
        try:
            expected = [parse_checkpoint(str(checkpoint))]
        except UsageError:
            checkpoint = None
    result = log.verify(checkpoints=expected)
    return {"checkpoint": checkpoint, "verified": bool(result.ok and checkpoint),
            "log_ok": result.ok, "problem": result.problem}


def days_between(first: date) -> tuple[date, date]:
    """The month's first and last day."""
    return first, shift_month(first, 1) - timedelta(days=1)
