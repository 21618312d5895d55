"""Background loops that talk to NATS must notice their own cancellation.

nats-py catches a cancellation in places and swallows it (``Client._flush_pending``) or turns it into
one of its own errors (``JetStreamContext.publish_async`` raises ``TooManyStalledMsgsError`` when it is
cancelled while waiting for a pending-ack slot, which on Python 3.11 it always briefly does). A loop
that catches ``Exception`` and tries again then never stops, and whatever awaits it at shutdown waits
forever. Such loops call :func:`raise_if_cancelling` at the top of every pass and first thing in their
error handler: ``Task.cancelling()`` stays set however the library treated the ``CancelledError``.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelling() -> None:
    """Raise CancelledError when the current task has been asked to stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
