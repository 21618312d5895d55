"""Parse Cloudonix voice-application requests (GET query, POST JSON, POST form, plus ``X-CX-*`` header
fallbacks) into one typed struct, or a one-line reason why not."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

import msgspec

MAX_FIELDS = 200
MAX_VALUE_LENGTH = 256
SESSION_RE = re.compile(r"[A-Za-z0-9._:@-]{1,128}")

Scalar = str | int | None


class VoiceRequest(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """One voice-application or dial-status request, normalised."""

    session: str
    call_sid: str | None = None
    from_number: str = ""
    to_number: str = ""
    caller_name: str | None = None
    direction: str = ""  # lower-cased
    call_status: str | None = None  # lower-cased
    domain: str | None = None
    application_sid: str | None = None
    dial_call_status: str | None = None  # lower-cased
    has_session_data: bool = False
    attempt: int = 1  # dial-status: the attempt whose outcome this is (from the action URL)
    agent_id: int | None = None  # dial-status: the agent that attempt dialled (from the action URL)


class ParseError(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    status: int
    reason: str
    session: str | None = None  # set when the call could still be identified (from headers)


class _JsonBody(msgspec.Struct, frozen=True, gc=False):
    CallSid: Scalar = None
    Session: Scalar = None
    From: Scalar = None
    To: Scalar = None
    CallerName: Scalar = None
    Direction: Scalar = None
    CallStatus: Scalar = None
    Domain: Scalar = None
    AccountSid: Scalar = None
    ApplicationSid: Scalar = None
    DialCallStatus: Scalar = None
    # Kept raw: validated as JSON but never converted, which costs nothing on the hot path.
    SessionData: msgspec.Raw = msgspec.Raw()


_JSON_DECODER = msgspec.json.Decoder(_JsonBody)
_FIELDS = (
    "CallSid",
    "Session",
    "From",
    "To",
    "CallerName",
    "Direction",
    "CallStatus",
    "Domain",
    "AccountSid",
    "ApplicationSid",
    "DialCallStatus",
)


def _text(value: Scalar) -> str | None:
    if value is None:
        return None
    text = str(value) if isinstance(value, int) else value
    return text.strip() or None


def _fields_from_json(body: bytes) -> dict[str, str | None] | ParseError:
    try:
        parsed = _JSON_DECODER.decode(body)
    except msgspec.ValidationError as exc:
        return ParseError(status=400, reason=f"invalid field: {exc}")
    except msgspec.DecodeError as exc:
        return ParseError(status=400, reason=f"malformed JSON body: {exc}")
    fields = {name: _text(getattr(parsed, name)) for name in _FIELDS}
    raw = bytes(parsed.SessionData)
    fields["SessionData"] = "1" if raw and raw != b"null" else None
    return fields


def _fields_from_pairs(raw: bytes | str) -> dict[str, str | None] | ParseError:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:
        return ParseError(status=400, reason=f"more than {MAX_FIELDS} form fields")
    return {k: (v.strip() or None) for k, v in pairs}


def _small_int(value: str | None, name: str, low: int, high: int) -> int | ParseError | None:
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        return ParseError(status=400, reason=f"{name} must be an integer")
    if not low <= number <= high:
        return ParseError(status=400, reason=f"{name} must be between {low} and {high}")
    return number


def parse_voice_request(
    method: str,
    content_type: str,
    query_string: bytes,
    body: bytes,
    headers: dict[str, str],
) -> VoiceRequest | ParseError:
    """Build a VoiceRequest from whatever shape Cloudonix used. ``headers`` has lower-cased names."""
    query = _fields_from_pairs(query_string) if query_string else {}
    if isinstance(query, ParseError):
        return query
    fields: dict[str, str | None]
    stripped = body.strip()
    if method == "POST" and stripped:
        ctype = content_type.split(";", 1)[0].strip().lower()
        is_json = ctype == "application/json" or ctype.endswith("+json")
        if not is_json and ctype != "application/x-www-form-urlencoded":
            is_json = stripped[:1] in (b"{", b"[")
        parsed = _fields_from_json(body) if is_json else _fields_from_pairs(body)
        if isinstance(parsed, ParseError):
            return _identify(parsed, headers)
        fields = {**query, **{k: v for k, v in parsed.items() if v is not None}}
    else:
        fields = query

    session = fields.get("Session") or fields.get("CallSid") or headers.get("x-cx-session") or None
    if not session:
        return ParseError(status=400, reason="missing Session (no Session, CallSid or X-CX-Session)")
    if SESSION_RE.fullmatch(session) is None:
        return ParseError(status=400, reason="invalid Session token")
    for name in ("From", "To", "CallerName", "Domain"):
        value = fields.get(name)
        if value is not None and len(value) > MAX_VALUE_LENGTH:
            return ParseError(
                status=400, reason=f"{name} is longer than {MAX_VALUE_LENGTH} characters", session=session
            )
    attempt = _small_int(query.get("attempt"), "attempt", 1, 100)
    if isinstance(attempt, ParseError):
        return attempt
    agent_id = _small_int(query.get("agent"), "agent", 1, 2**62)
    if isinstance(agent_id, ParseError):
        return agent_id

    def lower(name: str) -> str | None:
        value = fields.get(name)
        return value.lower() if value else None

    return VoiceRequest(
        session=session,
        call_sid=fields.get("CallSid"),
        from_number=fields.get("From") or headers.get("x-cx-from") or "",
        to_number=fields.get("To") or headers.get("x-cx-to") or "",
        caller_name=fields.get("CallerName"),
        direction=lower("Direction") or "",
        call_status=lower("CallStatus"),
        domain=fields.get("Domain") or fields.get("AccountSid") or headers.get("x-cx-domain"),
        application_sid=fields.get("ApplicationSid"),
        dial_call_status=lower("DialCallStatus"),
        has_session_data=fields.get("SessionData") is not None,
        attempt=attempt or 1,
        agent_id=agent_id,
    )


def _identify(error: ParseError, headers: dict[str, str]) -> ParseError:
    """Attach the session from headers so the caller may still answer the call with valid CXML."""
    session = headers.get("x-cx-session")
    if session and SESSION_RE.fullmatch(session):
        return ParseError(status=error.status, reason=error.reason, session=session)
    return error
