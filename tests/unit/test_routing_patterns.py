"""The shared pattern grammar (SPEC §2.4) and the first-match rule tables both planes use."""

from __future__ import annotations

import functools
import random
import time

import pytest

from shared.enums import TargetType
from shared.routing import (
    PatternError,
    build_inbound_table,
    build_outbound_table,
    check_regex,
    compile_pattern,
    normalize_number,
)
from shared.snapshot import InboundRuleSnap, OutboundRuleSnap


def rule(
    rule_id: int,
    pattern: str,
    *,
    priority: int = 100,
    caller: str | None = None,
    domain_id: int | None = None,
    enabled: bool = True,
) -> InboundRuleSnap:
    return InboundRuleSnap(
        id=rule_id,
        pattern=pattern,
        caller_pattern=caller,
        target_type=TargetType.AGENT,
        target_id=1,
        priority=priority,
        enabled=enabled,
        domain_id=domain_id,
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+1 (555) 123-4567", "+15551234567"),
        ("0044 20.7123.4567", "+442071234567"),
        ("00", "+"),
        ("alice", "alice"),
        ("", ""),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize_number(raw) == expected


def test_literal_with_separators_and_00() -> None:
    p = compile_pattern("+1 (555) 123-4567")
    assert p.kind == "literal"
    assert p.matches(normalize_number("001 555 123 4567"))
    assert not p.matches(normalize_number("+155512345678"))
    assert compile_pattern("0044 20 7123 4567").matches("+442071234567")


def test_prefix_and_catch_all() -> None:
    p = compile_pattern("+1 555*")
    assert p.kind == "prefix"
    assert p.value == "+1555"
    assert p.matches("+15551234567")
    assert p.matches("+1555")
    assert not p.matches("+1556")
    assert compile_pattern("0044*").matches("+4420")
    for source in ("*", "", None, "  "):
        assert compile_pattern(source).kind == "any"


@pytest.mark.parametrize("bad", ["+1*5*", "1*2", "-*", "()"])
def test_bad_literals_and_prefixes(bad: str) -> None:
    with pytest.raises(PatternError):
        compile_pattern(bad)


def test_regex_is_anchored() -> None:
    p = compile_pattern(r"re:\+1(212|646)\d{7}")
    assert p.matches("+12125550123")
    assert not p.matches("+121255501234")
    assert not p.matches("x+12125550123")


@pytest.mark.parametrize(
    "bad",
    [r"(a+)+", r"(\d*)*", r"(\d+|\+)*", r"(\d|\d\d)+", r"(\d\d?)+", r"(?:\d{1,20})+", r"(\d)\1"],
)
def test_catastrophic_and_backreference_regexes_are_refused(bad: str) -> None:
    with pytest.raises(PatternError):
        check_regex(bad)
    with pytest.raises(PatternError):
        compile_pattern("re:" + bad)


@pytest.mark.parametrize("bad", ["re:(", "re:[0-9", "re:*1", "re:", "re:" + "1" * 201])
def test_invalid_regexes_are_refused(bad: str) -> None:
    with pytest.raises(PatternError):
        compile_pattern(bad)


@pytest.mark.parametrize("ok", [r"\+1\d{10}", r"(\+1|001)\d+", r"(\d{3}-)+\d{4}", r"[0-9]+", r"(?:\d|1)+"])
def test_reasonable_regexes_are_accepted(ok: str) -> None:
    compiled = check_regex(ok)
    started = time.perf_counter()
    compiled.fullmatch("1" * 60 + "x")
    assert time.perf_counter() - started < 0.05


def test_first_match_by_priority_then_id() -> None:
    table = build_inbound_table(
        [
            rule(5, "*", priority=100),
            rule(3, "+1555*", priority=50),
            rule(2, "+15551234567", priority=50),
            rule(1, "+15551234567", priority=60),
            rule(4, "+1555*", priority=10, enabled=False),
        ]
    )
    assert [r.id for r in table.ordered_rules()] == [2, 3, 1, 5]
    hit = table.first_match("+1 555 123 4567")
    assert hit is not None
    assert hit.id == 2
    hit = table.first_match("+15559999999")
    assert hit is not None
    assert hit.id == 3
    hit = table.first_match("+4420")
    assert hit is not None
    assert hit.id == 5


def test_caller_pattern() -> None:
    table = build_inbound_table(
        [rule(1, "+1555*", priority=1, caller="+44*"), rule(2, "+1555*", priority=2, caller="re:\\+33\\d+")]
    )
    assert getattr(table.first_match("+15551", "0044 20 7123"), "id", None) == 1
    assert getattr(table.first_match("+15551", "+33612345678"), "id", None) == 2
    assert table.first_match("+15551", "+49301234") is None
    assert table.first_match("+15551", "") is None


def test_domain_limited_rules() -> None:
    table = build_inbound_table([rule(1, "*", priority=1, domain_id=7), rule(2, "*", priority=2)])
    assert getattr(table.first_match("+1", "", 7), "id", None) == 1
    assert getattr(table.first_match("+1", "", 8), "id", None) == 2
    # A call through no known domain never takes a rule limited to one.
    assert getattr(table.first_match("+1", "", None), "id", None) == 2


def test_outbound_table_matches_destination_and_caller() -> None:
    rules = [
        OutboundRuleSnap(id=1, name="uk", destination_pattern="+44*", caller_id="1*", priority=1),
        OutboundRuleSnap(id=2, name="all", destination_pattern="*", priority=2),
    ]
    table = build_outbound_table(rules)
    assert getattr(table.first_match("0044 20 7123 4567", "1001"), "id", None) == 1
    assert getattr(table.first_match("+442071234567", "2001"), "id", None) == 2


def _brute_force(rules: list[InboundRuleSnap], to: str, frm: str, domain: int | None) -> int | None:
    """The definition, literally: every rule in (priority, id) order (``rules`` is sorted)."""
    to_n, frm_n = normalize_number(to), normalize_number(frm)
    for r in rules:
        if not r.enabled:
            continue
        if r.domain_id is not None and r.domain_id != domain:
            continue
        if not _compiled(r.pattern).matches(to_n):
            continue
        if r.caller_pattern and not _compiled(r.caller_pattern).matches(frm_n):
            continue
        return r.id
    return None


_compiled = functools.lru_cache(maxsize=None)(compile_pattern)


def test_big_table_agrees_with_brute_force() -> None:
    rng = random.Random(20240611)

    def number() -> str:
        return "+1" + "".join(rng.choice("0123456789") for _ in range(rng.randint(3, 10)))

    rules: list[InboundRuleSnap] = []
    for rule_id in range(1, 2001):
        kind = rng.random()
        if kind < 0.45:
            pattern = number()
        elif kind < 0.9:
            pattern = number()[: rng.randint(2, 6)] + "*"
        elif kind < 0.97:
            pattern = "re:\\+1" + rng.choice("0123456789") + "\\d{2,9}"
        else:
            pattern = "*"
        caller = rng.choice([None, None, None, "+44*", "+1" + rng.choice("23456789") + "*"])
        rules.append(
            rule(
                rule_id,
                pattern,
                priority=rng.randint(1, 50),
                caller=caller,
                domain_id=rng.choice([None, None, 1, 2]),
                enabled=rng.random() > 0.1,
            )
        )
    table = build_inbound_table(rules)
    ordered = sorted(rules, key=lambda r: (r.priority, r.id))
    probes = [r.pattern.rstrip("*") + "1" for r in rules[:150] if not r.pattern.startswith("re:")]
    probes += [number() for _ in range(150)]
    checked = 0
    for to in probes:
        for frm in ("+4420", "+12125550100", "+15550001111", ""):
            for domain in (None, 1, 2):
                got = table.first_match(to, frm, domain)
                assert (got.id if got else None) == _brute_force(ordered, to, frm, domain), (to, frm, domain)
                checked += 1
    assert checked > 2000
