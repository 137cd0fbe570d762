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
- MFA registration: `reports/authenticationMethods/userRegistrationDetails/{id}` per user
  holder (up to 100, four at a time), else one paged pass over the whole report.
`$expand=principal` inlines the principal (user with UPN and userType, group, service
principal) in the same page, so principals cost no extra requests; only a principal
Graph could not expand (deleted, or a user without userType) is read on its own.
Raw Graph JSON is mapped here into small frozen dataclasses; nothing else sees it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

from agent.errors import GraphDataError, GraphNotFoundError
from agent.graph import role_templates
from agent.graph.client import GraphClient

# RoleManagement.Read.Directory reads definitions, assignments and both kinds of schedule
# instances (RoleAssignmentSchedule/RoleEligibilitySchedule.Read.Directory would cover only
# one each): one permission to grant, and the one a 403 names.
ROLES_PERMISSION = "RoleManagement.Read.Directory"
MEMBERS_PERMISSION = "GroupMember.Read.All"
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


class _Principals:
    """Principals met so far; the few Graph could not expand are read one by one, once."""

    def __init__(self, graph: GraphClient) -> None:
        self.graph = graph
        self.known: dict[str, Principal] = {}

    async def of(self, raw: dict[str, Any]) -> Principal:
        principal_id = str(raw.get("principalId") or "").lower()
        expanded = principal_from(raw.get("principal"))
        if expanded is not None and not (expanded.type == "user" and expanded.user_type is None):
            self.known.setdefault(expanded.id, expanded)
            return expanded
        if not principal_id:
            raise GraphDataError(f"role assignment {raw.get('id')}: no principalId")
        if principal_id not in self.known:
            self.known[principal_id] = await self._read(principal_id, expanded)
        return self.known[principal_id]

    async def _read(self, principal_id: str, partial: Principal | None) -> Principal:
        # A partial user (no userType) is a user: one GET. Otherwise try each type in turn.
        attempts: Sequence[tuple[str, tuple[str, ...], PrincipalType]] = (
            (f"/users/{principal_id}", USER_SELECT, "user"),
            (f"/servicePrincipals/{principal_id}",
             ("id", "displayName", "accountEnabled"), "servicePrincipal"),
            (f"/groups/{principal_id}", ("id", "displayName"), "group"),
        )
        if partial is not None and partial.type != "unknown":
            attempts = [a for a in attempts if a[2] == partial.type]
        for path, select, kind in attempts:
            permission = USERS_PERMISSION if kind == "user" else ROLES_PERMISSION
            try:
                raw = await self.graph.get(path, permission=permission, select=select)
            except GraphNotFoundError:
                continue
            found = principal_from({**raw, "@odata.type": f"#microsoft.graph.{kind}"})
            if found is not None:
                return found
        # A deleted principal: its assignment still counts, under its id.
        return partial or Principal(id=principal_id, type="unknown")


async def list_role_definitions(graph: GraphClient) -> list[RoleDefinition]:
    return [definition_from(raw) async for raw in graph.list(
        f"{BASE}/roleDefinitions", permission=ROLES_PERMISSION)]


async def _instances(graph: GraphClient, principals: _Principals, path: str, *,
                     permission: str, kind: Kind) -> tuple[list[RoleAssignment], set[str]]:
    """Schedule instances as assignments, plus the ids of the role assignments behind them."""
    found: list[RoleAssignment] = []
    origins: set[str] = set()
    async for raw in graph.list(path, permission=permission, params={"$expand": "principal"}):
        principal = await principals.of(raw)
        found.append(_assignment_from(raw, kind=kind, origin="pim", principal=principal))
        origin = _text(raw.get("roleAssignmentOriginId"))
        if origin:
            origins.add(origin)
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
    principals = _Principals(graph)
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
        principal = await principals.of(raw)
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
    return RoleInventory(definitions=tuple(definitions), assignments=assignments,
                         members=members)


# Up to this many holders: one GET each (a few, concurrently). Beyond it, one paged pass over
# the whole report is fewer requests than a GET per holder.
PER_USER_MFA_LIMIT = 100
MFA_CONCURRENCY = 4
REGISTRATION_PATH = "/reports/authenticationMethods/userRegistrationDetails"


async def mfa_registration(graph: GraphClient, user_ids: Iterable[str]) -> dict[str, bool | None]:
    """isMfaRegistered per user id; None when the report has no row for the user.

    The report's list endpoint can neither $select nor filter by id, so it reads every user
    of the tenant: for a few role holders a GET each is cheaper, for many the list is.
    """
    wanted = list(dict.fromkeys(user_ids))
    if len(wanted) > PER_USER_MFA_LIMIT:
        return await _mfa_from_report(graph, wanted)
    gate = asyncio.Semaphore(MFA_CONCURRENCY)

    async def one(user_id: str) -> bool | None:
        async with gate:
            try:
                raw = await graph.get(f"{REGISTRATION_PATH}/{user_id}",
                                      permission=MFA_PERMISSION)
            except GraphNotFoundError:
                return None
        flag = raw.get("isMfaRegistered")
        return flag if isinstance(flag, bool) else None

    flags = await asyncio.gather(*(one(user_id) for user_id in wanted))
    return dict(zip(wanted, flags, strict=True))


async def _mfa_from_report(graph: GraphClient, wanted: list[str]) -> dict[str, bool | None]:
    result: dict[str, bool | None] = dict.fromkeys(wanted)
    async for raw in graph.list(REGISTRATION_PATH, permission=MFA_PERMISSION):
        user_id = raw.get("id")
        if user_id in result:
            flag = raw.get("isMfaRegistered")
            result[user_id] = flag if isinstance(flag, bool) else None
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
