"""Fault injection across every job: Graph throttles, drops connections, times out,
expires the token, sends a malformed page, or stays down.

Each job runs on the demo tenant twice, once clean and once with faults injected by the
sandbox (or a wrapping transport); what the run found, decided and wrote must be the same
(the report minus run id, times, request ids and request count; the export files byte for
byte). Waits are recorded by a fake clock: each one must equal the `Retry-After` Graph sent
and come between the throttled answer and its repetition.

The bound for a Graph that stays down (RetryPolicy defaults: 6 attempts, 120 s): a run
fails on its first request that exhausts the retry budget, so it waits at most
`max_total_seconds` = 120 s in total (a wait that would end past the budget is not started;
concurrent reads of device-compliance wait side by side, each within the same 120 s), after
at most `max_attempts` = 6 attempts; add at most 6 request timeouts (60 s read) when the
attempts themselves hang. Then the run is `failed` and the CLI exits 3.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.errors import GraphUnavailableError
from agent.graph.client import GraphClient, RetryPolicy
from agent.sandbox import SandboxTokenSource
from agent.sandbox import builders as b
from agent.sandbox.tenant import Faults
from tests.helpers_hardening import (
    JOB_IDS,
    NOW,
    FakeClock,
    MutatingTransport,
    audit_entries,
    change_outcomes,
    check_retry_after_honoured,
    demo_config,
    demo_settings,
    demo_tenant,
    device_actions,
    files_under,
    normalise,
    run_job_over,
    runs_in_audit,
    sandbox_transport,
    tenant_state,
)

RETRY_AFTER = 1.25  # distinct from any backoff value, so a wait can only be Graph's hint
THROTTLING = Faults(throttle_every=5, unavailable_every=7, retry_after=RETRY_AFTER)
POLICY = RetryPolicy()




def filler_users(tenant: Any, count: int) -> None:
    """Unlicensed staff, so /users takes more than one page of 999."""
    for n in range(count):
        tenant.add("users", b.user(f"filler.{n:04d}@{b.DOMAIN}", f"Filler {n:04d}",
                                   created=NOW))


def paged_demo() -> Any:
    """The demo tenant with 6,000 more (unlicensed) users: /users takes 7 pages, so even
    the jobs that read little make enough requests for every 5th and 7th to be hit."""
    tenant = demo_tenant()
    filler_users(tenant, 6000)
    return tenant


async def clean_run(tmp: Path, job: str, **sections: Any) -> tuple[Any, Any]:
    """(report, tenant) of a fault-free run on a fresh tenant and state dir."""
    tenant = paged_demo()
    settings = demo_settings(tmp, **sections)
    report, _ = await run_job_over(sandbox_transport(tenant), settings, job,
                                   sleep=FakeClock())
    return report, tenant


async def faulted_run(tmp: Path, job: str, faults: Faults,
                      **sections: Any) -> tuple[Any, Any, FakeClock, Any]:
    tenant = paged_demo()
    clock = FakeClock(tenant.requests)
    settings = demo_settings(tmp, **sections)
    report, tokens = await run_job_over(sandbox_transport(tenant, faults), settings, job,
                                        sleep=clock)
    return report, tenant, clock, tokens


def assert_same_run(clean: Any, faulted: Any, tmp: Path) -> None:
    assert clean.status != "failed", clean.error
    assert faulted.status == clean.status, faulted.error
    assert normalise(faulted, tmp / "faulted") == normalise(clean, tmp / "clean")
    assert files_under(tmp / "faulted" / "state" / "exports") == \
        files_under(tmp / "clean" / "state" / "exports")


# ---- throttling: 429 on every 5th request, 503 on every 7th ---------------------------------

@pytest.mark.parametrize("job", JOB_IDS)
async def test_throttled_run_gives_the_same_result_and_honours_each_retry_after(
        tmp_path: Path, job: str) -> None:
    clean, _ = await clean_run(tmp_path / "clean", job)
    faulted, tenant, clock, _ = await faulted_run(tmp_path / "faulted", job, THROTTLING)

    assert_same_run(clean, faulted, tmp_path)
    statuses = [r.status for r in tenant.requests]
    assert 429 in statuses and 503 in statuses, statuses
    honoured = check_retry_after_honoured(tenant.requests, clock, RETRY_AFTER)
    assert honoured == statuses.count(429) + statuses.count(503)  # every one repeated
    assert clock.seconds == [RETRY_AFTER] * honoured


async def test_throttled_enforce_offboarding_makes_every_change_exactly_once(
        tmp_path: Path) -> None:
    """Writes under throttling: a 429 is repeated after its Retry-After (Graph did not take
    the request); a 503 on a write that is not safe to repeat (wipe, retire) fails that
    action. The next run completes it: end state as a clean run's, one command per device."""
    enforce = {"offboarding": {"mode": "enforce"}}
    clean, clean_tenant = await clean_run(tmp_path / "clean", "offboarding", **enforce)
    _, tenant, clock, _ = await faulted_run(tmp_path / "faulted", "offboarding",
                                            THROTTLING, **enforce)
    check_retry_after_honoured(tenant.requests, clock, RETRY_AFTER)
    for record in tenant.requests:  # a write answered 503 and not repeated: a wipe/retire
        if record.method != "GET" and record.fault == "unavailable":
            repeated = any((r.method, r.path) == (record.method, record.path)
                           for r in tenant.requests[tenant.requests.index(record) + 1:])
            assert repeated or record.path.endswith(("/wipe", "/retire")), record

    tenant.faults = Faults()
    settings = demo_settings(tmp_path / "faulted", **enforce)
    again, _ = await run_job_over(sandbox_transport(tenant), settings, "offboarding",
                                  sleep=FakeClock())
    assert again.status == clean.status
    assert tenant_state(tenant) == tenant_state(clean_tenant)
    assert device_actions(tenant) == device_actions(clean_tenant)
    assert set(device_actions(tenant).values()) == {1}
    outcomes = change_outcomes(audit_entries(tmp_path / "faulted" / "state"))
    assert all(o.count("done") <= 1 for o in outcomes.values()), outcomes


# ---- connection resets, timeouts, token expiry ----------------------------------------------

CONNECTION_FAULTS = {
    "reset": Faults(reset_every=4),
    "timeout": Faults(timeout_every=3),
}


@pytest.mark.parametrize("fault", sorted(CONNECTION_FAULTS))
@pytest.mark.parametrize("job", JOB_IDS)
async def test_connection_resets_and_timeouts_do_not_change_the_result(
        tmp_path: Path, job: str, fault: str) -> None:
    clean, _ = await clean_run(tmp_path / "clean", job)
    faulted, tenant, clock, _ = await faulted_run(tmp_path / "faulted", job,
                                                  CONNECTION_FAULTS[fault])
    assert_same_run(clean, faulted, tmp_path)
    hits = sum(1 for r in tenant.requests if r.fault == fault)
    assert hits >= 1
    assert len(clock.waits) == hits  # each one repeated once, after a backoff
    assert all(0 < w <= POLICY.backoff_cap for w in clock.seconds)


@pytest.mark.parametrize("fault", sorted(CONNECTION_FAULTS))
async def test_enforce_offboarding_under_connection_faults_converges_without_repeats(
        tmp_path: Path, fault: str) -> None:
    """A reset after Graph applied a wipe: the agent cannot know it was made, does not send
    it again (a second factory reset), and the next run sees it under way."""
    enforce = {"offboarding": {"mode": "enforce"}}
    clean, clean_tenant = await clean_run(tmp_path / "clean", "offboarding", **enforce)
    first, tenant, _, _ = await faulted_run(tmp_path / "faulted", "offboarding",
                                            CONNECTION_FAULTS[fault], **enforce)
    assert first.status in ("ok", "partial")
    tenant.faults = Faults()
    settings = demo_settings(tmp_path / "faulted", **enforce)
    again, _ = await run_job_over(sandbox_transport(tenant), settings, "offboarding",
                                  sleep=FakeClock())
    assert again.status == clean.status, again.error
    assert tenant_state(tenant) == tenant_state(clean_tenant)
    assert set(device_actions(tenant).values()) == {1}
    last, _ = await run_job_over(sandbox_transport(tenant), settings, "offboarding",
                                 sleep=FakeClock())
    assert [a for a in last.actions if a.status == "done"] == []


@pytest.mark.parametrize("job", JOB_IDS)
async def test_token_expiring_mid_run_is_renewed_once(tmp_path: Path, job: str) -> None:
    clean, _ = await clean_run(tmp_path / "clean", job)
    faulted, tenant, clock, tokens = await faulted_run(tmp_path / "faulted", job,
                                                       Faults(expire_token_after=2))
    assert_same_run(clean, faulted, tmp_path)
    assert [r.fault for r in tenant.requests].count("expired-token") == 1
    assert [r.status for r in tenant.requests].count(401) == 1
    assert tokens.minted == 2  # the first token, and one new one after the 401
    assert clock.waits == []  # a 401 is not a retry: a new token, sent at once


# ---- a malformed page: a clear failure, nothing written, nothing changed --------------------

MALFORMED = {
    "active-users": r"^/users$",
    "offboarding": r"^/deviceManagement/managedDevices$",  # read after the plan, before changes
    "device-compliance": r"^/devices$",
    "privileged-roles": r"roleEligibilityScheduleInstances$",
}


def run_cli(config: Path, *args: str) -> int:
    from agent.cli import main

    return main(["--config", str(config), *args])


@pytest.mark.parametrize("job", JOB_IDS)
def test_malformed_page_fails_the_run_with_no_export_and_no_change(
        tmp_path: Path, job: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    tenant_file = tmp_path / "tenant.json"
    demo_tenant().save(tenant_file)
    before = tenant_file.read_bytes()
    config = demo_config(tmp_path, offboarding={"mode": "enforce"})
    monkeypatch.setenv("DAP_AGENT_NOW", NOW.isoformat())
    monkeypatch.setenv("DAP_AGENT_SANDBOX_FAULTS", json.dumps({"malformed_path": MALFORMED[job]}))

    code = run_cli(config, "run", job, *(["--final"] if job == "active-users" else []))
    err = capsys.readouterr().err
    assert code == 3, err
    assert "not valid JSON" in err and "Traceback" not in err
    state = tmp_path / "state"
    assert files_under(state / "exports") == {}
    assert files_under(state / "snapshots") == {}
    assert tenant_file.read_bytes() == before  # no write reached the tenant
    entries = audit_entries(state)
    assert list(runs_in_audit(entries).values()) == [["run-started", "run-failed"]]
    assert not [e for e in entries if e.get("event") == "action"]


async def test_malformed_later_page_leaves_the_months_draft_as_it_was(tmp_path: Path) -> None:
    """Page 2 of /users arrives cut off: the final run fails; the draft export and snapshot
    of an earlier run stay byte for byte, and the month is not delivered."""
    tenant = demo_tenant()
    filler_users(tenant, 1000)
    settings = demo_settings(tmp_path)
    draft, _ = await run_job_over(sandbox_transport(tenant), settings, "active-users",
                                  sleep=FakeClock())
    assert draft.status == "ok"
    state = tmp_path / "state"
    written = {**files_under(state / "exports"), **files_under(state / "snapshots")}

    def cut_page_two(path: str, number: int, body: dict[str, Any]) -> bytes | None:
        if path == "/users" and number == 1:
            return json.dumps(body).encode()[:5000]
        return None

    broken = MutatingTransport(sandbox_transport(tenant), cut_page_two)
    failed, _ = await run_job_over(broken, settings, "active-users", sleep=FakeClock(),
                                   final=True)
    assert failed.status == "failed" and "not valid JSON" in (failed.error or "")
    assert broken.pages["/users"] == 2
    assert {**files_under(state / "exports"), **files_under(state / "snapshots")} == written
    snapshot = json.loads(next(iter((state / "snapshots").rglob("*.json"))).read_bytes())
    assert snapshot["delivered"] is False


# ---- a Graph that stays down -----------------------------------------------------------------

@pytest.mark.parametrize("retry_after", [7.0, 50.0])
@pytest.mark.parametrize("job", JOB_IDS)
async def test_graph_that_stays_down_fails_the_run_within_the_retry_budget(
        tmp_path: Path, job: str, retry_after: float, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = demo_tenant()
    clock = FakeClock(tenant.requests)
    clock.install(monkeypatch)  # the retry layer's time budget runs on the fake clock
    settings = demo_settings(tmp_path, offboarding={"mode": "enforce"})
    faults = Faults(unavailable_every=1, retry_after=retry_after)
    report, _ = await run_job_over(sandbox_transport(tenant, faults), settings, job,
                                   sleep=clock)
    assert report.status == "failed"
    assert "unavailable" in (report.error or "").lower()
    assert all(w == retry_after for w in clock.seconds)
    budget = POLICY.max_total_seconds
    # every chain of retries (one per concurrent request) stays within the budget ...
    assert clock.by_task and max(clock.by_task.values()) <= budget
    waits_per_chain = max(sum(1 for w in clock.waits if w[2] == task) for task in clock.by_task)
    expected = min(POLICY.max_attempts - 1, int((budget - 1e-9) // retry_after))
    assert waits_per_chain == expected
    # ... and the run stops at its first exhausted request: no request beyond those chains
    assert len(tenant.requests) <= len(clock.by_task) * POLICY.max_attempts
    assert not [r for r in tenant.requests if r.method != "GET"]
    state = tmp_path / "state"
    assert files_under(state / "exports") == {}
    assert list(runs_in_audit(audit_entries(state)).values()) == [["run-started", "run-failed"]]


def test_graph_that_stays_down_exits_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    demo_tenant().save(tmp_path / "tenant.json")
    config = demo_config(tmp_path)
    monkeypatch.setenv("DAP_AGENT_NOW", NOW.isoformat())
    monkeypatch.setenv("DAP_AGENT_SANDBOX_FAULTS",
                       json.dumps({"unavailable_every": 1, "retry_after": 0.01}))
    code = run_cli(config, "run", "privileged-roles", "--json")
    captured = capsys.readouterr()
    assert code == 3, captured.err
    assert "unavailable" in captured.err and "Traceback" not in captured.err
    report = json.loads(captured.out)
    assert report["status"] == "failed"


class NoRetryAfter503(httpx.AsyncBaseTransport):
    """Graph down, without a Retry-After: the client falls back to its own backoff."""

    def __init__(self) -> None:
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return httpx.Response(503, json={"error": {"code": "ServiceUnavailable",
                                                   "message": "down"}}, request=request)


async def test_backoff_without_retry_after_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    clock.install(monkeypatch)
    transport = NoRetryAfter503()
    graph = GraphClient(httpx.AsyncClient(transport=transport), SandboxTokenSource(),
                        graph_url="https://graph.sandbox.invalid", sleep=clock)
    async with graph:
        with pytest.raises(GraphUnavailableError):
            await graph.get("/organization", permission="Organization.Read.All")
    assert transport.requests == POLICY.max_attempts
    caps = [min(POLICY.backoff_cap, POLICY.backoff_base * 2 ** n)
            for n in range(POLICY.max_attempts - 1)]
    assert len(clock.seconds) == len(caps)
    assert all(cap / 2 <= w <= cap for w, cap in zip(clock.seconds, caps, strict=True))
    assert sum(clock.seconds) <= min(sum(caps), POLICY.max_total_seconds)


# ---- a real slow server: httpx's own timeout, not a simulated one ----------------------------

class SilentServer:
    """Accepts connections on 127.0.0.1 and never answers (a Graph that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        for conn in self.accepted:
            conn.close()


async def test_a_response_slower_than_the_timeout_is_retried_then_fails() -> None:
    server = SilentServer()
    clock = FakeClock()
    try:
        http = httpx.AsyncClient(timeout=httpx.Timeout(0.2, connect=1.0))
        graph = GraphClient(http, SandboxTokenSource(), graph_url=f"http://127.0.0.1:{server.port}",
                            retry=RetryPolicy(max_attempts=3), sleep=clock)
        async with graph:
            with pytest.raises(GraphUnavailableError, match="timed out"):
                await asyncio.wait_for(graph.get("/users", permission="User.Read.All"), 10)
        assert len(server.accepted) >= 1
        assert len(clock.waits) == 2  # 3 attempts, each cut off by the read timeout
    finally:
        server.close()


def test_the_real_graph_client_has_finite_timeouts(tmp_path: Path) -> None:
    """Against real Graph a hung response must end: connect and read timeouts are set."""
    from agent.graph.connect import build_graph_client
    from agent.settings import load_settings
    from tests.helpers_hardening import write_toml

    config = write_toml(tmp_path / "agent.toml", {
        "tenant_id": "00000000-0000-4000-8000-0000000000aa",
        "client_id": "00000000-0000-4000-8000-0000000000bb",
        "client_secret": "not-used", "state_dir": str(tmp_path / "state")})
    client = build_graph_client(load_settings(config))
    timeout = client._http.timeout
    assert timeout.read is not None and 0 < timeout.read <= 120
    assert timeout.connect is not None and 0 < timeout.connect <= 60
    asyncio.run(client.aclose())
