"""The definition of ``call_stats`` (control_plane/db/models/analytics.py), its upkeep and its rebuild.

A call record contributes to exactly one row, keyed by (tenant, UTC hour of its start, agent, group,
direction). ``CONTRIBUTION_SQL`` says what a record adds to each column; ``contribution`` says the
same in Python for the consumer's incremental upkeep (``StatDeltas`` + ``apply_deltas``), and
``rebuild`` recomputes a tenant's rows from its records. A test holds the three to one another: after
any sequence of events, the rows the consumer kept equal a rebuild's (``drift`` counts the rows that
differ). Rows whose every column is zero are deleted, so a rebuild and the upkeep agree row for row.

``call_stats_tenant`` is the same rows summed over agents and groups, keyed (tenant, hour, routed,
direction) with ``routed = agent_id <> 0``: reads without an agent or group filter sum a few rows an
hour there. ``apply_deltas`` keeps it from the same deltas in the same statement order and transaction,
``rebuild`` recomputes it from the fresh ``call_stats`` rows, and ``drift`` checks both tables. It
also counts records per duration bucket (``DURATION_COLUMNS``, which ``call_stats`` does not hold: the
record list's duration totals are read without an agent or group filter, and the per-agent rows stay
narrow for the agent and group reads).

``call_stats_day`` is the ``call_stats`` rows summed per UTC day over directions, keyed (tenant, day,
agent, group): the agent and group reports read a range's whole UTC days there (a row per agent and
group a day) and its edges from ``call_stats``. Kept, rebuilt and checked like ``call_stats_tenant``.

``call_stats_duration`` is a fine duration histogram: records per (tenant, duration in whole seconds,
UTC day of the start, direction); a live call (no duration) is in none. The record list's
``min_duration`` / ``max_duration`` totals read the coarse buckets above for whole buckets and this
table only for the few seconds between a bound and its nearest bucket edge. ``contribution`` returns a
record's duration with its key, ``StatDeltas`` sums the changes per histogram row, ``apply_deltas``
upserts them after the other tables, and ``rebuild`` / ``drift`` recompute them from the records.

Concurrency: a writer takes a shared per-tenant advisory lock (``hold_tenants``) before it reads the
records it will change; ``rebuild`` takes the same lock exclusively, so it waits for the writers in
flight and the writers wait for it, and its snapshot of the records is the one its rows describe."""

from __future__ import annotations

import bisect
import datetime
import itertools
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from shared.enums import TERMINAL_STATUSES, CallStatus

# Records by duration (seconds), for the record list's exact ``min_duration`` / ``max_duration``
# totals: bucket 0 counts durations below DURATION_EDGES[0], bucket i durations from
# DURATION_EDGES[i - 1] up to (not including) DURATION_EDGES[i], the last one the rest; a record without
# a duration (a live call) is in none. Finer where calls are (a threshold between two edges costs a
# count of the records between it and the nearest edge, through the (tenant_id, duration) index).
DURATION_EDGES = (10, 20, 30, 45, 60, 90, 120, 180, 240, 300, 360, 420, 480, 540, 600, 900, 1200, 1800, 3600)


def _duration_columns() -> tuple[str, ...]:
    e = DURATION_EDGES
    return (
        f"dur_lt_{e[0]}",
        *(f"dur_{low}_{high}" for low, high in itertools.pairwise(e)),
        f"dur_ge_{e[-1]}",
    )


DURATION_COLUMNS = _duration_columns()
COLUMNS = (
    "calls",
    "finished",
    "completed",
    "busy",
    "failed",
    "no_answer",
    "canceled",
    "duration_sum",
    "completed_duration_sum",
    "completed_duration_n",
    "billsec_sum",
    *DURATION_COLUMNS,
)
# call_stats holds every column but the duration buckets, which only call_stats_tenant holds (the
# record list's duration totals are read without an agent or group filter; per-agent rows stay narrow
# for the agent and group reads).
STATS_COLUMNS = tuple(c for c in COLUMNS if c not in DURATION_COLUMNS)
_N_STATS = len(STATS_COLUMNS)
assert COLUMNS[:_N_STATS] == STATS_COLUMNS
KEY = ("tenant_id", "bucket", "agent_id", "group_id", "direction")
TENANT_KEY = ("tenant_id", "bucket", "routed", "direction")
DAY_KEY = ("tenant_id", "day", "agent_id", "group_id")
# A call_stats row's (alias s) key in call_stats_day, in DAY_KEY order.
DAY_KEY_SQL = "s.tenant_id, (s.bucket AT TIME ZONE 'UTC')::date AS day, s.agent_id, s.group_id"
# A call_stats row's (alias s) key in call_stats_tenant, in TENANT_KEY order.
TENANT_KEY_SQL = "s.tenant_id, s.bucket, s.agent_id <> 0 AS routed, s.direction"

_TERMINAL_SQL = ", ".join(f"'{s.value}'" for s in sorted(TERMINAL_STATUSES))


def _duration_sql() -> str:
    """The DURATION_COLUMNS of one record (alias r): 1 in its bucket's column, 0 in the others."""
    e = DURATION_EDGES
    tests = [
        f"(r.duration < {e[0]})::int",
        *(f"(r.duration >= {low} AND r.duration < {high})::int" for low, high in itertools.pairwise(e)),
        f"(r.duration >= {e[-1]})::int",
    ]
    return ",\n    ".join(f"COALESCE({t}, 0) AS {c}" for t, c in zip(tests, DURATION_COLUMNS, strict=True))


# What one call record (alias r) contributes, column by column, in COLUMNS order, and its key.
CONTRIBUTION_SQL = f"""
    r.tenant_id,
    date_trunc('hour', COALESCE(r.start_time, r.created_at), 'UTC') AS bucket,
    COALESCE(r.agent_id, 0) AS agent_id,
    COALESCE(r.group_id, 0) AS group_id,
    COALESCE(r.direction, '') AS direction,
    1 AS calls,
    (r.status IN ({_TERMINAL_SQL}))::int AS finished,
    (r.status = 'completed')::int AS completed,
    (r.status = 'busy')::int AS busy,
    (r.status = 'failed')::int AS failed,
    (r.status = 'no_answer')::int AS no_answer,
    (r.status = 'canceled')::int AS canceled,
    COALESCE(r.duration, 0) AS duration_sum,
    CASE WHEN r.status = 'completed' THEN COALESCE(r.duration, 0) ELSE 0 END AS completed_duration_sum,
    (r.status = 'completed' AND r.duration IS NOT NULL)::int AS completed_duration_n,
    COALESCE(r.billsec, 0) AS billsec_sum,
    {_duration_sql()}
"""


class StatKey(NamedTuple):
    tenant_id: int
    bucket: datetime.datetime
    agent_id: int
    group_id: int
    direction: str


class Contribution(NamedTuple):
    """What one record adds: its ``call_stats`` row key, a value per COLUMNS entry, and its duration (its
    ``call_stats_duration`` row, with the key's UTC day and direction; None: in none)."""

    key: StatKey
    values: tuple[int, ...]
    duration: int | None


def bucket_of(start_time: datetime.datetime | None, created_at: datetime.datetime) -> datetime.datetime:
    moment = (start_time or created_at).astimezone(datetime.UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


_NO_DURATION = (0,) * len(DURATION_COLUMNS)
# The DURATION_COLUMNS values of a record in bucket i.
_ONE_HOT = tuple(
    tuple(int(i == j) for j in range(len(DURATION_COLUMNS))) for i in range(len(DURATION_COLUMNS))
)


def duration_bucket(duration: int) -> int:
    """The DURATION_COLUMNS index that counts a record of this duration."""
    return bisect.bisect_right(DURATION_EDGES, duration)


def contribution(
    *,
    tenant_id: int,
    start_time: datetime.datetime | None,
    created_at: datetime.datetime,
    agent_id: int | None,
    group_id: int | None,
    direction: str | None,
    status: str,
    duration: int | None,
    billsec: int | None,
) -> Contribution:
    """What one record adds to ``call_stats`` (its row's key and a value per COLUMNS entry) and to
    ``call_stats_duration`` (its duration)."""
    completed = status == CallStatus.COMPLETED.value
    key = StatKey(tenant_id, bucket_of(start_time, created_at), agent_id or 0, group_id or 0, direction or "")
    values = (
        1,
        int(status in TERMINAL_STATUSES),
        int(completed),
        int(status == CallStatus.BUSY.value),
        int(status == CallStatus.FAILED.value),
        int(status == CallStatus.NO_ANSWER.value),
        int(status == CallStatus.CANCELED.value),
        duration or 0,
        (duration or 0) if completed else 0,
        int(completed and duration is not None),
        billsec or 0,
        *(_NO_DURATION if duration is None else _ONE_HOT[duration_bucket(duration)]),
    )
    return Contribution(key, values, duration)


# Advisory lock keys: "VLBS" in the high half, the tenant id in the low one (ids past 2**32 share a
# key with a smaller one, which costs waiting, never correctness).
STATS_LOCK_BASE = 0x564C_4253_0000_0000


def lock_key(tenant_id: int) -> int:
    return STATS_LOCK_BASE | (tenant_id & 0xFFFF_FFFF)


async def hold_tenants(session: AsyncSession, tenant_ids: Iterable[int]) -> None:
    """Take the shared lock of each tenant (in one order, for the transaction): a rebuild of one of
    them waits for this transaction, and this one for a rebuild already running."""
    keys = sorted({lock_key(t) for t in tenant_ids})
    if keys:
        await session.execute(
            text("SELECT pg_advisory_xact_lock_shared(k) FROM unnest(CAST(:keys AS bigint[])) AS k"),
            {"keys": keys},
        )


class TenantKey(NamedTuple):
    tenant_id: int
    bucket: datetime.datetime
    routed: bool
    direction: str


def tenant_key(key: StatKey) -> TenantKey:
    """The ``call_stats_tenant`` row a ``call_stats`` row adds to."""
    return TenantKey(key.tenant_id, key.bucket, key.agent_id != 0, key.direction)


class DayKey(NamedTuple):
    tenant_id: int
    day: datetime.date
    agent_id: int
    group_id: int


class DurationKey(NamedTuple):
    tenant_id: int
    duration: int
    day: datetime.date
    direction: str


def utc_day(bucket: datetime.datetime) -> datetime.date:
    """The UTC day of a ``call_stats`` bucket (a UTC hour)."""
    return bucket.astimezone(datetime.UTC).date()


def day_key(key: StatKey) -> DayKey:
    """The ``call_stats_day`` row a ``call_stats`` row adds to."""
    return DayKey(key.tenant_id, utc_day(key.bucket), key.agent_id, key.group_id)


class StatDeltas:
    """What a batch of record changes does to ``call_stats`` (summed per row key) and to
    ``call_stats_duration`` (per histogram row)."""

    __slots__ = ("durations", "rows")

    def __init__(self) -> None:
        self.rows: dict[StatKey, list[int]] = {}
        self.durations: dict[DurationKey, int] = {}

    def add(self, key: StatKey, values: tuple[int, ...], duration: int | None = None, sign: int = 1) -> None:
        """Add (sign 1) or take away (-1) one record's ``Contribution``."""
        row = self.rows.get(key)
        if row is None:
            self.rows[key] = [sign * v for v in values]
        else:
            for i, v in enumerate(values):
                row[i] += sign * v
        if duration is not None:
            dkey = DurationKey(key.tenant_id, duration, utc_day(key.bucket), key.direction)
            self.durations[dkey] = self.durations.get(dkey, 0) + sign

    def per_duration(self) -> list[tuple[DurationKey, list[int]]]:
        """The ``call_stats_duration`` rows that change (their ``calls``), in key order."""
        return sorted((k, [n]) for k, n in self.durations.items() if n)

    def nonzero(self) -> list[tuple[StatKey, list[int]]]:
        """The rows that change, in key order (the order every writer locks them in)."""
        return sorted((k, v) for k, v in self.rows.items() if any(v))

    def per_tenant(self) -> list[tuple[TenantKey, list[int]]]:
        """The same changes summed per ``call_stats_tenant`` row, in key order."""
        rows: dict[TenantKey, list[int]] = {}
        for key, values in self.rows.items():
            row = rows.setdefault(tenant_key(key), [0] * len(values))
            for i, v in enumerate(values):
                row[i] += v
        return sorted((k, v) for k, v in rows.items() if any(v))

    def per_day(self) -> list[tuple[DayKey, list[int]]]:
        """The same changes (the ``call_stats`` columns) summed per ``call_stats_day`` row, in key order."""
        rows: dict[DayKey, list[int]] = {}
        for key, values in self.rows.items():
            row = rows.get(day_key(key))
            if row is None:
                rows[day_key(key)] = list(values[:_N_STATS])
            else:
                for i in range(_N_STATS):
                    row[i] += values[i]
        return sorted((k, v) for k, v in rows.items() if any(v))


_KEY_ARRAYS = (
    "CAST(:tenant_id AS bigint[]), CAST(:bucket AS timestamptz[]), CAST(:agent_id AS bigint[]), "
    "CAST(:group_id AS bigint[]), CAST(:direction AS varchar[])"
)


def _upsert_sql(table: str, key: tuple[str, ...], key_arrays: str, columns: tuple[str, ...]) -> str:
    # Built from the constant names above, never from input.
    arrays = ", ".join(f"CAST(:{c} AS bigint[])" for c in columns)
    return f"""
    INSERT INTO {table} ({", ".join(key)}, {", ".join(columns)})
    SELECT * FROM unnest({key_arrays}, {arrays})
    ON CONFLICT ({", ".join(key)}) DO UPDATE SET
    {", ".join(f"{c} = {table}.{c} + EXCLUDED.{c}" for c in columns)}
    RETURNING ctid, {" AND ".join(f"{table}.{c} = 0" for c in columns)} AS empty
"""  # noqa: S608


def _delete_empty_sql(table: str, columns: tuple[str, ...]) -> str:
    # The rows the upsert left all zero, by their row id (this transaction holds their locks, so the
    # ids stay theirs): no lookup for the planner to choose.
    return f"""
    DELETE FROM {table} WHERE ctid = ANY(CAST(:ctids AS tid[]))
      AND {" AND ".join(f"{c} = 0" for c in columns)}
"""  # noqa: S608


UPSERT_SQL = _upsert_sql("call_stats", KEY, _KEY_ARRAYS, STATS_COLUMNS)
DELETE_EMPTY_SQL = _delete_empty_sql("call_stats", STATS_COLUMNS)
_TENANT_KEY_ARRAYS = (
    "CAST(:tenant_id AS bigint[]), CAST(:bucket AS timestamptz[]), CAST(:routed AS boolean[]), "
    "CAST(:direction AS varchar[])"
)
_DAY_KEY_ARRAYS = "CAST(:tenant_id AS bigint[]), CAST(:day AS date[]), CAST(:agent_id AS bigint[]), CAST(:group_id AS bigint[])"
DAY_UPSERT_SQL = _upsert_sql("call_stats_day", DAY_KEY, _DAY_KEY_ARRAYS, STATS_COLUMNS)
DAY_DELETE_EMPTY_SQL = _delete_empty_sql("call_stats_day", STATS_COLUMNS)
TENANT_UPSERT_SQL = _upsert_sql("call_stats_tenant", TENANT_KEY, _TENANT_KEY_ARRAYS, COLUMNS)
TENANT_DELETE_EMPTY_SQL = _delete_empty_sql("call_stats_tenant", COLUMNS)
DURATION_KEY = ("tenant_id", "duration", "day", "direction")
_DURATION_KEY_ARRAYS = (
    "CAST(:tenant_id AS bigint[]), CAST(:duration AS integer[]), CAST(:day AS date[]), "
    "CAST(:direction AS varchar[])"
)
DURATION_UPSERT_SQL = _upsert_sql("call_stats_duration", DURATION_KEY, _DURATION_KEY_ARRAYS, ("calls",))
DURATION_DELETE_EMPTY_SQL = _delete_empty_sql("call_stats_duration", ("calls",))


async def _upsert(
    session: AsyncSession,
    rows: list[tuple[Any, list[int]]],
    key: tuple[str, ...],
    columns: tuple[str, ...],
    upsert_sql: str,
    delete_sql: str,
) -> None:
    params: dict[str, list[object]] = {name: [k[i] for k, _ in rows] for i, name in enumerate(key)}
    for i, name in enumerate(columns):
        params[name] = [v[i] for _, v in rows]
    changed = (await session.execute(text(upsert_sql), params)).all()
    emptied = [str(ctid) for ctid, empty in changed if empty]
    if emptied:
        await session.execute(text(delete_sql), {"ctids": emptied})


async def apply_deltas(session: AsyncSession, deltas: StatDeltas) -> int:
    """Add the deltas to ``call_stats`` (one multi-row upsert, rows in key order, so two writers lock
    shared rows in one order), then delete the rows they emptied; then the same for ``call_stats_day``,
    ``call_stats_tenant`` and ``call_stats_duration`` (every writer locks ``call_stats`` rows, then
    ``call_stats_day`` ones, then ``call_stats_tenant`` ones, then ``call_stats_duration`` ones, each in
    key order: one order for all). Returns how many ``call_stats`` rows changed."""
    # call_stats takes the deltas without the duration buckets (a row whose other columns do not
    # change, e.g. a duration going from none to 0, is left alone).
    rows = [(k, v[:_N_STATS]) for k, v in deltas.nonzero() if any(v[:_N_STATS])]
    if rows:
        await _upsert(session, rows, KEY, STATS_COLUMNS, UPSERT_SQL, DELETE_EMPTY_SQL)
    day_rows = deltas.per_day()
    if day_rows:
        await _upsert(session, day_rows, DAY_KEY, STATS_COLUMNS, DAY_UPSERT_SQL, DAY_DELETE_EMPTY_SQL)
    tenant_rows = deltas.per_tenant()
    if tenant_rows:
        await _upsert(session, tenant_rows, TENANT_KEY, COLUMNS, TENANT_UPSERT_SQL, TENANT_DELETE_EMPTY_SQL)
    duration_rows = deltas.per_duration()
    if duration_rows:
        await _upsert(
            session, duration_rows, DURATION_KEY, ("calls",), DURATION_UPSERT_SQL, DURATION_DELETE_EMPTY_SQL
        )
    return len(rows)


_SUMS = ", ".join(f"sum({c}) AS {c}" for c in COLUMNS)
# What the records of tenant :tenant_id add up to, per call_stats key, every column (the duration
# buckets too, for call_stats_tenant) (built from constants, never from input).
RECOMPUTE_SQL = f"""
    SELECT {", ".join(KEY)}, {_SUMS}
    FROM (SELECT {CONTRIBUTION_SQL} FROM call_records r WHERE r.tenant_id = :tenant_id) c
    GROUP BY {", ".join(KEY)}
"""  # noqa: S608
# The tenant's call_stats_duration rows from its records: keyed as ``contribution`` keys them (the UTC
# day of the hour bucket is the UTC day of the start).
DURATION_RECOMPUTE_SQL = """
    SELECT r.tenant_id, r.duration, (COALESCE(r.start_time, r.created_at) AT TIME ZONE 'UTC')::date AS day,
           COALESCE(r.direction, '') AS direction, count(*) AS calls
    FROM call_records r WHERE r.tenant_id = :tenant_id AND r.duration IS NOT NULL
    GROUP BY 1, 2, 3, 4
"""
_DURATION_STORED_SQL = (
    f"SELECT {', '.join(DURATION_KEY)}, calls FROM call_stats_duration WHERE tenant_id = :tenant_id"  # noqa: S608
)
_STORED_SQL = (
    f"SELECT {', '.join(KEY)}, {', '.join(STATS_COLUMNS)} FROM call_stats WHERE tenant_id = :tenant_id"  # noqa: S608
)
# The call_stats columns of recomputed rows (a table or subquery, alias f).
_STATS_OF = f"SELECT {', '.join(KEY)}, {', '.join(STATS_COLUMNS)} FROM ({{rows}}) f"  # noqa: S608
# call_stats rows (alias s, a table or a subquery) summed into call_stats_tenant rows.
_TENANT_OF = "SELECT {key}, {sums} FROM ({rows}) s GROUP BY 1, 2, 3, 4"
_STATS_SUMS = ", ".join(f"sum({c}) AS {c}" for c in STATS_COLUMNS)
_DAY_OF = "SELECT {key}, {sums} FROM ({rows}) s GROUP BY 1, 2, 3, 4"
_DAY_STORED_SQL = f"SELECT {', '.join(DAY_KEY)}, {', '.join(STATS_COLUMNS)} FROM call_stats_day WHERE tenant_id = :tenant_id"  # noqa: S608
_TENANT_STORED_SQL = f"SELECT {', '.join(TENANT_KEY)}, {', '.join(COLUMNS)} FROM call_stats_tenant WHERE tenant_id = :tenant_id"  # noqa: S608
# Rows stored but not recomputed as they are, plus rows recomputed but not stored as they are, in
# both tables (call_stats_tenant against the recomputed call_stats rows summed).
DRIFT_SQL = f"""
    WITH fresh AS MATERIALIZED ({RECOMPUTE_SQL}), stored AS MATERIALIZED ({_STORED_SQL}),
    fresh_t AS MATERIALIZED ({_TENANT_OF.format(key=TENANT_KEY_SQL, sums=_SUMS, rows="SELECT * FROM fresh")}),
    stored_t AS MATERIALIZED ({_TENANT_STORED_SQL}),
    fresh_d AS MATERIALIZED ({_DAY_OF.format(key=DAY_KEY_SQL, sums=_STATS_SUMS, rows="SELECT * FROM fresh")}),
    stored_d AS MATERIALIZED ({_DAY_STORED_SQL}),
    fresh_u AS MATERIALIZED ({DURATION_RECOMPUTE_SQL}),
    stored_u AS MATERIALIZED ({_DURATION_STORED_SQL})
    SELECT (SELECT count(*) FROM (SELECT * FROM stored EXCEPT ALL {_STATS_OF.format(rows="SELECT * FROM fresh")}) a)
         + (SELECT count(*) FROM ({_STATS_OF.format(rows="SELECT * FROM fresh")} EXCEPT ALL SELECT * FROM stored) b)
         + (SELECT count(*) FROM (SELECT * FROM stored_t EXCEPT ALL SELECT * FROM fresh_t) c)
         + (SELECT count(*) FROM (SELECT * FROM fresh_t EXCEPT ALL SELECT * FROM stored_t) d)
         + (SELECT count(*) FROM (SELECT * FROM stored_d EXCEPT ALL SELECT * FROM fresh_d) e)
         + (SELECT count(*) FROM (SELECT * FROM fresh_d EXCEPT ALL SELECT * FROM stored_d) f)
         + (SELECT count(*) FROM (SELECT * FROM stored_u EXCEPT ALL SELECT * FROM fresh_u) g)
         + (SELECT count(*) FROM (SELECT * FROM fresh_u EXCEPT ALL SELECT * FROM stored_u) h)
"""  # noqa: S608


async def lock_tenant(session: AsyncSession, tenant_id: int) -> None:
    """The exclusive side of ``hold_tenants``: no writer of this tenant runs until the transaction ends."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(tenant_id)})


async def drift(session: AsyncSession, tenant_id: int) -> int:
    """How many of the tenant's rows differ from what its records add up to (0: they agree). Run it
    after ``lock_tenant`` in the same transaction for an answer that writers cannot move."""
    return int((await session.execute(text(DRIFT_SQL), {"tenant_id": tenant_id})).scalar_one())


@dataclass(frozen=True, slots=True)
class RebuildReport:
    tenant_id: int
    records: int  # call records read
    rows: int  # aggregate rows written
    rows_before: int
    drifted: int  # rows that were missing, extra or different before the rebuild (0: they agreed)
    seconds: float
    tenant_rows: int = 0  # call_stats_tenant rows written
    tenant_drifted: int = 0  # call_stats_tenant rows missing, extra or different before the rebuild
    day_rows: int = 0  # call_stats_day rows written
    day_drifted: int = 0  # call_stats_day rows missing, extra or different before the rebuild
    duration_rows: int = 0  # call_stats_duration rows written
    duration_drifted: int = 0  # call_stats_duration rows missing, extra or different before the rebuild


_FRESH = "call_stats_rebuild"  # a temporary table, dropped at commit
_FRESH_DURATIONS = "call_stats_duration_rebuild"  # the same for call_stats_duration
_COLS = f"{', '.join(KEY)}, {', '.join(STATS_COLUMNS)}"  # call_stats's
_FRESH_COLS = f"{', '.join(KEY)}, {', '.join(COLUMNS)}"  # the temporary table's: every column
_ADD_BUCKETS = ", ".join(f"ADD COLUMN {c} bigint NOT NULL DEFAULT 0" for c in DURATION_COLUMNS)


async def _swap_in(
    session: AsyncSession,
    params: dict[str, int],
    table: str,
    columns: tuple[str, ...],
    fresh: str,
    fresh_rows: str,
    stored: str,
) -> tuple[int, int]:
    """Compare one rollup's ``stored`` rows with the ``fresh`` ones (both SELECTs), then replace the
    tenant's rows in ``table`` with the fresh ones. ``fresh_rows`` is what the fresh rows are counted
    FROM. Returns (rows written, rows that were missing, extra or different before)."""
    counts = (
        await session.execute(
            text(
                f"""SELECT (SELECT count(*) FROM {fresh_rows}),
                    (SELECT count(*) FROM ({stored} EXCEPT ALL {fresh}) a)
                    + (SELECT count(*) FROM ({fresh} EXCEPT ALL {stored}) b)"""  # noqa: S608
            ),
            params,
        )
    ).one()
    await session.execute(text(f"DELETE FROM {table} WHERE tenant_id = :tenant_id"), params)  # noqa: S608
    await session.execute(text(f"INSERT INTO {table} ({', '.join(columns)}) {fresh}"))
    rows, drifted = (int(v) for v in counts)
    return rows, drifted


async def rebuild_report(session: AsyncSession, tenant_id: int) -> RebuildReport:
    """Recompute one tenant's aggregates from its call records, in the caller's transaction, and say
    what changed.

    Takes the tenant's lock exclusively first (see ``hold_tenants``): a consumer writing at the same
    time waits for the rebuild instead of adding its delta to rows about to be replaced, and the
    rebuild reads the records only once every writer before it has committed. The records are read
    once (into a temporary table), then compared with the stored rows and swapped in."""
    started = time.perf_counter()
    await lock_tenant(session, tenant_id)
    params = {"tenant_id": tenant_id}
    await session.execute(text(f"CREATE TEMPORARY TABLE {_FRESH} (LIKE call_stats) ON COMMIT DROP"))
    await session.execute(text(f"ALTER TABLE {_FRESH} {_ADD_BUCKETS}"))
    await session.execute(text(f"INSERT INTO {_FRESH} ({_FRESH_COLS}) {RECOMPUTE_SQL}"), params)
    stored = f"SELECT {_COLS} FROM call_stats WHERE tenant_id = :tenant_id"  # noqa: S608
    fresh = f"SELECT {_COLS} FROM {_FRESH}"  # noqa: S608
    counts = (
        await session.execute(
            text(
                f"""SELECT (SELECT count(*) FROM call_stats WHERE tenant_id = :tenant_id),
                    (SELECT count(*) FROM {_FRESH}),
                    (SELECT COALESCE(sum(calls), 0) FROM {_FRESH}),
                    (SELECT count(*) FROM ({stored} EXCEPT ALL {fresh}) a)
                    + (SELECT count(*) FROM ({fresh} EXCEPT ALL {stored}) b)"""  # noqa: S608
            ),
            params,
        )
    ).one()
    await session.execute(text("DELETE FROM call_stats WHERE tenant_id = :tenant_id"), params)
    await session.execute(text(f"INSERT INTO call_stats ({_COLS}) {fresh}"))
    # call_stats_tenant: the fresh rows summed (the duration buckets too), compared with the stored
    # ones, swapped in.
    fresh_t = _TENANT_OF.format(key=TENANT_KEY_SQL, sums=_SUMS, rows=f"SELECT {_FRESH_COLS} FROM {_FRESH}")  # noqa: S608
    tenant_rows, tenant_drifted = await _swap_in(
        session,
        params,
        "call_stats_tenant",
        (*TENANT_KEY, *COLUMNS),
        fresh_t,
        f"({fresh_t}) n",
        _TENANT_STORED_SQL,
    )
    # call_stats_day: the fresh rows summed per UTC day over directions, the same way.
    fresh_d = _DAY_OF.format(key=DAY_KEY_SQL, sums=_STATS_SUMS, rows=f"SELECT {_COLS} FROM {_FRESH}")  # noqa: S608
    day_rows, day_drifted = await _swap_in(
        session,
        params,
        "call_stats_day",
        (*DAY_KEY, *STATS_COLUMNS),
        fresh_d,
        f"({fresh_d}) n",
        _DAY_STORED_SQL,
    )
    await session.execute(text(f"DROP TABLE {_FRESH}"))
    # call_stats_duration: recomputed from the records (a second read of them: the histogram's key is
    # not call_stats'), compared, swapped in.
    await session.execute(
        text(f"CREATE TEMPORARY TABLE {_FRESH_DURATIONS} ON COMMIT DROP AS {DURATION_RECOMPUTE_SQL}"), params
    )
    fresh_u = f"SELECT {', '.join(DURATION_KEY)}, calls FROM {_FRESH_DURATIONS}"  # noqa: S608
    duration_rows, duration_drifted = await _swap_in(
        session,
        params,
        "call_stats_duration",
        (*DURATION_KEY, "calls"),
        fresh_u,
        _FRESH_DURATIONS,
        _DURATION_STORED_SQL,
    )
    await session.execute(text(f"DROP TABLE {_FRESH_DURATIONS}"))
    rows_before, rows, records, drifted = (int(v) for v in counts)
    return RebuildReport(
        tenant_id,
        records,
        rows,
        rows_before,
        drifted,
        time.perf_counter() - started,
        tenant_rows,
        tenant_drifted,
        day_rows,
        day_drifted,
        duration_rows,
        duration_drifted,
    )


async def rebuild(session: AsyncSession, tenant_id: int) -> int:
    """Recompute one tenant's aggregates from its call records, in the caller's transaction (see
    ``rebuild_report``). Returns the rows written."""
    return (await rebuild_report(session, tenant_id)).rows


async def rebuild_tenants(engine: AsyncEngine, tenant_id: int | None = None) -> AsyncIterator[RebuildReport]:
    """Rebuild every tenant's aggregates (or one tenant's), each tenant in a transaction of its own so
    a consumer running meanwhile waits for one tenant at a time. Safe to run at any moment."""
    async with engine.connect() as conn:
        if tenant_id is None:
            ids = list((await conn.scalars(text("SELECT id FROM tenants ORDER BY id"))).all())
        else:
            ids = list(
                (await conn.scalars(text("SELECT id FROM tenants WHERE id = :id"), {"id": tenant_id})).all()
            )
    for one in ids:
        async with AsyncSession(engine) as session, session.begin():
            yield await rebuild_report(session, int(one))
