"""Builders for Graph-shaped JSON objects with deterministic ids.

Every builder returns a plain dict exactly as Graph would serve it (camelCase keys,
ISO 8601 timestamps with `Z`), plus relationship data in underscore keys that the
transport never serves (`_members`, `_assignments`, ...). Ids are uuid5 of a name, so the
same seed always yields the same tenant and tests can refer to objects by name.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

# Fixed namespace: ids stay stable across runs, machines and Python versions.
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "sandbox.dap-agent.invalid")

TENANT_ID = "5b7e2a1c-3c1f-4d1e-9a51-0d3f6c2b8e47"
TENANT_NAME = "Contoso Nederland"
DOMAIN = "contoso.nl"
EPOCH = datetime(2020, 1, 6, 9, 0, tzinfo=UTC)


def oid(name: str) -> str:
    """A deterministic object id (uuid5) for a name: `oid("user:anna@contoso.nl")`."""
    return str(uuid.uuid5(NAMESPACE, name))


def iso(value: datetime | None) -> str | None:
    """Graph's timestamp form: UTC, seconds precision, `Z` suffix (None stays None)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime: sandbox timestamps must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _split_name(display_name: str) -> tuple[str | None, str | None]:
    parts = display_name.split(" ", 1)
    return (parts[0], parts[1]) if len(parts) == 2 else (display_name, None)


def license_state(
    sku_id: str,
    *,
    assigned_by_group: str | None = None,
    state: str = "Active",
    error: str = "None",
    disabled_plans: Sequence[str] = (),
    updated: datetime | None = None,
) -> dict[str, Any]:
    """One `licenseAssignmentState` entry (direct when `assigned_by_group` is None)."""
    return {
        "assignedByGroup": assigned_by_group,
        "disabledPlans": list(disabled_plans),
        "error": error,
        "lastUpdatedDateTime": iso(updated or EPOCH),
        "skuId": sku_id,
        "state": state,
    }


def user(
    upn: str,
    display_name: str | None = None,
    *,
    licenses: Iterable[str] = (),
    license_states: Sequence[Mapping[str, Any]] | None = None,
    enabled: bool = True,
    leave: datetime | None = None,
    user_type: str = "Member",
    created: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A Graph `user`.

    `licenses`: SKU ids assigned directly (each an Active direct `licenseAssignmentState`).
    `license_states`: overrides the states, to model group-based (`assignedByGroup`) and
    failed (`state: "Error"`, `error: "CountViolation"`) assignments; entries are partial
    dicts (`{"skuId": ..., "assignedByGroup": gid}`) completed with defaults. Like Graph,
    `assignedLicenses` then lists the SKUs whose state is Active (unless `licenses` is
    given explicitly too). `extra` keys (camelCase) are set verbatim and win.
    """
    name = display_name or upn.split("@", 1)[0].replace(".", " ").title()
    given, surname = _split_name(name)
    sku_ids = list(dict.fromkeys(licenses))
    if license_states is None:
        states = [license_state(s, updated=created) for s in sku_ids]
    else:
        states = [{**license_state(str(s["skuId"]), updated=created), **s}
                  for s in license_states]
        if not sku_ids:
            sku_ids = list(dict.fromkeys(str(s["skuId"]) for s in states
                                         if s["state"] == "Active"))
    is_guest = user_type == "Guest"
    obj: dict[str, Any] = {
        "id": oid(f"user:{upn.lower()}"),
        "businessPhones": [],
        "displayName": name,
        "givenName": given,
        "jobTitle": None,
        "mail": None if is_guest else upn,
        "mobilePhone": None,
        "officeLocation": None,
        "preferredLanguage": "nl-NL",
        "surname": surname,
        "userPrincipalName": upn,
        "accountEnabled": enabled,
        "userType": user_type,
        "createdDateTime": iso(created or EPOCH),
        "employeeLeaveDateTime": iso(leave),
        "department": None,
        "companyName": None,
        "onPremisesSyncEnabled": None,
        "externalUserState": "Accepted" if is_guest else None,
        "assignedLicenses": [{"disabledPlans": [], "skuId": s} for s in sku_ids],
        "licenseAssignmentStates": states,
    }
    obj.update(extra)
    return obj


def deleted(obj: Mapping[str, Any], when: datetime,
            odata_type: str = "#microsoft.graph.user") -> dict[str, Any]:
    """A user (or group) as it sits in /directory/deletedItems after a soft delete."""
    return {"@odata.type": odata_type, **obj, "deletedDateTime": iso(when)}


def group(
    name: str,
    *,
    members: Iterable[str | Mapping[str, Any]] = (),
    role_assignable: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """A security group; `members` are ids or objects (users, groups, service principals)."""
    nickname = "".join(ch for ch in name.lower() if ch.isalnum()) or "group"
    obj: dict[str, Any] = {
        "id": oid(f"group:{name}"),
        "displayName": name,
        "description": None,
        "createdDateTime": iso(EPOCH),
        "groupTypes": [],
        "isAssignableToRole": role_assignable,
        "mail": None,
        "mailEnabled": False,
        "mailNickname": nickname,
        "securityEnabled": True,
        "visibility": "Private" if role_assignable else None,
        "_members": [m if isinstance(m, str) else str(m["id"]) for m in members],
    }
    obj.update(extra)
    return obj


def subscribed_sku(
    sku_id: str,
    part_number: str,
    enabled: int = 25,
    consumed: int = 0,
    *,
    service_plans: Sequence[tuple[str, str]] = (),
    capability_status: str = "Enabled",
    suspended: int = 0,
    warning: int = 0,
) -> dict[str, Any]:
    """A `subscribedSku` (shape of graph-reference/examples/subscribedsku-list.json).

    `service_plans`: (servicePlanId, servicePlanName) pairs.
    """
    return {
        "accountName": TENANT_NAME,
        "accountId": TENANT_ID,
        "appliesTo": "User",
        "capabilityStatus": capability_status,
        "consumedUnits": consumed,
        "id": f"{TENANT_ID}_{sku_id}",
        "prepaidUnits": {"enabled": enabled, "lockedOut": 0, "suspended": suspended,
                         "warning": warning},
        "servicePlans": [
            {"servicePlanId": pid, "servicePlanName": pname, "provisioningStatus": "Success",
             "appliesTo": "User"}
            for pid, pname in service_plans
        ],
        "skuId": sku_id,
        "skuPartNumber": part_number,
        "subscriptionIds": [oid(f"subscription:{part_number}")],
    }


def service_principal(name: str, **extra: Any) -> dict[str, Any]:
    """An enterprise application's service principal."""
    obj: dict[str, Any] = {
        "id": oid(f"servicePrincipal:{name}"),
        "appId": oid(f"application:{name}"),
        "displayName": name,
        "accountEnabled": True,
        "appOwnerOrganizationId": TENANT_ID,
        "servicePrincipalType": "Application",
        "servicePrincipalNames": [oid(f"application:{name}")],
        "tags": [],
    }
    obj.update(extra)
    return obj


# ---- Intune and Entra devices ------------------------------------------------------------

def managed_device(
    name: str,
    *,
    owner: Mapping[str, Any] | None = None,
    os: str = "Windows",
    os_version: str = "10.0.22631.4460",
    owner_type: str = "company",
    compliance: str = "compliant",
    encrypted: bool = True,
    last_sync: datetime | None = None,
    enrolled: datetime | None = None,
    azure_ad_device_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An Intune `managedDevice`; `owner` is the primary user's Graph object.

    `azure_ad_device_id` links it to the Entra `device` whose `deviceId` it is (by default
    the `deviceId` that `device(name)` gets).
    """
    obj: dict[str, Any] = {
        "@odata.type": "#microsoft.graph.managedDevice",
        "id": oid(f"managedDevice:{name}"),
        "userId": owner["id"] if owner else None,
        "deviceName": name,
        "managedDeviceOwnerType": owner_type,
        "enrolledDateTime": iso(enrolled or EPOCH),
        "lastSyncDateTime": iso(last_sync or EPOCH),
        "operatingSystem": os,
        "osVersion": os_version,
        "complianceState": compliance,
        "jailBroken": "Unknown",
        "managementAgent": "mdm",
        "managementState": "managed",
        "azureADRegistered": True,
        "deviceEnrollmentType": "windowsAzureADJoin" if os == "Windows" else "userEnrollment",
        "emailAddress": owner.get("mail") if owner else None,
        "azureADDeviceId": azure_ad_device_id or entra_device_id(name),
        "deviceRegistrationState": "registered",
        "isEncrypted": encrypted,
        "userPrincipalName": owner.get("userPrincipalName") if owner else None,
        "userDisplayName": owner.get("displayName") if owner else None,
        "model": "Latitude 7440" if os == "Windows" else None,
        "manufacturer": "Dell Inc." if os == "Windows" else None,
        "serialNumber": oid(f"serial:{name}")[:12].upper(),
        "complianceGracePeriodExpirationDateTime": "9999-12-31T23:59:59Z",
        "deviceActionResults": [],
    }
    obj.update(extra)
    return obj


def entra_device_id(name: str) -> str:
    """The Entra `deviceId` (not the object id) of the device called `name`."""
    return oid(f"deviceId:{name}")


def device(
    name: str,
    *,
    os: str = "Windows",
    os_version: str = "10.0.22631.4460",
    managed: bool = True,
    compliant: bool | None = True,
    trust_type: str = "AzureAd",
    last_sign_in: datetime | None = None,
    enabled: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """An Entra ID `device` (directory object; `deviceId` is what Intune and BitLocker use)."""
    obj: dict[str, Any] = {
        "id": oid(f"device:{name}"),
        "deviceId": entra_device_id(name),
        "displayName": name,
        "accountEnabled": enabled,
        "operatingSystem": os,
        "operatingSystemVersion": os_version,
        "isManaged": managed,
        "isCompliant": compliant if managed else None,
        "trustType": trust_type,
        "approximateLastSignInDateTime": iso(last_sign_in or EPOCH),
        "registrationDateTime": iso(EPOCH),
        "deviceOwnership": "Company",
        "profileType": "RegisteredDevice",
        "manufacturer": None,
        "model": None,
    }
    obj.update(extra)
    return obj


def recovery_key(device_name: str, *, volume: int = 1, created: datetime | None = None,
                 **extra: Any) -> dict[str, Any]:
    """A BitLocker recovery key escrowed for the Entra device `device_name`.

    `key` is stored but only ever served for a single key with `$select=key`.
    """
    key_id = oid(f"recoveryKey:{device_name}:{volume}")
    digits = str(uuid.UUID(key_id).int)[:48].ljust(48, "0")
    obj: dict[str, Any] = {
        "@odata.type": "#microsoft.graph.bitlockerRecoveryKey",
        "id": key_id,
        "createdDateTime": iso(created or EPOCH),
        "volumeType": str(volume),  # "1" operatingSystemVolume, "2" fixed, "3" removable
        "deviceId": entra_device_id(device_name),
        "key": "-".join(digits[i:i + 6] for i in range(0, 48, 6)),
    }
    obj.update(extra)
    return obj


# ---- Intune policies -----------------------------------------------------------------------

def assignment(policy_id: str, group_id: str | None = None, *, exclude: bool = False,
               all_devices: bool = False, all_users: bool = False) -> dict[str, Any]:
    """A policy assignment (`deviceConfigurationAssignment` and friends)."""
    if all_devices:
        target: dict[str, Any] = {"@odata.type": "#microsoft.graph.allDevicesAssignmentTarget"}
    elif all_users:
        target = {"@odata.type": "#microsoft.graph.allLicensedUsersAssignmentTarget"}
    else:
        kind = "exclusionGroupAssignmentTarget" if exclude else "groupAssignmentTarget"
        target = {"@odata.type": f"#microsoft.graph.{kind}", "groupId": group_id}
    suffix = "all-devices" if all_devices else "all-users" if all_users else group_id
    return {"id": f"{policy_id}_{suffix}", "target": target}


def device_configuration(
    name: str,
    odata_type: str = "windows10EndpointProtectionConfiguration",
    *,
    assignments: Sequence[Mapping[str, Any]] = (),
    **settings: Any,
) -> dict[str, Any]:
    """A `deviceConfiguration` of a derived type; `settings` are its own properties
    (e.g. `bitLockerRemovableDrivePolicy={"requireEncryptionForWriteAccess": True, ...}`)."""
    config_id = oid(f"deviceConfiguration:{name}")
    obj: dict[str, Any] = {
        "@odata.type": f"#microsoft.graph.{odata_type}",
        "id": config_id,
        "displayName": name,
        "description": None,
        "createdDateTime": iso(EPOCH),
        "lastModifiedDateTime": iso(EPOCH),
        "version": 1,
        "_assignments": [dict(a) for a in assignments],
    }
    obj.update(settings)
    return obj


def compliance_policy(
    name: str,
    odata_type: str = "windows10CompliancePolicy",
    *,
    assignments: Sequence[Mapping[str, Any]] = (),
    device_statuses: Sequence[Mapping[str, Any]] = (),
    **settings: Any,
) -> dict[str, Any]:
    """A `deviceCompliancePolicy`; `device_statuses` are `deviceComplianceDeviceStatus` dicts."""
    policy_id = oid(f"deviceCompliancePolicy:{name}")
    obj: dict[str, Any] = {
        "@odata.type": f"#microsoft.graph.{odata_type}",
        "id": policy_id,
        "displayName": name,
        "description": None,
        "createdDateTime": iso(EPOCH),
        "lastModifiedDateTime": iso(EPOCH),
        "version": 1,
        "_assignments": [dict(a) for a in assignments],
        "_deviceStatuses": [dict(s) for s in device_statuses],
    }
    obj.update(settings)
    return obj


def compliance_device_status(managed: Mapping[str, Any], status: str = "compliant",
                             *, reported: datetime | None = None) -> dict[str, Any]:
    """A `deviceComplianceDeviceStatus` row for a managed device."""
    return {
        "@odata.type": "#microsoft.graph.deviceComplianceDeviceStatus",
        "id": oid(f"deviceStatus:{managed['id']}:{status}"),
        "deviceDisplayName": managed.get("deviceName"),
        "userName": managed.get("userDisplayName"),
        "deviceModel": managed.get("model"),
        "complianceGracePeriodExpirationDateTime": "9999-12-31T23:59:59Z",
        "status": status,
        "lastReportedDateTime": iso(reported or EPOCH),
        "userPrincipalName": managed.get("userPrincipalName"),
    }


def configuration_policy(
    name: str,
    *,
    settings: Sequence[Mapping[str, Any]] = (),
    assignments: Sequence[Mapping[str, Any]] = (),
    platforms: str = "windows10",
    technologies: str = "mdm",
    template_family: str = "none",
) -> dict[str, Any]:
    """A settings-catalog `deviceManagementConfigurationPolicy` (Graph beta only).

    `settings` are `deviceManagementConfigurationSetting` dicts, see `catalog_setting`.
    """
    policy_id = oid(f"configurationPolicy:{name}")
    return {
        "id": policy_id,
        "name": name,
        "description": "",
        "platforms": platforms,
        "technologies": technologies,
        "createdDateTime": iso(EPOCH),
        "lastModifiedDateTime": iso(EPOCH),
        "settingCount": len(settings),
        "creationSource": None,
        "roleScopeTagIds": ["0"],
        "isAssigned": bool(assignments),
        "templateReference": {"templateId": "", "templateFamily": template_family,
                              "templateDisplayName": None, "templateDisplayVersion": None},
        "_settings": [dict(s) for s in settings],
        "_assignments": [dict(a) for a in assignments],
    }


def catalog_setting(definition_id: str, value: str | int, *, index: int = 0) -> dict[str, Any]:
    """One settings-catalog setting: a choice (str value id) or an integer simple setting."""
    if isinstance(value, int):
        instance: dict[str, Any] = {
            "@odata.type": "#microsoft.graph.deviceManagementConfigurationSimpleSettingInstance",
            "settingDefinitionId": definition_id,
            "settingInstanceTemplateReference": None,
            "simpleSettingValue": {
                "@odata.type": "#microsoft.graph.deviceManagementConfigurationIntegerSettingValue",
                "settingValueTemplateReference": None,
                "value": value,
            },
        }
    else:
        instance = {
            "@odata.type": "#microsoft.graph.deviceManagementConfigurationChoiceSettingInstance",
            "settingDefinitionId": definition_id,
            "settingInstanceTemplateReference": None,
            "choiceSettingValue": {
                "settingValueTemplateReference": None,
                "value": value,
                "children": [],
            },
        }
    return {"id": str(index), "settingInstance": instance}


# ---- directory roles -------------------------------------------------------------------------

# Built-in role template ids (they equal the roleDefinition ids in every tenant).
ROLE_TEMPLATES: dict[str, str] = {
    "Global Administrator": "62e90394-69f5-4237-9190-012177145e10",
    "Privileged Role Administrator": "e8611ab8-c189-46e8-94e1-60213ab1f814",
    "Privileged Authentication Administrator": "7be44c8a-adaf-4e2a-84d6-ab2649e08a13",
    "Security Administrator": "194ae4cb-b126-40b2-bd5b-6091b380977d",
    "Exchange Administrator": "29232cdf-9323-42fd-ade2-1d097af3e4de",
    "SharePoint Administrator": "f28a1f50-f6e7-4571-818b-6a12f2af6b6c",
    "User Administrator": "fe930be7-5e62-47db-91af-98c3a49a38b1",
    "Intune Administrator": "3a2c62db-5318-420d-8d74-23affee5d9d5",
    "Conditional Access Administrator": "b1be1c3e-b65d-4f19-8427-f6fa0d97feb9",
    "Application Administrator": "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3",
    "Cloud Application Administrator": "158c047a-c907-4556-b7ef-446551a6b5f7",
    "Authentication Administrator": "c4e39bd9-1100-46d3-8c65-fb160da0071f",
    "Helpdesk Administrator": "729827e3-9c14-49f7-bb1b-9608f156bbb8",
    "Billing Administrator": "b0f54661-2d74-4c50-afa3-1ec803f12efe",
    "License Administrator": "4d6ac14f-3453-41d0-bef9-a3e0c569773a",
    "Groups Administrator": "fdd7a751-b60b-444a-984c-02652fe8fa1c",
    "Compliance Administrator": "17315797-102d-40b4-93e0-432062caca18",
    "Global Reader": "f2ef992c-3afb-46b9-b7cf-a126ee74c451",
    "Security Reader": "5d6b6bb7-de71-4623-b4af-96380a352509",
    "Service Support Administrator": "f023fd81-a637-4b56-95fd-791ac0226033",
    "Directory Readers": "88d8e3e3-8f55-4a1e-953a-9b9898b8876b",
}


def role_definition(display_name: str, *, description: str = "",
                    template_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """A built-in `unifiedRoleDefinition` (id = templateId, as for built-in roles)."""
    tid = template_id or ROLE_TEMPLATES.get(display_name) or oid(f"role:{display_name}")
    obj: dict[str, Any] = {
        "id": tid,
        "description": description or f"Built-in role: {display_name}.",
        "displayName": display_name,
        "isBuiltIn": template_id is None and display_name in ROLE_TEMPLATES,
        "isEnabled": True,
        "templateId": tid,
        "version": "1",
        "rolePermissions": [{"allowedResourceActions": [], "condition": None}],
        "inheritsPermissionsFrom": [],
    }
    obj.update(extra)
    return obj


def _role_id(role: str) -> str:
    """A role display name or an id -> the roleDefinitionId."""
    return ROLE_TEMPLATES.get(role, role)


def role_assignment(principal_id: str, role: str, *, scope: str = "/",
                    **extra: Any) -> dict[str, Any]:
    """An active `unifiedRoleAssignment` (what /roleAssignments lists)."""
    role_id = _role_id(role)
    obj: dict[str, Any] = {
        "id": oid(f"roleAssignment:{principal_id}:{role_id}:{scope}"),
        "principalId": principal_id,
        "resourceScope": scope,
        "directoryScopeId": scope,
        "roleDefinitionId": role_id,
    }
    obj.update(extra)
    return obj


def role_assignment_instance(
    principal_id: str,
    role: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    assignment_type: str = "Assigned",
    member_type: str = "Direct",
    scope: str = "/",
    **extra: Any,
) -> dict[str, Any]:
    """A `unifiedRoleAssignmentScheduleInstance` (active; `end=None` is permanent).

    `assignment_type`: "Assigned" (permanent/time-bound active) or "Activated" (a PIM
    activation of an eligible assignment).
    """
    role_id = _role_id(role)
    ident = oid(f"roleAssignmentScheduleInstance:{principal_id}:{role_id}:{scope}")
    obj: dict[str, Any] = {
        "id": ident,
        "principalId": principal_id,
        "roleDefinitionId": role_id,
        "directoryScopeId": scope,
        "appScopeId": None,
        "startDateTime": iso(start),
        "endDateTime": iso(end),
        "assignmentType": assignment_type,
        "memberType": member_type,
        "roleAssignmentOriginId": ident,
        "roleAssignmentScheduleId": ident,
    }
    obj.update(extra)
    return obj


def role_eligibility_instance(
    principal_id: str,
    role: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    member_type: str = "Direct",
    scope: str = "/",
    **extra: Any,
) -> dict[str, Any]:
    """A `unifiedRoleEligibilityScheduleInstance` (`end=None`: eligible without end)."""
    role_id = _role_id(role)
    obj: dict[str, Any] = {
        "id": oid(f"roleEligibilityScheduleInstance:{principal_id}:{role_id}:{scope}"),
        "principalId": principal_id,
        "roleDefinitionId": role_id,
        "directoryScopeId": scope,
        "appScopeId": None,
        "startDateTime": iso(start),
        "endDateTime": iso(end),
        "memberType": member_type,
        "roleEligibilityScheduleId": oid(f"roleEligibilitySchedule:{principal_id}:{role_id}"),
    }
    obj.update(extra)
    return obj


def registration_details(
    person: Mapping[str, Any],
    *,
    mfa: bool = True,
    methods: Sequence[str] | None = None,
    is_admin: bool = False,
    updated: datetime | None = None,
) -> dict[str, Any]:
    """A `userRegistrationDetails` row for a user (id = the user's id)."""
    registered = list(methods) if methods is not None else (
        ["microsoftAuthenticatorPush", "softwareOneTimePasscode"] if mfa else [])
    return {
        "id": person["id"],
        "userPrincipalName": person["userPrincipalName"],
        "userDisplayName": person.get("displayName"),
        "isAdmin": is_admin,
        "isSsprRegistered": mfa,
        "isSsprEnabled": False,
        "isSsprCapable": False,
        "isMfaRegistered": mfa,
        "isMfaCapable": mfa,
        "isPasswordlessCapable": False,
        "lastUpdatedDateTime": iso(updated or EPOCH),
        "methodsRegistered": registered,
        "isSystemPreferredAuthenticationMethodEnabled": True,
        "systemPreferredAuthenticationMethods": ["push"] if mfa else [],
        "userPreferredMethodForSecondaryAuthentication": "push" if mfa else "",
        "userType": "guest" if person.get("userType") == "Guest" else "member",
    }
