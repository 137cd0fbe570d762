"""Each job's last run, in `<state>/jobs/<job>.json`: what `dap-agent jobs` shows and what
the daemon's catch-up decides on.

The runner calls `record_run` after every run (CLI and daemon alike). The daemon's
catch-up looks at `last_scheduled_success_at`: the start of the last run *the daemon*
started (schedule, catch-up or retry) that ended `ok`. A run by hand does not count: an
admin's draft `run active-users` on 29 November must not stand in for the missed
delivery run of 28 November. `scheduled_since` is when the daemon first scheduled the
job, so a fresh install has nothing to catch up, but a job that never succeeded since
then has.

If the file is missing or unreadable, the state is rebuilt from the stored run reports
(`<state>/runs/<run_id>.json`), so a lost or damaged file cannot hide a missed run.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from agent.files import exclusive_lock, read_state_bytes, write_atomic
from agent.run import RunReport, iso_z, load_report

if TYPE_CHECKING:
    from agent.settings import Settings

log = structlog.get_logger("agent.jobstate")

# Triggers of the runs the daemon starts (the CLI's are "cli"; the demo's "demo").
DAEMON_TRIGGERS = frozenset({"schedule", "catch-up", "retry"})


@dataclass(frozen=True)
class JobState:
    job: str
    last_run_id: str | None = None
    last_status: str | None = None  # ok | partial | failed
    last_started_at: str | None = None  # ISO, Z
    last_finished_at: str | None = None
    last_success_at: str | None = None  # start of the last run that ended ok
    findings: int | None = None  # of the last run
    trigger: str | None = None  # of the last run
    last_scheduled_success_at: str | None = None  # start of the daemon's last ok run
    scheduled_since: str | None = None  # when the daemon first scheduled the job

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class JobStatus:
    """One row of `dap-agent jobs`."""

    job: str
    enabled: bool
    schedule: str
    next_run: str | None  # local time, e.g. "2026-03-31 07:00 CEST"; "disabled"
    last_run: str | None
    status: str | None  # the last run's status, or "running"
    findings: int | None
    running_pid: int | None = None
    next_run_at: datetime | None = None
    last_run_at: datetime | None = None


def state_path(state_dir: Path, job_id: str) -> Path:
    return state_dir / "jobs" / f"{job_id}.json"


def read_state(state_dir: Path, job_id: str) -> JobState:
    """The job's state; rebuilt from the run reports if the file is missing or damaged."""
    path = state_path(state_dir, job_id)
    try:
        data = json.loads(read_state_bytes(path))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return JobState.from_dict(data)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, TypeError) as exc:
        log.warning("job state unreadable; rebuilding it from the run reports", job=job_id,
                    path=str(path), error=str(exc))
    return rebuild_state(state_dir, job_id)


def record_run(state_dir: Path, report: RunReport) -> JobState:
    """Record a finished run (any status, any trigger). Called by the runner."""
    with _updating(state_dir, report.job) as current:
        state = replace(
            current,
            last_run_id=report.run_id,
            last_status=report.status,
            last_started_at=report.started_at,
            last_finished_at=report.finished_at,
            findings=len(report.findings),
            trigger=report.trigger,
        )
        if report.status == "ok":
            state = replace(state, last_success_at=report.started_at)
            if report.trigger in DAEMON_TRIGGERS:
                state = replace(state, last_scheduled_success_at=report.started_at)
        _write(state_path(state_dir, report.job), state)
    return state


def mark_scheduled(state_dir: Path, job_id: str, now: datetime) -> JobState:
    """Note when the daemon first scheduled the job (kept if already set)."""
    with _updating(state_dir, job_id) as current:
        if current.scheduled_since is not None:
            return current
        state = replace(current, scheduled_since=iso_z(now))
        _write(state_path(state_dir, job_id), state)
    return state


def rebuild_state(state_dir: Path, job_id: str) -> JobState:
    """The state as far as the stored run reports tell it (run ids start with the UTC time)."""
    state = JobState(job=job_id)
    runs = state_dir / "runs"
    if not runs.is_dir():
        return state
    for path in sorted(runs.glob(f"*-{job_id}-*.json*"), key=lambda p: p.name.split(".")[0]):
        try:
            report = load_report(path)
            if report.get("job") != job_id:
                continue
            started, status, trigger = report["started_at"], report["status"], report["trigger"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        state = replace(state, last_run_id=report.get("run_id"), last_status=status,
                        last_started_at=started, last_finished_at=report.get("finished_at"),
                        findings=len(report.get("findings") or []), trigger=trigger)
        if status == "ok":
            state = replace(state, last_success_at=started)
            if trigger in DAEMON_TRIGGERS:
                state = replace(state, last_scheduled_success_at=started)
    return state


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def job_status(settings: Settings, now: datetime | None = None) -> list[JobStatus]:
    """Each registered job's schedule, next run, last run, status and findings count.

    Reads only the state dir (never the daemon), so it works while the daemon runs.
    """
    from agent.lock import running_holder
    from agent.schedule import next_fire_times, policy_trigger
    from jobs import REGISTRY

    if now is None:
        from agent.runner import agent_now

        now = agent_now(settings)
    tz = settings.zone
    rows: list[JobStatus] = []
    for spec in REGISTRY.values():
        policy = settings.policy(spec.policy_section)
        state = read_state(settings.state_dir, spec.id)
        next_at = None
        if policy.enabled:
            upcoming = next_fire_times(policy_trigger(policy, tz), tz, now, 1)
            next_at = upcoming[0] if upcoming else None
        last_at = parse_time(state.last_started_at)
        holder = running_holder(settings.state_dir, spec.id)
        rows.append(JobStatus(
            job=spec.id,
            enabled=policy.enabled,
            schedule=policy.schedule,
            next_run=(_local(next_at, tz) if next_at else None) if policy.enabled
            else "disabled",
            last_run=_local(last_at, tz) if last_at else None,
            status="running" if holder else state.last_status,
            findings=state.findings,
            running_pid=holder.get("pid") if holder else None,
            next_run_at=next_at,
            last_run_at=last_at,
        ))
    return rows


def _local(moment: datetime, tz: Any) -> str:
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")


@contextlib.contextmanager
def _updating(state_dir: Path, job_id: str) -> Iterator[JobState]:
    """Read-modify-write under a lock: the runner (CLI or daemon) and the daemon both write."""
    with exclusive_lock(state_dir / "locks" / f"{job_id}.state.lock"):
        yield read_state(state_dir, job_id)


def _write(path: Path, state: JobState) -> None:
    write_atomic(path, (json.dumps(asdict(state), indent=2) + "\n").encode())
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # a writer killed mid-write
        stale.unlink(missing_ok=True)  # (safe: callers hold the job's state lock)
