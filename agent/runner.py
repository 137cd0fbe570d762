"""Run one job: lock, Graph client, audited Run, JobContext, the job, the stored report.

The CLI and the daemon both come through here, so a run by hand and a scheduled run are
audited, locked and recorded the same way.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from agent import notify
from agent.audit import AuditBrokenError, AuditLog
from agent.credentials import check_credentials
from agent.errors import RunInterrupted, UnsafePathError, UsageError
from agent.files import secure_state_dir
from agent.graph.client import GraphClient
from agent.graph.connect import build_graph_client
from agent.job import JobContext, JobSpec
from agent.run import Run, RunReport, iso_z
from agent.settings import Settings
from jobs import REGISTRY

log = structlog.get_logger("agent.runner")


def get_job(job_id: str) -> JobSpec:
    try:
        return REGISTRY[job_id]
    except KeyError:
        raise UsageError(f"unknown job {job_id!r}; jobs: {', '.join(REGISTRY)}") from None


def agent_now(settings: Settings) -> datetime:
    """The agent's clock. `DAP_AGENT_NOW` may fix it, against the sandbox only (a test hook)."""
    fixed = os.environ.get("DAP_AGENT_NOW")
    if fixed and settings.uses_sandbox:
        try:
            moment = datetime.fromisoformat(fixed.replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(f"DAP_AGENT_NOW: not an ISO date-time: {fixed!r}") from None
        return moment if moment.tzinfo else moment.replace(tzinfo=settings.zone)
    return datetime.now(UTC)


def ensure_state_dir(settings: Settings) -> None:
    from agent.statedir import access_error, check_writable

    check_writable(settings.state_dir)
    try:
        secure_state_dir(settings.state_dir)  # never chmod'ed through a symlink
    except PermissionError as exc:
        raise access_error(settings.state_dir, f"cannot create or use it: {exc.strerror}") \
            from None
    except OSError as exc:
        raise UsageError(f"state_dir: cannot create or use {settings.state_dir}: "
                         f"{exc.strerror}") from None


def apply_retention(settings: Settings, run: Run, now: datetime) -> None:
    """After the job: prune what `[retention]` no longer keeps (audited as part of this run).
    A file that cannot be removed is a warning, not a failed run."""
    from agent.retention import prune

    try:
        pruned = prune(settings.state_dir, settings.retention, now,
                       lambda entry: run.audit.append(
                           {"run_id": run.run_id, "job": run.report.job, **entry}))
    except (OSError, UnsafePathError) as exc:
        run.warn(f"retention: could not prune old run reports/exports: {exc}")
        return
    if pruned:
        run.report.summary["retention_pruned"] = {"run_reports": len(pruned.run_reports),
                                                  "exports": len(pruned.exports)}


def audit_log(settings: Settings) -> AuditLog:
    return AuditLog(settings.state_dir / "audit.jsonl")


async def audit_broken(settings: Settings, exc: AuditBrokenError, job_id: str) -> None:
    """A run refused to start on a broken audit log: say so loudly. The one place to
    raise the `audit-broken` notification (once per break: the daemon retries)."""
    from agent.notify import notify_audit_broken

    log.error("audit log not intact: the run did not start and changed nothing",
              job=job_id, file=str(exc.result.file), line=exc.result.bad_line,
              problem=exc.result.problem)
    await notify_audit_broken(settings, exc.result.message(),
                              checkpoint=f"{exc.result.last_seq}:{exc.result.last_hash}")


async def run_job(
    settings: Settings,
    job_id: str,
    *,
    trigger: str = "cli",
    dry_run: bool = False,
    final: bool = False,
    now: datetime | None = None,
    graph: GraphClient | None = None,
    wait_for_lock: bool = False,
    scheduled_for: datetime | None = None,
    stop: Callable[[], bool] | None = None,
    progress: Callable[[str, int, int, bool], None] | None = None,
) -> RunReport:
    """Run a job and return its report. A job that raises has been audited as failed by
    the Run; the exception is re-raised with the report attached as `exc.report`."""
    from agent.jobstate import record_run
    from agent.lock import job_lock

    spec = get_job(job_id)
    policy = settings.policy(spec.policy_section)
    if not policy.enabled and trigger != "cli":
        raise UsageError(f"job {job_id} is disabled in the configuration")
    ensure_state_dir(settings)
    moment = now or agent_now(settings)
    mode = getattr(policy, "mode", None)
    effective_dry = dry_run or (spec.changes_tenant and mode != "enforce")
    context: dict[str, Any] = {"tenant_id": settings.tenant_id, "mode": mode,
                               "dry_run_requested": dry_run, "final": final}
    if scheduled_for is not None:
        context["scheduled_for"] = iso_z(scheduled_for)
    with job_lock(settings.state_dir, job_id, wait=wait_for_lock,
                  tenant_changes=spec.changes_tenant):
        run = Run(audit=audit_log(settings), runs_dir=settings.state_dir / "runs", job=job_id,
                  trigger=trigger, dry_run=effective_dry, now=moment, context=context,
                  stop=stop)
        own_client = graph is None
        client = graph or build_graph_client(settings, low_priority=trigger != "cli", now=moment,
                                             progress=progress)
        structlog.contextvars.bind_contextvars(run_id=run.run_id, job=job_id)
        try:
            with run:
                if own_client:  # a bad certificate fails the run audited, as exit 2
                    for warning in check_credentials(settings, moment):
                        run.warn(warning)
                ctx = JobContext(settings=settings, policy=policy, graph=client, run=run,
                                 state_dir=settings.state_dir, now=moment, tz=settings.zone,
                                 dry_run=effective_dry, final=final,
                                 scheduled_for=scheduled_for)
                log.info("run started", trigger=trigger, dry_run=effective_dry)
                try:
                    await spec.run(ctx)
                except asyncio.CancelledError:
                    run.interrupted = True  # a stop past the drain time: partial, not failed
                    raise
                finally:
                    run.report.summary.setdefault("graph_requests", client.stats.requests)
                    if client.stats.duplicates:
                        run.warn(f"Graph listed {client.stats.duplicates} object(s) twice "
                                 "across pages; each was read once")
                apply_retention(settings, run, moment)
            await notify.after_run(settings, run.report, graph=client, audit=run.audit)
        except BaseException as exc:
            exc.report = run.report  # type: ignore[attr-defined]
            record_run(settings.state_dir, run.report)
            if isinstance(exc, AuditBrokenError):
                await audit_broken(settings, exc, job_id)
            elif not isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)):
                # a failed run is notified too (never raises: a channel cannot fail the run)
                await notify.after_run(settings, run.report, graph=client, audit=run.audit)
            if isinstance(exc, RunInterrupted) or run.interrupted:
                log.warning("run interrupted", status=run.report.status, error=run.report.error)
            else:
                log.error("run failed", status=run.report.status, error=run.report.error)
            raise
        finally:
            structlog.contextvars.unbind_contextvars("run_id", "job")
            if own_client:
                await client.aclose()
    record_run(settings.state_dir, run.report)
    # after the lock: the context (run_id, job) is unbound by now, so name them here
    log.info("run finished", run_id=run.run_id, job=job_id, status=run.report.status,
             findings=len(run.report.findings), actions=len(run.report.actions))
    return run.report
