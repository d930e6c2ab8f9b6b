"""Crash-test machinery of this project's own tests: a simulated fan-out run in a child.

Users get :func:`spanjournal.testing.run_and_kill` (run a function in a child
process and SIGKILL it mid-dispatch) and ``dispatched_at_least``; what is
here builds on them for the crash, watch and export tests:

- :func:`simulate_fanout`: a ready-made child: dispatches chunks on threads
  through the real decorator, some failing, some hanging until killed;
- :func:`crash_fanout`: both together: a journal with done, failed and
  *unfinished* chunks, the unfinished ones exactly the ``hang`` set;
- :func:`read_markers`, :func:`chunk_ids`: what such a child did, and ids for it.

A child that imports this module by name needs this directory on its path:
:func:`run_and_kill` passes the parent's ``sys.path`` (pytest puts ``tests/``
there); a ``python -c`` child gets it through ``PYTHONPATH``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from spanjournal.journal import Durability
from spanjournal.ledger import ChunkState, read_ledger
from spanjournal.testing import ChildRun, run_and_kill

#: The directory of this module: what a ``python -c`` child needs on ``PYTHONPATH``.
TESTS_DIR = Path(__file__).resolve().parent


class SimulatedAgentError(RuntimeError):
    """What a simulated agent in the ``fail`` set raises."""


def simulate_fanout(
    journal: str | os.PathLike[str],
    chunk_ids: Sequence[str],
    *,
    threads: int = 8,
    work: float | tuple[float, float] = 0.01,
    fail: Collection[str] = (),
    hang: Collection[str] = (),
    outputs: str | os.PathLike[str] | None = None,
    markers: str | os.PathLike[str] | None = None,
    durability: Durability = "fsync",
    session_id: str | None = None,
    service_name: str = "spanjournal-fanout",
    exporter: str = "none",
    plan: bool = True,
    seed: int = 0,
) -> None:
    """Dispatch ``chunk_ids`` on ``threads`` threads through the real decorator: a child for crash tests.

    Each simulated agent sleeps ``work`` seconds (or a random time in a
    ``(low, high)`` range); a chunk in ``fail`` raises
    :class:`SimulatedAgentError`; a chunk in ``hang`` blocks until the
    process is killed, after writing its output file when ``outputs`` is
    given (an agent that finished its work but not its completion, the case
    ``reconcile`` is for). Other chunks write ``<outputs>/<chunk_id>.json``
    (valid JSON) when ``outputs`` is given, and record tokens.

    ``markers`` names a file where each agent appends ``start <chunk_id>``
    as the first thing its body does and the dispatcher ``end <chunk_id>``
    after the dispatch returned: what a crash test compares the journal
    with. ``plan`` writes a ``run_planned`` event first.
    """
    import spanjournal

    sj = spanjournal.configure(
        journal=journal,
        durability=durability,
        session_id=session_id,
        service_name=service_name,
        exporter=exporter,
        set_global=False,
    )
    if plan:
        sj.plan(chunk_ids)
    fail_set, hang_set = set(fail), set(hang)
    out_dir = Path(outputs) if outputs is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    marker_fd = os.open(markers, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600) if markers is not None else None
    rng = random.Random(seed)
    delays = {c: (rng.uniform(*work) if isinstance(work, tuple) else work) for c in chunk_ids}

    def mark(text: str) -> None:
        if marker_fd is not None:
            os.write(marker_fd, f"{text}\n".encode())

    def write_output(chunk_id: str) -> None:
        if out_dir is not None:  # whole or not at all: a watcher may kill us as soon as it exists
            target = out_dir / f"{chunk_id}.json"
            partial = target.with_name(f".{target.name}.partial")
            partial.write_text(json.dumps({"chunk_id": chunk_id, "answer": "ok"}))
            os.replace(partial, target)

    @spanjournal.dispatch(
        chunk_id=lambda chunk_id: chunk_id,
        task_description="simulated agent",
        output_file=lambda chunk_id: str(out_dir / f"{chunk_id}.json") if out_dir is not None else None,
        agent_name="simulated",
    )
    def agent(chunk_id: str) -> None:
        mark(f"start {chunk_id}")
        time.sleep(delays[chunk_id])
        if chunk_id in hang_set:
            write_output(chunk_id)
            threading.Event().wait()
        if chunk_id in fail_set:
            raise SimulatedAgentError(f"simulated failure of {chunk_id}")
        write_output(chunk_id)
        spanjournal.current_dispatch().record(input_tokens=100, output_tokens=20)

    def run(chunk_id: str) -> None:
        with contextlib.suppress(SimulatedAgentError):
            agent(chunk_id)
        mark(f"end {chunk_id}")

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(run, chunk_ids))
    sj.shutdown()


def crash_fanout(
    journal: str | os.PathLike[str],
    chunk_ids: Sequence[str],
    *,
    hang: Collection[str],
    fail: Collection[str] = (),
    timeout: float = 60.0,
    **fanout_kwargs: Any,
) -> ChildRun:
    """A journal with done, failed and unfinished chunks, made by killing a real child.

    Runs :func:`simulate_fanout` in a child process and SIGKILLs it once
    every chunk outside ``hang`` has a completion and every chunk in
    ``hang`` is dispatched (and, with ``outputs``, has written its output
    file). Afterwards ``read_ledger(journal)`` reports
    ``hang`` as unfinished, ``fail`` as failed, the rest as done. ``threads``
    defaults to one per chunk so hanging chunks cannot starve the others.

    >>> run = crash_fanout("run.jsonl", ["c-1", "c-2", "c-3"], hang=["c-3"], fail=["c-2"])  # doctest: +SKIP
    >>> sorted(run.ledger().pending())                                                     # doctest: +SKIP
    ['c-2', 'c-3']
    """
    hang_set = set(hang)
    missing = hang_set - set(chunk_ids)
    if missing:
        raise ValueError(f"hang names chunks not in chunk_ids: {sorted(missing)}")
    fanout_kwargs.setdefault("threads", max(1, len(chunk_ids)))
    path = Path(journal)
    settled = {ChunkState.DONE, ChunkState.FAILED}
    outputs = fanout_kwargs.get("outputs")
    out_dir = Path(outputs) if outputs is not None else None

    def ready() -> bool:
        if not path.exists():
            return False
        ledger = read_ledger(path, keep_attempts=False)
        for chunk_id in chunk_ids:
            if chunk_id not in ledger:
                return False
            state = ledger.state(chunk_id)
            if chunk_id in hang_set:
                if state not in (ChunkState.RUNNING, ChunkState.UNFINISHED):
                    return False
                if out_dir is not None and not (out_dir / f"{chunk_id}.json").exists():
                    return False  # a hanging agent writes its output, then blocks
            elif state not in settled:
                return False
        return True

    run = run_and_kill(
        simulate_fanout,
        (os.fspath(journal), list(chunk_ids)),
        {"hang": sorted(hang_set), "fail": list(fail), **fanout_kwargs},
        kill_when=ready,
        timeout=timeout,
        poll_interval=0.02,
        journal=journal,
    )
    if not run.killed:
        raise RuntimeError(
            f"the fan-out child exited before it was killed (status {run.returncode}):\n{run.output[-3000:]}"
        )
    return run


def read_markers(path: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """The ``start`` and ``end`` chunk ids a :func:`simulate_fanout` child wrote, in order."""
    starts: list[str] = []
    ends: list[str] = []
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return starts, ends
    for line in text.splitlines():
        kind, _, chunk_id = line.partition(" ")
        if kind == "start":
            starts.append(chunk_id)
        elif kind == "end":
            ends.append(chunk_id)
    return starts, ends


def chunk_ids(count: int, *, batches: int = 1, prefix: str = "batch") -> list[str]:
    """``count`` chunk ids like ``batch-0-case-000``, spread over ``batches`` batches."""
    per = max(1, -(-count // batches))
    return [f"{prefix}-{i // per}-case-{i:03d}" for i in range(count)]
