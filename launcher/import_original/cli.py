"""``vlb import-original``: bring a tenant's configuration across from the original Laravel system.

    vlb import-original --from https://old.example.com --token 12|abc... \\
        --email admin@example.com [--tenant 7] [--our-url http://127.0.0.1:8000] [--dry-run]

The original is read with an API token of its tenant (``--token`` or ``VLB_ORIGINAL_TOKEN``). This
project is written through its REST API as an admin of the target tenant: ``--email`` logs in (password
from ``VLB_IMPORT_PASSWORD`` or a prompt), or ``--our-token`` (``VLB_IMPORT_TOKEN``) is used as is;
``--tenant`` makes sure that admin's tenant is the one meant. See docs/migrating.md.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

import httpx

from launcher.import_original.http import ImportFailure, JsonApi
from launcher.import_original.importer import (
    Plan,
    apply_plan,
    make_plan,
    print_plan,
    read_original,
    read_ours,
)

TIMEOUT_S = 30.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlb import-original",
        description="Import a tenant's agents, groups, members, inbound rules and domain from the original "
        "system, converting its semantics (see docs/migrating.md).",
    )
    parser.add_argument(
        "--from", dest="source", required=True, metavar="URL", help="the original system's base URL"
    )
    parser.add_argument(
        "--token", default=os.environ.get("VLB_ORIGINAL_TOKEN"), help="its API token (VLB_ORIGINAL_TOKEN)"
    )
    parser.add_argument(
        "--our-url",
        default=os.environ.get("VLB_IMPORT_URL", "http://127.0.0.1:8000"),
        help="this project's control plane (VLB_IMPORT_URL; default http://127.0.0.1:8000)",
    )
    who = parser.add_mutually_exclusive_group()
    who.add_argument(
        "--email", help="log in here as this tenant admin (password: VLB_IMPORT_PASSWORD or prompt)"
    )
    who.add_argument(
        "--our-token",
        default=os.environ.get("VLB_IMPORT_TOKEN"),
        help="an admin token here (VLB_IMPORT_TOKEN)",
    )
    parser.add_argument("--tenant", type=int, help="refuse to run unless the admin belongs to this tenant id")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    return parser


async def run_import(
    original_client: httpx.AsyncClient,
    our_client: httpx.AsyncClient,
    *,
    original_token: str,
    our_token: str,
    tenant_id: int | None = None,
    dry_run: bool = False,
    out: TextIO = sys.stdout,
    progress: Callable[[str], None] | None = None,
    backoff_s: float = 0.5,
) -> Plan:
    """Read both sides, plan, print the plan, and write it unless ``dry_run``. Raises ImportFailure."""
    say = progress or (lambda _line: None)
    original = JsonApi(
        original_client, label="the original system", token=original_token, backoff_s=backoff_s, progress=say
    )
    ours = JsonApi(our_client, label="this control plane", token=our_token, backoff_s=backoff_s, progress=say)
    say("reading the original system")
    source = await read_original(original)
    say("reading this control plane")
    here = await read_ours(ours, tenant_id)
    plan = make_plan(source, here)
    print_plan(plan, out, dry_run=dry_run)
    if dry_run or not plan.changes:
        return plan
    await apply_plan(plan, ours, out, say)
    out.write(f"done: {plan.changes} object(s) written; run again to check (it should plan no changes)\n")
    return plan


async def _login(client: httpx.AsyncClient, email: str) -> str:
    password = os.environ.get("VLB_IMPORT_PASSWORD") or getpass.getpass(f"password for {email} here: ")
    try:
        response = await client.post("/api/login", json={"email": email, "password": password})
    except httpx.TransportError as exc:
        raise ImportFailure(f"cannot reach this control plane at {client.base_url}: {exc}") from exc
    if response.status_code != 200:
        raise ImportFailure(
            f"login as {email} here failed ({response.status_code}); check the email and password"
        )
    return str(response.json()["token"])


def _progress(line: str) -> None:
    sys.stderr.write(f"import-original: {line}\n")
    sys.stderr.flush()


async def _main(args: argparse.Namespace) -> int:
    if not args.token:
        raise ImportFailure("no token for the original system: pass --token or set VLB_ORIGINAL_TOKEN")
    timeout = httpx.Timeout(TIMEOUT_S)
    async with (
        httpx.AsyncClient(base_url=args.source.rstrip("/"), timeout=timeout) as original_client,
        httpx.AsyncClient(base_url=args.our_url.rstrip("/"), timeout=timeout) as our_client,
    ):
        if args.email:
            our_token = await _login(our_client, args.email)
        elif args.our_token:
            our_token = args.our_token
        else:
            raise ImportFailure("say who imports here: --email (an admin of the tenant) or --our-token")
        await run_import(
            original_client,
            our_client,
            original_token=args.token,
            our_token=our_token,
            tenant_id=args.tenant,
            dry_run=args.dry_run,
            progress=_progress,
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except ImportFailure as exc:
        sys.stderr.write(f"import-original: error: {exc}\n")
        return 2
