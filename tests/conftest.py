"""Shared fixtures."""

from __future__ import annotations

import pytest

from spanjournal import _statefold


@pytest.fixture(params=["c", "python"])
def both_folds(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the C states-only fold, then with the pure-Python one.

    The switch is the environment variable, so CLI subprocesses follow it.
    """
    if request.param == "c":
        if _statefold.Table is None:
            pytest.skip("the C extension spanjournal._speedups is not built")
        monkeypatch.delenv("SPANJOURNAL_PURE_PYTHON", raising=False)
        assert _statefold.native()
    else:
        monkeypatch.setenv("SPANJOURNAL_PURE_PYTHON", "1")
        assert not _statefold.native()
    return str(request.param)
