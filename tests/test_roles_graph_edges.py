"""Role reads at Graph's edges (respx): licence errors name the licence, not a permission."""

from __future__ import annotations

import httpx
import pytest
import respx

from agent.graph import roles
from agent.graph.client import GraphClient
from tests.conftest import RecordingSleep

GRAPH = "https://graph.microsoft.com"


class Tokens:
    async def token(self, *, refresh: bool = False) -> str:
        return "token"

    async def close(self) -> None:
        pass


def error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


@respx.mock
async def test_pim_without_p2_names_the_licence() -> None:
    base = GRAPH + "/v1.0" + roles.BASE
    respx.get(base + "/roleDefinitions").mock(return_value=httpx.Response(200, json={
        "value": []}))
    respx.get(base + "/roleAssignmentScheduleInstances").mock(return_value=error(
        400, "AadPremiumLicenseRequired", "The tenant needs an AAD Premium 2 license."))
    async with GraphClient(httpx.AsyncClient(), Tokens(), graph_url=GRAPH,
                           sleep=RecordingSleep()) as graph:
        with pytest.raises(roles.LicenceRequiredError) as caught:
            await roles.fetch_inventory(graph)
    assert str(caught.value).startswith("PIM needs Entra ID P2")
    assert caught.value.exit_code == 3


@respx.mock
async def test_the_mfa_report_of_a_tenant_without_premium_names_the_licence() -> None:
    respx.get(GRAPH + "/v1.0" + roles.REGISTRATION_PATH).mock(return_value=error(
        403, "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
        "Neither tenant is B2C or tenant doesn't have premium license"))
    admin = roles.Principal(id="86462606-fde0-4fc4-9e0c-a20eb73e54c6", type="user",
                            upn="AlexW@Contoso.com", user_type="Member")
    async with GraphClient(httpx.AsyncClient(), Tokens(), graph_url=GRAPH,
                           sleep=RecordingSleep()) as graph:
        with pytest.raises(roles.LicenceRequiredError) as caught:
            await roles.mfa_registration(graph, [admin])
    assert "the MFA registration report needs Entra ID P1/P2" in str(caught.value)
    assert "AuditLog.Read.All" not in str(caught.value)
