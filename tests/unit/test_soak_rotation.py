"""loadtests/soak.py's round-robin check: turns per agent from the decisions' traces (balancer.lua
marks a round_robin choice's walk, '-' outside it)."""

from __future__ import annotations

from loadtests.soak import rotation

M = "g5:1,2,3"


def test_walks_that_tile_the_rotation_are_within_one() -> None:
    # 1, 2, then 3 full and 1 chosen, then (from 2) 2 tried, 3 and 1 full: none chosen, the rotation
    # stays; then 2 chosen; a stopped decision and an untraced one walk nothing
    traces = [(M, "c--"), (M, "-c-"), (M, "c-f"), (M, "ftf"), (M, "-c-"), (M, "!M"), (M, "")]
    got = rotation(traces)
    assert got["turns"] == {1: 3, 2: 3, 3: 2}
    assert got["turns_spread"] == 1
    assert (got["chosen"], got["chosen_spread"]) == ({1: 2, 2: 2, 3: 0}, 2)
    assert got["walked_past"] == {"f": 3, "t": 1}
    assert (got["stopped"], got["untraced"], got["free_passed_over"]) == (1, 1, 0)


def test_a_lost_rotation_update_shows() -> None:
    tiled = rotation([(M, "c--"), (M, "-c-"), (M, "--c"), (M, "c--")])
    assert tiled["turns_spread"] == 1
    assert tiled["free_passed_over"] == 0
    # two replicas both took agent 1 from the same rotation state: its turns run ahead
    raced = rotation([(M, "c--"), (M, "c--"), (M, "-c-"), (M, "--c")])
    assert raced["turns_spread"] == 1  # one race hides in +-1 ...
    twice = rotation([(M, "c--"), (M, "c--"), (M, "-c-"), (M, "--c"), (M, "c--"), (M, "c--")])
    assert twice["turns_spread"] >= 2  # ... a second one does not
    # a walk that passed a free member over
    assert rotation([(M, "c--"), (M, ".c-")])["free_passed_over"] == 1
