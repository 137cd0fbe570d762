"""Dutch working days and the last working day of a month.

Expected dates are worked out by hand from the calendar and the Dutch holidays (noted per
case), not computed with the code under test.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from agent.workdays import (
    WorkdayCalendar,
    is_last_working_day,
    is_working_day,
    last_working_day,
    last_working_day_at,
    local_date,
)

AMS = ZoneInfo("Europe/Amsterdam")

# 2026 starts on a Thursday. Month ends: Jan 31 Sat, Feb 28 Sat, Mar 31 Tue, Apr 30 Thu,
# May 31 Sun, Jun 30 Tue, Jul 31 Fri, Aug 31 Mon, Sep 30 Wed, Oct 31 Sat, Nov 30 Mon,
# Dec 31 Thu. No Dutch holiday falls on a month's last weekday in 2026 (Easter Monday
# 6 Apr, King's Day Mon 27 Apr, Ascension 14 May, Whit Monday 25 May, Christmas 25/26 Dec).
LAST_2026 = {
    1: date(2026, 1, 30),   # Sat 31 -> Fri 30
    2: date(2026, 2, 27),   # Sat 28 -> Fri 27
    3: date(2026, 3, 31),   # Tue
    4: date(2026, 4, 30),   # Thu
    5: date(2026, 5, 29),   # Sun 31 -> Fri 29 (Whit Monday is the 25th, earlier)
    6: date(2026, 6, 30),   # Tue
    7: date(2026, 7, 31),   # Fri
    8: date(2026, 8, 31),   # Mon
    9: date(2026, 9, 30),   # Wed
    10: date(2026, 10, 30),  # Sat 31 -> Fri 30
    11: date(2026, 11, 30),  # Mon
    12: date(2026, 12, 31),  # Thu (Christmas 25/26 Dec lie before)
}
# 2027 starts on a Friday. Month ends: Jan 31 Sun, Feb 28 Sun, Mar 31 Wed, Apr 30 Fri,
# May 31 Mon, Jun 30 Wed, Jul 31 Sat, Aug 31 Tue, Sep 30 Thu, Oct 31 Sun, Nov 30 Tue,
# Dec 31 Fri. Easter is 28 March (Good Friday 26 Mar, Easter Monday 29 Mar), King's Day
# Tue 27 Apr, Ascension 6 May, Whit Monday 17 May: none at a month's end.
LAST_2027 = {
    1: date(2027, 1, 29),   # Sun 31 -> Fri 29
    2: date(2027, 2, 26),   # Sun 28 -> Fri 26
    3: date(2027, 3, 31),   # Wed (Easter Monday 29 Mar is earlier)
    4: date(2027, 4, 30),   # Fri
    5: date(2027, 5, 31),   # Mon
    6: date(2027, 6, 30),   # Wed
    7: date(2027, 7, 30),   # Sat 31 -> Fri 30
    8: date(2027, 8, 31),   # Tue
    9: date(2027, 9, 30),   # Thu
    10: date(2027, 10, 29),  # Sun 31 -> Fri 29
    11: date(2027, 11, 30),  # Tue
    12: date(2027, 12, 31),  # Fri
}


@pytest.mark.parametrize(("year", "month", "expected"),
                         [(2026, m, d) for m, d in LAST_2026.items()]
                         + [(2027, m, d) for m, d in LAST_2027.items()])
def test_last_working_day_2026_2027(year: int, month: int, expected: date) -> None:
    assert last_working_day(year, month) == expected


@pytest.mark.parametrize(("year", "month", "expected", "why"), [
    # Easter 2024 was 31 March: Good Friday 29 Mar, the month ends on a weekend.
    (2024, 3, date(2024, 3, 28), "Good Friday Fri 29, Sat 30, Sun 31"),
    # Easter 2029 is 1 April: Good Friday is Fri 30 March, Sat 31.
    (2029, 3, date(2029, 3, 29), "Good Friday Fri 30, Sat 31"),
    # Easter 1997 was 30 March: Easter Monday 31 March, Good Friday 28 March.
    (1997, 3, date(1997, 3, 27), "Easter Monday Mon 31, weekend, Good Friday Fri 28"),
    # Easter 2004 was 11 April: Whit Monday (Easter + 50 days) was Monday 31 May.
    (2004, 5, date(2004, 5, 28), "Whit Monday Mon 31"),
    # Easter 1973 was 22 April: Ascension (Easter + 39 days) was Thursday 31 May.
    (1973, 5, date(1973, 5, 30), "Ascension Thu 31"),
    # Queen's Day (30 April, until 2013) fell on a Tuesday in 2013.
    (2013, 4, date(2013, 4, 29), "Queen's Day Tue 30"),
    # Month ends on a Sunday with no holiday near: 2028-12-31 is a Sunday.
    (2028, 12, date(2028, 12, 29), "Sat 30, Sun 31"),
])
def test_months_ending_on_holidays_and_weekends(year: int, month: int, expected: date,
                                                why: str) -> None:
    assert last_working_day(year, month) == expected, why


def test_good_friday_is_a_setting() -> None:
    working_friday = WorkdayCalendar(good_friday=False)
    assert not is_working_day(date(2029, 3, 30))
    assert working_friday.is_working_day(date(2029, 3, 30))
    assert working_friday.last_working_day(2029, 3) == date(2029, 3, 30)
    assert working_friday.last_working_day(2024, 3) == date(2024, 3, 29)
    # Easter Monday stays a holiday whatever the Good Friday reading
    assert working_friday.last_working_day(1997, 3) == date(1997, 3, 28)


def test_liberation_day_readings() -> None:
    lustrum, yearly, never = (WorkdayCalendar(liberation_day=v)
                              for v in ("every-5-years", "every-year", "never"))
    assert not lustrum.is_working_day(date(2025, 5, 5))  # Monday, a lustrum year
    assert lustrum.is_working_day(date(2026, 5, 5))  # Tuesday, not a lustrum year
    assert not yearly.is_working_day(date(2026, 5, 5))
    assert never.is_working_day(date(2025, 5, 5))
    assert lustrum == WorkdayCalendar()  # the default follows the package's NL calendar


def test_holidays_and_weekends() -> None:
    assert not is_working_day(date(2026, 4, 27))  # King's Day, a Monday
    assert is_working_day(date(2025, 4, 28))  # King's Day 2025 (Sun 27) moved to Sat 26
    assert not is_working_day(date(2026, 5, 14))  # Ascension Day
    assert not is_working_day(date(2026, 1, 1))
    assert not is_working_day(date(2026, 12, 26))  # a Saturday anyway
    assert not is_working_day(date(2026, 5, 30))  # Saturday
    assert is_working_day(date(2026, 5, 29))


def test_a_moment_needs_a_time_zone_first() -> None:
    with pytest.raises(TypeError):
        is_working_day(datetime(2026, 5, 29, 9, tzinfo=UTC))
    with pytest.raises(ValueError, match="timezone-aware"):
        local_date(datetime(2026, 5, 29, 9), AMS)


def test_local_date_decides_around_midnight() -> None:
    # 22:30 UTC on 29 April 2026 is 00:30 on 30 April in Amsterdam (CEST, UTC+2)
    moment = datetime(2026, 4, 29, 22, 30, tzinfo=UTC)
    assert is_last_working_day(moment, AMS)
    assert not is_last_working_day(moment, ZoneInfo("UTC"))
    # 23:30 UTC on 30 April is already 1 May in Amsterdam
    assert not is_last_working_day(datetime(2026, 4, 30, 23, 30, tzinfo=UTC), AMS)
    # winter (CET, UTC+1): 23:30 UTC on 29 Oct 2026 is 00:30 on Fri 30 Oct
    assert is_last_working_day(datetime(2026, 10, 29, 23, 30, tzinfo=UTC), AMS)
    assert not is_last_working_day(datetime(2026, 10, 29, 22, 30, tzinfo=UTC), AMS)


@pytest.mark.parametrize(("year", "month", "utc"), [
    # DST starts Sun 29 Mar 2026: Tue 31 Mar 07:00 CEST = 05:00 UTC
    (2026, 3, datetime(2026, 3, 31, 5, 0, tzinfo=UTC)),
    # Feb 2026 is winter time: Fri 27 Feb 07:00 CET = 06:00 UTC
    (2026, 2, datetime(2026, 2, 27, 6, 0, tzinfo=UTC)),
    # DST ends Sun 25 Oct 2026: Fri 30 Oct 07:00 CET = 06:00 UTC
    (2026, 10, datetime(2026, 10, 30, 6, 0, tzinfo=UTC)),
    # Sep 2026 is summer time: Wed 30 Sep 07:00 CEST = 05:00 UTC
    (2026, 9, datetime(2026, 9, 30, 5, 0, tzinfo=UTC)),
    # DST starts Sun 28 Mar 2027: Wed 31 Mar 07:00 CEST = 05:00 UTC
    (2027, 3, datetime(2027, 3, 31, 5, 0, tzinfo=UTC)),
    # DST ends Sun 31 Oct 2027 (the month's last day): Fri 29 Oct is still CEST
    (2027, 10, datetime(2027, 10, 29, 5, 0, tzinfo=UTC)),
])
def test_trigger_time_across_dst(year: int, month: int, utc: datetime) -> None:
    moment = last_working_day_at(year, month, time(7, 0), AMS)
    assert moment == utc
    assert moment.astimezone(AMS).hour == 7
    assert is_last_working_day(moment, AMS)
    assert not is_last_working_day(moment - timedelta(days=1), AMS)
