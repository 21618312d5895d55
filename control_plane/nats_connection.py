"""The control plane's NATS connections: bounded connect, endless reconnects, errors counted by the
caller. Shared by the snapshot publisher and the events consumer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NATS


async def connect_nats(
    url: str | list[str], *, name: str, timeout_s: float, error_cb: Callable[[Any], Awaitable[None]]
) -> NATS:
    """Connect within ``2 * timeout_s`` (with NATS away the caller's round fails fast and is retried,
    never blocking anything else); once connected, nats-py reconnects on its own."""
    nc = NATS()
    try:
        await asyncio.wait_for(
            nc.connect(
                url,
                connect_timeout=max(1, int(timeout_s)),
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                error_cb=error_cb,
                name=name,
            ),
            timeout=timeout_s * 2,
        )
    except BaseException:
        with contextlib.suppress(Exception):  # a half-open client must not keep reconnecting
            await nc.close()
        raise
    return nc
