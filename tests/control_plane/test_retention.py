"""Retention (SPEC §2.7a): on a seeded database of its own (three tenants with different
``retention_days``, calls of many ages written through the real events writer) the purge removes
exactly the rows past each tenant's cut-off of each kind (timelines with their records) and keeps the
rest; the aggregates equal a rebuild afterwards; a dry run removes nothing and counts the same; two
purges at once: one works, the other does nothing; the day's scheduled run happens once, a crashed
one is taken over, a missed one runs at start; metric and audit line; the settings' 422s; ``vlb
purge``; the consumer writing during a purge keeps the aggregates right."""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import psycopg
import pytest
import structlog
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from control_plane.analytics.aggregates import drift, rebuild, rebuild_report
from control_plane.events.writer import write_events
from control_plane.retention.purge import KINDS, Purger
from control_plane.retention.runs import PURGE_LOCK_KEY, run_purge
from control_plane.retention.scheduler import PurgeScheduler, due_slot
from control_plane.settings import ControlPlaneSettings
from launcher import cli
from shared.events import CallEvent
from tests.conftest import BASE_DATABASE_URL, _admin_conninfo
from tests.control_plane.conftest import Account, create_schema
from tests.control_plane.test_aggregates import BASE_MS, random_calls

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
DAY_MS = 86_400_000
AGES = (5, 35, 50, 70, 100, 200, 400)  # days before NOW of each group of calls
SETTINGS = {
    "a": {"call_records": 30, "cdrs": 60, "webhook_audit": 30},
    "b": {"call_records": 90, "cdrs": 45, "webhook_audit": 180},
    "c": None,  # the defaults: 365, 365, 90
}


# --- a database of this module's own: a purge of every tenant touches nothing of other tests ---


@pytest.fixture(scope="module")
def retention_url(run_id: str) -> Iterator[str]:
    base = make_url(BASE_DATABASE_URL)
    name = f"vlb_test_{run_id}_retention"
    admin = _admin_conninfo(base.render_as_string(hide_password=False))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = base.set(database=name).render_as_string(hide_password=False)
    create_schema(url)
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def rdb(retention_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(retention_url, pool_size=4)
    async with engine.begin() as conn:  # each test starts from an empty database
        await conn.execute(text("TRUNCATE tenants, purge_runs RESTART IDENTITY CASCADE"))
        for table in ("call_records", "call_events", "cdrs", "webhook_audit", "call_stats"):
            await conn.execute(text(f"TRUNCATE {table}"))
    yield engine
    await engine.dispose()


async def add_tenant(db: AsyncEngine, name: str, retention: dict[str, int] | None) -> int:
    settings = {"retention_days": retention} if retention else {}
    async with db.begin() as conn:
        found = await conn.execute(
            text(
                "INSERT INTO tenants (name, settings, config_version, created_at, updated_at) "
                "VALUES (:n, CAST(:s AS jsonb), 0, now(), now()) RETURNING id"
            ),
            {"n": name, "s": msgspec.json.encode(settings).decode()},
        )
        return int(found.scalar_one())


def aged(events: list[CallEvent], age_days: float) -> list[CallEvent]:
    """``random_calls``' events moved so that their base hour lies ``age_days`` before NOW."""
    offset_ms = round(NOW.timestamp() * 1000) - round(age_days * DAY_MS) - BASE_MS

    def move(ms: int | None) -> int | None:
        return ms + offset_ms if ms is not None else None

    return [
        msgspec.structs.replace(
            e,
            occurred_at=e.occurred_at + offset_ms / 1000,
            call_start_ms=move(e.call_start_ms),
            call_answer_ms=move(e.call_answer_ms),
            call_end_ms=move(e.call_end_ms),
        )
        for e in events
    ]


async def seed(db: AsyncEngine, tenant_ids: list[int], calls_per_age: int = 4) -> None:
    rng = random.Random(2026_12_01)
    tag = uuid.uuid4().hex[:6]
    for tenant_id in tenant_ids:
        for age in AGES:
            events = aged(random_calls(rng, tenant_id, calls_per_age, f"{tag}-{age}"), age)
            async with AsyncSession(db) as session, session.begin():
                await write_events(session, events)


async def add_unstarted(db: AsyncEngine, tenant_id: int) -> None:
    """Two records without a start time (as an import may leave them), one past every cut-off, each
    with a timeline row; the tenant's aggregates rebuilt to include them."""
    async with AsyncSession(db) as session, session.begin():
        for token, age in (("unstarted-old", 500), ("unstarted-new", 1)):
            created = NOW - datetime.timedelta(days=age)
            await session.execute(
                text(
                    "INSERT INTO call_records (tenant_id, session_token, status, attempts, created_at, "
                    "updated_at) VALUES (:t, :s, 'failed', 0, :c, :c)"
                ),
                {"t": tenant_id, "s": token, "c": created},
            )
            await session.execute(
                text(
                    "INSERT INTO call_events (tenant_id, event_id, session_token, kind, occurred_at, "
                    "created_at) VALUES (:t, :e, :s, 'routed', :c, :c)"
                ),
                {"t": tenant_id, "e": f"{tenant_id}:{token}", "s": token, "c": created},
            )
        await rebuild(session, tenant_id)


# --- the oracle: what each kind keeps, by plain queries over the seeded rows ---

_IDS = {
    "call_records": "SELECT id, COALESCE(start_time, created_at) < :rec FROM call_records WHERE tenant_id = :t",
    "call_events": """SELECT e.id, EXISTS (SELECT 1 FROM call_records r WHERE r.tenant_id = e.tenant_id
                        AND r.session_token = e.session_token AND COALESCE(r.start_time, r.created_at) < :rec)
                      FROM call_events e WHERE e.tenant_id = :t""",
    "cdrs": "SELECT id, start_time < :cdr FROM cdrs WHERE tenant_id = :t",
    "webhook_audit": "SELECT id, processed_at < :aud FROM webhook_audit WHERE tenant_id = :t",
}


async def split(
    db: AsyncEngine, tenant_id: int, days: dict[str, int]
) -> dict[str, tuple[set[int], set[int]]]:
    """Per kind: (ids past the cut-off, ids within it)."""
    cut = {
        "rec": NOW - datetime.timedelta(days=days["call_records"]),
        "cdr": NOW - datetime.timedelta(days=days["cdrs"]),
        "aud": NOW - datetime.timedelta(days=days["webhook_audit"]),
    }
    out: dict[str, tuple[set[int], set[int]]] = {}
    async with db.connect() as conn:
        for kind, sql in _IDS.items():
            rows = (await conn.execute(text(sql), {"t": tenant_id, **cut})).all()
            out[kind] = ({i for i, old in rows if old}, {i for i, old in rows if not old})
    return out


async def ids_of(db: AsyncEngine, tenant_id: int) -> dict[str, set[int]]:
    tables = {"call_records": "call_records", "call_events": "call_events", "cdrs": "cdrs"}
    tables["webhook_audit"] = "webhook_audit"
    async with db.connect() as conn:
        return {
            kind: set(
                (
                    await conn.scalars(text(f"SELECT id FROM {table} WHERE tenant_id = :t"), {"t": tenant_id})
                ).all()
            )
            for kind, table in tables.items()
        }


async def drift_of(db: AsyncEngine, tenant_id: int) -> int:
    async with AsyncSession(db) as session, session.begin():
        return await drift(session, tenant_id)


def purged_metric(kind: str) -> float:
    return REGISTRY.get_sample_value("vlb_cp_purged_rows_total", {"kind": kind}) or 0.0


DEFAULTS = {"call_records": 365, "cdrs": 365, "webhook_audit": 90}


async def seeded(db: AsyncEngine) -> dict[int, dict[str, int]]:
    """Three tenants with their retention, seeded; tenant a also has records without a start."""
    tenants: dict[int, dict[str, int]] = {}
    for name, days in SETTINGS.items():
        tenants[await add_tenant(db, f"retention {name}", days)] = days or DEFAULTS
    await seed(db, list(tenants))
    await add_unstarted(db, next(iter(tenants)))
    return tenants


# --- the tests ---


async def test_the_purge_removes_exactly_what_is_past_each_cutoff(rdb: AsyncEngine) -> None:
    tenants = await seeded(rdb)
    expected = {t: await split(rdb, t, days) for t, days in tenants.items()}
    for t, kinds in expected.items():
        for kind, (old, kept) in kinds.items():
            assert old, f"tenant {t} {kind}: rows past the boundary"
            assert kept, f"tenant {t} {kind}: rows within the boundary"
        assert await drift_of(rdb, t) == 0
    before = {t: await ids_of(rdb, t) for t in tenants}

    # Small batches: many transactions per kind, ties on the time column across batches.
    dry = await Purger(rdb, batch=5, now=NOW).run(dry_run=True)
    assert {t: await ids_of(rdb, t) for t in tenants} == before  # nothing removed
    dry_counts = {p.tenant_id: p.removed for p in dry.tenants}
    for t in tenants:
        assert dry_counts[t] == {kind: len(expected[t][kind][0]) for kind in KINDS}

    metric_before = {kind: purged_metric(kind) for kind in KINDS}
    report = await Purger(rdb, batch=5, now=NOW).run()
    for tenant in report.tenants:
        assert tenant.removed == dry_counts[tenant.tenant_id]  # the dry run said the same
    assert report.batches > 20
    assert report.longest_transaction_s > 0
    for kind in KINDS:
        assert purged_metric(kind) - metric_before[kind] == report.totals()[kind]

    for t in tenants:
        left = await ids_of(rdb, t)
        for kind in KINDS:
            assert left[kind] == expected[t][kind][1], f"tenant {t} {kind}"
        # The aggregates lost exactly what went: they equal a rebuild from the records left.
        assert await drift_of(rdb, t) == 0
        async with AsyncSession(rdb) as session, session.begin():
            rebuilt = await rebuild_report(session, t)
        assert rebuilt.drifted == 0
        assert rebuilt.records == len(left["call_records"])
    # A second purge finds nothing more.
    again = await Purger(rdb, batch=5, now=NOW).run()
    assert sum(again.totals().values()) == 0


async def test_a_tenant_setting_affects_only_its_rows(rdb: AsyncEngine) -> None:
    tenants = await seeded(rdb)
    first, second, third = list(tenants)
    others = {t: await ids_of(rdb, t) for t in (second, third)}
    report = await Purger(rdb, batch=50, now=NOW).run(tenant_id=first)
    assert [p.tenant_id for p in report.tenants] == [first]
    assert report.totals()["call_records"] > 0
    for t in (second, third):
        assert await ids_of(rdb, t) == others[t]
        assert await drift_of(rdb, t) == 0
    assert await drift_of(rdb, first) == 0


async def test_two_purges_at_once_one_does_the_work(rdb: AsyncEngine) -> None:
    await seeded(rdb)
    slow = {"batch": 3, "pause_s": 0.02, "now": NOW}
    outcomes = await asyncio.gather(run_purge(rdb, Purger(rdb, **slow)), run_purge(rdb, Purger(rdb, **slow)))
    done = [o for o in outcomes if o.ran]
    assert len(done) == 1
    assert [o.reason for o in outcomes if not o.ran] == ["busy"]
    assert done[0].report is not None
    assert sum(done[0].report.totals().values()) > 0
    async with rdb.connect() as conn:
        runs = (await conn.execute(text("SELECT trigger, status, removed FROM purge_runs"))).all()
        assert [(r.trigger, r.status) for r in runs] == [("manual", "done")]
        assert runs[0].removed == done[0].report.removed_by_tenant()
        # The lock went with the run.
        assert (
            await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())"
                )
            )
            == 0
        )


async def test_the_days_run_happens_once_and_a_crashed_one_is_taken_over(
    rdb: AsyncEngine, cp_settings: ControlPlaneSettings, retention_url: str
) -> None:
    await seeded(rdb)
    settings = msgspec.structs.replace(
        cp_settings, database_url=retention_url, purge_batch=4, purge_pause_s=0.01, purge_hour_utc=3
    )
    schedulers = [PurgeScheduler(settings), PurgeScheduler(settings)]
    at = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)
    for s in schedulers:
        s.engine = create_async_engine(retention_url, pool_size=2, max_overflow=0)
    try:
        # Several replicas check at once, twice: the day's purge runs exactly once.
        first = await asyncio.gather(*(s.check(at) for s in schedulers))
        second = await asyncio.gather(*(s.check(at) for s in schedulers))
        assert sorted(o.ran for o in first) == [False, True]
        assert sorted(o.reason for o in first) == ["", "busy"]
        assert [o.reason for o in second] == ["already", "already"]
        # A replica that died in the middle of the next day's run left its row 'running' (and its
        # lock died with its connection): the next check takes the day over.
        next_day = at + datetime.timedelta(days=1)
        async with rdb.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO purge_runs (scheduled_for, trigger, status, attempts, host, started_at) "
                    "VALUES (:d, 'schedule', 'running', 1, 'dead:1', now())"
                ),
                {"d": due_slot(next_day, 3)},
            )
        taken = await schedulers[1].check(next_day)
        assert taken.ran
        async with rdb.connect() as conn:
            rows = (
                await conn.execute(
                    text("SELECT scheduled_for, status, attempts FROM purge_runs ORDER BY scheduled_for")
                )
            ).all()
        assert [(r.scheduled_for, r.status, r.attempts) for r in rows] == [
            (datetime.date(2026, 12, 1), "done", 1),
            (datetime.date(2026, 12, 2), "done", 2),
        ]
    finally:
        for s in schedulers:
            await s.stop()


async def test_a_missed_day_runs_at_start(
    rdb: AsyncEngine, cp_settings: ControlPlaneSettings, retention_url: str
) -> None:
    """No run recorded for the latest slot: a control plane that starts runs it right away."""
    await seeded(rdb)
    settings = msgspec.structs.replace(
        cp_settings, database_url=retention_url, purge_first_check_s=0.0, purge_check_s=3600.0
    )
    scheduler = PurgeScheduler(settings)
    await scheduler.start()
    try:
        for _ in range(200):
            if scheduler.last is not None:
                break
            await asyncio.sleep(0.05)
        assert scheduler.last is not None
        assert scheduler.last.ran
    finally:
        await scheduler.stop()
    async with rdb.connect() as conn:
        row = (await conn.execute(text("SELECT scheduled_for, trigger, status FROM purge_runs"))).one()
    assert (row.scheduled_for, row.trigger, row.status) == (
        due_slot(datetime.datetime.now(datetime.UTC), settings.purge_hour_utc),
        "schedule",
        "done",
    )


async def test_the_audit_line_of_a_run(rdb: AsyncEngine) -> None:
    await seeded(rdb)
    saved = structlog.get_config()
    # The suite's apps log at warning and above: let info lines through while capturing.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    try:
        with structlog.testing.capture_logs() as logs:
            outcome = await run_purge(rdb, Purger(rdb, batch=100, now=NOW))
    finally:
        structlog.configure(**saved)
    assert outcome.report is not None
    lines = [line for line in logs if line["event"] == "retention.purged"]
    assert len(lines) == 1
    line = lines[0]
    assert line["run_id"] == outcome.run_id
    assert line["trigger"] == "manual"
    assert line["removed"] == outcome.report.removed_by_tenant()
    assert line["totals"] == outcome.report.totals()
    assert set(line["removed"]) == {str(t.tenant_id) for t in outcome.report.tenants}
    assert all(set(kinds) <= set(KINDS) for kinds in line["removed"].values())


async def test_the_consumer_writing_meanwhile_keeps_the_aggregates_right(rdb: AsyncEngine) -> None:
    """Recent calls of the same tenants written in many transactions while the purge runs: both
    finish, nothing recent is lost, the aggregates equal a rebuild."""
    tenants = await seeded(rdb)
    rng = random.Random(7)
    fresh = [aged(random_calls(rng, t, 40, f"live-{uuid.uuid4().hex[:6]}"), 0.5) for t in tenants]

    async def writer(events: list[CallEvent]) -> None:
        for i in range(0, len(events), 7):
            async with AsyncSession(rdb) as session, session.begin():
                await write_events(session, events[i : i + 7])
            await asyncio.sleep(0)

    report, *_ = await asyncio.gather(Purger(rdb, batch=3, now=NOW).run(), *(writer(e) for e in fresh))
    assert sum(report.totals().values()) > 0
    for t in tenants:
        assert await drift_of(rdb, t) == 0
        async with rdb.connect() as conn:
            live = await conn.scalar(
                text(
                    "SELECT count(*) FROM call_records WHERE tenant_id = :t AND session_token LIKE 'live-%'"
                ),
                {"t": t},
            )
        assert live == 40


async def test_the_purge_command(
    rdb: AsyncEngine, retention_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tenants = await seeded(rdb)
    first = next(iter(tenants))
    monkeypatch.setenv("VLB_DATABASE_URL", retention_url)
    before = await ids_of(rdb, first)

    assert await asyncio.to_thread(cli.main, ["purge", "--dry-run", "--tenant", str(first)]) == 0
    dry = capsys.readouterr().out
    assert await ids_of(rdb, first) == before
    assert f"tenant {first} (keeps call records 30 d, cdrs 60 d, webhook audit 30 d): would remove" in dry
    assert "1 tenant(s): would remove" in dry

    assert await asyncio.to_thread(cli.main, ["purge", "--tenant", str(first)]) == 0
    out = capsys.readouterr().out
    # The same counts, now removed.
    assert dry.split("would remove ")[1].splitlines()[0] == out.split("removed ")[1].splitlines()[0]
    assert "transactions, longest" in out
    assert await ids_of(rdb, first) != before

    assert await asyncio.to_thread(cli.main, ["purge", "--tenant", "987654321"]) == 1
    # Every tenant; and none while another purge holds the lock.
    assert await asyncio.to_thread(cli.main, ["purge", "--dry-run"]) == 0
    assert "3 tenant(s): would remove" in capsys.readouterr().out
    async with rdb.connect() as conn:
        await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PURGE_LOCK_KEY})
        try:
            assert await asyncio.to_thread(cli.main, ["purge"]) == 1
            assert "another purge is running" in capsys.readouterr().err
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PURGE_LOCK_KEY})


@pytest.mark.parametrize(
    ("retention", "field"),
    [
        ({"cdrs": 29}, "settings.retention_days.cdrs"),
        ({"call_records": 3651}, "settings.retention_days.call_records"),
        ({"webhook_audit": "forever"}, "settings.retention_days.webhook_audit"),
        ({"exports": 30}, "settings.retention_days"),
    ],
)
async def test_retention_settings_are_validated(
    account: Account, retention: dict[str, Any], field: str
) -> None:
    response = await account.put("/api/tenant", json={"settings": {"retention_days": retention}})
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]]
    ok = await account.put("/api/settings", json={"settings": {"retention_days": {"cdrs": 30}}})
    assert ok.status_code == 200
    assert ok.json()["settings"]["retention_days"] == {"call_records": 365, "cdrs": 30, "webhook_audit": 90}
