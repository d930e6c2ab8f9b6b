"""The journal writer: where a line is written.

A :class:`Journal` appends events to a JSONL file so that a crash at any
moment leaves a file every reader can use:

- one ``os.write`` per event on an ``O_APPEND`` descriptor, under a thread
  lock and an advisory ``flock`` (several processes may share one file); a
  short write is continued under the same locks;
- before the first append, a file that does not end in ``\\n`` (a torn tail
  from an earlier crash) gets one, so a new event never glues onto a fragment;
- a new file is created ``0600`` (it may hold prompts) and it and its
  directory are fsynced;
- ``durability="fsync"`` (the default): the event is on disk when
  :meth:`Journal.append` returns. Concurrent appenders share fsyncs (group
  commit): one sync covers every event written before it started;
- any write or sync error raises :class:`JournalWriteError`, and the journal
  then refuses further appends rather than pretend they succeeded.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "run.jsonl")
>>> with Journal(path) as j:
...     j.append({"event": "subagent_dispatched", "chunk_id": "c-1"})
>>> open(path).read()
'{"v":1,"event":"subagent_dispatched","chunk_id":"c-1"}\\n'
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from spanjournal._schema import _Event, encode

Durability = Literal["fsync", "flush", "none"]
DURABILITY_MODES: tuple[Durability, ...] = ("fsync", "flush", "none")

#: With ``durability="none"``, bytes are written once this many are buffered.
BUFFER_BYTES = 64 * 1024

EventLike = _Event | Mapping[str, Any]


class JournalWriteError(OSError):
    """An event could not be made durable; the journal accepts no more."""


class Journal:
    """An append-only JSONL journal file, safe for threads and processes.

    ``durability`` is ``"fsync"`` (on disk when ``append`` returns),
    ``"flush"`` (handed to the OS, not synced) or ``"none"`` (buffered in
    memory, written on :meth:`flush`, when the buffer fills, and at
    :meth:`close`; for tests and benchmarks).

    Thread safety: every public method may be called from any thread.
    Process safety: appends from processes sharing the file never interleave
    (``O_APPEND`` + ``flock`` around each write).
    """

    def __init__(self, path: str | os.PathLike[str], durability: Durability = "fsync") -> None:
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {', '.join(DURABILITY_MODES)}, not {durability!r}")
        self.path = Path(path)
        self.durability: Durability = durability
        self._failed: BaseException | None = None
        self._closed = False
        self._tail_checked = False
        self._buffer: list[bytes] = []
        self._buffered = 0
        # Group commit: _written counts events handed to the OS, _synced the
        # ones covered by a completed fsync. An appender whose event is
        # already covered returns without syncing.
        self._written = 0
        self._synced = 0
        #: How many fsync calls this journal made on its file (for tests and benchmarks).
        self.sync_count = 0
        self._write_lock = threading.Lock()
        self._meta_lock = threading.Lock()
        self._syncing = False
        self._waiters: list[_Waiter] = []
        self._fd = self._open()
        _live_journals.add(self)

    # -- public API ---------------------------------------------------------

    def append(self, event: EventLike) -> None:
        """Append one event (a schema struct or a mapping) as one line.

        Raises :class:`JournalWriteError` if the event may not be durable as
        the durability mode promises, and on every call after such a failure.
        """
        self.append_bytes(encode(event))

    def append_bytes(self, line: bytes) -> None:
        """Append one already encoded, ``\\n``-terminated line."""
        if self.durability == "none":
            with self._write_lock:
                self._check_usable()
                self._buffer.append(line)
                self._buffered += len(line)
                if self._buffered >= BUFFER_BYTES:
                    self._drain_buffer()
            return
        with self._write_lock:
            self._check_usable()
            self._write_locked(line)
            self._written += 1
            seq = self._written
        if self.durability == "fsync":
            self._sync_through(seq)

    def flush(self) -> None:
        """Write buffered events (``durability="none"``) and sync if the mode syncs."""
        with self._write_lock:
            self._check_usable()
            self._drain_buffer()
            seq = self._written
        if self.durability == "fsync":
            self._sync_through(seq)

    def close(self) -> None:
        """Flush what is buffered and close the file. Idempotent."""
        with self._write_lock:
            if self._closed:
                return
            try:
                if self._failed is None:
                    self._drain_buffer()
            finally:
                self._closed = True
                _live_journals.discard(self)
                with contextlib.suppress(OSError):
                    os.close(self._fd)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def failed(self) -> BaseException | None:
        """The error that made this journal refuse appends, if any."""
        return self._failed

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r}, durability={self.durability!r})"

    # -- internals ----------------------------------------------------------

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
        parent = self.path.parent
        try:
            created_dirs = _make_dirs(parent)
            try:
                fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o600)
                created = True
            except FileExistsError:
                fd = os.open(self.path, flags)
                created = False
            if created and self.durability == "fsync":
                os.fsync(fd)
                for directory in [parent, *created_dirs]:
                    _fsync_dir(directory)
        except OSError as exc:
            raise JournalWriteError(exc.errno, f"cannot open journal {self.path}: {exc.strerror}") from exc
        return fd

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise JournalWriteError(
                errno.EIO, f"journal {self.path} failed earlier and accepts no more events: {self._failed}"
            ) from self._failed
        if self._closed:
            raise JournalWriteError(errno.EBADF, f"journal {self.path} is closed")

    def _drain_buffer(self) -> None:
        if self._buffer:
            data = b"".join(self._buffer)
            self._buffer.clear()
            self._buffered = 0
            self._write_locked(data)
            self._written += 1

    def _write_locked(self, data: bytes) -> None:
        """Write ``data`` whole under ``flock``; the caller holds the write lock."""
        fd = self._fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if not self._tail_checked:
                    self._repair_tail()
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as exc:
            self._fail(exc)
            raise JournalWriteError(exc.errno, f"cannot write to journal {self.path}: {exc.strerror}") from exc

    def _repair_tail(self) -> None:
        size = os.fstat(self._fd).st_size
        if size and os.pread(self._fd, 1, size - 1) != b"\n":
            os.write(self._fd, b"\n")
        self._tail_checked = True

    def _sync_through(self, seq: int) -> None:
        """Return once event number ``seq`` is covered by an fsync (group commit).

        One thread at a time syncs (the leader; letting two overlap was
        measured slower, with fewer events per sync). Threads that wrote while it
        synced wait, each on a lock of its own; when the sync ends, the leader
        releases every waiter it covered at once (no chain of wake-ups through
        one shared lock or ``Condition``, which convoys under the GIL) and
        hands leadership to the first waiter it did not cover.
        """
        if self._synced >= seq:
            return
        with self._meta_lock:
            if self._synced >= seq:
                return
            waiter = None
            if self._syncing:
                waiter = _Waiter(seq)
                self._waiters.append(waiter)
            else:
                self._syncing = True
        if waiter is not None:
            waiter.lock.acquire()
            if not waiter.lead:
                if self._synced < seq:
                    self._check_usable()
                return
        self._lead_syncs()

    def _lead_syncs(self) -> None:
        target = self._written
        try:
            if self._failed is not None:
                self._check_usable()
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._fail(exc)
                raise JournalWriteError(exc.errno, f"cannot sync journal {self.path}: {exc.strerror}") from exc
        except BaseException:
            with self._meta_lock:
                waiters, self._waiters = self._waiters, []
                self._syncing = False
            for w in waiters:  # they find the journal failed and raise
                w.lock.release()
            raise
        with self._meta_lock:
            self.sync_count += 1
            self._synced = target
            covered = [w for w in self._waiters if w.seq <= target]
            rest = [w for w in self._waiters if w.seq > target]
            successor = min(rest, key=_seq_of) if rest else None
            if successor is not None:
                rest.remove(successor)
                successor.lead = True
            else:
                self._syncing = False
            self._waiters = rest
        for w in covered:
            w.lock.release()
        if successor is not None:
            successor.lock.release()

    def _fail(self, exc: BaseException) -> None:
        if self._failed is None:
            self._failed = exc

    def _reinit_after_fork(self) -> None:
        self._write_lock = threading.Lock()
        self._meta_lock = threading.Lock()
        self._syncing = False
        self._waiters = []


class _Waiter:
    """A thread waiting for a sync: released by the leader that covers it."""

    __slots__ = ("lead", "lock", "seq")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.lead = False
        self.lock = threading.Lock()
        self.lock.acquire()


def _seq_of(waiter: _Waiter) -> int:
    return waiter.seq


def _make_dirs(directory: Path) -> list[Path]:
    """Create ``directory`` and missing parents; return the parents of the new ones."""
    missing: list[Path] = []
    d = directory
    while not d.exists():
        missing.append(d)
        if d.parent == d:
            break
        d = d.parent
    if missing:
        directory.mkdir(parents=True, exist_ok=True)
    return [m.parent for m in missing]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_live_journals: weakref.WeakSet[Journal] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for journal in list(_live_journals):
        journal._reinit_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
