"""Dutch working days: Monday to Friday minus Dutch public holidays (DAP 3.4.1 **choice**).

The holidays come from the maintained `holidays` package (its `NL` calendar, `PUBLIC`
category), never from a hand-written list. Two days are a matter of reading, so they are
settings (`WorkdayCalendar`), each defaulting to what the package's NL calendar says:

- Good Friday: listed in the Algemene termijnenwet and in the package's NL public
  holidays, although many employers work that day. Default: a holiday. For a deadline
  ("at the latest on the last working day") the cautious reading is the earlier day; it
  decides e.g. March 2029 (Friday 30 March is Good Friday: Thursday 29 March, not Friday).
- Liberation Day (5 May): a public holiday every year in the Atw, but for most employers
  (collective agreements) a day off only every 5 years (2025, 2030, ...); the package's
  `PUBLIC` category lists it every 5 years, its `OPTIONAL` category every year. Default:
  every 5 years. (5 May never decides the last working day of a month.)

Dates are calendar dates in the configured time zone: convert a moment with `local_date`
first (a run at 00:30 on 1 May in Amsterdam is 22:30 on 30 April in UTC).
"""

from __future__ import annotations

import calendar as _calendar
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

import holidays
from holidays.constants import OPTIONAL, PUBLIC

LiberationDay = Literal["every-5-years", "every-year", "never"]

# Names in the package's en_US translation: stable identifiers, unlike the Dutch default.
_GOOD_FRIDAY = "Good Friday"
_EASTER_SUNDAY = "Easter Sunday"
_LIBERATION_DAY = "Liberation Day"


@dataclass(frozen=True)
class WorkdayCalendar:
    """Which Dutch days are not working days, on top of the weekend."""

    good_friday: bool = True  # Good Friday is a holiday
    liberation_day: LiberationDay = "every-5-years"

    def holidays(self, year: int) -> dict[date, str]:
        """The year's holidays under this reading, date -> English name."""
        return dict(_holidays(self, year))

    def is_working_day(self, day: date) -> bool:
        if isinstance(day, datetime):  # a moment has no date until it has a time zone
            raise TypeError("is_working_day takes a date; use local_date(moment, tz) first")
        return day.weekday() < 5 and day not in _holiday_dates(self, day.year)

    def last_working_day(self, year: int, month: int) -> date:
        day = date(year, month, _calendar.monthrange(year, month)[1])
        while not self.is_working_day(day):
            day -= timedelta(days=1)
        return day


DEFAULT_CALENDAR = WorkdayCalendar()


@lru_cache(maxsize=64)
def _holidays(cal: WorkdayCalendar, year: int) -> tuple[tuple[date, str], ...]:
    # PUBLIC lists Liberation Day every 5 years, OPTIONAL every year: ask for both and
    # decide per setting below. Names are compared in the en_US translation.
    found = holidays.country_holidays("NL", years=year, categories=(PUBLIC, OPTIONAL),
                                      language="en_US")
    result: dict[date, str] = {}
    for day, names in found.items():
        kept = [n for n in str(names).split("; ") if _keep(cal, n, year)]
        if kept:
            result[day] = "; ".join(dict.fromkeys(kept))
    if cal.good_friday and _GOOD_FRIDAY not in result.values():
        # Older package versions left Good Friday out of NL: derive it from their Easter.
        for day, name in list(result.items()):
            if name == _EASTER_SUNDAY:
                result[day - timedelta(days=2)] = _GOOD_FRIDAY
    return tuple(sorted(result.items()))


@lru_cache(maxsize=64)
def _holiday_dates(cal: WorkdayCalendar, year: int) -> frozenset[date]:
    return frozenset(day for day, _ in _holidays(cal, year))


def _keep(cal: WorkdayCalendar, name: str, year: int) -> bool:
    if name == _GOOD_FRIDAY:
        return cal.good_friday
    if name == _LIBERATION_DAY:
        if cal.liberation_day == "every-year":
            return True
        return cal.liberation_day == "every-5-years" and year % 5 == 0
    return True


def is_working_day(day: date, calendar: WorkdayCalendar = DEFAULT_CALENDAR) -> bool:
    """Monday to Friday and not a Dutch public holiday (under `calendar`'s reading)."""
    return calendar.is_working_day(day)


def last_working_day(year: int, month: int,
                     calendar: WorkdayCalendar = DEFAULT_CALENDAR) -> date:
    """The month's last working day (the active-user overview's deadline)."""
    return calendar.last_working_day(year, month)


def local_date(moment: datetime, tz: ZoneInfo) -> date:
    """The calendar date of an aware moment in the configured time zone."""
    if moment.tzinfo is None:
        raise ValueError("local_date needs a timezone-aware datetime")
    return moment.astimezone(tz).date()


def is_last_working_day(moment: datetime, tz: ZoneInfo,
                        calendar: WorkdayCalendar = DEFAULT_CALENDAR) -> bool:
    """Whether `moment`, seen in `tz`, falls on its month's last working day."""
    day = local_date(moment, tz)
    return day == calendar.last_working_day(day.year, day.month)


def last_working_day_at(year: int, month: int, at: time, tz: ZoneInfo,
                        calendar: WorkdayCalendar = DEFAULT_CALENDAR) -> datetime:
    """The aware moment `at` (wall-clock time in `tz`) on the month's last working day.

    Wall-clock time across DST: 07:00 stays 07:00 local (05:00 UTC in summer, 06:00 in
    winter). The DST switches happen on Sundays, never a working day.
    """
    day = calendar.last_working_day(year, month)
    return datetime.combine(day, at, tzinfo=tz)
