"""make test's browser step: which Chromium counts as present, and when it may install one."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher import testrun


def test_a_chosen_browser_must_exist(tmp_path: Path) -> None:
    browser = tmp_path / "chromium"
    assert not testrun.browser_present({"VLB_CHROMIUM": str(browser)})
    browser.write_text("")
    assert testrun.browser_present({"VLB_CHROMIUM": str(browser)})


def test_installs_only_as_root_or_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        testrun.shutil, "which", lambda name: "/usr/bin/apt-get" if name == "apt-get" else None
    )
    monkeypatch.setattr(testrun.os, "geteuid", lambda: 1000)
    assert not testrun.may_install_packages({})
    assert not testrun.may_install_packages({"CI": "false"})
    assert testrun.may_install_packages({"CI": "true"})
    monkeypatch.setattr(testrun.os, "geteuid", lambda: 0)
    assert testrun.may_install_packages({})


def test_nothing_runs_when_the_browser_is_there(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    browser = tmp_path / "chromium"
    browser.write_text("")
    ran: list[object] = []
    monkeypatch.setattr(testrun.subprocess, "run", lambda *a, **k: ran.append(a))
    testrun.ensure_browser({"VLB_CHROMIUM": str(browser), "CI": "true"})
    assert ran == []
