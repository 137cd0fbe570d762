"""Many role holders: MFA registration comes from one pass over the report, not a GET each."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from agent.graph import roles
from agent.sandbox.generate import generate_tenant
from tests.conftest import make_settings, run_on


async def test_many_holders_read_the_registration_report_once(tmp_path: Path) -> None:
    tenant = generate_tenant(users=400, role_assignments=300)
    report = await run_on(tenant, make_settings(tmp_path), "privileged-roles", now=tenant.now)
    assert report.status == "ok", report.error
    paths = Counter(r.path for r in tenant.requests)
    per_user = sum(n for p, n in paths.items() if p.startswith(roles.REGISTRATION_PATH + "/"))
    assert per_user == 0
    assert 1 <= paths[roles.REGISTRATION_PATH] <= 5  # paged, not one per holder
    assert report.summary["holders"] > roles.PER_USER_MFA_LIMIT
