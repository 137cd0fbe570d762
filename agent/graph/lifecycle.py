"""Graph access for the leaver lifecycle: users, the leave group, devices, deleted items.

Reads map Graph JSON into small frozen models; writes return the client's `WriteResult`
(status, Graph's request id, `already_gone`). Nothing here decides *whether* to change
anything: that is `jobs.offboarding`.

Leavers are found in one full pass over /users with `$select`, not with
`$filter=employeeLeaveDateTime le ...`:
- a filter on employeeLeaveDateTime is an advanced query (ConsistencyLevel: eventual):
  its index can lag the directory, so an account just re-enabled, or whose leave date HR
  just cleared, could still show up as a leaver with stale state: the wrong direction for
  a job that deletes accounts. A default /users read is the directory as it is;
- the job needs more users than those with a leave date anyway: leave-group members
  (often without one), and the ledger's users whose leave date was cleared since;
- the cost is one request per 999 users (50 000 users: 51 requests, once a day).
Before each delete the user is read again (`get_user`), so a purge acts on fresh state.

Permissions: reading employeeLeaveDateTime needs User-LifeCycleInfo.Read.All *in
addition* to User.Read.All; without it Graph returns the property as null, silently (no
403), so the job warns when no user has a leave date but its ledger knows leavers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.errors import GraphError, GraphNotFoundError, GraphPermissionError
from agent.graph.client import GraphClient, WriteResult, require_text

USERS_READ = "User.Read.All"
LIFECYCLE_READ = "User-LifeCycleInfo.Read.All"
# the least-privileged application permission of each write (Microsoft's tables); the
# broader User.ReadWrite.All also covers the first three, never the permanent delete
USERS_ENABLE_DISABLE = "User.EnableDisableAccount.All"  # graph/api/user-update
USERS_REVOKE = "User.RevokeSessions.All"  # graph/api/user-revokesigninsessions
USERS_DELETE = "User.DeleteRestore.All"  # graph/api/user-delete
# graph/api/directory-deleteditems-delete, resource user, application: this one only
USERS_PURGE = "User.DeleteRestore.All"
# transitiveMembers: GroupMember.ReadBasic.All is its least privileged application
# permission (group-list-transitivemembers); members' UPNs come with User.Read.All
GROUP_MEMBERS_READ = "GroupMember.ReadBasic.All"
DEVICES_READ = "DeviceManagementManagedDevices.Read.All"
DEVICES_PRIVILEGED = "DeviceManagementManagedDevices.PrivilegedOperations.All"

USER_FIELDS = ("id", "userPrincipalName", "displayName", "accountEnabled",
               "employeeLeaveDateTime", "signInSessionsValidFromDateTime", "userType")
DELETED_USER_FIELDS = ("id", "userPrincipalName", "displayName", "accountEnabled",
                       "employeeLeaveDateTime", "deletedDateTime")
DEVICE_FIELDS = ("id", "deviceName", "userId", "userPrincipalName", "managedDeviceOwnerType",
                 "managementState", "operatingSystem", "deviceActionResults",
                 "managementAgent", "model")
USERS_TOP = 999
DELETED_TOP = 999
MEMBERS_TOP = 999
DEVICES_TOP = 1000

# managementState values meaning a wipe or retire is already under way (or done)
WIPING = frozenset({"wipePending", "wipeIssued"})
RETIRING = frozenset({"retirePending", "retireIssued"})
# a remote action Intune shows as requested and not (yet) finished or failed
ACTION_IN_PROGRESS = frozenset({"pending", "active", "done"})


class ChangeRefused(GraphError):
    """Graph refused a change to this one user with 403 (Authorization_RequestDenied).

    App-only callers cannot disable or delete a user who holds a privileged directory
    role. Not a `GraphAuthError`: `Run.change` records it as a failed action and the
    batch goes on, instead of ending the run as a missing permission would.
    """

    def __init__(self, action: str, user_id: str, cause: GraphPermissionError) -> None:
        self.action = action
        self.user_id = user_id
        self.permission = cause.permission
        super().__init__(
            f"Graph refused to {action} user {user_id} (403 {cause.code or 'Forbidden'}): "
            "app-only callers cannot change a user who holds a privileged admin role; "
            "remove the user's role assignments (or make this change as a Privileged "
            f"Authentication Administrator). If the user holds no role, the app lacks "
            f"{cause.permission}.",
            status=403, code=cause.code, request_id=cause.request_id)


def parse_time(value: Any) -> datetime | None:
    """A Graph DateTimeOffset ("...Z", offsets, 7-digit fractions) as an aware datetime."""
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# ---- models ------------------------------------------------------------------------------

@dataclass(frozen=True)
class DirectoryUser:
    id: str
    upn: str
    display_name: str | None
    enabled: bool
    leave_date: datetime | None
    sessions_valid_from: datetime | None  # set by revokeSignInSessions
    user_type: str | None


@dataclass(frozen=True)
class DeletedUser:
    """A user in the directory's deleted items (soft-deleted, restorable for 30 days)."""

    id: str
    upn: str
    display_name: str | None
    enabled: bool | None
    leave_date: datetime | None
    deleted_at: datetime | None


@dataclass(frozen=True)
class ManagedDevice:
    id: str
    name: str
    user_id: str | None
    owner_type: str  # company | personal | unknown
    management_state: str
    operating_system: str | None
    actions_in_progress: tuple[str, ...]  # e.g. ("wipe",) from deviceActionResults
    management_agent: str = "mdm"  # parse_device: "unknown" when Graph omits it
    model: str | None = None  # a Windows 365 Cloud PC says "Cloud PC ..." here


def parse_user(raw: dict[str, Any]) -> DirectoryUser:
    user_id = require_text(raw, "id", "GET /users")  # never PATCH /users/None
    return DirectoryUser(
        id=user_id,
        upn=str(raw.get("userPrincipalName") or user_id),
        display_name=raw.get("displayName"),
        # a missing accountEnabled is not "disabled": treat as enabled (never purge it)
        enabled=raw.get("accountEnabled") is not False,
        leave_date=parse_time(raw.get("employeeLeaveDateTime")),
        sessions_valid_from=parse_time(raw.get("signInSessionsValidFromDateTime")),
        user_type=raw.get("userType"),
    )


def parse_deleted_user(raw: dict[str, Any]) -> DeletedUser:
    enabled = raw.get("accountEnabled")
    user_id = require_text(raw, "id", "GET /directory/deletedItems")
    return DeletedUser(
        id=user_id,
        upn=original_upn(user_id, raw.get("userPrincipalName")),
        display_name=raw.get("displayName"),
        enabled=enabled if isinstance(enabled, bool) else None,
        leave_date=parse_time(raw.get("employeeLeaveDateTime")),
        deleted_at=parse_time(raw.get("deletedDateTime")),
    )


def original_upn(user_id: str, upn: object) -> str:
    """A deleted user's UPN as it was: Entra puts the object id (no dashes) in front of it."""
    if not isinstance(upn, str) or not upn:
        return user_id
    prefix = user_id.replace("-", "")
    return upn[len(prefix):] if upn.lower().startswith(prefix.lower()) else upn


def parse_device(raw: dict[str, Any]) -> ManagedDevice:
    in_progress: list[str] = []
    for result in raw.get("deviceActionResults") or []:
        if not isinstance(result, dict):
            continue
        name = str(result.get("actionName") or "").lower()
        if name in ("wipe", "retire") and result.get("actionState") in ACTION_IN_PROGRESS:
            in_progress.append(name)
    device_id = require_text(raw, "id", "GET /deviceManagement/managedDevices")
    return ManagedDevice(
        id=device_id,
        name=str(raw.get("deviceName") or device_id),
        user_id=raw.get("userId") or None,
        owner_type=str(raw.get("managedDeviceOwnerType") or "unknown"),
        management_state=str(raw.get("managementState") or "managed"),
        operating_system=raw.get("operatingSystem"),
        actions_in_progress=tuple(in_progress),
        management_agent=str(raw.get("managementAgent") or "unknown"),
        model=raw.get("model") or None,
    )


# ---- reads -------------------------------------------------------------------------------

async def list_users(graph: GraphClient) -> list[DirectoryUser]:
    """Every user, one paged pass (see the module docstring for why not a filter)."""
    return [parse_user(raw) async for raw in graph.list(
        "/users", permission=LIFECYCLE_READ, select=USER_FIELDS, top=USERS_TOP)]


async def get_user(graph: GraphClient, user_id: str) -> DirectoryUser | None:
    """The user as it is now; None when it no longer exists (deleted)."""
    try:
        raw = await graph.get(f"/users/{user_id}", permission=LIFECYCLE_READ,
                              select=USER_FIELDS)
    except GraphNotFoundError:
        return None
    return parse_user(raw)


async def get_deleted_user(graph: GraphClient, user_id: str) -> DeletedUser | None:
    """The user in deleted items as a direct read sees it; None on 404 (purged, or right
    after the delete: not replicated yet; the caller knows which it can be)."""
    try:
        raw = await graph.get(f"/directory/deletedItems/{user_id}", permission=USERS_READ,
                              select=DELETED_USER_FIELDS)
    except GraphNotFoundError:
        return None
    return parse_deleted_user(raw)


async def group_user_ids(graph: GraphClient, group_id: str) -> frozenset[str]:
    """Ids of the users in a group, nested groups included (transitive members).

    Raises GraphNotFoundError when the group does not exist.
    """
    ids: set[str] = set()
    async for raw in graph.list(f"/groups/{group_id}/transitiveMembers",
                                permission=GROUP_MEMBERS_READ,
                                select=("id", "userPrincipalName"), top=MEMBERS_TOP):
        kind = raw.get("@odata.type")
        if kind in (None, "#microsoft.graph.user") and raw.get("id"):
            ids.add(str(raw["id"]))
    return frozenset(ids)


async def deleted_users(graph: GraphClient) -> list[DeletedUser]:
    """Users in deleted items (the cast segment is required by Graph)."""
    return [parse_deleted_user(raw) async for raw in graph.list(
        "/directory/deletedItems/microsoft.graph.user", permission=USERS_READ,
        select=DELETED_USER_FIELDS, top=DELETED_TOP)]


async def managed_devices(graph: GraphClient) -> list[ManagedDevice]:
    """Every Intune managed device, one paged pass; the job joins them to leavers by userId.

    One pass instead of /users/{id}/managedDevices per leaver: the request count then
    does not grow with the number of leavers a run looks at.
    """
    return [parse_device(raw) async for raw in graph.list(
        "/deviceManagement/managedDevices", permission=DEVICES_READ,
        select=DEVICE_FIELDS, top=DEVICES_TOP)]


# ---- writes ------------------------------------------------------------------------------

async def disable_user(graph: GraphClient, user_id: str) -> WriteResult:
    """accountEnabled = false. Licences are left alone on purpose (the mailbox stays)."""
    try:
        return await graph.patch(f"/users/{user_id}", {"accountEnabled": False},
                                 permission=USERS_ENABLE_DISABLE)
    except GraphPermissionError as exc:
        raise ChangeRefused("disable", user_id, exc) from None


async def revoke_sessions(graph: GraphClient, user_id: str) -> WriteResult:
    """Invalidate refresh and session tokens. Repeating it is harmless, so it may be retried."""
    return await graph.post(f"/users/{user_id}/revokeSignInSessions",
                            permission=USERS_REVOKE, idempotent=True)


async def wipe_device(graph: GraphClient, device_id: str) -> WriteResult:
    """Factory-reset a company device. Not retried on 503/timeouts: the job checks
    managementState next run instead of risking a second wipe command."""
    try:
        return await graph.post(f"/deviceManagement/managedDevices/{device_id}/wipe",
                                {"keepEnrollmentData": False, "keepUserData": False},
                                permission=DEVICES_PRIVILEGED)
    except GraphNotFoundError as exc:  # the device left Intune meanwhile
        return WriteResult(status=404, request_id=exc.request_id, already_gone=True)


async def retire_device(graph: GraphClient, device_id: str) -> WriteResult:
    """Remove company data and management from a personal device; its own data stays."""
    try:
        return await graph.post(f"/deviceManagement/managedDevices/{device_id}/retire",
                                permission=DEVICES_PRIVILEGED)
    except GraphNotFoundError as exc:
        return WriteResult(status=404, request_id=exc.request_id, already_gone=True)


async def delete_user(graph: GraphClient, user_id: str) -> WriteResult:
    """Soft-delete: the user moves to deleted items. 404 -> already_gone.

    A 403 here is turned into `ChangeRefused` (for this DELETE only): Graph refuses
    app-only deletes of users holding a privileged role, which must fail this one purge
    with a finding, not end the run as a missing permission.
    """
    try:
        return await graph.delete(f"/users/{user_id}", permission=USERS_DELETE)
    except GraphPermissionError as exc:
        raise ChangeRefused("delete", user_id, exc) from None


async def purge_deleted_user(graph: GraphClient, user_id: str) -> WriteResult:
    """Permanently delete from deleted items (cannot be undone).

    A 404 (`already_gone`) is *not* evidence that the user is purged: right after
    DELETE /users/{id} the deleted item may not have replicated yet. The job retries, and
    records "purged" only on 204 or on direct reads that find the user nowhere."""
    return await graph.delete(f"/directory/deletedItems/{user_id}", permission=USERS_PURGE)
