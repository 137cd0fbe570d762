"""Notifications: one message per run and event, to `[notify]`'s mail and/or webhook.

    await notify(ctx_or_settings, "month-delivered", run_report=report)
    await after_run(settings, report, graph=client, audit=log)   # the runner, every run

Every send is audited (`notify-sent` / `notify-failed`, with the message's checkpoint and
checksum). A channel that fails is logged and audited and never fails the job; the
webhook URL never appears in a log, an error or the audit log.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from agent.errors import DapError
from agent.files import make_private_dirs, read_state_bytes, write_atomic
from agent.logs import redact_text
from agent.notify import messages
from agent.notify.channels import ChannelError, by_mail, by_webhook
from agent.notify.messages import Message
from agent.notify.settings import EVENTS, NotifySettings
from agent.run import RunReport, iso_z, load_report

if TYPE_CHECKING:
    from agent.audit import AuditLog
    from agent.graph.client import GraphClient
    from agent.job import JobContext
    from agent.settings import Settings

__all__ = ["EVENTS", "Message", "NotifySettings", "Outcome", "after_run", "notify",
           "notify_audit_broken", "previous_report"]

log = structlog.get_logger("agent.notify")
PREVIOUS_TRIES = 5  # stored reports looked at to find the previous completed run


@dataclass(frozen=True)
class Outcome:
    event: str
    channel: str
    ok: bool
    detail: str  # request id / HTTP status, or the (safe) error


def previous_report(runs_dir: Path, job: str, run_id: str) -> dict[str, Any] | None:
    """The job's last stored run before `run_id` that did not fail (a failed run's
    findings are partial: comparing with it would announce every open finding again)."""
    stamp = run_id.split("-", 1)[0]
    found: dict[str, float] = {}
    for path in runs_dir.glob(f"*-{job}-*.json*"):
        rid = path.name.split(".json", 1)[0]
        if rid != run_id and rid.split("-", 1)[0] <= stamp:
            try:
                found[rid] = path.stat().st_mtime_ns
            except OSError:
                continue
    # ids start with the UTC second; runs within one second are ordered by when written
    ordered = sorted(found, key=lambda r: (r.split("-", 1)[0], found[r]), reverse=True)
    for rid in ordered[:PREVIOUS_TRIES]:
        try:
            report = load_report(rid, runs_dir)
        except (OSError, ValueError):
            continue
        if report.get("job") == job and report.get("status") != "failed":
            return report
    return None


def run_messages(settings: Settings, report: RunReport,
                 previous: Mapping[str, Any] | None) -> list[Message]:
    cfg: NotifySettings = settings.notify
    tenant = settings.tenant_id
    found = [
        messages.run_failed(report, tenant) if cfg.wants("run-failed") else None,
        messages.new_findings(report, previous, tenant, cfg.min_severity)
        if cfg.wants("new-finding") else None,
        messages.purge_announced(report, previous, tenant)
        if cfg.wants("purge-announced") else None,
        messages.month_delivered(report, tenant) if cfg.wants("month-delivered") else None,
    ]
    return [m for m in found if m is not None]


async def after_run(settings: Settings, report: RunReport, *, graph: GraphClient | None,
                    audit: AuditLog) -> list[Outcome]:
    """The runner's hook after every run: failed/partial, new findings, purges entering
    the veto window, the delivered month. Never raises."""
    cfg: NotifySettings = settings.notify
    if not cfg.channels:
        return []
    try:
        needs_previous = cfg.wants("new-finding") or cfg.wants("purge-announced")
        previous = (previous_report(settings.state_dir / "runs", report.job, report.run_id)
                    if needs_previous else None)
        pending = run_messages(settings, report, previous)
    except Exception as exc:  # a notification must never fail a run
        log.error("notifications not built", error=redact_text(f"{type(exc).__name__}: {exc}"))
        return []
    outcomes: list[Outcome] = []
    for message in pending:
        outcomes += await deliver(settings, message, graph=graph, audit=audit)
    try:
        moment = datetime.fromisoformat(report.started_at.replace("Z", "+00:00"))
        outcomes += await check_certificate(settings, moment, graph=graph, audit=audit)
    except Exception as exc:  # a notification must never fail a run
        log.error("certificate expiry not checked",
                  error=redact_text(f"{type(exc).__name__}: {exc}"))
    return outcomes


async def check_certificate(settings: Settings, now: datetime, *, graph: GraphClient | None,
                            audit: AuditLog | None) -> list[Outcome]:
    """`certificate-expiring`: the client certificate expires within 30 days. Sent once a
    day (`<state>/notify/certificate-expiring.json`), whichever run sees it first."""
    from agent.credentials import EXPIRY_WARNING, certificate_info

    cfg: NotifySettings = settings.notify
    path = settings.client_certificate_path
    if path is None or not cfg.wants("certificate-expiring"):
        return []
    try:
        info = certificate_info(path)
    except DapError:
        return []  # the run itself reports a bad certificate (exit 2)
    left = info.not_after - now
    if left > EXPIRY_WARNING:
        return []
    today = now.astimezone(UTC).date().isoformat()
    marker = settings.state_dir / "notify" / "certificate-expiring.json"
    if _read_json(marker) == {"thumbprint": info.thumbprint, "day": today}:
        return []
    message = messages.certificate_expiring(info.not_after.date(), max(0, left.days),
                                            info.subject, info.thumbprint, settings.tenant_id)
    outcomes = await deliver(settings, message, graph=graph, audit=audit)
    if any(o.ok for o in outcomes):
        _write_json(marker, {"thumbprint": info.thumbprint, "day": today})
    return outcomes


async def notify(target: JobContext | Settings, event: str, *,
                 run_report: RunReport | None = None,
                 details: Mapping[str, Any] | None = None) -> list[Outcome]:
    """Notify one event outside the runner's hook (the contract's call sites). `details`:
    audit-broken {problem, log_path, checkpoint}; certificate-expiring {now} (checks the
    configured certificate); run-derived events take `run_report`. Never raises."""
    settings, graph, audit = _resolve(target)
    cfg: NotifySettings = settings.notify
    if event not in EVENTS:
        raise ValueError(f"unknown notification event {event!r}")
    if not cfg.wants(event):
        return []
    info = dict(details or {})
    message: Message | None
    if event == "audit-broken":
        message = messages.audit_broken(str(info.get("problem", "")),
                                        str(info.get("log_path", "")), settings.tenant_id)
        audit = None  # never append to a log that fails its check
    elif event == "certificate-expiring":
        return await check_certificate(settings, info.get("now") or datetime.now(UTC),
                                       graph=graph, audit=audit)
    elif run_report is None:
        raise ValueError(f"{event}: needs run_report")
    else:
        previous = previous_report(settings.state_dir / "runs", run_report.job,
                                   run_report.run_id)
        message = next((m for m in run_messages(settings, run_report, previous)
                        if m.event == event), None)
    if message is None:
        return []
    return await deliver(settings, message, graph=graph, audit=audit,
                         checkpoint=info.get("checkpoint"))


def _resolve(target: Any) -> tuple[Settings, GraphClient | None, AuditLog | None]:
    if hasattr(target, "run") and hasattr(target, "settings"):  # a JobContext
        return target.settings, target.graph, target.run.audit
    from agent.runner import audit_log

    return target, None, audit_log(target)


async def deliver(settings: Settings, message: Message, *, graph: GraphClient | None,
                  audit: AuditLog | None, checkpoint: str | None = None) -> list[Outcome]:
    """Send one message on every channel; audit each send. Never raises."""
    cfg: NotifySettings = settings.notify
    if checkpoint is None and audit is not None:
        try:
            checkpoint = audit.checkpoint()
        except (OSError, DapError):
            checkpoint = None
    message = message.with_checkpoint(checkpoint or "unknown")
    digest = hashlib.sha256(message.text().encode()).hexdigest()
    outcomes = []
    for channel in cfg.channels:
        try:
            detail = await _send(settings, channel, message, graph)
            outcome = Outcome(message.event, channel, True, detail)
        except (ChannelError, DapError) as exc:
            outcome = Outcome(message.event, channel, False, redact_text(str(exc)))
        except Exception as exc:  # whatever it is, the job goes on
            outcome = Outcome(message.event, channel, False,
                              f"{type(exc).__name__}: {redact_text(str(exc))[:200]}")
        _record(audit, message, outcome, digest)
        outcomes.append(outcome)
    return outcomes


async def _send(settings: Settings, channel: str, message: Message,
                graph: GraphClient | None) -> str:
    cfg: NotifySettings = settings.notify
    if channel == "webhook":
        assert cfg.webhook_url is not None
        return await by_webhook(cfg.webhook_url.get_secret_value(), cfg.webhook_format,
                                message)
    if graph is not None:
        return await by_mail(graph, cfg.sender, cfg.mail_to, message)
    from agent.graph.connect import build_graph_client

    async with build_graph_client(settings, low_priority=True) as own:
        return await by_mail(own, cfg.sender, cfg.mail_to, message)


def _record(audit: AuditLog | None, message: Message, outcome: Outcome, digest: str) -> None:
    entry: dict[str, Any] = {
        "event": "notify-sent" if outcome.ok else "notify-failed",
        "notify_event": message.event, "channel": outcome.channel,
        "title": message.title, "message_sha256": digest,
        "checkpoint": message.checkpoint,
        ("result" if outcome.ok else "error"): outcome.detail,
    }
    if message.run_id:
        entry.update(run_id=message.run_id, job=message.job)
    if outcome.ok:
        log.info("notification sent", notify_event=message.event, channel=outcome.channel)
    else:
        log.warning("notification failed", notify_event=message.event,
                    channel=outcome.channel, error=outcome.detail)
    if audit is None:
        return
    try:
        audit.append(entry)
    except Exception as exc:  # the disk may be full: say so, the job goes on
        log.error("notification not audited", error=redact_text(f"{type(exc).__name__}: {exc}"))


async def notify_audit_broken(settings: Settings, problem: str, *, checkpoint: str) -> None:
    """`audit-broken`, once per break: the daemon retries a refused run every few minutes,
    the same break is not sent again (`<state>/notify/audit-broken.json`)."""
    cfg: NotifySettings = settings.notify
    if not cfg.wants("audit-broken"):
        return
    marker = settings.state_dir / "notify" / "audit-broken.json"
    if _read_json(marker).get("problem") == problem:
        return
    outcomes = await notify(settings, "audit-broken",
                            details={"problem": problem, "checkpoint": checkpoint,
                                     "log_path": str(settings.state_dir / "audit.jsonl")})
    if any(o.ok for o in outcomes):
        _write_json(marker, {"problem": problem, "sent_at": iso_z(datetime.now(UTC))})


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_state_bytes(path))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    try:
        make_private_dirs(path.parent)
        write_atomic(path, json.dumps(data, sort_keys=True).encode())
    except OSError as exc:
        log.warning("notification state not written", file=str(path), error=exc.strerror)
