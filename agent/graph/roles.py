"""Directory roles: who holds which Entra role, how (PIM eligible, PIM active, outside PIM).

Requests, for a whole tenant:
- `roleDefinitions` (one page);
- `roleAssignmentScheduleInstances?$expand=principal`: every active assignment, PIM
  activations (`assignmentType` Activated) and assignments (Assigned; permanent when
  `endDateTime` is null), including those made directly through the roleAssignments API;
- `roleEligibilityScheduleInstances?$expand=principal`: every eligible assignment;
- `roleAssignments?$expand=principal`: the role assignments themselves; one with no
  schedule instance behind it was made outside PIM;
- `groups/{id}/transitiveMembers` once per group that holds a role (role-assignable
  groups), so holders through a group are known by name and type;
- `users?$filter=id in (...)`, 15 ids a request, only for the principals and members
  Graph did not expand (deleted, or served with limited information: id and type);
- MFA registration: `reports/authenticationMethods/userRegistrationDetails` filtered on
  15 holders' UPNs a request, paced to that API's five requests per 10 seconds.
`$expand=principal` inlines the principal (user with UPN and userType, group, service
principal) in the same page, so principals cost no extra requests. A principal that is
nowhere to be found (deleted) keeps type "unknown": the job reports it, it does not fail.
Service principals' details need Application.Read.All, which the job does not ask: Graph
then expands them with id and type only, and they are named by id.
Raw Graph JSON is mapped here into small frozen dataclasses; nothing else sees it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

from agent.errors import GraphDataError, GraphError, GraphNotFoundError, GraphPermissionError
from agent.graph import role_templates
from agent.graph.client import GraphClient
from agent.graph.pacing import Pacer

# RoleManagement.Read.Directory reads definitions, assignments and both kinds of schedule
# instances (RoleAssignmentSchedule/RoleEligibilitySchedule.Read.Directory would cover only
# one each): one permission to grant, and the one a 403 names.
ROLES_PERMISSION = "RoleManagement.Read.Directory"
# transitiveMembers: least privileged is GroupMember.ReadBasic.All (Graph docs,
# includes/permissions/group-list-transitivemembers-permissions.md); members' own
# properties come with the permission to read their type (User.Read.All for users).
MEMBERS_PERMISSION = "GroupMember.ReadBasic.All"
USERS_PERMISSION = "User.Read.All"
MFA_PERMISSION = "AuditLog.Read.All"

BASE = "/roleManagement/directory"
MEMBERS_PAGE_SIZE = 999  # the documented maximum for directory-object collections
MEMBER_SELECT = ("id", "displayName", "userPrincipalName", "userType", "accountEnabled")
USER_SELECT = MEMBER_SELECT

PrincipalType = Literal["user", "group", "servicePrincipal", "unknown"]
Kind = Literal["active", "eligible"]
Origin = Literal["pim", "outside-pim"]

_ODATA_TYPES: dict[str, PrincipalType] = {
    "#microsoft.graph.user": "user",
    "#microsoft.graph.group": "group",
    "#microsoft.graph.servicePrincipal": "servicePrincipal",
}


@dataclass(frozen=True, slots=True)
class Principal:
    id: str
    type: PrincipalType
    display_name: str | None = None
    upn: str | None = None  # users only
    user_type: str | None = None  # users only: Member, Guest
    account_enabled: bool | None = None

    @property
    def name(self) -> str:
        """What a person reads: the UPN for a user, else the display name, else the id."""
        return self.upn or self.display_name or self.id

    @property
    def is_guest(self) -> bool:
        return self.type == "user" and (self.user_type or "").lower() == "guest"


@dataclass(frozen=True, slots=True)
class RoleDefinition:
    id: str  # the roleDefinitionId assignments refer to
    template_id: str  # equals id for built-in roles
    name: str
    built_in: bool
    enabled: bool
    privileged: bool | None  # Graph's isPrivileged, else Microsoft's label; None: unknown


@dataclass(frozen=True, slots=True)
class RoleAssignment:
    """One assignment of a role to a principal (a user, group or service principal)."""

    id: str
    principal: Principal
    role_id: str  # roleDefinitionId
    scope: str  # directoryScopeId, "/" for the whole tenant
    kind: Kind
    activated: bool  # an active PIM activation of an eligible assignment
    origin: Origin
    member_type: str | None  # Direct, Group, Inherited
    start: datetime | None
    end: datetime | None  # None: no end date

    @property
    def permanent(self) -> bool:
        """Active without an end date, not a (time-boxed) PIM activation."""
        return self.kind == "active" and not self.activated and self.end is None


@dataclass(frozen=True)
class RoleInventory:
    definitions: tuple[RoleDefinition, ...]
    assignments: tuple[RoleAssignment, ...]
    # group id -> its transitive members that can hold a role (users, service principals)
    members: dict[str, tuple[Principal, ...]] = field(default_factory=dict)

    def definition(self, role_id: str) -> RoleDefinition | None:
        for definition in self.definitions:
            if role_id in (definition.id, definition.template_id):
                return definition
        return None


# ---- mapping ------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _moment(raw: Any, what: str) -> datetime | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise GraphDataError(f"{what}: date-time is not a string")
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise GraphDataError(f"{what}: not an ISO date-time: {raw[:40]!r}") from None
    if moment.tzinfo is None:
        raise GraphDataError(f"{what}: date-time without an offset")
    return moment


def principal_from(raw: Any) -> Principal | None:
    """A directoryObject (expanded principal or a member) -> Principal; None if unusable."""
    if not isinstance(raw, dict) or not _text(raw.get("id")):
        return None
    odata = str(raw.get("@odata.type") or "")
    kind: PrincipalType = _ODATA_TYPES.get(odata, "unknown")
    if kind == "unknown" and _text(raw.get("userPrincipalName")):
        kind = "user"  # some responses omit @odata.type on derived-type properties
    enabled = raw.get("accountEnabled")
    return Principal(
        id=str(raw["id"]).lower(),
        type=kind,
        display_name=_text(raw.get("displayName")),
        upn=_text(raw.get("userPrincipalName")) if kind == "user" else None,
        user_type=_text(raw.get("userType")) if kind == "user" else None,
        account_enabled=enabled if isinstance(enabled, bool) else None,
    )


def definition_from(raw: dict[str, Any]) -> RoleDefinition:
    role_id = _text(raw.get("id"))
    if role_id is None:
        raise GraphDataError("a role definition has no id")
    template_id = (_text(raw.get("templateId")) or role_id).lower()
    flag = raw.get("isPrivileged")  # beta, and v1.0 where Graph has it
    privileged = flag if isinstance(flag, bool) else role_templates.is_privileged(template_id)
    return RoleDefinition(
        id=role_id.lower(),
        template_id=template_id,
        name=_text(raw.get("displayName")) or role_id,
        built_in=raw.get("isBuiltIn") is True,
        enabled=raw.get("isEnabled") is not False,
        privileged=privileged,
    )


def _assignment_from(raw: dict[str, Any], *, kind: Kind, origin: Origin,
                     principal: Principal) -> RoleAssignment:
    ident = _text(raw.get("id")) or ""
    role_id = _text(raw.get("roleDefinitionId"))
    if role_id is None:
        raise GraphDataError(f"role assignment {ident}: no roleDefinitionId")
    what = f"role assignment {ident}"
    return RoleAssignment(
        id=ident,
        principal=principal,
        role_id=role_id.lower(),
        scope=_text(raw.get("directoryScopeId")) or "/",
        kind=kind,
        activated=str(raw.get("assignmentType") or "").lower() == "activated",
        origin=origin,
        member_type=_text(raw.get("memberType")),
        start=_moment(raw.get("startDateTime"), what),
        end=_moment(raw.get("endDateTime"), what),
    )


# ---- reads --------------------------------------------------------------------------------


class LicenceRequiredError(GraphError):
    """Graph refused a read because the tenant lacks a licence (not a permission): exit 3,
    with a message that names the licence."""


def _complete(principal: Principal | None) -> bool:
    """Graph expanded it fully: typed, and a user with its userType (a user Graph serves
    with limited information, id and type only, has none)."""
    return principal is not None and principal.type != "unknown" and \
        not (principal.type == "user" and principal.user_type is None)


class _Principals:
    """Principals met so far. Those Graph could not expand (deleted, or served with
    limited information) are only noted here, and resolved afterwards in bulk."""

    def __init__(self) -> None:
        self.known: dict[str, Principal] = {}
        self.pending: set[str] = set()

    def of(self, raw: dict[str, Any]) -> Principal:
        principal_id = str(raw.get("principalId") or "").lower()
        expanded = principal_from(raw.get("principal"))
        if expanded is not None and _complete(expanded):
            return self.known.setdefault(expanded.id, expanded)
        if not principal_id:
            raise GraphDataError(f"role assignment {raw.get('id')}: no principalId")
        self.pending.add(principal_id)
        return self.known.setdefault(principal_id,
                                     expanded or Principal(id=principal_id, type="unknown"))


# `id in (...)` takes at most 15 values by default (graph/filter-query-parameter, known
# issues: "requests are limited to 15 expressions in the filter clause").
FILTER_CHUNK = 15


def _chunks(items: Sequence[str], size: int = FILTER_CHUNK) -> Iterable[Sequence[str]]:
    return (items[i:i + size] for i in range(0, len(items), size))


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"  # OData string literal


async def resolve_users(graph: GraphClient, ids: Iterable[str]) -> dict[str, Principal]:
    """Users by object id, 15 per request (`/users?$filter=id in (...)`, User.Read.All).

    POST /directoryObjects/getByIds would take 1,000 ids at once, but its only documented
    application permission is Directory.Read.All, which this job does not ask for; the
    ids it is given are those Graph did not expand, a handful. What is not found here is
    no user (a deleted principal, or a service principal or group Graph served without
    details), and stays unresolved.
    """
    wanted = sorted(set(ids))
    found: dict[str, Principal] = {}
    for chunk in _chunks(wanted):
        async for raw in graph.list(
                "/users", permission=USERS_PERMISSION, select=USER_SELECT,
                filter=f"id in ({','.join(_quoted(i) for i in chunk)})"):
            user = principal_from({**raw, "@odata.type": "#microsoft.graph.user"})
            if user is not None:
                found[user.id] = user
    return found


async def list_role_definitions(graph: GraphClient) -> list[RoleDefinition]:
    return [definition_from(raw) async for raw in graph.list(
        f"{BASE}/roleDefinitions", permission=ROLES_PERMISSION)]


async def _instances(graph: GraphClient, principals: _Principals, path: str, *,
                     permission: str, kind: Kind) -> tuple[list[RoleAssignment], set[str]]:
    """Schedule instances as assignments, plus the ids of the role assignments behind them."""
    found: list[RoleAssignment] = []
    origins: set[str] = set()
    try:
        async for raw in graph.list(path, permission=permission,
                                    params={"$expand": "principal"}):
            principal = principals.of(raw)
            found.append(_assignment_from(raw, kind=kind, origin="pim", principal=principal))
            origin = _text(raw.get("roleAssignmentOriginId"))
            if origin:
                origins.add(origin)
    except GraphError as exc:
        if exc.code == PIM_UNLICENSED:
            raise LicenceRequiredError(
                f"PIM needs Entra ID P2 (or ID Governance): Graph refused GET {path} "
                f"({exc.code}); license the tenant, or run without privileged-roles",
                status=exc.status, code=exc.code, request_id=exc.request_id) from None
        raise
    return found, origins


def _key(assignment: RoleAssignment) -> tuple[str, str, str]:
    return assignment.principal.id, assignment.role_id, assignment.scope


async def transitive_members(graph: GraphClient, group_id: str) -> tuple[Principal, ...]:
    """The users and service principals in a group, through nested groups too."""
    members: dict[str, Principal] = {}
    async for raw in graph.list(f"/groups/{group_id}/transitiveMembers",
                                permission=MEMBERS_PERMISSION, select=MEMBER_SELECT,
                                top=MEMBERS_PAGE_SIZE):
        member = principal_from(raw)
        # nested groups' own members are listed too; devices and contacts hold no roles
        if member is not None and member.type in ("user", "servicePrincipal"):
            members.setdefault(member.id, member)
    return tuple(members.values())


async def fetch_inventory(graph: GraphClient) -> RoleInventory:
    """Every role definition and assignment in the tenant, role-holding groups expanded."""
    principals = _Principals()
    definitions = await list_role_definitions(graph)
    active, origins = await _instances(
        graph, principals, f"{BASE}/roleAssignmentScheduleInstances",
        permission=ROLES_PERMISSION, kind="active")
    eligible, _ = await _instances(
        graph, principals, f"{BASE}/roleEligibilityScheduleInstances",
        permission=ROLES_PERMISSION, kind="eligible")
    covered = {_key(a) for a in active}
    outside: list[RoleAssignment] = []
    async for raw in graph.list(f"{BASE}/roleAssignments", permission=ROLES_PERMISSION,
                                params={"$expand": "principal"}):
        if _text(raw.get("id")) in origins:
            continue  # the schedule instance above already stands for it
        principal = principals.of(raw)
        assignment = _assignment_from(raw, kind="active", origin="outside-pim",
                                      principal=principal)
        if _key(assignment) not in covered:
            outside.append(assignment)
    assignments = (*active, *eligible, *outside)
    members: dict[str, tuple[Principal, ...]] = {}
    for assignment in assignments:
        group_id = assignment.principal.id
        if assignment.principal.type == "group" and group_id not in members:
            members[group_id] = await transitive_members(graph, group_id)  # once per group
    # Users Graph served without details (as a principal or a member): one bulk read.
    pending = principals.pending | {m.id for held in members.values() for m in held
                                    if m.type == "user" and m.user_type is None}
    resolved = await resolve_users(graph, pending) if pending else {}

    def settled(principal: Principal) -> Principal:
        return resolved.get(principal.id, principal)

    return RoleInventory(
        definitions=tuple(definitions),
        assignments=tuple(replace(a, principal=settled(a.principal)) for a in assignments),
        members={g: tuple(settled(m) for m in held) for g, held in members.items()})


# PIM's answer (400) for a tenant without Entra ID P2 / ID Governance, as reported by
# tools that met it (e.g. mondoohq/mql#8955, Galvnyz/M365-Assess#117); not in Graph's docs.
PIM_UNLICENSED = "AadPremiumLicenseRequired"

# The identity-and-access reports allow five requests per 10 seconds per app and tenant
# (includes/throttling-entra-logs-reports.md); the pacer keeps every request inside that.
REPORT_REQUESTS, REPORT_WINDOW = 5, 10.0
REGISTRATION_PATH = "/reports/authenticationMethods/userRegistrationDetails"
# Graph's answer for a tenant without Entra ID P1/P2 (or a B2C tenant), with 403.
NON_PREMIUM = "Authentication_RequestFromNonPremiumTenantOrB2CTenant"


async def mfa_registration(graph: GraphClient, users: Iterable[Principal]
                           ) -> dict[str, bool | None]:
    """isMfaRegistered per user id; None when the report has no row for the user.

    The fewest requests the report allows for role holders: `$filter` on
    userPrincipalName (documented: eq), 15 holders OR-ed per request, paced to the
    reports' five requests per 10 seconds. (The list documents only $filter and
    $orderby, and no $filter on id; a pass over the whole report would be one request per
    page of every user in the tenant.) A holder without a UPN is matched by no filter and
    has no row.
    """
    wanted = {u.id: u for u in users if u.type == "user"}
    result: dict[str, bool | None] = dict.fromkeys(wanted)
    by_upn = sorted({u.upn for u in wanted.values() if u.upn})
    pacer = Pacer(REPORT_REQUESTS, REPORT_WINDOW, sleep=graph.sleep, clock=graph.clock)
    for chunk in _chunks(by_upn):
        flt = " or ".join(f"userPrincipalName eq {_quoted(upn)}" for upn in chunk)
        try:
            # every page is a request against the reports' budget: paced, each one
            async for raw in graph.list(REGISTRATION_PATH, permission=MFA_PERMISSION,
                                        filter=flt, pace=pacer.turn):
                user_id = str(raw.get("id") or "").lower()
                if user_id in result:
                    flag = raw.get("isMfaRegistered")
                    result[user_id] = flag if isinstance(flag, bool) else None
        except GraphPermissionError as exc:
            if exc.code == NON_PREMIUM:
                raise LicenceRequiredError(
                    "the MFA registration report needs Entra ID P1/P2: Graph refused "
                    f"GET {REGISTRATION_PATH} ({exc.code}); license the tenant for Entra "
                    "ID P1 or P2 (Microsoft 365 E3/E5 include it)",
                    status=403, code=exc.code, request_id=exc.request_id) from None
            raise
    return result


async def find_user(graph: GraphClient, key: str) -> Principal | None:
    """A user by object id or UPN; None if there is no such user."""
    try:
        # '#' in a guest's UPN (…#EXT#@…) must be escaped, or it starts a URL fragment
        raw = await graph.get(f"/users/{quote(key, safe='@')}", permission=USERS_PERMISSION,
                              select=USER_SELECT)
    except GraphNotFoundError:
        return None
    return principal_from({**raw, "@odata.type": "#microsoft.graph.user"})
