"""Log lines: HotLog renders what structlog renders; BufferedLines writes whole lines, together, late
by at most its delay, in chunks a pipe keeps whole."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from collections.abc import Iterator

import pytest
import structlog

from shared import logging as vlb_logging
from shared.logging import PIPE_BUF, BufferedLines, HotLog, configure_logging, flush_logs


class Capture(io.StringIO):
    """A text stream that remembers each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


@pytest.fixture
def stderr() -> Iterator[Capture]:
    yield Capture()
    flush_logs()
    configure_logging("json", "info")  # back to unbuffered stderr for the rest of the run


def lines(capture: Capture) -> list[dict[str, object]]:
    return [json.loads(line) for line in capture.getvalue().splitlines()]


def test_hot_log_renders_the_structlog_line(stderr: Capture) -> None:
    configure_logging("json", "info", file=stderr)
    fields = {"path": "application", "tenant_id": 7, "latency_us": 12, "authorization": "Bearer s3cret"}
    structlog.get_logger("t").info("webhook", **fields)
    HotLog("t").info("webhook", **fields)
    first, second = lines(stderr)
    assert list(first) == list(second)  # same keys, same order
    assert first.pop("timestamp")
    assert second.pop("timestamp")
    assert first == second
    assert first["authorization"] == "***"
    assert "s3cret" not in stderr.getvalue()


def test_hot_log_respects_the_level(stderr: Capture) -> None:
    configure_logging("json", "warning", file=stderr)
    HotLog("t").info("webhook", a=1)
    assert stderr.getvalue() == ""


def test_mixed_case_secret_keys_are_masked(stderr: Capture) -> None:
    configure_logging("json", "info", file=stderr)
    structlog.get_logger("t").info(
        "x", **{"X-Cx-ApiKey": "k1", "PASSWORD": "k2", "Token": "k3", "pAssword": "k4"}
    )
    assert all(v == "***" for k, v in lines(stderr)[0].items() if k not in ("event", "level", "timestamp"))


def test_buffered_lines_outside_a_loop_are_written_at_once(stderr: Capture) -> None:
    configure_logging("json", "info", buffer_ms=50, file=stderr)
    structlog.get_logger("t").info("one")
    assert [line["event"] for line in lines(stderr)] == ["one"]


async def test_buffered_lines_from_the_loop_are_written_together_after_the_delay(stderr: Capture) -> None:
    configure_logging("json", "info", buffer_ms=30, file=stderr)
    log = structlog.get_logger("t")
    for i in range(20):
        log.info("line", n=i)
    logging.getLogger("library").warning("from the stdlib")
    HotLog("t").info("hot")
    assert stderr.getvalue() == ""
    await asyncio.sleep(0.1)
    written = lines(stderr)
    assert [w.get("n") for w in written[:20]] == list(range(20))
    assert written[20]["event"] == "from the stdlib"
    assert written[21]["event"] == "hot"
    assert len(stderr.writes) == 1  # one write for all of them


async def test_pipe_chunks_hold_whole_lines_of_at_most_pipe_buf_bytes() -> None:
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    with os.fdopen(write_fd, "w") as pipe:
        sink = BufferedLines(pipe, delay_s=10.0)
        capture = Capture()
        sink._file = capture  # the chunk size was chosen for the pipe
        payload = [f"line {i} " + "x" * (100 + i) for i in range(200)]
        for line in payload:
            sink.msg(line)
        sink.flush()
    os.close(read_fd)
    assert "".join(capture.writes).splitlines() == payload
    assert all(len(w.encode()) <= PIPE_BUF and w.endswith("\n") for w in capture.writes)
    assert len(capture.writes) > 1


def test_a_regular_file_takes_larger_chunks(tmp_path: os.PathLike[str]) -> None:
    with open(os.path.join(tmp_path, "log"), "w") as file:
        assert BufferedLines(file, 0.01)._chunk > PIPE_BUF
    assert BufferedLines(io.StringIO(), 0.01)._chunk == PIPE_BUF


def test_configuration_keeps_one_sink(stderr: Capture) -> None:
    configure_logging("json", "info", buffer_ms=10, file=stderr)
    assert vlb_logging._sink is not None
    configure_logging("json", "info", file=stderr)
    assert vlb_logging._sink is None
