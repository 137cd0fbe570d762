"""Offboarding asks for the permissions real Graph demands, and the sandbox enforces them.

Microsoft's permission tables (learn.microsoft.com/graph/api/...):
- user-update (accountEnabled): User.EnableDisableAccount.All (least), User.ReadWrite.All;
- user-revokesigninsessions: User.RevokeSessions.All (least), User.ReadWrite.All,
  Directory.ReadWrite.All;
- user-delete: User.DeleteRestore.All (least), User.ReadWrite.All. Directory.ReadWrite.All
  does not include deleting users;
- directory-deleteditems-delete, resource user, application: User.DeleteRestore.All only.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from agent.cli import main
from agent.graph.client import GraphClient
from agent.graph.connect import SANDBOX_GRAPH_URL, _with_sdk_middleware
from agent.online_check import effective
from agent.sandbox import SandboxTokenSource
from agent.sandbox.transport import SandboxTransport
from jobs import REGISTRY
from tests.conftest import RecordingSleep
from tests.helpers_offboarding import add_leaver, small_tenant, uid
from tests.test_cli import config

READS = ("User.Read.All", "User-LifeCycleInfo.Read.All", "GroupMember.ReadBasic.All",
         "DeviceManagementManagedDevices.Read.All")


async def _status(tenant: object, roles: tuple[str, ...], method: str, path: str) -> int:
    http = _with_sdk_middleware(httpx.AsyncClient(transport=SandboxTransport(tenant)))  # type: ignore[arg-type]
    async with GraphClient(http, SandboxTokenSource(roles), graph_url=SANDBOX_GRAPH_URL,
                           sleep=RecordingSleep()) as graph:
        response = await graph._http.request(  # the raw status, no product mapping
            method, f"{SANDBOX_GRAPH_URL}/v1.0{path}",
            headers={"Authorization": f"Bearer {await graph.access_token()}"})
        return response.status_code


@pytest.mark.parametrize(("roles", "expected"), [
    (("User.ReadWrite.All",), 403),  # app-only permanent delete is not in User.ReadWrite.All
    (("Directory.ReadWrite.All",), 403),
    (("User.DeleteRestore.All",), 204),
])
async def test_sandbox_permanent_delete_needs_user_delete_restore(
        roles: tuple[str, ...], expected: int) -> None:
    tenant = small_tenant()
    user = add_leaver(tenant, "olaf.oud", enabled=False)
    assert await _status(tenant, ("User.DeleteRestore.All",), "DELETE",
                         f"/users/{user['id']}") == 204
    assert await _status(tenant, roles, "DELETE",
                         f"/directory/deletedItems/{user['id']}") == expected


@pytest.mark.parametrize(("roles", "expected"), [
    (("Directory.ReadWrite.All",), 403),  # Directory.ReadWrite.All cannot delete users
    (("User.ReadWrite.All",), 204),
    (("User.DeleteRestore.All",), 204),
])
async def test_sandbox_user_delete_permissions(roles: tuple[str, ...], expected: int) -> None:
    tenant = small_tenant()
    add_leaver(tenant, "olaf.oud", enabled=False)
    assert await _status(tenant, roles, "DELETE", f"/users/{uid('olaf.oud@' + 'contoso.nl')}") \
        == expected


def test_offboarding_asks_the_least_privileged_documented_set() -> None:
    needed = set(REGISTRY["offboarding"].permissions)
    assert {"User.EnableDisableAccount.All", "User.RevokeSessions.All",
            "User.DeleteRestore.All", *READS} <= needed
    assert "User.ReadWrite.All" not in needed and "Directory.ReadWrite.All" not in needed


def test_implies_follows_the_documented_hierarchy_only() -> None:
    # Directory.ReadWrite.All cannot delete users (user-update and revoke list it)
    granted = effective({"Directory.ReadWrite.All"})
    assert "User.ReadWrite.All" not in granted
    assert "User.DeleteRestore.All" not in granted
    # User.ReadWrite.All covers disable, revoke and soft delete, never the permanent delete
    granted = effective({"User.ReadWrite.All"})
    assert {"User.EnableDisableAccount.All", "User.RevokeSessions.All"} <= granted
    assert "User.DeleteRestore.All" not in granted


def test_config_check_online_names_each_missing_offboarding_permission(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.sandbox import ALL_PERMISSIONS

    # what the job asked for before: every permission but the three least-privileged ones
    granted = [p for p in ALL_PERMISSIONS if p not in (
        "User.EnableDisableAccount.All", "User.RevokeSessions.All", "User.DeleteRestore.All",
        "Directory.ReadWrite.All")]
    monkeypatch.setenv("DAP_AGENT_SANDBOX_ROLES", ",".join(granted))
    assert main(["--config", str(config(tmp_path)), "config", "check", "--online"]) == 3
    out = capsys.readouterr().out
    assert "MISSING permission User.DeleteRestore.All (needed by offboarding)" in out
    # covered by User.ReadWrite.All, which is granted
    assert "User.EnableDisableAccount.All" not in out and "User.RevokeSessions.All" not in out

    granted = [p for p in ALL_PERMISSIONS if p not in ("User.ReadWrite.All",
                                                       "User.EnableDisableAccount.All",
                                                       "User.RevokeSessions.All",
                                                       "User.DeleteRestore.All")]
    monkeypatch.setenv("DAP_AGENT_SANDBOX_ROLES", ",".join(granted))
    assert main(["--config", str(config(tmp_path)), "config", "check", "--online"]) == 3
    out = capsys.readouterr().out
    assert "MISSING permission User.DeleteRestore.All (needed by offboarding)" in out
    # Directory.ReadWrite.All is granted: listed for user-update and revokeSignInSessions
    assert "User.EnableDisableAccount.All" not in out and "User.RevokeSessions.All" not in out


async def test_sandbox_models_replication_lag_after_a_user_delete() -> None:
    tenant = small_tenant()
    user = add_leaver(tenant, "olaf.oud", enabled=False)
    tenant.faults.deleted_lag_requests = 2
    roles = ("User.DeleteRestore.All", "User.Read.All")
    assert await _status(tenant, roles, "DELETE", f"/users/{user['id']}") == 204
    # gone from /users at once, not yet visible in deleted items (GET, then DELETE)
    assert await _status(tenant, roles, "GET", f"/users/{user['id']}") == 404
    assert await _status(tenant, roles, "GET", f"/directory/deletedItems/{user['id']}") == 404
    assert await _status(tenant, roles, "DELETE", f"/directory/deletedItems/{user['id']}") == 204
