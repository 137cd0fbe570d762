"""Job `device-compliance`: every device managed, compliant, encrypted, its key escrowed.

DAP 3.2 / 3.12.2 (dap-rules.md §3). Read-only. One paged pass per collection
(`agent.graph.devices`), then `evaluate()` — pure logic over the models, no HTTP — joins
them in memory by id and yields the findings, one export row per device and the summary.

Rules (product-spec.md) and how each is read:
- DEV-UNMANAGED: an enabled, recently active Entra ID device of a platform in `platforms`
  whose `deviceId` no Intune device carries as `azureADDeviceId`. Disabled registrations
  and stale ones (no sign-in for `stale_registration_days`) are not findings: they are
  counted separately in the summary and marked in the export.
- DEV-NONCOMPLIANT: `complianceState` other than compliant, the state named in the detail.
  `inGracePeriod` counts only once `complianceGracePeriodExpirationDateTime` has passed
  (or always, with `flag_grace_period`). `configManager` (compliance evaluated by
  Configuration Manager under co-management) is not flagged, but counted.
- DEV-NOT-ENCRYPTED: `isEncrypted` false (BitLocker on Windows, FileVault on macOS,
  device encryption on iOS/Android). Windows 365 Cloud PCs report false although the
  service encrypts their disks: recognised by model (`cloud_pc_model_prefixes`), never
  flagged, counted in the summary. Linux: where `isEncrypted` is not reported, the
  per-device status of the compliance policies in `linux_encryption_policy_ids` decides
  (compliant = encrypted), else, with `linux_compliance_requires_encryption`, a compliant
  Linux device counts as encrypted.
- DEV-NO-RECOVERY-KEY: an encrypted Windows device (not a Cloud PC, which has no
  BitLocker) with no operating-system-volume key escrowed in Entra ID. An unencrypted one
  is DEV-NOT-ENCRYPTED only: it has no key to escrow until it is encrypted. Removable-
  drive keys (volumeType 3) are counted as evidence of removable-media encryption.
- POL-REMOVABLE-MEDIA: no assigned windows10EndpointProtectionConfiguration with
  `bitLockerRemovableDrivePolicy.requireEncryptionForWriteAccess`. The finding names each
  candidate and why it does not count (absent, unassigned, setting off). Settings-catalog
  and endpoint-security disk-encryption policies (the BitLocker CSP setting
  RemovableDrivesRequireEncryption) count too; they exist only in Graph beta, read unless
  `check_settings_catalog = false` (then the detail says they were not checked).
- DEV-STALE: no Intune check-in (`lastSyncDateTime`) for more than `stale_after_days`.

A device list shorter than Graph says it is fails the run (GraphDataError): Entra's
against `@odata.count`, Intune's against `managedDeviceOverview.mdmEnrolledCount` (Intune
documents no whole-collection `@odata.count`). A truncated list must never pass for a
clean tenant.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import Field

from agent.exports import csv_chunks
from agent.files import write_atomic_chunks
from agent.graph import devices as dev
from agent.graph.client import GraphClient
from agent.graph.devices import (
    CatalogPolicy,
    Completeness,
    CompliancePolicy,
    DeviceConfiguration,
    DeviceStatus,
    EntraDevice,
    ManagedDevice,
    RecoveryKey,
)
from agent.job import JobContext, JobPolicy, JobSpec
from agent.rules import severity_of
from agent.run import Severity, Subject

PlatformName = Literal["windows", "linux", "macos", "ios", "android"]
ALL_PLATFORMS: tuple[PlatformName, ...] = ("windows", "linux", "macos", "ios", "android")
RULES = ("DEV-UNMANAGED", "DEV-NONCOMPLIANT", "DEV-NOT-ENCRYPTED", "DEV-NO-RECOVERY-KEY",
         "DEV-STALE", "POL-REMOVABLE-MEDIA")
ENCRYPTION_NAME = {"windows": "BitLocker", "macos": "FileVault", "linux": "disk encryption",
                   "ios": "device encryption", "android": "device encryption"}
STATE_MEANING = {
    "noncompliant": "the device fails one or more compliance policies",
    "error": "Intune could not evaluate the device's compliance",
    "conflict": "compliance policies conflict on this device",
    "unknown": "Intune has no compliance result for the device",
}
NOT_CHECKED_BETA = ("check_settings_catalog is off: settings-catalog and endpoint-security "
                    "disk-encryption policies (Graph beta only) were not checked")
EXPORT_COLUMNS = (
    "record", "device_id", "entra_object_id", "entra_device_id", "name", "platform",
    "operating_system", "os_version", "owner_type", "user_principal_name", "cloud_pc",
    "last_contact", "managed", "compliance_state", "compliance", "encryption",
    "recovery_key", "stale", "findings",
)


class Policy(JobPolicy):
    """`[device_compliance]` in the TOML file."""

    schedule: str = "0 7 * * 1-5"
    stale_after_days: int = Field(default=30, ge=1,
                                  description="DEV-STALE: days without an Intune check-in")
    platforms: tuple[PlatformName, ...] = Field(
        default=ALL_PLATFORMS, min_length=1,
        description="platforms the DAP names; devices of other platforms are listed in the "
                    "export as out of scope and not checked")
    stale_registration_days: int = Field(
        default=90, ge=1,
        description="an Entra registration without sign-in for this long is reported as "
                    "stale, not as DEV-UNMANAGED")
    flag_grace_period: bool = Field(
        default=False,
        description="flag inGracePeriod devices before their grace period has ended")
    cloud_pc_model_prefixes: tuple[str, ...] = Field(
        default=("Cloud PC",),
        description="Intune model prefixes of Windows 365 Cloud PCs (isEncrypted is false "
                    "on them although the service encrypts their disks)")
    linux_encryption_policy_ids: tuple[str, ...] = Field(
        default=(),
        description="compliance policies whose per-device status proves Linux disk "
                    "encryption where isEncrypted is not reported")
    check_settings_catalog: bool = Field(
        default=True,
        description="also read settings-catalog / endpoint-security policies for the "
                    "removable-drive setting (Graph beta: v1.0 has no such route)")
    linux_compliance_requires_encryption: bool = Field(
        default=False,
        description="the Linux compliance policy requires encryption, so a compliant Linux "
                    "device counts as encrypted")


# ---- the inventory the job reads ------------------------------------------------------

@dataclass(frozen=True)
class Inventory:
    managed: Sequence[ManagedDevice]
    entra: Sequence[EntraDevice]
    keys: Sequence[RecoveryKey]
    configurations: Sequence[DeviceConfiguration]
    linux_policies: Sequence[CompliancePolicy] = ()  # the named ones that exist
    linux_statuses: Sequence[DeviceStatus] = ()
    completeness: Sequence[Completeness] = ()
    missing_linux_policies: Sequence[str] = ()  # named ids Graph does not have
    # settings-catalog / endpoint-security policies; None = not read (Graph beta only)
    catalog_policies: Sequence[CatalogPolicy] | None = None


async def read_inventory(graph: GraphClient, policy: Policy) -> Inventory:
    """Every collection once, the independent ones concurrently."""

    async def linux_evidence() -> tuple[list[CompliancePolicy], list[DeviceStatus],
                                        list[str]]:
        if not policy.linux_encryption_policy_ids:
            return [], [], []
        known = {p.id: p for p in await dev.compliance_policies(graph)}
        found = [known[i] for i in policy.linux_encryption_policy_ids if i in known]
        missing = [i for i in policy.linux_encryption_policy_ids if i not in known]
        statuses: list[DeviceStatus] = []
        for item in found:
            statuses.extend(await dev.device_statuses(graph, item.id))
        return found, statuses, missing

    try:
        async with asyncio.TaskGroup() as group:
            managed_task = group.create_task(dev.managed_devices(graph))
            entra_task = group.create_task(dev.entra_devices(graph))
            keys_task = group.create_task(dev.recovery_keys(graph))
            configs_task = group.create_task(dev.device_configurations(graph))
            linux_task = group.create_task(linux_evidence())
            catalog_task = (group.create_task(dev.catalog_policies(graph))
                            if policy.check_settings_catalog else None)
    except BaseExceptionGroup as failed:
        # the CLI's error handler (and the exit code) need the Graph error, not a group
        raise _first_leaf(failed) from None
    managed, managed_count = managed_task.result()
    entra, entra_count = entra_task.result()
    linux_policies, statuses, missing = linux_task.result()
    return Inventory(managed=managed, entra=entra, keys=keys_task.result(),
                     configurations=configs_task.result(), linux_policies=linux_policies,
                     linux_statuses=statuses, completeness=(managed_count, entra_count),
                     missing_linux_policies=missing,
                     catalog_policies=catalog_task.result() if catalog_task else None)


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


# ---- evaluation (pure) ----------------------------------------------------------------

@dataclass(frozen=True)
class FindingSpec:
    rule: str
    subject: Subject
    detail: str

    @property
    def severity(self) -> Severity:
        return severity_of(self.rule)


@dataclass(slots=True)
class Row:
    """One export row: one device, every check's outcome."""

    record: str  # intune | entra
    device_id: str
    name: str
    platform: str
    entra_object_id: str = ""
    entra_device_id: str = ""
    operating_system: str = ""
    os_version: str = ""
    owner_type: str = ""
    user_principal_name: str = ""
    cloud_pc: str = "false"
    last_contact: str = ""
    managed: str = ""
    compliance_state: str = ""
    compliance: str = "n/a"
    encryption: str = "n/a"
    recovery_key: str = "n/a"
    stale: str = "n/a"
    findings: list[str] = field(default_factory=list)

    def values(self) -> list[str]:
        return [" ".join(self.findings) if c == "findings" else str(getattr(self, c))
                for c in EXPORT_COLUMNS]


@dataclass
class Evaluation:
    findings: list[FindingSpec]
    rows: list[Row]
    summary: dict[str, Any]
    warnings: list[str]


def _day(moment: datetime | None) -> str:
    return moment.date().isoformat() if moment else "never"


def _percent(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None


def is_cloud_pc(device: ManagedDevice, prefixes: Iterable[str]) -> bool:
    model = (device.model or "").casefold()
    return device.platform == "windows" and any(
        model.startswith(p.casefold()) for p in prefixes if p)


def compliance_check(device: ManagedDevice, now: datetime, *,
                     flag_grace_period: bool) -> tuple[str, str | None]:
    """(outcome for the export, finding detail or None)."""
    state = device.compliance_state
    if state == "compliant":
        return "compliant", None
    if state == "configManager":
        return "evaluated by Configuration Manager", None
    if state == "inGracePeriod":
        expires = device.grace_expires
        if expires is not None and expires > now and not flag_grace_period:
            return f"in grace period until {_day(expires)}", None
        if expires is None:
            why = "Intune reports no grace period expiry"
        elif expires <= now:
            why = f"its grace period ended {_day(expires)}"
        else:
            why = f"in grace period until {_day(expires)} (flag_grace_period is on)"
        return f"grace period over ({_day(expires)})" if expires and expires <= now \
            else "in grace period", f"compliance state inGracePeriod: {why}"
    meaning = STATE_MEANING.get(state, "not compliant")
    return state, f"compliance state {state}: {meaning}"


def stale_check(last: datetime | None, now: datetime, days: int) -> tuple[str, str | None]:
    if last is not None and now - last <= timedelta(days=days):
        return "no", None
    if last is None or last.year < 1900:
        return "yes", f"never checked in with Intune (limit {days} days)"
    age = (now - last).days
    return "yes", f"last check-in with Intune {_day(last)}, {age} days ago (limit {days} days)"


def _linux_status_index(inventory: Inventory, linux: Sequence[ManagedDevice],
                        warnings: list[str]) -> dict[str, DeviceStatus]:
    """Per Linux managed device, the worst status any named encryption policy reports."""
    ids = {d.id for d in linux}
    by_name: dict[str, list[str]] = {}
    for d in linux:
        by_name.setdefault(d.name.casefold(), []).append(d.id)
    rank = {"compliant": 0, "remediated": 0, "notApplicable": 1, "notAssigned": 1,
            "unknown": 2, "conflict": 3, "error": 3, "nonCompliant": 4}
    index: dict[str, DeviceStatus] = {}
    unmatched = 0
    for status in inventory.linux_statuses:
        device_id = dev.status_device_id(status, ids)
        if device_id is None and status.device_name:
            candidates = by_name.get(status.device_name.casefold(), [])
            device_id = candidates[0] if len(candidates) == 1 else None
        if device_id is None:
            unmatched += 1
            continue
        current = index.get(device_id)
        if current is None or rank.get(status.status, 2) > rank.get(current.status, 2):
            index[device_id] = status
    if unmatched:
        warnings.append(f"{unmatched} device status row(s) of the Linux encryption policies "
                        "match no Linux managed device (by id or unique name)")
    return index


def encryption_check(device: ManagedDevice, *, cloud_pc: bool, policy: Policy,
                     linux_status: DeviceStatus | None,
                     policy_names: dict[str, str]) -> tuple[str, str | None]:
    if cloud_pc:
        return "encrypted by Windows 365 (Cloud PC)", None
    if device.is_encrypted:
        return "encrypted", None
    what = ENCRYPTION_NAME.get(device.platform, "encryption")
    if device.platform != "linux":
        return "not encrypted", f"Intune reports the storage not encrypted ({what} is off)"
    if linux_status is not None:
        name = policy_names.get(linux_status.policy_id, linux_status.policy_id)
        if linux_status.status in ("compliant", "remediated"):
            return f"encrypted (policy '{name}': {linux_status.status})", None
        if linux_status.status in ("nonCompliant", "error", "conflict"):
            return "not encrypted", (f"Linux disk encryption policy '{name}' reports "
                                     f"{linux_status.status} for this device")
    if policy.linux_compliance_requires_encryption and device.compliance_state == "compliant":
        return "encrypted (compliant with a policy that requires encryption)", None
    state = f"'{linux_status.status}'" if linux_status else "no status"
    return "not proven", ("Intune does not report the Linux disk encrypted and the disk "
                          f"encryption policies give {state} for this device")


def removable_media_check(configurations: Sequence[DeviceConfiguration],
                          catalog: Sequence[CatalogPolicy] = ()
                          ) -> tuple[list[str], list[str]]:
    """(names of the policies that count, why each other candidate does not)."""
    counting: list[str] = []
    reasons: list[str] = []
    candidates: list[tuple[str, bool, bool]] = [  # (name, setting on, assigned)
        (c.name, c.removable_drive is not None and
         c.removable_drive.require_encryption_for_write_access, c.assigned)
        for c in configurations if c.is_endpoint_protection]
    candidates += [(p.name, p.removable_deny is True, p.assigned) for p in catalog
                   if p.removable_deny is not None and "windows" in p.platforms.casefold()]
    for name, setting_on, assigned in candidates:
        if setting_on and assigned:
            counting.append(name)
        elif setting_on:
            reasons.append(f"'{name}' denies write access to unencrypted removable drives "
                           "but is not assigned")
        else:
            reasons.append(f"'{name}' does not deny write access to unencrypted removable "
                           "drives (the setting is off)"
                           + ("" if assigned else " and is not assigned"))
    return counting, reasons


def evaluate(inventory: Inventory, policy: Policy, *, now: datetime,
             tenant_id: str) -> Evaluation:
    """Every rule over the inventory: findings, one export row per device, the summary."""
    findings: list[FindingSpec] = []
    rows: list[Row] = []
    warnings: list[str] = []
    scope = set(policy.platforms)

    def flag(rule: str, subject: Subject, detail: str, row: Row | None = None) -> None:
        findings.append(FindingSpec(rule, subject, detail))
        if row is not None:
            row.findings.append(rule)

    os_keys: set[str] = set()
    removable_key_devices: set[str] = set()
    key_volumes: Counter[str] = Counter()
    for key in inventory.keys:
        key_volumes[key.volume] += 1
        if key.device_id is None:
            continue
        if key.volume == "os":
            os_keys.add(key.device_id)
        elif key.volume == "removable":
            removable_key_devices.add(key.device_id)

    in_scope = [d for d in inventory.managed if d.platform in scope]
    linux = [d for d in in_scope if d.platform == "linux"]
    linux_index = _linux_status_index(inventory, linux, warnings) if linux else {}
    policy_names = {p.id: p.name for p in inventory.linux_policies}
    entra_by_device_id = {e.device_id: e for e in inventory.entra if e.device_id}

    per_platform: dict[str, Counter[str]] = {}
    states: Counter[str] = Counter()
    cloud_pcs = compliant = encrypted = escrow_due = escrowed = in_grace = stale_count = 0
    for device in inventory.managed:
        entra = entra_by_device_id.get(device.azure_ad_device_id or "")
        row = Row(record="intune", device_id=device.id, name=device.name,
                  platform=device.platform, entra_object_id=entra.id if entra else "",
                  entra_device_id=device.azure_ad_device_id or "",
                  operating_system=device.operating_system, os_version=device.os_version or "",
                  owner_type=device.owner_type or "",
                  user_principal_name=device.user_principal_name or "",
                  last_contact=_day(device.last_sync), managed="intune",
                  compliance_state=device.compliance_state)
        rows.append(row)
        counts = per_platform.setdefault(device.platform, Counter())
        counts["managed"] += 1
        if device.platform not in scope:
            row.managed = "intune (platform out of scope)"
            continue
        subject = Subject("device", device.id, device.name)
        states[device.compliance_state] += 1

        row.compliance, detail = compliance_check(device, now,
                                                  flag_grace_period=policy.flag_grace_period)
        if detail:
            flag("DEV-NONCOMPLIANT", subject, detail, row)
        else:
            compliant += 1
            in_grace += device.compliance_state == "inGracePeriod"

        cloud_pc = is_cloud_pc(device, policy.cloud_pc_model_prefixes)
        row.cloud_pc = "true" if cloud_pc else "false"
        cloud_pcs += cloud_pc
        counts["cloud_pc"] += cloud_pc
        row.encryption, detail = encryption_check(
            device, cloud_pc=cloud_pc, policy=policy, linux_status=linux_index.get(device.id),
            policy_names=policy_names)
        if detail:
            flag("DEV-NOT-ENCRYPTED", subject, detail, row)
        else:
            encrypted += 1

        if device.platform == "windows":
            if cloud_pc:
                row.recovery_key = "n/a (Cloud PC: no BitLocker)"
            elif detail:
                row.recovery_key = "n/a (not encrypted)"
            else:
                escrow_due += 1
                if device.azure_ad_device_id and device.azure_ad_device_id in os_keys:
                    escrowed += 1
                    row.recovery_key = "escrowed"
                else:
                    row.recovery_key = "missing"
                    why = ("no BitLocker recovery key for the operating-system volume is "
                           "escrowed in Entra ID") if device.azure_ad_device_id else (
                           "the device has no Entra ID identity, so no BitLocker recovery "
                           "key can be escrowed")
                    flag("DEV-NO-RECOVERY-KEY", subject, why, row)

        row.stale, detail = stale_check(device.last_sync, now, policy.stale_after_days)
        if detail:
            stale_count += 1
            flag("DEV-STALE", subject, detail, row)

    # ---- coverage: Entra registrations that Intune does not manage ----
    managed_ids = {d.azure_ad_device_id for d in inventory.managed if d.azure_ad_device_id}
    excluded: Counter[str] = Counter()
    unmanaged = 0
    registration_limit = timedelta(days=policy.stale_registration_days)
    for entra in inventory.entra:
        if entra.device_id and entra.device_id in managed_ids:
            continue
        row = Row(record="entra", device_id=entra.id, name=entra.name, platform=entra.platform,
                  entra_object_id=entra.id, entra_device_id=entra.device_id or "",
                  operating_system=entra.operating_system, os_version=entra.os_version or "",
                  last_contact=_day(entra.last_sign_in))
        rows.append(row)
        counts = per_platform.setdefault(entra.platform, Counter())
        activity = entra.last_sign_in or entra.registered
        if entra.platform not in scope:
            row.managed = "not in Intune (platform out of scope)"
            counts["unmanaged_out_of_scope"] += 1
        elif not entra.enabled:
            row.managed = "not in Intune (disabled registration)"
            excluded["disabled"] += 1
            counts["registration_disabled"] += 1
        elif activity is None or now - activity > registration_limit:
            row.managed = "not in Intune (stale registration)"
            excluded["stale"] += 1
            counts["registration_stale"] += 1
        else:
            row.managed = "no"
            unmanaged += 1
            counts["unmanaged"] += 1
            note = (" (Entra marks it managed, but Intune has no device with this id)"
                    if entra.is_managed else "")
            flag("DEV-UNMANAGED", Subject("device", entra.id, entra.name),
                 f"{entra.operating_system or 'unknown OS'} device registered in Entra ID "
                 f"({entra.trust_type or 'unknown join type'}, last sign-in "
                 f"{_day(entra.last_sign_in)}) is not managed by Intune{note}", row)

    # ---- removable media: tenant-wide policy ----
    counting, reasons = removable_media_check(inventory.configurations,
                                              inventory.catalog_policies or ())
    removable: dict[str, Any] = {
        "policies": counting,
        "removable_drive_keys": key_volumes["removable"],
        "devices_with_removable_drive_keys": len(removable_key_devices),
        "settings_catalog_checked": inventory.catalog_policies is not None,
    }
    if counting:
        removable["status"] = "assigned policy found: " + ", ".join(f"'{c}'" for c in counting)
    else:
        why = "; ".join(reasons) if reasons else (
            "no Windows endpoint-protection configuration sets a removable-drive policy")
        removable["status"] = why
        unchecked = f" ({NOT_CHECKED_BETA})" if inventory.catalog_policies is None else ""
        flag("POL-REMOVABLE-MEDIA",
             Subject("tenant", tenant_id, "Windows removable-drive policy"),
             "no assigned Windows policy denies writing to removable drives not protected "
             f"by BitLocker: {why}{unchecked}")

    for missing in inventory.missing_linux_policies:
        warnings.append(f"linux_encryption_policy_ids: no compliance policy {missing} in the "
                        "tenant")
    if linux and not policy.linux_encryption_policy_ids \
            and not policy.linux_compliance_requires_encryption:
        warnings.append("Linux devices are managed but no Linux encryption evidence is "
                        "configured (linux_encryption_policy_ids or "
                        "linux_compliance_requires_encryption)")
    for item in inventory.completeness:
        if item.reported is None:
            warnings.append(f"{item.collection}: Graph returned no {item.source}, so the "
                            "completeness of the list could not be verified")

    rows.sort(key=lambda r: (r.record != "intune", r.platform, r.name.casefold(), r.device_id))
    managed_in_scope = len(in_scope)
    by_rule = Counter(f.rule for f in findings)
    summary: dict[str, Any] = {
        "devices": {"intune_managed": len(inventory.managed),
                    "intune_managed_in_scope": managed_in_scope,
                    "entra_registered": len(inventory.entra),
                    "unmanaged": unmanaged},
        "platforms": {p: dict(c) for p, c in sorted(per_platform.items())},
        "compliant_percent": _percent(compliant, managed_in_scope),
        "encrypted_percent": _percent(encrypted, managed_in_scope),
        "escrowed_percent": _percent(escrowed, escrow_due),
        "findings_by_rule": {rule: by_rule.get(rule, 0) for rule in RULES},
        "compliance_states": dict(sorted(states.items())),
        "in_grace_period_not_flagged": in_grace,
        "cloud_pcs_recognised": cloud_pcs,
        "stale_devices": stale_count,
        "registrations_not_checked": {"disabled": excluded["disabled"],
                                      "stale": excluded["stale"]},
        "recovery_keys": {"os_volume": key_volumes["os"], "fixed_data": key_volumes["fixed"],
                          "removable_data": key_volumes["removable"],
                          "windows_devices_due": escrow_due,
                          "windows_devices_escrowed": escrowed},
        "removable_media": removable,
        "linux_encryption_policies": [p.name for p in inventory.linux_policies],
        "completeness": {c.collection: {"read": c.read, "reported": c.reported,
                                        "source": c.source}
                         for c in inventory.completeness},
    }
    return Evaluation(findings=findings, rows=rows, summary=summary, warnings=warnings)


# ---- export -----------------------------------------------------------------------------

def write_export(directory: Path, day: date, rows: Iterable[Row]) -> tuple[Path, str]:
    """`devices-YYYY-MM-DD.csv` (atomic, 0600, formula-safe cells); (path, sha256)."""
    path = directory / f"devices-{day.isoformat()}.csv"
    digest = write_atomic_chunks(path, csv_chunks(EXPORT_COLUMNS, (r.values() for r in rows)))
    return path, digest


# ---- the job ------------------------------------------------------------------------------

async def run(ctx: JobContext) -> None:
    policy = cast(Policy, ctx.policy)
    inventory = await read_inventory(ctx.graph, policy)
    result = evaluate(inventory, policy, now=ctx.now, tenant_id=ctx.settings.tenant_id)
    del inventory  # 100k+100k device models: free them before the export and the report
    for item in result.findings:
        ctx.run.finding(item.rule, item.severity, item.subject, item.detail)
    for message in result.warnings:
        ctx.run.warn(message)
    path, digest = write_export(ctx.exports_dir, ctx.now.astimezone(ctx.tz).date(), result.rows)
    ctx.run.report.summary.update(result.summary)
    ctx.run.report.summary["export_path"] = str(path)
    ctx.run.report.summary["export_sha256"] = digest


JOB = JobSpec(
    id="device-compliance",
    title="Intune coverage, compliance, encryption, recovery keys, removable media",
    policy_section="device_compliance",
    policy_model=Policy,
    permissions=(dev.PERM_MANAGED_DEVICES, dev.PERM_CONFIGURATION, dev.PERM_DEVICES,
                 dev.PERM_BITLOCKER),
    changes_tenant=False,
    run=run,
)
