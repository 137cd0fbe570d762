"""A year of stored state for the demo tenant: what the agent would have kept by now.

The service report draws 12-month trends from stored snapshots, run reports and Secure
Score records. A fresh demo has only today's, so `seed_history` runs the jobs those trends
come from (active-users delivering each month, device-compliance, secure-score) on the last
working day of each earlier month, each against the demo tenant as it was then: staff who
joined later are not there yet, a temporary worker has not left yet, a few devices were
still non-compliant or unencrypted, and Secure Score was lower. Only the sandbox is touched.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import httpx

from agent.graph.client import GraphClient
from agent.graph.connect import SANDBOX_GRAPH_URL, _with_sdk_middleware
from agent.report.state import month_key, shift_month
from agent.run import RunReport
from agent.sandbox import SandboxTokenSource
from agent.sandbox import builders as b
from agent.sandbox.seed import base, demo_tenant
from agent.sandbox.tenant import SandboxTenant
from agent.sandbox.transport import SandboxTransport
from agent.settings import Settings
from agent.workdays import WorkdayCalendar

JOBS = ("active-users", "device-compliance", "secure-score")
TEMPORARY = f"stagiair.tijdelijk@{b.DOMAIN}"  # worked here until last month
LATE_JOINERS = 4  # the last staff members joined within the year, one every few months
SCORE_GAIN_PER_DAY = 0.06  # Secure Score points the tenant gained per day over the year


def tenant_as_of(moment: datetime, months_back: int, today: date) -> SandboxTenant:
    """The demo tenant `months_back` months before `today`, seeded at `moment`."""
    tenant = demo_tenant(moment)
    joined_later = [u for u, _, _ in base.STAFF if base.SPE_E5 in _][-LATE_JOINERS:]
    for local in joined_later[:min(months_back, LATE_JOINERS)]:
        tenant.remove("users", base.staff_id(local))
    if 1 <= months_back <= 3:
        tenant.add("users", b.user(TEMPORARY, "Stagiair Tijdelijk", licenses=(base.SPE_E5,),
                                   created=moment - timedelta(days=60 + 30 * months_back)))
    compliant = sorted((d for d in tenant.all("managedDevices")
                        if d.get("complianceState") == "compliant"), key=lambda d: d["id"])
    for device in compliant[:months_back // 2]:
        device["complianceState"] = "noncompliant"
    for device in compliant[:months_back // 4]:
        device["isEncrypted"] = False
    for score in tenant.all("secureScores"):
        lag = (today - date.fromisoformat(score["createdDateTime"][:10])).days
        loss = round(min(lag * SCORE_GAIN_PER_DAY, 20.0), 2)
        score["currentScore"] = round(score["currentScore"] - loss, 2)
        for control in score["controlScores"]:
            if control["controlName"] == "scid_2010":  # the control that improved slowly
                control["score"] = round(control["score"] - loss, 2)
    tenant.touch()
    return tenant


def month_end_moments(now: datetime, months: int, calendar: WorkdayCalendar) -> list[datetime]:
    """07:30 local on the last working day of each of the `months` months before `now`'s."""
    first = now.date().replace(day=1)
    moments = []
    for back in range(months, 0, -1):
        month = shift_month(first, -back)
        day = calendar.last_working_day(month.year, month.month)
        moments.append(datetime.combine(day, time(7, 30), now.tzinfo))
    return moments


async def seed_history(settings: Settings, now: datetime, months: int = 11) -> list[RunReport]:
    """Run JOBS at each earlier month end; returns their reports (oldest first)."""
    calendar = settings.policy("active_users").calendar
    reports: list[RunReport] = []
    from agent.runner import run_job

    moments = month_end_moments(now.astimezone(settings.zone), months, calendar)
    for back, moment in zip(range(months, 0, -1), moments, strict=True):
        tenant = tenant_as_of(moment, back, now.date())
        http = _with_sdk_middleware(httpx.AsyncClient(transport=SandboxTransport(tenant)))
        async with GraphClient(http, SandboxTokenSource(), graph_url=SANDBOX_GRAPH_URL) as graph:
            for job in JOBS:
                reports.append(await run_job(settings, job, trigger="demo", now=moment,
                                             graph=graph, final=job == "active-users"))
    return reports


def history_months(now: datetime, months: int = 11) -> list[str]:
    first = now.date().replace(day=1)
    return [month_key(shift_month(first, -back)) for back in range(months, 0, -1)]
