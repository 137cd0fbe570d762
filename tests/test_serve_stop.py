"""Stopping the daemon mid-run, through the real runner, Run and audit log.

A stand-in job (registered in place of `offboarding`) makes changes one at a time and
waits inside its second change until the test has asked the daemon to stop: that change
must finish and be audited, the third must not start, the run must end `partial`, and
the audit log must verify.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.audit import AuditLog
from agent.job import JobContext, JobSpec
from agent.jobstate import read_state
from agent.run import Subject, load_report
from agent.serve import Daemon
from agent.settings import Settings
from jobs import REGISTRY
from tests.test_serve import WAIT, RecordingNotifier, moving_clock, only, seed_success

AMS = ZoneInfo("Europe/Amsterdam")


class SlowJob:
    def __init__(self, changes: int = 4, block_in: int | None = 1) -> None:
        self.changes = changes
        self.block_in = block_in
        self.inside = asyncio.Event()  # the job is inside the blocking change
        self.release = asyncio.Event()
        self.made: list[str] = []

    async def __call__(self, ctx: JobContext) -> None:
        for i in range(self.changes):
            target = Subject("user", f"user-{i}", f"user{i}@contoso.nl")
            with ctx.run.change("disable-user", target, "leaver") as change:
                if change.execute:
                    if i == self.block_in:
                        self.inside.set()
                        await self.release.wait()  # e.g. the Graph call in flight
                    self.made.append(target.id)
                    change.done(request_id=f"req-{i}", after={"accountEnabled": False})

    def spec(self) -> JobSpec:
        real = REGISTRY["offboarding"]
        return JobSpec(id=real.id, title="stand-in", policy_section=real.policy_section,
                       policy_model=real.policy_model, permissions=real.permissions,
                       changes_tenant=True, run=self)


def enforce(tmp_path: Path) -> Settings:
    settings = only(tmp_path, "offboarding")
    return settings.model_copy(update={"offboarding": settings.offboarding.model_copy(
        update={"mode": "enforce"})})


def run_entries(settings: Settings) -> list[dict[str, Any]]:
    return list(AuditLog(settings.state_dir / "audit.jsonl").entries())


@pytest.mark.parametrize("drain_timeout", [30.0, 0.05])
def test_stop_mid_run_leaves_a_partial_run_and_a_verifiable_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drain_timeout: float) -> None:
    settings = enforce(tmp_path)
    seed_success(settings, "offboarding", datetime(2026, 12, 1, 6, 0, 1, tzinfo=AMS))
    job = SlowJob()
    monkeypatch.setitem(REGISTRY, "offboarding", job.spec())
    notifier = RecordingNotifier()

    async def scenario() -> None:
        daemon = Daemon(settings, clock=moving_clock(datetime(2026, 12, 2, 9, tzinfo=AMS)),
                        notifier=notifier, run_job=None, drain_timeout=drain_timeout,
                        lock_retry=0.01, retry_delays=())
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop, handle_signals=False))
        await asyncio.wait_for(job.inside.wait(), WAIT)  # the catch-up run is in change 2
        daemon.request_stop("SIGTERM")
        if drain_timeout > 1:  # the change in flight completes; the next one never starts
            job.release.set()
        await asyncio.wait_for(task, WAIT)

    asyncio.run(scenario())
    entries = run_entries(settings)
    assert AuditLog(settings.state_dir / "audit.jsonl").verify().ok
    events = [(e["event"], e.get("status"), (e.get("target") or {}).get("id")) for e in entries]
    finished = [e for e in entries if e["event"] in ("run-finished", "run-failed")]
    assert len(finished) == 1 and finished[0]["status"] == "partial"
    assert entries[0]["trigger"] == "catch-up"
    report = load_report(str(finished[0]["report_path"]))
    assert report["status"] == "partial"
    if drain_timeout > 1:
        # cooperative: change 2 finished (done), change 3 was never planned
        assert job.made == ["user-0", "user-1"]
        assert events[1:] == [
            ("action", "planned", "user-0"), ("action", "done", "user-0"),
            ("action", "planned", "user-1"), ("action", "done", "user-1"),
            ("run-finished", "partial", None)]
        assert "stopped before disable-user on user2@contoso.nl" in report["error"]
    else:
        # past the drain timeout: the change in flight is cancelled and audited as failed
        assert job.made == ["user-0"]
        assert events[1:] == [
            ("action", "planned", "user-0"), ("action", "done", "user-0"),
            ("action", "planned", "user-1"), ("action", "failed", "user-1"),
            ("run-finished", "partial", None)]
        assert entries[-2]["error"] == "interrupted: CancelledError"
    assert read_state(settings.state_dir, "offboarding").last_status == "partial"


def test_interrupted_run_is_caught_up_at_the_next_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = enforce(tmp_path)
    seed_success(settings, "offboarding", datetime(2026, 12, 1, 6, 0, 1, tzinfo=AMS))
    first, second = SlowJob(), SlowJob(block_in=None)
    monkeypatch.setitem(REGISTRY, "offboarding", first.spec())

    async def scenario() -> None:
        clock = moving_clock(datetime(2026, 12, 2, 9, tzinfo=AMS))
        daemon = Daemon(settings, clock=clock, notifier=RecordingNotifier(), run_job=None,
                        drain_timeout=30, lock_retry=0.01, retry_delays=())
        task = asyncio.create_task(daemon.run(asyncio.Event(), handle_signals=False))
        await asyncio.wait_for(first.inside.wait(), WAIT)
        daemon.request_stop("SIGTERM")
        first.release.set()
        await asyncio.wait_for(task, WAIT)

        monkeypatch.setitem(REGISTRY, "offboarding", second.spec())
        again = Daemon(settings, clock=clock, notifier=RecordingNotifier(), run_job=None,
                       drain_timeout=30, lock_retry=0.01, retry_delays=())
        stop, notifier = asyncio.Event(), RecordingNotifier()
        again.notifier = notifier
        task = asyncio.create_task(again.run(stop, handle_signals=False))
        await notifier.wait_for("READY=1")  # the catch-up has been started by now
        catch_up = again.running.get("offboarding")  # None if it has finished already
        if catch_up is not None:
            await asyncio.wait({catch_up}, timeout=WAIT)
        stop.set()
        await asyncio.wait_for(task, WAIT)

    asyncio.run(scenario())
    assert second.made == ["user-0", "user-1", "user-2", "user-3"]
    state = read_state(settings.state_dir, "offboarding")
    assert (state.last_status, state.trigger) == ("ok", "catch-up")
    assert AuditLog(settings.state_dir / "audit.jsonl").verify().ok
