"""call_stats kept by the events writer: after a varied random sequence of events (first requests, dial
statuses moving the call to another agent, session updates in and out of order, duplicates, CDRs that
move the start time, several hours, agents, groups, directions, two tenants) written through the real
writer and consumer, the rows kept equal a rebuild's from the records; two writers and a rebuild at
once agree too; a batch that fails leaves neither records nor aggregates; ``vlb rebuild-aggregates``."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime
import random
import uuid
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as NATS
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from control_plane.analytics.aggregates import (
    COLUMNS,
    DAY_KEY,
    DURATION_COLUMNS,
    DURATION_EDGES,
    DURATION_KEY,
    KEY,
    STATS_COLUMNS,
    TENANT_KEY,
    drift,
    rebuild,
    rebuild_report,
)
from control_plane.calls.service import duration_question
from control_plane.events.consumer import EventConsumer
from control_plane.events.writer import write_events
from control_plane.settings import ControlPlaneSettings
from launcher import cli
from shared.enums import EventKind
from shared.events import CallEvent
from tests.control_plane.conftest import Account
from tests.control_plane.test_consumer import db, drained, drop_stream, nc, own_stream, publish, wait_for

__all__ = ["db", "nc"]  # fixtures

K = EventKind
HOUR_MS = 3_600_000
BASE_MS = 1_772_398_800_000  # 2026-03-01T21:00:00Z: six hours over two UTC days


def random_calls(rng: random.Random, tenant_id: int, calls: int, tag: str) -> list[CallEvent]:
    """The events of ``calls`` calls of one tenant, each a different path through the lifecycle."""
    events: list[CallEvent] = []
    for n in range(calls):
        token = f"{tag}-{tenant_id}-{n:04d}"
        start_ms = BASE_MS + rng.randrange(6) * HOUR_MS + rng.randrange(HOUR_MS)
        t0 = start_ms / 1000
        agent = rng.choice([1, 2, 3, 4])
        group = rng.choice([None, 7, 8])
        direction = rng.choice(["inbound", "outbound", None])
        seq = 0

        def ev(kind: EventKind, at: float, **kw: Any) -> CallEvent:
            nonlocal seq
            seq += 1
            return CallEvent(
                event_id=f"{token}:{seq}",  # noqa: B023 (built and used within the iteration)
                kind=kind,
                tenant_id=tenant_id,
                domain="agg.example",
                session_token=token,  # noqa: B023
                occurred_at=at,
                engine_id=rng.choice(["engine-a", "engine-b"]),
                **kw,
            )

        call: list[CallEvent] = []
        outcome = rng.choices(["routed", "no_agent", "fallback"], weights=[8, 1, 1])[0]
        call.append(
            ev(
                K.ROUTED,
                t0 + 0.1,
                direction=direction,
                from_number="+14155550100",
                to_number="+15551234567",
                group_id=group if outcome == "routed" else None,
                agent_id=agent if outcome == "routed" else None,
                rule_id=5,
                attempt=1,
                outcome=outcome,
            )
        )
        end_ms = start_ms + rng.randrange(5_000, 900_000)
        answered = outcome == "routed" and rng.random() < 0.6
        if outcome == "routed" and rng.random() < 0.4:  # the first agent does not answer: the next one
            other = rng.choice([a for a in (1, 2, 3, 4) if a != agent])
            call.append(
                ev(
                    K.DIAL_STATUS,
                    t0 + 20,
                    status=rng.choice(["busy", "no-answer"]),
                    outcome="routed",
                    agent_id=other,
                    attempt=2,
                )
            )
            agent = other
        if outcome == "routed":
            final = "completed" if answered else rng.choice(["busy", "no-answer", "failed", "canceled"])
            call.append(
                ev(
                    K.DIAL_STATUS,
                    end_ms / 1000,
                    status=final,
                    outcome="ended",
                    agent_id=agent,
                    attempt=2 if agent != call[0].agent_id else 1,
                )
            )
        give_start = rng.random() < 0.7
        updates = [("new", t0), ("ringing", t0 + 3)]
        if answered:
            updates.append(("connected", t0 + 8))
            updates.append(("answer", end_ms / 1000))
        else:
            updates.append((rng.choice(["noanswer", "busy", "cancel", "failed"]), end_ms / 1000))
        for status, at in rng.sample(updates, k=rng.randint(1, len(updates))):
            call.append(
                ev(
                    K.SESSION_UPDATE,
                    at,
                    status=status,
                    direction=rng.choice([direction, "inbound"]),
                    call_start_ms=start_ms if give_start else None,
                    call_answer_ms=start_ms + 8000
                    if answered and status in ("connected", "answer")
                    else None,
                    call_end_ms=end_ms if status not in ("new", "ringing", "connected") else None,
                )
            )
        if rng.random() < 0.8:
            # The carrier's word: its start may be hours from what the engine saw (a new bucket).
            cdr_start = start_ms - rng.choice([0, 0, 0, HOUR_MS, 2 * HOUR_MS, rng.randrange(HOUR_MS)])
            disposition = "ANSWERED" if answered else rng.choice(["BUSY", "NO ANSWER", "CANCEL", "FAILED"])
            call.append(
                ev(
                    K.CDR,
                    end_ms / 1000 + 1,
                    disposition=disposition,
                    direction=direction,
                    call_start_ms=cdr_start,
                    call_answer_ms=start_ms + 8000 if answered else None,
                    call_end_ms=end_ms,
                    duration=round((end_ms - cdr_start) / 1000),
                    billsec=round((end_ms - start_ms - 8000) / 1000) if answered else 0,
                    call_id=f"{token}@carrier",
                )
            )
        events.extend(call)
    return events


def delivery(rng: random.Random, events: list[CallEvent]) -> list[list[CallEvent]]:
    """The events as a stream delivers them: roughly in time order with jitter (so out of order),
    some twice, in batches of random size."""
    stream = sorted(events, key=lambda e: e.occurred_at + rng.uniform(-30, 30))
    for e in rng.sample(events, k=len(events) // 8):
        stream.insert(rng.randrange(len(stream) + 1), e)
    batches, i = [], 0
    while i < len(stream):
        size = rng.randint(1, 40)
        batches.append(stream[i : i + size])
        i += size
    return batches


async def stats_rows(db: AsyncEngine, tenant_id: int) -> list[tuple[Any, ...]]:
    async with db.connect() as conn:
        rows = await conn.execute(
            text(f"SELECT {', '.join(KEY)}, {', '.join(STATS_COLUMNS)} FROM call_stats WHERE tenant_id = :t"),
            {"t": tenant_id},
        )
        return sorted(tuple(r) for r in rows)


async def tenant_rows(db: AsyncEngine, tenant_id: int) -> list[tuple[Any, ...]]:
    async with db.connect() as conn:
        rows = await conn.execute(
            text(
                f"SELECT {', '.join(TENANT_KEY)}, {', '.join(COLUMNS)} FROM call_stats_tenant WHERE tenant_id = :t"
            ),
            {"t": tenant_id},
        )
        return sorted(tuple(r) for r in rows)


async def day_rows(db: AsyncEngine, tenant_id: int) -> list[tuple[Any, ...]]:
    async with db.connect() as conn:
        rows = await conn.execute(
            text(
                f"SELECT {', '.join(DAY_KEY)}, {', '.join(STATS_COLUMNS)} FROM call_stats_day WHERE tenant_id = :t"
            ),
            {"t": tenant_id},
        )
        return sorted(tuple(r) for r in rows)


async def duration_rows(db: AsyncEngine, tenant_id: int) -> list[tuple[Any, ...]]:
    async with db.connect() as conn:
        rows = await conn.execute(
            text(f"SELECT {', '.join(DURATION_KEY)}, calls FROM call_stats_duration WHERE tenant_id = :t"),
            {"t": tenant_id},
        )
        return sorted(tuple(r) for r in rows)


async def histogram_of_records(db: AsyncEngine, tenant_id: int) -> list[tuple[Any, ...]]:
    """``call_stats_duration``'s rows counted here in Python from the records."""
    async with db.connect() as conn:
        records = await conn.execute(
            text(
                "SELECT duration, start_time, created_at, direction FROM call_records"
                " WHERE tenant_id = :t AND duration IS NOT NULL"
            ),
            {"t": tenant_id},
        )
        out: dict[tuple[Any, ...], int] = {}
        for duration, start, created, direction in records:
            key = (tenant_id, duration, (start or created).astimezone(datetime.UTC).date(), direction or "")
            out[key] = out.get(key, 0) + 1
        return sorted((*k, n) for k, n in out.items())


def rolled_up_by_day(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``call_stats`` rows summed per ``call_stats_day`` key (UTC day, agent, group), here in Python."""
    out: dict[tuple[Any, ...], list[int]] = {}
    for r in rows:
        tenant_id, bucket, agent_id, group_id, _direction = r[: len(KEY)]
        day = bucket.astimezone(datetime.UTC).date()
        sums = out.setdefault((tenant_id, day, agent_id, group_id), [0] * len(STATS_COLUMNS))
        for i, v in enumerate(r[len(KEY) :]):
            sums[i] += v
    return sorted((*k, *v) for k, v in out.items())


def without_buckets(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``call_stats_tenant`` rows without the duration buckets (which call_stats does not hold)."""
    return [r[: len(TENANT_KEY) + len(STATS_COLUMNS)] for r in rows]


def rolled_up(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``call_stats`` rows summed per ``call_stats_tenant`` key, computed here in Python."""
    out: dict[tuple[Any, ...], list[int]] = {}
    for r in rows:
        tenant_id, bucket, agent_id, _group_id, direction = r[: len(KEY)]
        sums = out.setdefault((tenant_id, bucket, agent_id != 0, direction), [0] * len(STATS_COLUMNS))
        for i, v in enumerate(r[len(KEY) :]):
            sums[i] += v
    return sorted((*k, *v) for k, v in out.items())


async def drift_of(db: AsyncEngine, tenant_id: int) -> int:
    async with AsyncSession(db) as session, session.begin():
        return await drift(session, tenant_id)


async def records_of(db: AsyncEngine, tenant_id: int) -> int:
    async with db.connect() as conn:
        found = await conn.scalar(
            text("SELECT count(*) FROM call_records WHERE tenant_id = :t"), {"t": tenant_id}
        )
        return int(found or 0)


async def duration_records(db: AsyncEngine, tenant_id: int) -> list[Any]:
    """A tenant's records with the columns the duration filters read."""
    async with db.connect() as conn:
        return list(
            (
                await conn.execute(
                    text(
                        "SELECT duration, start_time, direction, agent_id, group_id FROM call_records"
                        " WHERE tenant_id = :t"
                    ),
                    {"t": tenant_id},
                )
            ).all()
        )


def with_bounds(params: dict[str, Any], low: int | None, high: int | None) -> dict[str, Any]:
    """``params`` plus ``min_duration``/``max_duration`` where a bound is given."""
    query = dict(params)
    if low is not None:
        query["min_duration"] = low
    if high is not None:
        query["max_duration"] = high
    return query


def count_within(records: list[Any], low: int | None, high: int | None, keep: Any) -> int:
    """The records with a duration in [low, high] (either open) that ``keep`` keeps, counted here."""
    return sum(
        1
        for r in records
        if r.duration is not None
        and (low is None or r.duration >= low)
        and (high is None or r.duration <= high)
        and keep(r)
    )


async def totals_checked(
    account: Account,
    records: list[Any],
    bounds: list[tuple[int | None, int | None]],
    extras: list[tuple[dict[str, Any], Any]],
) -> int:
    """``meta.total`` of the records list under every bound pair with every filter equals the count
    made here; returns how many of those counts were not zero."""
    checked = 0
    for low, high in bounds:
        for params, keep in extras:
            query = with_bounds({**params, "per_page": 1}, low, high)
            expected = count_within(records, low, high, keep)
            response = await account.get("/api/call-records", params=query)
            assert response.status_code == 200, response.text
            assert response.json()["meta"]["total"] == expected, query
            checked += expected > 0
    return checked


async def test_maintained_aggregates_equal_a_rebuild(
    account: Account, other_account: Account, db: AsyncEngine
) -> None:
    rng = random.Random(20261201)
    tenants = [account.tenant_id, other_account.tenant_id]
    tag = uuid.uuid4().hex[:8]
    events = random_calls(rng, tenants[0], 90, tag) + random_calls(rng, tenants[1], 60, tag)
    for batch in delivery(rng, events):
        async with AsyncSession(db) as session, session.begin():
            await write_events(session, batch)
        # After every transaction, not only at the end.
        for t in tenants:
            assert await drift_of(db, t) == 0

    for t, calls in zip(tenants, (90, 60), strict=True):
        kept = await stats_rows(db, t)
        assert sum(r[len(KEY)] for r in kept) == calls == await records_of(db, t)
        # The sequence is varied enough to mean something: hours, agents, groups, directions, outcomes.
        for i in range(1, len(KEY)):
            assert len({r[i] for r in kept}) > 1, KEY[i]
        # The per-tenant rollup the writer kept is call_stats summed (computed here, not in SQL), with
        # both routed and unrouted calls in it.
        kept_tenant = await tenant_rows(db, t)
        assert without_buckets(kept_tenant) == rolled_up(kept)
        assert {r[2] for r in kept_tenant} == {True, False}
        # The per-day rollup likewise, over two UTC days.
        kept_day = await day_rows(db, t)
        assert kept_day == rolled_up_by_day(kept)
        assert len({r[1] for r in kept_day}) == 2
        # The duration histogram likewise, against the records counted in Python.
        kept_durations = await duration_rows(db, t)
        assert kept_durations == await histogram_of_records(db, t)
        assert len(kept_durations) > 20
        async with AsyncSession(db) as session, session.begin():
            report = await rebuild_report(session, t)
        assert report.drifted == 0
        assert report.tenant_drifted == 0
        assert report.day_drifted == 0
        assert report.duration_drifted == 0
        assert report.duration_rows == len(kept_durations)
        assert report.tenant_rows == len(kept_tenant)
        assert report.day_rows == len(kept_day)
        assert report.records == calls
        assert await stats_rows(db, t) == kept
        assert await tenant_rows(db, t) == kept_tenant
        assert await day_rows(db, t) == kept_day
        assert await duration_rows(db, t) == kept_durations
    # Records that changed row (a CDR moving the start hour, a dial status moving the agent) emptied
    # rows the writer deleted: no row of zeros is left behind.
    async with db.connect() as conn:
        assert not await conn.scalar(
            text("SELECT count(*) FROM call_stats WHERE tenant_id = ANY(:t) AND calls = 0"), {"t": tenants}
        )
        assert not await conn.scalar(
            text("SELECT count(*) FROM call_stats_tenant WHERE tenant_id = ANY(:t) AND calls = 0"),
            {"t": tenants},
        )
        assert not await conn.scalar(
            text("SELECT count(*) FROM call_stats_day WHERE tenant_id = ANY(:t) AND calls = 0"),
            {"t": tenants},
        )
        assert not await conn.scalar(
            text("SELECT count(*) FROM call_stats_duration WHERE tenant_id = ANY(:t) AND calls = 0"),
            {"t": tenants},
        )


@pytest.mark.parametrize("table", ["call_stats_tenant", "call_stats_day", "call_stats_duration"])
async def test_drift_and_rebuild_see_the_rollups(account: Account, db: AsyncEngine, table: str) -> None:
    """A rollup row (per tenant hour, per UTC day, or of the duration histogram) changed behind the
    writer's back is drift, and a rebuild puts it right (call_stats itself untouched)."""
    rng = random.Random(3)
    tag = uuid.uuid4().hex[:8]
    t = account.tenant_id
    for batch in delivery(rng, random_calls(rng, t, 20, tag)):
        async with AsyncSession(db) as session, session.begin():
            await write_events(session, batch)
    assert await drift_of(db, t) == 0
    read = {
        "call_stats_tenant": tenant_rows,
        "call_stats_day": day_rows,
        "call_stats_duration": duration_rows,
    }[table]
    kept = await read(db, t)
    async with db.begin() as conn:
        await conn.execute(
            text(
                f"UPDATE {table} SET calls = calls + 1 WHERE ctid = "
                f"(SELECT ctid FROM {table} WHERE tenant_id = :t LIMIT 1)"
            ),
            {"t": t},
        )
    assert await drift_of(db, t) == 2  # the stored row is extra, the right one missing
    async with AsyncSession(db) as session, session.begin():
        report = await rebuild_report(session, t)
    drifted = {
        "call_stats_tenant": (0, 2, 0, 0),
        "call_stats_day": (0, 0, 2, 0),
        "call_stats_duration": (0, 0, 0, 2),
    }
    assert (report.drifted, report.tenant_drifted, report.day_drifted, report.duration_drifted) == drifted[
        table
    ]
    assert await read(db, t) == kept
    assert await drift_of(db, t) == 0


async def test_two_writers_and_a_rebuild_at_once_agree(
    account: Account, other_account: Account, db: AsyncEngine
) -> None:
    """Two transactions writing events of the same calls at the same time (new records created by
    both, the same rows updated), and rebuilds running meanwhile: nothing is lost or counted twice."""
    rng = random.Random(7)
    tenants = [account.tenant_id, other_account.tenant_id]
    tag = uuid.uuid4().hex[:8]
    events = random_calls(rng, tenants[0], 80, tag) + random_calls(rng, tenants[1], 40, tag)
    batches = delivery(rng, events)
    writing = True
    retried = 0

    async def writer(mine: list[list[CallEvent]]) -> None:
        nonlocal retried
        for batch in mine:
            for _attempt in range(5):
                try:
                    async with AsyncSession(db) as session, session.begin():
                        await write_events(session, batch)
                    break
                except OperationalError:  # a deadlock the server broke: retried, as the consumer does
                    retried += 1
            else:
                raise AssertionError("a batch kept failing")

    async def rebuilder() -> int:
        done = 0
        while writing:
            async with AsyncSession(db) as session, session.begin():
                await rebuild(session, rng.choice(tenants))
            done += 1
            await asyncio.sleep(0.01)
        return done

    rebuilds = asyncio.create_task(rebuilder())
    try:
        await asyncio.gather(writer(batches[0::2]), writer(batches[1::2]))
    finally:
        writing = False
        rebuilt = await rebuilds
    assert rebuilt > 0
    assert retried <= len(batches) // 10  # rare, if ever
    for t, calls in zip(tenants, (80, 40), strict=True):
        assert await drift_of(db, t) == 0
        assert sum(r[len(KEY)] for r in await stats_rows(db, t)) == calls == await records_of(db, t)
        assert without_buckets(await tenant_rows(db, t)) == rolled_up(await stats_rows(db, t))


async def test_the_consumer_keeps_them_and_a_failed_batch_leaves_neither(
    account: Account, cp_settings: ControlPlaneSettings, nc: NATS, db: AsyncEngine
) -> None:
    """Through NATS and the real consumer. One call's writes fail when the transaction commits (after
    its records and aggregates were written): the batch is rolled back whole and retried event by event,
    so that call leaves neither records nor aggregates and the others are counted once."""
    rng = random.Random(11)
    tag = uuid.uuid4().hex[:8]
    events = random_calls(rng, account.tenant_id, 30, tag)
    bad = events[0].session_token
    settings = own_stream(cp_settings, events_batch=500)
    guard = f"no_{tag}"
    async with db.begin() as conn:
        await conn.execute(
            text(
                f"""CREATE FUNCTION {guard}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.session_token = '{bad}' THEN RAISE EXCEPTION 'refused at commit'; END IF;
                    RETURN NULL;
                END $$"""
            )
        )
        await conn.execute(
            text(
                f"CREATE CONSTRAINT TRIGGER {guard} AFTER INSERT OR UPDATE ON call_records "
                f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {guard}()"
            )
        )
    consumer = EventConsumer(settings)
    try:
        await publish(nc, settings, events)
        await consumer.start()
        await wait_for(lambda: drained(consumer), within=30)
    finally:
        await consumer.stop()
        await drop_stream(nc, settings)
        async with db.begin() as conn:
            await conn.execute(text(f"DROP TRIGGER {guard} ON call_records"))
            await conn.execute(text(f"DROP FUNCTION {guard}()"))

    assert consumer.poison == sum(1 for e in events if e.session_token == bad)
    async with db.connect() as conn:
        assert not await conn.scalar(
            text("SELECT count(*) FROM call_records WHERE session_token = :s"), {"s": bad}
        )
    assert await records_of(db, account.tenant_id) == 29
    assert sum(r[len(KEY)] for r in await stats_rows(db, account.tenant_id)) == 29
    assert await drift_of(db, account.tenant_id) == 0


async def test_a_rolled_back_batch_leaves_neither(account: Account, db: AsyncEngine) -> None:
    events = random_calls(random.Random(3), account.tenant_id, 5, uuid.uuid4().hex[:8])
    with contextlib.suppress(RuntimeError):
        async with AsyncSession(db) as session, session.begin():
            await write_events(session, events)
            inside = await session.scalar(
                text("SELECT sum(calls) FROM call_stats WHERE tenant_id = :t"), {"t": account.tenant_id}
            )
            assert inside == 5  # written, in this transaction
            raise RuntimeError("the batch fails")
    assert await records_of(db, account.tenant_id) == 0
    assert await stats_rows(db, account.tenant_id) == []


@pytest.fixture
async def spoiled(account: Account, other_account: Account, db: AsyncEngine) -> list[int]:
    """Two tenants with calls whose aggregates were then tampered with (as after a restore)."""
    tag = uuid.uuid4().hex[:8]
    rng = random.Random(5)
    tenants = [account.tenant_id, other_account.tenant_id]
    async with AsyncSession(db) as session, session.begin():
        await write_events(
            session, random_calls(rng, tenants[0], 20, tag) + random_calls(rng, tenants[1], 10, tag)
        )
    async with db.begin() as conn:
        await conn.execute(
            text("UPDATE call_stats SET calls = calls + 1 WHERE tenant_id = ANY(:t)"), {"t": tenants}
        )
        await conn.execute(
            text(
                "INSERT INTO call_stats (tenant_id, bucket, agent_id, group_id, direction, calls) "
                "VALUES (:t, :b, 99, 0, '', 3)"
            ),
            {"t": tenants[0], "b": datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)},
        )
    return tenants


async def test_the_rebuild_command(
    spoiled: list[int], db: AsyncEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = spoiled
    assert await drift_of(db, first) > 0
    assert await drift_of(db, second) > 0
    code = await asyncio.to_thread(cli.main, ["rebuild-aggregates", "--tenant", str(first)])
    assert code == 0
    out = capsys.readouterr().out
    assert f"tenant {first}: 20 call records" in out
    assert "per tenant hour " in out
    assert "per day " in out
    assert "per duration second " in out
    assert "rebuilt the aggregates of 1 tenant(s)" in out
    assert await drift_of(db, first) == 0
    assert await drift_of(db, second) > 0  # only the tenant asked for

    code = await asyncio.to_thread(cli.main, ["rebuild-aggregates"])
    assert code == 0
    out = capsys.readouterr().out
    assert f"tenant {first}: 20 call records" in out
    assert f"tenant {second}: 10 call records" in out
    assert await drift_of(db, second) == 0
    assert await asyncio.to_thread(cli.main, ["rebuild-aggregates", "--tenant", "987654321"]) == 1


async def test_duration_totals_from_the_buckets_equal_the_records(
    account: Account, other_account: Account, db: AsyncEngine
) -> None:
    """The record list's ``meta.total`` under ``min_duration`` / ``max_duration`` (alone and with the
    filters the aggregates answer: dates to the minute, direction, agent, group) comes from the
    duration buckets plus the records between a bound and an edge; it equals a count of the records
    made here in Python, on bucket edges and between them, live calls (no duration) excluded."""
    rng = random.Random(20261202)
    tag = uuid.uuid4().hex[:8]
    events = random_calls(rng, account.tenant_id, 120, tag) + random_calls(
        rng, other_account.tenant_id, 40, tag
    )
    for batch in delivery(rng, events):
        async with AsyncSession(db) as session, session.begin():
            await write_events(session, batch)
    records = await duration_records(db, account.tenant_id)
    assert len({r.duration for r in records}) > 50
    base = datetime.datetime.fromtimestamp(BASE_MS / 1000, datetime.UTC)
    since, until = base + datetime.timedelta(minutes=75), base + datetime.timedelta(hours=4, minutes=20)
    bounds = [(300, None), (None, 10), (305, None), (None, 299), (0, None), (60, 600), (61, 599), (15, 17)]
    bounds += [(None, 3600), (3600, None), (None, 0), (250, 250)]
    extras: list[tuple[dict[str, Any], Any]] = [
        ({}, lambda r: True),
        ({"direction": "inbound"}, lambda r: r.direction == "inbound"),
        ({"agent_id": 2}, lambda r: r.agent_id == 2),
        ({"group_id": 7}, lambda r: r.group_id == 7),
        (
            {"start_date": since.isoformat(), "end_date": until.isoformat()},
            lambda r: since <= r.start_time < until,
        ),
    ]
    assert await totals_checked(account, records, bounds, extras) > 30


def test_duration_questions_count_what_the_bounds_select() -> None:
    """``duration_question`` against a histogram made here: the buckets it names plus its signed parts
    count exactly the durations between the bounds, for bounds on, next to and between every edge
    (and open, negative, past the last edge); each part is at most half a bucket wide (or past the
    last edge)."""
    rng = random.Random(4)
    durations = sorted([rng.randint(-3, 5000) for _ in range(20_000)] + list(range(-3, 4000)))

    def between(a: int | None, b: int | None) -> int:  # durations in [a, b], either open
        lo = 0 if a is None else bisect.bisect_left(durations, a)
        hi = len(durations) if b is None else bisect.bisect_right(durations, b)
        return max(0, hi - lo)

    in_bucket = {
        c: between(a, None if b is None else b - 1)
        for c, a, b in zip(DURATION_COLUMNS, (None, *DURATION_EDGES), (*DURATION_EDGES, None), strict=True)
    }
    points: list[int | None] = [None, -1, 0, 1, 4000, 3601, 3599]
    for e in DURATION_EDGES:
        points += [e - 1, e, e + 1, e + 2, e - 3]
    points += [245, 295, 305, 1801, 2700, 2701]
    for low in points:
        for high in points:
            if low is not None and high is not None and high < low:
                continue
            q = duration_question(low, high)
            got = sum(in_bucket[c] for c in q.columns)
            for a, b, sign in q.parts:
                got += sign * between(a, b)
                if a is None:
                    assert b is not None
                    assert b < DURATION_EDGES[0]
                elif b is None:
                    assert a > DURATION_EDGES[-1]
                else:
                    assert b - a + 1 <= 900, (low, high, q)
            assert got == between(low, high), (low, high, q)
    assert duration_question(305, None).parts == ((300, 304, -1),)  # 5 s, not the 55 up to 360
    assert duration_question(300, None).parts == ()


def shifted(events: list[CallEvent], days: int) -> list[CallEvent]:
    """The same calls ``days`` later."""
    ms = days * 86_400_000

    def later(e: CallEvent) -> CallEvent:
        moved = {
            name: getattr(e, name) + ms
            for name in ("call_start_ms", "call_answer_ms", "call_end_ms")
            if getattr(e, name) is not None
        }
        return msgspec.structs.replace(e, occurred_at=e.occurred_at + ms / 1000, **moved)

    return [later(e) for e in events]


async def test_duration_totals_between_edges_over_days_equal_the_records(
    account: Account, other_account: Account, db: AsyncEngine
) -> None:
    """``meta.total`` under duration bounds on and between the bucket edges, over five UTC days of calls
    of a New York tenant: alone, with a direction, with days in the tenant's zone, with timestamps to
    the minute (whole UTC days from call_stats_duration, the edges from the records), with an agent or
    group (an exact count), equals a count of the records made here; the consumer's histogram equals a
    rebuild's, and another tenant's calls on the same days never count."""
    rng = random.Random(20261203)
    tag = uuid.uuid4().hex[:8]
    response = await account.put("/api/settings", json={"settings": {"timezone": "America/New_York"}})
    assert response.status_code == 200, response.text
    events: list[CallEvent] = []
    for day in range(4):
        events += shifted(random_calls(rng, account.tenant_id, 50, f"{tag}d{day}"), day)
        events += shifted(random_calls(rng, other_account.tenant_id, 25, f"{tag}d{day}"), day)
    for batch in delivery(rng, events):
        async with AsyncSession(db) as session, session.begin():
            await write_events(session, batch)
    for t in (account.tenant_id, other_account.tenant_id):
        assert await drift_of(db, t) == 0
        kept = await duration_rows(db, t)
        async with AsyncSession(db) as session, session.begin():
            report = await rebuild_report(session, t)
        assert report.duration_drifted == 0
        assert await duration_rows(db, t) == kept

    records = await duration_records(db, account.tenant_id)
    assert len({r.start_time.astimezone(datetime.UTC).date() for r in records}) >= 5
    utc = datetime.UTC
    ny = datetime.timezone(datetime.timedelta(hours=-5))  # New York's offset in early March (no DST yet)
    day_since = datetime.datetime(2026, 3, 2, tzinfo=ny)
    day_until = datetime.datetime(2026, 3, 4, tzinfo=ny)  # end_date 2026-03-03 inclusive
    since = datetime.datetime(2026, 3, 1, 22, 17, tzinfo=utc)
    until = datetime.datetime(2026, 3, 4, 1, 43, tzinfo=utc)
    extras: list[tuple[dict[str, Any], Any]] = [
        ({}, lambda r: True),
        ({"direction": "inbound"}, lambda r: r.direction == "inbound"),
        ({"direction": "outbound"}, lambda r: r.direction == "outbound"),
        (
            {"start_date": "2026-03-02", "end_date": "2026-03-03"},
            lambda r: day_since <= r.start_time < day_until,
        ),
        (
            {"start_date": "2026-03-02", "end_date": "2026-03-03", "direction": "inbound"},
            lambda r: day_since <= r.start_time < day_until and r.direction == "inbound",
        ),
        (
            {"start_date": since.isoformat(), "end_date": until.isoformat()},
            lambda r: since <= r.start_time < until,
        ),
        ({"start_date": since.isoformat()}, lambda r: since <= r.start_time),
        ({"end_date": until.isoformat()}, lambda r: r.start_time < until),
        (
            {"agent_id": 2, "start_date": since.isoformat(), "end_date": until.isoformat()},
            lambda r: r.agent_id == 2 and since <= r.start_time < until,
        ),
        ({"group_id": 7}, lambda r: r.group_id == 7),
    ]
    bounds = [(300, None), (305, None), (None, 299), (None, 296), (245, 295), (61, 599), (15, 17)]
    bounds += [(1801, None), (3601, None), (None, 3599), (250, 250), (None, 7), (7, 8), (596, 604)]
    assert await totals_checked(account, records, bounds, extras) > 100
    # The other tenant sees its own totals only.
    others = await duration_records(db, other_account.tenant_id)
    for low, high in ((305, None), (245, 295), (None, 296)):
        query = with_bounds({"start_date": since.isoformat()}, low, high)
        expected = count_within(others, low, high, lambda r: since <= r.start_time)
        response = await other_account.get("/api/call-records", params=query)
        assert response.json()["meta"]["total"] == expected > 0, query
