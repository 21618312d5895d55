"""Routing pattern grammar (SPEC §2.4) and first-match rule tables, shared by the control plane's
validation and dry run and by the engine's hot path. Pure: no I/O.

Grammar (all anchored): a literal number, a prefix ending in ``*``, ``*`` alone (catch-all), or
``re:<regex>``. Numbers are normalised first: spaces, dashes, dots and parentheses are stripped and a
leading ``00`` becomes ``+``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

# The stdlib's own regex parser (public as sre_parse before 3.11, which now warns on import).
from re import _constants as sre_constants  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Generic, Protocol, TypeVar

from shared.schedule import CompiledSchedule, compile_schedule
from shared.snapshot import InboundRuleSnap, OutboundRuleSnap

MAX_PATTERN_LENGTH = 255
MAX_REGEX_LENGTH = 200
_STRIP = str.maketrans("", "", " -.()\t")
_UNBOUNDED = sre_constants.MAXREPEAT


class PatternError(ValueError):
    """A pattern that the grammar refuses; the message is shown to the user."""


def normalize_number(value: str) -> str:
    """Strip separators and turn a leading ``00`` into ``+`` so equal numbers compare equal."""
    number = value.translate(_STRIP)
    if number.startswith("00"):
        number = "+" + number[2:]
    return number


def _repeat_depth(parsed: sre_parse.SubPattern | list[tuple[object, object]]) -> int:
    """The deepest nesting of unbounded repeats: 2 or more means catastrophic backtracking risk."""
    deepest = 0
    for op, arg in parsed:
        inner = 0
        if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT):
            _low, high, sub = arg  # type: ignore[misc]
            own = 1 if high == _UNBOUNDED or high > 10 else 0
            if op == sre_constants.POSSESSIVE_REPEAT:
                own = 0
            inner = own + _repeat_depth(sub)
            if own and _ambiguous_body(sub):
                # (\d|\d\d)+ or (\d\d?)+: each position can be split many ways, as bad as nesting.
                inner = max(inner, 2)
        elif op in (sre_constants.SUBPATTERN, sre_constants.ATOMIC_GROUP):
            sub = arg[-1] if isinstance(arg, tuple) else arg
            inner = _repeat_depth(sub)
        elif op == sre_constants.BRANCH:
            _, branches = arg  # type: ignore[misc]
            inner = max((_repeat_depth(b) for b in branches), default=0)
        elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            _, sub = arg  # type: ignore[misc]
            inner = _repeat_depth(sub)
        deepest = max(deepest, inner)
    return deepest


def _ambiguous_body(sub: sre_parse.SubPattern) -> bool:
    """A repeated body that can match different widths, or holds an alternation: repeating it lets
    the engine split one input many ways (exponential backtracking on a failed match)."""
    low, high = sub.getwidth()
    if low != high:
        return True
    return _has_branch(sub)


def _has_branch(parsed: sre_parse.SubPattern | list[tuple[object, object]]) -> bool:
    for op, arg in parsed:
        if op == sre_constants.BRANCH:
            return True
        sub: object = None
        if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT):
            sub = arg[2]  # type: ignore[index]
        elif op in (sre_constants.SUBPATTERN, sre_constants.ATOMIC_GROUP):
            sub = arg[-1] if isinstance(arg, tuple) else arg
        if sub is not None and _has_branch(sub):
            return True
    return False


def _has_backreference(parsed: sre_parse.SubPattern | list[tuple[object, object]]) -> bool:
    for op, arg in parsed:
        if op in (sre_constants.GROUPREF, sre_constants.GROUPREF_EXISTS):
            return True
        subs: list[object] = []
        if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT):
            subs = [arg[2]]  # type: ignore[index]
        elif op in (sre_constants.SUBPATTERN, sre_constants.ATOMIC_GROUP):
            subs = [arg[-1] if isinstance(arg, tuple) else arg]
        elif op == sre_constants.BRANCH:
            subs = list(arg[1])  # type: ignore[index]
        if any(_has_backreference(s) for s in subs):
            return True
    return False


def check_regex(expression: str) -> re.Pattern[str]:
    """Compile a user regex or raise PatternError (invalid, too long, or prone to backtracking)."""
    if not expression:
        raise PatternError("regular expression is empty")
    if len(expression) > MAX_REGEX_LENGTH:
        raise PatternError(f"regular expression is longer than {MAX_REGEX_LENGTH} characters")
    try:
        parsed = sre_parse.parse(expression)
        compiled = re.compile(expression)
    except (re.error, OverflowError, RecursionError) as exc:
        raise PatternError(f"invalid regular expression: {exc}") from exc
    if _repeat_depth(parsed) >= 2:
        raise PatternError("regular expression nests unbounded repeats and could backtrack catastrophically")
    if _has_backreference(parsed):
        raise PatternError("regular expression uses back-references, which are not allowed")
    return compiled


@dataclass(frozen=True, slots=True)
class Pattern:
    """One compiled pattern. ``kind`` is literal, prefix, any or regex."""

    source: str
    kind: str
    value: str = ""
    regex: re.Pattern[str] | None = None

    def matches(self, number: str) -> bool:
        """``number`` must already be normalised."""
        if self.kind == "any":
            return True
        if self.kind == "literal":
            return number == self.value
        if self.kind == "prefix":
            return number.startswith(self.value)
        assert self.regex is not None
        return self.regex.fullmatch(number) is not None


ANY = Pattern(source="*", kind="any")


def compile_pattern(source: str | None) -> Pattern:
    """Compile one pattern of the grammar; ``None`` or empty means match anything."""
    if source is None:
        return ANY
    text = source.strip()
    if text in ("", "*"):
        return ANY
    if len(text) > MAX_PATTERN_LENGTH:
        raise PatternError(f"pattern is longer than {MAX_PATTERN_LENGTH} characters")
    if text.startswith("re:"):
        return Pattern(source=text, kind="regex", regex=check_regex(text[3:]))
    if text.endswith("*"):
        body = normalize_number(text[:-1])
        if "*" in body or not body:
            raise PatternError("a prefix pattern has one '*', at its end")
        return Pattern(source=text, kind="prefix", value=body)
    if "*" in text:
        raise PatternError("'*' may only end a prefix pattern")
    value = normalize_number(text)
    if not value:
        raise PatternError("pattern is empty after removing separators")
    return Pattern(source=text, kind="literal", value=value)


class RuleLike(Protocol):
    """What a rule table needs of a rule: its order key and its patterns."""

    @property
    def id(self) -> int: ...

    @property
    def priority(self) -> int: ...

    @property
    def enabled(self) -> bool: ...


R = TypeVar("R", bound=RuleLike)


@dataclass(slots=True)
class _Entry(Generic[R]):
    rule: R
    number: Pattern
    caller: Pattern
    domain_id: int | None
    schedule: CompiledSchedule | None = None


@dataclass(slots=True)
class RuleTable(Generic[R]):
    """First-match table: the first enabled rule by (priority, id) whose patterns match wins.

    Literal numbers are found through a dict and prefixes through a dict per prefix length, so a
    table of thousands of rules answers in a handful of lookups; regex rules are tried only while
    they could still beat the best match found so far.
    """

    entries: list[_Entry[R]] = field(default_factory=list)
    literal: dict[str, list[int]] = field(default_factory=dict)
    prefix: dict[str, list[int]] = field(default_factory=dict)
    prefix_lengths: list[int] = field(default_factory=list)
    always: list[int] = field(default_factory=list)  # catch-alls and regexes, in order
    scheduled: bool = False  # some rule has a schedule (only then can a rule be skipped for it)

    @classmethod
    def build(
        cls,
        rules: Iterable[R],
        number_of: Callable[[R], str | None],
        caller_of: Callable[[R], str | None],
        domain_of: Callable[[R], int | None],
        schedule_of: Callable[[R], CompiledSchedule | None] | None = None,
    ) -> RuleTable[R]:
        table: RuleTable[R] = cls()
        ordered = sorted((r for r in rules if r.enabled), key=lambda r: (r.priority, r.id))
        lengths: set[int] = set()
        for index, rule in enumerate(ordered):
            number = compile_pattern(number_of(rule))
            entry = _Entry(
                rule=rule,
                number=number,
                caller=compile_pattern(caller_of(rule)),
                domain_id=domain_of(rule),
                schedule=schedule_of(rule) if schedule_of is not None else None,
            )
            table.entries.append(entry)
            if entry.schedule is not None:
                table.scheduled = True
            if number.kind == "literal":
                table.literal.setdefault(number.value, []).append(index)
            elif number.kind == "prefix":
                table.prefix.setdefault(number.value, []).append(index)
                lengths.add(len(number.value))
            else:
                table.always.append(index)
        table.prefix_lengths = sorted(lengths)
        return table

    def first_match(
        self,
        number: str,
        caller: str = "",
        domain_id: int | None = None,
        now: float | None = None,
        skipped: list[R] | None = None,
    ) -> R | None:
        """The winning rule for a called ``number`` (raw or normalised) from ``caller``; a rule with a
        schedule matches only while it is open at ``now`` (epoch seconds; the clock when None). Each rule
        that matched but was closed goes into ``skipped``, in order."""
        to = normalize_number(number)
        frm = normalize_number(caller)
        candidates: list[int] = list(self.literal.get(to, ()))
        for length in self.prefix_lengths:
            if length > len(to):
                break
            hit = self.prefix.get(to[:length])
            if hit:
                candidates.extend(hit)
        candidates.extend(self.always)
        candidates.sort()
        for index in candidates:
            entry = self.entries[index]
            # A rule limited to a domain matches only calls known to come through that domain.
            if entry.domain_id is not None and entry.domain_id != domain_id:
                continue
            if entry.number.kind in ("regex", "any") and not entry.number.matches(to):
                continue
            if entry.caller.kind != "any" and not entry.caller.matches(frm):
                continue
            if entry.schedule is not None:
                if now is None:
                    now = time.time()
                if not entry.schedule.is_open(now):
                    if skipped is not None:
                        skipped.append(entry.rule)
                    continue
            return entry.rule
        return None

    def __len__(self) -> int:
        return len(self.entries)

    def ordered_rules(self) -> Sequence[R]:
        return [e.rule for e in self.entries]


def build_inbound_table(rules: Iterable[InboundRuleSnap]) -> RuleTable[InboundRuleSnap]:
    """The inbound first-match table, built the same way for the engine and the control plane's dry
    run: ``pattern`` on the called number, ``caller_pattern`` on the caller, limited to ``domain_id``, and
    only while its ``schedule`` (if any) is open."""
    return RuleTable.build(rules, _inbound_number, _inbound_caller, _inbound_domain, _inbound_schedule)


def build_outbound_table(rules: Iterable[OutboundRuleSnap]) -> RuleTable[OutboundRuleSnap]:
    """The outbound first-match table: ``destination_pattern`` on the dialled number and ``caller_id``
    on the calling number/extension; outbound rules are not limited to a domain."""
    return RuleTable.build(rules, _outbound_number, _outbound_caller, _no_domain)


def _inbound_number(rule: InboundRuleSnap) -> str | None:
    return rule.pattern


def _inbound_caller(rule: InboundRuleSnap) -> str | None:
    return rule.caller_pattern


def _inbound_domain(rule: InboundRuleSnap) -> int | None:
    return rule.domain_id


def _inbound_schedule(rule: InboundRuleSnap) -> CompiledSchedule | None:
    return compile_schedule(rule.schedule) if rule.schedule is not None else None


def _outbound_number(rule: OutboundRuleSnap) -> str | None:
    return rule.destination_pattern


def _outbound_caller(rule: OutboundRuleSnap) -> str | None:
    return rule.caller_id


def _no_domain(rule: OutboundRuleSnap) -> int | None:
    return None
