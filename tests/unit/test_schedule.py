"""Inbound-rule schedules (shared/schedule.py): days, ranges, midnight crossing, holidays and DST, with
an injected clock; and the first-match table skipping a closed rule for a later one."""

from __future__ import annotations

import datetime
import zoneinfo

import pytest

from shared.enums import TargetType
from shared.routing import build_inbound_table
from shared.schedule import ScheduleError, compile_schedule
from shared.snapshot import InboundRuleSnap, RuleSchedule

NY = zoneinfo.ZoneInfo("America/New_York")
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def at(zone: zoneinfo.ZoneInfo, *parts: int, fold: int = 0) -> float:
    return datetime.datetime(*parts, tzinfo=zone, fold=fold).timestamp()  # type: ignore[misc]


def sched(**fields: object) -> RuleSchedule:
    return RuleSchedule(**fields)  # type: ignore[arg-type]


def test_business_hours_boundaries() -> None:
    s = compile_schedule(
        sched(
            timezone="America/New_York", days=["mon", "tue", "wed", "thu", "fri"], ranges=[["09:00", "17:30"]]
        )
    )
    # Tuesday 2026-12-01
    assert not s.is_open(at(NY, 2026, 12, 1, 8, 59, 59))
    assert s.is_open(at(NY, 2026, 12, 1, 9, 0))
    assert s.is_open(at(NY, 2026, 12, 1, 17, 29, 59))
    assert not s.is_open(at(NY, 2026, 12, 1, 17, 30))  # end excluded
    # Saturday
    assert not s.is_open(at(NY, 2026, 12, 5, 12, 0))


def test_empty_days_and_ranges_mean_always() -> None:
    s = compile_schedule(sched(timezone="UTC"))
    for day in range(1, 8):
        assert s.is_open(at(datetime.UTC, 2026, 12, day, 3, 0))  # type: ignore[arg-type]
    only_days = compile_schedule(sched(days=["sun"]))
    assert only_days.is_open(at(datetime.UTC, 2026, 12, 6, 0, 0))  # type: ignore[arg-type]
    assert only_days.is_open(at(datetime.UTC, 2026, 12, 6, 23, 59))  # type: ignore[arg-type]
    assert not only_days.is_open(at(datetime.UTC, 2026, 12, 7, 0, 0))  # type: ignore[arg-type]


def test_range_crossing_midnight_belongs_to_its_start_day() -> None:
    # Friday nights only, 22:00 to 06:00.
    s = compile_schedule(sched(timezone="Europe/Berlin", days=["fri"], ranges=[["22:00", "06:00"]]))
    assert not s.is_open(at(BERLIN, 2026, 12, 4, 21, 59))  # Friday
    assert s.is_open(at(BERLIN, 2026, 12, 4, 22, 0))
    assert s.is_open(at(BERLIN, 2026, 12, 4, 23, 59))
    assert s.is_open(at(BERLIN, 2026, 12, 5, 0, 0))  # Saturday morning, still Friday's range
    assert s.is_open(at(BERLIN, 2026, 12, 5, 5, 59))
    assert not s.is_open(at(BERLIN, 2026, 12, 5, 6, 0))
    assert not s.is_open(at(BERLIN, 2026, 12, 5, 22, 30))  # Saturday evening
    assert not s.is_open(at(BERLIN, 2026, 12, 4, 3, 0))  # Friday early morning: Thursday's range


def test_end_of_day_and_holidays() -> None:
    s = compile_schedule(
        sched(
            timezone="Europe/Berlin", ranges=[["18:00", "24:00"], ["22:00", "02:00"]], holidays=["2026-12-24"]
        )
    )
    assert s.is_open(at(BERLIN, 2026, 12, 23, 23, 59))
    assert s.is_open(at(BERLIN, 2026, 12, 24, 1, 0))  # the 23rd's crossing range, not a holiday
    assert not s.is_open(at(BERLIN, 2026, 12, 24, 19, 0))  # holiday
    assert not s.is_open(at(BERLIN, 2026, 12, 25, 1, 0))  # the 24th's crossing range: a holiday's
    assert s.is_open(at(BERLIN, 2026, 12, 25, 18, 0))


def test_spring_forward_follows_the_wall_clock() -> None:
    # New York, Sunday 2026-03-08: 02:00 EST jumps to 03:00 EDT.
    s = compile_schedule(sched(timezone="America/New_York", ranges=[["09:00", "17:00"]]))
    saturday_9 = at(NY, 2026, 3, 7, 9, 0)
    sunday_9 = at(NY, 2026, 3, 8, 9, 0)
    assert sunday_9 - saturday_9 == 23 * 3600  # the day is one hour short
    assert s.is_open(sunday_9)
    assert not s.is_open(sunday_9 - 60)
    # Opening at 09:00 wall clock, i.e. 13:00 UTC after the change (14:00 UTC before it).
    assert datetime.datetime.fromtimestamp(sunday_9, datetime.UTC).hour == 13
    assert datetime.datetime.fromtimestamp(saturday_9, datetime.UTC).hour == 14
    assert not s.is_open(at(NY, 2026, 3, 8, 17, 0))
    # The skipped hour never opens.
    night = compile_schedule(sched(timezone="America/New_York", ranges=[["02:00", "03:00"]]))
    before = at(NY, 2026, 3, 8, 1, 59)
    assert not night.is_open(before)
    assert not night.is_open(before + 60)  # 03:00 EDT: the very next minute
    assert night.is_open(at(NY, 2026, 3, 9, 2, 30))


def test_fall_back_repeated_hour_is_open_twice() -> None:
    # New York, Sunday 2026-11-01: 02:00 EDT falls back to 01:00 EST.
    s = compile_schedule(sched(timezone="America/New_York", ranges=[["01:00", "02:00"]]))
    first = at(NY, 2026, 11, 1, 1, 30, fold=0)
    second = at(NY, 2026, 11, 1, 1, 30, fold=1)
    assert second - first == 3600
    assert s.is_open(first)
    assert s.is_open(second)
    assert not s.is_open(at(NY, 2026, 11, 1, 2, 0))
    # A 09:00-17:00 range opens at 09:00 EST that day (14:00 UTC, not 13:00 as the day before).
    day = compile_schedule(sched(timezone="America/New_York", ranges=[["09:00", "17:00"]]))
    assert day.is_open(at(NY, 2026, 11, 1, 9, 0))
    assert datetime.datetime.fromtimestamp(at(NY, 2026, 11, 1, 9, 0), datetime.UTC).hour == 14


def test_minute_cache_follows_the_clock() -> None:
    s = compile_schedule(sched(timezone="UTC", ranges=[["10:00", "10:01"]]))
    base = at(datetime.UTC, 2026, 12, 1, 10, 0)  # type: ignore[arg-type]
    assert not s.is_open(base - 1)
    assert s.is_open(base)
    assert s.is_open(base + 59.9)
    assert not s.is_open(base + 60)
    assert s.is_open(base + 30)  # back in time: recomputed


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"timezone": "Mars/Olympus"}, "schedule.timezone"),
        ({"days": ["mon", "funday"]}, "schedule.days[1]"),
        ({"ranges": [["9:00", "17:00"]]}, "schedule.ranges[0]"),
        ({"ranges": [["09:00", "17:00"], ["25:00", "26:00"]]}, "schedule.ranges[1]"),
        ({"ranges": [["09:00"]]}, "schedule.ranges[0]"),
        ({"ranges": [["09:00", "09:00"]]}, "schedule.ranges[0]"),
        ({"ranges": [["24:00", "09:00"]]}, "schedule.ranges[0]"),
        ({"holidays": ["2026-12-25", "25/12/2026"]}, "schedule.holidays[1]"),
        ({"holidays": ["2026-02-30"]}, "schedule.holidays[0]"),
    ],
)
def test_refused_schedules_name_the_field(fields: dict[str, object], field: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        compile_schedule(sched(**fields))
    assert caught.value.field == field


def _rule(rule_id: int, target: int, schedule: RuleSchedule | None = None) -> InboundRuleSnap:
    return InboundRuleSnap(
        id=rule_id,
        pattern="*",
        target_type=TargetType.GROUP,
        target_id=target,
        priority=rule_id,
        schedule=schedule,
    )


def test_closed_rule_falls_through_to_the_after_hours_rule() -> None:
    business = sched(
        timezone="America/New_York", days=["mon", "tue", "wed", "thu", "fri"], ranges=[["09:00", "17:00"]]
    )
    table = build_inbound_table([_rule(1, 10, business), _rule(2, 20)])
    open_now = at(NY, 2026, 12, 1, 12, 0)
    closed = at(NY, 2026, 12, 1, 17, 0)
    weekend = at(NY, 2026, 12, 5, 12, 0)
    hit = table.first_match("+15551234567", "", None, now=open_now)
    assert hit is not None
    assert hit.id == 1
    for moment in (closed, weekend):
        hit = table.first_match("+15551234567", "", None, now=moment)
        assert hit is not None
        assert hit.id == 2
    # No schedule anywhere: the clock is not even read.
    plain = build_inbound_table([_rule(3, 30)])
    hit = plain.first_match("+1555", "", None)
    assert hit is not None
    assert hit.id == 3
