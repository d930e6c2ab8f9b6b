"""One journal, one answer (issue 10, items 5, 6, 7, 9, 10, 16): every command reads every line alike,
files that are not journals are not "nothing to retry", ids are printed safely, tables are bounded."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli_journals import assert_clean_exit, completed, dispatched, run, write_journal
from spanjournal.cli.stats import compute, grouper, render_rich, render_text
from spanjournal.ledger import read_ledger

pytestmark = pytest.mark.usefixtures("both_reads")


def test_plain_and_json_pending_classify_every_line_the_same(tmp_path: Path) -> None:
    """Item 5: a wrong type in a field only ``--json`` shows used to split the two answers."""
    journal = write_journal(
        tmp_path / "run.jsonl",
        [
            dispatched("c1"),
            b'{"v":1,"event":"subagent_completed","chunk_id":"c1","success":true,"tokens_used":"1200","span_id":"'
            + dispatched("c1").span_id.encode()  # type: ignore[union-attr]
            + b'"}\n',
            b'{"v":1,"event":"subagent_dispatched","chunk_id":"c2","span_id":"s2","items_assigned":"3"}\n',
        ],
    )
    plain = run("pending", journal)
    as_json = run("pending", journal, "--json")
    assert_clean_exit(plain, 0)
    assert_clean_exit(as_json, 0)
    assert plain.stdout.split() == [r["chunk_id"] for r in json.loads(as_json.stdout)] == ["c1"]
    warnings = [line for line in plain.stderr.splitlines() if line.startswith(str(journal))]
    assert [w.split(":")[1] for w in warnings] == ["2", "3"]
    assert warnings == [line for line in as_json.stderr.splitlines() if line.startswith(str(journal))]
    stats = json.loads(run("spanjournal", "stats", journal, "--json").stdout)
    assert (stats["totals"]["chunks"], stats["journals"]["bad_lines"]) == (1, 2)


CLOSED_ENDPOINT = "http://127.0.0.1:9"  # the discard port: nothing listens there


@pytest.mark.parametrize(
    "command",
    [
        ("pending", "--exit-code"),
        ("spanjournal", "stats", "--json"),
        ("spanjournal", "reconcile", "--json"),
        ("spanjournal", "export", "--dry-run"),
        # before anything is sent, and with no record of what was sent written beside it
        ("spanjournal", "export", "--new", "--endpoint", CLOSED_ENDPOINT, "--timeout", "2"),
    ],
)
def test_a_file_that_is_not_a_journal_is_an_error(command: tuple[str, ...], tmp_path: Path) -> None:
    """Item 6: other JSON (or any text) named as a journal is exit 2, not "0 pending"."""
    calls = tmp_path / "calls.jsonl"
    calls.write_text("".join(json.dumps({"model": "m", "prompt": f"p{i}"}) + "\n" for i in range(54)))
    result = run(command[0], *command[1:2], calls, *command[2:])
    assert_clean_exit(result, 2)
    assert result.stdout == ""
    assert result.stderr.strip().endswith(f"{calls}: not a journal (no line is a journal event)")
    assert len(result.stderr.splitlines()) == 1
    # A mistyped path leaves nothing beside the file it names.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calls.jsonl"]


def test_an_empty_journal_or_one_without_dispatch_says_so_and_fails_exit_code(tmp_path: Path) -> None:
    """Item 6: an empty journal is not "all done"."""
    empty = write_journal(tmp_path / "empty.jsonl", [])
    result = run("pending", empty, "--exit-code")
    assert_clean_exit(result, 1)
    assert "the journal is empty: nothing was ever dispatched" in result.stderr
    no_dispatch = tmp_path / "odd.jsonl"
    no_dispatch.write_text('{"v":1,"event":"run_planned","chunk_ids":[]}\n{"v":1,"event":"something_new"}\n')
    result = run("pending", no_dispatch, "--exit-code")
    assert_clean_exit(result, 1)
    assert "no chunk was ever dispatched or completed" in result.stderr
    done = write_journal(tmp_path / "done.jsonl", [dispatched("a"), completed("a")])
    assert_clean_exit(run("pending", done, "--exit-code"), 0)
    # A journal whose first line is still being written is a journal, not "not a journal".
    begun = tmp_path / "begun.jsonl"
    begun.write_bytes(b'{"v":1,"event":"subagent_dispatched","chunk_id":"a')
    for command in (("pending", begun, "--exit-code"), ("spanjournal", "export", begun, "--dry-run")):
        result = run(*command)
        assert_clean_exit(result, 1 if command[0] == "pending" else 0)
        assert f"{begun}:1: torn last line skipped" in result.stderr


def test_a_directory_skips_files_that_are_not_journals_with_one_line_each(tmp_path: Path, both_reads: str) -> None:
    """Item 7: the demo's calls.jsonl beside the journal is skipped, not read as a broken journal."""
    write_journal(tmp_path / "journal.jsonl", [dispatched("a"), dispatched("b"), completed("b")])
    (tmp_path / "calls.jsonl").write_text("".join(json.dumps({"call": i}) + "\n" for i in range(44)))
    (tmp_path / "empty.jsonl").write_text("")
    result = run("pending", tmp_path)
    assert_clean_exit(result, 0)
    assert result.stdout == "a\n"
    assert result.stderr.splitlines() == [
        f"{tmp_path / 'calls.jsonl'}: skipped, not a journal (no line is a journal event)",
        "1 pending: 1 unfinished (2 chunks)",
    ]
    # The journal's fold is kept for the next read; the file that is not a journal gets no checkpoint.
    kept = sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".spanjournal-checkpoint"))
    assert kept == ([".journal.jsonl.spanjournal-checkpoint"] if both_reads == "checkpoints" else [])
    exported = run("spanjournal", "export", tmp_path, "--dry-run")
    assert_clean_exit(exported, 0)
    assert [line.split()[0] for line in exported.stdout.splitlines()] == ["done", "unfinished"]
    skipped = f"{tmp_path / 'calls.jsonl'}: skipped, not a journal (no line is a journal event)"
    assert exported.stderr.splitlines()[0] == skipped
    assert "bad line" not in exported.stderr


def test_ids_with_control_characters_are_printed_escaped(tmp_path: Path) -> None:
    """Item 9 (reader side): an id holding a newline is one quoted line, never two ids for xargs."""
    journal = write_journal(tmp_path / "run.jsonl", [dispatched("case\n7"), dispatched("tab\there"), dispatched("ok")])
    result = run("pending", journal)
    assert_clean_exit(result, 0)
    assert result.stdout.splitlines() == ['"case\\n7"', '"tab\\there"', "ok"]
    assert "2 chunk ids with control characters printed JSON-quoted" in result.stderr
    records = json.loads(run("pending", journal, "--json").stdout)
    assert [r["chunk_id"] for r in records] == ["case\n7", "tab\there", "ok"]


def test_stats_group_table_keeps_never_dispatched_apart(tmp_path: Path) -> None:
    """Item 10: never-dispatched chunks have their own column, not folded into unfinished."""
    journal = write_journal(tmp_path / "run.jsonl", [dispatched("batch-1-case-1", batch="batch-1")])
    ledger = read_ledger(journal, expect=["batch-1-case-1", "batch-1-case-2", "batch-1-case-3"])
    text = render_text(compute(ledger, grouper(r"^(batch-\d+)"), group_by="group"))
    table = text.split("By group\n", 1)[1].splitlines()
    header = table[0].split()
    row = dict(zip(["group", "chunks", "done", "failed", "unfinished", "never", "success", "tokens"], table[1].split()))
    assert header[:6] == ["group", "chunks", "done", "failed", "unfinished", "never"]
    assert (row["chunks"], row["unfinished"], row["never"]) == ("3", "1", "2")


def test_python_dash_m_spanjournal_runs_the_cli(tmp_path: Path) -> None:
    """Item 16: ``python -m spanjournal``."""
    journal = write_journal(tmp_path / "run.jsonl", [dispatched("a")])
    result = subprocess.run(
        [sys.executable, "-m", "spanjournal", "pending", str(journal)], capture_output=True, text=True, timeout=60
    )
    assert_clean_exit(result, 0)
    assert result.stdout == "a\n"


def test_summary_has_thousands_separators_and_state_done_is_accepted(tmp_path: Path) -> None:
    """Item 16: ``1,200 chunks``; ``--state done`` lists the done chunks."""
    events = [dispatched(f"c{i}") for i in range(1200)] + [completed(f"c{i}") for i in range(3)]
    journal = write_journal(tmp_path / "run.jsonl", events)
    result = run("pending", journal)
    assert result.stderr.splitlines()[-1] == "1,197 pending: 1,197 unfinished (1,200 chunks)"
    done = run("pending", journal, "--state", "done")
    assert_clean_exit(done, 0)
    assert done.stdout.split() == ["c0", "c1", "c2"]
    assert done.stderr.splitlines()[-1].startswith("3 selected: 3 done")


def test_tables_on_a_terminal_are_bounded_and_say_how_many_rows_were_left_out(tmp_path: Path) -> None:
    """Item 16: 120 batches do not print 120 rows on a terminal."""
    journal = write_journal(tmp_path / "run.jsonl", [dispatched(f"c{i}", batch=f"batch-{i}") for i in range(120)])
    result = compute(read_ledger(journal), grouper("batch"))
    out = io.StringIO()
    render_rich(result, out)
    text = out.getvalue()
    assert "batch-49" in text and "batch-50 " not in text
    assert "70 more rows not shown (--all-rows)" in text
    everything = io.StringIO()
    render_rich(result, everything, limit=None)
    assert "batch-119" in everything.getvalue() and "not shown" not in everything.getvalue()
