"""Reading in several processes (``--jobs``, ``read_ledger(jobs=N)``): the answers and warnings of one process."""

from __future__ import annotations

import contextlib
import io
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from spanjournal import _jobs
from spanjournal import checkpoint as checkpoints
from spanjournal._schema import Completed, Dispatched, RunPlanned, encode
from spanjournal.cli import main
from spanjournal.ledger import ChunkState, Ledger, read_ledger
from spanjournal.reader import NotAJournalError

DEAD = {"host": "elsewhere", "pid": 1, "proc_start": 1}


def run_in_process(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


chunk_ids = st.sampled_from(["a", "b", "c", "d", "e"])


@st.composite
def event_lines(draw: st.DrawFn) -> bytes:
    kind = draw(
        st.sampled_from(["d", "d", "ok", "fail", "nospan", "plan", "garbage", "blank", "badtype", "bom", "unknown"])
    )
    chunk = draw(chunk_ids)
    span = f"{chunk}{draw(st.integers(0, 2))}"
    if kind == "d":
        fields = {"batch": "b" + chunk, "output_file": f"o/{chunk}.json", **DEAD}
        return encode(Dispatched(chunk_id=chunk, span_id=span, **fields))  # type: ignore[arg-type]
    if kind in ("ok", "fail"):
        return encode(Completed(chunk_id=chunk, span_id=span, success=kind == "ok", tokens_used=3, duration_ms=1.5))
    if kind == "nospan":
        return encode(Completed(chunk_id=chunk, success=draw(st.booleans()), error_type="boom"))
    if kind == "plan":
        return encode(RunPlanned(chunk_ids=[chunk, "z"]))
    if kind == "badtype":
        return ('{"v":1,"event":"subagent_completed","chunk_id":"' + chunk + '","tokens_used":"9"}\n').encode()
    if kind == "bom":
        return b"\xef\xbb\xbf" + encode(Completed(chunk_id=chunk, span_id=span, success=True))
    if kind == "unknown":
        return b'{"v":1,"event":"something_new","chunk_id":"x"}\n'
    if kind == "blank":
        return draw(st.sampled_from([b"\n", b"  \r\n"]))
    return b"not json at all\n"


journals = st.tuples(
    st.lists(event_lines(), max_size=40),
    #: what follows the last newline: nothing, a torn line, or a whole event without its newline
    st.sampled_from(["", "torn", "unterminated", "torn-blank"]),
)


def write_journal(path: Path, lines: list[bytes], ending: str) -> None:
    data = b"".join(lines)
    last = encode(Dispatched(chunk_id="t", span_id="t0", **DEAD))  # type: ignore[arg-type]
    if ending == "torn":
        data += last[: len(last) // 2]
    elif ending == "unterminated":
        data += last.rstrip(b"\n")
    elif ending == "torn-blank":
        data += b"   "
    path.write_bytes(data)


def answer(ledger: Ledger) -> Any:
    """Everything a ledger answers, in a comparable form."""
    chunks = [
        (
            (c.chunk_id, c.state, c.attempt_count, c.output_file, c.cwd, c.tokens_used, c.last_error, c.error_type),
            [e.span_id if e is not None else None for e in (c.dispatch, c.completion, c.success)],
        )
        for c in ledger
    ]
    stats = ledger.stats
    return (
        ledger.pending(),
        ledger.counts(),
        chunks,
        [str(i) for i in ledger.issues],
        [str(i) for i in stats.torn],
        (stats.events, stats.lines, stats.bytes, stats.bad_lines, stats.unknown_events, stats.torn_tails),
        sorted(ledger.fold.durations),
        ledger.fold.error_types,
        list(ledger.sessions),
        list(ledger.planned),
    )


def outcome(path: Path, jobs: int) -> Any:
    """What reading ``path`` gives: the ledger's answers, or the error it raises."""
    try:
        return answer(read_ledger(path, keep_attempts=False, jobs=jobs))
    except NotAJournalError as exc:
        return str(exc)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(journal=journals, jobs=st.sampled_from([2, 3]))
@example(  # a completion without span id in the second part whose dispatch is in the first: cannot be merged
    journal=(
        [
            encode(Dispatched(chunk_id="a", span_id="a0", **DEAD)),  # type: ignore[arg-type]
            encode(Completed(chunk_id="a", success=False)),
            encode(Completed(chunk_id="a", success=False)),
        ],
        "",
    ),
    jobs=3,
)
def test_a_read_in_several_processes_answers_and_warns_like_one(
    tmp_path_factory: pytest.TempPathFactory, journal: tuple[list[bytes], str], jobs: int
) -> None:
    path = tmp_path_factory.mktemp("jobs") / "run.jsonl"
    write_journal(path, *journal)
    assert outcome(path, jobs=jobs) == outcome(path, jobs=1)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(journal=journals)
def test_pending_with_jobs_prints_what_pending_with_one_prints(
    tmp_path_factory: pytest.TempPathFactory, journal: tuple[list[bytes], str]
) -> None:
    path = tmp_path_factory.mktemp("jobs") / "run.jsonl"
    write_journal(path, *journal)
    for command in (["pending"], ["pending", "--json", "--state", "done", "--state", "failed"], ["stats", "--json"]):
        args = [command[0], str(path), *command[1:], "--no-checkpoint"]
        assert run_in_process([*args, "--jobs", "2"]) == run_in_process([*args, "--jobs", "1"])


def big_journal(path: Path, chunks: int = 3000) -> None:
    """Enough lines that each of several parts holds many, with bad lines and a torn tail."""
    lines = []
    for i in range(chunks):
        cid = f"c{i}"
        lines.append(encode(Dispatched(chunk_id=cid, span_id=f"s{i}", **DEAD)))  # type: ignore[arg-type]
        if i % 7 == 0:
            lines.append(b"garbage\n")
        if i % 3:
            lines.append(encode(Completed(chunk_id=cid, span_id=f"s{i}", success=i % 5 != 0, tokens_used=i)))
    path.write_bytes(b"".join(lines) + b'{"v":1,"ev')


def test_the_parts_are_read_in_other_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "run.jsonl"
    big_journal(path)
    parent = os.getpid()
    real = _jobs.fold_range

    def spy(*args: Any) -> Any:
        part = real(*args)
        part.issues.append((1, f"pid {os.getpid()}"))
        return part

    monkeypatch.setattr(_jobs, "fold_range", spy)
    ledger = read_ledger(path, keep_attempts=False, jobs=3)
    pids = {int(i.message.split()[1]) for i in ledger.issues if i.message.startswith("pid ")}
    assert len(pids) == 2 and parent not in pids


@pytest.mark.parametrize("failure", ["killed", "raises", "bad output"])
def test_a_child_that_fails_falls_back_to_a_read_in_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    path = tmp_path / "run.jsonl"
    big_journal(path)
    expected = answer(read_ledger(path, keep_attempts=False))
    calls: list[int] = []
    real_parts = _jobs.fold_in_parts

    def counting(*args: Any, **kwargs: Any) -> Any:
        result = real_parts(*args, **kwargs)
        calls.append(result is None)
        return result

    def failing(*args: Any) -> Any:
        if failure == "killed":
            os.kill(os.getpid(), signal.SIGKILL)
        if failure == "raises":
            raise OSError("the disk went away")
        return "not a part"  # sent, but the parent cannot decode it

    monkeypatch.setattr(_jobs, "fold_in_parts", counting)
    monkeypatch.setattr(_jobs, "fold_range", failing)
    assert answer(read_ledger(path, keep_attempts=False, jobs=2)) == expected
    assert calls == [True]  # the parts were tried, failed, and the file was read in one process


def test_the_checkpoint_saved_after_a_read_in_several_processes_answers_like_one_from_a_single_read(
    tmp_path: Path,
) -> None:
    after: dict[int, Any] = {}
    for jobs in (1, 3):
        path = tmp_path / f"jobs{jobs}" / "run.jsonl"
        path.parent.mkdir()
        big_journal(path)
        read_ledger(path, keep_attempts=False, checkpoint=True, jobs=jobs)
        with open(path, "rb") as f:
            assert checkpoints.load(path, f.fileno(), max_issues=1000) is not None
        with open(path, "ab") as f:  # the torn tail completed, and more appended
            f.write(b'"subagent_completed","chunk_id":"c1","span_id":"s1","success":true}\n')
            f.write(encode(Completed(chunk_id="c2", span_id="s2", success=False, error="late")))
        ledger = read_ledger(path, keep_attempts=False, checkpoint=True)
        # done chunks' dispatches are read again from the journal through the saved block index
        done = ledger.by_state(ChunkState.DONE)
        assert done and all(c.dispatch is not None and c.dispatch.chunk_id == c.chunk_id for c in done)
        after[jobs] = repr(answer(ledger)).replace(str(path), "run.jsonl")
    assert after[3] == after[1]


def test_jobs_must_be_a_positive_number(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    big_journal(path, 10)
    for bad in ("0", "x", "-2"):
        code, out, err = run_in_process(["pending", str(path), "--jobs", bad])
        assert code == 2 and out == ""
        assert "--jobs" in err and "Traceback" not in err
