"""The event publisher stops wherever its stop lands, against a real NATS. nats-py turns a cancellation
that reaches ``publish_async`` while it waits for a pending-ack slot into its own
``TooManyStalledMsgsError``; a retry loop that took that for a NATS failure never stopped, and the
engine's shutdown waited on it forever (seen once as a CI run hanging in test_heartbeat)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import msgspec
from nats.aio.client import Client as NATS

from routing_engine.events import EventPublisher
from shared.enums import EventKind
from shared.events import CallEvent

TENANT = 987_654_321  # no other test reads this tenant's events


def event() -> CallEvent:
    token = uuid.uuid4().hex
    return CallEvent(
        event_id=f"{TENANT}:{token}:app",
        kind=EventKind.ROUTED,
        tenant_id=TENANT,
        domain="stop.cloudonix.net",
        session_token=token,
        occurred_at=time.time(),
        engine_id="stop-test",
        outcome="routed",
    )


async def test_stop_returns_wherever_the_cancellation_lands(nats_client: NATS) -> None:
    stream = os.environ["VLB_EVENTS_STREAM"]
    prefix = os.environ["VLB_EVENTS_SUBJECT_PREFIX"]
    # Each pass stops the publisher one event-loop step later into sending its event, so the
    # cancellation lands in turn on every await of a send: the stream check, publish_async's wait for
    # a pending-ack slot, the publish itself and the ack.
    for steps in range(120):
        publisher = EventPublisher(stream=stream, subject_prefix=prefix, linger_s=0)
        publisher.start(nats_client)
        publisher.publish(event())
        for _ in range(steps):
            await asyncio.sleep(0)
        # A lost cancellation shows as stop() taking until the bound (which ends it: stop swallows the
        # CancelledError of its own await) instead of a few milliseconds.
        started = time.perf_counter()
        await asyncio.wait_for(publisher.stop(flush_timeout_s=0), 3)
        assert time.perf_counter() - started < 1.5, f"stop after {steps} steps did not end the task"


async def test_an_event_msgpack_cannot_carry_is_dropped_and_counted_not_blocking_the_rest(
    nats_client: NATS,
) -> None:
    """A payload value out of msgpack's range (an int past 2**64) used to fail the whole message on
    every retry, holding every later event behind it; it is dropped, counted, and the rest flows."""
    stream = os.environ["VLB_EVENTS_STREAM"]
    prefix = os.environ["VLB_EVENTS_SUBJECT_PREFIX"]
    publisher = EventPublisher(stream=stream, subject_prefix=prefix, linger_s=0.01)
    publisher.start(nats_client)
    try:
        good = [event() for _ in range(3)]
        bad = msgspec.structs.replace(event(), payload={"huge": 2**70})
        publisher.publish(good[0])
        publisher.publish(bad)
        publisher.publish(good[1])
        publisher.publish(good[2])
        for _ in range(200):
            if publisher.pending == 0:
                break
            await asyncio.sleep(0.025)
        assert publisher.pending == 0
        assert (publisher.published, publisher.dropped) == (3, 1)
        # and the publisher goes on with later events
        publisher.publish(event())
        for _ in range(200):
            if publisher.published == 4:
                break
            await asyncio.sleep(0.025)
        assert publisher.published == 4
    finally:
        await publisher.stop(flush_timeout_s=1)


async def test_a_jetstream_context_that_gets_no_acks_is_made_anew(nats_client: NATS) -> None:
    """nats-py's JetStream context sets its reply prefix before it subscribes to the acks, so a reply
    subscription lost once is never made again and every publish times out (suspected in a 30-minute
    soak where one engine published nothing). Here the subscription is taken away on purpose: after
    CONTEXT_RESET_AFTER rounds without an ack the publisher makes a new context and the events flow."""
    from nats.aio.client import Client

    nc = Client()
    await nc.connect(nats_client.connected_url.geturl() if nats_client.connected_url else "")
    stream = os.environ["VLB_EVENTS_STREAM"]
    prefix = os.environ["VLB_EVENTS_SUBJECT_PREFIX"]
    publisher = EventPublisher(stream=stream, subject_prefix=prefix, linger_s=0.01)
    publisher.start(nc)
    try:
        publisher.publish(event())
        for _ in range(200):
            if publisher.published == 1:
                break
            await asyncio.sleep(0.025)
        assert publisher.published == 1
        js = publisher._js
        assert js is not None
        reply_prefix = bytes(js._async_reply_prefix or b"").decode()
        for sub in list(nc._subs.values()):
            if sub.subject.startswith(reply_prefix):
                await sub.unsubscribe()
        publisher.publish(event())
        for _ in range(600):
            if publisher.published == 2:
                break
            await asyncio.sleep(0.025)
        assert publisher.published == 2
        assert publisher._js is not js
    finally:
        await publisher.stop(flush_timeout_s=1)
        await nc.close()
