"""structlog set-up, done once per process: JSON lines when not a terminal, console otherwise."""

from __future__ import annotations

import datetime
import logging
import sys
import time

import msgspec
import structlog

SECRET_FIELDS = frozenset(
    {
        "password",
        "password_confirmation",
        "token",
        "authorization",
        "x-cx-apikey",
        "webhook_key",
        "current_password",
        "new_password",
        "username_password",
        "secret",
    }
)


# The spellings a key is checked in at once (one set intersection per line, on the engine's hot path);
# a key with any upper-case letter is also checked by the slower scan below.
_SECRET_SPELLINGS = frozenset(
    form for name in SECRET_FIELDS for form in (name, name.upper(), name.title(), name.capitalize())
)


def _drop_secrets(
    _logger: object, _method: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    for key in _SECRET_SPELLINGS.intersection(event):
        event[key] = "***"
    if not "".join(event).islower():  # some key is not all lower case: check it in any case
        for key in list(event):
            if key.lower() in SECRET_FIELDS:
                event[key] = "***"
    return event


class _UtcTimestamp:
    """``timestamp``: ISO 8601 in UTC with microseconds, like TimeStamper(fmt="iso", utc=True), with the
    date and time of day formatted once a second instead of once a line."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(
        self, _logger: object, _method: str, event: structlog.types.EventDict
    ) -> structlog.types.EventDict:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = datetime.datetime.fromtimestamp(second, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        event["timestamp"] = f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"
        return event


def _json_line(event: structlog.types.EventDict, **_kw: object) -> str:
    return _ENCODER.encode(event).decode()


def _fallback(value: object) -> object:
    return repr(value)


_ENCODER = msgspec.json.Encoder(enc_hook=_fallback)


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    """Configure structlog and the stdlib root logger to render the same way."""
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer: structlog.types.Processor = (
        # msgspec encodes a log line several times faster than json.dumps; the engine logs one per webhook.
        structlog.processors.JSONRenderer(serializer=_json_line)
        if use_json
        else structlog.dev.ConsoleRenderer()
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _UtcTimestamp(),
        _drop_secrets,
    ]
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
