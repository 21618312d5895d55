"""``vlb loadgen``: drive whole calls against one or more routing engines at a set rate, the way
Cloudonix drives them, and say what happened.

Every call: the application request (a routing decision) → when the answer dials an agent, the
``<Dial action>`` follow-ups of failed attempts (busy / no-answer → the engine's fallback chooses
another agent) → the session updates (new, processing, ringing, connected, the terminal one; some
sent twice, some out of order, some late after the terminal one, each to a random engine as a load
balancer in front of them would) → the CDR. Call lengths are drawn from realistic distributions
(ringing 2-20 s, talk time log-normal around 2 minutes) and multiplied by ``--time-scale`` so a run
fits in minutes.

While it runs it prints a progress line every second and, given a control plane, reads the group's
live counters (``GET /api/agent-groups/{id}/stats``) every second: a member with more active calls
than its capacity is a capacity violation. At the end it waits for the control plane to have written
the calls' records (found by the run's own called number) and prints the summary: calls by outcome,
decisions/s, decision latency p50/p95/p99/max, errors by kind, capacity violations, agents chosen
first, and records found against calls sent.

    vlb loadgen --engine http://127.0.0.1:8080 --domain demo.cloudonix.net --key KEY \\
        --rate 20 --duration 60 [--time-scale 0.02] \\
        [--control-plane http://127.0.0.1:8000 --email admin@demo.local --password PW --group 1]

Only 127.0.0.1 / localhost targets unless ``--allow-remote``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import secrets
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlparse

import aiohttp
import httpx
import msgspec

from routing_engine.simulate import _action_of, inbound_payload

_REPO = Path(__file__).resolve().parents[1]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
# Connections to the engines (aiohttp: httpx spent ~2 ms of the generator's CPU per request here, and
# one pool of 256 collapsed at 32 calls/s once requests queued, in httpcore's pool scan).
POOL_SIZE = 512
# How a call ends (shares of all calls): answered at once, answered after a busy or an unanswered
# first agent (the engine's fallback picks another), nobody answers, the caller hangs up while ringing.
OUTCOME_MIX = (
    ("answered", 0.70),
    ("busy_then_answered", 0.10),
    ("noanswer_then_answered", 0.08),
    ("noanswer", 0.04),
    ("caller_hangup", 0.08),
)


def fixture(name: str) -> Any:
    path = _REPO.parent / "shared" / "fixtures" / "cloudonix" / name
    if not path.is_file():
        path = _REPO / "tests" / "fixtures" / "cloudonix" / name
    return json.loads(path.read_text())


@dataclass
class Config:
    engines: list[str]
    domain: str
    key: str
    rate: float
    duration: float
    time_scale: float = 0.02
    control_plane: str | None = None
    token: str | None = None
    email: str | None = None
    password: str | None = None
    group: int | None = None
    duplicate_share: float = 0.10
    reorder_share: float = 0.10
    late_share: float = 0.05
    records_wait_s: float = 60.0
    timeout_s: float = 5.0
    max_in_flight: int = 5000
    seed: int | None = None
    progress: bool = True
    # Read the records through this control plane instead (another replica than the counters').
    records_control_plane: str | None = None
    to_number: str = ""  # the run's called number (records are found by it); default: a random one


@dataclass
class Summary:
    calls_sent: int = 0
    calls_completed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    decisions: int = 0
    latencies_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    stats_samples: int = 0
    stats_errors: int = 0
    capacity_violations: int = 0
    violation_detail: list[str] = field(default_factory=list)
    max_active: dict[int, int] = field(default_factory=dict)
    capacity: dict[int, int] = field(default_factory=dict)
    first_choice: Counter[int] = field(default_factory=Counter)
    window_calls: dict[int, int] = field(default_factory=dict)  # delta over the run, from the stats
    records_found: int | None = None
    records_by_status: dict[str, int] = field(default_factory=dict)
    to_number: str = ""

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_s:
            return 0.0
        ordered = sorted(self.latencies_s)
        index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
        return ordered[index] * 1000

    @property
    def lost_records(self) -> int | None:
        return None if self.records_found is None else max(0, self.calls_sent - self.records_found)

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls_sent": self.calls_sent,
            "calls_completed": self.calls_completed,
            "outcomes": dict(self.outcomes),
            "decisions": self.decisions,
            "decisions_per_s": round(self.decisions / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "latency_ms": {
                "p50": round(self.percentile_ms(0.50), 2),
                "p95": round(self.percentile_ms(0.95), 2),
                "p99": round(self.percentile_ms(0.99), 2),
                "max": round(max(self.latencies_s, default=0.0) * 1000, 2),
            },
            "errors": dict(self.errors),
            "requests": dict(self.requests),
            "elapsed_s": round(self.elapsed_s, 1),
            "stats_samples": self.stats_samples,
            "capacity_violations": self.capacity_violations,
            "max_active": self.max_active,
            "capacity": self.capacity,
            "first_choice": dict(self.first_choice),
            "window_calls": self.window_calls,
            "records_found": self.records_found,
            "records_lost": self.lost_records,
            "records_by_status": self.records_by_status,
        }

    def render(self) -> str:
        d = self.as_dict()
        lat = d["latency_ms"]
        lines = [
            f"calls sent {self.calls_sent}, completed {self.calls_completed} in {d['elapsed_s']} s; outcomes: "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items())),
            f"decisions {self.decisions} ({d['decisions_per_s']}/s); latency ms p50 {lat['p50']} p95 {lat['p95']} "
            f"p99 {lat['p99']} max {lat['max']}",
            "requests: " + ", ".join(f"{k} {v}" for k, v in sorted(self.requests.items())),
            "errors: " + (", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"),
        ]
        if self.stats_samples or self.stats_errors:
            peaks = ", ".join(
                f"agent {a}: {self.max_active.get(a, 0)}/{c}" for a, c in sorted(self.capacity.items())
            )
            lines.append(
                f"capacity violations {self.capacity_violations} in {self.stats_samples} samples of the "
                f"group's counters ({self.stats_errors} failed); peak active/capacity {peaks}"
            )
            if self.window_calls:
                counts = list(self.window_calls.values())
                lines.append(
                    "calls per agent over the run (group counters): "
                    + ", ".join(f"agent {a}: {n}" for a, n in sorted(self.window_calls.items()))
                    + f" (spread {max(counts) - min(counts)})"
                )
        lines.append(
            "first agent chosen: " + ", ".join(f"{a}: {n}" for a, n in sorted(self.first_choice.items()))
        )
        if self.records_found is not None:
            lines.append(
                f"records in the control plane {self.records_found} of {self.calls_sent} calls sent "
                f"(lost {self.lost_records}); by status "
                + ", ".join(f"{k} {v}" for k, v in sorted(self.records_by_status.items()))
            )
        return "\n".join(lines)


class Answer(NamedTuple):
    """An engine's answer: status and body."""

    status_code: int
    text: str


_JSON = msgspec.json.Encoder()


class Call:
    """One call's identifiers and the bodies Cloudonix would send for it."""

    UPDATES = {u["status"]: u for u in fixture("session-updates-answered.json")}
    CDR = fixture("cdr-answered.json")

    def __init__(self, config: Config, to_number: str) -> None:
        self.session = uuid.uuid4().hex
        self.domain = config.domain
        self.to = to_number
        self.from_ = f"+1415{secrets.randbelow(10**7):07d}"
        self.call_id = f"{self.session}@carrier.example"
        self.start_ms = int(time.time() * 1000)
        self.answer_ms: int | None = None
        self.end_ms: int | None = None
        self.headers = {
            "User-Agent": "vlb-loadgen",
            "Content-Type": "application/json",
            "Authorization": f"Bearer {config.key}",
            "X-CX-Domain": self.domain,
            "X-CX-Session": self.session,
        }
        self.app_body = inbound_payload(self.session, self.domain, to_number, self.from_, "inbound")

    def update(self, status: str) -> dict[str, Any]:
        base = self.UPDATES.get(status) or self.UPDATES["answer"]
        item = dict(base)
        item.update(
            status=status,
            token=self.session,
            eventId=f"{self.session}-{status}",
            domain=self.domain,
            callerId=self.from_,
            destination=self.to,
            callIds=[self.call_id],
            callStartTime=self.start_ms,
            callAnswerTime=self.answer_ms if status in ("connected", "answer") else None,
            callEndTime=self.end_ms if status not in ("new", "processing", "ringing", "connected") else None,
        )
        return item

    def cdr(self, disposition: str) -> dict[str, Any]:
        end = self.end_ms or int(time.time() * 1000)
        duration = max(0, (end - self.start_ms) // 1000)
        billsec = max(0, (end - self.answer_ms) // 1000) if self.answer_ms else 0
        body = dict(self.CDR)
        body.update(
            timestamp=end // 1000,
            to=self.to,
            disposition=disposition,
            duration=duration,
            billsec=billsec,
            call_id=self.call_id,
            domain=self.domain,
        )
        body["from"] = self.from_
        body["session"] = dict(
            self.CDR["session"],
            token=self.session,
            domain=self.domain,
            status=disposition,
            callerId=self.from_,
            destination=self.to,
            callStartTime=self.start_ms,
            callAnswerTime=self.answer_ms,
            callEndTime=end,
        )
        return body


def agent_of(action: str) -> int | None:
    values = parse_qs(urlparse(action.replace("&amp;", "&")).query).get("agent")
    try:
        return int(values[0]) if values else None
    except ValueError:
        return None


class LoadGen:
    def __init__(self, config: Config) -> None:
        self.c = config
        self.rng = random.Random(config.seed)
        self.summary = Summary()
        self.to_number = config.to_number or f"+1999{secrets.randbelow(10**7):07d}"
        self.summary.to_number = self.to_number
        self._next_engine = 0
        self._in_flight = 0
        self._window_start: dict[int, int] = {}
        self._session: aiohttp.ClientSession | None = None

    # --- time and randomness ---

    def _ring_s(self) -> float:
        return self.rng.uniform(2.0, 20.0) * self.c.time_scale

    def _talk_s(self) -> float:
        return min(1800.0, self.rng.lognormvariate(math.log(120.0), 0.8)) * self.c.time_scale

    def _outcome(self) -> str:
        roll, total = self.rng.random(), 0.0
        for name, share in OUTCOME_MIX:
            total += share
            if roll < total:
                return name
        return OUTCOME_MIX[0][0]

    def _engine(self) -> str:
        self._next_engine = (self._next_engine + 1) % len(self.c.engines)
        return self.c.engines[self._next_engine].rstrip("/")

    def _any_engine(self) -> str:
        return self.rng.choice(self.c.engines).rstrip("/")

    # --- requests ---

    async def _post(
        self, kind: str, url: str, body: dict[str, Any], headers: dict[str, str]
    ) -> Answer | None:
        assert self._session is not None
        self.summary.requests[kind] += 1
        try:
            async with self._session.post(url, data=_JSON.encode(body), headers=headers) as got:
                response = Answer(got.status, await got.text())
        except TimeoutError:
            self.summary.errors[f"{kind} timeout"] += 1
            return None
        except aiohttp.ClientError as exc:
            self.summary.errors[f"{kind} {type(exc).__name__}"] += 1
            return None
        expected = 200 if kind in ("application", "dial") else 204
        if response.status_code != expected:
            self.summary.errors[f"{kind} HTTP {response.status_code}"] += 1
        return response

    async def _decide(
        self, engine: str, path: str, body: dict[str, Any], call: Call, kind: str
    ) -> str | None:
        """A request that asks for a decision; returns the ``<Dial action>`` it answered, if any."""
        started = time.perf_counter()
        response = await self._post(kind, f"{engine}{path}", body, call.headers)
        if response is None or response.status_code != 200:
            return None
        self.summary.latencies_s.append(time.perf_counter() - started)
        self.summary.decisions += 1
        return _action_of(response.text)

    async def _updates(self, call: Call, statuses: list[str]) -> None:
        """Deliver session updates, with duplicates and reordering as a real webhook sender does."""
        order = list(statuses)
        if len(order) >= 2 and self.rng.random() < self.c.reorder_share:
            i = self.rng.randrange(len(order) - 1)
            order[i], order[i + 1] = order[i + 1], order[i]
        for status in order:
            body = call.update(status)
            path = f"/api/voice/session/update/{call.domain}"
            await self._post("update", f"{self._any_engine()}{path}", body, call.headers)
            if self.rng.random() < self.c.duplicate_share:
                await self._post("update", f"{self._any_engine()}{path}", body, call.headers)

    async def _end(self, call: Call, terminal: str, disposition: str, live: list[str]) -> None:
        call.end_ms = int(time.time() * 1000)
        await self._updates(call, [terminal])
        if live and self.rng.random() < self.c.late_share:  # a stale update arriving after the end
            await self._updates(call, [self.rng.choice(live)])
        cdr_path = f"/api/voice/session/cdr/{call.domain}"
        await self._post("cdr", f"{self._any_engine()}{cdr_path}", call.cdr(disposition), call.headers)

    async def call(self) -> None:
        call = Call(self.c, self.to_number)
        engine = self._engine()
        outcome = self._outcome()
        path = f"/api/voice/application/{call.domain}"
        action = await self._decide(engine, path, call.app_body, call, "application")
        await self._updates(call, ["new", "processing"])
        if action is None:
            self.summary.outcomes["no_agent"] += 1
            await asyncio.sleep(self.rng.uniform(0.5, 3.0) * self.c.time_scale)
            await self._end(call, "busy", "BUSY", ["processing"])
            return
        agent = agent_of(action)
        if agent is not None:
            self.summary.first_choice[agent] += 1
        await self._updates(call, ["ringing"])
        await asyncio.sleep(self._ring_s())
        failures = {"busy_then_answered": ["busy"], "noanswer_then_answered": ["no-answer"]}.get(outcome, [])
        if outcome == "noanswer":
            failures = ["no-answer"] * 5  # until the engine has no agent left to try
        for status in failures:
            parsed = urlparse(action.replace("&amp;", "&"))
            follow = f"{engine}{parsed.path}?{parsed.query}"
            action = await self._follow(follow, call, status)
            if action is None:
                self.summary.outcomes[f"{outcome}: no agent left"] += 1
                await self._end(
                    call,
                    "noanswer" if status == "no-answer" else "busy",
                    "NOANSWER" if status == "no-answer" else "BUSY",
                    ["ringing"],
                )
                return
            await asyncio.sleep(self._ring_s())
        if outcome == "caller_hangup":
            self.summary.outcomes[outcome] += 1
            await self._end(call, "cancel", "CANCEL", ["ringing"])
            return
        call.answer_ms = int(time.time() * 1000)
        await self._updates(call, ["connected"])
        await asyncio.sleep(self._talk_s())
        self.summary.outcomes[outcome] += 1
        # The agent leg ends (the Dial action with "completed"), then the session and its CDR.
        parsed = urlparse(action.replace("&amp;", "&"))
        await self._follow(f"{engine}{parsed.path}?{parsed.query}", call, "completed", decision=False)
        await self._end(call, "answer", "ANSWER", ["connected", "ringing"])

    async def _follow(self, url: str, call: Call, status: str, decision: bool = True) -> str | None:
        body = {**call.app_body, "DialCallStatus": status}
        if not decision:
            await self._post("dial", url, body, call.headers)
            return None
        started = time.perf_counter()
        response = await self._post("dial", url, body, call.headers)
        if response is None or response.status_code != 200:
            return None
        self.summary.latencies_s.append(time.perf_counter() - started)
        self.summary.decisions += 1
        return _action_of(response.text)

    async def _one(self) -> None:
        self._in_flight += 1
        try:
            await self.call()
            self.summary.calls_completed += 1
        except Exception as exc:  # a bug in a call must not end the run; it is counted
            self.summary.errors[f"call {type(exc).__name__}"] += 1
        finally:
            self._in_flight -= 1

    # --- the control plane ---

    async def _cp_client(self) -> httpx.AsyncClient | None:
        if not self.c.control_plane:
            return None
        client = httpx.AsyncClient(base_url=self.c.control_plane.rstrip("/"), timeout=10.0)
        token = self.c.token
        if token is None and self.c.email and self.c.password:
            answer = await client.post(
                "/api/login", json={"email": self.c.email, "password": self.c.password}
            )
            answer.raise_for_status()
            token = answer.json()["token"]
        if token:
            client.headers["Authorization"] = f"Bearer {token}"
        return client

    async def _group_stats(self, cp: httpx.AsyncClient) -> dict[str, Any] | None:
        try:
            answer = await cp.get(f"/api/agent-groups/{self.c.group}/stats")
            answer.raise_for_status()
            data: dict[str, Any] = answer.json()
            return data
        except (httpx.HTTPError, ValueError):
            self.summary.stats_errors += 1
            return None

    async def _watch_capacity(self, cp: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            stats = await self._group_stats(cp)
            if stats is not None:
                self.summary.stats_samples += 1
                for m in stats.get("members", []):
                    agent, active, capacity = int(m["agent_id"]), int(m["active_calls"]), int(m["capacity"])
                    self.summary.capacity[agent] = capacity
                    self.summary.max_active[agent] = max(self.summary.max_active.get(agent, 0), active)
                    if capacity and active > capacity:
                        self.summary.capacity_violations += 1
                        self.summary.violation_detail.append(f"agent {agent}: {active} > {capacity}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    async def _window(self, cp: httpx.AsyncClient) -> dict[int, int]:
        stats = await self._group_stats(cp)
        return {int(m["agent_id"]): int(m["window_calls"]) for m in (stats or {}).get("members", [])}

    async def _count_records(self, cp: httpx.AsyncClient) -> tuple[int, dict[str, int]]:
        answer = await cp.get("/api/call-records", params={"to": self.to_number, "per_page": 1})
        answer.raise_for_status()
        total = int(answer.json()["meta"]["total"])
        summary = await cp.get("/api/call-records/statistics/summary", params={"to": self.to_number})
        by_status: dict[str, int] = {}
        if summary.status_code == 200:
            data = summary.json()
            raw = data.get("by_status") or data.get("statuses") or {}
            if isinstance(raw, dict):
                by_status = {str(k): int(v) for k, v in raw.items() if isinstance(v, int | float)}
        return total, by_status

    async def _records(self, cp: httpx.AsyncClient) -> None:
        """Wait (bounded) until the control plane holds a record per call sent, or stops adding."""
        deadline = time.monotonic() + self.c.records_wait_s
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            try:
                found, by_status = await self._count_records(cp)
            except (httpx.HTTPError, ValueError, KeyError):
                await asyncio.sleep(1.0)
                continue
            self.summary.records_found, self.summary.records_by_status = found, by_status
            if found >= self.summary.calls_sent:
                return
            if found != last:
                last, since = found, time.monotonic()
            elif time.monotonic() - since > 15.0:
                return
            await asyncio.sleep(1.0)

    # --- the run ---

    def _progress(self, started: float) -> None:
        s = self.summary
        elapsed = time.monotonic() - started
        recent = s.latencies_s[-2000:]
        p99 = sorted(recent)[max(0, math.ceil(0.99 * len(recent)) - 1)] * 1000 if recent else 0.0
        print(
            f"\r{elapsed:6.0f} s  calls {s.calls_sent} sent, {s.calls_completed} done, {self._in_flight} in flight"
            f"  {s.decisions / max(elapsed, 1e-9):7.1f} decisions/s  p99 {p99:6.1f} ms"
            f"  errors {sum(s.errors.values())}  violations {s.capacity_violations}   ",
            end="",
            file=sys.stderr,
            flush=True,
        )

    async def run(self) -> Summary:
        cp = await self._cp_client()
        stop = asyncio.Event()
        watcher: asyncio.Task[None] | None = None
        if cp is not None and self.c.group is not None:
            self._window_start = await self._window(cp)
            watcher = asyncio.create_task(self._watch_capacity(cp, stop))
        tasks: set[asyncio.Task[None]] = set()
        started = time.monotonic()
        next_progress = started + 1.0
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=POOL_SIZE),
            timeout=aiohttp.ClientTimeout(total=self.c.timeout_s),
        ) as session:
            self._session = session
            total = int(self.c.rate * self.c.duration)
            for n in range(total):
                due = started + n / self.c.rate
                now = time.monotonic()
                if due > now:
                    await asyncio.sleep(due - now)
                if self._in_flight >= self.c.max_in_flight:
                    self.summary.errors["not started: too many calls in flight"] += 1
                    continue
                self.summary.calls_sent += 1
                task = asyncio.create_task(self._one())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                if self.c.progress and time.monotonic() >= next_progress:
                    self._progress(started)
                    next_progress += 1.0
            while tasks:
                await asyncio.wait(set(tasks), timeout=1.0)
                if self.c.progress:
                    self._progress(started)
            self.summary.elapsed_s = time.monotonic() - started
        if self.c.progress:
            print(file=sys.stderr)
        if cp is not None:
            try:
                if watcher is not None:
                    stop.set()
                    await watcher
                    end = await self._window(cp)
                    self.summary.window_calls = {a: n - self._window_start.get(a, 0) for a, n in end.items()}
                if self.c.records_control_plane:
                    other = httpx.AsyncClient(
                        base_url=self.c.records_control_plane.rstrip("/"), headers=cp.headers, timeout=10.0
                    )
                    async with other:
                        await self._records(other)
                else:
                    await self._records(cp)
            finally:
                await cp.aclose()
        return self.summary


def check_local(urls: list[str]) -> None:
    for url in urls:
        host = urlparse(url).hostname or ""
        if host not in LOCAL_HOSTS:
            raise SystemExit(f"{url}: only 127.0.0.1 targets unless --allow-remote")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlb loadgen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", action="append", required=True, help="engine base URL (repeatable)")
    parser.add_argument("--domain", required=True)
    parser.add_argument("--key", required=True, help="the domain's webhook key")
    parser.add_argument("--rate", type=float, default=10.0, help="new calls per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of new calls")
    parser.add_argument(
        "--time-scale", type=float, default=0.02, help="multiplies ringing and talk times (1 = real time)"
    )
    parser.add_argument("--control-plane", help="control-plane base URL (counters and records)")
    parser.add_argument("--token", help="control-plane bearer token (or --email and --password)")
    parser.add_argument("--email")
    parser.add_argument("--password")
    parser.add_argument("--group", type=int, help="agent group whose counters are watched")
    parser.add_argument("--duplicates", type=float, default=0.10, help="share of updates sent twice")
    parser.add_argument("--reorder", type=float, default=0.10, help="share of calls with two updates swapped")
    parser.add_argument(
        "--late", type=float, default=0.05, help="share of calls with a stale update after the end"
    )
    parser.add_argument("--records-wait", type=float, default=60.0, help="seconds to wait for records")
    parser.add_argument("--timeout", type=float, default=5.0, help="per request, seconds")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--allow-remote", action="store_true", help="allow targets other than 127.0.0.1")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    targets = list(args.engine) + ([args.control_plane] if args.control_plane else [])
    if not args.allow_remote:
        check_local(targets)
    if args.rate <= 0 or args.duration <= 0:
        raise SystemExit("--rate and --duration must be positive")
    config = Config(
        engines=args.engine,
        domain=args.domain,
        key=args.key,
        rate=args.rate,
        duration=args.duration,
        time_scale=args.time_scale,
        control_plane=args.control_plane,
        token=args.token,
        email=args.email,
        password=args.password,
        group=args.group,
        duplicate_share=args.duplicates,
        reorder_share=args.reorder,
        late_share=args.late,
        records_wait_s=args.records_wait,
        timeout_s=args.timeout,
        seed=args.seed,
    )
    summary = asyncio.run(LoadGen(config).run())
    print(json.dumps(summary.as_dict(), indent=2) if args.json else summary.render())
    failed = summary.errors or summary.capacity_violations or (summary.lost_records or 0)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
