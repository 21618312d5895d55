"""Inbound-rule schedules (SPEC §5): when a rule may match, checked on the hot path.

A schedule is ``{timezone, days, ranges, holidays}``, all in the schedule's own timezone (an IANA
name, read with ``zoneinfo``, so daylight-saving changes follow the wall clock of that zone):

- ``days``: the weekdays (``mon`` … ``sun``) the rule is open; empty = every day.
- ``ranges``: ``[["09:00", "17:30"], …]`` wall-clock ranges, start included, end excluded; ``"24:00"``
  may end a range. Empty = the whole day. A range whose end is before its start crosses midnight
  (``["22:00", "06:00"]``): it belongs to the day it starts on, so ``days`` and ``holidays`` are
  checked against that day (a Friday 22:00-06:00 range runs into Saturday morning even when Saturday
  is not listed). A range with equal start and end is refused.
- ``holidays``: ``YYYY-MM-DD`` dates on which the rule is closed all day (ranges that start on a
  holiday do not open, including their part after midnight).

On a daylight-saving change the wall clock decides: on the spring-forward day the skipped hour does
not exist (a 02:00-03:00 range does not open that day), on the fall-back day the repeated hour is
open both times it occurs if it is in a range.

``compile_schedule`` turns a ``RuleSchedule`` into a ``CompiledSchedule`` once (per snapshot); its
``is_open(epoch_seconds)`` costs one integer comparison while the minute has not changed (ranges have
minute resolution, and every zone's offset changes on a minute boundary), and a zone conversion plus a
few set lookups once a minute.
"""

from __future__ import annotations

import datetime
import zoneinfo
from dataclasses import dataclass, field

from shared.snapshot import RuleSchedule

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_RANGES = 48
MAX_HOLIDAYS = 1000
_MINUTES_PER_DAY = 24 * 60


class ScheduleError(ValueError):
    """A schedule refused at save time; ``field`` is the offending field under ``schedule``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _minute_of(text: str, field: str, *, allow_24: bool) -> int:
    parts = text.split(":")
    if len(parts) != 2 or not all(len(p) == 2 and p.isdigit() for p in parts):
        raise ScheduleError(field, f"{text!r} is not a time HH:MM")
    hours, minutes = int(parts[0]), int(parts[1])
    if hours == 24 and minutes == 0 and allow_24:
        return _MINUTES_PER_DAY
    if hours > 23 or minutes > 59:
        raise ScheduleError(field, f"{text!r} is not a time between 00:00 and 23:59")
    return hours * 60 + minutes


@dataclass(slots=True, eq=False)
class CompiledSchedule:
    zone: zoneinfo.ZoneInfo
    days: frozenset[int]  # weekday numbers (Monday = 0); empty = every day
    ranges: tuple[tuple[int, int], ...]  # minutes of the day, end exclusive; start > end crosses midnight
    holidays: frozenset[datetime.date]
    # The last minute (epoch seconds // 60) checked and its answer: the per-call check is one compare.
    _minute: int = field(default=-1, repr=False)
    _open: bool = field(default=False, repr=False)

    def is_open(self, now: float) -> bool:
        minute = int(now // 60)
        if minute == self._minute:
            return self._open
        is_open = self.open_at(datetime.datetime.fromtimestamp(minute * 60, self.zone))
        self._minute = minute
        self._open = is_open
        return is_open

    def _day_ok(self, day: datetime.date) -> bool:
        return (not self.days or day.weekday() in self.days) and day not in self.holidays

    def open_at(self, local: datetime.datetime) -> bool:
        """Whether the rule is open at this wall-clock time of the schedule's zone."""
        today = local.date()
        minute = local.hour * 60 + local.minute
        if not self.ranges:
            return self._day_ok(today)
        for start, end in self.ranges:
            if start < end:
                if start <= minute < end and self._day_ok(today):
                    return True
            else:  # crosses midnight: from start to midnight today, from midnight to end the next day
                if minute >= start and self._day_ok(today):
                    return True
                if minute < end and self._day_ok(today - datetime.timedelta(days=1)):
                    return True
        return False


def compile_schedule(schedule: RuleSchedule) -> CompiledSchedule:
    """Check and compile a schedule; ScheduleError names the offending field."""
    try:
        zone = zoneinfo.ZoneInfo(schedule.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError("schedule.timezone", f"unknown timezone {schedule.timezone!r}") from exc
    days: set[int] = set()
    for i, name in enumerate(schedule.days):
        key = name.strip().lower()
        if key not in DAY_NAMES:
            raise ScheduleError(f"schedule.days[{i}]", f"{name!r} is not one of {', '.join(DAY_NAMES)}")
        days.add(DAY_NAMES.index(key))
    if len(schedule.ranges) > MAX_RANGES:
        raise ScheduleError("schedule.ranges", f"at most {MAX_RANGES} ranges")
    ranges: list[tuple[int, int]] = []
    for i, pair in enumerate(schedule.ranges):
        where = f"schedule.ranges[{i}]"
        if len(pair) != 2:
            raise ScheduleError(where, "a range is [start, end]")
        start = _minute_of(pair[0], where, allow_24=False)
        end = _minute_of(pair[1], where, allow_24=True)
        if start == end:
            raise ScheduleError(where, "a range's start and end must differ")
        ranges.append((start, end))
    if len(schedule.holidays) > MAX_HOLIDAYS:
        raise ScheduleError("schedule.holidays", f"at most {MAX_HOLIDAYS} holidays")
    holidays: set[datetime.date] = set()
    for i, text in enumerate(schedule.holidays):
        try:
            if len(text) != 10:
                raise ValueError(text)
            holidays.add(datetime.date.fromisoformat(text))
        except ValueError as exc:
            raise ScheduleError(f"schedule.holidays[{i}]", f"{text!r} is not a date YYYY-MM-DD") from exc
    return CompiledSchedule(
        zone=zone, days=frozenset(days), ranges=tuple(ranges), holidays=frozenset(holidays)
    )
