"""Schedules: cron read as cron(8) reads it, last-working-day, DST, month ends."""

from __future__ import annotations

import itertools
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.schedule import (
    LastWorkingDayTrigger,
    build_trigger,
    is_last_working_day,
    next_fire_times,
    parse_schedule,
    previous_fire_time,
)

AMS = ZoneInfo("Europe/Amsterdam")


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
          microsecond: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=AMS)


def fires(schedule: str, after: datetime, n: int, tz: ZoneInfo = AMS) -> list[str]:
    return [t.isoformat() for t in next_fire_times(schedule, tz, after, n)]


# ---- crontab semantics -------------------------------------------------------------------

def test_weekdays_are_crontab_numbers_not_apschedulers() -> None:
    # APScheduler 3's from_crontab reads 1-5 as Tuesday-Saturday; cron means Monday-Friday
    days = {t.strftime("%a") for t in next_fire_times("0 7 * * 1-5", AMS, local(2026, 3, 1), 15)}
    assert days == {"Mon", "Tue", "Wed", "Thu", "Fri"}
    assert fires("0 7 * * 1", local(2026, 3, 25), 2) == [  # privileged-roles default: Monday
        "2026-03-30T07:00:00+02:00", "2026-04-06T07:00:00+02:00"]


@pytest.mark.parametrize(("dow", "expected"), [
    ("0", {"Sun"}), ("7", {"Sun"}), ("sun", {"Sun"}), ("SAT,sun", {"Sat", "Sun"}),
    ("5-7", {"Fri", "Sat", "Sun"}), ("fri-sun", {"Fri", "Sat", "Sun"}),
    ("*/2", {"Sun", "Tue", "Thu", "Sat"}), ("1-5/2", {"Mon", "Wed", "Fri"}),
    ("mon-fri", {"Mon", "Tue", "Wed", "Thu", "Fri"}), ("0-7", {
        "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}),
])
def test_day_of_week_forms(dow: str, expected: set[str]) -> None:
    times = next_fire_times(f"0 12 * * {dow}", AMS, local(2026, 6, 1), 21)
    assert {t.strftime("%a") for t in times} == expected


def test_day_of_month_and_weekday_both_set_means_either() -> None:
    # cron(8): "0 7 1 * 1" runs on the 1st *and* on every Monday
    assert [t.date().isoformat() for t in next_fire_times("0 7 1 * 1", AMS, local(2026, 3, 28),
                                                          4)] == [
        "2026-03-30", "2026-04-01", "2026-04-06", "2026-04-13"]
    # only one restricted: the other is a wildcard, as usual
    assert [t.date().isoformat() for t in next_fire_times("0 7 1 * *", AMS, local(2026, 3, 28),
                                                          2)] == ["2026-04-01", "2026-05-01"]


def test_month_ends_and_leap_days() -> None:
    assert [t.date().isoformat() for t in next_fire_times("0 0 31 * *", AMS, local(2026, 1, 1),
                                                          4)] == [
        "2026-01-31", "2026-03-31", "2026-05-31", "2026-07-31"]
    assert [t.date().isoformat() for t in next_fire_times("0 0 29 2 *", AMS, local(2026, 1, 1),
                                                          2)] == ["2028-02-29", "2032-02-29"]
    # across the year end, in local time (23:30 on 31 Dec is still 31 Dec in Amsterdam)
    assert fires("30 23 31 12 *", local(2026, 6, 1), 1) == ["2026-12-31T23:30:00+01:00"]


# ---- DST, both directions (Europe/Amsterdam: 29 Mar 2026 02:00->03:00, 25 Oct 03:00->02:00) --

def test_spring_forward_fixed_time_keeps_wall_clock() -> None:
    assert fires("0 7 * * *", local(2026, 3, 28, 8), 2) == [
        "2026-03-29T07:00:00+02:00", "2026-03-30T07:00:00+02:00"]
    times = next_fire_times("0 7 * * *", AMS, local(2026, 3, 28, 6), 2)
    assert [t.astimezone(UTC).hour for t in times] == [6, 5]  # UTC moves, local does not


def test_spring_forward_time_in_the_gap_runs_once_after_it() -> None:
    # 02:30 does not exist on 29 March: the run happens once, at 03:30 local
    assert fires("30 2 * * *", local(2026, 3, 28, 12), 3) == [
        "2026-03-29T03:30:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]
    # a wildcard hour just has no 02:xx that night
    assert fires("*/30 * * * *", local(2026, 3, 29, 1, 10), 3) == [
        "2026-03-29T01:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00"]


def test_fall_back_fixed_time_runs_once() -> None:
    # 02:30 happens twice on 25 October; a daily job runs once (the first), like cron(8)
    assert fires("30 2 * * *", local(2026, 10, 24, 12), 3) == [
        "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00", "2026-10-27T02:30:00+01:00"]
    assert fires("0 1-3 * * *", local(2026, 10, 25, 0, 30), 3) == [
        "2026-10-25T01:00:00+02:00", "2026-10-25T02:00:00+02:00", "2026-10-25T03:00:00+01:00"]


def test_fall_back_wildcard_hour_runs_through_the_repeated_hour() -> None:
    times = next_fire_times("*/30 * * * *", AMS, local(2026, 10, 25, 1, 10), 6)
    assert [t.isoformat() for t in times] == [
        "2026-10-25T01:30:00+02:00", "2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00", "2026-10-25T02:30:00+01:00", "2026-10-25T03:00:00+01:00"]
    utc = [t.astimezone(UTC) for t in times]  # same-zone subtraction would use wall time
    assert {b - a for a, b in itertools.pairwise(utc)} == {timedelta(minutes=30)}


# ---- last-working-day ----------------------------------------------------------------------

LWD_2026 = ["01-30", "02-27", "03-31", "04-30", "05-29", "06-30", "07-31", "08-31", "09-30",
            "10-30", "11-30", "12-31"]
LWD_2027 = ["01-29", "02-26", "03-31", "04-30", "05-31", "06-30", "07-30", "08-31", "09-30",
            "10-29", "11-30", "12-31"]


def test_last_working_day_dates_2026_2027() -> None:
    times = next_fire_times("last-working-day 07:00", AMS, local(2025, 12, 31, 12), 24)
    assert [t.strftime("%m-%d") for t in times] == LWD_2026 + LWD_2027
    assert {t.strftime("%H:%M") for t in times} == {"07:00"}
    assert all(t.weekday() < 5 for t in times)


def test_last_working_day_that_is_a_holiday_moves_back() -> None:
    # Friday 29 March 2024 and Friday 30 March 2029 are Good Friday (30/31 a weekend)
    assert fires("last-working-day 07:00", local(2024, 3, 1), 1) == ["2024-03-28T07:00:00+01:00"]
    assert fires("last-working-day 07:00", local(2029, 3, 1), 1) == ["2029-03-29T07:00:00+02:00"]


def test_last_working_day_across_dst_and_year_end() -> None:
    # March 2026: DST starts on the 29th, the 31st is summer time; October 2026: winter again
    assert fires("last-working-day 07:00", local(2026, 3, 1), 1) == ["2026-03-31T07:00:00+02:00"]
    assert fires("last-working-day 07:00", local(2026, 10, 1), 1) == [
        "2026-10-30T07:00:00+01:00"]
    # after the fire time on the last working day: next month's, even across the year end
    assert fires("last-working-day 07:00", local(2026, 12, 31, 7), 1) == [
        "2027-01-29T07:00:00+01:00"]
    assert fires("last-working-day 07:00", local(2026, 12, 31, 6, 59), 1) == [
        "2026-12-31T07:00:00+01:00"]


def test_last_working_day_month_is_the_local_month() -> None:
    # 23:30 UTC on 30 April is 01:30 on 1 May in Amsterdam: May's last working day is next
    after = datetime(2026, 4, 30, 23, 30, tzinfo=UTC)
    assert fires("last-working-day 00:30", after, 1) == ["2026-05-29T00:30:00+02:00"]


def test_other_time_zone() -> None:
    ny = ZoneInfo("America/New_York")
    assert fires("last-working-day 18:00", datetime(2026, 1, 1, tzinfo=ny), 1, tz=ny) == [
        "2026-01-30T18:00:00-05:00"]
    assert fires("0 7 * * 1-5", datetime(2026, 3, 6, 12, tzinfo=ny), 2, tz=ny) == [
        "2026-03-09T07:00:00-04:00", "2026-03-10T07:00:00-04:00"]  # US DST 8 March


def test_trigger_types() -> None:
    assert isinstance(build_trigger("last-working-day 07:00", AMS), LastWorkingDayTrigger)
    assert is_last_working_day("last-working-day 07:00")
    assert not is_last_working_day("0 7 * * *")
    assert str(build_trigger("last-working-day 7:05", AMS)) == "last-working-day 07:05"


# ---- previous fire time (catch-up) -----------------------------------------------------------

@pytest.mark.parametrize(("schedule", "at", "expected"), [
    ("last-working-day 07:00", local(2026, 12, 2, 9), "2026-11-30T07:00:00+01:00"),
    ("last-working-day 07:00", local(2026, 11, 30, 7), "2026-11-30T07:00:00+01:00"),
    ("last-working-day 07:00", local(2026, 11, 30, 6, 59), "2026-10-30T07:00:00+01:00"),
    ("0 6 * * *", local(2026, 3, 29, 5), "2026-03-28T06:00:00+01:00"),
    ("0 7 * * 1", local(2026, 4, 1), "2026-03-30T07:00:00+02:00"),
    ("0 0 29 2 *", local(2027, 1, 1), "2024-02-29T00:00:00+01:00"),
    ("* * * * *", local(2026, 5, 5, 10, 30, 59), "2026-05-05T10:30:00+02:00"),
    ("30 2 * * *", local(2026, 10, 25, 4), "2026-10-25T02:30:00+02:00"),
])
def test_previous_fire_time(schedule: str, at: datetime, expected: str) -> None:
    found = previous_fire_time(schedule, AMS, at)
    assert found is not None and found.isoformat() == expected


def test_previous_fire_time_across_the_spring_gap() -> None:
    # Found by Hypothesis: the bisection did wall-clock arithmetic in local time and, on
    # the day clocks go forward, returned 01:40 CET instead of 03:40 CEST.
    at = datetime(2028, 3, 26, 3, 20, 1, tzinfo=UTC)
    found = previous_fire_time("*/20 1-3 * * *", AMS, at)
    assert found is not None and found.isoformat() == "2028-03-26T03:40:00+02:00"


SCHEDULES = ["0 6 * * *", "0 7 * * 1-5", "*/20 1-3 * * *", "last-working-day 07:00",
             "30 2 * * *", "0 0 1 * *", "0 7 1 * 1"]


@settings(max_examples=60, deadline=None)
@given(schedule=st.sampled_from(SCHEDULES),
       at=st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31),
                       timezones=st.just(UTC)))
def test_previous_fire_time_is_the_one_just_before_the_next(schedule: str,
                                                            at: datetime) -> None:
    found = previous_fire_time(schedule, AMS, at)
    assert found is not None and found <= at
    # nothing fires between it and `at`
    following = next_fire_times(schedule, AMS, found, 1)[0]
    assert following > at


# ---- validation ------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "problem"), [
    ("0 7 * *", "has 4 field(s)"),
    ("61 * * * *", "minute field '61'"),
    ("0 24 * * *", "hour field '24'"),
    ("0 0 32 * *", "day of month field '32'"),
    ("0 0 * 13 *", "month field '13'"),
    ("0 0 * * 8", "day of week field '8'"),
    ("0 0 * * fri-mon", "runs backwards"),
    ("0 0 * * 1/2", "a step needs a range"),
    ("0 0 31 2 *", "never fires"),
    ("last-working-day", "write 'last-working-day HH:MM'"),
    ("last-working-day 24:00", "not a time of day"),
    ("last-working-day 7am", "write 'last-working-day HH:MM'"),
    ("every day", "is not a cron expression"),
])
def test_invalid_schedules_name_the_problem(value: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_schedule(value)
    assert problem in str(info.value)


@pytest.mark.parametrize("value", ["0 6 * * *", "0 7 * * 1-5", "last-working-day 07:00",
                                   "  0 7 * * mon-fri ", "*/15 8-18 * jan-jun 1,3,5",
                                   "last-working-day 7:30"])
def test_valid_schedules(value: str) -> None:
    parse_schedule(value)


def test_config_path_does_not_import_the_scheduler_or_the_holiday_calendar() -> None:
    code = ("import sys; from agent.schedule import parse_schedule; "
            "parse_schedule('0 7 * * 1-5'); parse_schedule('last-working-day 07:00'); "
            "print(sorted(m for m in sys.modules if m.startswith(('apscheduler.schedulers', "
            "'apscheduler.executors', 'holidays', 'agent.workdays'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_dates_are_dates() -> None:
    # a LastWorkingDayTrigger fire time is the local date of the month's last working day
    from agent.workdays import last_working_day

    for month in range(1, 13):
        fire = next_fire_times("last-working-day 07:00", AMS, local(2027, month, 1), 1)[0]
        assert fire.date() == last_working_day(2027, month)
        assert isinstance(fire.date(), date)


def test_every_jobs_default_schedule_is_valid() -> None:
    from jobs import REGISTRY

    for spec in REGISTRY.values():
        default = spec.policy_model.model_fields["schedule"].default
        parse_schedule(default)  # pydantic does not validate defaults: we do, here
        assert next_fire_times(default, AMS, local(2026, 1, 1), 1)


def test_a_bad_schedule_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    from agent.errors import ConfigError
    from tests.conftest import make_settings

    with pytest.raises(ConfigError) as info:
        make_settings(tmp_path, offboarding={"schedule": "0 6 * * 8"},
                      active_users={"schedule": "last-working-day 7am"})
    problems = "\n".join(info.value.problems)
    assert "offboarding.schedule: cron expression '0 6 * * 8': day of week field '8'" in problems
    assert "active_users.schedule: 'last-working-day 7am': write 'last-working-day HH:MM'" in (
        problems)


def test_last_working_day_uses_the_policys_calendar(tmp_path: Path) -> None:
    from agent.schedule import policy_trigger
    from agent.workdays import WorkdayCalendar
    from tests.conftest import make_settings

    # Good Friday 30 March 2029 as a working day: the month's last working day is that Friday
    working = build_trigger("last-working-day 07:00", AMS, WorkdayCalendar(good_friday=False))
    assert [t.isoformat() for t in next_fire_times(working, AMS, local(2029, 3, 1), 1)] == [
        "2029-03-30T07:00:00+02:00"]
    settings = make_settings(tmp_path, active_users={"good_friday_is_holiday": False})
    trigger = policy_trigger(settings.active_users, AMS)
    assert next_fire_times(trigger, AMS, local(2029, 3, 1), 1)[0].day == 30
    assert next_fire_times(policy_trigger(settings.offboarding, AMS), AMS,
                           local(2029, 3, 1), 1)[0] == local(2029, 3, 1, 6)
