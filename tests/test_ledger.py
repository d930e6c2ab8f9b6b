"""The fold: per-chunk states, attempts, pairing, planning, merging journals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spanjournal import ChunkState, Completed, Dispatched, RunPlanned, read_ledger
from spanjournal._process import self_identity
from spanjournal._schema import encode

DEAD = {"host": "elsewhere", "pid": 1, "proc_start": 1}


def write(path: Path, *events: object) -> Path:
    path.write_bytes(b"".join(encode(e) for e in events))
    return path


def d(chunk: str, span: str, **kw: object) -> Dispatched:
    return Dispatched(chunk_id=chunk, span_id=span, trace_id="t" * 32, **{**DEAD, **kw})  # type: ignore[arg-type]


def c(chunk: str, span: str | None, ok: bool, **kw: object) -> Completed:
    return Completed(chunk_id=chunk, span_id=span, success=ok, **kw)  # type: ignore[arg-type]


def test_states_and_pending_order(tmp_path: Path) -> None:
    j = write(
        tmp_path / "j.jsonl",
        RunPlanned(chunk_ids=["a", "b", "c", "d", "e", "z"]),
        d("b", "b1"), d("a", "a1"), d("c", "c1"), d("d", "d1"),
        c("a", "a1", True, tokens_used=10, duration_ms=5.0, output_file="out/a.json"),
        c("c", "c1", False, error="429 quota", error_type="QuotaError"),
        d("e", "e1"), c("e", "e1", False, error="boom"), d("e", "e2"), c("e", "e2", True),
    )
    ledger = read_ledger(j)
    states = {chunk.chunk_id: chunk.state for chunk in ledger}
    assert states == {
        "b": ChunkState.UNFINISHED, "a": ChunkState.DONE, "c": ChunkState.FAILED, "d": ChunkState.UNFINISHED,
        "e": ChunkState.DONE, "z": ChunkState.NEVER_DISPATCHED,
    }
    assert ledger.pending() == ["b", "c", "d", "z"]  # first-dispatch order, then plan order
    assert ledger.pending([ChunkState.FAILED]) == ["c"]
    assert ledger["c"].last_error == "429 quota" and ledger["c"].error_type == "QuotaError"
    assert ledger["a"].output_file == "out/a.json" and ledger["a"].tokens_used == 10
    assert ledger["e"].attempt_count == 2
    assert [a.completion.success for a in ledger["e"].attempts if a.completion] == [False, True]
    assert ledger.counts()[ChunkState.UNFINISHED] == 2


def test_success_of_an_earlier_attempt_still_counts_as_done(tmp_path: Path) -> None:
    # Attempt 1 is retried while still running (it was slow, not dead); then it succeeds.
    j = write(tmp_path / "j.jsonl", d("a", "s1"), d("a", "s2"), c("a", "s1", True))
    for keep in (True, False):
        ledger = read_ledger(j, keep_attempts=keep)
        assert ledger.state("a") is ChunkState.DONE


def test_failure_of_an_earlier_attempt_does_not_fail_the_latest(tmp_path: Path) -> None:
    j = write(tmp_path / "j.jsonl", d("a", "s1"), d("a", "s2"), c("a", "s1", False))
    for keep in (True, False):
        assert read_ledger(j, keep_attempts=keep).state("a") is ChunkState.UNFINISHED


def test_a_new_dispatch_after_a_failure_is_unfinished_again(tmp_path: Path) -> None:
    j = write(tmp_path / "j.jsonl", d("a", "s1"), c("a", "s1", False), d("a", "s2"))
    assert read_ledger(j).state("a") is ChunkState.UNFINISHED


def test_completion_without_span_id_pairs_with_the_latest_attempt(tmp_path: Path) -> None:
    j = write(tmp_path / "j.jsonl", d("a", "s1"), c("a", None, False), d("b", "s2"), c("b", None, True))
    ledger = read_ledger(j)
    assert ledger.state("a") is ChunkState.FAILED
    assert ledger.state("b") is ChunkState.DONE


def test_reconciled_completion_is_done(tmp_path: Path) -> None:
    j = write(tmp_path / "j.jsonl", d("a", "s1"), c("a", "s1", True, reconciled=True, validation="json"))
    ledger = read_ledger(j)
    assert ledger.state("a") is ChunkState.DONE
    assert ledger["a"].success is not None and ledger["a"].success.reconciled


def test_journals_of_several_hosts_are_merged(tmp_path: Path) -> None:
    host_a = write(tmp_path / "a.jsonl", d("x", "x1"), d("y", "y1"), c("y", "y1", False))
    host_b = write(tmp_path / "b.jsonl", d("y", "y2"), c("y", "y2", True), c("x", "x1", True))
    ledger = read_ledger(tmp_path)
    assert ledger.pending() == []
    assert ledger["y"].attempt_count == 2
    assert read_ledger(host_a).pending() == ["x", "y"]
    assert read_ledger(host_b, host_a).pending() == []  # a completion read before its dispatch still pairs


def test_expect_file_and_list_add_never_dispatched(tmp_path: Path) -> None:
    j = write(tmp_path / "j.jsonl", d("a", "a1"), c("a", "a1", True))
    expect = tmp_path / "expect.txt"
    expect.write_text("a\nb\n\nc\n")
    assert read_ledger(j, expect=expect).pending() == ["b", "c"]
    assert read_ledger(j, expect=["c", "a"]).pending() == ["c"]
    assert read_ledger(j, expect=["c"]).state("c") is ChunkState.NEVER_DISPATCHED


def test_session_filter(tmp_path: Path) -> None:
    j = write(
        tmp_path / "j.jsonl",
        Dispatched(chunk_id="a", span_id="1", session_id="s1", **DEAD),  # type: ignore[arg-type]
        Dispatched(chunk_id="b", span_id="2", session_id="s2", **DEAD),  # type: ignore[arg-type]
    )
    assert read_ledger(j, session="s2").pending() == ["b"]
    assert list(read_ledger(j).sessions) == ["s1", "s2"]


def test_running_when_the_writer_is_provably_alive(tmp_path: Path) -> None:
    host, pid, start = self_identity()
    j = write(
        tmp_path / "j.jsonl",
        Dispatched(chunk_id="mine", span_id="1", host=host, pid=pid, proc_start=start),
        Dispatched(chunk_id="reused-pid", span_id="2", host=host, pid=pid, proc_start=(start or 0) + 1),
        Dispatched(chunk_id="other-host", span_id="3", host=host + "-other", pid=pid, proc_start=start),
    )
    ledger = read_ledger(j)
    assert ledger.state("mine") is ChunkState.RUNNING
    assert ledger.state("reused-pid") is ChunkState.UNFINISHED
    assert ledger.state("other-host") is ChunkState.UNFINISHED
    assert ledger.pending() == ["reused-pid", "other-host"]  # never double live work


def test_a_dead_child_is_unfinished_not_running(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    code = (
        "import sys; from spanjournal import Journal, Dispatched; from spanjournal._process import self_identity\n"
        "h, p, s = self_identity()\n"
        "Journal(sys.argv[1]).append(Dispatched(chunk_id='c', span_id='1', host=h, pid=p, proc_start=s))\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60)
    assert read_ledger(path).state("c") is ChunkState.UNFINISHED


# -- property: every reading mode agrees with a direct model ----------------

ops = st.lists(
    st.tuples(st.sampled_from(["d", "ok", "fail", "ok-old", "plan"]), st.sampled_from("abcdef")),
    max_size=40,
)


def model(seq: list[tuple[str, str]]) -> tuple[list[bytes], dict[str, ChunkState]]:
    lines: list[bytes] = []
    spans: dict[str, list[str]] = {}
    done: set[str] = set()
    latest_completed: dict[str, bool] = {}
    planned: list[str] = []
    for i, (op, chunk) in enumerate(seq):
        if op == "d":
            span = f"{i:016x}"
            spans.setdefault(chunk, []).append(span)
            latest_completed.pop(chunk, None)
            lines.append(encode(d(chunk, span)))
        elif op == "plan":
            planned.append(chunk)
            lines.append(encode(RunPlanned(chunk_ids=[chunk])))
        elif chunk in spans:
            old = op == "ok-old" and len(spans[chunk]) > 1
            span = spans[chunk][0] if old else spans[chunk][-1]
            ok = op != "fail"
            lines.append(encode(c(chunk, span, ok)))
            if ok:
                done.add(chunk)
            if not old:
                latest_completed[chunk] = latest_completed.get(chunk, False) or ok
    states: dict[str, ChunkState] = {}
    for chunk in spans:
        if chunk in done:
            states[chunk] = ChunkState.DONE
        elif chunk in latest_completed:
            states[chunk] = ChunkState.FAILED
        else:
            states[chunk] = ChunkState.UNFINISHED
    for chunk in planned:
        states.setdefault(chunk, ChunkState.NEVER_DISPATCHED)
    return lines, states


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=ops)
def test_all_reading_modes_agree_with_the_model(tmp_path_factory, seq: list[tuple[str, str]]) -> None:  # type: ignore[no-untyped-def]
    lines, expected = model(seq)
    path = tmp_path_factory.mktemp("m") / "j.jsonl"
    path.write_bytes(b"".join(lines))
    for kwargs in ({}, {"keep_attempts": False}, {"keep_attempts": False, "checkpoint": True}):
        ledger = read_ledger(path, **kwargs)  # type: ignore[arg-type]
        got = {chunk.chunk_id: chunk.state for chunk in ledger}
        assert got == expected, kwargs
        assert ledger.pending() == [k for k, v in expected.items() if v is not ChunkState.DONE]


def test_reading_does_not_import_opentelemetry() -> None:
    code = (
        "import sys, spanjournal; spanjournal.read_ledger;"
        "print(any(m.startswith('opentelemetry') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


def test_nesting_too_deep_and_a_pid_no_process_can_have_do_not_raise(tmp_path: Path) -> None:
    host = self_identity()[0]
    deep = b'{"event":"subagent_dispatched","chunk_id":"x","span_id":"s9","attrs":' + b"[" * 5000 + b"]" * 5000 + b"}\n"
    path = tmp_path / "j.jsonl"
    path.write_bytes(deep + encode(d("a", "s1", host=host, pid=2**40)))
    for keep in (False, True):
        ledger = read_ledger(path, keep_attempts=keep)
        assert ledger.pending() == ["a"]
        assert ledger.state("a") is ChunkState.UNFINISHED
        assert [(i.line, "recursion" in i.message) for i in ledger.issues] == [(1, True)]


def test_a_done_chunk_has_its_dispatch_and_completion_whatever_is_kept(tmp_path: Path) -> None:
    """Reading less keeps less in memory, never gives a different answer: done chunks' events are read again."""
    path = tmp_path / "j.jsonl"
    events = [d("a", "s1", batch="b1"), c("a", "s1", False)]
    events += [d("a", "s2", batch="b2"), c("a", "s2", True, tokens_used=7)]
    path.write_bytes(b"".join(map(encode, events)))
    for keep in (False, True):
        chunk = read_ledger(path, keep_attempts=keep)["a"]
        assert chunk.state is ChunkState.DONE
        assert chunk.dispatch is not None and chunk.dispatch.span_id == "s2" and chunk.dispatch.batch == "b2"
        assert chunk.completion is not None and chunk.completion.tokens_used == 7
        assert chunk.success == chunk.completion
        assert chunk.attempt_count == 2 and chunk.tokens_used == 7
        assert len(chunk.attempts) == (2 if keep else 0)
