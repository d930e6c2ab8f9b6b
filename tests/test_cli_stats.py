"""``spanjournal stats``: totals, groups, tokens, cost, durations, failures, missing outputs."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from unittest import mock

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cli_journals import assert_clean_exit, completed, dispatched, failed, run, write_journal
from spanjournal._schema import encode
from spanjournal.cli import main, stats
from spanjournal.cli.stats import MissingFiles, compute, grouper, percentiles, render_text
from spanjournal.fold import OutputsByDirectory, add_outputs
from spanjournal.ledger import read_ledger


@pytest.fixture()
def journal(tmp_path: Path) -> Path:
    """Two batches. batch-1: 3 done (one after a retry), 1 failed twice. batch-2: 1 done, 1 unfinished.

    Plus a chunk with no batch field, never completed.
    """
    (tmp_path / "out").mkdir()
    for name in ("b1-a", "b1-b", "b2-a"):
        (tmp_path / "out" / f"{name}.json").write_text("{}")
    return write_journal(
        tmp_path / "run.jsonl",
        [
            dispatched("batch-1-case-1", batch="batch-1", output_file="out/b1-a.json"),
            completed("batch-1-case-1", tokens_used=100, duration_ms=1000.0, output_file="out/b1-a.json"),
            dispatched("batch-1-case-2", batch="batch-1", output_file="out/b1-b.json"),
            failed("batch-1-case-2", tokens_used=20, duration_ms=50.0),
            dispatched("batch-1-case-2", 2, batch="batch-1", output_file="out/b1-b.json"),
            completed("batch-1-case-2", attempt=2, input_tokens=150, output_tokens=50, duration_ms=3000.0),
            dispatched("batch-1-case-3", batch="batch-1", output_file="out/b1-gone.json"),
            completed("batch-1-case-3", tokens_used=300, duration_ms=2000.0),
            dispatched("batch-1-case-4", batch="batch-1"),
            failed("batch-1-case-4", error_type="TimeoutError", duration_ms=60000.0),
            dispatched("batch-1-case-4", 2, batch="batch-1"),
            failed("batch-1-case-4", 2, tokens_used=30, duration_ms=70.0),
            dispatched("batch-2-case-1", batch="batch-2", output_file="out/b2-a.json"),
            completed("batch-2-case-1", tokens_used=400, duration_ms=4000.0),
            dispatched("batch-2-case-2", batch="batch-2"),
            dispatched("loose"),
        ],
    )


def test_totals_groups_tokens_cost_durations_failures_missing(journal: Path) -> None:
    result = compute(read_ledger(journal), grouper("batch"), price=2.0, root=journal.parent)
    t = result.totals
    assert (t.chunks, t.dispatched, t.attempts, t.retried) == (7, 7, 9, 2)
    assert (t.done, t.failed, t.unfinished, t.running, t.never_dispatched) == (4, 1, 2, 0, 0)
    assert t.success_rate == pytest.approx(4 / 7)

    groups = {g.group: g for g in result.groups}
    assert [g.group for g in result.groups] == ["batch-1", "batch-2", "(no batch)"]
    b1, b2, loose = groups["batch-1"], groups["batch-2"], groups["(no batch)"]
    assert (b1.chunks, b1.done, b1.failed, b1.unfinished, b1.tokens) == (4, 3, 1, 0, 650)
    assert (b2.chunks, b2.done, b2.unfinished, b2.tokens) == (2, 1, 1, 400)
    assert (loose.chunks, loose.unfinished, loose.success_rate) == (1, 1, 0.0)
    assert b1.success_rate == 0.75
    assert b1.cost == pytest.approx(1.3)

    assert result.tokens.total == 1050
    assert result.tokens.per_done_chunk == 1050 / 4
    assert result.cost is not None
    assert result.cost.total == pytest.approx(2.1)
    assert result.cost.per_done_chunk == pytest.approx(2.1 / 4)

    d = result.duration_ms
    assert (d.count, d.p50, d.p95, d.max) == (7, 2000.0, 60000.0, 60000.0)
    assert result.failures_by_error_type == {"QuotaError": 2, "TimeoutError": 1}
    assert [(m.chunk_id, m.output_file) for m in result.missing_outputs] == [("batch-1-case-3", "out/b1-gone.json")]


def test_percentiles_nearest_rank() -> None:
    d = percentiles([float(v) for v in range(100, 0, -1)])
    assert (d.count, d.p50, d.p95, d.max) == (100, 50.0, 95.0, 100.0)
    assert percentiles([]).p50 is None
    assert percentiles([7.0]).p95 == 7.0


def test_group_by_regex(journal: Path) -> None:
    ledger = read_ledger(journal)
    by_case = compute(ledger, grouper(r"case-(\d+)$"))
    assert {g.group: g.chunks for g in by_case.groups} == {"1": 2, "2": 2, "3": 1, "4": 1, "(no match)": 1}
    whole = compute(ledger, grouper(r"^batch-\d"))
    assert [(g.group, g.done) for g in whole.groups] == [("batch-1", 3), ("batch-2", 1), ("(no match)", 0)]


def test_json_output_in_a_subprocess(journal: Path) -> None:
    result = run("spanjournal", "stats", journal, "--json", "--group-by", r"^(batch-\d+)", "--price-per-1k-tokens", "1")
    assert_clean_exit(result, 0)
    data = json.loads(result.stdout)
    assert data["totals"]["done"] == 4
    assert data["group_by"] == r"^(batch-\d+)"
    assert [(g["group"], g["tokens"], g["cost"]) for g in data["groups"]] == [
        ("batch-1", 650, 0.65),
        ("batch-2", 400, 0.4),
        ("(no match)", 0, 0.0),
    ]
    assert data["cost"] == {"price_per_1k_tokens": 1.0, "total": 1.05, "per_done_chunk": 1.05 / 4}
    assert data["duration_ms"] == {"count": 7, "p50": 2000.0, "p95": 60000.0, "max": 60000.0}
    assert data["missing_outputs"] == [
        {
            "chunk_id": "batch-1-case-3",
            "output_file": "out/b1-gone.json",
            "path": str(journal.parent / "out/b1-gone.json"),
        }
    ]
    assert data["journals"] == {"files": [str(journal)], "events": 16, "torn_lines": 0, "bad_lines": 0}
    assert result.stderr == ""


def test_plain_tables_in_a_pipe(journal: Path) -> None:
    result = run("spanjournal", "stats", journal, "--price-per-1k-tokens", "2")
    assert_clean_exit(result, 0)
    lines = result.stdout.splitlines()
    assert lines[0] == "Run (1 journal, 16 events)"
    assert "\x1b" not in result.stdout and "┃" not in result.stdout
    rows = {line.split()[0]: line.split() for line in lines if line.startswith("batch-")}
    assert rows["batch-1"] == ["batch-1", "4", "3", "1", "0", "75.0%", "650", "1.30"]
    assert rows["batch-2"] == ["batch-2", "2", "1", "0", "1", "50.0%", "400", "0.8000"]
    text = result.stdout
    assert "success rate" in text and "57.1%" in text
    assert "duration p50 / p95 / max (7 attempts)" in text and "2.00 s / 60.00 s / 60.00 s" in text
    assert "QuotaError" in text and "TimeoutError" in text
    assert "Done chunks whose output file is missing (1)" in text and "out/b1-gone.json" in text


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_rich_table_on_a_terminal(journal: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    term = FakeTerminal()
    monkeypatch.setattr("sys.stdout", term)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("COLUMNS", "120")
    assert main(["stats", str(journal), "--group-by", r"^(batch-\d+)"]) == 0
    out = term.getvalue()
    assert "┃" in out or "│" in out
    assert "By ^(batch-\\d+)" in out  # a regex is shown as written, not taken as rich markup
    row = next(line for line in out.splitlines() if "batch-1 " in line)
    assert [c.strip() for c in row.strip("│ ").split("│")] == ["batch-1", "4", "3", "1", "0", "75.0%", "650"]


def test_text_rendering_of_an_empty_run(tmp_path: Path) -> None:
    empty = write_journal(tmp_path / "empty.jsonl", [])
    text = render_text(compute(read_ledger(empty), grouper("batch")))
    assert text.startswith("Run (1 journal, 0 events)\n")
    assert "success rate" in text and "duration p50 / p95 / max (0 attempts)  - / - / -" in text


def test_bad_options_are_usage_errors(journal: Path) -> None:
    result = run("spanjournal", "stats", journal, "--group-by", "batch-(")
    assert_clean_exit(result, 2)
    assert result.stderr.startswith("spanjournal stats: error: --group-by batch-(: not a field (batch, agent)")
    assert result.stderr.count("\n") == 1
    result = run("spanjournal", "stats", journal, "--price-per-1k-tokens", "-1")
    assert_clean_exit(result, 2)
    assert "must be a non-negative number" in result.stderr


# -- done chunks whose output file is missing ---------------------------------------------------


def _missing_outputs_journal(tmp_path: Path, outputs: dict[str, tuple[str, str | None]]) -> Path:
    """Each chunk done once, with its output file (and the ``cwd`` its dispatch recorded)."""
    lines = []
    for chunk, (output_file, cwd) in outputs.items():
        lines += [dispatched(chunk, output_file=output_file, cwd=cwd), completed(chunk)]
    return write_journal(tmp_path / "runs" / "run.jsonl", lines)


def _expected_missing(outputs: dict[str, tuple[str, str | None]], root: Path) -> list[dict[str, str]]:
    """The rows, worked out here: where each file is, those not on disk, by path then chunk id."""
    rows = []
    for chunk, (output_file, cwd) in outputs.items():
        path = output_file if output_file.startswith("/") else f"{cwd or root}/{output_file}"
        if not os.path.exists(path):
            rows.append({"chunk_id": chunk, "output_file": output_file, "path": path})
    return sorted(rows, key=lambda row: (row["path"], row["chunk_id"]))


@pytest.mark.parametrize(
    "interleaved",
    [False, True],
    ids=["directories-one-after-the-other", "directories-interleaved"],
)
def test_missing_outputs_json_with_and_without_a_checkpoint(tmp_path: Path, interleaved: bool) -> None:
    """Directories absent, present, nested; names out of order; one file for two chunks; text JSON escapes."""
    work = tmp_path / "work"
    (work / "out").mkdir(parents=True)
    (work / "out" / "here.json").write_text("{}")
    (tmp_path / "runs" / "present").mkdir(parents=True)
    outputs: dict[str, tuple[str, str | None]] = {
        "b-10": ("gone/10.json", None),  # a directory that does not exist at all: each name in it is missing
        "b-9": ("gone/9.json", None),
        "b-2-second": ("gone/2.json", None),
        "b-2-first": ("gone/2.json", None),  # the same file: by chunk id
        "here": ("out/here.json", str(work)),
        "not-here": ("out/a.json", str(work)),
        "sub": ("out/sub/x.json", str(work)),  # after out/a.json, and before out/z.json below
        'quote"d': ("present/é\\n.json", None),  # escaped in JSON, and not ASCII
        "new\nline": ("present/tab\t.json", None),
        "absolute": (str(tmp_path / "abs" / "gone.json"), None),
    }
    if interleaved:
        outputs["last"] = ("out/z.json", str(work))
    journal = _missing_outputs_journal(tmp_path, outputs)
    expected = _expected_missing(outputs, journal.parent)
    assert len(expected) == len(outputs) - 1

    cold = run("spanjournal", "stats", journal, "--json", "--no-checkpoint")
    assert_clean_exit(cold, 0)
    assert json.loads(cold.stdout)["missing_outputs"] == expected
    # the bytes msgspec writes for the report's structs, no other
    report = compute(read_ledger(journal, checkpoint=False), grouper("batch"), root=journal.parent)
    assert cold.stdout == msgspec.json.encode(report).decode() + "\n"

    assert_clean_exit(run("spanjournal", "pending", journal), 0)  # saves the checkpoint
    warm = run("spanjournal", "stats", journal, "--json")
    assert_clean_exit(warm, 0)
    assert (warm.stdout, warm.stderr) == (cold.stdout, cold.stderr)
    text = run("spanjournal", "stats", journal)
    assert f"Done chunks whose output file is missing ({len(expected)})" in text.stdout


directory_parts = st.sampled_from(["", "out/", "out/sub/", "/abs/", 'q"/', "é/", "a\\b/"])
name_parts = st.sampled_from(["1", "2", "10", "a", ".json", '"', "\\", "\n", "é", "/"])
file_names = st.lists(name_parts, max_size=3).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    directories=st.lists(
        st.tuples(
            directory_parts,
            directory_parts,
            st.lists(st.tuples(file_names, st.sampled_from(["a", "b", "c", 'd"', "é"])), min_size=0, max_size=6),
        ),
        max_size=4,
    )
)
# one path missing for two rows named from two working directories, one of them added in two parts
@example(directories=[("", "", [("", "a")]), ("out/", "", [("111", "a")]), ("", "", [("111", "a")])])
def test_missing_files_rows_and_their_json(directories: list[tuple[str, str, list[tuple[str, str]]]]) -> None:
    """By path, chunk id, then output file, however the directories' rows fall; the JSON is msgspec's for those rows."""
    missing = MissingFiles()
    given_rows = []
    for prefix, location, files in directories:
        names, ids = [name for name, _ in files], [cid for _, cid in files]
        missing.add(prefix, location, names, ids)
        given_rows += [(location + name, cid, prefix + name) for name, cid in files]
    rows = missing.rows()
    assert [(r.path, r.chunk_id, r.output_file) for r in rows] == sorted(given_rows)
    assert missing.count() == len(rows)
    for n in (0, 1, 3, 10):  # what the tables show, made without the other rows
        assert missing.first(n) == rows[:n]
    for at_once in (1, 2, 1 << 16):  # rows made into text at a time
        with mock.patch.object(stats, "_ROWS_AT_ONCE", at_once):
            assert "".join(missing.json()).encode() == msgspec.json.encode(rows)


@given(
    st.lists(
        st.tuples(
            st.sampled_from([None, "", "/w"]),
            st.sampled_from(["a", "/a", "d/a", "d/b", "/d/a", "d//a", "e/a", "d/"]),
            st.sampled_from(["c1", "c2"]),
        )
    )
)
def test_output_files_are_grouped_by_working_directory_and_directory_in_order(
    files: list[tuple[str | None, str, str]],
) -> None:
    grouped: OutputsByDirectory = {}
    add_outputs(grouped, files[: len(files) // 2])
    add_outputs(grouped, files[len(files) // 2 :])  # a second call adds to the same groups
    expected: OutputsByDirectory = {}
    for cwd, output_file, chunk_id in files:
        prefix, name = output_file[: output_file.rfind("/") + 1], output_file[output_file.rfind("/") + 1 :]
        names, ids = expected.setdefault((cwd or "", prefix), ([], []))
        names.append(name)
        ids.append(chunk_id)
    assert grouped == expected and list(grouped) == list(expected)


def test_missing_outputs_of_chunks_done_before_and_after_the_checkpoint(tmp_path: Path) -> None:
    """A directory with rows from a checkpoint's totals and from the events read after it: one list, in order."""
    before = {"c-3": ("gone/3.json", None), "c-1": ("gone/1.json", None), "keep": ("gone/9.json", None)}
    journal = _missing_outputs_journal(tmp_path, before)
    assert_clean_exit(run("spanjournal", "pending", journal), 0)  # saves the checkpoint
    after = {"c-2": ("gone/2.json", None), "c-0": ("gone/0.json", None), "c-9": ("gone/9.json", None)}
    with open(journal, "ab") as f:
        for chunk, (output_file, _) in after.items():
            f.write(encode(dispatched(chunk, output_file=output_file)) + encode(completed(chunk)))
    cold = run("spanjournal", "stats", journal, "--json", "--no-checkpoint")
    assert_clean_exit(cold, 0)
    rows = json.loads(cold.stdout)["missing_outputs"]
    assert rows == _expected_missing({**before, **after}, journal.parent)
    assert [row["chunk_id"] for row in rows] == ["c-0", "c-1", "c-2", "c-3", "c-9", "keep"]
    warm = run("spanjournal", "stats", journal, "--json")
    assert_clean_exit(warm, 0)
    assert warm.stdout == cold.stdout
