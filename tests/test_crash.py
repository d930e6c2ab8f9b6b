"""A real child process dispatching on 16 threads is SIGKILLed mid-run; the journal tells the truth.

The child (:func:`crash_helpers.simulate_fanout`) dispatches 100 units
through the real decorator with the default ``fsync`` journal. Each agent
body appends ``start <chunk>`` to a marker file as the first thing it does;
the dispatcher appends ``end <chunk>`` once the decorated call returned. The
parent kills the child by its pid at several points and checks, against the
markers and the raw journal:

- every unit whose body started is in the journal as dispatched;
- every unit ``read_ledger`` reports pending has no completion;
- nothing that completed is reported pending.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from crash_helpers import chunk_ids, crash_fanout, read_markers, simulate_fanout
from spanjournal import ChunkState, read_ledger
from spanjournal.testing import dispatched_at_least, run_and_kill

pytestmark = pytest.mark.integration

UNITS = chunk_ids(100, batches=10)


def raw_events(journal: Path) -> list[dict[str, object]]:
    """Every complete line of the journal (a line torn by the kill is left out)."""
    events = []
    for line in journal.read_bytes().split(b"\n"):
        try:
            events.append(msgspec.json.decode(line))
        except msgspec.DecodeError:
            continue
    return events


def seconds_after_first_dispatch(journal: Path, seconds: float) -> Callable[[], bool]:
    first = dispatched_at_least(journal, 1)
    seen: list[float] = []

    def condition() -> bool:
        if not seen and first():
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() - seen[0] >= seconds

    return condition


KILL_POINTS: dict[str, Callable[[Path], dict[str, object]]] = {
    "after 1 dispatch": lambda j: {"kill_when": dispatched_at_least(j, 1)},
    "after 17 dispatches": lambda j: {"kill_when": dispatched_at_least(j, 17)},
    "after 50 dispatches": lambda j: {"kill_when": dispatched_at_least(j, 50)},
    "after 80 dispatches": lambda j: {"kill_when": dispatched_at_least(j, 80)},
    "0.1 s after the first dispatch": lambda j: {"kill_when": seconds_after_first_dispatch(j, 0.1)},
}


@pytest.mark.parametrize("kill_point", list(KILL_POINTS))
def test_sigkill_mid_fanout_leaves_a_truthful_journal(kill_point: str, tmp_path: Path) -> None:
    journal, markers = tmp_path / "run.jsonl", tmp_path / "markers.txt"
    run = run_and_kill(
        simulate_fanout,
        (str(journal), UNITS),
        {"threads": 16, "work": (0.01, 0.05), "markers": str(markers), "seed": len(kill_point)},
        timeout=60,
        journal=journal,
        **KILL_POINTS[kill_point](journal),  # type: ignore[arg-type]
    )
    assert run.killed and run.returncode == -signal.SIGKILL, run.output

    started, ended = read_markers(markers)
    events = raw_events(journal)
    dispatched = {e["chunk_id"] for e in events if e.get("event") == "subagent_dispatched"}
    completed = {e["chunk_id"] for e in events if e.get("event") == "subagent_completed"}
    ledger = run.ledger()
    pending = set(ledger.pending())

    assert set(started) <= dispatched, "a body started whose dispatch is not in the journal"
    assert not pending & completed, "a pending unit has a completion"
    for chunk_id in pending:
        chunk = ledger[chunk_id]
        assert chunk.completion is None and chunk.success is None
        assert chunk.state in (ChunkState.UNFINISHED, ChunkState.NEVER_DISPATCHED)
    assert not pending & set(ended), "a unit that completed is reported pending"
    assert set(ended) <= completed
    assert pending, "the kill came before the run finished"
    assert pending | {c for c in UNITS if ledger.state(c) is ChunkState.DONE} == set(UNITS)
    assert ledger.stats.bad_lines == 0, [str(i) for i in ledger.issues]


def test_crash_fanout_makes_done_failed_and_unfinished_chunks(tmp_path: Path) -> None:
    """The helper issue 6's export tests use: unfinished is exactly the hanging set."""
    units = chunk_ids(12, batches=3)
    hang, fail = {units[2], units[7]}, {units[4], units[9]}
    outputs = tmp_path / "responses"
    run = crash_fanout(tmp_path / "run.jsonl", units, hang=hang, fail=fail, outputs=outputs, timeout=60)
    assert run.killed and run.returncode == -signal.SIGKILL
    ledger = read_ledger(tmp_path / "run.jsonl")
    states = {c: ledger.state(c) for c in units}
    assert {c for c, s in states.items() if s is ChunkState.UNFINISHED} == hang
    assert {c for c, s in states.items() if s is ChunkState.FAILED} == fail
    assert {c for c, s in states.items() if s is ChunkState.DONE} == set(units) - hang - fail
    assert all((outputs / f"{c}.json").exists() for c in hang), "hanging agents wrote their output first"
    assert ledger[units[9]].error_type == "SimulatedAgentError"


def test_run_and_kill_reports_a_child_that_exits_first(tmp_path: Path) -> None:
    journal = tmp_path / "run.jsonl"
    run = run_and_kill(simulate_fanout, (str(journal), ["only"]), {"work": 0.0}, kill_after=60, journal=journal)
    assert not run.killed and run.returncode == 0, run.output
    assert run.ledger().state("only") is ChunkState.DONE


def test_run_and_kill_times_out_and_still_kills(tmp_path: Path) -> None:
    with pytest.raises(TimeoutError, match="did not reach the kill condition"):
        run_and_kill(
            simulate_fanout,
            (str(tmp_path / "run.jsonl"), ["a"]),
            {"hang": ["a"]},
            kill_when=lambda: False,
            timeout=2,
        )
    with pytest.raises(ValueError, match="say when to kill"):
        run_and_kill(simulate_fanout)
