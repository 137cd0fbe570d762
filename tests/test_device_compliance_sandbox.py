"""device-compliance end to end: the real runner and GraphClient against the sandbox tenant."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import math
import stat
from datetime import datetime
from pathlib import Path

import pytest
import structlog

from agent.errors import GraphDataError
from agent.graph import devices as dev
from agent.sandbox import builders as b
from agent.sandbox.seed import demo_tenant
from agent.sandbox.seed import devices as seed_devices
from agent.sandbox.tenant import SandboxTenant
from agent.settings import Settings
from jobs.device_compliance import EXPORT_COLUMNS
from tests.conftest import make_settings, run_on
from tests.helpers_device_compliance import NOW, device_tenant, fired_from_report


@pytest.fixture(autouse=True)
def _fresh_logging() -> None:
    """CLI tests configure structlog onto a capture stream pytest closes afterwards."""
    structlog.reset_defaults()


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    table = {**seed_devices.DEMO_POLICY["device_compliance"], **overrides}
    return make_settings(tmp_path, device_compliance=table)


async def test_demo_tenant_each_rule_fires_exactly_where_built(tmp_path: Path) -> None:
    tenant = demo_tenant(NOW)
    report = await run_on(tenant, settings_for(tmp_path), "device-compliance", now=NOW)
    assert report.status == "ok", report.error
    assert fired_from_report(report.findings) == seed_devices.EXPECTED
    summary = report.summary
    assert summary["cloud_pcs_recognised"] == 1
    assert summary["registrations_not_checked"] == {"disabled": 1, "stale": 1}
    managed = summary["completeness"]["managedDevices"]
    assert managed["source"] == "managedDeviceOverview.mdmEnrolledCount"
    assert managed["read"] == len(tenant.all("managedDevices")) >= managed["reported"] > 0


def test_export_one_row_per_device_private_and_hashed(tmp_path: Path) -> None:
    tenant = device_tenant()
    settings = settings_for(tmp_path)
    report = asyncio.run(run_on(tenant, settings, "device-compliance", now=NOW))
    path = Path(report.summary["export_path"])
    assert path.name == "devices-2026-03-18.csv"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert tuple(rows[0]) == EXPORT_COLUMNS
    intune = [r for r in rows if r["record"] == "intune"]
    assert len(intune) == len(tenant.all("managedDevices"))
    names = {r["name"]: r for r in rows}
    assert names["LT-TESS"]["findings"] == "DEV-NO-RECOVERY-KEY"
    assert names["WS-RECEPTION-01"]["findings"] == "DEV-UNMANAGED"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == report.summary["export_sha256"]


async def test_one_paged_pass_per_collection_and_no_per_device_request(tmp_path: Path) -> None:
    tenant = device_tenant()
    await run_on(tenant, settings_for(tmp_path), "device-compliance", now=NOW)
    paths = [r.path for r in tenant.requests]
    per_path = {p: paths.count(p) for p in set(paths)}
    assert per_path == {
        dev.MANAGED_DEVICES_PATH: 1, dev.MANAGED_OVERVIEW_PATH: 1, dev.DEVICES_PATH: 1,
        dev.RECOVERY_KEYS_PATH: 1,
        dev.CONFIGURATIONS_PATH: 1, dev.COMPLIANCE_POLICIES_PATH: 1,
        f"{dev.COMPLIANCE_POLICIES_PATH}/{seed_devices.LINUX_ENCRYPTION_POLICY_ID}"
        "/deviceStatuses": 1,
        dev.CATALOG_POLICIES_PATH: 1,  # the one Graph beta read (settings catalog)
    }
    managed = next(r for r in tenant.requests if r.path == dev.MANAGED_DEVICES_PATH)
    # no $count: Intune documents no whole-collection @odata.count
    assert managed.query["$top"] == "1000" and "$count" not in managed.query
    keys = next(r for r in tenant.requests if r.path == dev.RECOVERY_KEYS_PATH)
    assert "$top" not in keys.query
    assert "key" not in keys.query["$select"].split(",")


async def test_paging_reads_every_page(tmp_path: Path) -> None:
    tenant = device_tenant()
    extra = 2500
    for n in range(extra):
        tenant.add("managedDevices", b.managed_device(f"BULK-{n:05d}", last_sync=NOW))
        tenant.add("devices", b.device(f"BULK-{n:05d}", last_sign_in=NOW))
        tenant.add("recoveryKeys", b.recovery_key(f"BULK-{n:05d}"))
    report = await run_on(tenant, settings_for(tmp_path), "device-compliance", now=NOW)
    assert report.status == "ok"
    assert fired_from_report(report.findings) == seed_devices.EXPECTED
    managed_pages = sum(1 for r in tenant.requests if r.path == dev.MANAGED_DEVICES_PATH)
    assert managed_pages == math.ceil(len(tenant.all("managedDevices")) / 1000)


async def test_truncated_device_list_fails_the_run(tmp_path: Path) -> None:
    tenant = _big_tenant()
    tenant.faults.truncate_path = "managedDevices"
    with pytest.raises(GraphDataError) as caught:
        await run_on(tenant, settings_for(tmp_path), "device-compliance", now=NOW)
    report = caught.value.report  # type: ignore[attr-defined]
    assert report.status == "failed"
    assert "MDM-enrolled devices (/deviceManagement/managedDeviceOverview)" in \
        (report.error or "")
    assert "held 1000" in (report.error or "")
    assert not report.findings  # nothing that could pass for a clean tenant
    assert not list((tmp_path / "state").glob("exports/devices-*.csv"))


async def test_page_sized_odata_count_of_intune_does_not_fail_a_big_tenant(
        tmp_path: Path) -> None:
    """Intune may answer `$count=true` with the page's size (the sandbox does): the job
    neither asks for it nor trusts it, and 2,200 devices over 3 pages pass."""
    tenant = _big_tenant()
    for n in range(1000):
        tenant.add("managedDevices", b.managed_device(f"MORE-{n:05d}", last_sync=NOW))
    report = await run_on(tenant, settings_for(tmp_path), "device-compliance", now=NOW)
    assert report.status == "ok", report.error
    total = len(tenant.all("managedDevices"))
    assert total > 2000
    assert report.summary["completeness"]["managedDevices"]["read"] == total
    assert report.summary["devices"]["intune_managed"] == total


async def test_devices_intune_lists_beyond_mdm_do_not_fail_the_guard(tmp_path: Path) -> None:
    """mdmEnrolledCount is a lower bound: an Exchange-only record in the list is no gap."""
    tenant = device_tenant()
    tenant.add("managedDevices", b.managed_device("EAS-ONLY-PHONE", os="iOS", last_sync=NOW,
                                                  managementAgent="eas"))
    report = await run_on(tenant, settings_for(tmp_path), "device-compliance", now=NOW)
    assert report.status == "ok", report.error
    seen = report.summary["completeness"]["managedDevices"]
    assert seen["read"] == seen["reported"] + 1


async def test_truncated_entra_list_fails_the_run(tmp_path: Path) -> None:
    tenant = _big_tenant()
    tenant.faults.truncate_path = r"^/devices$"
    with pytest.raises(GraphDataError):
        await run_on(tenant, settings_for(tmp_path), "device-compliance", now=NOW)


async def test_compliant_removable_policy_clears_the_tenant_finding(tmp_path: Path) -> None:
    tenant = device_tenant()
    name = seed_devices.make_removable_policy_compliant(tenant)
    report = await run_on(tenant, settings_for(tmp_path), "device-compliance", now=NOW)
    assert "POL-REMOVABLE-MEDIA" not in fired_from_report(report.findings)
    assert report.summary["removable_media"]["policies"] == [name]


def _big_tenant(now: datetime = NOW) -> SandboxTenant:
    """More than one page of managed and Entra devices, so truncation can bite."""
    tenant = device_tenant(now)
    for n in range(1200):
        tenant.add("managedDevices", b.managed_device(f"BULK-{n:05d}", last_sync=now))
        tenant.add("devices", b.device(f"BULK-{n:05d}", last_sign_in=now))
    return tenant


async def test_an_assigned_settings_catalog_policy_satisfies_removable_media(
        tmp_path: Path) -> None:
    from agent.sandbox import builders as b

    tenant = device_tenant()
    before = await run_on(tenant, settings_for(tmp_path), "device-compliance", now=NOW)
    assert any(f.rule == "POL-REMOVABLE-MEDIA" for f in before.findings)
    name = "ES - BitLocker removable drives"
    policy_id = b.oid(f"configurationPolicy:{name}")
    raw = b.configuration_policy(
        name, platforms="windows10",
        settings=[b.catalog_setting(dev.REMOVABLE_DENY_SETTING,
                                    f"{dev.REMOVABLE_DENY_SETTING}_1")],
        assignments=[b.assignment(policy_id, all_devices=True)])
    tenant.add("configurationPolicies", raw)
    after = await run_on(tenant, settings_for(tmp_path), "device-compliance", now=NOW)
    assert not any(f.rule == "POL-REMOVABLE-MEDIA" for f in after.findings)
    assert after.summary["removable_media"]["settings_catalog_checked"] is True


async def test_settings_catalog_read_can_be_turned_off(tmp_path: Path) -> None:
    tenant = device_tenant()
    settings = settings_for(tmp_path, check_settings_catalog=False)
    report = await run_on(tenant, settings, "device-compliance", now=NOW)
    assert not any(r.path == dev.CATALOG_POLICIES_PATH for r in tenant.requests)
    finding = next(f for f in report.findings if f.rule == "POL-REMOVABLE-MEDIA")
    assert "were not checked" in finding.detail


async def test_a_large_endpoint_security_policy_is_read_to_its_last_setting(
        tmp_path: Path) -> None:
    """Settings are paged: the removable-drive setting as the 250th of 300 settings (past
    what `$expand=settings` inlines and past the first page) still counts, so no false
    POL-REMOVABLE-MEDIA."""
    from agent.sandbox import routes

    tenant = device_tenant()
    name = "ES - Disk encryption (large)"
    policy_id = b.oid(f"configurationPolicy:{name}")
    filler = [b.catalog_setting(f"device_vendor_msft_policy_config_filler_{n}", n, index=n)
              for n in range(300)]
    filler[250] = b.catalog_setting(dev.REMOVABLE_DENY_SETTING,
                                    f"{dev.REMOVABLE_DENY_SETTING}_1", index=250)
    assert max(routes.SETTINGS_INLINE, routes.SETTINGS_PAGE) < 250
    tenant.add("configurationPolicies", b.configuration_policy(
        name, platforms="windows10", settings=filler,
        assignments=[b.assignment(policy_id, all_devices=True)]))
    report = await run_on(tenant, settings_for(tmp_path), "device-compliance", now=NOW)
    assert report.status == "ok", report.error
    assert "POL-REMOVABLE-MEDIA" not in fired_from_report(report.findings)
    settings_path = f"{dev.CATALOG_POLICIES_PATH}/{policy_id}/settings"
    pages = [r for r in tenant.requests if r.path == settings_path]
    assert len(pages) == math.ceil(300 / routes.SETTINGS_PAGE)
