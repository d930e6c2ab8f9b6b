"""``spanjournal reconcile``: valid outputs of unfinished chunks recorded done, append-only, confined to the root."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pytest

from cli_journals import (
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
from spanjournal._process import HOST
from spanjournal._schema import Completed, decode_line
from spanjournal.cli import main
from spanjournal.cli.reconcile import confine, decide, open_beneath, resolve_validation
from spanjournal.ledger import ChunkState, read_ledger


def reconcile(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, list[dict[str, object]], str]:
    code = main(["reconcile", *map(str, argv), "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out else [], err


def verdicts(decisions: list[dict[str, object]]) -> dict[object, tuple[object, object]]:
    return {d["chunk_id"]: (d["verdict"], d["reason"]) for d in decisions}


@pytest.fixture()
def crashed_run(tmp_path: Path) -> Path:
    """A run that died with many kinds of unfinished chunks; returns the journal."""
    root = tmp_path / "run"
    out = root / "responses"
    out.mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.json").write_text('{"stolen": true}')
    (out / "valid.json").write_text('{"ranked": ["a", "b"]}')
    (out / "partial.json").write_text('{"ranked": ["a", "b"')
    (out / "empty.json").write_text("")
    (out / "link.json").symlink_to(outside / "secret.json")
    (out / "done.json").write_text("{}")
    (out / "retried.json").write_text("[1, 2, 3]")
    (out / "lines.jsonl").write_text('{"a": 1}\n{"b": 2}\n')
    (out / "cut.jsonl").write_text('{"a": 1}\n{"b": 2')
    (out / "notes.txt").write_text("some text")
    os.mkfifo(out / "fifo.json")
    return write_journal(
        root / "run.jsonl",
        [
            dispatched("valid", output_file="responses/valid.json"),
            dispatched("partial", output_file="responses/partial.json"),
            dispatched("empty", output_file="responses/empty.json"),
            dispatched("missing", output_file="responses/missing.json"),
            dispatched("dotdot", output_file="../elsewhere/secret.json"),
            dispatched("absolute", output_file=str(outside / "secret.json")),
            dispatched("symlink", output_file="responses/link.json"),
            dispatched("no-output"),
            dispatched("fifo", output_file="responses/fifo.json"),
            dispatched("done", output_file="responses/done.json"),
            completed("done", output_file="responses/done.json"),
            dispatched("failed", output_file="responses/valid.json"),
            failed("failed"),
            dispatched("retried", output_file="responses/retried.json"),
            failed("retried"),
            dispatched("retried", 2, output_file="responses/retried.json"),
            dispatched("lines", output_file="responses/lines.jsonl"),
            dispatched("cut", output_file="responses/cut.jsonl"),
            dispatched("notes", output_file=str(out / "notes.txt")),
            running("alive", output_file="responses/valid.json"),
        ],
    )


def test_dry_run_says_what_and_why_and_touches_nothing(crashed_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = crashed_run.read_bytes()
    code, decisions, err = reconcile(capsys, crashed_run)
    root = crashed_run.parent
    assert code == 0
    assert crashed_run.read_bytes() == before
    assert verdicts(decisions) == {
        "valid": ("valid", "valid (json)"),
        "partial": ("invalid", "invalid (json): Input data was truncated"),
        "empty": ("invalid", "invalid (json): empty file"),
        "missing": ("missing", f"output file missing: {root / 'responses' / 'missing.json'}"),
        "dotdot": ("refused", f"refused: '..' leads outside the root: {root.parent / 'elsewhere' / 'secret.json'}"),
        "absolute": ("refused", f"refused: absolute path outside the root {root}"),
        "symlink": ("refused", f"refused: a symlink on the way: {root / 'responses' / 'link.json'} (none is followed)"),
        "no-output": ("no_output", "no output file named in the journal"),
        "fifo": ("invalid", "not a regular file"),
        "retried": ("valid", "valid (json)"),
        "lines": ("valid", "valid (jsonl)"),
        "cut": ("invalid", "invalid (jsonl): last line not terminated (a write cut short?)"),
        "notes": ("valid", "valid (nonempty)"),
        "alive": ("running", f"still running (pid {os.getpid()} on {HOST}): left alone"),
    }
    assert not any(d["recorded"] for d in decisions)
    assert err.splitlines()[-1] == (
        "4 of 13 unfinished chunks with a valid output: run again with --apply to record them done"
        " (3 refused: outside the root or through a symlink, 1 still running)"
    )


def test_table_without_json(crashed_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reconcile", str(crashed_run)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["CHUNK", "OUTPUT", "ACTION", "WHY"]
    rows = {line.split()[0]: line for line in out[1:]}
    assert "would record done" in rows["valid"] and "valid (json)" in rows["valid"]
    assert "left pending" in rows["symlink"] and "refused: a symlink on the way" in rows["symlink"]


def test_apply_only_appends_completions_that_pair_with_the_latest_attempt(
    crashed_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = crashed_run.read_bytes()
    pending_before = read_ledger(crashed_run).pending()
    code, decisions, err = reconcile(capsys, crashed_run, "--apply")
    assert code == 0
    assert {d["chunk_id"] for d in decisions if d["recorded"]} == {"valid", "retried", "lines", "notes"}
    assert "4 recorded done" in err

    after = crashed_run.read_bytes()
    assert after.startswith(before)
    appended = [decode_line(line) for line in after[len(before) :].splitlines()]
    assert [e.chunk_id for e in appended if isinstance(e, Completed)] == ["valid", "retried", "lines", "notes"]
    by_chunk = {e.chunk_id: e for e in appended if isinstance(e, Completed)}
    retried = by_chunk["retried"]
    assert (retried.success, retried.reconciled, retried.validation) == (True, True, "json")
    assert (retried.span_id, retried.trace_id) == (span_of("retried", 2), trace_of("retried"))
    assert retried.output_file == "responses/retried.json"
    assert retried.session_id == "s1"
    assert by_chunk["lines"].validation == "jsonl"
    assert by_chunk["notes"].validation == "nonempty"

    ledger = read_ledger(crashed_run)
    assert ledger.pending() == [c for c in pending_before if c not in by_chunk]
    chunk = ledger["retried"]
    assert chunk.state is ChunkState.DONE
    assert chunk.attempts[-1].completion is not None and chunk.attempts[-1].completion.reconciled
    assert chunk.attempts[0].completion is not None and not chunk.attempts[0].completion.success

    code, decisions, err = reconcile(capsys, crashed_run, "--apply")
    assert crashed_run.read_bytes() == after
    assert not any(d["verdict"] == "valid" for d in decisions)
    assert err.splitlines()[-1].startswith("0 of 9 unfinished chunks with a valid output: 0 recorded done")


def test_completion_time_is_when_the_output_was_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.json").write_text("{}")
    os.utime(tmp_path / "a.json", (1_800_000_000.25, 1_800_000_000.25))
    journal = write_journal(tmp_path / "run.jsonl", [dispatched("a", output_file="a.json")])
    reconcile(capsys, journal, "--apply")
    event = decode_line(journal.read_bytes().splitlines()[-1])
    assert isinstance(event, Completed)
    assert datetime.fromisoformat(event.ts).timestamp() == 1_800_000_000.25


def test_an_output_older_than_its_dispatch_is_not_trusted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "old.json").write_text("{}")
    os.utime(tmp_path / "old.json", (1_600_000_000, 1_600_000_000))  # 2020, before the dispatch
    journal = write_journal(tmp_path / "run.jsonl", [dispatched("old", output_file="old.json")])
    _, decisions, _ = reconcile(capsys, journal)
    assert verdicts(decisions) == {"old": ("invalid", "older than the dispatch (a previous run's file?)")}


def test_root_option_and_absolute_paths_inside_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "work"
    (work / "out").mkdir(parents=True)
    (work / "out" / "a.json").write_text("{}")
    (work / "out" / "b.json").write_text("{}")
    journal = write_journal(
        tmp_path / "journals" / "run.jsonl",
        [
            dispatched("a", output_file="out/a.json"),
            dispatched("b", output_file=str(work / "out" / "b.json")),
            dispatched("c", output_file="out/../out/a.json"),
        ],
    )
    _, decisions, _ = reconcile(capsys, journal)
    assert [d["verdict"] for d in decisions] == ["missing", "refused", "missing"]
    _, decisions, _ = reconcile(capsys, journal, "--root", work)
    assert [d["verdict"] for d in decisions] == ["valid", "valid", "valid"]


def test_confine_is_lexical_and_open_beneath_follows_no_symlink(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "x.json").write_text("{}")
    (root / "inner-link").symlink_to(root / "sub")
    (root / "outer-link").symlink_to(tmp_path)
    assert confine([root], root / "sub" / "x.json", "sub/x.json") == (root, ["sub", "x.json"], "")
    assert confine([tmp_path / "other", root], root / "x.json", "x.json") == (root, ["x.json"], "")
    assert confine([root], tmp_path / "x.json", "sub/../../x.json") == (
        None,
        None,
        f"'..' leads outside the root: {tmp_path / 'x.json'}",
    )
    assert confine([root], Path("/etc/passwd"), "/etc/passwd") == (None, None, f"absolute path outside the root {root}")
    fd, verdict, why = open_beneath(root, ["sub", "x.json"])
    assert fd is not None and verdict == "valid" and why == ""
    os.close(fd)
    for link in ("inner-link", "outer-link"):  # inside or out, a symlink is not followed
        assert open_beneath(root, [link, "x.json"]) == (
            None,
            "refused",
            f"refused: a symlink on the way: {root / link} (none is followed)",
        )
    missing = root / "sub" / "nope.json"
    assert open_beneath(root, ["sub", "nope.json"]) == (None, "missing", f"output file missing: {missing}")


def test_a_run_opens_each_directory_on_the_way_once_and_still_follows_no_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "run"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b.link").symlink_to(root / "a" / "b")
    names = [f"{i}.json" for i in range(40)]
    for name in names[::2]:
        (root / "a" / "b" / name).write_text("{}")
    events = [dispatched(f"c{i}", output_file=f"a/b/{name}") for i, name in enumerate(names)]
    events.append(dispatched("through-link", output_file="a/b.link/0.json"))
    events += [dispatched(f"gone-{i}", output_file=f"gone/{i}.json") for i in range(3)]
    journal = write_journal(root / "run.jsonl", events)
    opened: list[str] = []
    real_open = os.open

    def counting_open(path: str | os.PathLike[str], flags: int, *args: object, **kwargs: object) -> int:
        opened.append(os.fspath(path))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", counting_open)
    ledger = read_ledger(journal, keep_attempts=False)
    decisions = decide(ledger, None, resolve_validation("json"), journal_folder=root)
    monkeypatch.undo()
    assert [d.verdict for d in decisions] == ["valid", "missing"] * 20 + ["refused"] + ["missing"] * 3
    assert decisions[40].reason == f"refused: a symlink on the way: {root / 'a' / 'b.link'} (none is followed)"
    gone = [f"output file missing: {root / 'gone' / f'{i}.json'}" for i in range(3)]
    assert [d.reason for d in decisions[41:]] == gone
    # the root, "a" and "b" once each (and "a" already open for the symlink), then one open per output;
    # a missing directory is tried once
    assert sorted(opened) == sorted([str(root), "a", "b", *names, "b.link", "gone"])


def test_explicit_validators(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.txt").write_text('{"x": 1}')
    (tmp_path / "b.json").write_text("not json at all")
    journal = write_journal(
        tmp_path / "run.jsonl", [dispatched("a", output_file="a.txt"), dispatched("b", output_file="b.json")]
    )
    _, decisions, _ = reconcile(capsys, journal, "--validate", "json")
    assert [d["verdict"] for d in decisions] == ["valid", "invalid"]
    _, decisions, _ = reconcile(capsys, journal, "--validate", "nonempty")
    assert [(d["verdict"], d["validation"]) for d in decisions] == [("valid", "nonempty"), ("valid", "nonempty")]


def test_module_func_validator_from_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "checks.py").write_text(
        "import json\ndef ranked(path):\n    return len(json.loads(path.read_text())['ranked']) == 3\n"
    )
    (tmp_path / "good.json").write_text('{"ranked": [1, 2, 3]}')
    (tmp_path / "short.json").write_text('{"ranked": [1]}')
    (tmp_path / "other.json").write_text("[]")
    journal = write_journal(
        tmp_path / "run.jsonl",
        [dispatched(c, output_file=f"{c}.json") for c in ("good", "short", "other")],
    )
    args = ("reconcile", "run.jsonl", "--validate", "checks:ranked", "--json", "--apply")
    result = run("spanjournal", *args, cwd=tmp_path)
    assert_clean_exit(result, 0)
    decisions = json.loads(result.stdout)
    assert [(d["verdict"], d["reason"]) for d in decisions] == [
        ("valid", "valid (checks:ranked)"),
        ("invalid", "invalid (checks:ranked): ranked returned False"),
        ("invalid", "invalid (checks:ranked): TypeError: list indices must be integers or slices, not str"),
    ]
    last = decode_line(journal.read_bytes().splitlines()[-1])
    assert isinstance(last, Completed) and last.validation == "checks:ranked"

    for spec, message in [
        ("nosuchmodule:f", "cannot import nosuchmodule"),
        ("checks:nope", "checks has no nope"),
        ("yaml", "expected json, jsonl, nonempty or MODULE:FUNC"),
    ]:
        result = run("spanjournal", "reconcile", "run.jsonl", "--validate", spec, cwd=tmp_path)
        assert_clean_exit(result, 2)
        assert result.stderr.count("\n") == 1 and message in result.stderr


def test_reconcile_needs_one_journal_and_a_root_directory(tmp_path: Path) -> None:
    write_journal(tmp_path / "runs" / "a.jsonl", [dispatched("a")])
    write_journal(tmp_path / "runs" / "b.jsonl", [dispatched("b")])
    result = run("spanjournal", "reconcile", tmp_path / "runs")
    assert_clean_exit(result, 2)
    assert result.stderr == (
        f"spanjournal reconcile: error: {tmp_path / 'runs'}: holds 2 journals;"
        " reconcile appends to one, name the file\n"
    )
    result = run("spanjournal", "reconcile", tmp_path / "runs" / "a.jsonl", "--root", tmp_path / "nope")
    assert_clean_exit(result, 2)
    assert result.stderr == f"spanjournal reconcile: error: --root {tmp_path / 'nope'}: not a directory\n"
