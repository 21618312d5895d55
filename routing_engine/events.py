"""Non-blocking CallEvent publisher. The hot path appends to a bounded in-memory buffer and returns; a
background task gathers what arrived in the last few milliseconds (``linger_s``) into messages of up
to ``MAX_EVENTS_PER_MESSAGE`` (64: ~40 KB of routed events, far below NATS' 1 MB limit) events of one
tenant and kind (so one subject, ``vlb.events.<tenant>.<kind>``) and publishes them to JetStream.

A message is a msgpack array of CallEvents (``shared.events.encode_events``). Its ``Nats-Msg-Id`` is
fixed when the message is formed (``<engine>:<nonce>:<seq>``) and kept across retries, so a retried
publish whose first attempt was stored after all is stored once; the consumer's unique event ids drop
any other repeat (the same webhook delivered twice). Events leave the buffer only once JetStream
acknowledged their message: while NATS is away they wait, and are sent when it is back. A full buffer
drops the oldest event and counts it.

One message per event cost ~31 µs of engine CPU per call (the publish, its ack future, the ack's
parse, the socket writes); batched, that cost is shared by every event of a message (see
docs/performance.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import deque

import structlog
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.api import PubAck
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from routing_engine import metrics
from shared.cancellation import raise_if_cancelling
from shared.events import MAX_EVENTS_PER_MESSAGE, CallEvent, encode_events, event_subject

log = structlog.get_logger("routing_engine.events")

# Messages published per round before their acks are awaited (bounds the burst after an outage).
MESSAGES_PER_ROUND = 32
RETRY_DELAY_S = 0.5
PUBLISH_TIMEOUT_S = 2.0
# Failed publish rounds in a row (none of their messages acked) after which the JetStream context is
# made anew.
CONTEXT_RESET_AFTER = 3


class _Message:
    """Events of one subject published together; ``msg_id`` stays the same across retries."""

    __slots__ = ("events", "msg_id", "payload", "subject")

    def __init__(self, msg_id: str, subject: str) -> None:
        self.msg_id = msg_id
        self.subject = subject
        self.events: list[CallEvent] = []
        self.payload: bytes | None = None  # the encoded events, once encoded (None after a change)


class EventPublisher:
    def __init__(
        self,
        *,
        stream: str,
        subject_prefix: str,
        capacity: int = 10000,
        linger_s: float = 0.01,
        engine_id: str = "",
        replicas: int = 1,
    ) -> None:
        self.stream = stream
        self.replicas = replicas  # of the stream, when this engine is the one creating it
        self.subject_prefix = subject_prefix
        self._buffer: deque[CallEvent] = deque()  # not yet in a message
        self._outbox: deque[_Message] = deque()  # formed, waiting for JetStream's ack
        self._count = 0  # events in both
        self._capacity = capacity
        self._linger_s = linger_s
        self._id_prefix = f"{engine_id or 'engine'}:{secrets.token_hex(4)}:"
        self._seq = 0
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._flush_now = False
        self._nc: NATS | None = None
        self._task: asyncio.Task[None] | None = None
        self._stream_ready = False
        self._js: JetStreamContext | None = None
        self._js_conn: NATS | None = None
        self._failed_rounds = 0
        self.published = 0
        self.dropped = 0

    def publish(self, event: CallEvent) -> None:
        """Queue an event; never blocks and never raises."""
        if self._count >= self._capacity:
            self._drop_oldest()
        elif not self._count:
            self._drained.clear()
            self._wake.set()
        self._buffer.append(event)
        self._count += 1

    def _drop_oldest(self) -> None:
        if self._outbox:
            first = self._outbox[0]
            first.events.pop(0)
            first.payload = None
            if not first.events:
                self._outbox.popleft()
        else:
            self._buffer.popleft()
        self._count -= 1
        self.dropped += 1
        metrics.EVENTS_DROPPED.inc()

    @property
    def pending(self) -> int:
        """Events not yet acknowledged by JetStream."""
        return self._count

    def start(self, nc: NATS) -> None:
        self._nc = nc
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="vlb-events")

    async def stop(self, flush_timeout_s: float = 2.0) -> None:
        """Try to flush what is buffered (without lingering), then stop the background task."""
        if self._task is None:
            return
        if self._count and self._connected():
            self._flush_now = True
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), flush_timeout_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    def _connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def _ensure_stream(self) -> None:
        if self._stream_ready or self._nc is None:
            return
        js = self._nc.jetstream()
        try:
            await js.stream_info(self.stream)
        except NotFoundError:
            with contextlib.suppress(NatsError):  # another replica or the control plane won the race
                await js.add_stream(
                    name=self.stream, subjects=[f"{self.subject_prefix}.>"], num_replicas=self.replicas
                )
        self._stream_ready = True

    async def _run(self) -> None:
        while True:
            raise_if_cancelling()
            if not self._count:
                self._drained.set()
                self._wake.clear()
                await self._wake.wait()
            if self._linger_s and not self._flush_now:
                # Let the events of the next few milliseconds join this one's message.
                await asyncio.sleep(self._linger_s)
            if not self._connected():
                await asyncio.sleep(RETRY_DELAY_S)
                continue
            try:
                await self._ensure_stream()
                await self._send_round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS down, timeouts: keep the events and retry later
                raise_if_cancelling()
                metrics.NATS_ERRORS.labels("publish").inc()
                log.warning(
                    "event_publish_failed", error=str(exc) or type(exc).__name__, buffered=self._count
                )
                await asyncio.sleep(RETRY_DELAY_S)
            metrics.EVENTS_BUFFERED.set(self._count)

    def _encodable(self, message: _Message) -> bool:
        """Encode ``message`` once (kept for its retries). An event msgpack cannot carry (a value out
        of its range in a payload) is dropped, logged and counted, rather than holding every later
        event back behind a message that can never be sent; False when none of its events is left."""
        if message.payload is not None:
            return True
        try:
            message.payload = encode_events(message.events)
            return True
        except (TypeError, ValueError, OverflowError):
            pass
        kept: list[CallEvent] = []
        for event in message.events:
            try:
                encode_events([event])
            except (TypeError, ValueError, OverflowError) as exc:
                self._count -= 1
                self.dropped += 1
                metrics.EVENTS_UNENCODABLE.inc()
                metrics.EVENTS_DROPPED.inc()
                log.error("event_unencodable", event_id=event.event_id[:120], error=str(exc)[:200])
            else:
                kept.append(event)
        message.events = kept
        if not kept:
            with contextlib.suppress(ValueError):
                self._outbox.remove(message)
            return False
        message.payload = encode_events(kept)
        return True

    def _form_messages(self) -> None:
        """Move buffered events into messages, one subject each, up to 64 events per message."""
        open_by_subject: dict[str, _Message] = {}
        buffer = self._buffer
        while buffer and len(self._outbox) < MESSAGES_PER_ROUND:
            event = buffer.popleft()
            subject = event_subject(self.subject_prefix, event.tenant_id, event.kind)
            message = open_by_subject.get(subject)
            if message is None or len(message.events) >= MAX_EVENTS_PER_MESSAGE:
                self._seq += 1
                message = open_by_subject[subject] = _Message(f"{self._id_prefix}{self._seq}", subject)
                self._outbox.append(message)
            message.events.append(event)

    async def _send_round(self) -> None:
        assert self._nc is not None
        if self._js is None or self._js_conn is not self._nc:
            self._js, self._js_conn = self._nc.jetstream(), self._nc
        js = self._js
        self._form_messages()
        round_ = [m for m in list(self._outbox)[:MESSAGES_PER_ROUND] if self._encodable(m)]
        # publish_async writes every message first and collects the acks after: one shared reply
        # subscription instead of a request (and its timer) per message.
        futures: list[asyncio.Future[PubAck]] = []
        try:
            for message in round_:
                futures.append(
                    await js.publish_async(
                        message.subject,
                        # (None again when _drop_oldest took one of its events meanwhile)
                        message.payload or encode_events(message.events),
                        headers={"Nats-Msg-Id": message.msg_id},
                    )
                )
            done = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), PUBLISH_TIMEOUT_S)
            results: list[object] = list(done)
        except BaseException as exc:
            for future in futures:
                future.cancel()  # frees its place among the client's pending async publishes
            if not isinstance(exc, (TimeoutError, NatsError)):
                raise
            results = [
                f.result() if f.done() and not f.cancelled() and f.exception() is None else exc
                for f in futures
            ]
            results += [exc] * (len(round_) - len(results))
        # A stored message leaves the outbox; a failed one stays (same id) and is retried.
        failure: BaseException | None = None
        sent = 0
        for message, result in zip(round_, results, strict=True):
            if isinstance(result, BaseException):
                failure = failure or result
                continue
            with contextlib.suppress(ValueError):  # emptied by _drop_oldest meanwhile
                self._outbox.remove(message)
                sent += len(message.events)
        self._count -= sent
        self.published += sent
        metrics.EVENTS_PUBLISHED.inc(sent)
        if failure is not None:
            self._failed_rounds = 0 if sent else self._failed_rounds + 1
            if self._failed_rounds >= CONTEXT_RESET_AFTER:
                # Rounds in a row with not one ack while connected: the JetStream context's reply
                # subscription may be gone for good (nats-py sets its reply prefix before it
                # subscribes, so a subscribe that failed once is never tried again). A new context
                # subscribes afresh; the stream is checked again too.
                log.warning("event_publish_context_reset", failed_rounds=self._failed_rounds)
                self._js = self._js_conn = None
                self._stream_ready = False
                self._failed_rounds = 0
            raise failure
        self._failed_rounds = 0
        if not self._count:
            self._flush_now = False
