"""device-compliance: the evaluation as pure logic over models (no HTTP)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from agent.errors import GraphDataError
from agent.graph import devices as dev
from agent.sandbox import builders as b
from agent.sandbox.seed import devices as seed_devices
from jobs.device_compliance import (
    EXPORT_COLUMNS,
    RULES,
    Evaluation,
    Inventory,
    Policy,
    compliance_check,
    evaluate,
    removable_media_check,
    stale_check,
)
from tests.helpers_device_compliance import (
    NOW,
    TENANT,
    demo_policy,
    device_tenant,
    fired,
    inventory_from,
)


def run_demo(**overrides: object) -> tuple[Inventory, Evaluation]:
    policy = demo_policy(**overrides)
    inventory = inventory_from(device_tenant(), policy)
    return inventory, evaluate(inventory, policy, now=NOW, tenant_id=TENANT)


# ---- the demo seed: every rule fires exactly where it was built to ----------------------

def test_each_rule_fires_exactly_on_the_devices_built_to_break_it() -> None:
    policy = demo_policy()
    result = evaluate(inventory_from(device_tenant(), policy), policy, now=NOW,
                      tenant_id=TENANT)
    assert fired(result) == seed_devices.EXPECTED
    flagged = set().union(*seed_devices.EXPECTED.values())
    assert not flagged & seed_devices.CLEAN
    assert not flagged & (seed_devices.DISABLED_REGISTRATIONS | seed_devices.STALE_REGISTRATIONS
                          | seed_devices.OUT_OF_SCOPE)


def test_every_finding_has_the_rule_severity_and_one_finding_per_device_and_rule() -> None:
    _, result = run_demo()
    keys = Counter((f.rule, f.subject.id) for f in result.findings)
    assert max(keys.values()) == 1
    assert {f.severity for f in result.findings} <= {"high", "medium", "low"}


def test_cloud_pc_is_recognised_not_flagged_and_counted() -> None:
    _, result = run_demo()
    summary = result.summary
    assert summary["cloud_pcs_recognised"] == 1
    row = next(r for r in result.rows if r.name == "CPC-GIJS")
    assert row.cloud_pc == "true" and row.findings == []
    assert "Windows 365" in row.encryption and "Cloud PC" in row.recovery_key


def test_cloud_pc_prefix_is_a_setting() -> None:
    _, result = run_demo(cloud_pc_model_prefixes=())
    names = fired(result)
    assert "CPC-GIJS" in names["DEV-NOT-ENCRYPTED"]


def test_disabled_and_stale_registrations_are_reported_separately() -> None:
    _, result = run_demo()
    summary = result.summary
    assert summary["registrations_not_checked"] == {"disabled": 1, "stale": 1}
    assert summary["devices"]["unmanaged"] == 2
    marks = {r.name: r.managed for r in result.rows if r.record == "entra"}
    assert marks["LT-OLD-DISABLED"] == "not in Intune (disabled registration)"
    assert marks["LT-FORGOTTEN"] == "not in Intune (stale registration)"
    assert marks["PRN-FLOOR2"] == "not in Intune (platform out of scope)"
    assert marks["WS-RECEPTION-01"] == "no"


def test_platforms_in_scope_are_a_setting() -> None:
    _, result = run_demo(platforms=["windows"])
    names = fired(result)
    assert names["DEV-UNMANAGED"] == {"WS-RECEPTION-01"}
    assert "LNX-NOOR" not in names["DEV-NOT-ENCRYPTED"]
    assert names["DEV-STALE"] == {"LT-SANNE"}


# ---- compliance state -------------------------------------------------------------------

def managed(**changes: object) -> dev.ManagedDevice:
    raw = b.managed_device("T-1", last_sync=NOW - timedelta(days=1))
    raw.update(changes)
    return dev.managed_device_from(raw)


@pytest.mark.parametrize("state", ["noncompliant", "error", "conflict", "unknown"])
def test_noncompliant_states_are_named_in_the_detail(state: str) -> None:
    outcome, detail = compliance_check(managed(complianceState=state), NOW,
                                       flag_grace_period=False)
    assert outcome == state
    assert detail is not None and f"compliance state {state}" in detail


def test_grace_period_is_flagged_only_once_it_has_ended() -> None:
    running = managed(complianceState="inGracePeriod",
                      complianceGracePeriodExpirationDateTime="2026-03-20T10:00:00Z")
    ended = managed(complianceState="inGracePeriod",
                    complianceGracePeriodExpirationDateTime="2026-03-17T10:00:00.1234567Z")
    assert compliance_check(running, NOW, flag_grace_period=False) == (
        "in grace period until 2026-03-20", None)
    _, detail = compliance_check(ended, NOW, flag_grace_period=False)
    assert detail is not None and "inGracePeriod" in detail and "2026-03-17" in detail
    assert compliance_check(running, NOW, flag_grace_period=True)[1] is not None


def test_config_manager_and_compliant_are_not_flagged() -> None:
    for state in ("compliant", "configManager"):
        assert compliance_check(managed(complianceState=state), NOW,
                                flag_grace_period=False)[1] is None


def test_demo_grace_device_in_grace_is_clean_and_counted() -> None:
    _, result = run_demo()
    assert result.summary["in_grace_period_not_flagged"] == 1


# ---- staleness --------------------------------------------------------------------------

def test_stale_boundary_and_never_synced() -> None:
    assert stale_check(NOW - timedelta(days=30), NOW, 30)[1] is None
    assert stale_check(NOW - timedelta(days=30, seconds=1), NOW, 30)[1] is not None
    never = dev.parse_time("0001-01-01T00:00:00Z")
    assert "never" in (stale_check(never, NOW, 30)[1] or "")
    assert "never" in (stale_check(None, NOW, 30)[1] or "")


# ---- encryption and keys ----------------------------------------------------------------

def test_linux_status_matches_by_composite_id_or_unique_name() -> None:
    policy = demo_policy()
    inventory = inventory_from(device_tenant(), policy)
    # Graph's composite ids (seeded) join by id; rename the rows' ids to prove the name path
    renamed = [dataclasses.replace(s, id=f"opaque-{n}")
               for n, s in enumerate(inventory.linux_statuses)]
    for statuses in (inventory.linux_statuses, renamed):
        result = evaluate(dataclasses.replace(inventory, linux_statuses=statuses), policy,
                          now=NOW, tenant_id=TENANT)
        names = fired(result)
        assert "LNX-FLOOR" not in names["DEV-NOT-ENCRYPTED"]
        assert "LNX-NOOR" in names["DEV-NOT-ENCRYPTED"]
        assert not result.warnings


def test_linux_without_evidence_is_not_proven_and_warned() -> None:
    policy = demo_policy(linux_encryption_policy_ids=[])
    inventory = inventory_from(device_tenant(), policy)
    result = evaluate(inventory, policy, now=NOW, tenant_id=TENANT)
    assert {"LNX-FLOOR", "LNX-NOOR"} <= fired(result)["DEV-NOT-ENCRYPTED"]
    assert any("Linux" in w for w in result.warnings)
    row = next(r for r in result.rows if r.name == "LNX-FLOOR")
    assert row.encryption == "not proven"


def test_linux_compliance_requiring_encryption_counts_compliant_devices() -> None:
    policy = demo_policy(linux_encryption_policy_ids=[],
                         linux_compliance_requires_encryption=True)
    result = evaluate(inventory_from(device_tenant(), policy), policy, now=NOW,
                      tenant_id=TENANT)
    names = fired(result)
    assert "LNX-FLOOR" not in names["DEV-NOT-ENCRYPTED"]  # compliant
    assert "LNX-NOOR" in names["DEV-NOT-ENCRYPTED"]  # noncompliant: not proven


def test_missing_linux_policy_is_a_warning() -> None:
    policy = demo_policy(linux_encryption_policy_ids=["does-not-exist"])
    result = evaluate(inventory_from(device_tenant(), policy), policy, now=NOW,
                      tenant_id=TENANT)
    assert any("does-not-exist" in w for w in result.warnings)


def test_removable_drive_keys_are_evidence_not_os_keys() -> None:
    _, result = run_demo()
    summary = result.summary
    assert summary["removable_media"]["removable_drive_keys"] == 2
    assert summary["removable_media"]["devices_with_removable_drive_keys"] == 2
    assert summary["recovery_keys"]["fixed_data"] == 1
    assert "LT-RUBEN" in fired(result)["DEV-NO-RECOVERY-KEY"]


def test_unencrypted_windows_device_is_not_also_missing_a_key() -> None:
    _, result = run_demo()
    row = next(r for r in result.rows if r.name == "LT-PIETER")
    assert row.findings == ["DEV-NOT-ENCRYPTED"]
    assert row.recovery_key == "n/a (not encrypted)"


@pytest.mark.parametrize(("raw", "volume"), [("1", "os"), (1, "os"),
                                             ("operatingSystemVolume", "os"),
                                             ("3", "removable"), ("removableDataVolume",
                                                                  "removable"),
                                             (2, "fixed"), (None, "unknown"), ("9", "unknown")])
def test_volume_type_spellings(raw: object, volume: str) -> None:
    assert dev.volume_of(raw) == volume


def test_recovery_key_select_never_names_the_key() -> None:
    assert "key" not in dev.RECOVERY_KEY_SELECT


# ---- removable-media policy -------------------------------------------------------------

def config(name: str, *, on: bool | None, targets: list[dict[str, object]] | None = None,
           odata: str = "windows10EndpointProtectionConfiguration") -> dev.DeviceConfiguration:
    raw = b.device_configuration(name, odata)
    if on is not None:
        raw["bitLockerRemovableDrivePolicy"] = {"requireEncryptionForWriteAccess": on,
                                                "blockCrossOrganizationWriteAccess": False,
                                                "encryptionMethod": None}
    raw["assignments"] = targets or []
    return dev.device_configuration_from(raw)


ALL = [b.assignment("p", all_devices=True)]


def test_removable_policy_counts_only_when_set_and_assigned() -> None:
    good = config("good", on=True, targets=ALL)
    assert removable_media_check([good]) == (["good"], [])
    unassigned = config("pilot", on=True)
    excluded_only = config("excl", on=True, targets=[b.assignment("p", "g", exclude=True)])
    off = config("baseline", on=False, targets=ALL)
    absent = config("no-setting", on=None, targets=ALL)
    other = config("ios", on=True, targets=ALL, odata="iosGeneralDeviceConfiguration")
    counting, reasons = removable_media_check([unassigned, excluded_only, off, absent, other])
    assert counting == []
    assert len(reasons) == 4
    assert "'pilot'" in reasons[0] and "not assigned" in reasons[0]
    assert "not assigned" in reasons[1]
    assert "'baseline'" in reasons[2] and "off" in reasons[2]


def test_demo_removable_finding_names_both_policies_and_what_was_not_checked() -> None:
    _, result = run_demo()
    finding = next(f for f in result.findings
                   if f.rule == "POL-REMOVABLE-MEDIA")
    assert seed_devices.REMOVABLE_UNASSIGNED in finding.detail
    assert seed_devices.REMOVABLE_OFF in finding.detail
    assert "beta" in finding.detail
    assert finding.subject.type == "tenant"


def test_compliant_removable_policy_is_named_and_not_flagged() -> None:
    policy = demo_policy()
    tenant = device_tenant()
    name = seed_devices.make_removable_policy_compliant(tenant)
    result = evaluate(inventory_from(tenant, policy), policy, now=NOW, tenant_id=TENANT)
    assert "POL-REMOVABLE-MEDIA" not in fired(result)
    assert result.summary["removable_media"]["policies"] == [name]


def test_no_policy_at_all() -> None:
    policy = demo_policy()
    inventory = dataclasses.replace(inventory_from(device_tenant(), policy), configurations=[])
    result = evaluate(inventory, policy, now=NOW, tenant_id=TENANT)
    finding = next(f for f in result.findings if f.rule == "POL-REMOVABLE-MEDIA")
    assert "no Windows endpoint-protection configuration" in finding.detail


# ---- summary and export rows ------------------------------------------------------------

def test_summary_counts_and_percentages() -> None:
    inventory, result = run_demo()
    summary = result.summary
    assert summary["findings_by_rule"] == {
        rule: len(seed_devices.EXPECTED.get(rule, ())) for rule in RULES}
    managed_count = len(inventory.managed)
    assert summary["devices"]["intune_managed"] == managed_count == 21
    flagged = {r: len(n) for r, n in seed_devices.EXPECTED.items()}
    assert summary["compliant_percent"] == round(
        100 * (managed_count - flagged["DEV-NONCOMPLIANT"]) / managed_count, 1)
    assert summary["encrypted_percent"] == round(
        100 * (managed_count - flagged["DEV-NOT-ENCRYPTED"]) / managed_count, 1)
    # Windows devices due a key: encrypted, not Cloud PCs
    due = summary["recovery_keys"]["windows_devices_due"]
    assert summary["escrowed_percent"] == round(100 * (due - 2) / due, 1)
    assert summary["platforms"]["windows"]["cloud_pc"] == 1
    assert set(summary["platforms"]) == {"windows", "linux", "macos", "ios", "android",
                                         "other"}


def test_one_export_row_per_device_with_every_check() -> None:
    inventory, result = run_demo()
    rows = result.rows
    unmatched_entra = {e.id for e in inventory.entra} - {
        r.entra_object_id for r in rows if r.record == "intune"}
    assert len(rows) == len(inventory.managed) + len(unmatched_entra)
    assert all(len(r.values()) == len(EXPORT_COLUMNS) for r in rows)
    by_name = {r.name: r for r in rows}
    assert by_name["LNX-NOOR"].values()[-1] == "DEV-NONCOMPLIANT DEV-NOT-ENCRYPTED"
    assert by_name["LT-SANNE"].stale == "yes"


# ---- models and parsing -----------------------------------------------------------------

def test_parse_time_graph_forms() -> None:
    assert dev.parse_time("2017-01-01T00:02:49.3205976-08:00") == datetime(
        2017, 1, 1, 8, 2, 49, 320597, tzinfo=UTC)
    assert dev.parse_time("9999-12-31T23:59:59.9999999Z") is not None
    far = dev.parse_time("9999-12-31T23:59:59-08:00")
    assert far is not None and far.year == 9999
    assert dev.parse_time(None) is None and dev.parse_time("garbage") is None


@pytest.mark.parametrize(("name", "platform"), [
    ("Windows", "windows"), ("iOS", "ios"), ("iPadOS", "ios"), ("Android", "android"),
    ("AndroidForWork", "android"), ("macOS", "macos"), ("MacMDM", "macos"),
    ("Linux", "linux"), ("Unknown", "other"), ("", "other")])
def test_platform_names(name: str, platform: str) -> None:
    assert dev.platform_of(name) == platform


def test_all_zero_azure_ad_device_id_means_none() -> None:
    device = managed(azureADDeviceId="00000000-0000-0000-0000-000000000000")
    assert device.azure_ad_device_id is None


def test_policy_rejects_unknown_keys_and_platforms() -> None:
    with pytest.raises(ValidationError):
        Policy(stale_after_days=30, wrong=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Policy(platforms=["windows", "beos"])
    with pytest.raises(ValidationError):
        Policy(stale_after_days=0)


def test_unverifiable_completeness_is_a_warning_and_a_short_list_an_error() -> None:
    policy = demo_policy()
    inventory = dataclasses.replace(
        inventory_from(device_tenant(), policy),
        completeness=(dev.Completeness("managedDevices", 21, None),))
    result = evaluate(inventory, policy, now=NOW, tenant_id=TENANT)
    assert any("could not be verified" in w for w in result.warnings)
    with pytest.raises(GraphDataError, match=r"@odata\.count"):
        dev._check_complete(dev.Completeness("managedDevices", 1000, 1221), "/x")
    dev._check_complete(dev.Completeness("managedDevices", 1000, 1000), "/x")


def test_entra_flag_managed_without_intune_device_is_still_unmanaged() -> None:
    policy = demo_policy()
    tenant = device_tenant()
    tenant.add("devices", b.device("WS-GHOST", managed=True, last_sign_in=NOW))
    result = evaluate(inventory_from(tenant, policy), policy, now=NOW, tenant_id=TENANT)
    finding = next(f for f in result.findings if f.subject.name == "WS-GHOST")
    assert finding.rule == "DEV-UNMANAGED" and "Entra marks it managed" in finding.detail


def test_worst_status_of_several_encryption_policies_wins() -> None:
    policy = demo_policy()
    inventory = inventory_from(device_tenant(), policy)
    floor = next(s for s in inventory.linux_statuses if s.status == "compliant")
    worse = dataclasses.replace(floor, status="error", policy_id="other-policy")
    result = evaluate(dataclasses.replace(
        inventory, linux_statuses=[*inventory.linux_statuses, worse]), policy, now=NOW,
        tenant_id=TENANT)
    assert "LNX-FLOOR" in fired(result)["DEV-NOT-ENCRYPTED"]


def test_device_without_entra_identity_cannot_escrow() -> None:
    policy = demo_policy()
    tenant = device_tenant()
    raw = b.managed_device("LT-NOAAD", last_sync=NOW,
                           azure_ad_device_id="00000000-0000-0000-0000-000000000000")
    tenant.add("managedDevices", raw)
    result = evaluate(inventory_from(tenant, policy), policy, now=NOW, tenant_id=TENANT)
    finding = next(f for f in result.findings if f.subject.name == "LT-NOAAD")
    assert finding.rule == "DEV-NO-RECOVERY-KEY" and "no Entra ID identity" in finding.detail


def catalog(name: str, value: str | None, *, assigned: bool = True,
            platforms: str = "windows10") -> dev.CatalogPolicy:
    settings = [] if value is None else [b.catalog_setting(dev.REMOVABLE_DENY_SETTING, value)]
    raw = b.configuration_policy(name, settings=settings, platforms=platforms,
                                 assignments=ALL if assigned else ())
    return dev.catalog_policy_from({**raw, "settings": raw["_settings"],
                                    "assignments": raw["_assignments"]})


def test_settings_catalog_policies_count_when_read() -> None:
    on = catalog("ES - BitLocker", f"{dev.REMOVABLE_DENY_SETTING}_1")
    assert on.removable_deny is True and on.assigned
    assert catalog("bare", "1").removable_deny is True
    assert catalog("off", f"{dev.REMOVABLE_DENY_SETTING}_0").removable_deny is False
    assert catalog("other settings", None).removable_deny is None
    assert removable_media_check([], [on]) == (["ES - BitLocker"], [])
    unassigned = catalog("pilot", f"{dev.REMOVABLE_DENY_SETTING}_1", assigned=False)
    mac = catalog("mac", f"{dev.REMOVABLE_DENY_SETTING}_1", platforms="macOS")
    counting, reasons = removable_media_check([], [unassigned, mac])
    assert counting == [] and reasons == [
        "'pilot' denies write access to unencrypted removable drives but is not assigned"]


def test_catalog_read_drops_the_beta_caveat() -> None:
    policy = demo_policy()
    inventory = inventory_from(device_tenant(), policy)
    result = evaluate(dataclasses.replace(inventory, catalog_policies=[]), policy, now=NOW,
                      tenant_id=TENANT)
    finding = next(f for f in result.findings if f.rule == "POL-REMOVABLE-MEDIA")
    assert "beta" not in finding.detail
    assert result.summary["removable_media"]["settings_catalog_checked"] is True
    fixed = evaluate(dataclasses.replace(inventory, catalog_policies=[
        catalog("ES - BitLocker", f"{dev.REMOVABLE_DENY_SETTING}_1")]), policy, now=NOW,
        tenant_id=TENANT)
    assert "POL-REMOVABLE-MEDIA" not in fired(fixed)
