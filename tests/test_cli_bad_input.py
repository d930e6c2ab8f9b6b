"""Bad paths and bad lines, for every command: one-line errors (exit 2) or warnings with file and line (exit 0)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cli_journals import assert_clean_exit, completed, dispatched, run, write_journal
from spanjournal._schema import encode

# Every test here runs with the C states-only fold and with the Python one.
pytestmark = pytest.mark.usefixtures("both_reads")

COMMANDS = [("pending",), ("spanjournal", "pending"), ("spanjournal", "reconcile"), ("spanjournal", "stats")]
COMMAND_IDS = ["pending", "spanjournal-pending", "reconcile", "stats"]


def prog(command: tuple[str, ...]) -> str:
    return " ".join(command)


def run_command(command: tuple[str, ...], *args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return run(command[0], *command[1:], *args, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("command", COMMANDS, ids=COMMAND_IDS)
def test_missing_journal(command: tuple[str, ...], tmp_path: Path) -> None:
    result = run_command(command, tmp_path / "nope.jsonl")
    assert_clean_exit(result, 2)
    assert result.stdout == ""
    assert result.stderr == f"{prog(command)}: error: {tmp_path / 'nope.jsonl'}: no such journal\n"


@pytest.mark.parametrize("command", COMMANDS, ids=COMMAND_IDS)
def test_directory_without_journals(command: tuple[str, ...], tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a journal")
    result = run_command(command, tmp_path)
    assert_clean_exit(result, 2)
    assert result.stderr == f"{prog(command)}: error: {tmp_path}: directory holds no *.jsonl journal\n"


def without_root_powers() -> list[str]:
    """A command prefix under which file permissions apply, even to root (which bypasses them)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: every file is readable")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]


@pytest.mark.parametrize("command", [*COMMANDS, ("spanjournal", "export")], ids=[*COMMAND_IDS, "export"])
def test_unreadable_journal(command: tuple[str, ...], tmp_path: Path) -> None:
    journal = write_journal(tmp_path / "locked.jsonl", [dispatched("a")])
    journal.chmod(0)
    result = run_command(command, journal, prefix=without_root_powers())
    assert_clean_exit(result, 2)
    assert result.stderr == f"{prog(command)}: error: {journal}: permission denied\n"


def test_missing_expect_file(tmp_path: Path) -> None:
    journal = write_journal(tmp_path / "run.jsonl", [dispatched("a")])
    result = run("pending", journal, "--expect", tmp_path / "cases.txt")
    assert_clean_exit(result, 2)
    assert result.stderr == f"pending: error: --expect {tmp_path / 'cases.txt'}: no such file\n"
    (tmp_path / "bad.txt").write_bytes(b"a\n\xff\xfe\n")
    result = run("pending", journal, "--expect", tmp_path / "bad.txt")
    assert_clean_exit(result, 2)
    assert result.stderr == f"pending: error: --expect {tmp_path / 'bad.txt'}: not UTF-8 text\n"


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    for args in (["pending"], ["pending", "x.jsonl", "--state", "finished"], ["spanjournal", "frobnicate"]):
        result = run(*args)
        assert_clean_exit(result, 2)
        assert "usage:" in result.stderr


def broken_journal(tmp_path: Path) -> Path:
    """Good events around garbage, a wrong field type, non-UTF-8 bytes, a BOM, a blank line and a torn tail."""
    lines: list[object] = [
        b"\xef\xbb\xbf" + encode(dispatched("a")),  # 1: BOM (repaired)
        dispatched("b"),  # 2
        b"this is not json\n",  # 3
        completed("a"),  # 4
        b'{"v":1,"event":"subagent_dispatched","chunk_id":42,"session_id":"s1"}\n',  # 5: wrong type
        b'{"v":1,"event":"subagent_completed","chunk_id":"b","success":"yes"}\n',  # 6: wrong type
        b'{"v":1,"event":"subagent_dispatched",\xff"chunk_id":"x"}\n',  # 7: not UTF-8
        b"\n",  # 8: blank
        dispatched("c"),  # 9
        b'{"v":1,"event":"subagent_completed","chunk_id":"c","succ',  # 10: torn tail
    ]
    return write_journal(tmp_path / "run.jsonl", lines)  # type: ignore[arg-type]


@pytest.mark.parametrize("command", COMMANDS, ids=COMMAND_IDS)
def test_bad_lines_are_warnings_with_file_and_line(command: tuple[str, ...], tmp_path: Path) -> None:
    journal = broken_journal(tmp_path)
    result = run_command(command, journal)
    assert_clean_exit(result, 0)
    warnings = [line for line in result.stderr.splitlines() if line.startswith(f"{journal}:")]
    assert [int(w.split(":")[1]) for w in warnings] == [1, 3, 5, 6, 7, 8, 10]
    by_line = {int(w.split(":")[1]): w.split(": ", 1)[1] for w in warnings}
    assert by_line[1] == "byte-order mark removed"
    assert "not a JSON event" in by_line[3]
    assert "bad event skipped" in by_line[5] and "chunk_id" in by_line[5]
    assert "bad event skipped" in by_line[6] and "success" in by_line[6]
    assert by_line[7] == "line that is not UTF-8 skipped"
    assert by_line[8] == "blank line skipped"
    assert by_line[10] == "torn last line skipped (an interrupted write)"
    if command[-1] == "pending":
        assert result.stdout.split() == ["b", "c"]
        assert result.stderr.splitlines()[-1] == (
            "2 pending: 2 unfinished (3 chunks, 1 torn line skipped, 5 bad lines skipped)"
        )


def test_stats_and_reconcile_answer_from_the_good_lines(tmp_path: Path) -> None:
    journal = broken_journal(tmp_path)
    stats = json.loads(run("spanjournal", "stats", journal, "--json").stdout)
    assert (stats["totals"]["chunks"], stats["totals"]["done"], stats["totals"]["unfinished"]) == (3, 1, 2)
    assert (stats["journals"]["bad_lines"], stats["journals"]["torn_lines"]) == (5, 1)
    decisions = json.loads(run("spanjournal", "reconcile", journal, "--json").stdout)
    assert [(d["chunk_id"], d["verdict"]) for d in decisions] == [("b", "no_output"), ("c", "no_output")]


def test_warnings_are_capped(tmp_path: Path) -> None:
    journal = write_journal(
        tmp_path / "run.jsonl", [dispatched("a"), *(b"garbage %d\n" % i for i in range(25)), dispatched("b")]
    )
    result = run("pending", journal)
    assert_clean_exit(result, 0)
    err = result.stderr.splitlines()
    assert len(err) == 12
    assert err[0].startswith(f"{journal}:2: line that is not a JSON event")
    assert err[9].startswith(f"{journal}:11: ")
    assert err[10] == "... and 15 more problems in the journal"
    assert err[11] == "2 pending: 2 unfinished (2 chunks, 25 bad lines skipped)"
    assert result.stdout == "a\nb\n"


@pytest.mark.parametrize("command", COMMANDS, ids=COMMAND_IDS)
def test_empty_journal(command: tuple[str, ...], tmp_path: Path) -> None:
    journal = write_journal(tmp_path / "run.jsonl", [])
    result = run_command(command, journal, "--json")
    assert_clean_exit(result, 0)
    out = json.loads(result.stdout)
    if command[-1] == "pending":
        assert out == []
        assert result.stderr == (
            "0 pending (0 chunks)\n"
            "warning: the journal is empty: nothing was ever dispatched (is this the right file?)\n"
        )
    elif command[-1] == "reconcile":
        assert out == []
    else:
        assert out["totals"]["chunks"] == 0 and out["groups"] == []


@pytest.mark.parametrize(
    "command", [("pending",), ("spanjournal",), *COMMANDS[1:]], ids=["pending", "spanjournal", *COMMAND_IDS[1:]]
)
def test_help_has_examples(command: tuple[str, ...]) -> None:
    result = run_command(command, "--help")
    assert_clean_exit(result, 0)
    assert result.stdout.startswith(f"usage: {prog(command)}")
    examples = result.stdout.split("examples:\n", 1)[1]
    first = examples.splitlines()[0].strip()
    assert first.startswith(command[0]) and "runs/bench.jsonl" in first


def test_a_non_utf8_byte_inside_a_string_is_a_warning(tmp_path: Path) -> None:
    journal = write_journal(
        tmp_path / "run.jsonl",
        [dispatched("a"), b'{"v":1,"event":"subagent_dispatched","chunk_id":"caf\xe9"}\n', dispatched("b")],
    )
    result = run("pending", journal)
    assert_clean_exit(result, 0)
    assert result.stdout == "a\nb\n"
    assert result.stderr.splitlines()[0] == f"{journal}:2: line that is not UTF-8 skipped"
