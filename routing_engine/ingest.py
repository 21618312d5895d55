"""Cloudonix session updates and CDRs: parse every shape Cloudonix (and the original system) sends into
one typed struct or a one-line reason, drop repeats with one Redis ``SET NX``, free the call's agent
slot on a terminal status or a CDR, and turn each accepted webhook into a CallEvent."""

from __future__ import annotations

import hashlib
import time
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl

import msgspec
import structlog
from redis.exceptions import RedisError

from routing_engine import metrics
from routing_engine.balancer import Balancer
from routing_engine.events import EventPublisher
from routing_engine.script_client import ScriptCaller
from routing_engine.webhooks import MAX_FIELDS, SESSION_RE
from shared.enums import Disposition, EventKind
from shared.events import CallEvent
from shared.redis_client import RedisClient

log = structlog.get_logger("routing_engine.ingest")

# The engine's two sets: which raw statuses it accepts and which of them end the call. They must agree
# with the control plane's table in shared/lifecycle.py (a test checks); kept here until that module
# is committed.
# Cloudonix session statuses, lower-cased, plus the Twilio-style ones of the original's short shape.
LIVE_STATUSES = frozenset(
    {"new", "processing", "ringing", "connected", "external", "queued", "initiated", "in-progress"}
)
# "answer" is Cloudonix's final status of an answered call (it follows "connected", with callEndTime).
TERMINAL_STATUSES = frozenset(
    {
        "answer",
        "noanswer",
        "no-answer",
        "busy",
        "cancel",
        "canceled",
        "cancelled",
        "nocredit",
        "error",
        "failed",
        "completed",
    }
)
# Accepted defensively; ends the call only when Cloudonix also says when it ended.
ANSWERED = "answered"
DISPOSITIONS: dict[str, Disposition] = {
    **{d.value: d for d in Disposition},
    "ANSWERED": Disposition.ANSWER,
    "NO ANSWER": Disposition.NOANSWER,
    "NO-ANSWER": Disposition.NOANSWER,
    "NO_ANSWER": Disposition.NOANSWER,
    "CANCELED": Disposition.CANCEL,
    "CANCELLED": Disposition.CANCEL,
    "CHANUNAVAIL": Disposition.FAILED,
}
# Body keys whose values never reach the audit (compared lower-cased, without "-" and "_").
SECRET_KEYS = frozenset(
    {"password", "secret", "apikey", "xcxapikey", "authorization", "webhookkey", "accesstoken", "authtoken"}
)
MASK = "***"
# The longest wait for the dedupe mark before the delivery is taken as new (the client's own bound).
DEDUPE_TIMEOUT_S = 0.5
MAX_MASK_DEPTH = 8
TOO_DEEP = "JSON body nested too deeply"
NOT_UTF8 = "malformed JSON body: a string is not valid UTF-8"

# Every value bounded so the CallEvent it becomes can be encoded (msgpack: 64-bit integers) and stored
# (durations are ``integer`` columns, texts ``varchar(255)``, statuses and directions ``varchar(32)``): one event that cannot would be
# retried by the publisher for ever.
MAX_EPOCH_MS = 2**53  # some 285,000 years
MAX_SECONDS = 2**31 - 1
Text = Annotated[str, msgspec.Meta(max_length=255)]
Short = Annotated[str, msgspec.Meta(max_length=32)]
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_SECONDS)]
EpochMs = Annotated[int, msgspec.Meta(ge=0, le=MAX_EPOCH_MS)]
# What msgpack carries; a larger integer in a body's payload is kept as its digits.
MIN_INT, MAX_INT = -(2**63), 2**64 - 1


class DomainRef(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    name: Text | None = None
    uuid: Text | None = None


class _SessionUpdateBody(msgspec.Struct, kw_only=True, frozen=True, gc=False, rename="camel"):
    """The Cloudonix session object, and the original's short ``{CallSid, Session, CallStatus,
    Duration}``; unknown fields are ignored."""

    event_id: Text | None = None
    token: Text | None = None
    domain: Text | DomainRef | None = None
    caller_id: Text | None = None
    destination: Text | None = None
    direction: Short | None = None
    status: Text | None = None
    modified_at: Text | None = None
    call_start_time: EpochMs | None = None
    call_answer_time: EpochMs | None = None
    call_end_time: EpochMs | None = None
    call_ids: list[Text] | None = None
    call_sid: Text | None = msgspec.field(default=None, name="CallSid")
    session: Text | None = msgspec.field(default=None, name="Session")
    call_status: Text | None = msgspec.field(default=None, name="CallStatus")
    duration: Count | None = msgspec.field(default=None, name="Duration")


class _CdrSession(msgspec.Struct, kw_only=True, frozen=True, gc=False, rename="camel"):
    token: Text | None = None
    status: Short | None = None
    direction: Short | None = None
    call_start_time: EpochMs | None = None
    call_answer_time: EpochMs | None = None
    call_end_time: EpochMs | None = None


class _CdrOwner(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    domain: DomainRef | None = None


class _CdrBody(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """The Cloudonix CDR, and the original's flat ``{call_id, session_token, from, to, disposition,
    duration, start_time}``."""

    timestamp: Annotated[float, msgspec.Meta(ge=0, le=MAX_EPOCH_MS / 1000)] | None = None
    from_number: Text | None = msgspec.field(default=None, name="from")
    to: Text | None = None
    disposition: Text | None = None
    duration: Count | None = None
    billsec: Count | None = None
    call_id: Text | None = None
    domain: Text | DomainRef | None = None
    session: _CdrSession | None = None
    owner: _CdrOwner | None = None
    session_token: Text | None = None
    start_time: Text | None = None


class SessionUpdate(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    token: str
    status: str  # as received, lower-cased
    terminal: bool
    dedupe_id: str  # "<token>:su:<eventId>" or "<token>:su:<status>:<modifiedAt>"
    domain: str | None
    direction: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    call_id: str | None = None
    call_start_ms: int | None = None
    call_answer_ms: int | None = None
    call_end_ms: int | None = None
    duration: int | None = None
    payload: dict[str, Any]


class Cdr(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    token: str  # the session token, else the call id
    dedupe_id: str  # "<token>:cdr"
    domain: str | None
    disposition: Disposition | None = None
    status: str | None = None  # session.status, lower-cased
    direction: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    call_id: str | None = None
    call_start_ms: int | None = None
    call_answer_ms: int | None = None
    call_end_ms: int | None = None
    duration: int | None = None
    billsec: int | None = None
    payload: dict[str, Any]


class Rejection(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    status: int
    reason: str  # one line
    token: str | None = None
    domain: str | None = None
    payload: dict[str, Any] | None = None  # the masked body when it was a JSON object


_JSON_DECODER = msgspec.json.Decoder()


def mask_secrets(value: Any, depth: int = 0) -> Any:
    """A copy of a decoded body with the values of secret-looking keys replaced by ``***`` (and integers
    beyond 64 bits by their digits)."""
    if depth > MAX_MASK_DEPTH:
        return MASK
    if isinstance(value, dict):
        return {
            k: MASK
            if k.lower().replace("-", "").replace("_", "") in SECRET_KEYS
            else mask_secrets(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask_secrets(v, depth + 1) for v in value]
    if type(value) is int and not MIN_INT <= value <= MAX_INT:
        return str(value)
    return value


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _decode_object(content_type: str, body: bytes) -> dict[str, Any] | Rejection:
    """The body as one object: JSON (a one-element array is unwrapped) or a form."""
    stripped = body.strip()
    if not stripped:
        return Rejection(status=400, reason="empty body")
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded" or (
        ctype != "application/json" and not ctype.endswith("+json") and stripped[:1] not in (b"{", b"[")
    ):
        try:
            pairs = parse_qsl(
                body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=MAX_FIELDS
            )
        except ValueError:
            return Rejection(status=400, reason=f"more than {MAX_FIELDS} form fields")
        return {k: v.strip() or None for k, v in pairs}
    try:
        decoded = _JSON_DECODER.decode(body)
    except msgspec.DecodeError as exc:
        return Rejection(status=400, reason=_one_line(f"malformed JSON body: {exc}"))
    except UnicodeDecodeError:  # msgspec's own error for a string that is not UTF-8
        return Rejection(status=400, reason=NOT_UTF8)
    except RecursionError:
        # msgspec recurses per nesting level and gives up at the interpreter's limit.
        return Rejection(status=400, reason=TOO_DEEP)
    if isinstance(decoded, list):
        if len(decoded) != 1:
            return Rejection(status=400, reason=f"expected one object, got an array of {len(decoded)}")
        decoded = decoded[0]
    if not isinstance(decoded, dict):
        return Rejection(status=400, reason=f"expected a JSON object, got {_json_type(decoded)}")
    return decoded


def _domain_name(value: str | DomainRef | None) -> str | None:
    name = value.name if isinstance(value, DomainRef) else value
    return name.strip() or None if name else None


def _clean(value: str | None) -> str | None:
    return value.strip() or None if value else None


def _guess_token(raw: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = raw.get(name)
        if isinstance(value, str) and SESSION_RE.fullmatch(value):
            return value
    return None


def _guess_domain(raw: dict[str, Any]) -> str | None:
    owner = raw.get("owner")
    for value in (raw.get("domain"), owner.get("domain") if isinstance(owner, dict) else None):
        if isinstance(value, dict):
            value = value.get("name")
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _check_token(token: str | None, raw: dict[str, Any], domain: str | None) -> Rejection | None:
    if not token:
        return Rejection(status=400, reason="missing session token", domain=domain, payload=mask_secrets(raw))
    if SESSION_RE.fullmatch(token) is None:
        return Rejection(status=400, reason="invalid session token", domain=domain, payload=mask_secrets(raw))
    return None


def parse_session_update(content_type: str, body: bytes) -> SessionUpdate | Rejection:
    raw = _decode_object(content_type, body)
    if isinstance(raw, Rejection):
        return raw
    try:
        parsed = msgspec.convert(raw, _SessionUpdateBody, strict=False)
    except RecursionError:
        return Rejection(status=400, reason=TOO_DEEP, domain=_guess_domain(raw))
    except msgspec.ValidationError as exc:
        return Rejection(
            status=422,
            reason=_one_line(f"invalid field: {exc}"),
            token=_guess_token(raw, "token", "Session", "CallSid"),
            domain=_guess_domain(raw),
            payload=mask_secrets(raw),
        )
    domain = _domain_name(parsed.domain)
    token = _clean(parsed.token) or _clean(parsed.session) or _clean(parsed.call_sid)
    rejected = _check_token(token, raw, domain)
    if rejected is not None:
        return rejected
    assert token is not None
    status = (_clean(parsed.status) or _clean(parsed.call_status) or "").lower()
    if not status:
        return Rejection(
            status=400, reason="missing status", token=token, domain=domain, payload=mask_secrets(raw)
        )
    if status in TERMINAL_STATUSES:
        terminal = True
    elif status == ANSWERED:
        terminal = parsed.call_end_time is not None
    elif status in LIVE_STATUSES:
        terminal = False
    else:
        return Rejection(
            status=422,
            reason=_one_line(f"unknown status {status[:40]!r}"),
            token=token,
            domain=domain,
            payload=mask_secrets(raw),
        )
    event_id = _clean(parsed.event_id)
    if event_id:
        dedupe_id = f"{token}:su:{event_id}"
    else:
        dedupe_id = f"{token}:su:{status}:{_clean(parsed.modified_at) or ''}"
    call_ids = [c for c in parsed.call_ids or () if c]
    return SessionUpdate(
        token=token,
        status=status,
        terminal=terminal,
        dedupe_id=dedupe_id,
        domain=domain,
        direction=(_clean(parsed.direction) or "").lower() or None,
        from_number=_clean(parsed.caller_id),
        to_number=_clean(parsed.destination),
        call_id=call_ids[0] if call_ids else _clean(parsed.call_sid),
        call_start_ms=parsed.call_start_time,
        call_answer_ms=parsed.call_answer_time,
        call_end_ms=parsed.call_end_time,
        duration=parsed.duration,
        payload=mask_secrets(raw),
    )


def _iso_ms(value: str) -> int | None:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return int(moment.timestamp() * 1000)


def parse_cdr(content_type: str, body: bytes) -> Cdr | Rejection:
    raw = _decode_object(content_type, body)
    if isinstance(raw, Rejection):
        return raw
    try:
        parsed = msgspec.convert(raw, _CdrBody, strict=False)
    except RecursionError:
        return Rejection(status=400, reason=TOO_DEEP, domain=_guess_domain(raw))
    except msgspec.ValidationError as exc:
        session_raw = raw.get("session")
        token = _guess_token(session_raw, "token") if isinstance(session_raw, dict) else None
        return Rejection(
            status=422,
            reason=_one_line(f"invalid field: {exc}"),
            token=token or _guess_token(raw, "session_token", "call_id"),
            domain=_guess_domain(raw),
            payload=mask_secrets(raw),
        )
    session = parsed.session
    owner_domain = parsed.owner.domain if parsed.owner is not None else None
    domain = _domain_name(parsed.domain) or _domain_name(owner_domain)
    call_id = _clean(parsed.call_id)
    token = (_clean(session.token) if session else None) or _clean(parsed.session_token) or call_id
    rejected = _check_token(token, raw, domain)
    if rejected is not None:
        return rejected
    assert token is not None

    disposition: Disposition | None = None
    if parsed.disposition is not None and parsed.disposition.strip():
        key = " ".join(parsed.disposition.upper().split())
        disposition = DISPOSITIONS.get(key)
        if disposition is None:
            return Rejection(
                status=422,
                reason=_one_line(f"unknown disposition {parsed.disposition[:40]!r}"),
                token=token,
                domain=domain,
                payload=mask_secrets(raw),
            )

    start = session.call_start_time if session else None
    answer = session.call_answer_time if session else None
    end = session.call_end_time if session else None
    if start is None and parsed.start_time:
        start = _iso_ms(parsed.start_time.strip())
        if start is None:
            return Rejection(
                status=422,
                reason="start_time is not an ISO 8601 time with a zone",
                token=token,
                domain=domain,
                payload=mask_secrets(raw),
            )
    if end is None and parsed.timestamp is not None:
        end = int(parsed.timestamp * 1000)
    duration = parsed.duration
    # The flat shape carries a start and a duration only; Cloudonix's carries the end: fill the other.
    if end is None and start is not None and duration is not None:
        end = start + duration * 1000
    if start is None and end is not None and duration is not None:
        start = end - duration * 1000

    return Cdr(
        token=token,
        dedupe_id=f"{token}:cdr",
        domain=domain,
        disposition=disposition,
        status=(_clean(session.status) or "").lower() or None if session else None,
        direction=(_clean(session.direction) or "").lower() or None if session else None,
        from_number=_clean(parsed.from_number),
        to_number=_clean(parsed.to),
        call_id=call_id,
        call_start_ms=start,
        call_answer_ms=answer,
        call_end_ms=end,
        duration=duration,
        billsec=parsed.billsec,
        payload=mask_secrets(raw),
    )


def parse(kind: EventKind, content_type: str, body: bytes) -> SessionUpdate | Cdr | Rejection:
    if kind is EventKind.CDR:
        return parse_cdr(content_type, body)
    return parse_session_update(content_type, body)


# Terminal session statuses that say the call was answered.
ANSWERED_STATUSES = frozenset({"answer", "answered", "completed"})


def answered_outcome(item: SessionUpdate | Cdr) -> str:
    """The outlier outcome a call's end reports (balancer.release): ``a:<talk ms>`` when it was
    answered (-1 when how long it talked is unknown), "" when it was not (its failed dials were
    counted when their dial-status came)."""
    talk: int | None = None
    if isinstance(item, Cdr):
        if item.disposition is not Disposition.ANSWER:
            return ""
        if item.billsec is not None:
            talk = item.billsec * 1000
    elif item.status not in ANSWERED_STATUSES and item.call_answer_ms is None:
        return ""
    elif item.call_answer_ms is None and item.status == "completed" and item.duration is not None:
        talk = item.duration * 1000  # the original's short shape: Duration of a completed call
    if talk is None and item.call_answer_ms is not None and item.call_end_ms is not None:
        talk = max(0, item.call_end_ms - item.call_answer_ms)
    return f"a:{-1 if talk is None else talk}"


class Ingestor:
    """Applies parsed session updates and CDRs: dedupe, release, publish. Never raises for Redis."""

    def __init__(
        self,
        redis_client: RedisClient,
        balancer: Balancer,
        events: EventPublisher,
        *,
        dedupe_ttl_s: int,
        engine_id: str,
        scripts: ScriptCaller | None = None,
    ) -> None:
        self._redis = redis_client
        self._scripts = scripts  # the lean client for the per-webhook SET NX, when there is one
        self._balancer = balancer
        self._events = events
        self._ttl = dedupe_ttl_s
        self._engine_id = engine_id

    async def first_delivery(self, tenant_id: int, dedupe_id: str) -> bool:
        """True the first time (tenant, dedupe id) is seen within the TTL, on every replica."""
        key = self._balancer.keys(tenant_id).seen(dedupe_id)
        try:
            if self._scripts is not None:
                reply = await self._scripts.call(
                    "SET", key, "1", "NX", "EX", str(self._ttl), reply_within_s=DEDUPE_TIMEOUT_S
                )
                return reply is not None
            return bool(await self._redis.set(key, b"1", nx=True, ex=self._ttl))
        except (RedisError, OSError, TimeoutError) as exc:
            # Without Redis a repeat cannot be told apart: go on. Release is idempotent by itself and
            # the consumer's unique event id drops the copy downstream.
            metrics.REDIS_ERRORS.inc()
            log.warning("ingest_dedupe_unavailable", error=type(exc).__name__)
            return True

    async def _release(self, tenant_id: int, token: str, source: str, reason: str, outcome: str = "") -> bool:
        try:
            # The call is over: a dial-status that Cloudonix delivers after this takes no new slot.
            freed = await self._balancer.release(tenant_id, token, reason=reason, ended=True, outcome=outcome)
        except RedisError as exc:  # READONLY, OOM, ...: the slot expires after the safety TTL
            metrics.REDIS_ERRORS.inc()
            log.error("ingest_release_failed", session=token, tenant_id=tenant_id, error=type(exc).__name__)
            return False
        if freed:
            metrics.SLOT_RELEASES.labels(source).inc()
        return freed

    async def apply(
        self, tenant_id: int, domain: str, item: SessionUpdate | Cdr, snapshot_version: int
    ) -> str:
        """Dedupe, free the slot when the call is over, publish the event. Returns the outcome:
        ``duplicate``, ``released`` (this delivery freed the slot) or ``recorded``."""
        if not await self.first_delivery(tenant_id, item.dedupe_id):
            return "duplicate"
        freed = False
        if isinstance(item, Cdr):
            freed = await self._release(
                tenant_id,
                item.token,
                "cdr",
                f"cdr:{item.disposition.value if item.disposition else ''}",
                answered_outcome(item),
            )
        elif item.terminal:
            freed = await self._release(
                tenant_id,
                item.token,
                "session_update",
                f"session_update:{item.status}",
                answered_outcome(item),
            )
        outcome = "released" if freed else "recorded"
        is_cdr = isinstance(item, Cdr)
        self._events.publish(
            CallEvent(
                event_id=f"{tenant_id}:{item.dedupe_id}",
                kind=EventKind.CDR if is_cdr else EventKind.SESSION_UPDATE,
                tenant_id=tenant_id,
                domain=domain,
                session_token=item.token,
                occurred_at=time.time(),
                engine_id=self._engine_id,
                direction=item.direction,
                from_number=item.from_number,
                to_number=item.to_number,
                outcome=outcome,
                status=item.status,
                disposition=item.disposition.value if isinstance(item, Cdr) and item.disposition else None,
                snapshot_version=snapshot_version,
                call_start_ms=item.call_start_ms,
                call_answer_ms=item.call_answer_ms,
                call_end_ms=item.call_end_ms,
                duration=item.duration,
                billsec=item.billsec if isinstance(item, Cdr) else None,
                call_id=item.call_id,
                payload=item.payload,
            )
        )
        return outcome

    def rejected(
        self,
        tenant_id: int,
        domain: str,
        kind: EventKind,
        rejection: Rejection,
        body: bytes,
        snapshot_version: int,
    ) -> None:
        """The audit's copy of a refused webhook; the same bad delivery gets the same event id."""
        digest = hashlib.sha256(body).hexdigest()[:16]
        token = rejection.token or ""
        payload: dict[str, Any] = {"reason": rejection.reason, "status": rejection.status}
        if rejection.payload is not None:
            payload["body"] = rejection.payload
        else:
            payload["body_bytes"] = len(body)
        self._events.publish(
            CallEvent(
                event_id=f"{tenant_id}:{token or '-'}:rejected:{kind.value}:{digest}",
                kind=EventKind.REJECTED,
                tenant_id=tenant_id,
                domain=domain,
                session_token=token,
                occurred_at=time.time(),
                engine_id=self._engine_id,
                outcome="bad_input",
                snapshot_version=snapshot_version,
                payload=payload,
            )
        )
