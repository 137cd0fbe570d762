"""The daemon's scheduling logic with a controllable clock and a stand-in for `run_job`.

The stand-in records each run the daemon starts (trigger, final, scheduled_for) and
records it in the job state as the real runner does, so catch-up decisions are real.
The real runner under the daemon is exercised in test_serve_stop.py and test_serve_e2e.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.errors import GraphUnavailableError, LockBusyError, RunInterrupted, UsageError
from agent.jobstate import mark_scheduled, read_state, record_run
from agent.run import RunReport, iso_z
from agent.serve import MISFIRE_GRACE_SECONDS, Daemon, catch_up_time, serve
from agent.settings import Settings
from agent.systemd import Notifier
from jobs import REGISTRY
from tests.conftest import make_settings

AMS = ZoneInfo("Europe/Amsterdam")
SECTIONS = {spec.id: spec.policy_section for spec in REGISTRY.values()}
WAIT = 20.0  # only guards against a hang; nothing waits this long when things work


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
          microsecond: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=AMS)


def only(tmp_path: Path, *jobs: str, **schedules: str) -> Settings:
    """Settings with only `jobs` enabled (schedules by section name, optional)."""
    sections: dict[str, Any] = {}
    for job, section in SECTIONS.items():
        sections[section] = {"enabled": job in jobs}
        if section in schedules:
            sections[section]["schedule"] = schedules[section]
    return make_settings(tmp_path, **sections)


def moving_clock(start: datetime) -> Callable[[], datetime]:
    began = time.monotonic()
    return lambda: start + timedelta(seconds=time.monotonic() - began)


def seed_success(settings: Settings, job: str, started: datetime,
                 trigger: str = "schedule", status: str = "ok") -> None:
    mark_scheduled(settings.state_dir, job, datetime(2026, 1, 1, tzinfo=UTC))
    record_run(settings.state_dir, RunReport(
        run_id=f"{started:%Y%m%dT%H%M%SZ}-{job}-000000", job=job, trigger=trigger,
        dry_run=False, started_at=iso_z(started), finished_at=iso_z(started),
        status=status))  # type: ignore[arg-type]


@dataclass
class Call:
    job: str
    trigger: str
    now: datetime
    final: bool
    scheduled_for: datetime | None
    stop: Callable[[], bool] | None


Behaviour = Callable[[Call], Awaitable[None]]


@dataclass
class FakeRunner:
    """Stands in for agent.runner.run_job."""

    behaviours: list[Behaviour] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, settings: Settings, job_id: str, *, trigger: str = "cli",
                       now: datetime | None = None, final: bool = False,
                       scheduled_for: datetime | None = None,
                       stop: Callable[[], bool] | None = None, **_: Any) -> RunReport:
        assert now is not None
        call = Call(job_id, trigger, now, final, scheduled_for, stop)
        self.calls.append(call)
        self.changed.set()
        status = "ok"
        try:
            if self.behaviours:
                await self.behaviours.pop(0)(call)
        except Exception as exc:  # record like the runner does, then re-raise
            status = "partial" if isinstance(exc, RunInterrupted) else "failed"
            record_run(settings.state_dir, self._report(call, status))
            raise
        report = self._report(call, status)
        record_run(settings.state_dir, report)
        return report

    @staticmethod
    def _report(call: Call, status: str) -> RunReport:
        return RunReport(run_id=f"{call.now:%Y%m%dT%H%M%S}-{call.job}-{len(status)}",
                         job=call.job, trigger=call.trigger, dry_run=False,
                         started_at=iso_z(call.now), finished_at=iso_z(call.now),
                         status=status)  # type: ignore[arg-type]

    async def wait_for(self, count: int) -> None:
        async def enough() -> None:
            while len(self.calls) < count:
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(enough(), WAIT)


class RecordingNotifier(Notifier):
    def __init__(self) -> None:
        super().__init__(None)
        self.messages: list[list[str]] = []
        self.changed = asyncio.Event()

    def notify(self, *assignments: str) -> bool:
        self.messages.append(list(assignments))
        self.changed.set()
        return True

    def sent(self, prefix: str) -> list[str]:
        return [a for message in self.messages for a in message if a.startswith(prefix)]

    async def wait_for(self, prefix: str) -> None:
        async def seen() -> None:
            while not self.sent(prefix):
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(seen(), WAIT)


@asynccontextmanager
async def running(settings: Settings, runner: FakeRunner, now: datetime, *,
                  notifier: RecordingNotifier | None = None,
                  **options: Any) -> AsyncIterator[Daemon]:
    """A daemon on a moving clock starting at `now`; stopped (and drained) on exit."""
    notifier = notifier or RecordingNotifier()
    daemon = Daemon(settings, clock=moving_clock(now), notifier=notifier, run_job=runner,
                    drain_timeout=options.pop("drain_timeout", 5.0),
                    lock_retry=options.pop("lock_retry", 0.01),
                    retry_delays=options.pop("retry_delays", ()))
    assert not options
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop, handle_signals=False))
    await notifier.wait_for("READY=1")
    try:
        yield daemon
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT)


# ---- catch-up -----------------------------------------------------------------------------

def test_catch_up_time() -> None:
    sched = "last-working-day 07:00"
    before = local(2026, 10, 30, 7, 0, 5)
    assert catch_up_time(sched, AMS, before, local(2026, 12, 2, 9)) == local(2026, 11, 30, 7)
    assert catch_up_time(sched, AMS, before, local(2026, 11, 30, 6, 59)) is None
    assert catch_up_time(sched, AMS, None, local(2026, 12, 2, 9)) is None  # fresh install
    # down for a whole quarter: one catch-up, for the latest missed time
    assert catch_up_time(sched, AMS, local(2026, 8, 31, 7, 1), local(2026, 12, 2)) == local(
        2026, 11, 30, 7)


def test_downtime_over_a_month_end_catches_up_the_monthly_delivery_once(
        tmp_path: Path) -> None:
    settings = only(tmp_path, "active-users")
    seed_success(settings, "active-users", local(2026, 10, 30, 7, 0, 1))
    runner = FakeRunner()

    async def scenario() -> None:
        # down from 27 November to 2 December: 30 November 07:00 was missed
        async with running(settings, runner, local(2026, 12, 2, 9)):
            await runner.wait_for(1)
        async with running(settings, runner, local(2026, 12, 2, 9, 5)):  # restart: done
            pass

    asyncio.run(scenario())
    assert [(c.job, c.trigger, c.final) for c in runner.calls] == [
        ("active-users", "catch-up", True)]
    call = runner.calls[0]
    assert call.scheduled_for == local(2026, 11, 30, 7)  # the month to deliver: November
    assert call.now.astimezone(AMS).date().isoformat() == "2026-12-02"
    state = read_state(settings.state_dir, "active-users")
    assert state.trigger == "catch-up" and state.last_status == "ok"


def test_a_run_by_hand_does_not_replace_the_missed_scheduled_run(tmp_path: Path) -> None:
    settings = only(tmp_path, "active-users")
    seed_success(settings, "active-users", local(2026, 10, 30, 7, 0, 1))
    seed_success(settings, "active-users", local(2026, 12, 1, 10), trigger="cli")
    runner = FakeRunner()

    async def scenario() -> None:
        async with running(settings, runner, local(2026, 12, 2, 9)):
            await runner.wait_for(1)

    asyncio.run(scenario())
    assert [(c.trigger, c.scheduled_for) for c in runner.calls] == [
        ("catch-up", local(2026, 11, 30, 7))]


def test_failed_scheduled_run_is_caught_up_at_the_next_start(tmp_path: Path) -> None:
    settings = only(tmp_path, "offboarding")
    seed_success(settings, "offboarding", local(2026, 12, 1, 6, 0, 1))
    seed_success(settings, "offboarding", local(2026, 12, 2, 6, 0, 1), status="failed")
    runner = FakeRunner()

    async def scenario() -> None:
        async with running(settings, runner, local(2026, 12, 2, 9)):
            await runner.wait_for(1)

    asyncio.run(scenario())
    assert [(c.trigger, c.scheduled_for, c.final) for c in runner.calls] == [
        ("catch-up", local(2026, 12, 2, 6), False)]


def test_fresh_install_has_nothing_to_catch_up(tmp_path: Path) -> None:
    settings = only(tmp_path, "offboarding", "active-users")
    runner = FakeRunner()

    async def scenario() -> None:
        async with running(settings, runner, local(2026, 12, 2, 9)):
            pass

    asyncio.run(scenario())
    assert runner.calls == []
    state = read_state(settings.state_dir, "offboarding")
    assert state.scheduled_since == "2026-12-02T08:00:00Z"


def test_up_to_date_jobs_are_not_caught_up(tmp_path: Path) -> None:
    settings = only(tmp_path, "offboarding", "privileged-roles")
    seed_success(settings, "offboarding", local(2026, 12, 2, 6, 0, 3))
    seed_success(settings, "privileged-roles", local(2026, 11, 30, 7, 0, 2))  # Monday
    runner = FakeRunner()

    async def scenario() -> None:
        async with running(settings, runner, local(2026, 12, 2, 9)):
            pass

    asyncio.run(scenario())
    assert runner.calls == []


# ---- scheduled runs on an accelerated clock -----------------------------------------------

def test_scheduled_run_fires_at_its_time(tmp_path: Path) -> None:
    settings = only(tmp_path, "offboarding")
    runner = FakeRunner()

    async def scenario() -> None:
        async with running(settings, runner, local(2026, 12, 2, 5, 59, 59, 600000)) as daemon:
            jobs = daemon._scheduler.get_jobs()
            assert [(j.id, j.max_instances, j.coalesce, j.misfire_grace_time)
                    for j in jobs] == [("offboarding", 1, True, MISFIRE_GRACE_SECONDS)]
            await runner.wait_for(1)

    asyncio.run(scenario())
    call = runner.calls[0]
    assert (call.trigger, call.final, call.scheduled_for) == (
        "schedule", False, local(2026, 12, 2, 6))
    assert call.now >= local(2026, 12, 2, 6)


def test_last_working_day_run_is_final(tmp_path: Path) -> None:
    settings = only(tmp_path, "active-users")
    runner = FakeRunner()

    async def scenario() -> None:
        async with running(settings, runner, local(2026, 11, 30, 6, 59, 59, 600000)):
            await runner.wait_for(1)

    asyncio.run(scenario())
    assert [(c.trigger, c.final, c.scheduled_for) for c in runner.calls] == [
        ("schedule", True, local(2026, 11, 30, 7))]


def test_missed_start_window_while_up_becomes_a_catch_up(tmp_path: Path) -> None:
    settings = only(tmp_path, "offboarding")
    runner = FakeRunner()

    async def scenario() -> None:
        async with running(settings, runner, local(2026, 12, 2, 9)) as daemon:
            daemon._on_missed(SimpleNamespace(job_id="offboarding"))
            await runner.wait_for(1)

    asyncio.run(scenario())
    assert [(c.trigger, c.scheduled_for) for c in runner.calls] == [
        ("catch-up", local(2026, 12, 2, 6))]


# ---- failures -------------------------------------------------------------------------------

def test_a_job_that_raises_does_not_stop_the_daemon_and_is_retried(tmp_path: Path) -> None:
    settings = only(tmp_path, "offboarding")
    seed_success(settings, "offboarding", local(2026, 12, 1, 6, 0, 1))

    async def boom(call: Call) -> None:
        raise GraphUnavailableError("Graph unavailable after 6 attempts")

    async def crash(call: Call) -> None:
        raise RuntimeError("bug in a job")

    runner = FakeRunner([boom, crash])

    async def scenario() -> None:
        async with running(settings, runner, local(2026, 12, 2, 9),
                           retry_delays=(0.01, 0.01, 0.01)) as daemon:
            await runner.wait_for(3)
            assert not daemon.stopping

    asyncio.run(scenario())
    assert [(c.trigger, c.scheduled_for) for c in runner.calls] == [
        ("catch-up", local(2026, 12, 2, 6)), ("retry", local(2026, 12, 2, 6)),
        ("retry", local(2026, 12, 2, 6))]
    assert read_state(settings.state_dir, "offboarding").last_status == "ok"


def test_no_retry_when_the_next_scheduled_run_comes_first(tmp_path: Path) -> None:
    settings = only(tmp_path, "offboarding", offboarding="* * * * *")
    seed_success(settings, "offboarding", local(2026, 12, 2, 8, 58, 1))

    async def boom(call: Call) -> None:
        raise GraphUnavailableError("down")

    runner = FakeRunner([boom])

    async def scenario() -> None:
        async with running(settings, runner, local(2026, 12, 2, 9, 0, 30),
                           retry_delays=(3600.0,)) as daemon:
            await runner.wait_for(1)
            await asyncio.sleep(0)
            assert daemon.jobs["offboarding"].retry_handle is None

    asyncio.run(scenario())


def test_lock_held_by_a_run_by_hand_is_waited_for(tmp_path: Path) -> None:
    settings = only(tmp_path, "offboarding")
    seed_success(settings, "offboarding", local(2026, 12, 1, 6, 0, 1))

    async def busy(call: Call) -> None:
        raise LockBusyError("job offboarding is already running (held by pid 42)")

    runner = FakeRunner([busy, busy])

    async def scenario() -> None:
        async with running(settings, runner, local(2026, 12, 2, 9)):
            await runner.wait_for(3)

    asyncio.run(scenario())
    assert [c.trigger for c in runner.calls] == ["catch-up"] * 3
    assert read_state(settings.state_dir, "offboarding").last_status == "ok"


# ---- stopping -----------------------------------------------------------------------------

def test_stop_lets_the_running_job_finish_its_change(tmp_path: Path) -> None:
    settings = only(tmp_path, "offboarding", "device-compliance")
    seed_success(settings, "offboarding", local(2026, 12, 1, 6, 0, 1))
    seen: list[bool] = []
    gate, proceed = asyncio.Event(), asyncio.Event()

    async def cooperative(call: Call) -> None:
        assert call.stop is not None
        seen.append(call.stop())
        gate.set()
        await proceed.wait()  # the change in flight; the Run checks stop() after it
        seen.append(call.stop())
        raise RunInterrupted("stopped before disable-user on x: the service is shutting down")

    runner = FakeRunner([cooperative])
    notifier = RecordingNotifier()

    async def scenario() -> None:
        async with running(settings, runner, local(2026, 12, 2, 9),
                           notifier=notifier) as daemon:
            await asyncio.wait_for(gate.wait(), WAIT)
            daemon.request_stop("SIGTERM")
            proceed.set()
            assert daemon.start("device-compliance", "schedule", None) is None  # no new runs
        assert daemon.running == {}

    asyncio.run(scenario())
    assert seen == [False, True]
    assert read_state(settings.state_dir, "offboarding").last_status == "partial"
    assert any("STOPPING=1" in m and "STATUS=stopping: waiting for offboarding" in m
               for m in map(" ".join, notifier.messages))


def test_a_job_that_does_not_stop_is_cancelled_after_the_drain_timeout(tmp_path: Path) -> None:
    settings = only(tmp_path, "device-compliance")
    seed_success(settings, "device-compliance", local(2026, 12, 1, 7, 0, 1))
    cancelled: list[bool] = []
    gate = asyncio.Event()

    async def stubborn(call: Call) -> None:
        gate.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    runner = FakeRunner([stubborn])

    async def scenario() -> None:
        async with running(settings, runner, local(2026, 12, 2, 9), drain_timeout=0.05):
            await asyncio.wait_for(gate.wait(), WAIT)

    asyncio.run(scenario())
    assert cancelled == [True]


def test_second_stop_request_cancels_at_once(tmp_path: Path) -> None:
    settings = only(tmp_path, "device-compliance")
    seed_success(settings, "device-compliance", local(2026, 12, 1, 7, 0, 1))
    gate = asyncio.Event()

    async def stubborn(call: Call) -> None:
        gate.set()
        await asyncio.Event().wait()

    runner = FakeRunner([stubborn])

    async def scenario() -> None:
        async with running(settings, runner, local(2026, 12, 2, 9),
                           drain_timeout=3600) as daemon:
            await asyncio.wait_for(gate.wait(), WAIT)
            daemon.request_stop("SIGTERM")
            daemon.request_stop("SIGINT")

    asyncio.run(scenario())


def test_serve_returns_on_the_stop_event(tmp_path: Path) -> None:
    settings = only(tmp_path, "offboarding")

    async def scenario() -> None:
        stop = asyncio.Event()
        notifier = RecordingNotifier()
        task = asyncio.create_task(serve(settings, clock=moving_clock(local(2026, 12, 2, 9)),
                                         stop_event=stop, notifier=notifier,
                                         handle_signals=False, run_job=FakeRunner()))
        await notifier.wait_for("READY=1")
        stop.set()
        await asyncio.wait_for(task, WAIT)

    asyncio.run(scenario())


def test_no_enabled_job_is_a_usage_error(tmp_path: Path) -> None:
    settings = only(tmp_path)
    with pytest.raises(UsageError, match="no job is enabled"):
        asyncio.run(serve(settings, run_job=FakeRunner(), notifier=RecordingNotifier()))


# ---- systemd --------------------------------------------------------------------------------

def test_ready_status_watchdog_stopping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = only(tmp_path, "offboarding", "active-users")
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # WatchdogSec=0.1s: ping every 0.05 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    notifier = RecordingNotifier()

    async def scenario() -> None:
        async with running(settings, FakeRunner(), local(2026, 11, 20, 9), notifier=notifier):
            await notifier.wait_for("WATCHDOG=1")

    asyncio.run(scenario())
    first = notifier.messages[0]
    assert first[0] == "READY=1"
    assert ("STATUS=next: active-users 2026-11-30 07:00 CET, "
            "offboarding 2026-11-21 06:00 CET") in first
    assert notifier.sent("STOPPING=1")
    assert notifier.messages[-1] == ["STATUS=stopped"]
