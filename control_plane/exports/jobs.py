"""The export job table's state changes, as SQL in one place.

A worker claims the oldest claimable job with ``FOR UPDATE SKIP LOCKED`` (replicas never take the same
one) and holds it by a lease it renews; a job whose lease ran out (its control plane died or hung) is
claimable again, and its attempt count says how often it was tried. Every later change is guarded by
the lease owner, so a worker that lost its job can change nothing. Index: ``ix_export_jobs_pending``
(partial, queued and running jobs only); expiry reads ``ix_export_jobs_done_expires``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.db.models import ExportJob

CLAIM = text("""
UPDATE export_jobs
   SET status = 'running', lease_owner = :owner, attempts = attempts + 1,
       lease_expires_at = now() + make_interval(secs => :lease_s),
       started_at = now(), updated_at = now(), error = NULL
 WHERE id = (SELECT id FROM export_jobs
              WHERE status IN ('queued', 'running')  -- the partial index's predicate
                AND (status = 'queued' OR lease_expires_at < now())
              ORDER BY id
              LIMIT 1
                FOR UPDATE SKIP LOCKED)
RETURNING id
""")

RENEW = text("""
UPDATE export_jobs SET lease_expires_at = now() + make_interval(secs => :lease_s)
 WHERE id = :id AND lease_owner = :owner AND status = 'running'
""")

FINISH = text("""
UPDATE export_jobs
   SET status = 'done', rows = :rows, bytes = :bytes, object_name = :object_name,
       finished_at = now(), expires_at = now() + make_interval(secs => :ttl_s),
       lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
 WHERE id = :id AND lease_owner = :owner AND status = 'running'
""")

# A failed attempt: queued again while attempts remain, failed for good after that.
FAIL = text("""
UPDATE export_jobs
   SET status = CASE WHEN attempts < :max_attempts THEN 'queued' ELSE 'failed' END,
       finished_at = CASE WHEN attempts < :max_attempts THEN NULL ELSE now() END,
       error = :error, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
 WHERE id = :id AND lease_owner = :owner AND status = 'running'
""")

GIVE_UP = text("""
UPDATE export_jobs
   SET status = 'failed', finished_at = now(), lease_owner = NULL, lease_expires_at = NULL,
       error = :error, updated_at = now()
 WHERE id = :id AND lease_owner = :owner
""")

# A worker that is stopping gives its job back: queued again at once, the attempt not counted.
RELEASE = text("""
UPDATE export_jobs
   SET status = 'queued', attempts = greatest(attempts - 1, 0), lease_owner = NULL,
       lease_expires_at = NULL, started_at = NULL, updated_at = now()
 WHERE id = :id AND lease_owner = :owner AND status = 'running'
""")

EXPIRED = text("""
SELECT id, object_name FROM export_jobs
 WHERE status = 'done' AND expires_at <= now()
 ORDER BY expires_at
 LIMIT :limit
   FOR UPDATE SKIP LOCKED
""")

MARK_EXPIRED = text("""
UPDATE export_jobs SET status = 'expired', object_name = NULL, updated_at = now() WHERE id = :id
""")


async def claim(conn: AsyncConnection, owner: str, lease_s: float) -> int | None:
    return (await conn.execute(CLAIM, {"owner": owner, "lease_s": lease_s})).scalar_one_or_none()


async def load(conn: AsyncConnection, job_id: int) -> ExportJob:
    row: Any = (
        await conn.execute(ExportJob.__table__.select().where(ExportJob.__table__.c.id == job_id))
    ).one()
    return ExportJob(**row._asdict())


async def renew(conn: AsyncConnection, job_id: int, owner: str, lease_s: float) -> bool:
    result: Any = await conn.execute(RENEW, {"id": job_id, "owner": owner, "lease_s": lease_s})
    return bool(result.rowcount)


async def finish(
    conn: AsyncConnection, job_id: int, owner: str, *, rows: int, size: int, object_name: str, ttl_s: float
) -> bool:
    result: Any = await conn.execute(
        FINISH,
        {
            "id": job_id,
            "owner": owner,
            "rows": rows,
            "bytes": size,
            "object_name": object_name,
            "ttl_s": ttl_s,
        },
    )
    return bool(result.rowcount)


async def fail(conn: AsyncConnection, job_id: int, owner: str, error: str, max_attempts: int) -> None:
    await conn.execute(
        FAIL, {"id": job_id, "owner": owner, "error": error[:2000], "max_attempts": max_attempts}
    )


async def give_up(conn: AsyncConnection, job_id: int, owner: str, error: str) -> None:
    await conn.execute(GIVE_UP, {"id": job_id, "owner": owner, "error": error})


async def release(conn: AsyncConnection, job_id: int, owner: str) -> None:
    await conn.execute(RELEASE, {"id": job_id, "owner": owner})


async def expired(conn: AsyncConnection, limit: int) -> list[tuple[int, str | None]]:
    return [(int(i), n) for i, n in (await conn.execute(EXPIRED, {"limit": limit})).all()]


async def mark_expired(conn: AsyncConnection, job_id: int) -> None:
    await conn.execute(MARK_EXPIRED, {"id": job_id})
