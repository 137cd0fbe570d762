"""The sandbox tenant serves Graph's read semantics: paging, query options, errors, auth."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from agent.errors import GraphAuthError, GraphError, GraphNotFoundError, GraphPermissionError
from agent.graph.client import GraphClient
from agent.graph.connect import _with_sdk_middleware
from agent.sandbox import ALL_PERMISSIONS, SANDBOX_GRAPH_URL, SandboxTokenSource, auth
from agent.sandbox import builders as b
from agent.sandbox.generate import generate_tenant
from agent.sandbox.transport import SandboxTransport
from tests.helpers_sandbox import ADMIN_ID, BASE, E5, EXO1, connect, raw, small_tenant, user_id

# ---- paging -----------------------------------------------------------------------------------


async def test_pages_follow_opaque_next_links_to_the_end() -> None:
    tenant = small_tenant(25)
    graph, transport, _ = connect(tenant)
    async with graph:
        result = await graph.collect("/users", permission="User.Read.All", top=7,
                                     select=("id", "userPrincipalName"))
    assert len(result.items) == 27 and result.pages == 4
    assert len({u["id"] for u in result.items}) == 27
    second = transport.tenant.requests[1]
    assert second.query["$top"] == "7" and "$skiptoken" in second.query
    token = second.query["$skiptoken"]
    assert "7" not in token or not token.isdigit()  # not a bare offset


async def test_next_link_is_absolute_on_the_same_host_and_keeps_the_query() -> None:
    transport = connect(small_tenant(25))[1]
    response = await raw(transport, "GET", "/users?$top=10&$select=id,displayName")
    link = response.json()["@odata.nextLink"]
    parts = urlsplit(link)
    assert f"{parts.scheme}://{parts.netloc}/v1.0/users" == BASE + "/users"
    query = parse_qs(parts.query)
    assert query["$top"] == ["10"] and query["$select"] == ["id,displayName"]
    assert response.json()["@odata.context"] == f"{BASE}/$metadata#users(id,displayName)"


async def test_default_page_size_is_100() -> None:
    tenant = generate_tenant(users=250, seed=3)
    graph, _, _ = connect(tenant)
    async with graph:
        result = await graph.collect("/users", permission="User.Read.All", select=("id",))
    assert result.pages == 3 and len(result.items) == 250


async def test_large_page_of_a_big_tenant() -> None:
    tenant = generate_tenant(users=3000, seed=5)
    graph, _, _ = connect(tenant)
    async with graph:
        pages = [len(items) async for items, _ in
                 graph.iter_pages("/users", permission="User.Read.All", top=999,
                                  select=("id", "assignedLicenses"))]
    assert pages == [999, 999, 999, 3]


async def test_tampered_or_foreign_skiptoken_is_rejected() -> None:
    transport = connect(small_tenant(25))[1]
    first = (await raw(transport, "GET", "/users?$top=5")).json()
    link = first["@odata.nextLink"]
    token = parse_qs(urlsplit(link).query)["$skiptoken"][0]
    padded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    forged = padded.replace(b'"o":5', b'"o":0')
    forged_token = base64.urlsafe_b64encode(forged).decode().rstrip("=")
    tampered = await raw(transport, "GET", f"/users?$top=5&$skiptoken={forged_token}")
    assert tampered.status_code == 400
    other_query = await raw(transport, "GET", f"/users?$top=6&$skiptoken={token}")
    assert other_query.status_code == 400
    assert other_query.json()["error"]["code"] == "Request_BadRequest"
    assert (await raw(transport, "GET", link)).status_code == 200


# ---- $select -----------------------------------------------------------------------------------


async def test_select_returns_only_selected_properties_and_id() -> None:
    graph, _, _ = connect(small_tenant(3))
    async with graph:
        users = (await graph.collect("/users", permission="User.Read.All",
                                     select=("userPrincipalName", "accountEnabled"))).items
    assert set(users[0]) == {"id", "userPrincipalName", "accountEnabled"}


async def test_without_select_users_have_graphs_default_properties() -> None:
    graph, _, _ = connect(small_tenant(3))
    async with graph:
        user = (await graph.collect("/users", permission="User.Read.All")).items[0]
    assert "assignedLicenses" not in user and "accountEnabled" not in user
    assert {"id", "displayName", "userPrincipalName", "mail", "businessPhones"} <= set(user)
    assert not any(k.startswith("_") for k in user)


async def test_select_is_case_insensitive_and_unknown_properties_are_400() -> None:
    transport = connect(small_tenant(3))[1]
    ok = await raw(transport, "GET", "/users?$select=ID,DisplayName")
    assert set(ok.json()["value"][0]) == {"id", "displayName"}
    bad = await raw(transport, "GET", "/users?$select=id,shoeSize")
    assert bad.status_code == 400 and "shoeSize" in bad.json()["error"]["message"]


async def test_employee_leave_date_is_null_without_the_lifecycle_permission() -> None:
    roles = [r for r in ALL_PERMISSIONS if not r.startswith("User-LifeCycleInfo")]
    graph, _, _ = connect(small_tenant(5), roles=roles)
    async with graph:
        users = (await graph.collect("/users", permission="x",
                                     select=("id", "employeeLeaveDateTime"))).items
        one = await graph.get(f"/users/{user_id(3)}", permission="x",
                              select=("employeeLeaveDateTime",))
        with pytest.raises(GraphPermissionError):
            await graph.collect("/users", permission="User-LifeCycleInfo.Read.All",
                                filter="employeeLeaveDateTime le 2030-01-01T00:00:00Z")
    assert all(u["employeeLeaveDateTime"] is None for u in users) and len(users) == 7
    assert one["employeeLeaveDateTime"] is None
    graph, _, _ = connect(small_tenant(5))
    async with graph:
        users = (await graph.collect("/users", permission="x",
                                     select=("id", "employeeLeaveDateTime"))).items
    assert sum(1 for u in users if u["employeeLeaveDateTime"]) == 1


# ---- $top limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "top", "ok"), [
    ("/users", 999, True), ("/users", 1000, False), ("/devices", 1000, False),
    ("/directory/deletedItems/microsoft.graph.user", 999, True),
    ("/directory/deletedItems/microsoft.graph.user", 1000, False),
    ("/servicePrincipals", 1000, False),
    ("/deviceManagement/managedDevices", 1000, True),
    ("/deviceManagement/managedDevices", 1001, False),
    ("/roleManagement/directory/roleAssignmentScheduleInstances", 5000, True),
    ("/informationProtection/bitlocker/recoveryKeys", 10, False),
])
async def test_top_limits_per_endpoint(path: str, top: int, ok: bool) -> None:
    graph, _, _ = connect(small_tenant(3))
    async with graph:
        if ok:
            await graph.collect(path, permission="x", top=top)
        else:
            with pytest.raises(GraphError) as info:
                await graph.collect(path, permission="x", top=top)
            assert info.value.status == 400


# ---- $count and ConsistencyLevel --------------------------------------------------------------


async def test_count_on_directory_needs_consistency_level() -> None:
    transport = connect(small_tenant(12))[1]
    plain = await raw(transport, "GET", "/users?$count=true")
    assert plain.status_code == 400
    assert plain.json()["error"] == {**plain.json()["error"], "code": "Request_BadRequest",
                                     "message": "$count is not currently supported."}
    graph, _, _ = connect(small_tenant(12))
    async with graph:
        pages = [(len(items), count) async for items, count in
                 graph.iter_pages("/users", permission="x", count=True, top=5)]
    assert pages == [(5, 14), (5, None), (4, None)]


async def test_intune_accepts_count_without_consistency_level() -> None:
    transport = connect(small_tenant(3))[1]
    response = await raw(transport, "GET", "/deviceManagement/managedDevices?$count=true")
    assert response.status_code == 200 and response.json()["@odata.count"] == 3


# ---- $filter ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("flt", "expected"), [
    ("accountEnabled eq false", 4),
    (f"assignedLicenses/any(x:x/skuId eq {EXO1})", 5),
    (f"assignedLicenses/any(s:s/skuId eq {E5}) and accountEnabled eq true", 18),
    ("startswith(userPrincipalName,'user01')", 10),
    ("userPrincipalName in ('user001@contoso.nl', 'ADMIN@contoso.nl')", 2),
    ("userType eq 'Guest'", 1),
    ("employeeLeaveDateTime le 2026-06-15T00:00:00Z", 1),
    ("createdDateTime ge 2019-01-01T00:00:00Z and (userType eq 'Member' or userType eq 'Guest')",
     27),
])
async def test_supported_filters(flt: str, expected: int) -> None:
    graph, _, _ = connect(small_tenant(25))
    async with graph:
        result = await graph.collect("/users", permission="x", filter=flt, select=("id",))
    assert len(result.items) == expected


@pytest.mark.parametrize(("flt", "code"), [
    ("shoeSize eq 42", "Request_UnsupportedQuery"),
    ("createdDateTime lt 2026-01-01T00:00:00Z", "Request_UnsupportedQuery"),  # no lt on Entra
    ("accountEnabled ne true", "Request_UnsupportedQuery"),  # advanced without the headers
    ("endswith(mail,'@contoso.nl')", "Request_UnsupportedQuery"),
    ("accountEnabled eq", "BadRequest"),
    ("accountEnabled eq 'yes'", "BadRequest"),
])
async def test_unsupported_filters_are_400(flt: str, code: str) -> None:
    graph, _, _ = connect(small_tenant(3))
    async with graph:
        with pytest.raises(GraphError) as info:
            await graph.collect("/users", permission="x", filter=flt)
    assert info.value.status == 400 and info.value.code == code


async def test_advanced_filter_works_with_count_and_consistency_level() -> None:
    graph, _, _ = connect(small_tenant(25))
    async with graph:
        result = await graph.collect("/users", permission="x", filter="accountEnabled ne true",
                                     count=True)
    assert result.reported_count == len(result.items) == 4


async def test_intune_and_bitlocker_filters() -> None:
    graph, _, _ = connect(small_tenant(3))
    async with graph:
        mine = await graph.collect("/deviceManagement/managedDevices", permission="x",
                                   filter=f"userId eq '{user_id(1)}' and operatingSystem eq "
                                          "'Windows'")
        keys = await graph.collect("/informationProtection/bitlocker/recoveryKeys",
                                   permission="x",
                                   filter=f"deviceId eq '{b.entra_device_id('DEV-0')}'")
        with pytest.raises(GraphError) as info:
            await graph.collect("/deviceManagement/managedDevices", permission="x",
                                filter="serialNumber eq 'X'")
    assert len(mine.items) == 2 and len(keys.items) == 1
    assert info.value.code == "BadRequest"


async def test_unknown_query_option_is_400() -> None:
    transport = connect(small_tenant(3))[1]
    assert (await raw(transport, "GET", "/users?$search=\"displayName:a\"")).status_code == 400


# ---- $expand and relations ----------------------------------------------------------------------


async def test_role_instances_expand_principal_and_definition() -> None:
    graph, _, _ = connect(small_tenant(3))
    async with graph:
        active = (await graph.collect(
            "/roleManagement/directory/roleAssignmentScheduleInstances", permission="x",
            params={"$expand": "principal,roleDefinition"})).items
        eligible = (await graph.collect(
            "/roleManagement/directory/roleEligibilityScheduleInstances", permission="x",
            params={"$expand": "principal"})).items
    assert active[0]["principal"]["@odata.type"] == "#microsoft.graph.user"
    assert active[0]["principal"]["userPrincipalName"] == "admin@contoso.nl"
    assert active[0]["roleDefinition"]["displayName"] == "Global Administrator"
    assert eligible[0]["principal"]["userType"] == "Guest"


async def test_expand_where_not_declared_is_400() -> None:
    transport = connect(small_tenant(3))[1]
    response = await raw(transport, "GET", "/users?$expand=manager")
    assert response.status_code == 400


async def test_device_configurations_expand_assignments() -> None:
    graph, _, _ = connect(small_tenant(3))
    async with graph:
        configs = (await graph.collect("/deviceManagement/deviceConfigurations", permission="x",
                                       params={"$expand": "assignments"})).items
        plain = (await graph.collect("/deviceManagement/deviceConfigurations",
                                     permission="x")).items
    assert configs[0]["assignments"][0]["target"]["@odata.type"] == \
        "#microsoft.graph.allDevicesAssignmentTarget"
    assert "assignments" not in plain[0] and "_assignments" not in plain[0]
    assert configs[0]["@odata.type"] == "#microsoft.graph.windows10EndpointProtectionConfiguration"


async def test_transitive_members_carry_their_type() -> None:
    graph, _, _ = connect(small_tenant(3))
    outer = b.oid("group:Outer")
    async with graph:
        direct = (await graph.collect(f"/groups/{outer}/members", permission="x")).items
        every = (await graph.collect(f"/groups/{outer}/transitiveMembers", permission="x",
                                     select=("id", "displayName"))).items
        with pytest.raises(GraphNotFoundError):
            await graph.collect(f"/groups/{b.oid('nope')}/members", permission="x")
    assert sorted(m["@odata.type"] for m in direct) == ["#microsoft.graph.group",
                                                        "#microsoft.graph.user"]
    assert sorted(m["@odata.type"].rsplit(".", 1)[1] for m in every) == [
        "group", "servicePrincipal", "user", "user"]


async def test_configuration_policies_exist_in_beta_only() -> None:
    transport = connect(small_tenant(3))[1]
    v1 = await raw(transport, "GET", "/deviceManagement/configurationPolicies")
    assert v1.status_code == 400
    assert v1.json()["error"]["message"] == \
        "Resource not found for the segment 'configurationPolicies'."
    beta = await raw(transport, "GET", BASE.replace("v1.0", "beta") +
                     "/deviceManagement/configurationPolicies?$expand=settings")
    assert beta.status_code == 200
    assert beta.json()["value"][0]["settings"][0]["settingInstance"]["settingDefinitionId"]


async def test_recovery_keys_never_list_the_key() -> None:
    graph, _, _ = connect(small_tenant(3))
    async with graph:
        keys = (await graph.collect("/informationProtection/bitlocker/recoveryKeys",
                                    permission="x")).items
        assert "key" not in keys[0]
        with pytest.raises(GraphError):
            await graph.collect("/informationProtection/bitlocker/recoveryKeys", permission="x",
                                select=("id", "key"))
        one = await graph.get(f"/informationProtection/bitlocker/recoveryKeys/{keys[0]['id']}",
                              permission="x", select=("key",))
    assert len(one["key"]) == 55
    basic, _, _ = connect(small_tenant(3), roles=["BitlockerKey.ReadBasic.All"])
    async with basic:
        with pytest.raises(GraphPermissionError):
            await basic.get(f"/informationProtection/bitlocker/recoveryKeys/{keys[0]['id']}",
                            permission="BitlockerKey.Read.All", select=("key",))


async def test_subscribed_skus_count_consumed_units_from_users() -> None:
    graph, _, _ = connect(small_tenant(25))
    async with graph:
        skus = {s["skuPartNumber"]: s for s in
                (await graph.collect("/subscribedSkus", permission="x")).items}
    assert skus["SPE_E5"]["consumedUnits"] == 21 and skus["EXCHANGESTANDARD"]["consumedUnits"] == 5


async def test_registration_details_need_entra_premium() -> None:
    tenant = small_tenant(3)
    for sku in tenant.all("subscribedSkus"):
        sku["skuPartNumber"] = "EXCHANGESTANDARD"
    transport = connect(tenant)[1]
    response = await raw(transport, "GET", "/reports/authenticationMethods/userRegistrationDetails")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == \
        "Authentication_RequestFromNonPremiumTenantOrB2CTenant"


async def test_registration_details_cover_every_user() -> None:
    tenant = small_tenant(3)
    tenant.add("userRegistrationDetails",
               b.registration_details(tenant.get("users", ADMIN_ID) or {}, mfa=True))
    graph, _, _ = connect(tenant)
    async with graph:
        rows = (await graph.collect("/reports/authenticationMethods/userRegistrationDetails",
                                    permission="AuditLog.Read.All")).items
        one = await graph.get(f"/reports/authenticationMethods/userRegistrationDetails/"
                              f"{user_id(1)}", permission="AuditLog.Read.All")
    assert len(rows) == 5 and sum(r["isMfaRegistered"] for r in rows) == 1
    assert one["isMfaRegistered"] is False


# ---- errors, request ids, auth ----------------------------------------------------------------


async def test_error_envelope_and_request_ids() -> None:
    transport = connect(small_tenant(3))[1]
    response = await raw(transport, "GET", f"/users/{b.oid('ghost')}",
                         headers={"client-request-id": "c-123"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "Request_ResourceNotFound"
    assert error["innerError"]["request-id"] == response.headers["request-id"]
    assert error["innerError"]["client-request-id"] == "c-123"
    assert response.headers["client-request-id"] == "c-123"
    assert set(error["innerError"]) == {"date", "request-id", "client-request-id"}


async def test_user_by_upn_and_unknown_paths() -> None:
    transport = connect(small_tenant(3))[1]
    by_upn = await raw(transport, "GET", "/users/USER001@contoso.nl?$select=id")
    assert by_upn.json()["id"] == user_id(1)
    unknown = await raw(transport, "GET", "/teleporters")
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "BadRequest"
    sub = await raw(transport, "GET", f"/users/{user_id(1)}/mailFolders")
    assert "'mailFolders'" in sub.json()["error"]["message"]
    method = await raw(transport, "POST", "/users")
    assert method.status_code == 405


@pytest.mark.parametrize("token", [None, "garbage", "a.b.c"])
async def test_missing_or_garbled_token_is_401(token: str | None) -> None:
    transport = connect(small_tenant(3))[1]
    response = await raw(transport, "GET", "/users", token=token)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"


async def test_expired_token_is_401_and_client_reports_auth_error() -> None:
    transport = connect(small_tenant(3))[1]
    expired = auth.mint(ALL_PERMISSIONS, now=0)
    response = await raw(transport, "GET", "/users", token=expired)
    assert response.status_code == 401 and "expired" in response.json()["error"]["message"]

    class Stale(SandboxTokenSource):
        async def token(self, *, refresh: bool = False) -> str:
            return expired

    http = _with_sdk_middleware(httpx.AsyncClient(transport=SandboxTransport(small_tenant(1))))
    async with GraphClient(http, Stale(), graph_url=SANDBOX_GRAPH_URL) as graph:
        with pytest.raises(GraphAuthError):
            await graph.collect("/users", permission="x")


async def test_missing_permission_is_403_per_service_dialect() -> None:
    transport = connect(small_tenant(3))[1]
    token = await SandboxTokenSource(["Device.Read.All"]).token()
    users = await raw(transport, "GET", "/users", token=token)
    assert users.status_code == 403
    assert users.json()["error"]["code"] == "Authorization_RequestDenied"
    assert users.json()["error"]["message"] == "Insufficient privileges to complete the operation."
    intune = await raw(transport, "GET", "/deviceManagement/managedDevices", token=token)
    assert intune.status_code == 403 and intune.json()["error"]["code"] == "Forbidden"
    assert "DeviceManagementManagedDevices.Read.All" in intune.json()["error"]["message"]
    assert (await raw(transport, "GET", "/devices", token=token)).status_code == 200


async def test_any_listed_permission_allows_a_route() -> None:
    for roles in (["User.Read.All"], ["Directory.Read.All"]):
        graph, _, _ = connect(small_tenant(2), roles=roles)
        async with graph:
            assert len((await graph.collect("/users", permission="User.Read.All")).items) == 4
    graph, _, _ = connect(small_tenant(2), roles=["Group.Read.All"])
    async with graph:
        with pytest.raises(GraphPermissionError) as info:
            await graph.collect("/users", permission="User.Read.All")
    assert "User.Read.All" in str(info.value)


async def test_token_claims_and_env_roles(monkeypatch: pytest.MonkeyPatch) -> None:
    source = SandboxTokenSource()
    first = await source.token()
    assert await source.token() == first and await source.token(refresh=True) != first
    claims = json.loads(base64.urlsafe_b64decode(first.split(".")[1] + "=="))
    assert set(claims["roles"]) == set(ALL_PERMISSIONS)
    assert {"tid", "appid", "exp", "uti"} <= set(claims)
    assert json.loads(base64.urlsafe_b64decode(first.split(".")[0] + "=="))["alg"] == "none"
    monkeypatch.setenv("DAP_AGENT_SANDBOX_ROLES", "User.Read.All, Mail.Send")
    assert SandboxTokenSource().roles == ("User.Read.All", "Mail.Send")
