"""Parse Cloudonix voice-application requests (GET query, POST JSON, POST form, plus ``X-CX-*`` header
fallbacks) into one typed struct, or a one-line reason why not."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

import msgspec

MAX_FIELDS = 200
# The lengths the call records store (varchar(255), statuses and direction varchar(32)): a longer value
# is refused here rather than accepted and then lost by the control plane.
MAX_VALUE_LENGTH = 255
MAX_STATUS_LENGTH = 32
NOT_UTF8 = "malformed JSON body: a string is not valid UTF-8"
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
    branch: int | None = None  # dial-status: the traffic-split branch the call took (from the action URL)
    rule_id: int | None = None  # dial-status: the scheduled or split rule that took the call (action URL)


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


def _text(value: Scalar) -> str | None:
    if value is None:
        return None
    text = str(value) if isinstance(value, int) else value
    return text.strip() or None


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
    """Build a VoiceRequest from whatever shape Cloudonix used. ``headers`` has lower-cased names.
    Body fields win over query fields of the same name; ``X-CX-*`` headers fill what both lack."""
    query = _fields_from_pairs(query_string) if query_string else _NO_FIELDS
    if isinstance(query, ParseError):
        return query
    stripped = body.strip()
    if method != "POST" or not stripped:
        return _build(query, query, headers)
    ctype = content_type.split(";", 1)[0].strip().lower()
    is_json = ctype == "application/json" or ctype.endswith("+json")
    if not is_json and ctype != "application/x-www-form-urlencoded":
        is_json = stripped[:1] in (b"{", b"[")
    if not is_json:
        form = _fields_from_pairs(body)
        if isinstance(form, ParseError):
            return _identify(form, query, headers)
        return _build({**query, **{k: v for k, v in form.items() if v is not None}}, query, headers)
    # JSON, the common shape: read the decoded struct directly (no intermediate dicts).
    try:
        j = _JSON_DECODER.decode(body)
    except msgspec.ValidationError as exc:
        return _identify(ParseError(status=400, reason=f"invalid field: {exc}"), query, headers)
    except msgspec.DecodeError as exc:
        return _identify(ParseError(status=400, reason=f"malformed JSON body: {exc}"), query, headers)
    except UnicodeDecodeError:  # msgspec's own error for a string that is not UTF-8
        return _identify(ParseError(status=400, reason=NOT_UTF8), query, headers)
    except RecursionError:
        # msgspec recurses per nesting level (SessionData is validated) and stops at the interpreter's
        # limit: a body nested thousands deep is bad input like any other.
        return _identify(ParseError(status=400, reason="JSON body nested too deeply"), query, headers)
    get = query.get
    raw = j.SessionData
    return _finish(
        session=_text(j.Session) or _text(j.CallSid) or get("Session") or get("CallSid"),
        call_sid=_text(j.CallSid) or get("CallSid"),
        from_number=_text(j.From) or get("From"),
        to_number=_text(j.To) or get("To"),
        caller_name=_text(j.CallerName) or get("CallerName"),
        direction=_text(j.Direction) or get("Direction"),
        call_status=_text(j.CallStatus) or get("CallStatus"),
        domain=_text(j.Domain) or get("Domain") or _text(j.AccountSid) or get("AccountSid"),
        application_sid=_text(j.ApplicationSid) or get("ApplicationSid"),
        dial_call_status=_text(j.DialCallStatus) or get("DialCallStatus"),
        has_session_data=(bool(raw) and bytes(raw) != b"null") or get("SessionData") is not None,
        query=query,
        headers=headers,
    )


_NO_FIELDS: dict[str, str | None] = {}


def _build(
    fields: dict[str, str | None], query: dict[str, str | None], headers: dict[str, str]
) -> VoiceRequest | ParseError:
    get = fields.get
    return _finish(
        session=get("Session") or get("CallSid"),
        call_sid=get("CallSid"),
        from_number=get("From"),
        to_number=get("To"),
        caller_name=get("CallerName"),
        direction=get("Direction"),
        call_status=get("CallStatus"),
        domain=get("Domain") or get("AccountSid"),
        application_sid=get("ApplicationSid"),
        dial_call_status=get("DialCallStatus"),
        has_session_data=get("SessionData") is not None,
        query=query,
        headers=headers,
    )


def _finish(
    *,
    session: str | None,
    call_sid: str | None,
    from_number: str | None,
    to_number: str | None,
    caller_name: str | None,
    direction: str | None,
    call_status: str | None,
    domain: str | None,
    application_sid: str | None,
    dial_call_status: str | None,
    has_session_data: bool,
    query: dict[str, str | None],
    headers: dict[str, str],
) -> VoiceRequest | ParseError:
    """Validate the merged fields (body, query, then headers) into a VoiceRequest."""
    session = session or headers.get("x-cx-session") or None
    if not session:
        return ParseError(status=400, reason="missing Session (no Session, CallSid or X-CX-Session)")
    if SESSION_RE.fullmatch(session) is None:
        return ParseError(status=400, reason="invalid Session token")
    for name, value in (
        ("From", from_number),
        ("To", to_number),
        ("CallerName", caller_name),
        ("Domain", domain),
    ):
        if value is not None and len(value) > MAX_VALUE_LENGTH:
            return ParseError(
                status=400, reason=f"{name} is longer than {MAX_VALUE_LENGTH} characters", session=session
            )
    for name, value in (
        ("Direction", direction),
        ("CallStatus", call_status),
        ("DialCallStatus", dial_call_status),
    ):
        if value is not None and len(value) > MAX_STATUS_LENGTH:
            return ParseError(
                status=400, reason=f"{name} is longer than {MAX_STATUS_LENGTH} characters", session=session
            )
    attempt: int | None = None
    agent_id: int | None = None
    branch: int | None = None
    rule_id: int | None = None
    if query:
        parsed_attempt = _small_int(query.get("attempt"), "attempt", 1, 100)
        if isinstance(parsed_attempt, ParseError):
            return parsed_attempt
        parsed_agent = _small_int(query.get("agent"), "agent", 1, 2**62)
        if isinstance(parsed_agent, ParseError):
            return parsed_agent
        attempt, agent_id = parsed_attempt, parsed_agent
        if "rule" in query:
            parsed_rule = _small_int(query.get("rule"), "rule", 1, 2**62)
            if isinstance(parsed_rule, ParseError):
                return parsed_rule
            rule_id = parsed_rule
        if "branch" in query:
            parsed_branch = _small_int(query.get("branch"), "branch", 0, 99)
            if isinstance(parsed_branch, ParseError):
                return parsed_branch
            branch = parsed_branch
    return VoiceRequest(
        session=session,
        call_sid=call_sid,
        from_number=from_number or headers.get("x-cx-from") or "",
        to_number=to_number or headers.get("x-cx-to") or "",
        caller_name=caller_name,
        direction=direction.lower() if direction else "",
        call_status=call_status.lower() if call_status else None,
        domain=domain or headers.get("x-cx-domain"),
        application_sid=application_sid,
        dial_call_status=dial_call_status.lower() if dial_call_status else None,
        has_session_data=has_session_data,
        attempt=attempt or 1,
        agent_id=agent_id,
        branch=branch,
        rule_id=rule_id,
    )


def _identify(error: ParseError, query: dict[str, str | None], headers: dict[str, str]) -> ParseError:
    """Attach the session from the query or headers so the caller may still answer the call with
    valid CXML."""
    session = query.get("Session") or query.get("CallSid") or headers.get("x-cx-session")
    if session and SESSION_RE.fullmatch(session):
        return ParseError(status=error.status, reason=error.reason, session=session)
    return error
