"""Helpers for testing code that uses spanjournal, and for crashing it on purpose.

In-process:

- :class:`MemoryJournal`: a journal that keeps its lines in memory (and can
  be told to fail, like a full disk);
- :func:`capture`: configures spanjournal with a :class:`MemoryJournal` and
  an in-memory span exporter for the duration of a ``with`` block.

With a real child process (for crash tests):

- :func:`run_and_kill`: runs a function in a child Python process and
  SIGKILLs it when a condition holds (or after a delay), for example
  :func:`dispatched_at_least` (mid-dispatch, once the journal holds so many
  dispatches).

>>> from spanjournal.testing import capture
>>> import spanjournal
>>> with capture() as cap:
...     with spanjournal.dispatch_span("case-001"):
...         pass
>>> [type(e).__name__ for e in cap.journal.events()]
['Dispatched', 'Completed']

This module imports OpenTelemetry only when :func:`capture` is used.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spanjournal._schema import Completed, Dispatched, Event, RunPlanned, UnknownEvent, decode_line, encode
from spanjournal.journal import JournalWriteError
from spanjournal.ledger import Ledger, read_ledger

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from spanjournal.config import Spanjournal

__all__ = [
    "Capture",
    "ChildRun",
    "MemoryJournal",
    "capture",
    "dispatched_at_least",
    "run_and_kill",
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

    >>> run = run_and_kill(my_fanout, ("run.jsonl",),                # doctest: +SKIP
    ...                    kill_when=dispatched_at_least("run.jsonl", 2), journal="run.jsonl")
    >>> run.killed, run.ledger().pending()                           # doctest: +SKIP
    (True, ['c-1', 'c-2'])
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
