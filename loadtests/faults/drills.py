"""Fault drills: whole calls through a private system (loadtests/faults/rig.py: its own PostgreSQL,
Redis and NATS on free 127.0.0.1 ports, one control plane, two engine replicas behind a client that
round-robins and retries on the other replica as Cloudonix would) while one fault is played:

    engine-kill         kill -9 one engine replica mid-load; it is started again 3 s later
    redis-restart       Redis stopped (SHUTDOWN SAVE: it reloads its data) and started
                        again; calls are answered from the replicas' local views meanwhile, and
                        merged back into Redis when it returns (no over-admission, no leak)
    nats-stop           NATS stopped for 30 s: engines keep their last snapshot and buffer events
    control-plane-kill  kill -9 the control plane while its consumer holds a fetched, unacked batch
    pg-disk-full        PostgreSQL's data folder (a 256 MB tmpfs, root only) filled to its limit: the
                        consumer stops acking; space freed: it resumes

Each prints what it sent, what was answered, what was recorded (the database) and what was lost (must
be 0) and exits non-zero when a check fails.

    .venv/bin/python -m loadtests.faults.drills MODE [MODE ...] [--short] [--keep]
    .venv/bin/python -m loadtests.faults.drills all
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
from nats.js.api import ConsumerInfo

from loadtests.faults.rig import DURABLE, KILLED_BUFFER_S, STREAM, Driver, Rig, Summary, kill_9, rig

PG_FS_SIZE = "256m"


def _log_events(r: Rig, name: str, event: str) -> list[dict[str, object]]:
    out = []
    path = r.root / "logs" / f"{name}.log"
    if not path.is_file():
        return out
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


async def _timeline(driver: Driver, script: Callable[[], Awaitable[None]]) -> float:
    """Drive calls until ``script`` (the fault) is over; returns how long it took."""
    done = False

    async def fault() -> None:
        nonlocal done
        try:
            await script()
        finally:
            done = True

    started = time.monotonic()
    task = asyncio.create_task(fault())
    await driver.drive(until=lambda: done)
    await task
    return time.monotonic() - started


# -- the drills ----------------------------------------------------------------------------------------


async def engine_kill(r: Rig, short: bool) -> Summary:
    driver = Driver(r, concurrency=8, hold_s=(0.05, 0.3))
    lines: list[str] = []
    killed_at: list[float] = []

    async def fault() -> None:
        await asyncio.sleep(2.0 if short else 8.0)
        engine = r.engines[0]
        assert engine is not None
        at = driver.sent
        kill_9(engine)  # the load balancer notices only on its next probe: calls still reach it
        t0 = time.monotonic()
        killed_at.append(t0)
        await asyncio.sleep(1.0)
        driver.out.add(0)  # the probe failed: out of rotation
        await asyncio.sleep(2.0)
        await r.in_spawner(lambda: r.start_engine(0))  # ready = snapshots loaded
        driver.out.discard(0)
        lines.append(
            f"killed      engine-0 (kill -9, master and worker) at call {at}; started again and ready"
            f" {time.monotonic() - t0:.1f} s later"
        )
        await asyncio.sleep(2.0 if short else 8.0)

    took = await _timeline(driver, fault)
    recorded = await r.wait_recorded(driver.answered + [t for t, _ in driver.failed], 60.0)
    lines.insert(0, f"drove       {took:.1f} s")
    summary = Summary("engine-kill", driver, recorded, lines)
    summary.in_killed_buffer = [
        token
        for token in recorded.missing
        if any(
            replica == 0 and killed_at[0] - KILLED_BUFFER_S <= at <= killed_at[0]
            for replica, at in driver.answers.get(token, [])
        )
    ]
    return summary


async def redis_restart(r: Rig, short: bool) -> Summary:
    # More calls in flight than the two agents' 10 slots, so capacity is what decides.
    # Holds long enough that calls admitted during the outage are still live when Redis is back.
    driver = Driver(r, concurrency=16, hold_s=(1.0, 5.0))
    lines: list[str] = []
    outage_s = 3.0 if short else 15.0

    async def fault() -> None:
        await asyncio.sleep(3.0 if short else 8.0)
        driver.strict = False
        at = driver.sent
        await r.in_spawner(r.stop_redis)
        t0 = time.monotonic()
        await asyncio.sleep(outage_s)
        await r.in_spawner(r.start_redis)
        lines.append(
            f"Redis       stopped at call {at} for {time.monotonic() - t0:.1f} s (SHUTDOWN SAVE: its data"
            f" reloaded at start), calls {at}..{driver.sent} answered meanwhile"
        )
        # Each replica tries Redis again after its 1 s pause and merges before its next decision.
        await asyncio.sleep(1.5)
        driver.strict = True
        await asyncio.sleep(4.0 if short else 12.0)

    took = await _timeline(driver, fault)
    recorded = await r.wait_recorded(driver.answered + [t for t, _ in driver.failed], 60.0)
    await asyncio.sleep(1.0)  # the last CDRs' releases
    slots = await asyncio.to_thread(r.live_slots)
    merged = [e for i in range(2) for e in _log_events(r, f"engine-{i}", "balancer_reconciled")]
    degraded = sum(1 for i in range(2) for _ in _log_events(r, f"engine-{i}", "balancer_degraded"))
    lines.insert(0, f"drove       {took:.1f} s")
    lines.append(
        f"merged      {sum(int(str(e.get('calls', 0))) for e in merged)} calls decided or ended during"
        f" the outage, in {len(merged)} merges (slots taken"
        f" {sum(int(str(e.get('slots_taken', 0))) for e in merged)}, freed"
        f" {sum(int(str(e.get('slots_freed', 0))) for e in merged)}); {degraded} replica(s) went degraded"
    )
    lines.append(f"slots       left in Redis after every call ended: {sum(slots.values())} {slots or ''}")
    checks = {"no slot leaked": sum(slots.values()) == 0, "degraded decisions merged": bool(merged)}
    return Summary("redis-restart", driver, recorded, lines, checks)


async def nats_stop(r: Rig, short: bool) -> Summary:
    driver = Driver(r, concurrency=6, hold_s=(0.1, 0.5))
    lines: list[str] = []
    outage_s = 5.0 if short else 30.0
    during: list[int] = []

    async def fault() -> None:
        await asyncio.sleep(2.0 if short else 5.0)
        at = driver.sent
        answered_at = len(driver.answered)
        await r.in_spawner(r.stop_nats)
        t0 = time.monotonic()
        await asyncio.sleep(outage_s)
        during.append(len(driver.answered) - answered_at)
        await r.in_spawner(r.start_nats)  # same port, same data folder: the stream survives
        lines.append(
            f"NATS        stopped at call {at} for {time.monotonic() - t0:.1f} s; {during[0]} whole calls"
            " answered meanwhile (snapshots kept, events buffered)"
        )
        await asyncio.sleep(3.0 if short else 10.0)

    took = await _timeline(driver, fault)
    t0 = time.monotonic()
    recorded = await r.wait_recorded(driver.answered + [t for t, _ in driver.failed], 90.0)
    lines.insert(0, f"drove       {took:.1f} s")
    lines.append(f"caught up   {time.monotonic() - t0:.1f} s after the last call")
    return Summary("nats-stop", driver, recorded, lines, {"calls answered during the outage": during[0] > 0})


async def control_plane_kill(r: Rig, short: bool) -> Summary:
    driver = Driver(r, concurrency=10, hold_s=(0.0, 0.1))
    lines: list[str] = []
    caught: list[ConsumerInfo] = []

    async def fault() -> None:
        await asyncio.sleep(1.0 if short else 5.0)
        nc = await nats.connect(r.nats_url, connect_timeout=2)
        js = nc.jetstream(timeout=1.0)
        cp = r.control_plane
        assert cp is not None
        try:
            deadline = time.monotonic() + 20.0
            while time.monotonic() < deadline:  # wait for a fetched batch not yet acknowledged
                info = await js.consumer_info(STREAM, DURABLE)
                if info.num_ack_pending > 0:
                    kill_9(cp)
                    caught.append(info)
                    break
                await asyncio.sleep(0.005)
            else:
                kill_9(cp)
        finally:
            await nc.close()
        at = driver.sent
        t0 = time.monotonic()
        await asyncio.sleep(2.0)
        await r.in_spawner(r.start_control_plane)
        unacked = caught[0].num_ack_pending if caught else 0
        lines.append(
            f"killed      the control plane (kill -9) at call {at} with {unacked} fetched, unacked"
            f" message(s) in its consumer; started again, ready {time.monotonic() - t0:.1f} s later"
        )
        await asyncio.sleep(2.0 if short else 8.0)

    took = await _timeline(driver, fault)
    recorded = await r.wait_recorded(driver.answered + [t for t, _ in driver.failed], 60.0)
    lines.insert(0, f"drove       {took:.1f} s")
    return Summary(
        "control-plane-kill", driver, recorded, lines, {"killed in the middle of a batch": bool(caught)}
    )


def _mount_tmpfs(root: Path) -> Path:
    where = root / "pgfs"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={PG_FS_SIZE}", "tmpfs", str(where)], check=True)
    return where


def _fill(where: Path) -> int:
    """Write zeros into ``where`` until the filesystem is full (to the last 4 KB); returns the bytes
    written."""
    written = 0
    fd = os.open(where / "filler", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096):
            chunk = b"\0" * size
            with contextlib.suppress(OSError):
                while True:
                    written += os.write(fd, chunk)
    finally:
        os.close(fd)
    return written


async def pg_disk_full(r: Rig, short: bool) -> Summary:
    driver = Driver(r, concurrency=6, hold_s=(0.1, 0.4))
    lines: list[str] = []
    full_s = 5.0 if short else 20.0
    stalled: list[bool] = []

    async def fault() -> None:
        await asyncio.sleep(2.0 if short else 5.0)
        at = driver.sent
        written = await asyncio.to_thread(_fill, r.pg_root)
        t0 = time.monotonic()
        await asyncio.sleep(full_s)
        info = await r.consumer()
        pending = (info.num_pending + info.num_ack_pending) if info else -1
        stalled.append(pending > 0)
        (r.pg_root / "filler").unlink()
        lines.append(
            f"disk        filled at call {at} ({written // (1 << 20)} MB of zeros, the {PG_FS_SIZE}"
            f" filesystem full) for {time.monotonic() - t0:.1f} s; {pending} message(s) waiting in the"
            " consumer at the end (not acked)"
        )
        if r.postgres is not None and r.postgres.running():
            lines.append("postgres    kept running through the fill (inserts failed with DiskFull)")
        else:
            # A WAL write that finds no space is a PANIC: PostgreSQL stops, and its own restart fails
            # while the disk is full. Started again as a service manager would once space is back.
            log = r.postgres.log_path.read_text(errors="replace") if r.postgres else ""
            panic = [line for line in log.splitlines() if "PANIC" in line][:1]
            await r.in_spawner(r.start_postgres)
            lines.append(
                "postgres    went down while full ("
                + (panic[0].strip()[:160] if panic else "no PANIC logged")
                + "); started again once space was back"
            )
        await asyncio.sleep(3.0 if short else 10.0)

    took = await _timeline(driver, fault)
    t0 = time.monotonic()
    recorded = await r.wait_recorded(driver.answered + [t for t, _ in driver.failed], 90.0)
    lines.insert(0, f"drove       {took:.1f} s")
    lines.append(f"caught up   {time.monotonic() - t0:.1f} s after the last call")
    return Summary(
        "pg-disk-full", driver, recorded, lines, {"consumer stopped acking while full": stalled == [True]}
    )


DRILLS: dict[str, Callable[[Rig, bool], Awaitable[Summary]]] = {
    "engine-kill": engine_kill,
    "redis-restart": redis_restart,
    "nats-stop": nats_stop,
    "control-plane-kill": control_plane_kill,
    "pg-disk-full": pg_disk_full,
}


def run_drills(names: list[str], *, short: bool = False, keep: bool = False) -> list[Summary]:
    """The drills one after the other on one fresh private system (its PostgreSQL on a small tmpfs
    when the disk drill is among them), stopped and removed afterwards."""
    mounted: list[Path] = []

    def pg_root(root: Path) -> Path:
        where = _mount_tmpfs(root)
        mounted.append(where)
        return where

    summaries: list[Summary] = []
    try:
        with rig(keep=keep, pg_root=pg_root if "pg-disk-full" in names else None) as r:
            print(f"system ready in {r.started_s:.1f} s ({r.root})", flush=True)
            for name in names:
                summary = asyncio.run(DRILLS[name](r, short))
                print(summary.render(), flush=True)
                summaries.append(summary)
    finally:
        for where in mounted:
            subprocess.run(["umount", "-l", str(where)], check=False)
            if not keep:  # the drill folder, which still held the mount point when it was removed
                shutil.rmtree(where.parent, ignore_errors=True)
    return summaries


def tmpfs_allowed() -> bool:
    """Whether this process may mount a tmpfs (root, and a kernel that lets it)."""
    return os.geteuid() == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("modes", nargs="+", choices=[*DRILLS, "all"])
    parser.add_argument("--short", action="store_true", help="the CI form: few calls, short outages")
    parser.add_argument("--keep", action="store_true", help="keep the drill folder (logs) afterwards")
    args = parser.parse_args(argv)
    modes = list(DRILLS) if "all" in args.modes else args.modes
    summaries = run_drills(modes, short=args.short, keep=args.keep)
    return 0 if all(s.ok for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
