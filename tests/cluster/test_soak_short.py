"""Issue 14 part 5, short form: loadtests/soak.py for 20 s at 5 calls/s — 2 engines, 2 control
planes, a 3-node NATS cluster (R3) and a Redis Cluster (3 masters + 3 replicas), the demo group on
round_robin over 4 agents with capacity 2 each: no error, no capacity violation, a record (and one
CDR) per call and each event stored once, every process still running, RSS sampled for every process;
and the rotation, from every decision's trace, exact: each agent's turns (chosen or walked past as
full or tried) within 1 of the others', no free agent passed over."""

from __future__ import annotations

import pytest

from loadtests.soak import build_parser, run

pytestmark = pytest.mark.slow


def test_short_soak() -> None:
    args = build_parser().parse_args(
        ["--rate", "5", "--duration", "20", "--capacity", "2", "--sample-every", "5", "--quiet"]
    )
    result = run(args)
    print("\n" + result.render())
    s, db = result.summary, result.db
    assert not s.errors, s.errors
    assert s.capacity_violations == 0, s.violation_detail
    assert s.stats_samples >= 10
    assert s.calls_sent == s.calls_completed == 100
    assert s.records_found == s.calls_sent
    assert db["records"] == db["distinct_sessions"] == db["records_ended"] == s.calls_sent
    assert db["cdrs"] == db["records_with_cdr"] == s.calls_sent
    assert db["events"] == db["distinct_events"]
    assert s.outcomes["no_agent"] > 0, "capacity 2 per agent should turn some calls away"
    rr = db["round_robin"]
    assert rr["decisions"] >= s.calls_sent
    assert rr["untraced"] == 0
    assert len(rr["turns"]) == 4
    assert rr["turns_spread"] <= 1, rr
    assert rr["free_passed_over"] == 0, rr
    assert rr["walked_past"].get("f", 0) > 0, "capacity 2 per agent should make the rotation skip"
    assert not result.settings["exited_during_run"]
    assert all(len(p.rss_mb) >= 4 for p in result.series)


def test_loadgen_refuses_remote_targets_and_takes_the_demo_defaults() -> None:
    from launcher.cli import loadgen_argv
    from launcher.settings import get_launcher_settings
    from loadtests.loadgen import main

    with pytest.raises(SystemExit, match=r"only 127\.0\.0\.1"):
        main(["--engine", "http://10.1.2.3:8080", "--domain", "d.example", "--key", "k"])
    argv = loadgen_argv(get_launcher_settings(), ["--rate", "3"])
    assert argv[:2] == ["--rate", "3"]
    assert "--engine" in argv
    assert loadgen_argv(get_launcher_settings(), ["--engine", "http://127.0.0.1:1"]).count("--engine") == 1
