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
        "build_span",
        "describe_span",
        "export_journal",
        "journal_spans",
        "make_exporter",
    ]
    assert all(hasattr(spanjournal.export, name) for name in spanjournal.export.__all__)


def test_the_reading_side_has_no_native_code_and_one_fold() -> None:
    import importlib.util

    import spanjournal.fold
    import spanjournal.ledger

    for gone in ("spanjournal._speedups", "spanjournal._statefold", "spanjournal._parallel"):
        assert importlib.util.find_spec(gone) is None, gone
    assert spanjournal.ledger.LedgerState is spanjournal.fold.LedgerState
