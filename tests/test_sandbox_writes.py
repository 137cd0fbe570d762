"""Sandbox writes: user changes, soft and permanent delete, device actions, persistence."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.errors import GraphError, GraphNotFoundError, GraphPermissionError
from agent.sandbox import DEMO_POLICY, demo_tenant, open_sandbox
from agent.sandbox import builders as b
from agent.sandbox.handlers import holds_active_role
from agent.sandbox.seed import base
from agent.sandbox.tenant import SandboxTenant
from tests.helpers_sandbox import ADMIN_ID, NOW, connect, raw, small_tenant, user_id


async def test_disable_user_and_revoke_sessions() -> None:
    tenant = small_tenant(3)
    graph, transport, _ = connect(tenant)
    async with graph:
        result = await graph.patch(f"/users/{user_id(1)}", {"accountEnabled": False},
                                   permission="User.ReadWrite.All")
        revoked = await graph.post(f"/users/{user_id(1)}/revokeSignInSessions",
                                   permission="User.RevokeSessions.All")
    assert result.status == 204 and result.request_id == transport.tenant.requests[0].request_id
    user = tenant.get("users", user_id(1)) or {}
    assert user["accountEnabled"] is False
    assert revoked.status == 200 and revoked.body is not None and revoked.body["value"] is True
    assert revoked.body["@odata.context"].endswith("/$metadata#Edm.Boolean")
    assert user["signInSessionsValidFromDateTime"] == "2026-06-15T09:00:00Z"


async def test_enable_disable_permission_is_enough_to_disable() -> None:
    graph, _, _ = connect(small_tenant(2), roles=["User.Read.All",
                                                  "User.EnableDisableAccount.All"])
    async with graph:
        await graph.patch(f"/users/{user_id(1)}", {"accountEnabled": False},
                          permission="User.EnableDisableAccount.All")
        with pytest.raises(GraphPermissionError):
            await graph.patch(f"/users/{user_id(1)}", {"department": "Weg"},
                              permission="User.ReadWrite.All")


@pytest.mark.parametrize(("body", "status"), [
    ({"assignedLicenses": []}, 400), ({"shoeSize": 42}, 400), ({"accountEnabled": "no"}, 400),
])
async def test_invalid_patches_are_400(body: dict[str, object], status: int) -> None:
    graph, _, _ = connect(small_tenant(2))
    async with graph:
        with pytest.raises(GraphError) as info:
            await graph.patch(f"/users/{user_id(1)}", body, permission="x")
    assert info.value.status == status


async def test_an_app_cannot_disable_or_delete_an_active_admin() -> None:
    tenant = small_tenant(2)
    graph, _, _ = connect(tenant)
    async with graph:
        with pytest.raises(GraphPermissionError):
            await graph.patch(f"/users/{ADMIN_ID}", {"accountEnabled": False}, permission="x")
        with pytest.raises(GraphPermissionError):
            await graph.delete(f"/users/{ADMIN_ID}", permission="User.ReadWrite.All")
    assert tenant.get("users", ADMIN_ID) is not None


async def test_soft_delete_then_permanent_delete() -> None:
    tenant = small_tenant(3)
    graph, _, _ = connect(tenant)
    async with graph:
        deleted = await graph.delete(f"/users/{user_id(2)}", permission="User.ReadWrite.All")
        with pytest.raises(GraphNotFoundError):
            await graph.get(f"/users/{user_id(2)}", permission="x")
        bin_ = (await graph.collect("/directory/deletedItems/microsoft.graph.user",
                                    permission="x",
                                    select=("id", "userPrincipalName", "deletedDateTime"))).items
        one = await graph.get(f"/directory/deletedItems/{user_id(2)}", permission="x")
        purged = await graph.delete(f"/directory/deletedItems/{user_id(2)}", permission="x")
        again = await graph.delete(f"/directory/deletedItems/{user_id(2)}", permission="x")
        untyped = None
        try:
            await graph.collect("/directory/deletedItems", permission="x")
        except GraphError as exc:
            untyped = exc.status
    assert deleted.status == 204
    assert [u["id"] for u in bin_] == [user_id(2)]
    assert bin_[0]["deletedDateTime"] == "2026-06-15T09:00:00Z"
    # Entra renames a deleted user: object id (no dashes) + the original UPN
    assert one["userPrincipalName"] == user_id(2).replace("-", "") + "user002@contoso.nl"
    assert purged.status == 204 and not purged.already_gone
    assert again.already_gone and again.status == 404
    assert untyped == 400
    assert tenant.all("deletedItems") == []


async def test_wipe_and_retire_go_pending_and_a_second_action_is_refused() -> None:
    tenant = small_tenant(2)
    graph, _, _ = connect(tenant)
    wiped, retired = b.oid("managedDevice:DEV-0"), b.oid("managedDevice:DEV-2")
    async with graph:
        result = await graph.post(f"/deviceManagement/managedDevices/{wiped}/wipe",
                                  {"keepEnrollmentData": False, "keepUserData": False},
                                  permission="DeviceManagementManagedDevices.PrivilegedOperations.All")
        await graph.post(f"/deviceManagement/managedDevices/{retired}/retire", permission="x")
        with pytest.raises(GraphError) as info:
            await graph.post(f"/deviceManagement/managedDevices/{wiped}/wipe", permission="x")
        with pytest.raises(GraphNotFoundError):
            await graph.post(f"/deviceManagement/managedDevices/{b.oid('x')}/wipe",
                             permission="x")
        device = await graph.get(f"/deviceManagement/managedDevices/{wiped}", permission="x")
    assert result.status == 204 and result.body is None
    assert device["managementState"] == "wipePending"
    assert device["deviceActionResults"][-1]["actionName"] == "wipe"
    assert (tenant.get("managedDevices", retired) or {})["managementState"] == "retirePending"
    assert info.value.status == 400 and info.value.code == "BadRequest"


async def test_wipe_needs_the_privileged_operations_permission() -> None:
    graph, _, _ = connect(small_tenant(1), roles=["DeviceManagementManagedDevices.ReadWrite.All"])
    async with graph:
        with pytest.raises(GraphPermissionError):
            await graph.post(f"/deviceManagement/managedDevices/{b.oid('managedDevice:DEV-0')}"
                             "/wipe", permission="DeviceManagementManagedDevices."
                                                "PrivilegedOperations.All")


async def test_send_mail_is_accepted_and_kept() -> None:
    tenant = small_tenant(2)
    graph, _, _ = connect(tenant)
    message = {"message": {"subject": "Actieve gebruikers juni", "body": {
        "contentType": "Text", "content": "Zie bijlage."},
        "toRecipients": [{"emailAddress": {"address": "finance@contoso.nl"}}]}}
    async with graph:
        result = await graph.post(f"/users/{user_id(1)}/sendMail", message,
                                  permission="Mail.Send")
        with pytest.raises(GraphError):
            await graph.post(f"/users/{user_id(1)}/sendMail", {"message": {}},
                             permission="Mail.Send")
    assert result.status == 202
    sent = tenant.all("sentMail")
    assert len(sent) == 1 and sent[0]["from"] == "user001@contoso.nl"
    assert sent[0]["message"]["subject"] == "Actieve gebruikers juni"


# ---- persistence -------------------------------------------------------------------------------


async def test_file_backed_tenant_persists_across_transports(tmp_path: Path) -> None:
    path = tmp_path / "tenant.json"
    first = open_sandbox(f"sandbox:{path}", now=NOW)
    assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600
    some_user = next(u["id"] for u in first.tenant.all("users")
                     if not holds_active_role(first.tenant, u["id"]))
    response = await raw(first, "PATCH", f"/users/{some_user}", json={"accountEnabled": False})
    assert response.status_code == 204
    second = open_sandbox(f"sandbox:{path}", now=NOW)
    assert (second.tenant.get("users", some_user) or {})["accountEnabled"] is False
    assert second.tenant.requests == [] and second.tenant.faults.throttle_every == 0
    # a change made through `second` is seen by `first` on its next request
    await raw(second, "DELETE", f"/users/{some_user}")
    gone = await raw(first, "GET", f"/users/{some_user}")
    assert gone.status_code == 404
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


async def test_reads_do_not_rewrite_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tenant.json"
    transport = open_sandbox(f"sandbox:{path}", now=NOW)
    before = path.stat().st_mtime_ns
    await raw(transport, "GET", "/users")
    assert path.stat().st_mtime_ns == before


def test_open_sandbox_urls(tmp_path: Path) -> None:
    memory = open_sandbox("sandbox:", now=NOW)
    assert memory.path is None and memory.tenant.all("users")
    with pytest.raises(ValueError):
        open_sandbox("sandbox:relative/tenant.json")
    with pytest.raises(ValueError):
        open_sandbox("https://graph.microsoft.com")


def test_tenant_json_round_trip(tmp_path: Path) -> None:
    tenant = small_tenant(4)
    tenant.save(tmp_path / "t.json")
    loaded = SandboxTenant.load(tmp_path / "t.json")
    assert loaded.collections == tenant.collections and loaded.now == tenant.now
    later = datetime(2027, 1, 1, tzinfo=UTC)
    assert SandboxTenant.load(tmp_path / "t.json", now=later).now == later
    data = json.loads((tmp_path / "t.json").read_text())
    data["collections"]["teleporters"] = []
    with pytest.raises(ValueError):
        SandboxTenant.from_json(data)


def test_tenant_basics() -> None:
    tenant = SandboxTenant(NOW)
    with pytest.raises(ValueError):
        tenant.add("users", {"displayName": "no id"})
    with pytest.raises(KeyError):
        tenant.all("teleporters")
    obj = tenant.add("users", b.user("x@contoso.nl"))
    assert tenant.get("users", obj["id"]) is obj and tenant.find_user("X@CONTOSO.NL") is obj
    tenant.remove("users", obj["id"])
    assert tenant.all("users") == []
    with pytest.raises(ValueError):
        SandboxTenant(datetime(2026, 1, 1))


def test_demo_tenant_is_deterministic_and_composed() -> None:
    one, two = demo_tenant(NOW), demo_tenant(NOW)
    assert one.to_json() == two.to_json()
    assert len(one.all("subscribedSkus")) >= 8 and len(one.all("roleDefinitions")) >= 20
    for upn in base.STAFF_UPNS:
        assert one.find_user(upn) is not None
    assert isinstance(DEMO_POLICY, dict)


def test_builders_shapes() -> None:
    group_id = b.oid("group:Licenties")
    user = b.user("p@contoso.nl", license_states=[
        {"skuId": base.SPE_E5, "assignedByGroup": group_id},
        {"skuId": base.EXCHANGESTANDARD, "state": "Error", "error": "CountViolation"}],
        leave=NOW)
    assert [lic["skuId"] for lic in user["assignedLicenses"]] == [base.SPE_E5]
    assert user["licenseAssignmentStates"][0]["assignedByGroup"] == group_id
    assert user["licenseAssignmentStates"][1]["error"] == "CountViolation"
    assert user["employeeLeaveDateTime"] == "2026-06-15T09:00:00Z"
    assert b.oid("a") == b.oid("a") != b.oid("b")
    sku = b.subscribed_sku(base.SPE_E5, "SPE_E5", enabled=10, consumed=3)
    assert sku["prepaidUnits"]["enabled"] == 10 and sku["id"].endswith(base.SPE_E5)
