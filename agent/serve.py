"""`dap-agent serve`: the daemon that runs the jobs on their schedules.

One APScheduler 3 `AsyncIOScheduler` entry per enabled job (`max_instances=1`,
`coalesce=True`, an explicit misfire grace time). Every run goes through
`agent.runner.run_job`, exactly like a run by hand: same lock, same audit log.

- Catch-up: at start, every job whose latest scheduled time passed while the daemon was
  down (no successful daemon run since) runs once, with trigger "catch-up". A run that
  misses its grace time while the daemon is up (suspend, a blocked loop) is caught up too.
- One at a time: the per-job lock (`agent.lock`) keeps the daemon and the CLI apart; if an
  admin is running the job by hand, the daemon tries again every `lock_retry` seconds
  instead of skipping (a draft run by hand must not replace the month's delivery).
- Stopping (SIGTERM/SIGINT): no new run starts; running jobs get `drain_timeout` seconds to
  finish (they stop after the change they are making when the runner supports it), then
  their tasks are cancelled; only then is the scheduler shut down (its AsyncIOExecutor
  would cancel them at once). A second signal cancels at once.
- A job that raises never takes the daemon down: the Run has audited it as failed; it is
  logged and tried again (`retry_delays`, then at its next scheduled time).
- systemd: READY=1 once scheduled, STATUS= with the next run times, WATCHDOG=1 from the
  event loop, STOPPING=1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from apscheduler.triggers.base import BaseTrigger

from agent.errors import LockBusyError, RunInterrupted, UsageError
from agent.jobstate import mark_scheduled, parse_time, read_state
from agent.run import iso_z
from agent.schedule import (
    is_last_working_day,
    next_fire_times,
    policy_trigger,
    previous_fire_time,
)
from agent.systemd import Notifier, watchdog_interval

if TYPE_CHECKING:
    from agent.job import JobSpec
    from agent.run import RunReport
    from agent.settings import Settings

log = structlog.get_logger("agent.serve")

Clock = Callable[[], datetime]
RunJob = Callable[..., Awaitable["RunReport"]]

# A fire more than this late (event loop blocked, machine suspended) is not run by
# APScheduler; the missed-run listener turns it into one catch-up run instead.
MISFIRE_GRACE_SECONDS = 15 * 60
# SIGTERM: how long running jobs may take to finish. The units set TimeoutStopSec=90.
DRAIN_TIMEOUT = 60.0
CANCEL_TIMEOUT = 10.0
LOCK_RETRY = 30.0
RETRY_DELAYS: tuple[float, ...] = (600.0, 1800.0, 3600.0, 7200.0, 14400.0)
STATUS_REFRESH = 300.0


@dataclass
class _Scheduled:
    spec: JobSpec
    schedule: str
    trigger: BaseTrigger  # in the agent's clock
    retries: int = 0
    retry_handle: asyncio.TimerHandle | None = field(default=None, repr=False)


async def serve(settings: Settings, *, clock: Clock | None = None,
                stop_event: asyncio.Event | None = None, drain_timeout: float = DRAIN_TIMEOUT,
                lock_retry: float = LOCK_RETRY,
                retry_delays: Sequence[float] = RETRY_DELAYS,
                notifier: Notifier | None = None, handle_signals: bool = True,
                run_job: RunJob | None = None) -> None:
    """Run the enabled jobs on their schedules until SIGTERM/SIGINT or `stop_event`.

    `clock` is the agent's time (default: the real time; in sandbox mode with
    `DAP_AGENT_NOW`, that moment plus the time elapsed since start). It is assumed to
    advance like the real clock: APScheduler waits in real time, shifted by the offset
    between the two at start. `run_job` is for tests (default `agent.runner.run_job`).
    """
    from agent.credentials import check_credentials

    # refuse to start on a credential that cannot work (exit 2: the unit does not restart)
    for warning in check_credentials(settings):
        log.warning(warning)
    daemon = Daemon(settings, clock=clock, drain_timeout=drain_timeout, lock_retry=lock_retry,
                    retry_delays=retry_delays, notifier=notifier, run_job=run_job)
    with serve_lock(settings):
        await daemon.run(stop_event or asyncio.Event(), handle_signals=handle_signals)


@contextlib.contextmanager
def serve_lock(settings: Settings) -> Iterator[None]:
    """One daemon per state directory (`locks/serve.lock`): a second one would run every
    job twice and fight over the job state."""
    from agent.lock import describe_holder, job_lock, lock_path, read_holder
    from agent.runner import ensure_state_dir

    ensure_state_dir(settings)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(job_lock(settings.state_dir, "serve", wait=False))
        except LockBusyError:
            holder = describe_holder(read_holder(lock_path(settings.state_dir, "serve")))
            raise LockBusyError(f"serve: another dap-agent serve already uses state_dir "
                                f"{settings.state_dir} ({holder}); one daemon per state "
                                "directory") from None
        yield


def default_clock(settings: Settings) -> Clock:
    from agent.runner import agent_now

    if not (settings.uses_sandbox and os.environ.get("DAP_AGENT_NOW")):
        return lambda: datetime.now(UTC)
    start, started = agent_now(settings), time.monotonic()  # a test hook: sandbox only
    return lambda: start + timedelta(seconds=time.monotonic() - started)


def catch_up_time(schedule: str | BaseTrigger, tz: Any, reference: datetime | None,
                  now: datetime) -> datetime | None:
    """The latest scheduled time in (reference, now], if any: a run that was missed."""
    if reference is None:
        return None
    latest = previous_fire_time(schedule, tz, now)
    return latest if latest is not None and latest > reference else None


class Daemon:
    def __init__(self, settings: Settings, *, clock: Clock | None, drain_timeout: float,
                 lock_retry: float, retry_delays: Sequence[float], notifier: Notifier | None,
                 run_job: RunJob | None) -> None:
        from jobs import REGISTRY

        self.settings = settings
        self.tz = settings.zone
        self.clock = clock or default_clock(settings)
        self.drain_timeout = drain_timeout
        self.lock_retry = lock_retry
        self.retry_delays = tuple(retry_delays)
        self.notifier = notifier or Notifier.from_env()
        if run_job is None:
            from agent.runner import run_job as real_run_job

            run_job = real_run_job
        self._run_job: RunJob = run_job
        self.jobs: dict[str, _Scheduled] = {}
        for spec in REGISTRY.values():
            policy = settings.policy(spec.policy_section)
            if policy.enabled:
                self.jobs[spec.id] = _Scheduled(spec, policy.schedule,
                                                policy_trigger(policy, self.tz))
        if not self.jobs:
            raise UsageError("serve: no job is enabled in the configuration (set "
                             "enabled = true in at least one job's table)")
        self.running: dict[str, asyncio.Task[None]] = {}
        self.stopping = False
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduler: Any = None

    # ---- lifecycle ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, handle_signals: bool = True) -> None:
        from apscheduler.events import EVENT_JOB_MISSED
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        from agent.runner import ensure_state_dir

        ensure_state_dir(self.settings)
        self._stop = stop
        self._loop = asyncio.get_running_loop()
        signals = self._install_signal_handlers() if handle_signals else []
        _route_apscheduler_logs()
        offset = self.clock() - datetime.now(UTC)
        scheduler = AsyncIOScheduler(timezone=self.tz, event_loop=self._loop)
        for job_id, entry in self.jobs.items():
            scheduler.add_job(
                self._on_schedule, trigger=_Shifted(entry.trigger, offset), args=[job_id],
                id=job_id, name=job_id, max_instances=1, coalesce=True,
                # set on each job: job options are stored with the job, defaults are 1 s
                misfire_grace_time=MISFIRE_GRACE_SECONDS, replace_existing=True)
        scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED)
        self._scheduler = scheduler
        watchdog: asyncio.Task[None] | None = None
        try:
            scheduler.start()
            self._catch_up()
            log.info("daemon started", jobs=self._next_runs())
            self.notifier.ready(self._status())
            watchdog = asyncio.create_task(self._keepalive(), name="dap-agent-keepalive")
            await stop.wait()
            await self._drain()
        finally:
            if watchdog is not None:
                watchdog.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watchdog
            for entry in self.jobs.values():
                if entry.retry_handle is not None:
                    entry.retry_handle.cancel()
            if scheduler.running:
                scheduler.shutdown(wait=False)
                await asyncio.sleep(0)  # AsyncIOScheduler shuts down via call_soon
            for signum in signals:
                self._loop.remove_signal_handler(signum)
            self.notifier.status("stopped")
            log.info("daemon stopped")

    def request_stop(self, reason: str = "stop requested") -> None:
        """No new run starts from now on; `run` drains the running ones and returns."""
        if self.stopping:
            log.warning("second stop request: cancelling the running jobs now", reason=reason)
            for task in list(self.running.values()):
                task.cancel()
            return
        self.stopping = True
        log.info("stopping", reason=reason, running=sorted(self.running))
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.pause()
        if self._stop is not None:
            self._stop.set()

    async def _drain(self) -> None:
        self.stopping = True  # also when stopped through the event, not a signal
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.pause()
        self.notifier.stopping(f"stopping: waiting for {', '.join(sorted(self.running))}"
                               if self.running else "stopping")
        tasks = set(self.running.values())
        if not tasks:
            return
        log.info("waiting for running jobs to finish", jobs=sorted(self.running),
                 timeout_s=self.drain_timeout)
        _, pending = await asyncio.wait(tasks, timeout=self.drain_timeout)
        if not pending:
            return
        log.warning("jobs still running after the drain timeout: cancelling them",
                    jobs=sorted(j for j, t in self.running.items() if t in pending))
        for task in pending:
            task.cancel()
        _, still = await asyncio.wait(pending, timeout=CANCEL_TIMEOUT)
        if still:
            log.error("jobs did not stop after cancelling; exiting anyway", count=len(still))

    def _install_signal_handlers(self) -> list[int]:
        assert self._loop is not None
        installed: list[int] = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(signum, self.request_stop, signum.name)
            installed.append(signum)
        return installed

    # ---- starting runs -----------------------------------------------------------------

    async def _on_schedule(self, job_id: str) -> None:
        """APScheduler's entry: the run it starts is the latest fire time up to now."""
        entry = self.jobs[job_id]
        entry.retries = 0
        self._cancel_retry(entry)
        due = previous_fire_time(entry.trigger, self.tz, self.clock())
        task = self.start(job_id, "schedule", due)
        if task is not None:  # keep APScheduler's instance count right: wait, never raise
            await asyncio.wait({task})

    def _on_missed(self, event: Any) -> None:
        if self.stopping or event.job_id not in self.jobs:
            return
        entry = self.jobs[event.job_id]
        due = previous_fire_time(entry.trigger, self.tz, self.clock())
        log.warning("scheduled run missed its start window: catching it up",
                    job=event.job_id, scheduled_for=_iso(due))
        self.start(event.job_id, "catch-up", due)

    def _catch_up(self) -> None:
        now = self.clock()
        for job_id, entry in self.jobs.items():
            state = read_state(self.settings.state_dir, job_id)
            if state.scheduled_since is None:
                state = mark_scheduled(self.settings.state_dir, job_id, now)
            reference = (parse_time(state.last_scheduled_success_at)
                         or parse_time(state.scheduled_since))
            due = catch_up_time(entry.trigger, self.tz, reference, now)
            if due is None:
                continue
            log.warning("run missed while the daemon was down: catching up", job=job_id,
                        scheduled_for=_iso(due), last_success=state.last_scheduled_success_at)
            self.start(job_id, "catch-up", due)

    def start(self, job_id: str, trigger: str,
              scheduled_for: datetime | None) -> asyncio.Task[None] | None:
        """Start a run of the job as a task, unless stopping or it is already running."""
        if self.stopping:
            log.info("stopping: not starting a run", job=job_id, trigger=trigger)
            return None
        if job_id in self.running:
            log.warning("job still running: this start is skipped", job=job_id,
                        trigger=trigger, scheduled_for=_iso(scheduled_for))
            return None
        task = asyncio.create_task(self._execute(job_id, trigger, scheduled_for),
                                   name=f"dap-agent-{job_id}")
        self.running[job_id] = task
        task.add_done_callback(lambda _t: self._finished(job_id))
        self.notifier.status(self._status())
        return task

    def _finished(self, job_id: str) -> None:
        self.running.pop(job_id, None)
        if not self.stopping:
            self.notifier.status(self._status())

    async def _execute(self, job_id: str, trigger: str, scheduled_for: datetime | None) -> None:
        entry = self.jobs[job_id]
        structlog.contextvars.bind_contextvars(job=job_id)
        kwargs = self._run_kwargs(entry, scheduled_for)
        while True:
            try:
                report = await self._run_job(self.settings, job_id, trigger=trigger,
                                             now=self.clock(), **kwargs)
            except LockBusyError as exc:
                if self.stopping:
                    return
                log.warning("job is running elsewhere: trying again", job=job_id,
                            detail=str(exc), retry_in_s=self.lock_retry)
                if await self._sleep_unless_stopping(self.lock_retry):
                    return
                continue
            except RunInterrupted as exc:
                log.warning("run stopped after its current change (daemon stopping)",
                            job=job_id, run_id=_run_id(exc), detail=str(exc))
                return
            except asyncio.CancelledError:
                log.warning("run cancelled (daemon stopping, drain timeout passed)", job=job_id)
                raise
            except Exception as exc:  # the daemon outlives any job failure
                log.error("run failed", job=job_id, trigger=trigger, run_id=_run_id(exc),
                          error=str(exc) or type(exc).__name__, error_type=type(exc).__name__)
                self._schedule_retry(entry, scheduled_for)
                return
            break
        entry.retries = 0
        log.info("run done", job=job_id, trigger=trigger, run_id=report.run_id,
                 status=report.status, findings=len(report.findings))

    def _run_kwargs(self, entry: _Scheduled, scheduled_for: datetime | None) -> dict[str, Any]:
        # the last-working-day run delivers the month of `scheduled_for` (for a catch-up
        # after a month end: the missed month, not the current one)
        return {"final": is_last_working_day(entry.schedule), "scheduled_for": scheduled_for,
                "stop": lambda: self.stopping}

    def _schedule_retry(self, entry: _Scheduled, scheduled_for: datetime | None) -> None:
        if self.stopping or entry.retries >= len(self.retry_delays) or self._loop is None:
            return
        delay = self.retry_delays[entry.retries]
        upcoming = next_fire_times(entry.trigger, self.tz, self.clock(), 1)
        if upcoming and upcoming[0] <= self.clock() + timedelta(seconds=delay):
            return  # its next scheduled run comes first
        entry.retries += 1
        log.info("will try the failed run again", job=entry.spec.id, in_s=delay,
                 attempt=entry.retries)
        self._cancel_retry(entry)
        entry.retry_handle = self._loop.call_later(
            delay, self._retry, entry.spec.id, scheduled_for)

    def _retry(self, job_id: str, scheduled_for: datetime | None) -> None:
        self.jobs[job_id].retry_handle = None
        self.start(job_id, "retry", scheduled_for)

    @staticmethod
    def _cancel_retry(entry: _Scheduled) -> None:
        if entry.retry_handle is not None:
            entry.retry_handle.cancel()
            entry.retry_handle = None

    async def _sleep_unless_stopping(self, seconds: float) -> bool:
        """Sleep; True if the daemon started stopping meanwhile."""
        assert self._stop is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        return self.stopping or self._stop.is_set()

    # ---- systemd -----------------------------------------------------------------------

    async def _keepalive(self) -> None:
        """WATCHDOG=1 from the event loop itself (a blocked loop misses it), and STATUS."""
        interval = watchdog_interval()
        period = min(interval, STATUS_REFRESH) if interval else STATUS_REFRESH
        last_status = time.monotonic()
        while True:
            await asyncio.sleep(period)
            if interval:
                self.notifier.watchdog()
            if time.monotonic() - last_status >= STATUS_REFRESH and not self.stopping:
                self.notifier.status(self._status())
                last_status = time.monotonic()

    def _next_runs(self) -> dict[str, str | None]:
        now = self.clock()
        result: dict[str, str | None] = {}
        for job_id, entry in self.jobs.items():
            upcoming = next_fire_times(entry.trigger, self.tz, now, 1)
            result[job_id] = upcoming[0].strftime("%Y-%m-%d %H:%M %Z") if upcoming else None
        return result

    def _status(self) -> str:
        parts = [f"{job} {when or 'never'}" for job, when in self._next_runs().items()]
        text = "next: " + ", ".join(parts)
        if self.running:
            text = f"running: {', '.join(sorted(self.running))}; {text}"
        return text


class _Shifted(BaseTrigger):  # type: ignore[misc]  # APScheduler is untyped
    """A trigger in the agent's clock, seen from the real clock APScheduler waits on.

    With the real clock the offset is ~0. With a test clock (`DAP_AGENT_NOW`, sandbox only)
    a schedule "0 7 * * *" fires when the *agent's* clock says 07:00.
    """

    def __init__(self, inner: BaseTrigger, offset: timedelta) -> None:
        self.inner = inner
        self.offset = offset if abs(offset) > timedelta(seconds=1) else timedelta(0)

    def get_next_fire_time(self, previous_fire_time: datetime | None,
                           now: datetime) -> datetime | None:
        previous = previous_fire_time + self.offset if previous_fire_time else None
        moment: datetime | None = self.inner.get_next_fire_time(previous, now + self.offset)
        return moment - self.offset if moment is not None else None

    def __str__(self) -> str:
        return str(self.inner)


class _ToStructlog(logging.Handler):
    """APScheduler logs through `logging`: pass its warnings on as structlog JSON lines."""

    def emit(self, record: logging.LogRecord) -> None:
        structlog.get_logger(record.name).log(record.levelno, record.getMessage())


def _route_apscheduler_logs() -> None:
    logger = logging.getLogger("apscheduler")
    if not any(isinstance(h, _ToStructlog) for h in logger.handlers):
        logger.addHandler(_ToStructlog(logging.WARNING))
        logger.propagate = False


def _run_id(exc: BaseException) -> str | None:
    report: RunReport | None = getattr(exc, "report", None)  # the runner attaches it
    return report.run_id if report is not None else None


def _iso(moment: datetime | None) -> str | None:
    return iso_z(moment) if moment is not None else None
