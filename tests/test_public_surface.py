"""The public surface stays small: what users need, not the CLI's helpers."""

from __future__ import annotations

import spanjournal.export


def test_export_all_names_only_what_users_need() -> None:
    assert sorted(spanjournal.export.__all__) == [
        "DEFAULT_SERVICE_NAME",
        "ExportError",
        "ExportStats",
        "JournalSpan",
        "Outcome",
        "SpanTimeOutOfRange",
        "build_span",
        "describe_span",
        "endpoint_configured",
        "export_journal",
        "journal_spans",
        "make_exporter",
    ]
    assert all(hasattr(spanjournal.export, name) for name in spanjournal.export.__all__)


def test_the_reading_side_has_no_native_code_and_one_fold() -> None:
    from pathlib import Path

    import spanjournal.fold
    import spanjournal.ledger

    package = Path(spanjournal.fold.__file__).parent
    for gone in ("_speedups.c", "_speedups.pyi", "_statefold.py", "_parallel.py"):
        assert not (package / gone).exists(), gone
    assert not (package.parents[1] / "setup.py").exists()
    assert spanjournal.ledger.LedgerState is spanjournal.fold.LedgerState


def test_testing_offers_users_what_they_need_and_no_crash_test_machinery() -> None:
    import spanjournal.testing

    assert sorted(spanjournal.testing.__all__) == [
        "Capture",
        "ChildRun",
        "MemoryJournal",
        "capture",
        "dispatched_at_least",
        "run_and_kill",
    ]
    assert all(hasattr(spanjournal.testing, name) for name in spanjournal.testing.__all__)
    for moved in ("simulate_fanout", "crash_fanout", "read_markers", "chunk_ids", "SimulatedAgentError"):
        assert not hasattr(spanjournal.testing, moved), moved
