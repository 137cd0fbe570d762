"""`config check --online`: get a token, compare its granted permissions with the jobs' needs."""

from __future__ import annotations

from collections.abc import Sequence

from agent.graph.connect import build_graph_client, token_roles
from agent.job import JobSpec
from agent.settings import Settings

# A granted permission also covers these weaker ones: X implies Y only where every call
# the agent makes with Y lists X among its permissions in Microsoft's tables.
# - User.ReadWrite.All is listed for PATCH accountEnabled (least: User.EnableDisableAccount
#   .All), revokeSignInSessions (least: User.RevokeSessions.All) and DELETE /users/{id}; it
#   is *not* listed for the app-only permanent delete from deleted items, which takes
#   User.DeleteRestore.All (graph/api/directory-deleteditems-delete), so it implies neither
#   that nor User.DeleteRestore.All.
# - Directory.ReadWrite.All cannot delete users (graph/api/user-delete); it is listed for
#   user-update and revokeSignInSessions only.
IMPLIES: dict[str, tuple[str, ...]] = {
    "Directory.ReadWrite.All": ("Directory.Read.All", "User.Read.All",
                                "User.EnableDisableAccount.All", "User.RevokeSessions.All",
                                "GroupMember.Read.All", "Device.Read.All",
                                "Organization.Read.All"),
    "Directory.Read.All": ("User.Read.All", "GroupMember.Read.All", "Device.Read.All",
                           "Organization.Read.All"),
    "User.ReadWrite.All": ("User.Read.All", "User.EnableDisableAccount.All",
                           "User.RevokeSessions.All"),
    "Group.Read.All": ("GroupMember.Read.All",),
    "GroupMember.Read.All": ("GroupMember.ReadBasic.All",),  # and so Group/Directory.Read.All
    "RoleManagement.Read.All": ("RoleManagement.Read.Directory",),
    "RoleManagement.ReadWrite.Directory": ("RoleManagement.Read.Directory",
                                           "RoleEligibilitySchedule.Read.Directory",
                                           "RoleAssignmentSchedule.Read.Directory"),
    "RoleManagement.Read.Directory": ("RoleEligibilitySchedule.Read.Directory",
                                      "RoleAssignmentSchedule.Read.Directory"),
    "DeviceManagementManagedDevices.ReadWrite.All": ("DeviceManagementManagedDevices.Read.All",),
    "DeviceManagementConfiguration.ReadWrite.All": ("DeviceManagementConfiguration.Read.All",),
    "BitlockerKey.Read.All": ("BitlockerKey.ReadBasic.All",),
}


def effective(granted: set[str]) -> set[str]:
    result = set(granted)
    changed = True
    while changed:
        changed = False
        for permission in list(result):
            for weaker in IMPLIES.get(permission, ()):
                if weaker not in result:
                    result.add(weaker)
                    changed = True
    return result


async def check_online(settings: Settings, jobs: Sequence[JobSpec]) -> list[tuple[str, str]]:
    """Return (job, permission) for each permission an enabled job needs and lacks.

    Raises GraphAuthError when no token can be had (exit 3)."""
    async with build_graph_client(settings) as graph:
        token = await graph.access_token()
        granted = effective(token_roles(token))
    return [(spec.id, permission) for spec in jobs
            for permission in (*spec.permissions,
                               *settings.policy(spec.policy_section).extra_permissions())
            if permission not in granted] + [
        ("notify", permission) for permission in settings.notify.extra_permissions()
        if permission not in granted]
