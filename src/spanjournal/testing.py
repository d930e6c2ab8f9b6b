"""Helpers for testing code that uses spanjournal, and for producing crashed journals.

In-process:

- :class:`MemoryJournal`: a journal that keeps its lines in memory (and can
  be told to fail, like a full disk);
- :func:`capture`: configures spanjournal with a :class:`MemoryJournal` and
  an in-memory span exporter for the duration of a ``with`` block.

With a real child process (for crash tests):

- :func:`run_and_kill`: runs a function in a child Python process and
  SIGKILLs it when a condition holds (or after a delay);
- :func:`simulate_fanout`: a ready-made child: dispatches chunks on threads
  through the real decorator, some failing, some hanging until killed;
- :func:`crash_fanout`: both together: a journal with done, failed and
  *unfinished* chunks, the unfinished ones exactly the ``hang`` set.

>>> from spanjournal.testing import capture
>>> import spanjournal
>>> with capture() as cap:
...     with spanjournal.dispatch_span("case-001"):
...         pass
>>> [type(e).__name__ for e in cap.journal.events()]
['Dispatched', 'Completed']

This module imports OpenTelemetry only when :func:`capture` or
:func:`simulate_fanout` is used.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spanjournal._schema import Completed, Dispatched, Event, RunPlanned, UnknownEvent, decode_line, encode
from spanjournal.journal import Durability, JournalWriteError
from spanjournal.ledger import ChunkState, Ledger, read_ledger

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from spanjournal.config import Spanjournal

__all__ = [
    "Capture",
    "ChildRun",
    "MemoryJournal",
    "SimulatedAgentError",
    "capture",
    "chunk_ids",
    "crash_fanout",
    "dispatched_at_least",
    "read_markers",
    "run_and_kill",
    "simulate_fanout",
]


class MemoryJournal:
    """A journal that keeps its lines in memory: for unit tests of code that dispatches.

    It behaves like :class:`~spanjournal.Journal` from the outside:
    ``append``/``append_bytes`` take one event or line, and after a failure
    it refuses every further append with :class:`~spanjournal.JournalWriteError`.
    ``fail_after=n`` makes the append after the first ``n`` fail (``0``: the
    first), as a full disk would (``ENOSPC``).

    >>> j = MemoryJournal(fail_after=1)
    >>> j.append({"event": "subagent_dispatched", "chunk_id": "c-1"})
    >>> j.append({"event": "subagent_dispatched", "chunk_id": "c-2"})
    Traceback (most recent call last):
    ...
    spanjournal.journal.JournalWriteError: [Errno 28] simulated write failure (MemoryJournal fail_after=1)
    >>> len(j.lines)
    1
    """

    durability = "none"

    def __init__(self, *, fail_after: int | None = None) -> None:
        self.lines: list[bytes] = []
        self.fail_after = fail_after
        self.sync_count = 0
        self.failed: BaseException | None = None
        self.closed = False
        self._lock = threading.Lock()

    def append(self, event: Any) -> None:
        self.append_bytes(encode(event))

    def append_bytes(self, line: bytes) -> None:
        with self._lock:
            if self.failed is not None:
                raise JournalWriteError(errno.EIO, f"journal failed earlier and accepts no more events: {self.failed}")
            if self.closed:
                raise JournalWriteError(errno.EBADF, "journal is closed")
            if self.fail_after is not None and len(self.lines) >= self.fail_after:
                self.failed = JournalWriteError(
                    errno.ENOSPC, f"simulated write failure (MemoryJournal fail_after={self.fail_after})"
                )
                raise self.failed
            self.lines.append(line)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> MemoryJournal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def events(self) -> list[Event | UnknownEvent]:
        """Every line, decoded into the schema's event types."""
        with self._lock:
            lines = list(self.lines)
        return [decode_line(line.rstrip(b"\n")) for line in lines]

    def dispatched(self) -> list[Dispatched]:
        return [e for e in self.events() if isinstance(e, Dispatched)]

    def completed(self) -> list[Completed]:
        return [e for e in self.events() if isinstance(e, Completed)]

    def planned(self) -> list[RunPlanned]:
        return [e for e in self.events() if isinstance(e, RunPlanned)]

    def write_to(self, path: str | os.PathLike[str]) -> Path:
        """Write the lines to a file (e.g. to run the CLI on them); return its path."""
        with self._lock:
            data = b"".join(self.lines)
        Path(path).write_bytes(data)
        return Path(path)

    def ledger(self, **kwargs: Any) -> Ledger:
        """The lines folded by :func:`~spanjournal.read_ledger` (keyword arguments pass through)."""
        with tempfile.TemporaryDirectory(prefix="spanjournal-") as tmp:
            return read_ledger(self.write_to(Path(tmp) / "journal.jsonl"), **kwargs)

    def __repr__(self) -> str:
        return f"<MemoryJournal {len(self.lines)} lines{' failed' if self.failed else ''}>"


@dataclass
class Capture:
    """What :func:`capture` yields: the configuration, its journal, and the exported spans."""

    spanjournal: Spanjournal
    journal: MemoryJournal
    exporter: InMemorySpanExporter

    def spans(self) -> list[ReadableSpan]:
        """The spans ended so far (the batch processor is flushed first)."""
        self.spanjournal.force_flush()
        return list(self.exporter.get_finished_spans())

    def events(self) -> list[Event | UnknownEvent]:
        return self.journal.events()

    def ledger(self, **kwargs: Any) -> Ledger:
        return self.journal.ledger(**kwargs)


@contextlib.contextmanager
def capture(
    *,
    journal: MemoryJournal | None = None,
    session_id: str = "test-session",
    service_name: str = "spanjournal-test",
    tz: str = "UTC",
    **configure_kwargs: Any,
) -> Iterator[Capture]:
    """Dispatches inside the block go to a :class:`MemoryJournal` and an in-memory exporter.

    Any active configuration is set aside for the block and restored after.
    Further keyword arguments go to :func:`spanjournal.configure` (``sampler``, ...).

    >>> import spanjournal
    >>> with capture() as cap:
    ...     @spanjournal.dispatch("case-001")
    ...     def agent():
    ...         raise ValueError("no answer")
    ...     try:
    ...         agent()
    ...     except ValueError:
    ...         pass
    >>> cap.journal.completed()[0].error_type
    'ValueError'
    >>> cap.spans()[0].status.status_code.name
    'ERROR'
    """
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from spanjournal import config

    memory = journal if journal is not None else MemoryJournal()
    exporter = InMemorySpanExporter()
    configure_kwargs.setdefault("set_global", False)
    sj = config.build(
        memory,
        session_id=session_id,
        service_name=service_name,
        tz=tz,
        exporter=exporter,
        **configure_kwargs,
    )
    previous = config._activate(sj)
    try:
        yield Capture(sj, memory, exporter)
    finally:
        sj.shutdown()
        config._activate(previous)


# -- child processes -------------------------------------------------------------------


@dataclass
class ChildRun:
    """How a child started by :func:`run_and_kill` ended."""

    pid: int
    #: True if SIGKILL was sent (the condition held, or the time ran out).
    killed: bool
    #: The child's exit status (``-9`` when killed).
    returncode: int | None
    seconds: float
    #: What the child printed (stdout and stderr), for failure messages.
    output: str = ""
    journal: Path | None = None

    def ledger(self, **kwargs: Any) -> Ledger:
        """The child's journal read with :func:`~spanjournal.read_ledger` (needs ``journal``)."""
        if self.journal is None:
            raise ValueError("this run has no journal path")
        return read_ledger(self.journal, **kwargs)


_CHILD_CODE = (
    "import pickle, sys\n"
    "sys.path[:] = pickle.load(sys.stdin.buffer)\n"
    "target, args, kwargs = pickle.load(sys.stdin.buffer)\n"
    "target(*args, **kwargs)\n"
)


def run_and_kill(
    target: Callable[..., object],
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    kill_when: Callable[[], bool] | None = None,
    kill_after: float | None = None,
    timeout: float = 60.0,
    poll_interval: float = 0.005,
    env: Mapping[str, str] | None = None,
    journal: str | os.PathLike[str] | None = None,
) -> ChildRun:
    """Run ``target(*args, **kwargs)`` in a fresh Python process; SIGKILL it when told.

    ``target`` must be importable by the child (a module-level function);
    the child gets this process's ``sys.path``. It is killed, by its pid, as
    soon as ``kill_when()`` returns true (polled every ``poll_interval``
    seconds) or ``kill_after`` seconds after it started, whichever comes
    first. If the child exits by itself first, ``killed`` is False. After
    ``timeout`` seconds it is killed and ``TimeoutError`` is raised. The
    child is always gone when this returns.

    >>> run = run_and_kill(simulate_fanout, ("run.jsonl", ["c-1", "c-2"]),
    ...                    {"hang": ["c-2"]}, kill_when=dispatched_at_least("run.jsonl", 2),
    ...                    journal="run.jsonl")                      # doctest: +SKIP
    >>> run.ledger().pending()                                       # doctest: +SKIP
    ['c-2']
    """
    if kill_when is None and kill_after is None:
        raise ValueError("say when to kill: kill_when=... and/or kill_after=...")
    payload = pickle.dumps(list(sys.path)) + pickle.dumps((target, tuple(args), dict(kwargs or {})))
    child_env = dict(os.environ if env is None else env)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    with tempfile.TemporaryFile() as out:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD_CODE],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env,
            close_fds=True,
        )
        killed = False
        timed_out = False
        try:
            assert proc.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(payload)
                proc.stdin.close()
            while proc.poll() is None:
                elapsed = time.monotonic() - started
                if (kill_after is not None and elapsed >= kill_after) or (kill_when is not None and kill_when()):
                    break
                if elapsed >= timeout:
                    timed_out = True
                    break
                time.sleep(poll_interval)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                killed = True
            returncode = proc.wait(timeout=30)
        seconds = time.monotonic() - started
        out.seek(0)
        output = out.read().decode("utf-8", "replace")
    run = ChildRun(proc.pid, killed, returncode, seconds, output, Path(journal) if journal is not None else None)
    if timed_out:
        raise TimeoutError(
            f"child pid {proc.pid} did not reach the kill condition in {timeout}s; output:\n{output[-3000:]}"
        )
    return run


def dispatched_at_least(journal: str | os.PathLike[str], count: int) -> Callable[[], bool]:
    """A ``kill_when`` condition: the journal holds at least ``count`` dispatched lines."""
    path = Path(journal)
    marker = b'"event":"subagent_dispatched"'

    def condition() -> bool:
        try:
            return path.read_bytes().count(marker) >= count
        except FileNotFoundError:
            return False

    return condition


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

