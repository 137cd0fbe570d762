"""The Graph access layer against Graph's documented behaviour, at the edges (respx)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import respx

from agent.errors import (
    GraphAuthError,
    GraphDataError,
    GraphError,
    GraphPermissionError,
    GraphUnavailableError,
)
from agent.graph.client import GraphClient, RetryPolicy, parse_retry_after
from agent.graph.connect import _with_sdk_middleware
from tests.conftest import RecordingSleep

GRAPH = "https://graph.microsoft.com"
DATA = Path(__file__).resolve().parent / "data"


class Tokens:
    def __init__(self) -> None:
        self.issued = 0

    async def token(self, *, refresh: bool = False) -> str:
        if refresh or not self.issued:
            self.issued += 1
        return f"token-{self.issued}"

    async def close(self) -> None:
        pass


def client(sleep: RecordingSleep, **kwargs: object) -> GraphClient:
    http = _with_sdk_middleware(httpx.AsyncClient())
    return GraphClient(http, Tokens(), graph_url=GRAPH + "/", sleep=sleep, **kwargs)  # type: ignore[arg-type]


def throttled(retry_after: str = "2.128") -> httpx.Response:
    body = json.loads((DATA / "throttling.json").read_text())
    return httpx.Response(429, json=body, headers={"Retry-After": retry_after,
                                                   "request-id": "r-429"})


@respx.mock
async def test_paging_follows_next_links_verbatim_with_select_and_top() -> None:
    next_link = (GRAPH + "/v1.0/users?$top=2&$skiptoken=X%274453707%20A%2B%2F%3D%27"
                 "&$select=id,displayName")
    second = respx.get(next_link).mock(
        return_value=httpx.Response(200, json={"value": [{"id": "3"}]}))
    first = respx.get(GRAPH + "/v1.0/users", params={"$top": "2"}).mock(
        return_value=httpx.Response(200, json={"value": [{"id": "1"}, {"id": "2"}],
                                               "@odata.nextLink": next_link}))
    sleep = RecordingSleep()
    async with client(sleep) as graph:
        ids = [u["id"] async for u in graph.list("/users", permission="User.Read.All",
                                                 select=["id", "displayName"], top=2)]
    assert ids == ["1", "2", "3"]
    sent = first.calls.last.request
    assert sent.url.params["$select"] == "id,displayName"
    assert str(second.calls.last.request.url) == next_link
    assert "//users" not in str(sent.url)
    for call in (first.calls.last, second.calls.last):
        assert call.request.headers["client-request-id"]
        assert call.request.headers["Authorization"] == "Bearer token-1"


@respx.mock
async def test_count_sends_consistency_level_on_every_page() -> None:
    next_link = GRAPH + "/v1.0/devices?$skiptoken=abc"
    route = respx.get(url__startswith=GRAPH + "/v1.0/devices").mock(side_effect=[
        httpx.Response(200, json={"value": [{"id": "1"}], "@odata.count": 2,
                                  "@odata.nextLink": next_link}),
        httpx.Response(200, json={"value": [{"id": "2"}]}),
    ])
    async with client(RecordingSleep()) as graph:
        result = await graph.collect("/devices", permission="Device.Read.All", count=True)
    assert result.reported_count == 2 and result.pages == 2 and len(result.items) == 2
    assert all(c.request.headers["ConsistencyLevel"] == "eventual" for c in route.calls)


@respx.mock
async def test_429_waits_exactly_the_fractional_retry_after() -> None:
    route = respx.get(GRAPH + "/v1.0/subscribedSkus").mock(side_effect=[
        throttled("2.128"), throttled("0.5"),
        httpx.Response(200, json={"value": []}),
    ])
    sleep = RecordingSleep()
    async with client(sleep) as graph:
        await graph.get("/subscribedSkus", permission="Organization.Read.All")
    assert sleep.waits == [2.128, 0.5]
    assert route.call_count == 3
    assert graph.stats.throttled == 2 and graph.stats.retries == 2


@respx.mock
async def test_503_without_retry_after_backs_off_then_succeeds() -> None:
    respx.get(GRAPH + "/v1.0/users").mock(side_effect=[
        httpx.Response(503), httpx.Response(504), httpx.Response(200, json={"value": []})])
    sleep = RecordingSleep()
    async with client(sleep) as graph:
        await graph.collect("/users", permission="User.Read.All")
    assert len(sleep.waits) == 2 and all(0 < w <= 30 for w in sleep.waits)


@respx.mock
async def test_a_non_idempotent_write_is_not_repeated_on_503() -> None:
    route = respx.post(GRAPH + "/v1.0/deviceManagement/managedDevices/d1/wipe").mock(
        return_value=httpx.Response(503, headers={"Retry-After": "1"}))
    async with client(RecordingSleep()) as graph:
        with pytest.raises(GraphError) as info:
            await graph.post("/deviceManagement/managedDevices/d1/wipe",
                             permission="DeviceManagementManagedDevices.PrivilegedOperations.All")
    assert route.call_count == 1 and info.value.status == 503


@respx.mock
async def test_a_non_idempotent_write_is_repeated_on_429() -> None:
    route = respx.post(GRAPH + "/v1.0/deviceManagement/managedDevices/d1/wipe").mock(
        side_effect=[throttled("1"), httpx.Response(204)])
    async with client(RecordingSleep()) as graph:
        result = await graph.post("/deviceManagement/managedDevices/d1/wipe",
                                  permission="DeviceManagementManagedDevices.PrivilegedOperations.All")
    assert route.call_count == 2 and result.status == 204


@respx.mock
async def test_retries_are_bounded_by_attempts() -> None:
    route = respx.get(GRAPH + "/v1.0/users").mock(return_value=throttled("1"))
    sleep = RecordingSleep()
    async with client(sleep, retry=RetryPolicy(max_attempts=4)) as graph:
        with pytest.raises(GraphUnavailableError, match="after 4 attempts"):
            await graph.collect("/users", permission="User.Read.All")
    assert route.call_count == 4 and sleep.waits == [1.0, 1.0, 1.0]


@respx.mock
async def test_a_retry_after_past_the_time_budget_is_not_waited_for() -> None:
    respx.get(GRAPH + "/v1.0/users").mock(return_value=throttled("500"))
    sleep = RecordingSleep()
    async with client(sleep, retry=RetryPolicy(max_total_seconds=60)) as graph:
        with pytest.raises(GraphUnavailableError):
            await graph.collect("/users", permission="User.Read.All")
    assert sleep.waits == []


@respx.mock
async def test_connection_reset_on_a_read_is_retried() -> None:
    respx.get(GRAPH + "/v1.0/users").mock(side_effect=[
        httpx.RemoteProtocolError("peer closed connection"),
        httpx.ReadTimeout("slow"),
        httpx.Response(200, json={"value": [{"id": "1"}]})])
    async with client(RecordingSleep()) as graph:
        result = await graph.collect("/users", permission="User.Read.All")
    assert len(result.items) == 1


@respx.mock
async def test_401_gets_a_new_token_once() -> None:
    route = respx.get(GRAPH + "/v1.0/users").mock(side_effect=[
        httpx.Response(401, json={"error": {"code": "InvalidAuthenticationToken",
                                            "message": "Access token has expired."}}),
        httpx.Response(200, json={"value": []})])
    async with client(RecordingSleep()) as graph:
        await graph.collect("/users", permission="User.Read.All")
    assert [c.request.headers["Authorization"] for c in route.calls] == [
        "Bearer token-1", "Bearer token-2"]


@respx.mock
async def test_401_twice_is_an_authentication_error() -> None:
    respx.get(GRAPH + "/v1.0/users").mock(return_value=httpx.Response(401))
    async with client(RecordingSleep()) as graph:
        with pytest.raises(GraphAuthError) as info:
            await graph.collect("/users", permission="User.Read.All")
    assert info.value.exit_code == 3


@respx.mock
async def test_403_names_the_missing_permission() -> None:
    respx.get(GRAPH + "/v1.0/informationProtection/bitlocker/recoveryKeys").mock(
        return_value=httpx.Response(403, json={"error": {
            "code": "Authorization_RequestDenied",
            "message": "Insufficient privileges to complete the operation."}},
            headers={"request-id": "r-403"}))
    async with client(RecordingSleep()) as graph:
        with pytest.raises(GraphPermissionError) as info:
            await graph.collect("/informationProtection/bitlocker/recoveryKeys",
                                permission="BitlockerKey.ReadBasic.All")
    assert "BitlockerKey.ReadBasic.All" in str(info.value)
    assert info.value.exit_code == 3 and info.value.request_id == "r-403"


@respx.mock
async def test_404_on_delete_is_already_gone() -> None:
    respx.delete(GRAPH + "/v1.0/directory/deletedItems/u1").mock(
        return_value=httpx.Response(404, json={"error": {"code": "Request_ResourceNotFound",
                                                         "message": "gone"}}))
    async with client(RecordingSleep()) as graph:
        result = await graph.delete("/directory/deletedItems/u1", permission="User.ReadWrite.All")
    assert result.already_gone


@respx.mock
async def test_other_errors_carry_graph_code_message_and_request_id() -> None:
    respx.get(GRAPH + "/v1.0/users").mock(return_value=httpx.Response(
        400, json={"error": {"code": "Request_UnsupportedQuery", "message": "Unsupported filter"}},
        headers={"request-id": "r-400"}))
    async with client(RecordingSleep()) as graph:
        with pytest.raises(GraphError) as info:
            await graph.collect("/users", permission="User.Read.All", filter="foo eq 1")
    err = info.value
    assert (err.status, err.code, err.request_id) == (400, "Request_UnsupportedQuery", "r-400")
    assert "Unsupported filter" in str(err)


@respx.mock
async def test_malformed_json_is_a_data_error() -> None:
    respx.get(GRAPH + "/v1.0/users").mock(return_value=httpx.Response(
        200, content=b'{"value": [{"id": "1"}', headers={"content-type": "application/json"}))
    async with client(RecordingSleep()) as graph:
        with pytest.raises(GraphDataError, match="not valid JSON"):
            await graph.collect("/users", permission="User.Read.All")


@respx.mock
async def test_write_keeps_graphs_request_id_and_low_priority_header() -> None:
    route = respx.patch(GRAPH + "/v1.0/users/u1").mock(
        return_value=httpx.Response(204, headers={"request-id": "r-patch"}))
    async with client(RecordingSleep(), low_priority=True) as graph:
        result = await graph.patch("/users/u1", {"accountEnabled": False},
                                   permission="User.ReadWrite.All")
    assert result.request_id == "r-patch" and result.status == 204
    request = route.calls.last.request
    assert json.loads(request.content) == {"accountEnabled": False}
    assert request.headers["x-ms-throttle-priority"] == "low"


def test_retry_after_parsing() -> None:
    assert parse_retry_after("2.128") == 2.128
    assert parse_retry_after("10") == 10.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date long past


@respx.mock
async def test_a_next_link_that_loops_is_a_data_error_not_an_endless_scan() -> None:
    link = GRAPH + "/v1.0/users?$skiptoken=same"
    respx.get(link).mock(return_value=httpx.Response(
        200, json={"value": [{"id": "2"}], "@odata.nextLink": link}))
    respx.get(GRAPH + "/v1.0/users").mock(return_value=httpx.Response(
        200, json={"value": [{"id": "1"}], "@odata.nextLink": link}))
    async with client(RecordingSleep()) as graph:
        with pytest.raises(GraphDataError, match="repeats"):
            await graph.collect("/users", permission="User.Read.All")


@respx.mock
async def test_long_scans_report_progress_per_page() -> None:
    import io

    from agent.progress import TerminalProgress

    link = GRAPH + "/v1.0/users?$skiptoken=p2"
    respx.get(link).mock(return_value=httpx.Response(200, json={"value": [{"id": "2"}]}))
    respx.get(GRAPH + "/v1.0/users").mock(return_value=httpx.Response(
        200, json={"value": [{"id": "1"}], "@odata.nextLink": link}))
    calls: list[tuple[str, int, int, bool]] = []
    stream = io.StringIO()
    shown = TerminalProgress(stream)

    def progress(path: str, pages: int, items: int, done: bool) -> None:
        calls.append((path, pages, items, done))
        shown(path, pages, items, done)

    http = _with_sdk_middleware(httpx.AsyncClient())
    async with GraphClient(http, Tokens(), graph_url=GRAPH, sleep=RecordingSleep(),
                           progress=progress) as graph:
        await graph.collect("/users", permission="User.Read.All")
    assert calls == [("/users", 1, 1, False), ("/users", 2, 2, True)]
    assert stream.getvalue().endswith("reading /users: 2 items, 2 pages\x1b[K\n")


@respx.mock
async def test_a_next_link_to_another_host_is_not_followed_with_our_token() -> None:
    evil = respx.get(url__startswith="https://evil.example").mock(
        return_value=httpx.Response(200, json={"value": []}))
    respx.get(GRAPH + "/v1.0/users").mock(return_value=httpx.Response(
        200, json={"value": [{"id": "1"}],
                   "@odata.nextLink": "https://evil.example/v1.0/users?$skiptoken=x"}))
    async with client(RecordingSleep()) as graph:
        with pytest.raises(GraphDataError, match="another host"):
            await graph.collect("/users", permission="User.Read.All")
    assert not evil.called


@respx.mock
async def test_an_object_listed_twice_across_pages_is_yielded_once() -> None:
    link = GRAPH + "/v1.0/users?$skiptoken=p2"
    respx.get(link).mock(return_value=httpx.Response(
        200, json={"value": [{"id": "2"}, {"id": "3"}]}))
    respx.get(GRAPH + "/v1.0/users").mock(return_value=httpx.Response(
        200, json={"value": [{"id": "1"}, {"id": "2"}], "@odata.nextLink": link}))
    async with client(RecordingSleep()) as graph:
        result = await graph.collect("/users", permission="User.Read.All")
    assert [u["id"] for u in result.items] == ["1", "2", "3"]
    assert graph.stats.duplicates == 1
