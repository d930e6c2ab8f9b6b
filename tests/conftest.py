"""Shared fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _checkpoints_in_a_private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkpoints a test's commands save in the cache directory go to a temporary one, not the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(params=["checkpoints", "no-checkpoints"])
def both_reads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with checkpoints on, then off (the switch is the environment, so CLI subprocesses follow it)."""
    if request.param == "checkpoints":
        monkeypatch.delenv("SPANJOURNAL_NO_CHECKPOINT", raising=False)
    else:
        monkeypatch.setenv("SPANJOURNAL_NO_CHECKPOINT", "1")
    return str(request.param)
