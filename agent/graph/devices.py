"""Intune, Entra and BitLocker reads for the device-compliance job.

One paged pass per collection, each with `$select` and the endpoint's largest page size,
mapped page by page into small frozen models (a 100,000-device tenant never holds its raw
JSON all at once). The job joins them in memory by id; nothing here asks per device.

What Graph v1.0 offers, and what we chose (see the job's module docstring too):
- `/deviceManagement/managedDevices`: `$top` 1000 (Microsoft's stated default limit; no
  documented maximum), no `$count`: Microsoft documents no meaning of `@odata.count` for
  Intune lists and tenants have answered with a page-sized count. Intune has been seen to
  end a device list early without a next link, so the completeness guard stands on
  documented ground instead: `/deviceManagement/managedDeviceOverview` (same permission)
  counts the MDM-enrolled devices (`mdmEnrolledCount`), every one of which is a managed
  device; a list holding fewer raises `GraphDataError`: a truncated list must fail the
  run, never look like a clean tenant. (The overview is read first: a device enrolled
  while the list is read only makes the list longer; one removed meanwhile, rare, makes
  the run fail and the next one pass.)
- `/devices`: `$top` 999, `$count=true` (+ ConsistencyLevel: eventual, which the client
  sends with `count`), same completeness check: a truncated list would hide unmanaged
  devices.
- `/informationProtection/bitlocker/recoveryKeys`: no `$top` (the endpoint rejects it);
  `$select` never names `key`: the job proves escrow, it never reads a recovery key.
- `/deviceManagement/deviceConfigurations?$expand=assignments`: no `$select`, because the
  removable-drive setting is a property of the derived type
  windows10EndpointProtectionConfiguration, which a `$select` on the base collection
  cannot name; a tenant has tens of configurations, not thousands.
- `/deviceManagement/deviceCompliancePolicies` (+ `/{id}/deviceStatuses` for the policies
  the job names as Linux encryption evidence). A device status carries no device id
  field: its `id` is an undocumented composite `<guid>_<policyId>_<guid>`, so it is joined
  on whichever part is a managed-device id we read, else on a unique device name.
- Settings-catalog and endpoint-security (disk encryption) policies live only under
  `/beta/deviceManagement/configurationPolicies` (and Linux compliance policies under
  `/beta/deviceManagement/compliancePolicies`); v1.0 has no route for them. The one beta
  read here (`catalog_policies`) is behind the job's `check_settings_catalog` key, so a
  tenant that wants v1.0 only can turn it off (the finding then says what was not read).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from agent.errors import GraphDataError
from agent.graph.client import GraphClient

PERM_MANAGED_DEVICES = "DeviceManagementManagedDevices.Read.All"
PERM_CONFIGURATION = "DeviceManagementConfiguration.Read.All"
PERM_DEVICES = "Device.Read.All"
PERM_BITLOCKER = "BitlockerKey.ReadBasic.All"

MANAGED_DEVICES_PATH = "/deviceManagement/managedDevices"
MANAGED_OVERVIEW_PATH = "/deviceManagement/managedDeviceOverview"
DEVICES_PATH = "/devices"
RECOVERY_KEYS_PATH = "/informationProtection/bitlocker/recoveryKeys"
CONFIGURATIONS_PATH = "/deviceManagement/deviceConfigurations"
COMPLIANCE_POLICIES_PATH = "/deviceManagement/deviceCompliancePolicies"

MANAGED_DEVICES_TOP = 1000
DEVICES_TOP = 999

MANAGED_DEVICE_SELECT = (
    "id", "deviceName", "azureADDeviceId", "operatingSystem", "osVersion", "complianceState",
    "complianceGracePeriodExpirationDateTime", "isEncrypted", "lastSyncDateTime", "model",
    "manufacturer", "managedDeviceOwnerType", "userPrincipalName", "managementState",
)
DEVICE_SELECT = (
    "id", "deviceId", "displayName", "operatingSystem", "operatingSystemVersion",
    "accountEnabled", "approximateLastSignInDateTime", "registrationDateTime", "trustType",
    "isManaged", "profileType",
)
# never "key": listing does not return it, and this job must not read recovery keys
RECOVERY_KEY_SELECT = ("id", "createdDateTime", "deviceId", "volumeType")
COMPLIANCE_POLICY_SELECT = ("id", "displayName")
DEVICE_STATUS_SELECT = ("id", "deviceDisplayName", "status", "lastReportedDateTime")

Platform = Literal["windows", "linux", "macos", "ios", "android", "other"]
Volume = Literal["os", "fixed", "removable", "unknown"]

ENDPOINT_PROTECTION_TYPE = "#microsoft.graph.windows10EndpointProtectionConfiguration"


# ---- models ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ManagedDevice:
    id: str
    name: str
    azure_ad_device_id: str | None
    operating_system: str
    os_version: str | None
    platform: Platform
    compliance_state: str
    grace_expires: datetime | None
    is_encrypted: bool | None
    last_sync: datetime | None
    model: str | None
    manufacturer: str | None
    owner_type: str | None
    user_principal_name: str | None
    management_state: str | None


@dataclass(frozen=True, slots=True)
class EntraDevice:
    id: str  # directory object id
    device_id: str | None  # what Intune (azureADDeviceId) and BitLocker (deviceId) use
    name: str
    operating_system: str
    os_version: str | None
    platform: Platform
    enabled: bool
    last_sign_in: datetime | None
    registered: datetime | None
    trust_type: str | None
    is_managed: bool | None  # Entra's own flag; Intune's list is the truth
    profile_type: str | None


@dataclass(frozen=True, slots=True)
class RecoveryKey:
    id: str
    device_id: str | None
    volume: Volume
    created: datetime | None


@dataclass(frozen=True, slots=True)
class AssignmentTarget:
    kind: str  # group, exclusionGroup, allDevices, allLicensedUsers, or the raw type name
    group_id: str | None = None

    @property
    def includes(self) -> bool:
        return not self.kind.startswith("exclusion")


@dataclass(frozen=True, slots=True)
class RemovableDrivePolicy:
    require_encryption_for_write_access: bool
    block_cross_organization_write_access: bool
    encryption_method: str | None


@dataclass(frozen=True, slots=True)
class DeviceConfiguration:
    id: str
    name: str
    odata_type: str
    removable_drive: RemovableDrivePolicy | None
    assignments: tuple[AssignmentTarget, ...]

    @property
    def is_endpoint_protection(self) -> bool:
        return self.odata_type == ENDPOINT_PROTECTION_TYPE

    @property
    def assigned(self) -> bool:
        return any(t.includes for t in self.assignments)


@dataclass(frozen=True, slots=True)
class CatalogPolicy:
    """A settings-catalog / endpoint-security policy (Graph beta `configurationPolicies`)."""

    id: str
    name: str
    platforms: str
    removable_deny: bool | None  # the removable-drive setting: None = not in the policy
    assignments: tuple[AssignmentTarget, ...]

    @property
    def assigned(self) -> bool:
        return any(t.includes for t in self.assignments)


@dataclass(frozen=True, slots=True)
class CompliancePolicy:
    id: str
    name: str
    odata_type: str | None


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """One row of a compliance policy's per-device status."""

    id: str
    policy_id: str
    device_name: str | None
    status: str  # complianceStatus: compliant, nonCompliant, error, conflict, unknown, ...
    last_reported: datetime | None


@dataclass(frozen=True, slots=True)
class Completeness:
    """Rows read against what Graph says the collection holds.

    `source` names that figure: "@odata.count" (the whole collection: the directory's
    documented count) or "managedDeviceOverview.mdmEnrolledCount" (a lower bound: Intune
    lists other devices too, e.g. Exchange-only ones)."""

    collection: str
    read: int
    reported: int | None
    source: str = "@odata.count"

    @property
    def lower_bound(self) -> bool:
        return self.source != "@odata.count"

    @property
    def verified(self) -> bool:
        if self.reported is None:
            return False
        return self.read >= self.reported if self.lower_bound else self.read == self.reported


# ---- parsing helpers -------------------------------------------------------------------

def parse_time(value: Any) -> datetime | None:
    """Graph's DateTimeOffset (7 fractional digits, any offset) as aware UTC; None if absent.

    Graph's "never" values (0001-01-01, 9999-12-31) survive: the far future clamps to
    datetime.max instead of overflowing when an offset pushes it past year 9999.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC) if moment.year > 9000 else \
            datetime.min.replace(tzinfo=UTC)


def platform_of(operating_system: str | None) -> Platform:
    """Intune and Entra spell platforms differently ("MacMDM", "iPadOS", "AndroidForWork")."""
    name = (operating_system or "").strip().lower()
    if name.startswith("windows"):
        return "windows"
    if name.startswith(("ios", "ipados", "ipad", "iphone")):
        return "ios"
    if name.startswith("android"):
        return "android"
    if name.startswith(("mac", "osx")):
        return "macos"
    if name.startswith(("linux", "ubuntu", "redhat", "rhel")):
        return "linux"
    return "other"


def volume_of(value: Any) -> Volume:
    """volumeType arrives as the enum name or as its number, sometimes as a string ("1")."""
    text = str(value).strip() if value is not None else ""
    if text in ("1", "operatingSystemVolume"):
        return "os"
    if text in ("2", "fixedDataVolume"):
        return "fixed"
    if text in ("3", "removableDataVolume"):
        return "removable"
    return "unknown"


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _word(value: Any) -> str | None:
    """A categorical string (OS, state, model): interned, 100,000 devices share a few."""
    return sys.intern(value) if isinstance(value, str) and value else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _required_id(raw: Mapping[str, Any], collection: str) -> str:
    value = raw.get("id")
    if not isinstance(value, str) or not value:
        raise GraphDataError(f"GET {collection}: an item has no id")
    return value


def managed_device_from(raw: Mapping[str, Any]) -> ManagedDevice:
    os_name = _word(raw.get("operatingSystem")) or ""
    aad = _str(raw.get("azureADDeviceId"))
    if aad is not None and aad.strip("0-") == "":
        aad = None  # Intune writes the all-zero GUID for devices without an Entra identity
    return ManagedDevice(
        id=_required_id(raw, MANAGED_DEVICES_PATH),
        name=_str(raw.get("deviceName")) or "",
        azure_ad_device_id=aad.lower() if aad else None,
        operating_system=os_name,
        os_version=_word(raw.get("osVersion")),
        platform=platform_of(os_name),
        compliance_state=_word(raw.get("complianceState")) or "unknown",
        grace_expires=parse_time(raw.get("complianceGracePeriodExpirationDateTime")),
        is_encrypted=_bool(raw.get("isEncrypted")),
        last_sync=parse_time(raw.get("lastSyncDateTime")),
        model=_word(raw.get("model")),
        manufacturer=_word(raw.get("manufacturer")),
        owner_type=_word(raw.get("managedDeviceOwnerType")),
        user_principal_name=_str(raw.get("userPrincipalName")),
        management_state=_word(raw.get("managementState")),
    )


def entra_device_from(raw: Mapping[str, Any]) -> EntraDevice:
    os_name = _word(raw.get("operatingSystem")) or ""
    device_id = _str(raw.get("deviceId"))
    return EntraDevice(
        id=_required_id(raw, DEVICES_PATH),
        device_id=device_id.lower() if device_id else None,
        name=_str(raw.get("displayName")) or "",
        operating_system=os_name,
        os_version=_word(raw.get("operatingSystemVersion")),
        platform=platform_of(os_name),
        enabled=raw.get("accountEnabled") is not False,
        last_sign_in=parse_time(raw.get("approximateLastSignInDateTime")),
        registered=parse_time(raw.get("registrationDateTime")),
        trust_type=_word(raw.get("trustType")),
        is_managed=_bool(raw.get("isManaged")),
        profile_type=_word(raw.get("profileType")),
    )


def recovery_key_from(raw: Mapping[str, Any]) -> RecoveryKey:
    device_id = _str(raw.get("deviceId"))
    return RecoveryKey(
        id=_required_id(raw, RECOVERY_KEYS_PATH),
        device_id=device_id.lower() if device_id else None,
        volume=volume_of(raw.get("volumeType")),
        created=parse_time(raw.get("createdDateTime")),
    )


def assignment_target_from(raw: Mapping[str, Any]) -> AssignmentTarget:
    target = raw.get("target")
    target = target if isinstance(target, Mapping) else {}
    odata = str(target.get("@odata.type") or "").rsplit(".", 1)[-1]
    kind = {
        "groupAssignmentTarget": "group",
        "exclusionGroupAssignmentTarget": "exclusionGroup",
        "allDevicesAssignmentTarget": "allDevices",
        "allLicensedUsersAssignmentTarget": "allLicensedUsers",
    }.get(odata, odata or "unknown")
    return AssignmentTarget(kind=kind, group_id=_str(target.get("groupId")))


def device_configuration_from(raw: Mapping[str, Any]) -> DeviceConfiguration:
    policy = raw.get("bitLockerRemovableDrivePolicy")
    removable = None
    if isinstance(policy, Mapping):
        removable = RemovableDrivePolicy(
            require_encryption_for_write_access=policy.get("requireEncryptionForWriteAccess")
            is True,
            block_cross_organization_write_access=policy.get(
                "blockCrossOrganizationWriteAccess") is True,
            encryption_method=_str(policy.get("encryptionMethod")),
        )
    assignments = raw.get("assignments")
    targets = tuple(assignment_target_from(a) for a in assignments
                    if isinstance(a, Mapping)) if isinstance(assignments, list) else ()
    return DeviceConfiguration(
        id=_required_id(raw, CONFIGURATIONS_PATH),
        name=_str(raw.get("displayName")) or "",
        odata_type=_str(raw.get("@odata.type")) or "",
        removable_drive=removable,
        assignments=targets,
    )


# BitLocker CSP RemovableDrivesRequireEncryption ("Deny write access to removable drives
# not protected by BitLocker") as settings catalog and endpoint security name it.
REMOVABLE_DENY_SETTING = "device_vendor_msft_bitlocker_removabledrivesrequireencryption"


def catalog_policy_from(raw: Mapping[str, Any],
                        settings: Iterable[Any] | None = None) -> CatalogPolicy:
    """A settings-catalog policy read with `$expand=assignments`; `settings` from its own
    paged list (default: an inline `settings` list, as a single GET may carry)."""
    deny: bool | None = None
    if settings is None:
        inline = raw.get("settings")
        settings = inline if isinstance(inline, list) else ()
    for setting in settings:
        instance = setting.get("settingInstance") if isinstance(setting, Mapping) else None
        if not isinstance(instance, Mapping) or \
                instance.get("settingDefinitionId") != REMOVABLE_DENY_SETTING:
            continue
        choice = instance.get("choiceSettingValue")
        value = str(choice.get("value") if isinstance(choice, Mapping) else "")
        # the choice is "<definition>_1" (enabled) or "_0"; accept a bare "1" too
        deny = value.rsplit("_", 1)[-1] == "1"
    assignments = raw.get("assignments")
    targets = tuple(assignment_target_from(a) for a in assignments
                    if isinstance(a, Mapping)) if isinstance(assignments, list) else ()
    return CatalogPolicy(id=_required_id(raw, "/deviceManagement/configurationPolicies"),
                         name=_str(raw.get("name")) or "",
                         platforms=_str(raw.get("platforms")) or "",
                         removable_deny=deny, assignments=targets)


def device_status_from(raw: Mapping[str, Any], policy_id: str) -> DeviceStatus:
    return DeviceStatus(
        id=_required_id(raw, f"{COMPLIANCE_POLICIES_PATH}/{{id}}/deviceStatuses"),
        policy_id=policy_id,
        device_name=_str(raw.get("deviceDisplayName")),
        status=_str(raw.get("status")) or "unknown",
        last_reported=parse_time(raw.get("lastReportedDateTime")),
    )


def status_device_id(status: DeviceStatus, known: Set[str]) -> str | None:
    """The managed-device id inside a device status's composite id, if any part is one."""
    if status.id in known:
        return status.id
    for part in status.id.split("_"):
        if part in known:
            return part
    return None


# ---- reads -----------------------------------------------------------------------------

async def managed_devices(graph: GraphClient) -> tuple[list[ManagedDevice], Completeness]:
    """Every Intune managed device; raises GraphDataError when the list comes back short
    of Intune's own count of MDM-enrolled devices."""
    # learn.microsoft.com/graph/api/intune-devices-manageddeviceoverview-get
    overview = await graph.get(MANAGED_OVERVIEW_PATH, permission=PERM_MANAGED_DEVICES)
    enrolled = overview.get("mdmEnrolledCount")
    devices: list[ManagedDevice] = []
    async for page, _ in graph.iter_pages(
            MANAGED_DEVICES_PATH, permission=PERM_MANAGED_DEVICES,
            select=MANAGED_DEVICE_SELECT, top=MANAGED_DEVICES_TOP):
        devices.extend(managed_device_from(raw) for raw in page)
    completeness = Completeness(
        "managedDevices", len(devices),
        enrolled if isinstance(enrolled, int) and not isinstance(enrolled, bool) else None,
        source="managedDeviceOverview.mdmEnrolledCount")
    _check_complete(completeness, MANAGED_DEVICES_PATH)
    return devices, completeness


async def entra_devices(graph: GraphClient) -> tuple[list[EntraDevice], Completeness]:
    """Every Entra ID device registration; same completeness rule as managed devices."""
    devices: list[EntraDevice] = []
    reported: int | None = None
    first = True
    async for page, count in graph.iter_pages(
            DEVICES_PATH, permission=PERM_DEVICES, select=DEVICE_SELECT, top=DEVICES_TOP,
            count=True):
        if first:
            reported, first = count, False
        devices.extend(entra_device_from(raw) for raw in page)
    completeness = Completeness("devices", len(devices), reported)
    _check_complete(completeness, DEVICES_PATH)
    return devices, completeness


def _check_complete(completeness: Completeness, path: str) -> None:
    if completeness.reported is None or completeness.verified:
        return
    what = (f"Intune counts {completeness.reported} MDM-enrolled devices "
            f"({MANAGED_OVERVIEW_PATH})" if completeness.lower_bound else
            f"Graph reported {completeness.reported} objects (@odata.count)")
    raise GraphDataError(
        f"GET {path}: {what} but the pages held {completeness.read}: the list is "
        "incomplete, so no result of this run can be trusted; run again later")


async def recovery_keys(graph: GraphClient) -> list[RecoveryKey]:
    """Metadata of every escrowed BitLocker key (never the key itself)."""
    keys: list[RecoveryKey] = []
    async for page, _ in graph.iter_pages(RECOVERY_KEYS_PATH, permission=PERM_BITLOCKER,
                                          select=RECOVERY_KEY_SELECT):
        keys.extend(recovery_key_from(raw) for raw in page)
    return keys


async def device_configurations(graph: GraphClient) -> list[DeviceConfiguration]:
    """Device configuration profiles with their assignments (one `$expand`ed pass)."""
    configs: list[DeviceConfiguration] = []
    async for page, _ in graph.iter_pages(CONFIGURATIONS_PATH, permission=PERM_CONFIGURATION,
                                          params={"$expand": "assignments"}):
        configs.extend(device_configuration_from(raw) for raw in page)
    return configs


CATALOG_POLICIES_PATH = "/deviceManagement/configurationPolicies"


async def catalog_policies(graph: GraphClient) -> list[CatalogPolicy]:
    """Settings-catalog / endpoint-security policies with settings and assignments (beta).

    `$expand=settings` inlines only the first settings of a policy, with no next link to
    the rest: a large endpoint-security policy came back cut short (and its removable-drive
    setting missed). So settings are read from each Windows policy's own paged list,
    `/configurationPolicies/{id}/settings`, to its last next link; policies of other
    platforms cannot hold the BitLocker setting and cost no request.
    """
    listed: list[dict[str, Any]] = []
    async for page, _ in graph.iter_pages(CATALOG_POLICIES_PATH, permission=PERM_CONFIGURATION,
                                          select=("id", "name", "platforms"),
                                          params={"$expand": "assignments"},
                                          version="beta"):
        listed.extend(raw for raw in page if isinstance(raw, dict))
    policies: list[CatalogPolicy] = []
    for raw in listed:
        policy_id = _required_id(raw, CATALOG_POLICIES_PATH)
        settings: list[Any] = []
        if _is_windows(raw.get("platforms")):
            async for page, _ in graph.iter_pages(
                    f"{CATALOG_POLICIES_PATH}/{policy_id}/settings",
                    permission=PERM_CONFIGURATION, version="beta"):
                settings.extend(page)
        policies.append(catalog_policy_from(raw, settings))
    return policies


def _is_windows(platforms: Any) -> bool:
    """deviceManagementConfigurationPlatforms is a flags enum ("windows10, macOS")."""
    return "windows" in str(platforms or "").casefold()


async def compliance_policies(graph: GraphClient) -> list[CompliancePolicy]:
    policies: list[CompliancePolicy] = []
    async for page, _ in graph.iter_pages(COMPLIANCE_POLICIES_PATH,
                                          permission=PERM_CONFIGURATION,
                                          select=COMPLIANCE_POLICY_SELECT):
        policies.extend(
            CompliancePolicy(id=_required_id(raw, COMPLIANCE_POLICIES_PATH),
                             name=_str(raw.get("displayName")) or "",
                             odata_type=_str(raw.get("@odata.type")))
            for raw in page)
    return policies


async def device_statuses(graph: GraphClient, policy_id: str) -> list[DeviceStatus]:
    """One compliance policy's per-device status rows (one paged pass per policy)."""
    rows: list[DeviceStatus] = []
    async for page, _ in graph.iter_pages(
            f"{COMPLIANCE_POLICIES_PATH}/{policy_id}/deviceStatuses",
            permission=PERM_CONFIGURATION, select=DEVICE_STATUS_SELECT):
        rows.extend(device_status_from(raw, policy_id) for raw in page)
    return rows
