"""Injected faults: each kind, as the GraphClient meets it, counted deterministically."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.errors import GraphDataError, GraphError, GraphUnavailableError
from agent.graph.client import RetryPolicy
from agent.sandbox import open_sandbox
from agent.sandbox.tenant import Faults, SandboxTenant
from tests.conftest import RecordingSleep
from tests.helpers_sandbox import NOW, connect, raw, small_tenant, user_id


def faulty(faults: Faults, users: int = 25) -> SandboxTenant:
    tenant = small_tenant(users)
    tenant.faults = faults
    return tenant


async def test_throttling_answers_429_with_fractional_retry_after() -> None:
    tenant = faulty(Faults(throttle_every=2, retry_after=2.128))
    sleep = RecordingSleep()
    graph, transport, _ = connect(tenant, sleep=sleep)
    async with graph:
        result = await graph.collect("/users", permission="x", top=10)
    assert len(result.items) == 27
    assert sleep.waits == [2.128, 2.128]  # requests 2 and 4 were throttled, then retried
    statuses = [r.status for r in tenant.requests]
    assert statuses == [200, 429, 200, 429, 200]
    assert [r.fault for r in tenant.requests].count("throttle") == 2
    assert graph.stats.throttled == 2
    assert (await raw(transport, "GET", "/users")).status_code == 429  # the 6th request
    assert (await raw(transport, "GET", "/users")).status_code == 200
    throttled = await raw(transport, "GET", "/users")
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "2.128"
    assert throttled.json()["error"]["code"] == "TooManyRequests"


async def test_unavailable_answers_503_and_the_client_retries_reads() -> None:
    tenant = faulty(Faults(unavailable_every=1, retry_after=0.5))
    sleep = RecordingSleep()
    graph, _, _ = connect(tenant, sleep=sleep, retry=RetryPolicy(max_attempts=3))
    async with graph:
        with pytest.raises(GraphUnavailableError):
            await graph.collect("/users", permission="x")
    assert sleep.waits == [0.5, 0.5] and len(tenant.requests) == 3
    assert {r.status for r in tenant.requests} == {503}


async def test_reset_is_raised_after_the_request_was_applied() -> None:
    tenant = faulty(Faults(reset_every=1))
    graph, _, _ = connect(tenant, retry=RetryPolicy(max_attempts=2))
    async with graph:
        with pytest.raises(GraphUnavailableError):  # POST is not repeated: the job must check
            await graph.post(f"/users/{user_id(1)}/revokeSignInSessions", permission="x")
    assert len(tenant.requests) == 1 and tenant.requests[0].fault == "reset"
    assert tenant.requests[0].status == 0
    assert (tenant.get("users", user_id(1)) or {}).get("signInSessionsValidFromDateTime")


async def test_reads_survive_every_third_request_timing_out() -> None:
    tenant = faulty(Faults(timeout_every=3))
    graph, _, _ = connect(tenant)
    async with graph:
        result = await graph.collect("/users", permission="x", top=5)
    assert len(result.items) == 27
    # 6 pages in 8 requests: the 3rd and the 6th timed out and were repeated
    assert [r.fault for r in tenant.requests].count("timeout") == 2 and len(tenant.requests) == 8


async def test_malformed_first_page_is_a_data_error() -> None:
    tenant = faulty(Faults(malformed_path=r"^/deviceManagement/managedDevices$"))
    graph, _, _ = connect(tenant)
    async with graph:
        with pytest.raises(GraphDataError):
            await graph.collect("/deviceManagement/managedDevices", permission="x")
        assert len((await graph.collect("/users", permission="x")).items) == 27


async def test_truncated_list_says_more_than_it_gives() -> None:
    # the directory's @odata.count is the whole collection's (Intune's is not: see
    # test_intune_count_is_page_sized)
    tenant = faulty(Faults(truncate_path="^/devices$"))
    from agent.sandbox import builders as b
    for i in range(8):
        tenant.add("devices", b.device(f"EXTRA-{i}"))
    total = len(tenant.all("devices"))
    graph, _, _ = connect(tenant)
    async with graph:
        result = await graph.collect("/devices", permission="x", top=3, count=True)
    assert result.reported_count == total and len(result.items) == 3 and result.pages == 1
    assert tenant.requests[0].fault == "truncated"


async def test_intune_count_is_page_sized() -> None:
    """Intune documents no whole-collection @odata.count; the sandbox answers with the
    page's size, the least useful answer a real tenant may give."""
    tenant = faulty(Faults())
    from agent.sandbox import builders as b
    for i in range(5):
        tenant.add("managedDevices", b.managed_device(f"EXTRA-{i}"))
    graph, _, _ = connect(tenant)
    async with graph:
        result = await graph.collect("/deviceManagement/managedDevices", permission="x",
                                     top=3, count=True)
    assert result.reported_count == 3 < len(result.items) == len(tenant.all("managedDevices"))


async def test_expired_token_is_refreshed_once_by_the_client() -> None:
    tenant = faulty(Faults(expire_token_after=2))
    graph, _, tokens = connect(tenant)
    async with graph:
        result = await graph.collect("/users", permission="x", top=5)
    assert len(result.items) == 27
    assert tokens.minted == 2
    assert [r.status for r in tenant.requests].count(401) == 1
    assert [r.fault for r in tenant.requests if r.status == 401] == ["expired-token"]


async def test_failing_writes_by_path() -> None:
    tenant = faulty(Faults(fail_writes={r"/revokeSignInSessions$": 500}))
    graph, _, _ = connect(tenant)
    async with graph:
        with pytest.raises(GraphError) as info:
            await graph.post(f"/users/{user_id(1)}/revokeSignInSessions", permission="x")
        await graph.patch(f"/users/{user_id(1)}", {"accountEnabled": False}, permission="x")
    assert info.value.status == 500 and info.value.code == "InternalServerError"
    assert "signInSessionsValidFromDateTime" not in (tenant.get("users", user_id(1)) or {})


def test_faults_from_env_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAP_AGENT_SANDBOX_FAULTS",
                       json.dumps({"throttle_every": 3, "fail_writes": {"wipe": 503}}))
    faults = Faults.from_env()
    assert faults.throttle_every == 3 and faults.fail_writes == {"wipe": 503}
    assert open_sandbox("sandbox:", now=NOW).tenant.faults == faults
    with pytest.raises(ValueError):
        Faults.from_dict({"explode": True})
    monkeypatch.setenv("DAP_AGENT_SANDBOX_FAULTS", "[1]")
    with pytest.raises(ValueError):
        Faults.from_env()


CRASH_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    import httpx
    from agent.sandbox import SANDBOX_GRAPH_URL, SandboxTokenSource, open_sandbox

    async def main(path: str) -> None:
        transport = open_sandbox("sandbox:" + path)
        token = await SandboxTokenSource().token()
        users = [u for u in transport.tenant.all("users") if u["accountEnabled"]][:3]
        async with httpx.AsyncClient(transport=transport) as http:
            for u in users:
                print(u["id"], flush=True)
                await http.patch(f"{SANDBOX_GRAPH_URL}/v1.0/users/{u['id']}",
                                 json={"department": "crash-test"},
                                 headers={"Authorization": "Bearer " + token})
        print("survived", flush=True)

    asyncio.run(main(sys.argv[1]))
""")


def test_crash_after_writes_kills_the_process_after_saving(tmp_path: Path) -> None:
    path = tmp_path / "tenant.json"
    env = {"DAP_AGENT_SANDBOX_FAULTS": json.dumps({"crash_after_writes": 2}),
           "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(path)], env=env,
                          capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 137, done.stderr
    touched = done.stdout.split()
    assert "survived" not in touched and len(touched) == 2
    tenant = SandboxTenant.load(path)
    assert [(tenant.get("users", i) or {}).get("department") for i in touched] == \
        ["crash-test", "crash-test"]
