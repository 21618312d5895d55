"""The balancer: picks an agent for a call with one Redis script call (balancer.lua) that does
idempotency, selection and counter updates atomically, and falls back to a local in-process view when
Redis is down. Coalescing: up to ``in_flight`` script calls per tenant are out at a time (pipelined on
one connection; Redis runs them one after the other); a decision made while fewer are out goes at
once, alone, and the decisions that arrive while all are out wait and go together in the next call (up
to MAX_BATCH), so batches grow with load and an idle engine never waits.

Reconcile: what the local view decided and freed while Redis was unreachable is noted per tenant and
session, and merged into Redis (balancer.lua's ``adopt``) before the tenant's next script call once
Redis answers again, and by a background task meanwhile: the calls still live take their slots in the
agents' ``active`` sets (and their call hashes, so their CDR frees them exactly once), the ones that
ended free whatever slot Redis still held for them."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import random
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from importlib.resources import files
from typing import Any

import msgspec
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from routing_engine.script_client import ScriptCaller
from shared.redis_client import RedisClient
from shared.redis_keys import WINDOW_BUCKET_TTL_S, TenantKeys

logger = structlog.get_logger(__name__)

SCRIPT = files("routing_engine").joinpath("balancer.lua").read_text(encoding="utf-8")
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()

# The shortest common start of a target's heads worth sending once (balancer.lua's opts.hp).
HEAD_PREFIX_MIN = 16
# Decisions per script call at most: bounds how long one script holds Redis under a burst.
MAX_BATCH = 64
# Longest wait for one script call before the local view decides (redis-py's default retry policy
# alone can take seconds against a dead server; Cloudonix is waiting on the call).
DECIDE_TIMEOUT_S = 1.0
# How long after a Redis failure decisions go straight to the local view before Redis is tried again.
REDIS_RETRY_S = 1.0
# Bounds of the local (degraded-mode) view.
LOCAL_CALLS_LIMIT = 100_000
# How long a new window bucket lives (the script's decide ARGV[5]).
BUCKET_TTL = str(WINDOW_BUCKET_TTL_S)
# Replies of the decide script: index, agent (0 = none), attempt, cxml, replay, outlier note, overflow
# step (1-based index into settings.overflow's flattened chain; 0 = the group itself or no answer),
# trace (the per-candidate codes, balancer.lua's header).
REPLY_FIELDS = 8
# Options of a target that has none.
NO_OPTS: dict[str, Any] = {}
# A dial-status that counts as the agent's failure (settings.outlier) -> the reason it is noted as;
# "canceled" is not the agent's doing (the caller hung up), "unknown" is taken as failed (SPEC §3).
AGENT_FAILURES = {
    "busy": "busy",
    "failed": "failed",
    "unknown": "failed",
    "no-answer": "no_answer",
    "noanswer": "no_answer",
}
# Calls merged into Redis per ``adopt`` script call (bounds how long one holds Redis).
ADOPT_BATCH = 500
# What "Redis is unreachable" looks like (redis-py wraps most socket errors; OSError for the rest).
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError)


class PackedTarget:
    """A routing target as balancer.lua reads it, msgpack-encoded once (``pack_target``) and spliced
    into every batch that names it; ``random``: it (or a group of its overflow chain) draws random
    numbers. Hashed by identity: a batch lists each one once."""

    __slots__ = ("random", "raw")

    def __init__(self, raw: msgspec.Raw, random: bool) -> None:
        self.raw = raw
        self.random = random


class Candidate(msgspec.Struct, frozen=True, gc=False, array_like=True):
    agent_id: int
    priority: int
    capacity: int  # 0 = unlimited
    weight: int = 100


class DecideRequest(msgspec.Struct, frozen=True, gc=False):
    """One decision. Its answers come in parts, so the script builds only the one it picks: the answer
    for ``candidates[i]`` is ``answers[i][0] + caller + answers[i][1]`` (just ``answers[i][0]`` when
    the tail is empty: a stream answer has no ``<Dial>`` to carry a caller id)."""

    tenant_id: int
    session: str  # Cloudonix session token
    stage: str  # "app" (first request) or "dial-<n>" (dial-status after attempt n)
    # "load_balanced" | "priority" | "round_robin" | "weighted" | "least_active" | "single" (agent target)
    strategy: str
    group_id: int  # 0 for single-agent targets
    window_hours: int
    max_attempts: int
    fallback_enabled: bool
    candidates: tuple[Candidate, ...]  # in (priority, agent_id) order
    answers: tuple[tuple[str, str], ...]  # (head, tail) per candidate
    no_agent: str  # the answer when no candidate can take the call
    caller: str = ""  # what goes between head and tail (the escaped callerId attribute), or nothing
    failed_agent: int | None = None  # dial-status failure: the agent whose slot to free first
    # The caller's normalised number, only when the group is sticky (sticky_s > 0): the agent this
    # caller last reached in the group within sticky_s seconds is chosen again when it can take the call.
    from_number: str = ""
    sticky_s: int = 0
    # priority: rotate among members of equal priority (False: stable order by id)
    rotate: bool = True
    fail_status: str = ""  # the failed dial's reason when it counts against the agent (AGENT_FAILURES)
    opts: dict[str, Any] = msgspec.field(default_factory=lambda: NO_OPTS)  # the target's outlier options
    # settings.overflow, flattened: per step a DecideRequest of another group (only its target fields
    # are used) or an answer string, "N<cxml>" (a number: dialled once per call) or "A<cxml>" (an
    # announcement). Tried in order when the target's own candidates are exhausted.
    overflow: tuple[Any, ...] = ()
    # The target fields above packed for the script (pack_target), made once per compiled target and
    # rendering; None: encode_batch packs them itself.
    packed: PackedTarget | None = None

    def answer(self, index: int) -> str:
        """The answer for candidate ``index`` (-1: the no-agent answer)."""
        if index < 0:
            return self.no_agent
        head, tail = self.answers[index]
        return head + self.caller + tail if tail else head


class DecideResult(msgspec.Struct, frozen=True, gc=False):
    index: int  # chosen candidate index, -1 = none
    agent_id: int | None
    attempt: int
    cxml: str
    replay: bool  # (tenant, session, stage) was decided before: nothing moved
    degraded: bool  # Redis was unreachable and the local view decided
    overflow_step: int = 0  # the settings.overflow step that answered (1-based), 0 = none
    # Why each candidate was or was not chosen, one code per candidate (balancer.lua's header; shared
    # CANDIDATE_CODES); "" for a replay or a decision of the local view.
    trace: str = ""


class OutlierNote(msgspec.Struct, frozen=True, gc=False):
    """An agent ejected from a group's selection (``kind`` "ejected") or back in it after a success
    on probation ("returned"), as balancer.lua reports it with the decision or release that did it."""

    kind: str
    group_id: int
    agent_id: int
    until_ms: int  # end of the ejection (epoch ms); 0 for "returned"
    ejections: int  # ejections in a row, this one included (the back-off's exponent + 1)
    reason: str  # "<trigger>:<failure>", e.g. "consecutive:busy", "failure_rate:short_call"
    backoff_s: int

    @classmethod
    def parse(cls, raw: bytes | str) -> OutlierNote | None:
        text = raw.decode() if isinstance(raw, bytes) else raw
        if not text:
            return None
        kind, group, agent, until, k, reason, backoff = text.split("|", 6)
        return cls(
            kind="ejected" if kind == "e" else "returned",
            group_id=int(group),
            agent_id=int(agent),
            until_ms=int(until),
            ejections=int(k),
            reason=reason,
            backoff_s=int(backoff),
        )


# Called with (tenant_id, session, note) for each outlier note a script call returns.
OutlierSink = Callable[[int, str, OutlierNote], None]


class AgentCounters(msgspec.Struct, frozen=True, gc=False):
    window_calls: int
    active_calls: int
    last_chosen_ms: int | None  # epoch ms


_ENCODE = msgspec.msgpack.Encoder().encode


# Strategies that draw random numbers in the script: a batch with one of them carries a seed (Redis 6
# seeds a script's math.random identically on every call).
RANDOM_STRATEGIES = frozenset({"weighted", "least_active"})
_seeds = random.Random()


def pack_target(req: DecideRequest) -> PackedTarget:
    """``req``'s target fields as the script's target array:

        [strategy, group, window_hours, max_attempts, fallback, n, agent, priority, capacity
        (n times; agent as a string, as the keys use it), head, tail (n times), no_agent, opts]

    (the same 3 values per candidate as before weights existed: the target stays within the 64 array
    slots Lua's unpacking sizes it to for 10 candidates). opts (always last, read as ``e[#e]``) a map
    with only the keys that apply: ``sticky_s``, ``w`` (weighted: the weights in candidate order),
    ``hp`` (the start every head shares, sent once: the heads hold the rest),
    ``rotate`` (False only), ``unl`` (every candidate's capacity is unlimited: the trace of a first
    choice is "*"), ``ovf`` (settings.overflow: per step the group's own target array,
    inline, or an answer string) and the ``ol_*`` keys of settings.outlier. The compiled targets'
    packs are made once per rendering (decide.py); this is what they cost, once."""
    target: list[Any] = [
        req.strategy,
        req.group_id,
        req.window_hours,
        req.max_attempts,
        req.fallback_enabled,
        len(req.candidates),
    ]
    for c in req.candidates:
        target += (str(c.agent_id), c.priority, c.capacity)
    # The heads share their start (the answer's opening up to the dial action's agent id): sent once.
    prefix = os.path.commonprefix([h for h, _ in req.answers]) if len(req.answers) > 1 else ""  # noqa: RUF071 (characters wanted)
    if len(prefix) < HEAD_PREFIX_MIN:
        prefix = ""
    cut = len(prefix)
    for head, tail in req.answers:
        target += (head[cut:], tail)
    is_random = req.strategy in RANDOM_STRATEGIES
    weighted = req.strategy == "weighted"
    opts: dict[str, Any] = req.opts
    unlimited = bool(req.candidates) and all(c.capacity == 0 for c in req.candidates)
    if (
        req.sticky_s
        or (not req.rotate and req.strategy == "priority")
        or req.overflow
        or unlimited
        or weighted
        or prefix
    ):
        opts = dict(opts)
        if prefix:
            opts["hp"] = prefix
        if unlimited:
            opts["unl"] = 1
        if weighted:
            opts["w"] = [c.weight for c in req.candidates]
        if req.sticky_s:
            opts["sticky_s"] = req.sticky_s
        if not req.rotate and req.strategy == "priority":
            opts["rotate"] = False
        if req.overflow:
            steps: list[Any] = []
            for step in req.overflow:
                if isinstance(step, str):
                    steps.append(step)
                else:
                    packed = step.packed or pack_target(step)
                    is_random = is_random or packed.random
                    steps.append(packed.raw)
            opts["ovf"] = steps
    target += (req.no_agent, opts)
    return PackedTarget(msgspec.Raw(_ENCODE(target)), is_random)


def encode_batch(requests: Sequence[DecideRequest], rng: random.Random | None = None) -> bytes:
    """The ``decide`` payload of balancer.lua: one flat msgpack array (Lua builds a table per array,
    and tables are what its unpacking costs), the routing targets of the batch once each, packed
    (``pack_target``; a request's own ``packed`` when it has one):

        [k, seed, target_1, ..., target_k, session, stage, target, failed, caller, from, fstatus, session, ...]

    ``seed`` seeds the script's math.random when a target draws random numbers (from ``rng``), else 0.
    Per request ``target`` is its 1-based index, ``failed`` the failed agent as a string ("" for
    none), ``from`` the caller's number for a sticky group ("" otherwise), ``fstatus`` the failed
    dial's reason when it counts against the agent ("" otherwise)."""
    targets: dict[PackedTarget, int] = {}
    out: list[Any] = [0, 0]
    rows: list[Any] = []
    adhoc: dict[tuple[Any, ...], PackedTarget] | None = None
    is_random = False
    for req in requests:
        packed = req.packed
        if packed is None:
            # a request made without its pack (tests, benchmarks): requests of one target share these
            # objects, and each lives as long as `requests`, so their ids cannot be reused meanwhile
            key = (
                req.strategy,
                req.group_id,
                req.sticky_s,
                req.rotate,
                req.window_hours,
                req.max_attempts,
                req.fallback_enabled,
                id(req.candidates),
                id(req.answers),
                id(req.no_agent),
                id(req.opts),
                id(req.overflow),
            )
            if adhoc is None:
                adhoc = {}
            packed = adhoc.get(key)
            if packed is None:
                packed = adhoc[key] = pack_target(req)
        index = targets.get(packed)
        if index is None:
            index = targets[packed] = len(targets) + 1
            out.append(packed.raw)
            is_random = is_random or packed.random
        failed = req.failed_agent
        rows += (
            req.session,
            req.stage,
            index,
            "" if failed is None else str(failed),
            req.caller,
            req.from_number,
            req.fail_status,
        )
    out[0] = len(targets)
    if is_random:
        out[1] = (rng or _seeds).getrandbits(31) or 1
    out += rows
    return _ENCODE(out)


def attempt_of(stage: str) -> int:
    """The attempt a stage decides: 1 for "app", n+1 for "dial-<n>"; ValueError for anything else."""
    if stage == "app":
        return 1
    if stage.startswith("dial-") and stage[5:].isdigit():
        return int(stage[5:]) + 1
    raise ValueError(f"unknown stage {stage!r}")


def _check(req: DecideRequest) -> None:
    attempt_of(req.stage)
    if len(req.answers) != len(req.candidates):
        raise ValueError("answers must hold one (head, tail) per candidate")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def choose(
    strategy: str,
    candidates: Sequence[Candidate],
    tried: Callable[[int], bool],
    active: Callable[[int], int],
    window: Callable[[int], int],
    rr_last: tuple[int, int] | None,
    *,
    rng: random.Random | None = None,
    level_last: Callable[[int], int | None] | None = None,
    rotate: bool = True,
) -> int:
    """The strategy rules of balancer.lua, for the local view: the chosen index or -1.
    ``level_last(priority)``: the agent last chosen at that priority (priority rotation)."""

    def free(c: Candidate) -> bool:
        return not tried(c.agent_id) and (c.capacity == 0 or active(c.agent_id) < c.capacity)

    n = len(candidates)
    if strategy == "round_robin":
        start = 0
        if rr_last is not None:
            start = next((i for i, c in enumerate(candidates) if (c.priority, c.agent_id) > rr_last), 0)
        for k in range(n):
            i = (start + k) % n
            if free(candidates[i]):
                return i
        return -1
    if strategy in ("load_balanced", "least_active"):
        caps = {c.capacity for c in candidates}
        differ = len(caps) > 1
        maxcap = max(caps, default=0) or 1
        count = window if strategy == "load_balanced" else active
        best, best_calls, best_cap = -1, 0, 1
        ties: list[int] = []
        for i, c in enumerate(candidates):
            if not free(c):
                continue
            calls = count(c.agent_id)
            cap = (c.capacity or maxcap) if differ else 1
            if best == -1 or calls * best_cap < best_calls * cap:
                best, best_calls, best_cap = i, calls, cap
                ties = [i]
            elif calls * best_cap == best_calls * cap:
                ties.append(i)
        if strategy == "least_active" and len(ties) > 1:
            a, b = (rng or random).sample(ties, 2)

            def room(i: int) -> float:
                c = candidates[i]
                return c.capacity - active(c.agent_id) if c.capacity else float("inf")

            return b if room(b) > room(a) else a
        return best
    if strategy == "weighted":
        eligible = [i for i, c in enumerate(candidates) if free(c)]
        weights = [candidates[i].weight for i in eligible]
        if len(eligible) <= 1 or sum(weights) < 1:
            return eligible[0] if eligible else -1
        return (rng or random).choices(eligible, weights=weights)[0]
    first = next((i for i, c in enumerate(candidates) if free(c)), -1)
    if first < 0 or strategy != "priority" or not rotate or level_last is None:
        return first
    level = candidates[first].priority
    members = [i for i, c in enumerate(candidates) if c.priority == level]
    prev = level_last(level)
    if len(members) < 2 or prev is None:
        return first
    start = next((k for k, i in enumerate(members) if candidates[i].agent_id > prev), 0)
    for k in range(len(members)):
        i = members[(start + k) % len(members)]
        if free(candidates[i]):
            return i
    return first


class _LocalCall:
    __slots__ = ("cur", "tried")

    def __init__(self) -> None:
        self.tried: set[int] = set()
        self.cur: int | None = None


class LocalView:
    """What one process knows when Redis is unreachable: its own degraded decisions (active slots,
    choices per agent, round-robin pointers, per-call state, answers for replays). Bounded."""

    def __init__(self, active_slot_ttl_s: int) -> None:
        self._slot_ttl = float(active_slot_ttl_s)
        self.active: dict[tuple[int, int], dict[str, float]] = {}
        self.chosen: dict[tuple[int, int], int] = {}
        self.rr: dict[tuple[int, int], tuple[int, int]] = {}
        # (tenant, group, priority) -> agent last chosen at that level (priority rotation)
        self.levels: dict[tuple[int, int, int], int] = {}
        # (tenant, group, caller) -> (agent, until monotonic): stickiness, bounded
        self.sticky: OrderedDict[tuple[int, int, str], tuple[int, float]] = OrderedDict()
        self.rng = random.Random()
        self.calls: OrderedDict[tuple[int, str], _LocalCall] = OrderedDict()
        self.answers: OrderedDict[tuple[int, str, str], DecideResult] = OrderedDict()

    def _active_count(self, tenant_id: int, agent_id: int) -> int:
        slots = self.active.get((tenant_id, agent_id))
        if not slots:
            return 0
        now = time.monotonic()
        for session in [s for s, exp in slots.items() if exp <= now]:
            del slots[session]
        return len(slots)

    def decide(self, req: DecideRequest) -> DecideResult:
        key = (req.tenant_id, req.session, req.stage)
        stored = self.answers.get(key)
        if stored is not None:
            return msgspec.structs.replace(stored, replay=True)
        t = req.tenant_id
        attempt = attempt_of(req.stage)
        call = self.calls.get((t, req.session))
        if call is None:
            call = self.calls[(t, req.session)] = _LocalCall()
            if len(self.calls) > LOCAL_CALLS_LIMIT:
                self.calls.popitem(last=False)
        if req.failed_agent is not None and call.cur == req.failed_agent:
            self._free(t, req.session, call)
        index = -1
        sticky_key = (t, req.group_id, req.from_number) if req.sticky_s and req.from_number else None
        by_strategy = True
        if attempt <= req.max_attempts and (req.stage == "app" or req.fallback_enabled):
            if sticky_key is not None:
                index = self._sticky(t, req, sticky_key, call)
                by_strategy = index < 0
            if index < 0:
                g = req.group_id
                index = choose(
                    req.strategy,
                    req.candidates,
                    call.tried.__contains__,
                    lambda a: self._active_count(t, a),
                    lambda a: self.chosen.get((t, a), 0),
                    self.rr.get((t, g)),
                    rng=self.rng,
                    level_last=lambda p: self.levels.get((t, g, p)),
                    rotate=req.rotate,
                )
        agent_id: int | None = None
        if index >= 0:
            c = req.candidates[index]
            agent_id = c.agent_id
            self.active.setdefault((t, agent_id), {})[req.session] = time.monotonic() + self._slot_ttl
            self.chosen[(t, agent_id)] = self.chosen.get((t, agent_id), 0) + 1
            if by_strategy and req.strategy == "round_robin":
                self.rr[(t, req.group_id)] = (c.priority, agent_id)
            elif by_strategy and req.strategy == "priority" and req.rotate:
                self.levels[(t, req.group_id, c.priority)] = agent_id
            if sticky_key is not None:
                self.sticky.pop(sticky_key, None)
                self.sticky[sticky_key] = (agent_id, time.monotonic() + req.sticky_s)
                if len(self.sticky) > LOCAL_CALLS_LIMIT:
                    self.sticky.popitem(last=False)
            call.cur = agent_id
            call.tried.add(agent_id)
        result = DecideResult(
            index=index,
            agent_id=agent_id,
            attempt=attempt,
            cxml=req.answer(index),
            replay=False,
            degraded=True,
        )
        self.answers[key] = result
        if len(self.answers) > LOCAL_CALLS_LIMIT:
            self.answers.popitem(last=False)
        return result

    def _sticky(self, tenant_id: int, req: DecideRequest, key: tuple[int, int, str], call: _LocalCall) -> int:
        """The index of the agent this caller last reached in the group, when it can take the call."""
        held = self.sticky.get(key)
        if held is None or held[1] <= time.monotonic():
            return -1
        for i, c in enumerate(req.candidates):
            if c.agent_id == held[0]:
                free = c.capacity == 0 or self._active_count(tenant_id, c.agent_id) < c.capacity
                return i if free and c.agent_id not in call.tried else -1
        return -1

    def _free(self, tenant_id: int, session: str, call: _LocalCall) -> bool:
        if call.cur is None:
            return False
        slots = self.active.get((tenant_id, call.cur), {})
        call.cur = None
        return slots.pop(session, None) is not None

    def release(self, tenant_id: int, session: str) -> bool:
        call = self.calls.get((tenant_id, session))
        return call is not None and self._free(tenant_id, session, call)


class _Batch:
    __slots__ = ("futures", "requests")

    def __init__(self) -> None:
        self.requests: list[DecideRequest] = []
        self.futures: list[asyncio.Future[DecideResult]] = []


class Balancer:
    """The engine's face of balancer.lua. ``decide`` never raises for Redis trouble: it answers from
    the local view and says so (``degraded``). Plain int counters for metrics: ``decisions_total``,
    ``replays_total``, ``degraded_total``, ``redis_errors_total``, ``script_calls_total``,
    ``script_reloads_total``."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        scripts: ScriptCaller | None = None,
        prefix: str,
        idempotency_ttl_s: int = 86400,
        active_slot_ttl_s: int = 14400,
        coalesce: bool = True,
        in_flight: int = 1,
        max_batch: int = MAX_BATCH,
        redis_retry_s: float = REDIS_RETRY_S,
        timeout_s: float = DECIDE_TIMEOUT_S,
        seed: int | None = None,
    ) -> None:
        self._redis = redis
        # Seeds of the random strategies' script calls (a fixed ``seed``: reproducible, for tests).
        self._rng = random.Random(seed) if seed is not None else None
        # The script calls go through the lean client when there is one (the engine), else redis-py.
        self._scripts = scripts
        self._prefix = prefix
        self._idem_ttl = str(idempotency_ttl_s)
        self._slot_ttl_ms = str(active_slot_ttl_s * 1000)
        self._coalesce = coalesce
        self._in_flight_max = max(1, in_flight)
        self._max_batch = max_batch
        self._redis_retry_s = redis_retry_s
        self._timeout_s = timeout_s
        self._keys: dict[int, TenantKeys] = {}
        # Script calls out per tenant, and per tenant the batches waiting for the next one (the last
        # still open).
        self._in_flight: dict[int, int] = {}
        self._queues: dict[int, deque[_Batch]] = {}
        self._flushes: set[asyncio.Task[None]] = set()
        self._redis_down_until = 0.0
        self.local = LocalView(active_slot_ttl_s)
        if seed is not None:
            self.local.rng.seed(seed)
        # How long a CDR's "this call is over" mark lives for a call Redis never routed: as long as a
        # replica's degraded decision for it could still be adopted.
        self._end_mark_ttl = str(active_slot_ttl_s + 60)
        # Calls decided or freed while Redis was unreachable, to merge into Redis when it answers:
        # tenant -> session -> (ended, note number). The note number tells a note made while a merge
        # was out from the one it sent.
        self._pending: dict[int, dict[str, tuple[bool, int]]] = {}
        self._notes = 0
        self._reconciling: dict[int, asyncio.Task[None]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self.reconciled_total = 0  # calls merged into Redis after an outage
        self.reconcile_dropped_total = 0  # notes dropped past the local view's bound
        self.decisions_total = 0
        self.replays_total = 0
        self.degraded_total = 0
        self.redis_errors_total = 0
        self.script_calls_total = 0
        self.script_reloads_total = 0
        # Where outlier notes go (the app publishes them as events and counts them); None = dropped.
        self.outlier_sink: OutlierSink | None = None

    def keys(self, tenant_id: int) -> TenantKeys:
        keys = self._keys.get(tenant_id)
        if keys is None:
            keys = self._keys[tenant_id] = TenantKeys(self._prefix, tenant_id)
        return keys

    async def _script(self, tenant_id: int, *args: str | bytes) -> Any:
        base = self.keys(tenant_id).base
        self.script_calls_total += 1
        # The lean client when there is one (the engine: it watches its own reply deadlines), else redis-py.
        if self._scripts is not None:
            return await self._evalsha(
                functools.partial(self._scripts.call, reply_within_s=self._timeout_s), base, args
            )
        async with asyncio.timeout(self._timeout_s):
            return await self._evalsha(self._redis.execute_command, base, args)

    async def _evalsha(
        self, call: Callable[..., Awaitable[Any]], base: str, args: tuple[str | bytes, ...]
    ) -> Any:
        try:
            return await call("EVALSHA", SCRIPT_SHA, "1", base, *args)
        except ResponseError as exc:
            # redis-py maps the reply to NoScriptError; the lean client keeps Redis' own text.
            if not (isinstance(exc, NoScriptError) or str(exc).startswith("NOSCRIPT")):
                raise
            self.script_reloads_total += 1
            await call("SCRIPT", "LOAD", SCRIPT)
            return await call("EVALSHA", SCRIPT_SHA, "1", base, *args)

    # -- decisions ---------------------------------------------------------------------------------

    async def decide(self, req: DecideRequest) -> DecideResult:
        _check(req)
        if self.local.answers:
            stored = self.local.answers.get((req.tenant_id, req.session, req.stage))
            if stored is not None:
                self.replays_total += 1
                return msgspec.structs.replace(stored, replay=True)
        if not self._coalesce:
            return (await self._decide_batch(req.tenant_id, [req]))[0]
        tenant_id = req.tenant_id
        out = self._in_flight.get(tenant_id, 0)
        if out < self._in_flight_max and tenant_id not in self._queues:
            # Room for a call and nothing queued: decide now, alone, in this request's own coroutine
            # (no task, no extra loop iteration). Decisions arriving while all calls are out queue up.
            self._in_flight[tenant_id] = out + 1
            try:
                return (await self._decide_batch(tenant_id, [req]))[0]
            finally:
                self._call_done(tenant_id)
        queue = self._queues.get(tenant_id)
        if queue is None:
            queue = self._queues[tenant_id] = deque()
        if not queue or len(queue[-1].requests) >= self._max_batch:
            queue.append(_Batch())
        batch = queue[-1]
        future: asyncio.Future[DecideResult] = asyncio.get_running_loop().create_future()
        batch.requests.append(req)
        batch.futures.append(future)
        return await future

    def _call_done(self, tenant_id: int) -> None:
        """A tenant's script call came back: the decisions that queued meanwhile go next, together,
        in the call slot this one freed."""
        if not self._queues.get(tenant_id):
            self._slot_free(tenant_id)
            return
        task = asyncio.get_running_loop().create_task(self._drain(tenant_id))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _drain(self, tenant_id: int) -> None:
        """In one call slot of the tenant: send its queued batches, one script call at a time, until
        none is left; then give the slot back."""
        try:
            while True:
                queue = self._queues.get(tenant_id)
                if not queue:
                    return
                batch = queue.popleft()
                if not queue:
                    del self._queues[tenant_id]
                try:
                    await self._flush(batch)
                except Exception:  # a bug: that batch's requests have it; the next batches go on
                    logger.exception("balancer_batch_failed", size=len(batch.requests))
        finally:
            self._slot_free(tenant_id)

    def _slot_free(self, tenant_id: int) -> None:
        out = self._in_flight[tenant_id] - 1
        if out:
            self._in_flight[tenant_id] = out
        else:
            del self._in_flight[tenant_id]

    async def _flush(self, batch: _Batch) -> None:
        tenant_id = batch.requests[0].tenant_id
        try:
            results = await self._decide_batch(tenant_id, batch.requests)
        except BaseException as exc:  # only a bug gets here: hand it to every waiting request
            for future in batch.futures:
                if not future.done():
                    if isinstance(exc, asyncio.CancelledError):
                        future.cancel()
                    else:
                        future.set_exception(exc)
            raise
        for future, result in zip(batch.futures, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _decide_batch(self, tenant_id: int, requests: list[DecideRequest]) -> list[DecideResult]:
        self.decisions_total += len(requests)
        if self._redis_down_until and time.monotonic() < self._redis_down_until:
            return self._decide_locally(requests)
        try:
            if self._pending:  # back from an outage: merge what was decided meanwhile first
                await self._reconcile(tenant_id)
            reply = await self._script(
                tenant_id,
                "decide",
                self._idem_ttl,
                self._slot_ttl_ms,
                encode_batch(requests, self._rng),
                BUCKET_TTL,
            )
        except UNAVAILABLE as exc:
            self._redis_failed(exc, error=False)
            return self._decide_locally(requests)
        except RedisError as exc:  # READONLY during a failover, OOM, ...: still answer the call
            self._redis_failed(exc, error=True)
            return self._decide_locally(requests)
        if self._redis_down_until:
            self._redis_down_until = 0.0
            logger.info("balancer_redis_recovered")
        results: list[DecideResult] = []
        for i in range(0, len(reply), REPLY_FIELDS):
            if reply[i + 5]:
                self._outlier_note(tenant_id, requests[i // REPLY_FIELDS].session, reply[i + 5])
            agent = int(reply[i + 1])
            replay = reply[i + 4] == 1
            if replay:
                self.replays_total += 1
            results.append(
                DecideResult(
                    index=int(reply[i]),
                    agent_id=agent or None,
                    attempt=int(reply[i + 2]),
                    cxml=_text(reply[i + 3]),
                    replay=replay,
                    degraded=False,
                    overflow_step=int(reply[i + 6]),
                    trace=_text(reply[i + 7]),
                )
            )
        return results

    def _outlier_note(self, tenant_id: int, session: str, raw: bytes | str) -> None:
        try:
            note = OutlierNote.parse(raw)
        except ValueError:
            logger.error("balancer_bad_outlier_note", note=str(raw)[:200])
            return
        if note is not None and self.outlier_sink is not None:
            try:
                self.outlier_sink(tenant_id, session, note)
            except Exception:  # a bug in the sink must not fail the call's answer
                logger.exception("balancer_outlier_sink_failed")

    def _redis_failed(self, exc: BaseException, *, error: bool) -> None:
        self.redis_errors_total += 1
        if not self._redis_down_until:
            log = logger.error if error else logger.warning
            log("balancer_degraded", error=type(exc).__name__, detail=str(exc)[:200])
        self._redis_down_until = time.monotonic() + self._redis_retry_s

    def _decide_locally(self, requests: list[DecideRequest]) -> list[DecideResult]:
        self.degraded_total += len(requests)
        results = [self.local.decide(req) for req in requests]
        self.replays_total += sum(1 for r in results if r.replay)
        for req in requests:
            self._note(req.tenant_id, req.session, ended=False)
        return results

    # -- reconcile after an outage -------------------------------------------------------------------

    def _note(self, tenant_id: int, session: str, *, ended: bool) -> None:
        """Remember that ``session`` moved while Redis was unreachable (a degraded decision, a release),
        so it is merged into Redis when Redis answers again."""
        sessions = self._pending.get(tenant_id)
        if sessions is None:
            sessions = self._pending[tenant_id] = {}
        before = sessions.pop(session, None)
        self._notes += 1
        sessions[session] = (ended or (before is not None and before[0]), self._notes)
        if len(sessions) > LOCAL_CALLS_LIMIT:
            del sessions[next(iter(sessions))]
            self.reconcile_dropped_total += 1
        if self._watcher is None or self._watcher.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a synchronous test): the next script call merges
                return
            self._watcher = loop.create_task(self._reconcile_when_back())

    async def _reconcile_when_back(self) -> None:
        """In the background: try Redis again after each pause and merge every tenant's notes, so an
        engine that gets no call for a while still gives back what it holds."""
        while self._pending:
            await asyncio.sleep(max(self._redis_retry_s, self._redis_down_until - time.monotonic()))
            if self._redis_down_until and time.monotonic() < self._redis_down_until:
                continue
            for tenant_id in list(self._pending):
                try:
                    await self._reconcile(tenant_id)
                except UNAVAILABLE as exc:
                    self._redis_failed(exc, error=False)
                    break
                except RedisError as exc:
                    self._redis_failed(exc, error=True)
                    break

    async def _reconcile(self, tenant_id: int) -> None:
        """Merge the tenant's notes into Redis (one merge at a time per tenant: callers share it). Raises
        what the script call raised when Redis is still unreachable."""
        task = self._reconciling.get(tenant_id)
        if task is None:
            if tenant_id not in self._pending:
                return
            task = self._reconciling[tenant_id] = asyncio.get_running_loop().create_task(
                self._adopt(tenant_id)
            )
            task.add_done_callback(lambda _: self._reconciling.pop(tenant_id, None))
        try:
            await asyncio.shield(task)
        except (RedisError, OSError, TimeoutError):
            raise
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: the notes stay for the next try; the decision goes on
            logger.exception("balancer_reconcile_failed", tenant_id=tenant_id)

    def adopt_rows(self, tenant_id: int, sessions: Sequence[str]) -> list[Any]:
        """The ``adopt`` payload for ``sessions`` from the local view, as it stands now: per call its
        agent ('' for none), the slot's remaining life (ms), the agents it tried, whether it ended."""
        now = time.monotonic()
        pending = self._pending.get(tenant_id, {})
        rows: list[Any] = []
        for session in sessions:
            call = self.local.calls.get((tenant_id, session))
            agent, slot_ms, tried = "", 0, ","
            if call is not None:
                tried = "," + "".join(f"{a}," for a in sorted(call.tried))
                if call.cur is not None:
                    expiry = self.local.active.get((tenant_id, call.cur), {}).get(session)
                    if expiry is not None and expiry > now:
                        agent, slot_ms = str(call.cur), int((expiry - now) * 1000)
            ended = session in pending and pending[session][0]
            rows += (session, agent, slot_ms, tried, 1 if ended else 0)
        return rows

    async def _adopt(self, tenant_id: int) -> None:
        snapshot = dict(self._pending.get(tenant_id, {}))
        sessions = list(snapshot)
        taken = freed = ended = 0
        for i in range(0, len(sessions), ADOPT_BATCH):
            chunk = sessions[i : i + ADOPT_BATCH]
            payload = _ENCODE(self.adopt_rows(tenant_id, chunk))
            reply = await self._script(
                tenant_id, "adopt", self._idem_ttl, self._slot_ttl_ms, BUCKET_TTL, payload
            )
            taken, freed, ended = taken + int(reply[0]), freed + int(reply[1]), ended + int(reply[2])
            current = self._pending.get(tenant_id, {})
            for session in chunk:  # merged, unless it moved again meanwhile
                if current.get(session) == snapshot[session]:
                    del current[session]
            if not current:
                self._pending.pop(tenant_id, None)
            self.reconciled_total += len(chunk)
        logger.info(
            "balancer_reconciled",
            tenant_id=tenant_id,
            calls=len(sessions),
            slots_taken=taken,
            slots_freed=freed,
            calls_ended=ended,
        )

    # -- slots and counters ------------------------------------------------------------------------

    async def release(
        self, tenant_id: int, session: str, *, reason: str, ended: bool = False, outcome: str = ""
    ) -> bool:
        """Free the call's current agent slot; True only for the call that actually freed it.
        ``ended``: the call itself is over, so a dial-status arriving later takes no new slot.
        ``outcome`` (settings.outlier, judged in the same script call when the call's group has it):
        ``f:<reason>:<agent>`` a failed dial of that agent, ``a:<talk ms>`` the call was answered and
        talked that long (-1 unknown); "" nothing to judge."""
        # A decision that timed out may have been made both locally and in Redis: free both.
        freed = self.local.release(tenant_id, session)
        if self._redis_down_until and time.monotonic() < self._redis_down_until:
            self._note(tenant_id, session, ended=ended)  # applied to Redis when it answers again
            return freed
        try:
            if self._pending:
                await self._reconcile(tenant_id)
            if outcome:
                args: tuple[str, ...] = (
                    "release",
                    session,
                    "1" if ended else "0",
                    self._end_mark_ttl,
                    outcome,
                )
            elif ended:
                args = ("release", session, "1", self._end_mark_ttl)
            else:
                args = ("release", session)
            reply = await self._script(tenant_id, *args)
            if outcome:
                if reply[1]:
                    self._outlier_note(tenant_id, session, reply[1])
                reply = reply[0]
            freed = bool(reply) or freed
        except UNAVAILABLE as exc:
            self._redis_failed(exc, error=False)
            self._note(tenant_id, session, ended=ended)
        return freed

    async def group_stats(
        self, tenant_id: int, group_id: int, agent_ids: Sequence[int], window_hours: int
    ) -> dict[int, AgentCounters]:
        """Window calls, live active calls and last-chosen time (epoch ms) per agent."""
        if not agent_ids:
            return {}
        reply = await self._script(tenant_id, "stats", str(window_hours), *map(str, agent_ids))
        return {
            agent: AgentCounters(
                window_calls=int(reply[3 * i]),
                active_calls=int(reply[3 * i + 1]),
                last_chosen_ms=int(reply[3 * i + 2]) or None,
            )
            for i, agent in enumerate(agent_ids)
        }

    async def active_calls(self, tenant_id: int, agent_ids: Sequence[int]) -> dict[int, int]:
        """Live (non-expired) slots per agent."""
        if not agent_ids:
            return {}
        reply = await self._script(tenant_id, "active", *map(str, agent_ids))
        return {agent: int(n) for agent, n in zip(agent_ids, reply, strict=True)}

    @property
    def reconcile_pending(self) -> int:
        """Calls decided or freed while Redis was unreachable and not merged into it yet."""
        return sum(len(sessions) for sessions in self._pending.values())

    async def aclose(self) -> None:
        """Wait for batches in flight (at shutdown); stop waiting for Redis to merge notes into."""
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None


__all__ = [
    "RANDOM_STRATEGIES",
    "AgentCounters",
    "Balancer",
    "Candidate",
    "DecideRequest",
    "DecideResult",
    "LocalView",
    "OutlierNote",
    "attempt_of",
    "choose",
    "encode_batch",
]
