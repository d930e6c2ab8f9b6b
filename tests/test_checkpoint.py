"""Checkpoints: the folded state saved, so a later read folds only the new tail; never a different answer."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cli_journals import BIN, assert_clean_exit
from spanjournal import checkpoint as checkpoints
from spanjournal._process import self_identity
from spanjournal._schema import Completed, Dispatched, RunPlanned, UnknownEvent, decode_line, encode
from spanjournal.cli import main
from spanjournal.ledger import read_ledger

DEAD = {"host": "elsewhere", "pid": 1, "proc_start": 1}
#: This process: a chunk it dispatched is running (the commands below run in it).
HOST, PID, STARTED = self_identity()
LIVE = {"host": HOST, "pid": PID, "proc_start": STARTED}

#: Every reading command, as ``spanjournal`` arguments (the journal goes after the first).
COMMANDS = [
    ["pending"],
    ["pending", "--json", "--state", "done", "--state", "failed", "--state", "unfinished"],
    ["stats", "--json"],
    ["reconcile", "--json"],
]


def run_in_process(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def answers(journal: Path, *, checkpoint: bool) -> list[tuple[int, str, str]]:
    extra = [] if checkpoint else ["--no-checkpoint"]
    return [run_in_process([cmd[0], str(journal), *cmd[1:], *extra]) for cmd in COMMANDS]


# -- lines a journal may hold ----------------------------------------------------

chunk_ids = st.sampled_from(["a", "b", "c", "d"])


@st.composite
def event_lines(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["d", "ok", "fail", "plan", "garbage", "blank", "badtype", "nospan"]))
    chunk = draw(chunk_ids)
    span = f"{chunk}{draw(st.integers(0, 2))}"
    if kind == "d":
        fields = {"batch": "b" + chunk, "output_file": f"o/{chunk}.json", **draw(st.sampled_from([DEAD, LIVE]))}
        return encode(Dispatched(chunk_id=chunk, span_id=span, **fields))  # type: ignore[arg-type]
    if kind in ("ok", "fail"):
        return encode(Completed(chunk_id=chunk, span_id=span, success=kind == "ok", tokens_used=3, duration_ms=1.5))
    if kind == "nospan":
        return encode(Completed(chunk_id=chunk, success=draw(st.booleans())))
    if kind == "plan":
        return encode(RunPlanned(chunk_ids=[chunk, "z"]))
    if kind == "badtype":
        fields = f'"chunk_id":"{chunk}","success":true,"tokens_used":"9"'
        return ('{"v":1,"event":"subagent_completed",' + fields + "}\n").encode()
    if kind == "blank":
        return b"\n"
    return b"not json at all\n"


operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.lists(event_lines(), min_size=1, max_size=6)),
        st.tuples(st.just("torn"), event_lines()),
        st.tuples(st.just("truncate"), st.floats(0, 1)),
        st.tuples(st.just("replace"), st.booleans()),
    ),
    min_size=1,
    max_size=7,
)


def apply(journal: Path, op: tuple[str, object]) -> None:
    kind, arg = op
    data = journal.read_bytes() if journal.exists() else b""
    if kind == "append":
        journal.write_bytes(data + b"".join(arg))  # type: ignore[arg-type]
    elif kind == "torn":
        line = arg
        assert isinstance(line, bytes)
        with open(journal, "ab") as f:
            f.write(line[: max(1, len(line) // 2)])
    elif kind == "truncate":
        assert isinstance(arg, float)
        os.truncate(journal, int(len(data) * arg))
    elif kind == "replace" and data:
        # Another file of the same size and the same last bytes: every dispatch of "a" becomes one of "b".
        other = data.replace(b'"chunk_id":"a"', b'"chunk_id":"b"')
        if other == data:
            other = b"x" + data[1:]
        if arg:  # a new file renamed over the journal (another inode)
            tmp = journal.with_name("replacement.tmp")
            tmp.write_bytes(other)
            os.replace(tmp, journal)
        else:  # the same inode, rewritten in place
            with open(journal, "r+b") as f:
                f.write(other)


_DONE_C = [
    encode(Dispatched(chunk_id="c", span_id="c0", **DEAD)),  # type: ignore[arg-type]
    encode(Completed(chunk_id="c", span_id="c0", success=True)),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations, save_every_read=st.booleans())
@example(  # a tail that loads the done chunks, then records a failure: once lost
    ops=[("append", _DONE_C), ("append", [_DONE_C[0], encode(Completed(chunk_id="a", span_id="a0", success=False))])],
    save_every_read=False,
)
@example(  # a failed completion read before its dispatch, kept apart with the done chunks: once lost
    ops=[
        ("append", [encode(Dispatched(chunk_id="a", span_id="a0", **DEAD)), encode(Completed(chunk_id="a", span_id="a1", success=False))]),  # type: ignore[arg-type]  # noqa: E501
        ("append", [encode(Dispatched(chunk_id="a", span_id="a1", **DEAD))]),  # type: ignore[arg-type]
    ],
    save_every_read=False,
)
def test_with_and_without_checkpoints_every_command_gives_the_same_answer_and_warnings(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, object]], save_every_read: bool
) -> None:
    folder = tmp_path_factory.mktemp("j")
    journal = folder / "run.jsonl"
    journal.write_bytes(b"")
    policy = (lambda *args: True) if save_every_read else checkpoints.worth_saving
    for op in ops:
        apply(journal, op)
        with mock.patch.object(checkpoints, "worth_saving", policy):
            with_checkpoints = answers(journal, checkpoint=True)
        without = answers(journal, checkpoint=False)
        assert with_checkpoints == without, op
    assert all(p.suffix == ".jsonl" for p in folder.glob("*.jsonl"))
    # A journal with an event in a newline-terminated line has its checkpoint (a file with none gets
    # none; one left from before a truncation is ignored, as the answers above show).
    assert (folder / ".run.jsonl.spanjournal-checkpoint").exists() or not has_event_line(journal)


def has_event_line(journal: Path) -> bool:
    """Whether some newline-terminated line of ``journal`` decodes as a known journal event."""
    for line in journal.read_bytes().split(b"\n")[:-1]:
        try:
            event = decode_line(line.removeprefix(b"\xef\xbb\xbf"))
        except Exception:
            continue
        if not isinstance(event, UnknownEvent):
            return True
    return False


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.sampled_from([0, 1]), operations.map(lambda o: o[0])), min_size=1, max_size=6))
def test_a_directory_of_journals_answers_alike_with_and_without_checkpoints(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[int, tuple[str, object]]]
) -> None:
    """Several journals: each has its checkpoint, and their folds are merged in file order."""
    folder = tmp_path_factory.mktemp("d")
    journals = [folder / "a.jsonl", folder / "b.jsonl"]
    for journal in journals:
        journal.write_bytes(encode(Dispatched(chunk_id="start", span_id=journal.stem, **DEAD)))  # type: ignore[arg-type]
    for which, op in ops:
        apply(journals[which], op)
        commands = [["pending", str(folder)], ["pending", str(folder), "--json"], ["stats", str(folder), "--json"]]
        with_checkpoints = [run_in_process(cmd) for cmd in commands]
        without = [run_in_process([*cmd, "--no-checkpoint"]) for cmd in commands]
        assert with_checkpoints == without, (which, op)


def test_a_checkpoint_is_used_and_only_the_new_tail_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from spanjournal import ledger as ledger_module

    started: list[int] = []
    real_scan = ledger_module.FileScan

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        started.append(kwargs.get("offset", 0))
        return real_scan(*args, **kwargs)

    monkeypatch.setattr(ledger_module, "FileScan", spy)
    journal = tmp_path / "run.jsonl"
    journal.write_bytes(b"".join(encode(Dispatched(chunk_id=f"c{i}", span_id=f"s{i}", **DEAD)) for i in range(50)))  # type: ignore[arg-type]
    read_ledger(journal, keep_attempts=False, checkpoint=True)
    size = journal.stat().st_size
    with open(journal, "ab") as f:
        f.write(encode(Completed(chunk_id="c3", span_id="s3", success=True)) + b"garbage\n")
    for _ in range(2):  # a small tail is folded again by each read, not saved
        second = read_ledger(journal, keep_attempts=False, checkpoint=True)
        assert second.pending() == [f"c{i}" for i in range(50) if i != 3]
        assert [(i.line, i.message[:10]) for i in second.issues] == [(52, "line that ")]
    assert started == [0, size, size]
    monkeypatch.setattr(checkpoints, "worth_saving", lambda *args: True)
    read_ledger(journal, keep_attempts=False, checkpoint=True)
    restored = checkpoints.load(journal, os.open(journal, os.O_RDONLY), max_issues=10)
    assert restored is not None and restored.offset == journal.stat().st_size > size
    assert restored.lines == 52 and [i.line for i in restored.stats.issues] == [52]
    third = read_ledger(journal, keep_attempts=False, checkpoint=True)
    assert started[-1] == journal.stat().st_size
    assert third.pending() == second.pending() and [str(i) for i in third.issues] == [str(i) for i in second.issues]
    assert third["c3"].dispatch is not None and third["c3"].success is not None  # done chunks read again


def test_a_checkpoint_from_another_version_or_corrupt_is_ignored_and_rebuilt(tmp_path: Path) -> None:
    journal = tmp_path / "run.jsonl"
    journal.write_bytes(encode(Dispatched(chunk_id="a", span_id="s", **DEAD)))  # type: ignore[arg-type]
    read_ledger(journal, keep_attempts=False, checkpoint=True)
    saved = tmp_path / ".run.jsonl.spanjournal-checkpoint"
    for bad in (b"", b"\x93\x01\xa50.0.0", saved.read_bytes()[:-7], b"\x00" * 100):
        saved.write_bytes(bad)
        assert read_ledger(journal, keep_attempts=False, checkpoint=True).pending() == ["a"]
        assert saved.read_bytes() != bad  # rebuilt


def test_a_directory_of_journals_never_reads_a_checkpoint_as_a_journal(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_bytes(encode(Dispatched(chunk_id="a", span_id="s", **DEAD)))  # type: ignore[arg-type]
    (tmp_path / "b.jsonl").write_bytes(encode(Dispatched(chunk_id="b", span_id="t", **DEAD)))  # type: ignore[arg-type]
    for _ in range(2):
        ledger = read_ledger(tmp_path, keep_attempts=False, checkpoint=True)
        assert ledger.pending() == ["a", "b"] and ledger.skipped == [] and ledger.stats.files == [
            str(tmp_path / "a.jsonl"),
            str(tmp_path / "b.jsonl"),
        ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".a.jsonl.spanjournal-checkpoint",
        ".b.jsonl.spanjournal-checkpoint",
        "a.jsonl",
        "b.jsonl",
    ]


def test_the_switch_turns_checkpoints_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = tmp_path / "run.jsonl"
    journal.write_bytes(encode(Dispatched(chunk_id="a", span_id="s", **DEAD)))  # type: ignore[arg-type]
    assert run_in_process(["pending", str(journal), "--no-checkpoint"])[1] == "a\n"
    assert list(tmp_path.iterdir()) == [journal]
    monkeypatch.setenv("SPANJOURNAL_NO_CHECKPOINT", "1")
    assert run_in_process(["pending", str(journal)])[1] == "a\n"
    assert list(tmp_path.iterdir()) == [journal]
    monkeypatch.delenv("SPANJOURNAL_NO_CHECKPOINT")
    assert run_in_process(["pending", str(journal)])[1] == "a\n"
    assert (tmp_path / ".run.jsonl.spanjournal-checkpoint").exists()


# -- real processes ---------------------------------------------------------------

APPENDER = textwrap.dedent(
    """
    import sys
    from spanjournal import Journal
    from spanjournal._schema import Completed, Dispatched
    path, n = sys.argv[1], int(sys.argv[2])
    with Journal(path, durability="flush") as j:
        for i in range(n):
            j.append(Dispatched(chunk_id=f"c{i:05d}", span_id=f"s{i}", host="elsewhere", pid=1, proc_start=1))
            if i % 97 == 5:
                j.append_bytes(b"garbage line\\n")
            j.append(Completed(chunk_id=f"c{i:05d}", span_id=f"s{i}", success=True))
    """
)

READER = textwrap.dedent(
    """
    import sys
    from spanjournal.ledger import ChunkState, read_ledger
    import os, time
    path, stop = sys.argv[1], sys.argv[2]
    while not os.path.exists(path):
        time.sleep(0.005)
    seen_done = 0
    reads = 0
    while True:
        finished = os.path.exists(stop)
        ledger = read_ledger(path, keep_attempts=False, checkpoint=True)
        counts = ledger.counts()
        done = counts[ChunkState.DONE]
        ids = ledger.chunk_ids()
        # a prefix of the appender's output: c0..c(done-1) done, at most the next one dispatched
        assert ids[:done] == [f"c{i:05d}" for i in range(done)], "chunks out of order or missing"
        assert ledger.pending() in ([], [f"c{done:05d}"]), ledger.pending()
        assert done >= seen_done, (done, seen_done)
        lines = open(path, "rb").read().split(b"\\n")
        for issue in ledger.issues:
            assert lines[issue.line - 1] == b"garbage line", issue
        seen_done = done
        reads += 1
        if finished:
            break
    print(reads, seen_done)
    """
)


@pytest.mark.integration
def test_two_readers_and_an_appender_never_use_a_corrupt_or_stale_checkpoint(tmp_path: Path) -> None:
    journal = tmp_path / "run.jsonl"
    stop = tmp_path / "stop"
    appender_script, reader_script = tmp_path / "append.py", tmp_path / "read.py"
    appender_script.write_text(APPENDER)
    reader_script.write_text(READER)
    readers = [
        subprocess.Popen(
            [sys.executable, str(reader_script), str(journal), str(stop)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    try:
        subprocess.run([sys.executable, str(appender_script), str(journal), "20000"], check=True, timeout=120)
        stop.touch()
        outs = [r.communicate(timeout=120)[0] for r in readers]
    finally:
        for r in readers:
            if r.poll() is None:
                r.kill()
    assert [r.returncode for r in readers] == [0, 0], outs
    for out in outs:
        reads, done = map(int, out.split())
        assert done == 20000 and reads >= 2
    fresh = read_ledger(journal, keep_attempts=False)
    saved = read_ledger(journal, keep_attempts=False, checkpoint=True)
    assert saved.counts() == fresh.counts() and [str(i) for i in saved.issues] == [str(i) for i in fresh.issues]
    assert len(fresh.issues) == len(range(5, 20000, 97))


def without_root_powers() -> list[str]:
    """A command prefix under which file permissions apply, even to root."""
    if os.geteuid() != 0:
        return []
    import shutil

    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: every folder is writable")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]


@pytest.mark.integration
def test_a_read_only_journal_folder_keeps_its_checkpoint_in_the_cache_directory(tmp_path: Path) -> None:
    folder = tmp_path / "runs"
    folder.mkdir()
    journal = folder / "run.jsonl"
    journal.write_bytes(
        b"".join(encode(Dispatched(chunk_id=f"c{i}", span_id=f"s{i}", **DEAD)) for i in range(20))  # type: ignore[arg-type]
        + encode(Completed(chunk_id="c1", span_id="s1", success=True))
        + b"garbage\n"
    )
    cache = tmp_path / "cache"
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    expected = subprocess.run(
        [str(BIN / "spanjournal"), "pending", str(journal), "--json", "--no-checkpoint"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    folder.chmod(0o555)
    saved_at = []
    try:
        outs = []
        for _ in range(2):  # the first saves the checkpoint, the second uses it (and has nothing new to save)
            result = subprocess.run(
                [*without_root_powers(), str(BIN / "spanjournal"), "pending", str(journal), "--json"],
                capture_output=True, text=True, timeout=60, env=env,
            )
            assert_clean_exit(result, 0)
            outs.append((result.stdout, result.stderr))
            saved_at.append([p.stat().st_mtime_ns for p in (cache / "spanjournal").glob("*")])
    finally:
        folder.chmod(0o755)
    assert len(saved_at[0]) == 1 and saved_at[0] == saved_at[1]
    assert outs == [(expected.stdout, expected.stderr)] * 2
    assert json.loads(outs[0][0])[0]["chunk_id"] == "c0"
    assert sorted(p.name for p in folder.iterdir()) == ["run.jsonl"]
    saved = list((cache / "spanjournal").glob("*.spanjournal-checkpoint"))
    assert len(saved) == 1 and saved[0].stat().st_mode & 0o777 == 0o600


def test_a_checkpoint_damaged_where_it_is_read_late_is_one_error_then_rebuilt(tmp_path: Path) -> None:
    journal = tmp_path / "run.jsonl"
    events = [Dispatched(chunk_id=f"c{i}", span_id=f"s{i}", batch="b", **DEAD) for i in range(5)]  # type: ignore[arg-type]
    journal.write_bytes(b"".join(map(encode, [*events, Completed(chunk_id="c1", span_id="s1", success=True)])))
    expected = run_in_process(["stats", str(journal), "--json", "--no-checkpoint"])
    run_in_process(["pending", str(journal)])
    saved = tmp_path / ".run.jsonl.spanjournal-checkpoint"
    data = bytearray(saved.read_bytes())
    data[-3] ^= 0xFF  # inside the done chunks' totals, which only stats reads; same size
    saved.write_bytes(bytes(data))
    assert run_in_process(["pending", str(journal)])[1] == "c0\nc2\nc3\nc4\n"  # pending never reads that part
    code, out, err = run_in_process(["stats", str(journal), "--json"])
    assert (code, out) == (2, "")
    assert err == (
        f"spanjournal stats: error: {saved}: damaged, now removed; run the command again (or use --no-checkpoint)\n"
    )
    assert not saved.exists()
    assert run_in_process(["stats", str(journal), "--json"]) == expected


def test_plain_pending_from_a_checkpoint_decodes_no_dispatch_and_a_tail_touching_them_loads_them(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "run.jsonl"
    events = [
        *(Dispatched(chunk_id=c, span_id=c + "0", batch="b", **DEAD) for c in ("ok", "failed", "unfinished")),  # type: ignore[arg-type]
        Dispatched(chunk_id="running", span_id="running0", batch="b", **LIVE),  # type: ignore[arg-type]
        Completed(chunk_id="ok", span_id="ok0", success=True),
        Completed(chunk_id="failed", span_id="failed0", success=False, error="boom"),
    ]
    journal.write_bytes(b"".join(map(encode, events)))
    every_state = ["--state", "failed", "--state", "unfinished", "--state", "running"]
    expected = run_in_process(["pending", str(journal), *every_state, "--no-checkpoint"])
    assert expected[1] == "failed\nunfinished\nrunning\n"
    run_in_process(["pending", str(journal)])  # saves the checkpoint
    saved = tmp_path / ".run.jsonl.spanjournal-checkpoint"
    data = bytearray(saved.read_bytes())
    header_length = int.from_bytes(data[8:16], "little")
    data[16 + header_length + 5] ^= 0xFF  # inside the dispatches and failures of the chunks not done
    saved.write_bytes(bytes(data))
    assert run_in_process(["pending", str(journal), *every_state]) == expected  # states without that part
    code, out, err = run_in_process(["pending", str(journal), "--json"])
    assert (code, out) == (2, "") and "damaged, now removed" in err
    # Rebuilt; then a tail that completes, fails and dispatches again chunks restored without their dispatches.
    run_in_process(["pending", str(journal)])
    with open(journal, "ab") as f:
        f.write(encode(Completed(chunk_id="unfinished", span_id="unfinished0", success=True)))
        f.write(encode(Completed(chunk_id="running", span_id="running0", success=False, error="late")))
        f.write(encode(Dispatched(chunk_id="failed", span_id="failed1", **LIVE)))  # type: ignore[arg-type]
    assert answers(journal, checkpoint=True) == answers(journal, checkpoint=False)
    stats = json.loads(run_in_process(["stats", str(journal), "--json"])[1])
    assert stats["totals"]["done"] == 2 and stats["totals"]["running"] == 1 and stats["totals"]["failed"] == 1


def test_missing_outputs_are_listed_by_path_then_chunk_id_with_and_without_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "kept.json").write_text("{}")
    outputs = {  # chunk -> output file, in dispatch order
        "z": "b/2.json",
        "y": "a/1.json",
        "x": "b/2.json",
        "w": "b/kept.json",
        "v": "a/10.json",
        "u": "b/1.json",
    }
    lines = []
    for i, (chunk, output) in enumerate(outputs.items()):
        lines.append(encode(Dispatched(chunk_id=chunk, span_id=f"s{i}", output_file=output, **DEAD)))  # type: ignore[arg-type]
        lines.append(encode(Completed(chunk_id=chunk, span_id=f"s{i}", success=True)))
    journal = tmp_path / "run.jsonl"
    journal.write_bytes(b"".join(lines))
    expected = run_in_process(["stats", str(journal), "--json", "--no-checkpoint"])
    rows = [(m["path"], m["chunk_id"], m["output_file"]) for m in json.loads(expected[1])["missing_outputs"]]
    assert rows == [
        (f"{tmp_path}/a/1.json", "y", "a/1.json"),
        (f"{tmp_path}/a/10.json", "v", "a/10.json"),
        (f"{tmp_path}/b/1.json", "u", "b/1.json"),
        (f"{tmp_path}/b/2.json", "x", "b/2.json"),
        (f"{tmp_path}/b/2.json", "z", "b/2.json"),
    ]
    run_in_process(["pending", str(journal)])  # saves the checkpoint
    assert run_in_process(["stats", str(journal), "--json"]) == expected


def test_stats_from_a_checkpoint_looks_for_output_files_where_a_full_read_does(tmp_path: Path) -> None:
    """The totals kept for done chunks hold their output files by directory: same rows, same paths."""
    work, runs = tmp_path / "work", tmp_path / "runs"
    (work / "out").mkdir(parents=True)
    runs.mkdir()
    (work / "out" / "there.json").write_text("{}")
    (runs / "root.json").write_text("{}")
    outputs = {
        "cwd-there": ("out/there.json", str(work)),
        "cwd-gone": ("out/gone.json", str(work)),
        "root-there": ("root.json", None),
        "root-gone": ("nested/gone.json", None),
        "absolute-gone": (str(tmp_path / "abs" / "gone.json"), str(work)),
        "top-gone": ("/gone-at-the-top.json", None),
    }
    lines = []
    for i, (chunk, (output, cwd)) in enumerate(outputs.items()):
        lines.append(encode(Dispatched(chunk_id=chunk, span_id=f"s{i}", output_file=output, cwd=cwd, **DEAD)))  # type: ignore[arg-type]
        lines.append(encode(Completed(chunk_id=chunk, span_id=f"s{i}", success=True)))
    journal = runs / "run.jsonl"
    journal.write_bytes(b"".join(lines))
    expected = run_in_process(["stats", str(journal), "--json", "--no-checkpoint"])
    run_in_process(["pending", str(journal)])  # saves the checkpoint
    assert run_in_process(["stats", str(journal), "--json"]) == expected
    missing = json.loads(expected[1])["missing_outputs"]
    assert sorted((m["chunk_id"], m["path"]) for m in missing) == sorted(
        [
            ("cwd-gone", f"{work}/out/gone.json"),
            ("root-gone", f"{runs}/nested/gone.json"),
            ("absolute-gone", str(tmp_path / "abs" / "gone.json")),
            ("top-gone", "/gone-at-the-top.json"),
        ]
    )


@given(st.lists(st.text()))
@example(["\ud800", "é", ""])  # a lone surrogate (an id JSON may carry), and one not ASCII
def test_the_saved_hashes_of_done_chunks_are_what_a_lookup_computes(chunk_ids: list[str]) -> None:
    """``chunk_hashes`` (checkpoint save, written out for speed) and ``chunk_hash`` (lookup) agree."""
    from spanjournal.fold import chunk_hash, chunk_hashes

    assert list(chunk_hashes(chunk_ids)) == sorted(map(chunk_hash, chunk_ids))
