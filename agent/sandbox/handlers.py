"""What each sandbox endpoint does. Pure functions of a `Call` (plus the route's ListSpec);
routing, auth, faults and persistence are the transport's business.

Behaviour follows Graph where the jobs could notice: soft delete into deletedItems, a
user holding an active directory role cannot be disabled or deleted by an app, Intune
wipe/retire move `managementState` to *Pending, BitLocker keys are never listed with their
`key`, subscribedSkus count consumed units from the users.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from agent.sandbox import listing
from agent.sandbox.builders import deleted, iso
from agent.sandbox.listing import ListSpec
from agent.sandbox.tenant import SandboxTenant
from agent.sandbox.wire import Call, Family, GraphFault, Reply, forbidden, not_found

Handler = Callable[[Call, ListSpec | None], Reply]

# Directory object collections and the @odata.type Graph gives their members.
DIRECTORY_TYPES: tuple[tuple[str, str], ...] = (
    ("users", "#microsoft.graph.user"),
    ("groups", "#microsoft.graph.group"),
    ("servicePrincipals", "#microsoft.graph.servicePrincipal"),
    ("devices", "#microsoft.graph.device"),
)


def _spec(spec: ListSpec | None) -> ListSpec:
    if spec is None:  # a route table mistake, not a request error
        raise AssertionError("route needs a ListSpec")
    return spec


def _family(spec: ListSpec | None) -> Family:
    return spec.family if spec else "directory"


# ---- generic -------------------------------------------------------------------------------

def list_of(collection: str, where: Callable[[Mapping[str, Any]], bool] | None = None
            ) -> Handler:
    """GET a whole collection (optionally only the objects `where` accepts)."""

    def handler(call: Call, spec: ListSpec | None) -> Reply:
        objs: Iterable[Mapping[str, Any]] = call.tenant.collections[collection].values()
        if where is not None:  # lazy: next pages are served from the cursor, unscanned
            objs = (o for o in objs if where(o))
        return listing.serve(call, _spec(spec), objs)

    return handler


def get_from(collection: str) -> Handler:
    """GET one object by id."""

    def handler(call: Call, spec: ListSpec | None) -> Reply:
        obj = call.tenant.get(collection, call.args["id"])
        if obj is None:
            raise not_found(call.args["id"], _family(spec))
        return listing.serve_one(call, _spec(spec), obj)

    return handler


def sub_list(collection: str, key: str) -> Handler:
    """GET /{collection}/{id}/<relation> served from the object's underscore key."""

    def handler(call: Call, spec: ListSpec | None) -> Reply:
        obj = call.tenant.get(collection, call.args["id"])
        if obj is None:
            raise not_found(call.args["id"], _family(spec))
        return listing.serve(call, _spec(spec), list(obj.get(key) or ()))

    return handler


def expand_key(key: str, limit: int | None = None) -> listing.Expander:
    """$expand of a relation kept in an underscore key (assignments, settings).

    `limit`: Graph inlines at most this many (a page), silently: the rest only comes from
    the relation's own paged list (`/{id}/settings`)."""
    return lambda call, obj: [dict(x) for x in (obj.get(key) or ())[:limit]]


def directory_object(tenant: SandboxTenant, object_id: str) -> dict[str, Any] | None:
    """A user, group, service principal or device by id, with its @odata.type."""
    for collection, odata_type in DIRECTORY_TYPES:
        obj = tenant.collections[collection].get(object_id)
        if obj is not None:
            return {"@odata.type": odata_type,
                    **{k: v for k, v in obj.items() if not k.startswith("_")}}
    return None


# Graph serves a directory object the caller may not read with "limited information": only
# its @odata.type and id (graph/api/group-list-members, "Limited information returned for
# inaccessible member objects"). The permissions that read each type's properties:
_READS_TYPE: dict[str, tuple[str, ...]] = {
    "#microsoft.graph.user": ("User.Read.All", "User.ReadWrite.All", "Directory.Read.All",
                              "Directory.ReadWrite.All"),
    "#microsoft.graph.servicePrincipal": ("Application.Read.All", "Application.ReadWrite.All",
                                          "Directory.Read.All", "Directory.ReadWrite.All"),
    "#microsoft.graph.device": ("Device.Read.All", "Device.ReadWrite.All",
                                "Directory.Read.All", "Directory.ReadWrite.All"),
}


def as_readable(call: Call, obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` as the caller may see it: whole, or its type and id only."""
    allowed = _READS_TYPE.get(str(obj.get("@odata.type")))
    if allowed is None or call.has_role(*allowed):
        return obj
    return {"@odata.type": obj["@odata.type"], "id": obj["id"]}


def expand_principal(call: Call, obj: Mapping[str, Any]) -> Any:
    """A deleted principal expands to null; an unreadable one to its type and id."""
    found = directory_object(call.tenant, str(obj.get("principalId")))
    return as_readable(call, found) if found is not None else None


def expand_role_definition(call: Call, obj: Mapping[str, Any]) -> Any:
    found = call.tenant.get("roleDefinitions", str(obj.get("roleDefinitionId")))
    return {k: v for k, v in found.items() if not k.startswith("_")} if found else None


def _body(call: Call, family: Family = "directory") -> dict[str, Any]:
    if call.body is None:
        return {}
    if not isinstance(call.body, dict):
        raise GraphFault(400, "The request body must be a JSON object.", family=family)
    return call.body


# ---- users ---------------------------------------------------------------------------------

def _user(call: Call) -> dict[str, Any]:
    found = call.tenant.find_user(call.args["id"])
    if found is None:
        raise not_found(call.args["id"])
    return found


def holds_active_role(tenant: SandboxTenant, principal_id: str) -> bool:
    """An active (not merely eligible) directory role: Graph protects such accounts."""
    if any(a.get("principalId") == principal_id for a in tenant.all("roleAssignments")):
        return True
    return any(i.get("principalId") == principal_id
               for i in tenant.all("roleAssignmentScheduleInstances"))


def get_user(call: Call, spec: ListSpec | None) -> Reply:
    return listing.serve_one(call, _spec(spec), _user(call))


# Properties an app may PATCH on a user, with their JSON type and the permissions that
# allow it (any one). accountEnabled has its own least-privileged permission.
_USER_WRITE = ("User.ReadWrite.All", "Directory.ReadWrite.All")
PATCHABLE: dict[str, tuple[type | tuple[type, ...], tuple[str, ...]]] = {
    "accountEnabled": (bool, ("User.EnableDisableAccount.All", *_USER_WRITE)),
    "employeeLeaveDateTime": ((str, type(None)), ("User-LifeCycleInfo.ReadWrite.All",)),
    "displayName": (str, _USER_WRITE),
    "department": ((str, type(None)), _USER_WRITE),
    "jobTitle": ((str, type(None)), _USER_WRITE),
    "companyName": ((str, type(None)), _USER_WRITE),
    "officeLocation": ((str, type(None)), _USER_WRITE),
    "usageLocation": ((str, type(None)), _USER_WRITE),
}
READ_ONLY_USER = frozenset({"id", "createdDateTime", "assignedLicenses", "assignedPlans",
                            "licenseAssignmentStates", "userType", "deletedDateTime",
                            "signInActivity", "signInSessionsValidFromDateTime"})


def patch_user(call: Call, spec: ListSpec | None) -> Reply:
    target = _user(call)
    body = _body(call)
    for name, value in body.items():
        if name in READ_ONLY_USER:
            raise GraphFault(400, f"Property '{name}' is read-only and cannot be set.")
        if name not in PATCHABLE:
            raise GraphFault(400, f"Invalid property '{name}'.")
        expected, allowed = PATCHABLE[name]
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise GraphFault(400, f"Cannot convert the literal '{value}' to the expected type "
                                  f"of property '{name}'.")
        if not call.has_role(*allowed):
            raise forbidden("directory", allowed)
    if ("accountEnabled" in body or "employeeLeaveDateTime" in body) and \
            holds_active_role(call.tenant, str(target["id"])):
        # Sensitive properties of an admin: an app needs a privileged admin role itself.
        raise forbidden("directory", ())
    target.update(body)
    call.tenant.touch()
    return Reply(204)


def delete_user(call: Call, spec: ListSpec | None) -> Reply:
    target = _user(call)
    user_id = str(target["id"])
    if holds_active_role(call.tenant, user_id):
        raise forbidden("directory", ())
    call.tenant.remove("users", user_id)
    gone = deleted(target, call.tenant.now)
    # Entra renames a deleted user: the UPN gets the object id (without dashes) in front
    original = str(target.get("userPrincipalName") or "")
    gone["userPrincipalName"] = user_id.replace("-", "") + original
    call.tenant.add("deletedItems", gone)
    if call.tenant.faults.deleted_lag_requests:
        call.tenant.replicating[user_id] = call.tenant.faults.deleted_lag_requests
    # Deleting an account ends its (eligible) role assignments, as Entra does.
    for inst in call.tenant.all("roleEligibilityScheduleInstances"):
        if inst.get("principalId") == user_id:
            call.tenant.remove("roleEligibilityScheduleInstances", str(inst["id"]))
    return Reply(204)


def revoke_sessions(call: Call, spec: ListSpec | None) -> Reply:
    target = _user(call)
    target["signInSessionsValidFromDateTime"] = iso(call.tenant.now)
    call.tenant.touch()
    return Reply(200, {"@odata.context": f"{call.base}/$metadata#Edm.Boolean", "value": True})


# ---- groups ----------------------------------------------------------------------------------

def group_members(transitive: bool) -> Handler:
    def handler(call: Call, spec: ListSpec | None) -> Reply:
        group = call.tenant.get("groups", call.args["id"])
        if group is None:
            raise not_found(call.args["id"])
        members = (as_readable(call, m) for m in _members(call.tenant, group, transitive))
        return listing.serve(call, _spec(spec), members)

    return handler


def _members(tenant: SandboxTenant, group: Mapping[str, Any], transitive: bool
             ) -> Iterator[dict[str, Any]]:
    """Members (breadth first, each once); lazy so next pages cost no walk."""
    seen: set[str] = set()
    queue = [group]
    while queue:
        current = queue.pop(0)
        for member_id in current.get("_members") or ():
            if member_id in seen:
                continue
            seen.add(member_id)
            obj = directory_object(tenant, member_id)
            if obj is None:  # deleted meanwhile: no longer a member
                continue
            yield obj
            if transitive and obj["@odata.type"] == "#microsoft.graph.group":
                nested = tenant.get("groups", member_id)
                if nested is not None:
                    queue.append(nested)


# ---- licences ----------------------------------------------------------------------------

def subscribed_skus(call: Call, spec: ListSpec | None) -> Reply:
    """consumedUnits is counted from the users, as Graph does (`_consumedUnits` overrides)."""
    consumed: Counter[str] = Counter()
    for u in call.tenant.collections["users"].values():
        for lic in u.get("assignedLicenses") or ():
            consumed[str(lic.get("skuId"))] += 1
    skus = []
    for sku in call.tenant.collections["subscribedSkus"].values():
        units = sku.get("_consumedUnits", consumed[str(sku.get("skuId"))])
        skus.append({**sku, "consumedUnits": units})
    return listing.serve(call, _spec(spec), skus)


# ---- reports ----------------------------------------------------------------------------------

def secure_scores(call: Call, spec: ListSpec | None) -> Reply:
    """One secureScore per day, newest first; `$top=n` is the latest n days (the resource
    doc: "sorted by createdDateTime, from latest to earliest ... $top=n, where n = the
    number of days of data that you want to retrieve")."""
    days = sorted(call.tenant.collections["secureScores"].values(),
                  key=lambda s: str(s.get("createdDateTime") or ""), reverse=True)
    top = listing.parse_top(call, _spec(spec))
    return listing.serve(call, _spec(spec), days[:top] if top else days)


# Entra ID P1 and P2 as service plans of a subscribed SKU (licensing-service-plan-reference).
PREMIUM_PLANS = frozenset({"41781fb2-bc02-4b7c-bd55-b576c07bb09d",  # AAD_PREMIUM (P1)
                           "eec0eb4f-6444-4f95-aba0-50c24d67f998"})  # AAD_PREMIUM_P2


# SKUs that carry one of them (Microsoft's service-plan reference), for seeds that list
# no service plans: Microsoft 365 E3/E5, Business Premium, EMS E3/E5, Entra ID P1/P2.
PREMIUM_SKUS = frozenset({"SPE_E3", "SPE_E5", "SPB", "EMS", "EMSPREMIUM", "AAD_PREMIUM",
                          "AAD_PREMIUM_P2"})


def require_premium(tenant: SandboxTenant) -> None:
    """The authentication-methods reports need Entra ID P1/P2 in the tenant; Graph says so
    with this 403 (microsoft-graph-docs-contrib issue 8777)."""
    for sku in tenant.collections["subscribedSkus"].values():
        if sku.get("capabilityStatus", "Enabled") != "Enabled":
            continue
        if sku.get("skuPartNumber") in PREMIUM_SKUS or any(
                str(plan.get("servicePlanId")) in PREMIUM_PLANS
                for plan in sku.get("servicePlans") or ()):
            return
    raise GraphFault(403, "Neither tenant is B2C or tenant doesn't have premium license",
                     code="Authentication_RequestFromNonPremiumTenantOrB2CTenant",
                     family="other")


def registration_details(call: Call, spec: ListSpec | None) -> Reply:
    """The report covers every user: users without a stored row show as not registered."""
    require_premium(call.tenant)
    rows = call.tenant.collections["userRegistrationDetails"]
    users: Iterable[Mapping[str, Any]] = call.tenant.collections["users"].values()
    named = _upns_only(call.param("$filter"))
    if named is not None:  # a lookup by UPNs: the same answer, without a 100k-row scan
        users = [u for u in users if str(u.get("userPrincipalName")) in named]
    merged = (rows.get(str(u["id"])) or registration_default(u) for u in users)
    return listing.serve(call, _spec(spec), merged)


_UPN_TERM = re.compile(r"userPrincipalName eq '((?:[^']|'')*)'")


def _upns_only(flt: str | None) -> set[str] | None:
    """The UPNs of a filter made only of `userPrincipalName eq '…'` OR-ed, else None."""
    if not flt:
        return None
    terms = [t.strip() for t in flt.split(" or ")]
    found = [_UPN_TERM.fullmatch(t) for t in terms]
    if not all(found):
        return None
    return {m.group(1).replace("''", "'") for m in found if m}


def registration_detail(call: Call, spec: ListSpec | None) -> Reply:
    require_premium(call.tenant)
    user_id = call.args["id"]
    row = call.tenant.get("userRegistrationDetails", user_id)
    if row is None:
        person = call.tenant.get("users", user_id)
        if person is None:
            raise not_found(user_id, "other")
        row = registration_default(person)
    return listing.serve_one(call, _spec(spec), row)


def registration_default(person: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": person["id"], "userPrincipalName": person.get("userPrincipalName"),
        "userDisplayName": person.get("displayName"), "isAdmin": False,
        "isSsprRegistered": False, "isSsprEnabled": False, "isSsprCapable": False,
        "isMfaRegistered": False, "isMfaCapable": False, "isPasswordlessCapable": False,
        "lastUpdatedDateTime": person.get("createdDateTime"), "methodsRegistered": [],
        "isSystemPreferredAuthenticationMethodEnabled": True,
        "systemPreferredAuthenticationMethods": [],
        "userPreferredMethodForSecondaryAuthentication": "",
        "userType": "guest" if person.get("userType") == "Guest" else "member",
    }


# ---- deleted items ---------------------------------------------------------------------------

def deleted_of(odata_type: str) -> Handler:
    def handler(call: Call, spec: ListSpec | None) -> Reply:
        tenant = call.tenant
        objs = (o for o in tenant.collections["deletedItems"].values()
                if deleted_type(o) == odata_type and tenant.deleted_item(str(o["id"])))
        return listing.serve(call, _spec(spec), objs)

    return handler


def get_deleted(call: Call, spec: ListSpec | None) -> Reply:
    obj = call.tenant.deleted_item(call.args["id"])
    if obj is None:
        raise not_found(call.args["id"])
    return listing.serve_one(call, _spec(spec), obj)


def deleted_type(obj: Mapping[str, Any]) -> str:
    """A deleted object's type (seeds may leave @odata.type out: a UPN means a user)."""
    default = "#microsoft.graph.user" if "userPrincipalName" in obj else "#microsoft.graph.group"
    return str(obj.get("@odata.type") or default)


def deleted_untyped(call: Call, spec: ListSpec | None) -> Reply:
    raise GraphFault(400, "The OData cast type is a required part of the URI: use "
                          "/directory/deletedItems/microsoft.graph.user (or .group).")


def purge_deleted(call: Call, spec: ListSpec | None) -> Reply:
    if call.tenant.deleted_item(call.args["id"]) is None:
        raise not_found(call.args["id"])
    call.tenant.remove("deletedItems", call.args["id"])
    return Reply(204)


# ---- Intune managed devices ------------------------------------------------------------------

PENDING = {"wipePending", "retirePending", "deletePending"}


def device_action(action: str) -> Handler:
    """POST managedDevices/{id}/wipe|retire: accepted (204), the device goes *Pending."""

    def handler(call: Call, spec: ListSpec | None) -> Reply:
        device = call.tenant.get("managedDevices", call.args["id"])
        if device is None:
            raise not_found(call.args["id"], "intune")
        state = device.get("managementState")
        if state in PENDING:
            raise GraphFault(400, f"A {state} action is already in progress for this "
                                  "device.", family="intune")
        _body(call, "intune")
        now = iso(call.tenant.now)
        device["managementState"] = f"{action}Pending"
        results = list(device.get("deviceActionResults") or ())
        results.append({"actionName": action, "actionState": "pending",
                        "startDateTime": now, "lastUpdatedDateTime": now})
        device["deviceActionResults"] = results
        call.tenant.touch()
        return Reply(204)

    return handler


def managed_device_overview(call: Call, spec: ListSpec | None) -> Reply:
    """GET /deviceManagement/managedDeviceOverview: Intune's own counts of its devices.

    Counted from the managed devices. MDM: every managementAgent that includes
    MDM (mdm, easMdm, configurationManagerClientMdm, ...); the PC agent (intuneClient) is
    not enrolled ("Does not include PC devices managed via Intune PC Agent").
    """
    devices = list(call.tenant.collections["managedDevices"].values())
    agents = [str(d.get("managementAgent") or "mdm") for d in devices]
    os_counts: Counter[str] = Counter()
    for d in devices:
        os_counts[_os_bucket(str(d.get("operatingSystem") or ""))] += 1
    body: dict[str, Any] = {
        "@odata.context": f"{call.base}/$metadata#deviceManagement/managedDeviceOverview/$entity",
        "id": "managedDeviceOverview",
        "enrolledDeviceCount": sum(1 for a in agents if a != "intuneClient"),
        "mdmEnrolledCount": sum(1 for a in agents if "mdm" in a.lower()),
        "dualEnrolledDeviceCount": sum(1 for a in agents if "mdm" in a.lower()
                                       and "eas" in a.lower()),
        "deviceOperatingSystemSummary": {
            "androidCount": os_counts["android"], "iosCount": os_counts["ios"],
            "macOSCount": os_counts["macos"], "windowsMobileCount": 0,
            "windowsCount": os_counts["windows"], "unknownCount": os_counts["unknown"],
            "androidDedicatedCount": 0, "androidDeviceAdminCount": 0,
            "androidFullyManagedCount": 0, "androidWorkProfileCount": 0,
            "androidCorporateWorkProfileCount": 0, "configMgrDeviceCount": 0},
        "deviceExchangeAccessStateSummary": {
            "allowedDeviceCount": 0, "blockedDeviceCount": 0, "quarantinedDeviceCount": 0,
            "unknownDeviceCount": 0, "unavailableDeviceCount": 0},
    }
    return Reply(200, body)


def _os_bucket(name: str) -> str:
    lowered = name.lower()
    for bucket in ("windows", "ios", "android", "macos"):
        if lowered.startswith(bucket) or (bucket == "ios" and lowered.startswith("ipados")):
            return bucket
    return "unknown"


# ---- BitLocker -------------------------------------------------------------------------------

def recovery_keys(call: Call, spec: ListSpec | None) -> Reply:
    spec = _spec(spec)
    select = {s.strip().lower() for s in (call.param("$select") or "").split(",")}
    if "key" in select:
        raise GraphFault(400, "The 'key' property can only be selected when reading a single "
                              "recovery key.", family="other")
    return listing.serve(call, spec, call.tenant.collections["recoveryKeys"].values())


def recovery_key(call: Call, spec: ListSpec | None) -> Reply:
    found = call.tenant.get("recoveryKeys", call.args["id"])
    if found is None:
        raise not_found(call.args["id"], "other")
    select = {s.strip().lower() for s in (call.param("$select") or "").split(",")}
    if "key" in select and not call.has_role("BitlockerKey.Read.All"):
        raise forbidden("other", ("BitlockerKey.Read.All",))
    return listing.serve_one(call, _spec(spec), found)


# ---- unknown ------------------------------------------------------------------------------------

def segment_not_found(segment: str) -> GraphFault:
    return GraphFault(400, f"Resource not found for the segment '{segment}'.",
                      code="BadRequest")
