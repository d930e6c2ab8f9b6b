"""``pending`` / ``spanjournal pending``: ids on stdout, a summary on stderr, exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli_journals import (
    BIN,
    assert_clean_exit,
    completed,
    dispatched,
    failed,
    run,
    running,
    span_of,
    trace_of,
    write_journal,
)
from spanjournal.cli import SUBCOMMANDS, main, pending_main
from spanjournal.cli._output import Progress
from spanjournal.ledger import ChunkState, read_ledger

# Every test here runs with the C states-only fold and with the Python one.
pytestmark = pytest.mark.usefixtures("both_reads")


def fifty_chunks(path: Path) -> list[str]:
    """50 chunks: 46 done, chunks 10, 20, 30 unfinished, 40 failed; a torn last line. Returns the pending ids."""
    lines: list[object] = []
    for i in range(50):
        cid = f"batch-{i // 10}-case-{i:03d}"
        lines.append(dispatched(cid))
        if i in (10, 20, 30):
            continue
        lines.append(failed(cid) if i == 40 else completed(cid, tokens_used=10))
    lines.append(b'{"v":1,"event":"subagent_dispatched","chunk_id":"batch-9-ca')
    write_journal(path, lines)  # type: ignore[arg-type]
    return ["batch-1-case-010", "batch-2-case-020", "batch-3-case-030", "batch-4-case-040"]


def test_ids_on_stdout_summary_on_stderr(tmp_path: Path) -> None:
    journal = tmp_path / "run.jsonl"
    expected = fifty_chunks(journal)
    result = run("pending", journal)
    assert_clean_exit(result, 0)
    assert result.stdout.splitlines() == expected
    err = result.stderr.splitlines()
    assert err[-1] == "4 pending: 3 unfinished, 1 failed (50 chunks, 1 torn line skipped)"
    assert err[:-1] == [f"{journal}:98: torn last line skipped (an interrupted write)"]


def test_spanjournal_pending_is_the_same_command(tmp_path: Path) -> None:
    journal = tmp_path / "run.jsonl"
    fifty_chunks(journal)
    a, b = run("pending", journal), run("spanjournal", "pending", journal)
    assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr)


def test_exit_code_flag(tmp_path: Path) -> None:
    journal = tmp_path / "run.jsonl"
    fifty_chunks(journal)
    assert_clean_exit(run("pending", journal, "--exit-code"), 1)
    assert_clean_exit(run("pending", journal), 0)
    clean = write_journal(tmp_path / "clean.jsonl", [dispatched("a"), completed("a")])
    result = run("pending", clean, "--exit-code")
    assert_clean_exit(result, 0)
    assert result.stdout == ""
    assert result.stderr == "0 pending (1 chunk)\n"


def run_in_process(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = pending_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_states_retries_and_first_dispatch_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = write_journal(
        tmp_path / "run.jsonl",
        [
            dispatched("c"),
            dispatched("a"),
            failed("a"),
            dispatched("a", 2),  # retried, then died: unfinished
            dispatched("b"),
            failed("b"),
            dispatched("b", 2),
            completed("b", attempt=2),  # retried, then done
            dispatched("d"),
            failed("d"),  # failed once, never retried
            running("e"),
        ],
    )
    code, out, err = run_in_process(capsys, journal)
    assert (code, out.split()) == (0, ["c", "a", "d"])
    assert err == "3 pending: 2 unfinished, 1 failed (5 chunks, 1 still running)\n"

    code, out, err = run_in_process(capsys, journal, "--state", "failed", "--state", "running")
    assert out.split() == ["d", "e"]
    assert err == "2 selected: 1 failed, 1 running (5 chunks)\n"

    _, out, _ = run_in_process(capsys, journal, "--state", "unfinished")
    assert out.split() == ["c", "a"]


def test_expect_file_adds_never_dispatched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = write_journal(tmp_path / "run.jsonl", [dispatched("a"), completed("a"), dispatched("b")])
    expect = tmp_path / "cases.txt"
    expect.write_text("a\nb\n\nz\ny\n", encoding="utf-8")
    _, out, err = run_in_process(capsys, journal, "--expect", expect)
    assert out.split() == ["b", "z", "y"]
    assert err == "3 pending: 1 unfinished, 2 never dispatched (4 chunks)\n"
    _, out, _ = run_in_process(capsys, journal, "--expect", expect, "--state", "never_dispatched")
    assert out.split() == ["z", "y"]


def test_session_filter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = write_journal(
        tmp_path / "run.jsonl",
        [dispatched("a", session="s1"), dispatched("b", session="s2"), completed("b", session="s2")],
    )
    assert run_in_process(capsys, journal, "--session", "s2")[1] == ""
    assert run_in_process(capsys, journal, "--session", "s1")[1] == "a\n"
    assert run_in_process(capsys, journal)[1] == "a\n"


def test_several_journals_are_merged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One journal per host: a chunk dispatched on one and completed on another is done."""
    write_journal(tmp_path / "runs" / "host-a.jsonl", [dispatched("a"), dispatched("b"), completed("a")])
    write_journal(tmp_path / "runs" / "host-b.jsonl", [dispatched("c"), completed("b")])
    _, out, err = run_in_process(capsys, tmp_path / "runs")
    assert out == "c\n"
    assert err == "1 pending: 1 unfinished (3 chunks)\n"
    _, out, _ = run_in_process(capsys, tmp_path / "runs" / "host-a.jsonl", tmp_path / "runs" / "host-b.jsonl")
    assert out == "c\n"
    _, out, _ = run_in_process(capsys, str(tmp_path / "runs" / "host-*.jsonl"))
    assert out == "c\n"


def test_json_objects(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = write_journal(
        tmp_path / "run.jsonl",
        [
            dispatched("a", output_file="out/a.json", ts="2026-05-27T13:00:00.000001+08:00"),
            failed("a", error="boom", error_type="ValueError", ts="2026-05-27T13:00:05.000001+08:00"),
            dispatched("a", 2, output_file="out/a.json", ts="2026-05-27T13:01:00.000001+08:00"),
            failed("a", 2, error="quota exceeded", ts="2026-05-27T13:01:05.000001+08:00"),
            dispatched("b", ts="2026-05-27T13:02:00.000001+08:00"),
            dispatched("c"),
            completed("c"),
        ],
    )
    code, out, err = run_in_process(capsys, journal, "--json", "--exit-code")
    assert code == 1
    assert json.loads(out) == [
        {
            "chunk_id": "a",
            "state": "failed",
            "attempts": 2,
            "last_error": "quota exceeded",
            "error_type": "QuotaError",
            "output_file": "out/a.json",
            "last_ts": "2026-05-27T13:01:05.000001+08:00",
            "trace_id": trace_of("a"),
            "agent": None,
        },
        {
            "chunk_id": "b",
            "state": "unfinished",
            "attempts": 1,
            "last_error": None,
            "error_type": None,
            "output_file": None,
            "last_ts": "2026-05-27T13:02:00.000001+08:00",
            "trace_id": trace_of("b"),
            "agent": None,
        },
    ]
    assert err == "2 pending: 1 unfinished, 1 failed (3 chunks)\n"
    _, out, _ = run_in_process(capsys, journal, "--json", "--state", "running")
    assert json.loads(out) == []


def test_json_and_plain_agree_with_the_library(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = tmp_path / "run.jsonl"
    fifty_chunks(journal)
    _, plain, _ = run_in_process(capsys, journal)
    _, as_json, _ = run_in_process(capsys, journal, "--json")
    assert plain.split() == [o["chunk_id"] for o in json.loads(as_json)] == read_ledger(journal).pending()


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    journal = write_journal(tmp_path / "run.jsonl", [dispatched(f"case-{i:05d}") for i in range(20000)])
    proc = subprocess.Popen(
        [str(BIN / "pending"), str(journal)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == "case-00000\n"
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=30) in (0, 141)
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_no_opentelemetry_and_no_rich_on_the_reading_path(tmp_path: Path) -> None:
    """Start-up time: the CLI imports neither the OTel SDK nor rich (even with every subcommand registered)."""
    journal = tmp_path / "run.jsonl"
    fifty_chunks(journal)
    code = (
        "import sys\n"
        "from spanjournal.cli import main, pending_main\n"
        f"pending_main([{str(journal)!r}])\n"
        f"main(['pending', {str(journal)!r}, '--json'])\n"
        f"main(['stats', {str(journal)!r}])\n"
        f"main(['reconcile', {str(journal)!r}])\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('opentelemetry', 'rich', 'google', 'grpc'))\n"
        "print(heavy, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == "[]"
    assert "4 pending: 3 unfinished, 1 failed" in result.stderr


def test_plain_pending_imports_only_what_it_uses(tmp_path: Path) -> None:
    """Start-up time of the most frequent command: no socket, json, secrets or rich on its way."""
    journal = tmp_path / "run.jsonl"
    fifty_chunks(journal)
    code = (
        "import sys\n"
        "from spanjournal.cli import pending_main\n"
        f"pending_main([{str(journal)!r}])\n"
        "unused = ('socket', 'json', 'secrets', 'rich')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in unused), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == "[]"
    assert "4 pending: 3 unfinished, 1 failed" in result.stderr


def test_every_registered_subcommand_has_help_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for name in SUBCOMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: spanjournal {name} ")
        assert f"examples:\n  spanjournal {name} " in out


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_only_on_a_terminal_after_a_second() -> None:
    now = [0.0]
    term = FakeTerminal()
    progress = Progress(300 * 1024 * 1024, term, clock=lambda: now[0])
    progress(8 * 1024 * 1024)
    now[0] = 0.9
    progress(100 * 1024 * 1024)
    assert term.getvalue() == ""
    now[0] = 1.2
    progress(150 * 1024 * 1024)
    drawn = term.getvalue()
    assert drawn.startswith("\rreading [###############...............]  50%  150/300 MB")
    progress.close()
    assert term.getvalue().endswith("\r" + " " * (len(drawn) - 1) + "\r")

    pipe = io.StringIO()
    quiet = Progress(300 * 1024 * 1024, pipe, clock=lambda: now[0])
    now[0] = 100.0
    quiet(1)
    quiet.close()
    assert pipe.getvalue() == ""


def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    journal = tmp_path / "run.jsonl"
    fifty_chunks(journal)
    result = run("pending", journal)
    assert "\r" not in result.stderr


def test_states_match_the_ledger_on_random_journals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import random

    rng = random.Random(4)
    lines: list[object] = []
    for i in range(300):
        cid = f"c{i}"
        for attempt in range(1, rng.randint(1, 3) + 1):
            lines.append(dispatched(cid, attempt))
            r = rng.random()
            if r < 0.6:
                lines.append(completed(cid, attempt=attempt))
            elif r < 0.8:
                lines.append(failed(cid, attempt))
    journal = write_journal(tmp_path / "run.jsonl", lines)  # type: ignore[arg-type]
    ledger = read_ledger(journal)
    for states in ([ChunkState.UNFINISHED], [ChunkState.FAILED], [ChunkState.UNFINISHED, ChunkState.FAILED]):
        argv: list[str | Path] = [journal]
        for s in states:
            argv += ["--state", s.value]
        _, out, _ = run_in_process(capsys, *argv)
        assert out.split() == ledger.pending(states)
    assert span_of("c1") != span_of("c1", 2)
