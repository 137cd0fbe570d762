"""The monthly service report (DAP 4.2): one document for the tactical meeting.

A reader of stored state, not a job: `state.collect` reads what the jobs stored,
`render.render_html` makes the HTML (Jinja2 + Babel catalogs + matplotlib SVG charts),
`pdf.html_to_pdf` the PDF from that same HTML. `write_report` stores the file and audits
its SHA-256 (`report-written`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from agent.audit import AuditLog
from agent.errors import UsageError
from agent.files import write_atomic, write_output

Format = Literal["html", "pdf"]


@dataclass(frozen=True)
class WrittenReport:
    path: Path
    sha256: str
    month: str
    checkpoint: str | None  # the audit checkpoint the report shows


def report_name(month: str, fmt: Format) -> str:
    return f"service-report-{month}.{fmt}"


def render_report(state_dir: Path, month: str, *, tz: ZoneInfo, language: str,
           fmt: Format = "html") -> tuple[bytes, str | None]:
    """The report's bytes and the checkpoint in it; UsageError (exit 2) without data."""
    from agent.report.pdf import require_weasyprint
    from agent.report.render import render_html
    from agent.report.state import collect

    if fmt == "pdf":
        require_weasyprint()  # before any work: exit 2 naming the extra
    state = collect(state_dir, month, tz)
    html = render_html(state, language)
    if fmt == "pdf":
        from agent.report.pdf import html_to_pdf

        return html_to_pdf(html), state.audit.get("checkpoint")
    return html, state.audit.get("checkpoint")


def write_report(state_dir: Path, month: str, *, tz: ZoneInfo, language: str,
                 fmt: Format = "html", output: Path | None = None,
                 trigger: str = "cli") -> WrittenReport:
    """Render, store (`<state>/reports/` or `output`) and audit the month's report."""
    canonical = state_dir / "reports" / report_name(month, fmt)
    target = output if output is not None else canonical
    _refuse_state_files(state_dir, target, canonical)
    data, checkpoint = render_report(state_dir, month, tz=tz, language=language, fmt=fmt)
    if output is None:
        write_atomic(target, data)
    else:
        write_output(target, data)  # never over a device, fifo or symlink
    digest = hashlib.sha256(data).hexdigest()
    log = AuditLog(state_dir / "audit.jsonl")
    log.check()  # a broken log gets no entry (AuditBrokenError, exit 1); the report says so
    log.append({
        "event": "report-written", "report": "service-report", "month": month,
        "format": fmt, "language": language, "path": str(target), "sha256": digest,
        "reported_checkpoint": checkpoint, "trigger": trigger})
    return WrittenReport(target, digest, month, checkpoint)


def _refuse_state_files(state_dir: Path, target: Path, canonical: Path) -> None:
    """Inside the state directory only the report's own file may be written."""
    state = state_dir.resolve()
    resolved = target.resolve()
    if resolved != canonical.resolve() and (resolved == state or state in resolved.parents):
        raise UsageError(f"--output {target}: inside the state directory {state_dir} only "
                         f"{canonical.name} may be written; choose a path outside it")
    if target.is_dir():
        raise UsageError(f"--output {target}: is a directory; name the file to write")
