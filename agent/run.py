"""A run of a job: the run report it builds and the audit entries it writes as it goes.

`Run` is a context manager: entering checks the audit log's chain (a broken log stops the
run before anything happens) and writes `run-started`; leaving stores the report (with the
audit checkpoint it follows), writes `run-finished` (or `run-failed`) with the report's
SHA-256, and ends the sealing epoch. Every tenant change goes through `Run.change`, which
audits it as planned before it is made and as done/failed after, so a crash at any point
leaves a log that says exactly which changes were made.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import secrets
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import structlog

from agent.audit import AuditBrokenError, AuditLog
from agent.errors import DapError, GraphAuthError, GraphError, RunInterrupted
from agent.files import read_state_bytes, write_atomic_chunks
from agent.rules import Severity as Severity  # re-exported: jobs import it from here

ActionStatus = Literal["done", "planned", "skipped", "failed"]
RunStatus = Literal["ok", "partial", "failed"]

log = structlog.get_logger("agent.run")


def iso_z(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Subject:
    type: str  # user, device, group, servicePrincipal, policy, tenant, assignment, ...
    id: str
    name: str | None = None


@dataclass
class Finding:
    rule: str
    severity: Severity
    subject: Subject
    detail: str


@dataclass
class Action:
    action: str
    target: dict[str, str | None]
    status: ActionStatus
    reason: str
    request_id: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class RunReport:
    run_id: str
    job: str
    trigger: str
    dry_run: bool
    started_at: str
    finished_at: str | None = None
    status: RunStatus = "ok"
    summary: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    audit_checkpoint: str | None = None  # SEQ:HASH of the last entry before the report

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def json_pieces(self) -> Iterator[str]:
        """The report as JSON text in pieces: what `--json` prints and `runs/` stores.
        Encoded as it goes (no deep copy, no one big string: a 100k-device report is tens
        of MB)."""
        encoder = json.JSONEncoder(indent=2, default=_plain, ensure_ascii=False)
        return _batched(encoder.iterencode(self))

    @property
    def failed_actions(self) -> int:
        return sum(1 for a in self.actions if a.status == "failed")


class Change:
    """One tenant change inside `Run.change`: the job fills in the outcome."""

    def __init__(self, action: Action, execute: bool) -> None:
        self.action = action
        self.execute = execute  # False in a dry run: the job must not call Graph
        self.ok = False

    def done(self, *, request_id: str | None = None, after: dict[str, Any] | None = None,
             note: str | None = None) -> None:
        self.ok = True
        self.action.status = "done"
        self.action.request_id = request_id
        self.action.after = after
        if note:
            self.action.reason = f"{self.action.reason}; {note}"


def new_run_id(job: str, now: datetime) -> str:
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{job}-{secrets.token_hex(3)}"


class Run:
    def __init__(self, *, audit: AuditLog, runs_dir: Path, job: str, trigger: str,
                 dry_run: bool, now: datetime, context: dict[str, Any] | None = None,
                 stop: Callable[[], bool] | None = None) -> None:
        self.audit = audit
        self.runs_dir = runs_dir
        self.report = RunReport(run_id=new_run_id(job, now), job=job, trigger=trigger,
                                dry_run=dry_run, started_at=iso_z(now))
        self._context = context or {}
        self._stop = stop  # the daemon's "stopping" flag, checked before each change
        self.interrupted = False

    @property
    def run_id(self) -> str:
        return self.report.run_id

    @property
    def dry_run(self) -> bool:
        return self.report.dry_run

    # ---- what a job records ------------------------------------------------------------

    def finding(self, rule: str, severity: Severity, subject: Subject, detail: str) -> None:
        self.report.findings.append(Finding(rule, severity, subject, detail))

    def warn(self, message: str) -> None:
        self.report.warnings.append(message)
        log.warning(message, run_id=self.run_id)

    def event(self, name: str, **data: Any) -> None:
        """An audit entry of this run that is neither a change nor its outcome (offboarding:
        `purge-announced`, `intent-reconciled`)."""
        self._audit(name, **data)

    def check_stop(self, action: str, target: Subject) -> None:
        """Between changes: if the daemon is stopping, end the run here (partial)."""
        if self._stop is not None and self._stop():
            self.interrupted = True
            raise RunInterrupted(f"stopped before {action} on {target.name or target.id}: "
                                 "the service is shutting down")

    def skip(self, action: str, target: Subject, reason: str) -> Action:
        self.check_stop(action, target)
        record = Action(action=action, target=_target(target), status="skipped", reason=reason)
        self.report.actions.append(record)
        self._audit("action", **_action_entry(record))
        return record

    @contextmanager
    def change(self, action: str, target: Subject, reason: str,
               before: dict[str, Any] | None = None) -> Iterator[Change]:
        """Audit a change as planned, let the job make it, audit the outcome.

        In a dry run the change is only planned (`change.execute` is False). A GraphError
        inside marks this change failed and the batch goes on; an authentication or
        permission error ends the run (nothing else would work either).
        """
        self.check_stop(action, target)
        record = Action(action=action, target=_target(target), status="planned",
                        reason=reason, before=before)
        self.report.actions.append(record)
        handle = Change(record, execute=not self.dry_run)
        self._audit("action", **_action_entry(record), dry_run=self.dry_run)
        log.info("dry run: would " + action if self.dry_run else "changing: " + action,
                 run_id=self.run_id, target=record.target, reason=reason)
        if self.dry_run:
            yield handle
            return
        try:
            yield handle
        except GraphAuthError:
            self._fail(record, "authentication or permission error")
            raise
        except GraphError as exc:
            self._fail(record, str(exc), request_id=exc.request_id)
            return
        except BaseException as exc:
            self._fail(record, f"interrupted: {type(exc).__name__}")
            raise
        if record.status == "planned":  # the job decided not to make it after all
            record.status = "skipped"
        self._audit("action", **_action_entry(record))

    def _fail(self, record: Action, error: str, request_id: str | None = None) -> None:
        record.status = "failed"
        record.error = error
        record.request_id = request_id or record.request_id
        self._audit("action", **_action_entry(record))
        log.error("change failed", run_id=self.run_id, action=record.action,
                  target=record.target, error=error)

    # ---- lifecycle ---------------------------------------------------------------------

    def _audit(self, event: str, **data: Any) -> None:
        self.audit.append({"run_id": self.run_id, "job": self.report.job, "event": event,
                           **data})

    def __enter__(self) -> Run:
        try:
            self.audit.check()  # never append to a log that fails its chain check
        except AuditBrokenError as exc:
            self.report.status, self.report.error = "failed", str(exc)
            self.report.finished_at = iso_z(datetime.now(UTC))
            raise
        self._audit("run-started", trigger=self.report.trigger, dry_run=self.dry_run,
                    **self._context)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        report = self.report
        report.finished_at = iso_z(datetime.now(UTC))
        if exc is not None and not self.interrupted:
            report.status = "failed"
            report.error = str(exc) or type(exc).__name__
        elif self.interrupted or report.failed_actions:
            report.status = "partial"
            if self.interrupted:
                report.error = str(exc) if exc else "interrupted"
        report.audit_checkpoint = self.audit.checkpoint()
        stored: tuple[Path, str] | None = None
        store_error: Exception | None = None
        try:
            stored = self._store()
        except (OSError, DapError) as error:  # a full disk: the log still gets the outcome
            store_error = error
            report.status = "failed"
            problem = f"the run report was not stored: {error}"
            report.error = f"{report.error}; {problem}" if exc is not None else problem
        entry: dict[str, Any] = {
            "status": report.status,
            "summary": report.summary,
            "findings_by_rule": dict(Counter(f.rule for f in report.findings)),
            "actions_by_status": dict(Counter(a.status for a in report.actions)),
            "report_path": str(stored[0]) if stored else None,
            "report_sha256": stored[1] if stored else None,
        }
        if report.status == "failed":
            self._audit("run-failed", error=report.error, **entry)
        else:
            self._audit("run-finished", **entry)
        self.audit.end_epoch()  # the run's entries are sealed for good: forward security
        if store_error is not None and exc is None:
            raise store_error

    def _store(self) -> tuple[Path, str]:
        """`runs/<id>.json.gz`; the SHA-256 is of the JSON itself (what `--json` prints), so
        the audit log's checksum does not depend on how the file is compressed."""
        path = self.runs_dir / f"{self.run_id}.json.gz"
        digest = hashlib.sha256()

        def compressed() -> Iterator[bytes]:
            # zlib's gzip container writes no name and mtime 0: same report, same bytes.
            # Level 6: a 100k-device report (37 MB of JSON) shrinks ~20x in about a second.
            packer = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            for piece in self.report.json_pieces():
                raw = piece.encode("utf-8")
                digest.update(raw)
                yield packer.compress(raw)
            yield packer.flush()

        write_atomic_chunks(path, compressed())
        return path, digest.hexdigest()


REPORT_SUFFIXES = (".json.gz", ".json")  # stored compressed; older runs plain


def find_report(path_or_id: Path | str, runs_dir: Path | None = None) -> Path:
    """The stored report of a run: a path to `<id>.json(.gz)`, or a run id looked up in
    `runs_dir`. FileNotFoundError when there is none."""
    path = Path(path_or_id)
    if path.name.endswith(REPORT_SUFFIXES):
        if path.exists():
            return path
        raise FileNotFoundError(f"no run report {path}")
    base = runs_dir if runs_dir is not None else path.parent
    for suffix in REPORT_SUFFIXES:
        candidate = base / f"{path.name}{suffix}"
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"no run report for {path.name} in {base}")


def read_report_bytes(path_or_id: Path | str, runs_dir: Path | None = None) -> bytes:
    """The report's JSON bytes as `report_sha256` hashes them (uncompressed)."""
    path = find_report(path_or_id, runs_dir)
    data = read_state_bytes(path)
    if not path.name.endswith(".gz"):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"run report {path} is damaged: {exc}") from None


def load_report(path_or_id: Path | str, runs_dir: Path | None = None) -> dict[str, Any]:
    """The one reader of stored run reports, `.json` and `.json.gz` alike."""
    loaded: dict[str, Any] = json.loads(read_report_bytes(path_or_id, runs_dir))
    return loaded


def _target(subject: Subject) -> dict[str, str | None]:
    return {"type": subject.type, "id": subject.id, "name": subject.name}


def _action_entry(record: Action) -> dict[str, Any]:
    return {k: v for k, v in asdict(record).items() if v is not None}


def _plain(value: object) -> Any:
    """JSON for the report's dataclasses without copying them first (asdict would)."""
    if hasattr(value, "__dataclass_fields__"):
        return {name: getattr(value, name) for name in value.__dataclass_fields__}
    return str(value)


def _batched(pieces: Iterator[str], size: int = 1 << 16) -> Iterator[str]:
    buffer: list[str] = []
    length = 0
    for piece in pieces:
        buffer.append(piece)
        length += len(piece)
        if length >= size:
            yield "".join(buffer)
            buffer, length = [], 0
    yield "".join(buffer) + "\n"
