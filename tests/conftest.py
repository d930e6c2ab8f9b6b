"""Shared fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["checkpoints", "no-checkpoints"])
def both_reads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with checkpoints on, then off (the switch is the environment, so CLI subprocesses follow it)."""
    if request.param == "checkpoints":
        monkeypatch.delenv("SPANJOURNAL_NO_CHECKPOINT", raising=False)
    else:
        monkeypatch.setenv("SPANJOURNAL_NO_CHECKPOINT", "1")
    return str(request.param)
