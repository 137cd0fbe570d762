"""Issue 15 items 3-5 and issue 11 item 9 at the Graph boundary (respx): plaintext next
links, redirects for reads and writes, Retry-After as an HTTP date, oversized pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
import respx

from agent.errors import GraphDataError, GraphError
from agent.graph.client import parse_retry_after, require_text
from tests.conftest import RecordingSleep
from tests.test_graph_client import GRAPH, client


@respx.mock
@pytest.mark.parametrize("link", [
    "http://graph.microsoft.com/v1.0/users?$skiptoken=x",       # plaintext, same host+port
    "http://graph.microsoft.com:443/v1.0/users?$skiptoken=x",
    "https://graph.microsoft.com:8443/v1.0/users?$skiptoken=x",  # another port
])
async def test_a_next_link_not_https_on_the_graph_host_and_port_is_not_followed(
        link: str) -> None:
    other = respx.route(url__regex=r".*skiptoken.*").mock(
        return_value=httpx.Response(200, json={"value": []}))
    respx.get(GRAPH + "/v1.0/users").mock(return_value=httpx.Response(
        200, json={"value": [{"id": "1"}], "@odata.nextLink": link}))
    async with client(RecordingSleep()) as graph:
        with pytest.raises(GraphDataError, match="not followed"):
            await graph.collect("/users", permission="User.Read.All")
    assert not other.called


@respx.mock
async def test_a_next_link_with_the_default_port_spelled_out_is_followed() -> None:
    link = "https://graph.microsoft.com:443/v1.0/users?$skiptoken=x"
    respx.get(link).mock(return_value=httpx.Response(200, json={"value": [{"id": "2"}]}))
    respx.get(GRAPH + "/v1.0/users").mock(return_value=httpx.Response(
        200, json={"value": [{"id": "1"}], "@odata.nextLink": link}))
    async with client(RecordingSleep()) as graph:
        got = await graph.collect("/users", permission="User.Read.All")
    assert [i["id"] for i in got.items] == ["1", "2"]


@respx.mock
@pytest.mark.parametrize("location", [GRAPH + "/v1.0/groups", "https://evil.example/v1.0/users",
                                      GRAPH + "/v1.0/users"])  # the last one: a loop
async def test_a_redirected_read_is_an_error_never_followed(location: str) -> None:
    elsewhere = respx.get(url__regex=r".*(groups|evil).*").mock(
        return_value=httpx.Response(200, json={"value": []}))
    users = respx.get(GRAPH + "/v1.0/users").mock(
        return_value=httpx.Response(302, headers={"Location": location}))
    async with client(RecordingSleep()) as graph:
        with pytest.raises(GraphError, match=r"302.*redirects are not followed") as raised:
            await graph.collect("/users", permission="User.Read.All")
    assert raised.value.exit_code == 3
    assert users.call_count == 1 and not elsewhere.called


@respx.mock
@pytest.mark.parametrize("status", [301, 302, 303, 304, 307, 308])
async def test_a_3xx_answer_to_a_write_is_a_failure_not_done(status: int) -> None:
    followed = respx.get(GRAPH + "/v1.0/users/u1").mock(
        return_value=httpx.Response(200, json={"id": "u1"}))
    patch = respx.patch(GRAPH + "/v1.0/users/u1").mock(
        return_value=httpx.Response(status, headers={"Location": GRAPH + "/v1.0/users/u1"}))
    async with client(RecordingSleep()) as graph:
        with pytest.raises(GraphError, match="the change was not made"):
            await graph.patch("/users/u1", {"accountEnabled": False},
                              permission="User.EnableDisableAccount.All")
    assert patch.call_count == 1 and not followed.called


@respx.mock
async def test_retry_after_as_an_http_date_is_honoured(recording_sleep: RecordingSleep) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=8), usegmt=True)
    respx.get(GRAPH + "/v1.0/users").mock(side_effect=[
        httpx.Response(429, headers={"Retry-After": when}),
        httpx.Response(200, json={"value": []})])
    async with client(recording_sleep) as graph:
        await graph.collect("/users", permission="User.Read.All")
    assert len(recording_sleep.waits) == 1 and 6.0 <= recording_sleep.waits[0] <= 8.0


def test_parse_retry_after_reads_both_forms() -> None:
    now = datetime(2026, 12, 3, 8, 0, 0, tzinfo=UTC)
    assert parse_retry_after("2.5", now) == 2.5
    assert parse_retry_after("Thu, 03 Dec 2026 08:00:08 GMT", now) == 8.0
    assert parse_retry_after("Thu, 03 Dec 2026 07:59:00 GMT", now) == 0.0  # already past
    assert parse_retry_after("soon", now) is None


@respx.mock
async def test_a_page_far_larger_than_the_top_asked_is_refused() -> None:
    respx.get(GRAPH + "/v1.0/users").mock(return_value=httpx.Response(
        200, json={"value": [{"id": str(i)} for i in range(5000)]}))
    async with client(RecordingSleep()) as graph:
        with pytest.raises(GraphDataError, match=r"GET /users: a page of 5000 items where "
                                                 r"\$top=999"):
            await graph.collect("/users", permission="User.Read.All", top=999)


def test_a_required_field_missing_names_the_endpoint_and_the_field() -> None:
    assert require_text({"id": "u1"}, "id", "GET /users") == "u1"
    for raw in ({"id": None}, {}, {"id": ""}, {"id": 7}):
        with pytest.raises(GraphDataError, match=r"GET /users: an item has no 'id'"):
            require_text(raw, "id", "GET /users")


@respx.mock
async def test_a_user_without_id_fails_the_read_before_any_change() -> None:
    from agent.graph.lifecycle import list_users

    respx.get(GRAPH + "/v1.0/users").mock(return_value=httpx.Response(
        200, json={"value": [{"id": "u1", "userPrincipalName": "a@x.nl"},
                             {"id": None, "userPrincipalName": "ghost@x.nl",
                              "accountEnabled": True}]}))
    writes = respx.route(method__in=["PATCH", "POST", "DELETE"]).mock(
        return_value=httpx.Response(204))
    async with client(RecordingSleep()) as graph:
        with pytest.raises(GraphDataError, match=r"GET /users: an item has no 'id' \(got null\)"):
            await list_users(graph)
    assert not writes.called


async def test_a_redirected_run_fails_audited_with_its_report(tmp_path: Path) -> None:
    """What `run --json` prints on exit 3: the failed run's report, not an internal error."""
    from agent.graph.client import GraphClient
    from agent.graph.connect import _with_sdk_middleware
    from agent.runner import run_job
    from tests.conftest import make_settings
    from tests.test_graph_client import Tokens

    seen: list[str] = []

    def proxy(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(302, headers={"Location": GRAPH + "/v1.0/groups"})

    http = _with_sdk_middleware(httpx.AsyncClient(transport=httpx.MockTransport(proxy)))
    graph = GraphClient(http, Tokens(), graph_url=GRAPH, sleep=RecordingSleep())
    settings = make_settings(tmp_path, active_users={"enabled": True})
    with pytest.raises(GraphError) as raised:
        await run_job(settings, "active-users", graph=graph,
                      now=datetime(2026, 5, 12, 8, tzinfo=UTC))
    assert raised.value.exit_code == 3
    report = raised.value.report  # type: ignore[attr-defined]
    assert report.status == "failed" and "redirects are not followed" in report.error
    assert "/v1.0/groups" not in seen
    last = (tmp_path / "state" / "audit.jsonl").read_text().splitlines()[-1]
    assert '"run-failed"' in last


@respx.mock
@pytest.mark.parametrize("bad", [{"id": None}, {"displayName": "no id"}, {"id": " "}, "x"])
async def test_any_listed_object_asked_with_id_must_carry_one(bad: object) -> None:
    """The rule holds for every service module (licensing, roles, devices), not only for
    offboarding's: the client checks it wherever `id` was selected."""
    respx.get(GRAPH + "/v1.0/users").mock(return_value=httpx.Response(
        200, json={"value": [{"id": "1"}, bad]}))
    async with client(RecordingSleep()) as graph:
        with pytest.raises(GraphDataError, match=r"GET /users: an item (has no 'id'|is not)"):
            await graph.collect("/users", permission="User.Read.All",
                                select=("id", "displayName"))


@respx.mock
async def test_one_object_asked_with_id_must_carry_one() -> None:
    respx.get(GRAPH + "/v1.0/users/u1").mock(return_value=httpx.Response(
        200, json={"id": None, "displayName": "x"}))
    async with client(RecordingSleep()) as graph:
        with pytest.raises(GraphDataError, match=r"GET /users/u1: an item has no 'id'"):
            await graph.get("/users/u1", permission="User.Read.All", select=("id",))


@respx.mock
async def test_objects_listed_without_selecting_id_are_not_checked() -> None:
    respx.get(GRAPH + "/v1.0/security/secureScores").mock(return_value=httpx.Response(
        200, json={"value": [{"currentScore": 1}]}))
    async with client(RecordingSleep()) as graph:
        found = await graph.collect("/security/secureScores", permission="SecurityEvents.Read.All")
    assert found.items == [{"currentScore": 1}]
