"""Job `service-report`: the monthly service report, written and mailed on schedule (DAP 4.2).

The report itself is `agent.report` (a reader of stored state; `dap-agent report` makes it
by hand). This job is its schedule and its delivery: by default on the last working day at
08:00, an hour after active-users delivered the month, it writes
`<state>/reports/service-report-YYYY-MM.<format>` for the month it serves (a catch-up run
after a month end serves the month that ended) and, with `deliver_to`, mails it from
`sender` through Graph sendMail (Mail.Send), recorded as action `send-mail` (audited,
planned only in a dry run). The report's SHA-256 is in the audit log (`report-written`).
"""

from __future__ import annotations

from typing import Any, Literal, cast

from pydantic import model_validator

from agent.files import read_state_bytes
from agent.job import JobContext, JobPolicy, JobSpec, MailAddresses
from agent.run import Subject

CONTENT_TYPES = {"html": "text/html", "pdf": "application/pdf"}


class Policy(JobPolicy):
    # right after active-users delivers the month (its default: last-working-day 07:00)
    schedule: str = "last-working-day 08:00"
    deliver_to: MailAddresses = []  # mailed through Graph sendMail from `sender`
    sender: str = ""
    language: Literal["nl", "en"] = "nl"
    format: Literal["html", "pdf"] = "html"  # what the scheduled run writes and mails

    @model_validator(mode="after")
    def _sender(self) -> Policy:
        if self.deliver_to and not self.sender.strip():
            raise ValueError("deliver_to is set but sender is empty: set sender to the UPN of "
                             "the mailbox the report is sent from")
        return self

    def extra_permissions(self) -> tuple[str, ...]:
        return ("Mail.Send",) if self.deliver_to else ()


async def run(ctx: JobContext) -> None:
    from agent.report import report_name, write_report
    from agent.report.state import month_key

    policy = cast(Policy, ctx.policy)
    served = ctx.scheduled_for or ctx.now
    month = month_key(served.astimezone(ctx.tz).date())
    written = write_report(ctx.state_dir, month, tz=ctx.tz, language=policy.language,
                           fmt=policy.format, trigger=ctx.run.report.trigger)
    summary: dict[str, Any] = {"month": month, "report_path": str(written.path),
                               "report_sha256": written.sha256,
                               "reported_checkpoint": written.checkpoint,
                               "mailed_to": []}
    ctx.run.report.summary.update(summary)
    if not policy.deliver_to:
        return
    await _deliver(ctx, policy, month, read_state_bytes(written.path),
                   report_name(month, policy.format))


async def _deliver(ctx: JobContext, policy: Policy, month: str, data: bytes, name: str) -> None:
    from agent.graph.mail import Attachment, send_mail
    from agent.report.i18n import Formats, translations

    _ = translations(policy.language).gettext
    subject = _("Service report %(month)s") % {"month": Formats(policy.language).month(month)}
    text = _("The service report of %(month)s is attached (%(file)s).") % {
        "month": Formats(policy.language).month(month), "file": name}
    target = Subject("mailbox", policy.sender, policy.sender)
    with ctx.run.change("send-mail", target,
                        f"service report {month} to {', '.join(policy.deliver_to)}") as change:
        if change.execute:
            sent = await send_mail(ctx.graph, sender=policy.sender, to=policy.deliver_to,
                                   subject=subject, text=text,
                                   attachments=[Attachment(name, CONTENT_TYPES[policy.format],
                                                           data)])
            change.done(request_id=sent.request_id)
            ctx.run.report.summary["mailed_to"] = list(policy.deliver_to)


JOB = JobSpec(
    id="service-report",
    title="Monthly service report, written and mailed",
    policy_section="service_report",
    policy_model=Policy,
    permissions=(),
    changes_tenant=False,
    run=run,
)
