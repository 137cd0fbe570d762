"""privileged-roles end to end: the real runner and GraphClient against the sandbox tenant."""

from __future__ import annotations

import csv
import hashlib
import io
import math
import stat
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.errors import GraphPermissionError
from agent.graph import roles as graph_roles
from agent.run import Finding
from agent.runner import run_job
from agent.sandbox import builders as b
from agent.sandbox.seed import demo_tenant
from agent.sandbox.seed import roles as seed
from agent.sandbox.tenant import SandboxTenant
from agent.settings import Settings
from jobs.privileged_roles import EXPORT_COLUMNS, RULE_GA_COUNT, RULE_READER
from tests.conftest import make_settings, run_on, sandbox_client

NOW = datetime(2026, 3, 18, 9, 0, tzinfo=UTC)
JOB = "privileged-roles"
HOLDER_RULES = {"PIM-GUEST-ADMIN", "PIM-ADMIN-NO-MFA"}


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    table = {**seed.demo_policy(NOW)["privileged_roles"], **overrides}
    return make_settings(tmp_path, privileged_roles=table)


def role_of(finding: Finding) -> str | None:
    """The role a finding is about, as EXPECTED names it (None for per-holder rules)."""
    if finding.rule in HOLDER_RULES:
        return None
    if finding.rule == RULE_GA_COUNT:
        return str(finding.subject.name)
    if finding.rule == RULE_READER:
        return "Global Reader"
    return finding.detail.split(" (", 1)[0]  # per assignment: "<role> (<kind>...): ..."


def fired(findings: list[Finding]) -> dict[str, set[tuple[str, str | None]]]:
    result: dict[str, set[tuple[str, str | None]]] = {}
    for f in findings:
        result.setdefault(f.rule, set()).add((str(f.subject.name), role_of(f)))
    return result


def file_facts(path: Path) -> tuple[int, str]:
    """(permission bits, sha256) of a file."""
    return stat.S_IMODE(path.stat().st_mode), hashlib.sha256(path.read_bytes()).hexdigest()


def export(report_summary: dict[str, Any]) -> list[dict[str, str]]:
    path = Path(report_summary["export_path"])
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


async def test_demo_tenant_each_rule_fires_exactly_where_built(tmp_path: Path) -> None:
    report = await run_on(demo_tenant(NOW), settings_for(tmp_path), JOB, now=NOW)
    assert report.status == "ok", report.error
    assert fired(report.findings) == seed.EXPECTED
    assert report.actions == [] and report.warnings == []
    severities = {f.rule: f.severity for f in report.findings}
    assert severities == {
        "PIM-GA-COUNT": "high", "PIM-PERMANENT-ACTIVE": "high", "PIM-NO-END-DATE": "medium",
        "PIM-UNAPPROVED": "high", "PIM-REGISTER-EXPIRED": "high", "PIM-GUEST-ADMIN": "medium",
        "PIM-ADMIN-NO-MFA": "high", "PIM-READER-MISSING": "low"}
    ga = next(f for f in report.findings if f.rule == RULE_GA_COUNT)
    for holder in seed.GLOBAL_ADMINS:
        assert holder in ga.detail
    summary = report.summary
    assert summary["global_admin_holders"] == 3 and summary["global_admin_expected"] == 2
    assert summary["outside_pim"] == 2 and summary["activated"] == 1
    assert summary["register_unmatched"] == []


async def test_clean_cases_stay_clean(tmp_path: Path) -> None:
    report = await run_on(demo_tenant(NOW), settings_for(tmp_path), JOB, now=NOW)
    dirty = {f.subject.name for f in report.findings if f.rule != RULE_GA_COUNT}
    assert not dirty & seed.CLEAN
    rows = export(report.summary)
    for row in rows:
        if row["holder_name"] in seed.CLEAN:
            assert row["findings"] in ("", RULE_GA_COUNT), row


async def test_export_lists_every_holder(tmp_path: Path) -> None:
    report = await run_on(demo_tenant(NOW), settings_for(tmp_path), JOB, now=NOW)
    path = Path(report.summary["export_path"])
    assert path.name == "privileged-access-2026-03-18.csv"
    assert path.parent == tmp_path / "state" / "exports"
    assert file_facts(path) == (0o600, report.summary["export_sha256"])
    rows = export(report.summary)
    assert tuple(rows[0]) == EXPORT_COLUMNS
    assert len(rows) == len(seed.HOLDINGS) == report.summary["export_rows"]
    assert {(r["holder_name"], r["role"], r["kind"], r["path"]) for r in rows} == seed.HOLDINGS
    by_holder = {(r["holder_name"], r["role"], r["kind"]): r for r in rows}
    member = by_holder[(seed.GROUP_GA_MEMBER, "Global Administrator", "eligible")]
    assert member["group_name"] == seed.GA_GROUP and member["register_reference"] == "RFC-1011"
    assert member["mfa_registered"] == "true"
    activation = by_holder[(seed.PROVIDER_ADMIN, "Exchange Administrator", "active")]
    assert activation["assignment_type"] == "activated"
    assert activation["register_reference"] == "RFC-1010"
    legacy = by_holder[(seed.LEGACY, "Exchange Administrator", "active")]
    assert legacy["assignment_type"] == "outside-pim" and legacy["end"] == ""
    assert legacy["findings"] == "PIM-NO-END-DATE;PIM-PERMANENT-ACTIVE;PIM-UNAPPROVED"
    # no stored row: the report shows the user with nothing registered
    assert by_holder[(seed.NO_MFA_RECORD, "Billing Administrator", "eligible")][
        "mfa_registered"] == "false"
    app = by_holder[(seed.PROVISIONING_APP, "User Administrator", "active")]
    assert app["holder_type"] == "servicePrincipal" and app["mfa_registered"] == ""


async def test_few_requests_groups_expanded_once_no_per_principal_reads(tmp_path: Path) -> None:
    tenant = demo_tenant(NOW)
    # a second assignment of the GA group: its members are still read once
    tenant.add("roleEligibilityScheduleInstances",
               b.role_eligibility_instance(seed.GA_GROUP_ID, "Global Reader",
                                           end=NOW + timedelta(days=30)))
    await run_on(tenant, settings_for(tmp_path), JOB, now=NOW)
    paths = Counter(r.path for r in tenant.requests)
    base = graph_roles.BASE
    user_holders = {u for u, _, _, _ in seed.HOLDINGS
                    if u not in (seed.GA_GROUP, seed.READER_GROUP_NAME, seed.PROVISIONING_APP)}
    mfa = {p: n for p, n in paths.items() if "userRegistrationDetails" in p}
    # one filtered request per 15 holders, none per holder
    assert mfa == {graph_roles.REGISTRATION_PATH: math.ceil(len(user_holders) / 15)}
    filters = [r.query["$filter"] for r in tenant.requests
               if r.path == graph_roles.REGISTRATION_PATH]
    assert sum(f.count("userPrincipalName eq ") for f in filters) == len(user_holders)
    assert {p: n for p, n in paths.items() if "userRegistrationDetails" not in p} == {
        f"{base}/roleDefinitions": 1,
        f"{base}/roleAssignmentScheduleInstances": 1,
        f"{base}/roleEligibilityScheduleInstances": 1,
        f"{base}/roleAssignments": 1,
        f"/groups/{seed.GA_GROUP_ID}/transitiveMembers": 1,
        f"/groups/{seed.READER_GROUP_ID}/transitiveMembers": 1,
        f"/users/{seed.READER_MISSING}": 1,  # the functional admin who holds nothing
    }
    instances = next(r for r in tenant.requests
                     if r.path == f"{base}/roleEligibilityScheduleInstances")
    assert instances.query == {"$expand": "principal"}


async def test_narrowed_to_microsoft_privileged_roles(tmp_path: Path) -> None:
    report = await run_on(demo_tenant(NOW),
                          settings_for(tmp_path, roles_in_scope="microsoft-privileged"),
                          JOB, now=NOW)
    expected = {rule: {(name, role) for name, role in pairs
                       if role not in seed.NOT_PRIVILEGED_ROLES}
                for rule, pairs in seed.EXPECTED.items()}
    expected["PIM-ADMIN-NO-MFA"].discard((seed.NO_MFA_RECORD, None))  # Billing only
    assert fired(report.findings) == {k: v for k, v in expected.items() if v}
    rows = export(report.summary)
    assert len(rows) == len(seed.HOLDINGS)  # the export still lists every holding
    assert {r["in_scope"] for r in rows if r["role"] in seed.NOT_PRIVILEGED_ROLES} == {"false"}


async def test_paging_and_deleted_principal(tmp_path: Path) -> None:
    tenant = demo_tenant(NOW)
    for n in range(250):  # past the sandbox's page size of 100
        upn = f"tmp-admin{n:03d}@{b.DOMAIN}"
        person = tenant.add("users", b.user(upn))
        tenant.add("userRegistrationDetails", b.registration_details(person))
        tenant.add("roleEligibilityScheduleInstances",
                   b.role_eligibility_instance(person["id"], "Helpdesk Administrator",
                                               end=NOW + timedelta(days=30)))
    ghost = b.oid("user:deleted-long-ago")
    tenant.add("roleEligibilityScheduleInstances",
               b.role_eligibility_instance(ghost, "Security Reader",
                                           end=NOW + timedelta(days=30)))
    report = await run_on(tenant, settings_for(tmp_path), JOB, now=NOW)
    assert report.status == "ok"
    unapproved = {f.subject.name for f in report.findings if f.rule == "PIM-UNAPPROVED"}
    assert {f"tmp-admin{n:03d}@{b.DOMAIN}" for n in range(250)} <= unapproved
    assert ghost in unapproved  # audited under its id
    unresolved = [f for f in report.findings if f.rule == "PIM-UNRESOLVED-PRINCIPAL"]
    assert [(f.subject.id, f.severity) for f in unresolved] == [(ghost, "medium")]
    assert len(export(report.summary)) == len(seed.HOLDINGS) + 251


async def test_missing_role_permission_is_named(tmp_path: Path) -> None:
    tenant = demo_tenant(NOW)
    settings = settings_for(tmp_path)
    granted = ["User.Read.All", "GroupMember.Read.All", "AuditLog.Read.All"]
    async with sandbox_client(tenant, roles=granted) as graph:
        with pytest.raises(GraphPermissionError) as caught:
            await run_job(settings, JOB, now=NOW, graph=graph)
    assert caught.value.permission == graph_roles.ROLES_PERMISSION
    assert caught.value.exit_code == 3


async def test_changes_nothing(tmp_path: Path) -> None:
    tenant = demo_tenant(NOW)
    before = tenant.to_json()
    report = await run_on(tenant, settings_for(tmp_path), JOB, now=NOW)
    assert report.actions == []
    assert all(r.method == "GET" for r in tenant.requests)
    assert tenant.to_json() == before


def test_demo_policy_matches_the_seed_and_loads(tmp_path: Path) -> None:
    table = seed.demo_policy(NOW)["privileged_roles"]
    loaded = make_settings(tmp_path, privileged_roles=table).privileged_roles
    assert len(loaded.register_entries) == len(table["register"])
    # the module-level DEMO_POLICY (real clock) is valid too
    (tmp_path / "now").mkdir()
    make_settings(tmp_path / "now", privileged_roles=seed.DEMO_POLICY["privileged_roles"])


async def test_demo_policy_holds_when_the_clock_moves_by_months(tmp_path: Path) -> None:
    # the demo writes the register for the real clock; DAP_AGENT_NOW may move the tenant's
    later = NOW + timedelta(days=100)
    tenant: SandboxTenant = demo_tenant(later)
    report = await run_on(tenant, settings_for(tmp_path), JOB, now=later)
    assert fired(report.findings) == seed.EXPECTED


async def test_with_only_the_jobs_permissions_a_deleted_principal_is_a_finding(
        tmp_path: Path) -> None:
    """Issue 14.4: a principal Graph cannot expand sent the job to /servicePrincipals/{id}
    (Application.Read.All, which no JobSpec asks), and the 403 aborted the run. Now it is
    looked up in bulk with User.Read.All and, found nowhere, reported."""
    from jobs.privileged_roles import JOB as SPEC

    tenant = demo_tenant(NOW)
    ghosts = [b.oid(f"user:deleted-{n}") for n in range(3)]
    for ghost in ghosts:
        tenant.add("roleEligibilityScheduleInstances",
                   b.role_eligibility_instance(ghost, "Security Reader",
                                               end=NOW + timedelta(days=30)))
    async with sandbox_client(tenant, roles=list(SPEC.permissions)) as graph:
        report = await run_job(settings_for(tmp_path), JOB, now=NOW, graph=graph)
    assert report.status == "ok", report.error
    unresolved = {f.subject.id for f in report.findings
                  if f.rule == "PIM-UNRESOLVED-PRINCIPAL"}
    assert unresolved == set(ghosts)
    paths = Counter(r.path for r in tenant.requests)
    assert not any(p.startswith(("/servicePrincipals", "/directoryObjects")) for p in paths)
    lookups = [r for r in tenant.requests if r.path == "/users" and "$filter" in r.query]
    assert len(lookups) == 1 and all(g in lookups[0].query["$filter"] for g in ghosts)
    assert all(r.status < 400 for r in tenant.requests)


async def test_group_members_are_read_with_groupmember_readbasic(tmp_path: Path) -> None:
    """Issue 14.6: GroupMember.ReadBasic.All is the least privileged permission of
    transitiveMembers; the job asks for it (not GroupMember.Read.All) and still sees
    members' UPN and user type, which User.Read.All reads."""
    from jobs.privileged_roles import JOB as SPEC

    assert "GroupMember.ReadBasic.All" in SPEC.permissions
    assert "GroupMember.Read.All" not in SPEC.permissions
    tenant = demo_tenant(NOW)
    async with sandbox_client(tenant, roles=list(SPEC.permissions)) as graph:
        report = await run_job(settings_for(tmp_path), JOB, now=NOW, graph=graph)
    (tmp_path / "all").mkdir()
    everything = await run_on(demo_tenant(NOW), settings_for(tmp_path / "all"), JOB, now=NOW)
    assert report.status == "ok", report.error
    # service principals are named by id without Application.Read.All; nothing else differs
    app = {f.subject.id for f in everything.findings if f.subject.type == "servicePrincipal"}

    def named(r: Any) -> set[tuple[str, str]]:
        return {(f.rule, f.subject.id) for f in r.findings}
    assert named(report) == named(everything)
    assert {f.subject.name for f in report.findings if f.subject.id in app} <= app


async def test_a_tenant_without_entra_premium_is_told_so(tmp_path: Path) -> None:
    """Issue 14.3: the MFA report's 403 for a tenant without Entra ID P1/P2 named
    AuditLog.Read.All; it names the licence (exit 3)."""
    tenant = demo_tenant(NOW)
    for sku in tenant.all("subscribedSkus"):
        sku["servicePlans"] = [p for p in sku.get("servicePlans") or ()
                               if not str(p["servicePlanName"]).startswith("AAD_PREMIUM")]
        sku["skuPartNumber"] = "O365_" + str(sku["skuPartNumber"])  # no E3/E5 suite
    with pytest.raises(graph_roles.LicenceRequiredError) as caught:
        await run_on(tenant, settings_for(tmp_path), JOB, now=NOW)
    message = str(caught.value)
    assert "the MFA registration report needs Entra ID P1/P2" in message
    assert "AuditLog.Read.All" not in message
    assert caught.value.exit_code == 3
    refused = [r for r in tenant.requests if r.status == 403]
    assert [r.path for r in refused] == [graph_roles.REGISTRATION_PATH]


@pytest.mark.parametrize("granted", ["GroupMember.Read.All", "Group.Read.All",
                                     "Directory.Read.All", "GroupMember.ReadBasic.All"])
def test_config_check_online_counts_stronger_group_permissions(granted: str) -> None:
    """A tenant that granted a stronger group permission needs no new consent."""
    from agent.online_check import effective

    assert "GroupMember.ReadBasic.All" in effective({granted})
