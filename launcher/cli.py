"""``vlb``: run the whole system on one machine, or one part of it.

``vlb run`` uses PostgreSQL, Redis and NATS where they answer and starts local ones where they do not,
migrates, seeds a demo tenant into an empty database, starts both planes and prints how to reach them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Sequence

import structlog

from launcher import demo, planes
from launcher.keys import load_or_create_keys
from launcher.postgres import ensure_database
from launcher.process import ChildProcess, StartError, stop_all
from launcher.services import LocalServices, ServiceUrls, redact
from launcher.settings import LauncherSettings, get_launcher_settings
from launcher.supervise import Plane, Supervisor
from shared.logging import configure_logging

log = structlog.get_logger("launcher.cli")

# Libraries whose INFO lines are noise in a launcher's output (every health poll, every Alembic plugin).
QUIET_LOGGERS = {
    "httpx": logging.WARNING,
    "alembic": logging.WARNING,
    "alembic.runtime.migration": logging.INFO,
}


def wanted_urls(settings: LauncherSettings) -> ServiceUrls:
    return ServiceUrls(settings.database_url, settings.redis_url, settings.nats_url)


def _print_banner(
    settings: LauncherSettings,
    urls: ServiceUrls,
    started: set[str],
    engine: bool,
    demo_login: dict[str, str] | None,
) -> None:
    def origin(name: str) -> str:
        return "started locally" if name in started else "already running"

    control_plane = planes.base_url(settings.host, settings.port)
    lines = [
        "",
        "voice-lb is running",
        f"  control plane   {control_plane}   (API docs {control_plane}/schema)",
        f"  dashboard       {control_plane}/",
        (
            f"  routing engine  {planes.base_url(settings.engine_host, settings.engine_port)}"
            if engine
            else "  routing engine  not started (routing_engine.app is not there yet)"
        ),
        f"  PostgreSQL      {redact(urls.database_url)}   ({origin('postgres')})",
        (
            f"  Redis Cluster   {settings.redis_cluster_nodes}   (already running)"
            if settings.redis_cluster_nodes
            else f"  Redis           {redact(urls.redis_url)}   ({origin('redis')})"
        ),
        f"  NATS            {redact(urls.nats_url)}   ({origin('nats')})",
    ]
    if demo_login:
        lines.append("  demo tenant:")
        lines += [f"    {key:<14}{value}" for key, value in demo_login.items()]
    else:
        lines.append("  demo tenant     none known (see the log above)")
    lines += [f"  logs            {settings.data_path / 'logs'}", "  stop with Ctrl-C", ""]
    print("\n".join(lines), flush=True)


def cmd_run(settings: LauncherSettings) -> int:
    keys = load_or_create_keys(settings.data_path, os.environ)
    children: list[ChildProcess] = []
    supervisor: Supervisor | None = None
    with LocalServices(settings.data_path, wanted_urls(settings), settings.redis_cluster_nodes) as services:
        urls = services.urls
        try:
            demo.migrate(urls.database_url)
            demo_login = demo.seed_if_empty(urls.database_url, settings.data_path)
            env = planes.plane_env(settings, urls, keys, os.environ)
            control_plane = planes.start_control_plane(settings, env)
            children.append(control_plane)
            supervised = [
                Plane(
                    "control-plane",
                    spawn=lambda: planes.spawn_control_plane(settings, env),
                    healthy=lambda: planes.control_plane_healthy(settings),
                    child=control_plane,
                )
            ]
            engine = planes.engine_available()
            if engine:
                engine_child = planes.start_engine(settings, env)
                children.append(engine_child)
                supervised.append(
                    Plane(
                        "engine",
                        spawn=lambda: planes.spawn_engine(settings, env),
                        healthy=lambda: planes.engine_healthy(settings),
                        child=engine_child,
                    )
                )
            else:
                log.warning("engine.skipped", reason="routing_engine.app does not exist yet")
            _print_banner(settings, urls, {c.name for c in services.started}, engine, demo_login)
            supervisor = Supervisor(supervised)
            supervisor.run()
            return 0  # not reached: only a signal (Ctrl-C, SIGTERM) ends the supervision
        finally:
            # A restarted plane runs a new process: stop what each one runs now, newest first.
            stop_all(supervisor.children() if supervisor is not None else children)


def cmd_services(settings: LauncherSettings) -> int:
    with LocalServices(settings.data_path, wanted_urls(settings), settings.redis_cluster_nodes) as services:
        for name, value in services.urls.as_env().items():
            print(f"export {name}={value}", flush=True)
        print("# services are up; Ctrl-C stops the ones started here", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)


def cmd_migrate(settings: LauncherSettings) -> int:
    ensure_database(settings.database_url)
    demo.migrate(settings.database_url)
    return 0


def cmd_seed_demo(settings: LauncherSettings) -> int:
    settings.data_path.mkdir(parents=True, exist_ok=True)
    login = demo.seed_if_empty(settings.database_url, settings.data_path)
    for key, value in (login or {}).items():
        print(f"{key}: {value}")
    return 0


def cmd_control_plane(settings: LauncherSettings) -> int:
    planes.exec_granian(planes.control_plane_argv(settings), os.environ)
    return 0  # not reached: exec replaces this process


def cmd_engine(settings: LauncherSettings) -> int:
    if not planes.engine_available():
        log.error("engine.missing", reason="routing_engine.app does not exist yet")
        return 1
    planes.exec_granian(planes.engine_argv(settings), planes.engine_env(settings, os.environ))
    return 0


def cmd_rebuild_aggregates(settings: LauncherSettings, tenant_id: int | None = None) -> int:
    """Recompute the analytics aggregates (call_stats) from the call records, tenant by tenant; safe
    while control planes run (each tenant's consumer writes wait for its rebuild)."""
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    from control_plane.analytics.aggregates import rebuild_tenants

    async def run() -> int:
        engine = create_async_engine(settings.database_url)
        done = 0
        try:
            async for report in rebuild_tenants(engine, tenant_id):
                done += 1
                print(
                    f"tenant {report.tenant_id}: {report.records} call records -> {report.rows} aggregate rows "
                    f"({report.rows_before} before, {report.drifted} differed); per tenant hour "
                    f"{report.tenant_rows} ({report.tenant_drifted} differed), per day "
                    f"{report.day_rows} ({report.day_drifted} differed), per duration second "
                    f"{report.duration_rows} ({report.duration_drifted} differed) in {report.seconds:.2f} s",
                    flush=True,
                )
        finally:
            await engine.dispose()
        if tenant_id is not None and not done:
            print(f"no tenant {tenant_id}", file=sys.stderr)
            return 1
        print(f"rebuilt the aggregates of {done} tenant(s)", flush=True)
        return 0

    return asyncio.run(run())


def cmd_purge(settings: LauncherSettings, tenant_id: int | None = None, dry_run: bool = False) -> int:
    """Apply the tenants' retention now (or, dry, count what it would remove), printing per tenant and
    kind; waits for no one: when another purge runs (a control plane's daily one), it does nothing."""
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    from control_plane.retention.purge import KINDS, PurgeReport
    from control_plane.retention.runs import run_purge
    from control_plane.retention.scheduler import purger_for
    from control_plane.settings import ControlPlaneSettings
    from shared.settings import load_settings

    def show(report: PurgeReport) -> None:
        verb = "would remove" if report.dry_run else "removed"
        for tenant in report.tenants:
            days = tenant.retention
            counts = ", ".join(f"{kind} {tenant.removed[kind]}" for kind in KINDS)
            print(
                f"tenant {tenant.tenant_id} (keeps call records {days.call_records} d, cdrs {days.cdrs} d, "
                f"webhook audit {days.webhook_audit} d): {verb} {counts}",
                flush=True,
            )
        totals = ", ".join(f"{kind} {n}" for kind, n in report.totals().items())
        line = f"{len(report.tenants)} tenant(s): {verb} {totals} in {report.seconds:.2f} s"
        if not report.dry_run:
            line += (
                f" ({report.batches} transactions, longest {report.longest_transaction_s * 1000:.0f} ms, "
                f"{report.rows_per_second():.0f} rows/s)"
            )
        print(line, flush=True)

    async def run() -> int:
        engine = create_async_engine(settings.database_url, pool_size=2, max_overflow=0)
        try:
            purger = purger_for(engine, load_settings(ControlPlaneSettings))
            if dry_run:
                report = await purger.run(tenant_id=tenant_id, dry_run=True)
            else:
                outcome = await run_purge(engine, purger, tenant_id=tenant_id)
                if outcome.report is None:
                    print(
                        "another purge is running (a control plane's daily one?); nothing done",
                        file=sys.stderr,
                    )
                    return 1
                report = outcome.report
        finally:
            await engine.dispose()
        if tenant_id is not None and not report.tenants:
            print(f"no tenant {tenant_id}", file=sys.stderr)
            return 1
        show(report)
        return 0

    return asyncio.run(run())


def demo_argv(settings: LauncherSettings, extra: Sequence[str], url_flag: str) -> list[str]:
    """``extra`` with the defaults a traffic command lacks: the local engine (as ``url_flag``) and the
    demo domain and key saved by ``vlb run``."""
    argv = list(extra)
    demo_login = demo.read_saved(settings.data_path) or {}
    defaults = {
        url_flag: f"http://{settings.engine_host}:{settings.engine_port}",
        "--domain": demo_login.get("domain"),
        "--key": demo_login.get("webhook_key"),
    }
    for flag, value in defaults.items():
        if value and not any(a == flag or a.startswith(flag + "=") for a in argv):
            argv += [flag, value]
    return argv


def simulate_argv(settings: LauncherSettings, extra: Sequence[str]) -> list[str]:
    """``vlb simulate`` defaults: the local engine and the demo domain and key saved by ``vlb run``."""
    return demo_argv(settings, extra, "--url")


def cmd_simulate(settings: LauncherSettings, extra: Sequence[str] = ()) -> int:
    from routing_engine.simulate import main as simulate_main

    return simulate_main(simulate_argv(settings, extra))


def cmd_import_original(settings: LauncherSettings, extra: Sequence[str] = ()) -> int:
    from launcher.import_original.cli import main as import_main

    return import_main(list(extra))


def loadgen_argv(settings: LauncherSettings, extra: Sequence[str]) -> list[str]:
    """``vlb loadgen`` defaults: the local engine and the demo saved by ``vlb run``."""
    return demo_argv(settings, extra, "--engine")


def cmd_loadgen(settings: LauncherSettings, extra: Sequence[str] = ()) -> int:
    from loadtests.loadgen import main as loadgen_main

    return loadgen_main(loadgen_argv(settings, extra))


COMMANDS = {
    "run": (cmd_run, "start everything (local services as needed), migrate, seed a demo, serve"),
    "services": (cmd_services, "ensure PostgreSQL/Redis/NATS, print their URLs, keep them up"),
    "migrate": (cmd_migrate, "create the database if missing and apply migrations"),
    "seed-demo": (cmd_seed_demo, "create the demo tenant when the database has none"),
    "control-plane": (cmd_control_plane, "serve the control plane (granian, foreground)"),
    "engine": (cmd_engine, "serve the routing engine (granian, uvloop, foreground)"),
    "simulate": (cmd_simulate, "send a Cloudonix-shaped inbound call to the engine and print the CXML"),
    "rebuild-aggregates": (
        cmd_rebuild_aggregates,
        "recompute the analytics aggregates from the call records (all tenants, or --tenant ID)",
    ),
    "import-original": (cmd_import_original, "import a tenant's configuration from the original system"),
    "purge": (
        cmd_purge,
        "delete what the tenants' retention no longer keeps (all tenants, or --tenant ID; --dry-run counts)",
    ),
    "loadgen": (cmd_loadgen, "drive whole calls against engines at a set rate and summarise them"),
}

# Commands that parse their own arguments (and --help).
PASS_THROUGH = {"simulate": cmd_simulate, "import-original": cmd_import_original, "loadgen": cmd_loadgen}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (_func, help_text) in COMMANDS.items():
        # PASS_THROUGH commands parse their own arguments (and --help).
        command = sub.add_parser(
            name, help=help_text, description=help_text, add_help=name not in PASS_THROUGH
        )
        if name == "rebuild-aggregates":
            command.add_argument("--tenant", type=int, metavar="ID", help="only this tenant")
        if name == "purge":
            command.add_argument("--tenant", type=int, metavar="ID", help="only this tenant")
            command.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    if extra and args.command not in PASS_THROUGH:
        build_parser().error(f"unrecognized arguments: {' '.join(extra)}")
    settings = get_launcher_settings()
    configure_logging(settings.log_format, settings.log_level)
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    func, _help = COMMANDS[args.command]
    try:
        if args.command in PASS_THROUGH:
            return PASS_THROUGH[args.command](settings, extra)
        if args.command == "rebuild-aggregates":
            return cmd_rebuild_aggregates(settings, args.tenant)
        if args.command == "purge":
            return cmd_purge(settings, args.tenant, args.dry_run)
        return func(settings)
    except KeyboardInterrupt:
        log.info("stopped", reason="interrupt")
        return 0
    except SystemExit as exc:
        if isinstance(exc.code, int) and exc.code > 128:  # a termination signal (see launcher.process)
            log.info("stopped", reason=f"signal {exc.code - 128}")
            return 0
        raise
    except StartError as exc:
        log.error("start.failed", error=str(exc))
        return 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
