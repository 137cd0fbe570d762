"""The sandbox's endpoint table: path, method, the application permissions that allow it
(any one, like Graph's permission tables), and for lists how they page and filter.

FILTERABLE is the one table of what `$filter` each list accepts: property -> operators.
Anything else gets Graph's 400. Directory lists accept `ne`, `not` and `endswith` only as
advanced queries (ConsistencyLevel: eventual and $count=true); the directory has no
`lt`/`gt`. To let a job filter on something more, extend this table (ask the lead).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from agent.sandbox import handlers as h
from agent.sandbox import mail
from agent.sandbox.listing import ListSpec

_EQ = frozenset({"eq", "in"})
_STR = frozenset({"eq", "in", "ne", "not", "startswith"})  # directory strings
_STR_END = _STR | {"endswith", "ge", "le"}
_BOOL = frozenset({"eq", "ne", "not", "in"})
_DATE = frozenset({"eq", "ne", "not", "in", "ge", "le"})  # directory: no lt/gt
_INTUNE = frozenset({"eq", "ne", "in"})
_INTUNE_STR = _INTUNE | {"startswith"}
_INTUNE_DATE = frozenset({"eq", "ne", "lt", "le", "gt", "ge"})

FILTERABLE: dict[str, dict[str, frozenset[str]]] = {
    "users": {
        "id": _EQ,
        "userPrincipalName": _STR_END,
        "mail": _STR_END,
        "displayName": _STR | {"ge", "le"},
        "accountEnabled": _BOOL,
        "userType": _STR,
        "department": _STR,
        "employeeLeaveDateTime": _DATE,
        "createdDateTime": _DATE,
        "assignedLicenses": frozenset({"any", "not"}),
        "assignedLicenses/skuId": frozenset({"eq"}),
    },
    "groups": {
        "id": _EQ,
        "displayName": _STR | {"ge", "le"},
        "mailNickname": _STR,
        "securityEnabled": _BOOL,
        "isAssignableToRole": _BOOL,
    },
    "members": {  # /groups/{id}/members and transitiveMembers
        "id": _EQ,
        "displayName": _STR,
        "userPrincipalName": _STR,
        "accountEnabled": _BOOL,
        "userType": _STR,
    },
    "deletedUsers": {
        "id": _EQ,
        "userPrincipalName": _STR,
        "displayName": _STR,
        "deletedDateTime": _DATE,
    },
    "devices": {
        "id": _EQ,
        "deviceId": _EQ,
        "displayName": _STR,
        "operatingSystem": _STR,
        "accountEnabled": _BOOL,
        "trustType": _STR,
        "isManaged": _BOOL,
        "approximateLastSignInDateTime": _DATE,
    },
    "servicePrincipals": {
        "id": _EQ,
        "appId": _EQ,
        "displayName": _STR,
        "servicePrincipalType": _STR,
    },
    "subscribedSkus": {},
    "managedDevices": {
        "id": _INTUNE,
        "userId": _INTUNE,
        "userPrincipalName": _INTUNE_STR,
        "deviceName": _INTUNE_STR,
        "operatingSystem": _INTUNE_STR,
        "complianceState": _INTUNE,
        "managedDeviceOwnerType": _INTUNE,
        "managementState": _INTUNE,
        "azureADDeviceId": _INTUNE,
        "isEncrypted": _INTUNE,
        "lastSyncDateTime": _INTUNE_DATE,
    },
    "recoveryKeys": {"deviceId": frozenset({"eq"})},
    "deviceConfigurations": {"id": _INTUNE, "displayName": _INTUNE_STR},
    "deviceCompliancePolicies": {"id": _INTUNE, "displayName": _INTUNE_STR},
    "configurationPolicies": {"id": _INTUNE, "name": _INTUNE_STR, "platforms": _INTUNE,
                              "technologies": _INTUNE},
    "policyRelations": {},  # assignments, settings, deviceStatuses
    "roleDefinitions": {"id": _EQ, "displayName": _EQ, "templateId": _EQ,
                        "isBuiltIn": frozenset({"eq"})},
    "roleAssignments": {"id": _EQ, "principalId": _EQ, "roleDefinitionId": _EQ,
                        "directoryScopeId": _EQ},
    "roleScheduleInstances": {"id": _EQ, "principalId": _EQ, "roleDefinitionId": _EQ,
                              "directoryScopeId": _EQ, "assignmentType": _EQ,
                              "memberType": _EQ},
    "secureScores": {"id": _EQ, "createdDateTime": frozenset({"eq", "ge", "le", "gt", "lt"})},
    "userRegistrationDetails": {
        "id": _EQ,
        "userPrincipalName": frozenset({"eq", "startswith"}),
        "userType": frozenset({"eq"}),
        "isAdmin": frozenset({"eq"}),
        "isMfaRegistered": frozenset({"eq"}),
        "isMfaCapable": frozenset({"eq"}),
        "methodsRegistered": frozenset({"any", "eq"}),  # methodsRegistered/any(x: x eq 'sms')
    },
}

# Graph's default property set of a user when no $select is given.
USER_DEFAULT = ("businessPhones", "displayName", "givenName", "jobTitle", "mail",
                "mobilePhone", "officeLocation", "preferredLanguage", "surname",
                "userPrincipalName", "id")
USER_KNOWN = frozenset({
    "signInActivity", "usageLocation", "assignedPlans", "proxyAddresses", "otherMails",
    "employeeId", "employeeHireDate", "employeeType", "onPremisesImmutableId",
    "onPremisesSamAccountName", "onPremisesUserPrincipalName", "onPremisesLastSyncDateTime",
    "lastPasswordChangeDateTime", "mailNickname", "city", "country", "state",
    "streetAddress", "postalCode", "ageGroup", "creationType", "identities",
    "isResourceAccount", "showInAddressList", "passwordPolicies", "deletedDateTime",
    "signInSessionsValidFromDateTime", "externalUserStateChangeDateTime", "employeeLeaveDateTime",
    "licenseAssignmentStates", "assignedLicenses", "accountEnabled", "userType",
    "createdDateTime", "department", "companyName", "onPremisesSyncEnabled",
    "externalUserState",
})
# Reading these needs one more permission. signInActivity: 403 without it.
USER_GATED = {"signInActivity": ("AuditLog.Read.All",)}
# employeeLeaveDateTime: Graph serves null, silently, to an app without the lifecycle
# permission (a filter on it is refused here, so the sandbox never leaks it).
USER_MASKED = {
    "employeeLeaveDateTime": ("User-LifeCycleInfo.Read.All", "User-LifeCycleInfo.ReadWrite.All"),
}

# ---- permissions (any one of each tuple allows the call) ------------------------------------

USER_READ = ("User.Read.All", "User.ReadWrite.All", "Directory.Read.All",
             "Directory.ReadWrite.All")
USER_PATCH = ("User.EnableDisableAccount.All", "User.ReadWrite.All", "Directory.ReadWrite.All",
              "User-LifeCycleInfo.ReadWrite.All")
# user-delete: Directory.ReadWrite.All does not include deleting users. The permanent
# delete of a user from deleted items takes User.DeleteRestore.All for an app, nothing
# else (learn.microsoft.com/graph/api/directory-deleteditems-delete, resource "user").
USER_DELETE = ("User.DeleteRestore.All", "User.ReadWrite.All")
USER_PURGE = ("User.DeleteRestore.All",)
USER_REVOKE = ("User.RevokeSessions.All", "User.ReadWrite.All", "Directory.ReadWrite.All")
MAIL_SEND = ("Mail.Send",)
MAIL_WRITE = ("Mail.ReadWrite",)
GROUP_MEMBERS = ("GroupMember.Read.All", "Group.Read.All", "GroupMember.ReadWrite.All",
                 "Group.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All")
GROUP_READ = ("Group.Read.All", "Group.ReadWrite.All", "Directory.Read.All",
              "Directory.ReadWrite.All")
SKU_READ = ("LicenseAssignment.Read.All", "Organization.Read.All", "Directory.Read.All",
            "Organization.ReadWrite.All", "LicenseAssignment.ReadWrite.All",
            "Directory.ReadWrite.All")
SP_READ = ("Application.Read.All", "Application.ReadWrite.All", "Directory.Read.All",
           "Directory.ReadWrite.All")
DEVICE_READ = ("Device.Read.All", "Device.ReadWrite.All", "Directory.Read.All",
               "Directory.ReadWrite.All")
MANAGED_READ = ("DeviceManagementManagedDevices.Read.All",
                "DeviceManagementManagedDevices.ReadWrite.All")
MANAGED_PRIVILEGED = ("DeviceManagementManagedDevices.PrivilegedOperations.All",)
CONFIG_READ = ("DeviceManagementConfiguration.Read.All",
               "DeviceManagementConfiguration.ReadWrite.All")
BITLOCKER_READ = ("BitlockerKey.ReadBasic.All", "BitlockerKey.Read.All")
ROLE_READ = ("RoleManagement.Read.Directory", "RoleManagement.Read.All", "Directory.Read.All",
             "RoleManagement.ReadWrite.Directory", "Directory.ReadWrite.All")
ROLE_ASSIGNMENT_SCHEDULE = ("RoleAssignmentSchedule.Read.Directory",
                            "RoleAssignmentSchedule.ReadWrite.Directory",
                            "RoleManagement.Read.Directory", "RoleManagement.Read.All",
                            "RoleManagement.ReadWrite.Directory")
ROLE_ELIGIBILITY_SCHEDULE = ("RoleEligibilitySchedule.Read.Directory",
                             "RoleEligibilitySchedule.ReadWrite.Directory",
                             "RoleManagement.Read.Directory", "RoleManagement.Read.All",
                             "RoleManagement.ReadWrite.Directory")
REPORTS_READ = ("AuditLog.Read.All",)
SECURITY_READ = ("SecurityEvents.Read.All", "SecurityEvents.ReadWrite.All")

# ---- list behaviour per endpoint ------------------------------------------------------------

USERS = ListSpec("user", "users", "directory", FILTERABLE["users"], max_top=999,
                 default_select=USER_DEFAULT, known=USER_KNOWN, gated=USER_GATED,
                 masked=USER_MASKED, orderby=frozenset({"displayName", "userPrincipalName"}))
GROUPS = ListSpec("group", "groups", "directory", FILTERABLE["groups"], max_top=999,
                  orderby=frozenset({"displayName"}))
MEMBERS = ListSpec("directoryObject", "directoryObjects", "directory", FILTERABLE["members"],
                   max_top=999, known=USER_KNOWN)
DELETED_USERS = ListSpec("user", "users", "directory", FILTERABLE["deletedUsers"], max_top=999,
                         default_select=USER_DEFAULT, known=USER_KNOWN, gated=USER_GATED,
                         masked=USER_MASKED, orderby=frozenset({"deletedDateTime", "displayName"}))
DELETED_GROUPS = ListSpec("group", "groups", "directory", FILTERABLE["groups"], max_top=999)
DEVICES = ListSpec("device", "devices", "directory", FILTERABLE["devices"], max_top=999)
SERVICE_PRINCIPALS = ListSpec("servicePrincipal", "servicePrincipals", "directory",
                              FILTERABLE["servicePrincipals"], max_top=999)
SKUS = ListSpec("subscribedSku", "subscribedSkus", "directory", FILTERABLE["subscribedSkus"],
                max_top=None)
MANAGED_DEVICES = ListSpec("managedDevice", "deviceManagement/managedDevices", "intune",
                           FILTERABLE["managedDevices"], max_top=1000, page_size=1000,
                           count_scope="page")
RECOVERY_KEYS = ListSpec("bitlockerRecoveryKey", "informationProtection/bitlocker/recoveryKeys",
                         "other", FILTERABLE["recoveryKeys"], max_top=0,
                         default_select=("id", "createdDateTime", "volumeType", "deviceId"),
                         gated={"key": ("BitlockerKey.Read.All",)})
_ASSIGNMENTS = {"assignments": h.expand_key("_assignments")}
SETTINGS_INLINE = 50  # settings a `$expand=settings` inlines (the rest is cut, silently)
SETTINGS_PAGE = 100  # page of /configurationPolicies/{id}/settings (next links beyond)
DEVICE_CONFIGURATIONS = ListSpec("deviceConfiguration", "deviceManagement/deviceConfigurations",
                                 "intune", FILTERABLE["deviceConfigurations"], max_top=1000,
                                 page_size=1000, expand=_ASSIGNMENTS)
COMPLIANCE_POLICIES = ListSpec("deviceCompliancePolicy",
                               "deviceManagement/deviceCompliancePolicies", "intune",
                               FILTERABLE["deviceCompliancePolicies"], max_top=1000,
                               page_size=1000, expand=_ASSIGNMENTS)
CONFIGURATION_POLICIES = ListSpec(
    "deviceManagementConfigurationPolicy", "deviceManagement/configurationPolicies", "intune",
    FILTERABLE["configurationPolicies"], max_top=1000, page_size=25,
    # a large endpoint-security policy comes back cut short inline: read /{id}/settings
    expand={**_ASSIGNMENTS, "settings": h.expand_key("_settings", limit=SETTINGS_INLINE)})
ASSIGNMENTS = ListSpec("deviceConfigurationAssignment", "assignments", "intune",
                       FILTERABLE["policyRelations"], max_top=1000, page_size=1000)
SETTINGS = ListSpec("deviceManagementConfigurationSetting", "settings", "intune",
                    FILTERABLE["policyRelations"], max_top=1000, page_size=SETTINGS_PAGE)
DEVICE_STATUSES = ListSpec("deviceComplianceDeviceStatus", "deviceStatuses", "intune",
                           FILTERABLE["policyRelations"], max_top=1000, page_size=1000)
_ROLE_EXPAND = {"principal": h.expand_principal, "roleDefinition": h.expand_role_definition}
ROLE_DEFINITIONS = ListSpec("unifiedRoleDefinition", "roleManagement/directory/roleDefinitions",
                            "directory", FILTERABLE["roleDefinitions"], max_top=None,
                            page_size=1000)
ROLE_ASSIGNMENTS = ListSpec("unifiedRoleAssignment", "roleManagement/directory/roleAssignments",
                            "directory", FILTERABLE["roleAssignments"], max_top=None,
                            expand=_ROLE_EXPAND)
ROLE_ASSIGNMENT_INSTANCES = ListSpec(
    "unifiedRoleAssignmentScheduleInstance",
    "roleManagement/directory/roleAssignmentScheduleInstances", "directory",
    FILTERABLE["roleScheduleInstances"], max_top=None, expand=_ROLE_EXPAND)
ROLE_ELIGIBILITY_INSTANCES = ListSpec(
    "unifiedRoleEligibilityScheduleInstance",
    "roleManagement/directory/roleEligibilityScheduleInstances", "directory",
    FILTERABLE["roleScheduleInstances"], max_top=None, expand=_ROLE_EXPAND)
REGISTRATION_DETAILS = ListSpec("userRegistrationDetails",
                                "reports/authenticationMethods/userRegistrationDetails",
                                "other", FILTERABLE["userRegistrationDetails"], max_top=999)
# the security API lists all 90 days in one page; $top is the number of days
SECURE_SCORES = ListSpec("secureScore", "security/secureScores", "other",
                         FILTERABLE["secureScores"], max_top=None, page_size=100)


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # "/users/{id}"; {id} matches one path segment
    permissions: tuple[str, ...]
    handler: h.Handler
    spec: ListSpec | None = None
    write: bool = False
    version: str = "v1.0"  # "beta" for endpoints v1.0 does not have

    @property
    def regex(self) -> re.Pattern[str]:
        return _compile(self.template)


_COMPILED: dict[str, re.Pattern[str]] = {}


def _compile(template: str) -> re.Pattern[str]:
    pattern = _COMPILED.get(template)
    if pattern is None:
        body = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        pattern = _COMPILED[template] = re.compile(f"^{body}$", re.IGNORECASE)
    return pattern


R = Route
ROUTES: tuple[Route, ...] = (
    # users
    R("GET", "/users", USER_READ, h.list_of("users"), USERS),
    R("GET", "/users/{id}", USER_READ, h.get_user, USERS),
    R("PATCH", "/users/{id}", USER_PATCH, h.patch_user, USERS, write=True),
    R("DELETE", "/users/{id}", USER_DELETE, h.delete_user, USERS, write=True),
    R("POST", "/users/{id}/revokeSignInSessions", USER_REVOKE, h.revoke_sessions, write=True),
    # mail (agent/sandbox/mail.py): sendMail, or a draft with attachments, then send
    R("POST", "/users/{id}/sendMail", MAIL_SEND, mail.send_mail, write=True),
    R("POST", "/users/{id}/messages", MAIL_WRITE, mail.create_message, write=True),
    R("DELETE", "/users/{id}/messages/{mid}", MAIL_WRITE, mail.delete_message, write=True),
    R("POST", "/users/{id}/messages/{mid}/attachments", MAIL_WRITE, mail.add_attachment,
      write=True),
    R("POST", "/users/{id}/messages/{mid}/attachments/createUploadSession", MAIL_WRITE,
      mail.create_upload_session, write=True),
    R("POST", "/users/{id}/messages/{mid}/send", MAIL_SEND, mail.send_draft, write=True),
    # groups
    R("GET", "/groups", GROUP_READ, h.list_of("groups"), GROUPS),
    R("GET", "/groups/{id}", GROUP_READ, h.get_from("groups"), GROUPS),
    R("GET", "/groups/{id}/members", GROUP_MEMBERS, h.group_members(False), MEMBERS),
    # transitiveMembers: GroupMember.ReadBasic.All is enough (its permissions page);
    # members' own properties need the permission to read their type (handlers.as_readable)
    R("GET", "/groups/{id}/transitiveMembers", ("GroupMember.ReadBasic.All", *GROUP_MEMBERS),
      h.group_members(True), MEMBERS),
    # licences, apps, devices
    R("GET", "/subscribedSkus", SKU_READ, h.subscribed_skus, SKUS),
    R("GET", "/servicePrincipals", SP_READ, h.list_of("servicePrincipals"), SERVICE_PRINCIPALS),
    R("GET", "/servicePrincipals/{id}", SP_READ, h.get_from("servicePrincipals"),
      SERVICE_PRINCIPALS),
    R("GET", "/devices", DEVICE_READ, h.list_of("devices"), DEVICES),
    R("GET", "/devices/{id}", DEVICE_READ, h.get_from("devices"), DEVICES),
    # deleted items (soft-deleted users; permanent delete)
    R("GET", "/directory/deletedItems", USER_READ, h.deleted_untyped),
    R("GET", "/directory/deletedItems/microsoft.graph.user", USER_READ,
      h.deleted_of("#microsoft.graph.user"), DELETED_USERS),
    R("GET", "/directory/deletedItems/microsoft.graph.group", GROUP_READ,
      h.deleted_of("#microsoft.graph.group"), DELETED_GROUPS),
    R("GET", "/directory/deletedItems/{id}", USER_READ, h.get_deleted, DELETED_USERS),
    R("DELETE", "/directory/deletedItems/{id}", USER_PURGE, h.purge_deleted, write=True),
    # Intune
    R("GET", "/deviceManagement/managedDevices", MANAGED_READ, h.list_of("managedDevices"),
      MANAGED_DEVICES),
    R("GET", "/deviceManagement/managedDevices/{id}", MANAGED_READ,
      h.get_from("managedDevices"), MANAGED_DEVICES),
    R("GET", "/deviceManagement/managedDeviceOverview", MANAGED_READ,
      h.managed_device_overview),
    R("POST", "/deviceManagement/managedDevices/{id}/wipe", MANAGED_PRIVILEGED,
      h.device_action("wipe"), MANAGED_DEVICES, write=True),
    R("POST", "/deviceManagement/managedDevices/{id}/retire", MANAGED_PRIVILEGED,
      h.device_action("retire"), MANAGED_DEVICES, write=True),
    R("GET", "/deviceManagement/deviceConfigurations", CONFIG_READ,
      h.list_of("deviceConfigurations"), DEVICE_CONFIGURATIONS),
    R("GET", "/deviceManagement/deviceConfigurations/{id}", CONFIG_READ,
      h.get_from("deviceConfigurations"), DEVICE_CONFIGURATIONS),
    R("GET", "/deviceManagement/deviceConfigurations/{id}/assignments", CONFIG_READ,
      h.sub_list("deviceConfigurations", "_assignments"), ASSIGNMENTS),
    R("GET", "/deviceManagement/deviceCompliancePolicies", CONFIG_READ,
      h.list_of("deviceCompliancePolicies"), COMPLIANCE_POLICIES),
    R("GET", "/deviceManagement/deviceCompliancePolicies/{id}", CONFIG_READ,
      h.get_from("deviceCompliancePolicies"), COMPLIANCE_POLICIES),
    R("GET", "/deviceManagement/deviceCompliancePolicies/{id}/assignments", CONFIG_READ,
      h.sub_list("deviceCompliancePolicies", "_assignments"), ASSIGNMENTS),
    R("GET", "/deviceManagement/deviceCompliancePolicies/{id}/deviceStatuses", CONFIG_READ,
      h.sub_list("deviceCompliancePolicies", "_deviceStatuses"), DEVICE_STATUSES),
    # Settings catalog: Graph has it in beta only (v1.0 answers 400 for the segment).
    R("GET", "/deviceManagement/configurationPolicies", CONFIG_READ,
      h.list_of("configurationPolicies"), CONFIGURATION_POLICIES, version="beta"),
    R("GET", "/deviceManagement/configurationPolicies/{id}", CONFIG_READ,
      h.get_from("configurationPolicies"), CONFIGURATION_POLICIES, version="beta"),
    R("GET", "/deviceManagement/configurationPolicies/{id}/settings", CONFIG_READ,
      h.sub_list("configurationPolicies", "_settings"), SETTINGS, version="beta"),
    R("GET", "/deviceManagement/configurationPolicies/{id}/assignments", CONFIG_READ,
      h.sub_list("configurationPolicies", "_assignments"), ASSIGNMENTS, version="beta"),
    # BitLocker
    R("GET", "/informationProtection/bitlocker/recoveryKeys", BITLOCKER_READ,
      h.recovery_keys, RECOVERY_KEYS),
    R("GET", "/informationProtection/bitlocker/recoveryKeys/{id}", BITLOCKER_READ,
      h.recovery_key, RECOVERY_KEYS),
    # directory roles
    R("GET", "/roleManagement/directory/roleDefinitions", ROLE_READ,
      h.list_of("roleDefinitions"), ROLE_DEFINITIONS),
    R("GET", "/roleManagement/directory/roleDefinitions/{id}", ROLE_READ,
      h.get_from("roleDefinitions"), ROLE_DEFINITIONS),
    R("GET", "/roleManagement/directory/roleAssignments", ROLE_READ,
      h.list_of("roleAssignments"), ROLE_ASSIGNMENTS),
    R("GET", "/roleManagement/directory/roleAssignmentScheduleInstances",
      ROLE_ASSIGNMENT_SCHEDULE, h.list_of("roleAssignmentScheduleInstances"),
      ROLE_ASSIGNMENT_INSTANCES),
    R("GET", "/roleManagement/directory/roleEligibilityScheduleInstances",
      ROLE_ELIGIBILITY_SCHEDULE, h.list_of("roleEligibilityScheduleInstances"),
      ROLE_ELIGIBILITY_INSTANCES),
    # security
    R("GET", "/security/secureScores", SECURITY_READ, h.secure_scores, SECURE_SCORES),
    R("GET", "/security/secureScores/{id}", SECURITY_READ, h.get_from("secureScores"),
      SECURE_SCORES),
    # reports
    R("GET", "/reports/authenticationMethods/userRegistrationDetails", REPORTS_READ,
      h.registration_details, REGISTRATION_DETAILS),
    R("GET", "/reports/authenticationMethods/userRegistrationDetails/{id}", REPORTS_READ,
      h.registration_detail, REGISTRATION_DETAILS),
)

ALL_PERMISSIONS: tuple[str, ...] = tuple(sorted({p for r in ROUTES for p in r.permissions}
                                                | {p for spec in (USERS, RECOVERY_KEYS)
                                                   for table in (spec.gated, spec.masked)
                                                   for perms in table.values()
                                                   for p in perms}))


@dataclass(frozen=True)
class Match:
    route: Route | None  # None: no such endpoint (maybe with another method)
    args: dict[str, str]
    allowed_methods: tuple[str, ...] = ()
    version: str = "v1.0"


def match(version: str, method: str, path: str) -> Match:
    """The route for a request; the caller turns a miss into Graph's 400/404/405."""
    methods: list[str] = []
    for route in ROUTES:
        found = route.regex.match(path)
        if found is None or route.version != version:
            continue
        if route.method == method:
            return Match(route, found.groupdict(), version=version)
        methods.append(route.method)
    return Match(None, {}, tuple(methods), version)


def unknown_segment(version: str, path: str) -> str:
    """The first path segment no endpoint of this version has: Graph names it in its 400."""
    segments = [s for s in path.split("/") if s]
    templates = [[s for s in r.template.split("/") if s] for r in ROUTES if r.version == version]
    for i, segment in enumerate(segments):
        if not any(len(t) > i and all(_seg_ok(t[j], segments[j]) for j in range(i + 1))
                   for t in templates):
            return segment
    return segments[-1] if segments else "/"


def _seg_ok(template: str, actual: str) -> bool:
    return template.startswith("{") or template.lower() == actual.lower()


def describe() -> list[dict[str, Any]]:
    """The table as data (docs, tests): method, path, permissions, filterable properties."""
    return [{"method": r.method, "path": f"/{r.version}{r.template}",
             "permissions": list(r.permissions),
             "filterable": sorted(r.spec.filterable) if r.spec else []}
            for r in ROUTES]
