"""structlog set-up, done once per process: JSON lines when not a terminal, console otherwise."""

from __future__ import annotations

import asyncio
import atexit
import datetime
import io
import logging
import os
import stat
import sys
import time
from typing import TextIO

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


# A write of at most this many bytes to a pipe is never interleaved with another process' writes (the
# workers of one server share their stderr).
PIPE_BUF = 4096


class BufferedLines:
    """A structlog logger (and the stdlib handler's sink) that keeps the lines written from a running
    event loop for up to ``delay_s`` and writes them together, in chunks of whole lines (at most
    PIPE_BUF bytes to a pipe, so the lines of several workers never mix): one write(2) per chunk
    instead of one per line. On the engine's hot path a write
    per webhook costs more than rendering the line (every syscall hands the GIL to the server's threads).
    Lines written outside an event loop go out at once, after whatever is buffered; the rest is
    written at exit. A process killed with SIGKILL loses at most ``delay_s`` of lines."""

    def __init__(self, file: TextIO, delay_s: float) -> None:
        self._file = file
        self._delay_s = delay_s
        self._chunk = _chunk_size(file)
        self._lines: list[str] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def msg(self, message: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or self._timer_loop not in (None, loop):
            self.flush()
            if loop is None:
                self._write([message])
                return
        self._lines.append(message)
        self._size += len(message) + 1 if message.isascii() else len(message.encode()) + 1
        if self._size >= self._chunk:
            self.flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._delay_s, self.flush)
            self._timer_loop = loop

    log = debug = info = warn = warning = err = error = critical = exception = fatal = failure = msg

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_loop = None
        lines, self._lines, self._size = self._lines, [], 0
        chunk: list[str] = []
        size = 0
        for line in lines:
            n = len(line) + 1 if line.isascii() else len(line.encode()) + 1
            if chunk and size + n > self._chunk:
                self._write(chunk)
                chunk, size = [], 0
            chunk.append(line)
            size += n
        if chunk:
            self._write(chunk)

    def _write(self, lines: list[str]) -> None:
        try:
            self._file.write("\n".join(lines) + "\n")
            self._file.flush()
        except (OSError, ValueError):  # stderr closed or gone: nothing useful to do with a log line
            pass


def _chunk_size(file: TextIO) -> int:
    """PIPE_BUF for pipes and anything unknown; 64 KiB for a regular file (each write(2) to a regular
    file is placed whole, whichever process wrote it)."""
    try:
        regular = stat.S_ISREG(os.fstat(file.fileno()).st_mode)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        regular = False
    return 65536 if regular else PIPE_BUF


class _BufferedHandler(logging.Handler):
    """The stdlib root handler: library records rendered like ours, into the same buffer (in order)."""

    def __init__(self, sink: BufferedLines) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.msg(self.format(record))
        except Exception:
            self.handleError(record)


_sink: BufferedLines | None = None
# What HotLog needs from the configuration (set by configure_logging).
_hot_json = False
_hot_level = logging.INFO
_hot_timestamp = _UtcTimestamp()
_hot_file: TextIO = sys.stderr


class HotLog:
    """A logger for one line per request on a measured hot path (the engine's webhook line). In JSON
    mode it renders exactly what the structlog configuration renders for ``log.info(event, **fields)``
    (the fields, then ``event``, ``level``, ``timestamp``; secrets masked; the same sink), but without
    structlog's per-call machinery (copying the bound context, the processor chain), which costs about
    as much again as the line itself. Context variables are not merged in. In console mode it hands
    the call to structlog."""

    __slots__ = ("_fallback",)

    def __init__(self, name: str) -> None:
        self._fallback = structlog.get_logger(name)

    def info(self, event: str, **fields: object) -> None:
        if _hot_level > logging.INFO:
            return
        if not _hot_json:
            self._fallback.info(event, **fields)
            return
        fields["event"] = event
        fields["level"] = "info"
        _hot_timestamp(None, "info", fields)
        _drop_secrets(None, "info", fields)
        line = _ENCODER.encode(fields).decode()
        if _sink is not None:
            _sink.msg(line)
        else:
            _hot_file.write(line + "\n")
            _hot_file.flush()


def flush_logs() -> None:
    """Write out buffered log lines now (at shutdown)."""
    if _sink is not None:
        _sink.flush()


atexit.register(flush_logs)


def configure_logging(
    log_format: str = "auto", level: str = "info", buffer_ms: float = 0.0, file: TextIO | None = None
) -> None:
    """Configure structlog and the stdlib root logger to render the same way, to ``file`` (stderr).
    ``buffer_ms`` > 0: lines logged from the event loop are written together at most that long after
    (see BufferedLines)."""
    global _sink, _hot_json, _hot_level, _hot_file
    out = file or sys.stderr
    use_json = log_format == "json" or (log_format == "auto" and not out.isatty())
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
    flush_logs()
    _hot_json, _hot_level, _hot_file = use_json, numeric, out
    _sink = BufferedLines(out, buffer_ms / 1000) if buffer_ms > 0 else None
    sink = _sink
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=(lambda *_args: sink) if sink is not None else structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
    handler: logging.Handler = _BufferedHandler(sink) if sink is not None else logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
