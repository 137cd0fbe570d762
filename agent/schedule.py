"""Job schedules: cron expressions and the `last-working-day HH:MM` trigger.

A schedule is a string from the policy: either a standard crontab expression
"m h dom mon dow" or `last-working-day HH:MM` (the month's last Dutch working day, see
`agent.workdays`). Both are read as wall-clock times in the configured time zone.

APScheduler 3 is the engine, with three corrections to its crontab reading, so that a
schedule means what it means in cron(8):
- Day-of-week numbers: APScheduler 3 counts 0 = Monday, crontab 0 (and 7) = Sunday, so
  `from_crontab("0 7 * * 1-5")` would run Tuesday to Saturday. We translate the field to
  day names ourselves.
- Day of month and day of week both restricted ("0 7 1 * 1"): cron runs when *either*
  matches, APScheduler only when both do. We combine two triggers with OrTrigger.
- Autumn DST: a fixed-hour job ("30 2 * * *") would run twice in the repeated hour; like
  cron we run it once (the first 02:30). Wildcard-hour jobs ("*/30 * * * *") keep running
  through the repeated hour. A spring-forward time that does not exist (02:30 on the last
  Sunday of March in Amsterdam) runs an hour later in wall-clock terms (03:30), once.

`parse_schedule` is called while the configuration loads (`config check`), so this module
imports only APScheduler's trigger modules (a few ms once settings are loaded), never the
scheduler, and the holiday calendar only when a last-working-day time is computed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

_LAST_WORKING_DAY = re.compile(r"last-working-day\s+(\d{1,2}):(\d{2})")
_ONE_US = timedelta(microseconds=1)
_DOW_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # crontab numbering 0..6
_APS_ORDER = (1, 2, 3, 4, 5, 6, 0)  # emit days Monday first, as APScheduler counts them
_DOW_ITEM = re.compile(r"(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?")
_FIELD_LABELS = ("minute", "hour", "day of month", "month", "day of week")
_FORMAT_HINT = ("a cron expression 'm h dom mon dow' (e.g. '0 6 * * 1-5') or "
                "'last-working-day HH:MM'")


class WorkdayCalendar(Protocol):
    """What the last-working-day trigger needs (`agent.workdays.WorkdayCalendar`)."""

    def last_working_day(self, year: int, month: int) -> date: ...


@dataclass(frozen=True)
class CronSpec:
    """A crontab expression in APScheduler's terms, and the cron rules it implies."""

    minute: str
    hour: str
    day: str
    month: str
    day_of_week: str  # day names, APScheduler-safe
    dom_restricted: bool  # cron(8): the field does not start with '*'
    dow_restricted: bool
    fixed_hour: bool  # the hour field is not a wildcard: run once in a repeated DST hour


@dataclass(frozen=True)
class LastWorkingDaySpec:
    hour: int
    minute: int


def parse_schedule(value: str) -> None:
    """Raise ValueError naming the problem when `value` is not a valid schedule."""
    spec = _parse(value)
    if isinstance(spec, CronSpec):
        trigger = _cron_trigger(spec, ZoneInfo("UTC"))
        if trigger.get_next_fire_time(None, datetime(2000, 1, 1, tzinfo=UTC)) is None:
            raise ValueError(f"cron expression {value!r} never fires (no such date)")


def is_last_working_day(value: str) -> bool:
    """Whether the schedule is the monthly `last-working-day HH:MM` (the delivery run)."""
    return _LAST_WORKING_DAY.fullmatch(value.strip()) is not None


def build_trigger(value: str, tz: ZoneInfo,
                  calendar: WorkdayCalendar | None = None) -> BaseTrigger:
    """The APScheduler 3 trigger for a schedule, in time zone `tz`.

    `calendar` decides the working days of `last-working-day` (default: the Dutch calendar
    of `agent.workdays`); the active-users policy carries its own (Good Friday, 5 May).
    """
    spec = _parse(value)
    if isinstance(spec, LastWorkingDaySpec):
        return LastWorkingDayTrigger(spec.hour, spec.minute, tz, calendar)
    return _cron_trigger(spec, tz)


def policy_trigger(policy: Any, tz: ZoneInfo) -> BaseTrigger:
    """The trigger of a job's policy: its `schedule`, with its workday calendar if it has one."""
    return build_trigger(policy.schedule, tz, getattr(policy, "calendar", None))


def next_fire_times(schedule: str | BaseTrigger, tz: ZoneInfo, after: datetime,
                    n: int) -> list[datetime]:
    """The first `n` fire times strictly after `after`, as aware datetimes in `tz`."""
    trigger = build_trigger(schedule, tz) if isinstance(schedule, str) else schedule
    times: list[datetime] = []
    moment: datetime | None = trigger.get_next_fire_time(None, after + _ONE_US)
    while moment is not None and len(times) < n:
        times.append(_normalise(moment, tz))
        moment = trigger.get_next_fire_time(moment, moment)
    return times


def previous_fire_time(schedule: str | BaseTrigger, tz: ZoneInfo,
                       at: datetime) -> datetime | None:
    """The latest fire time at or before `at` (None if none within about eight years).

    APScheduler 3 triggers only look forward, so this searches: widen a window back from
    `at` until a fire time falls in it, then bisect towards `at` (about 45 steps at most,
    whatever the schedule: "* * * * *" and "0 0 29 2 *" cost the same).
    """
    trigger = build_trigger(schedule, tz) if isinstance(schedule, str) else schedule

    def first_from(moment: datetime) -> datetime | None:
        # Search in UTC: `+ timedelta` on a ZoneInfo datetime is wall-clock arithmetic,
        # which lands an hour off across a DST change and loses fire times there.
        found: datetime | None = trigger.get_next_fire_time(None, moment)
        return None if found is None else found.astimezone(UTC)

    at = at.astimezone(UTC)

    for window in (timedelta(hours=1), timedelta(days=1), timedelta(days=32),
                   timedelta(days=367), timedelta(days=8 * 366 + 2)):
        found = first_from(at - window)
        if found is not None and found <= at:
            break
    else:
        return None
    low, high = found, at  # invariant: `low` fires, and the answer is in [low, high]
    while True:
        following = first_from(low + _ONE_US)
        if following is None or following > high:
            return _normalise(low, tz)
        middle = low + max((high - low) // 2, _ONE_US)
        candidate = first_from(middle)
        if candidate is not None and candidate <= high:
            low = candidate
        else:  # nothing fires in [middle, high]
            low, high = following, middle


class LastWorkingDayTrigger(BaseTrigger):  # type: ignore[misc]  # APScheduler is untyped
    """Fires at HH:MM local time on each month's last Dutch working day.

    Cron cannot say this: `day='last', day_of_week='mon-fri'` silently skips every month
    whose last day is a weekend, and knows no holidays.
    """

    def __init__(self, hour: int, minute: int, tz: ZoneInfo,
                 calendar: WorkdayCalendar | None = None) -> None:
        self.at = time(hour, minute)
        self.timezone = tz
        self.calendar = calendar

    def get_next_fire_time(self, previous_fire_time: datetime | None,
                           now: datetime) -> datetime | None:
        if self.calendar is not None:
            last_working_day = self.calendar.last_working_day
        else:
            from agent.workdays import last_working_day

        # Same contract as CronTrigger: after the previous fire time if there is one
        # (APScheduler then works out the misfired runs), else from `now` on.
        start = now
        if previous_fire_time is not None:
            start = min(now, previous_fire_time + _ONE_US)
            if start == previous_fire_time:
                start += _ONE_US
        local = start.astimezone(self.timezone)
        year, month = local.year, local.month
        for _ in range(3):
            day = last_working_day(year, month)
            candidate = _normalise(datetime.combine(day, self.at, tzinfo=self.timezone),
                                   self.timezone)
            if candidate >= start:
                return candidate
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return None  # pragma: no cover (every month has a working day)

    def __str__(self) -> str:
        return f"last-working-day {self.at:%H:%M}"

    def __repr__(self) -> str:
        return f"<LastWorkingDayTrigger {self.at:%H:%M} ({self.timezone.key})>"


class CronScheduleTrigger(BaseTrigger):  # type: ignore[misc]
    """A crontab expression read as cron(8) reads it (see the module docstring)."""

    def __init__(self, spec: CronSpec, inner: BaseTrigger, tz: ZoneInfo, text: str) -> None:
        self.spec = spec
        self.inner = inner
        self.timezone = tz
        self.text = text

    def get_next_fire_time(self, previous_fire_time: datetime | None,
                           now: datetime) -> datetime | None:
        moment: datetime | None = self.inner.get_next_fire_time(previous_fire_time, now)
        while moment is not None and self.spec.fixed_hour and _repeated_wall_time(
                moment, self.timezone):
            moment = self.inner.get_next_fire_time(moment, moment)
        return None if moment is None else _normalise(moment, self.timezone)

    def __str__(self) -> str:
        return f"cron[{self.text}]"

    def __repr__(self) -> str:
        return f"<CronScheduleTrigger {self.text!r} ({self.timezone.key})>"


# ---- parsing ---------------------------------------------------------------------------------

def _parse(value: str) -> CronSpec | LastWorkingDaySpec:
    if not isinstance(value, str):
        raise ValueError(f"a schedule is a string: {_FORMAT_HINT}")
    text = value.strip()
    if text.startswith("last-working-day"):
        match = _LAST_WORKING_DAY.fullmatch(text)
        if not match:
            raise ValueError(f"{value!r}: write 'last-working-day HH:MM', e.g. "
                             "'last-working-day 07:00'")
        at_hour, at_minute = int(match[1]), int(match[2])
        if at_hour > 23 or at_minute > 59:
            raise ValueError(f"{value!r}: {match[1]}:{match[2]} is not a time of day "
                             "(00:00 to 23:59)")
        return LastWorkingDaySpec(at_hour, at_minute)
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(f"{value!r} is not {_FORMAT_HINT}; it has {len(fields)} "
                         "field(s), a cron expression has 5")
    minute, hour, day, month, dow = fields
    for label, name, expr in zip(_FIELD_LABELS[:4], ("minute", "hour", "day", "month"),
                                 fields[:4], strict=True):
        try:
            CronTrigger(**{name: expr}, timezone=UTC)
        except ValueError as exc:
            raise ValueError(f"cron expression {value!r}: {label} field {expr!r}: "
                             f"{exc}") from None
    try:
        day_of_week = _translate_dow(dow.lower())
    except ValueError as exc:
        raise ValueError(f"cron expression {value!r}: day of week field {dow!r}: "
                         f"{exc}") from None
    return CronSpec(minute=minute, hour=hour, day=day, month=month, day_of_week=day_of_week,
                    dom_restricted=not day.startswith("*"),
                    dow_restricted=not dow.startswith("*"),
                    fixed_hour=not hour.startswith("*"))


def _translate_dow(field: str) -> str:
    """A crontab day-of-week field (0/7 = Sunday, names, ranges, steps) as day names."""
    days: set[int] = set()
    for item in field.split(","):
        match = _DOW_ITEM.fullmatch(item)
        if not match:
            raise ValueError(f"cannot read {item!r} (use 0-7, sun-sat, ranges, lists, steps)")
        span, step_text = match[1], match[2]
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            low, high = span.split("-")
            first, last = _dow_value(low), _dow_value(high)
            if high in ("7", "sun") and first > 0:  # "5-7", "fri-sun": through Sunday
                last = 7
            if first > last:
                raise ValueError(f"range {span!r} runs backwards")
        else:
            if step_text is not None:
                raise ValueError(f"{item!r}: a step needs a range or '*'")
            first = last = _dow_value(span)
        step = int(step_text) if step_text is not None else 1
        if step < 1:
            raise ValueError(f"{item!r}: the step must be at least 1")
        days.update(value % 7 for value in range(first, last + 1, step))
    if len(days) == 7:
        return "*"
    return ",".join(_DOW_NAMES[d] for d in _APS_ORDER if d in days)


def _dow_value(token: str) -> int:
    if token.isdigit():
        number = int(token)
        if number > 7:
            raise ValueError(f"{token} is not a day (0-7, 0 and 7 are Sunday)")
        return number  # 7 (Sunday) is folded to 0 by the caller
    for index, name in enumerate(_DOW_NAMES):
        if token == name:
            return index
    raise ValueError(f"{token!r} is not a day (0-7 or sun, mon, tue, wed, thu, fri, sat)")


def _cron_trigger(spec: CronSpec, tz: ZoneInfo) -> CronScheduleTrigger:
    def cron(day: str, day_of_week: str) -> BaseTrigger:
        return CronTrigger(minute=spec.minute, hour=spec.hour, day=day, month=spec.month,
                           day_of_week=day_of_week, timezone=tz)

    inner: BaseTrigger
    if spec.dom_restricted and spec.dow_restricted:  # cron(8): either one matches
        inner = OrTrigger([cron(spec.day, "*"), cron("*", spec.day_of_week)])
    else:
        inner = cron(spec.day, spec.day_of_week)
    text = " ".join((spec.minute, spec.hour, spec.day, spec.month, spec.day_of_week))
    return CronScheduleTrigger(spec, inner, tz, text)


def _repeated_wall_time(moment: datetime, tz: ZoneInfo) -> bool:
    """Whether `moment` is the second occurrence of a wall-clock time (autumn DST)."""
    local = moment.astimezone(tz)
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()


def _normalise(moment: datetime, tz: ZoneInfo) -> datetime:
    # through UTC: astimezone() to the zone a datetime already has changes nothing, and a
    # nonexistent wall time (spring DST gap) must come out as the real one
    return moment.astimezone(UTC).astimezone(tz)
