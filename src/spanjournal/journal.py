"""The journal writer: where a line is written.

A :class:`Journal` appends events to a JSONL file so that a crash at any
moment leaves a file every reader can use:

- one ``os.write`` per event on an ``O_APPEND`` descriptor, under a thread
  lock and an advisory ``flock`` (several processes may share one file); a
  short write is continued under the same locks;
- before every append, under the ``flock``, a file that does not end in
  ``\\n`` (a torn tail left by a writer that crashed mid-line: any process, at
  any time) gets one, so a new event never glues onto a fragment. The check
  costs one ``lseek``: the last byte is read only when the file's size is not
  where this journal's own last write left it;
- a forked child reopens the file (its own ``flock``) and drops the parent's
  buffered events (the parent writes those);
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
        # Where the file ended after this journal's own last write, if that ended
        # a line: while the size is still this, no other writer came, no torn tail.
        self._clean_end = -1
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
                end = os.lseek(fd, 0, os.SEEK_END)  # the size; O_APPEND writes ignore the offset
                if end != self._clean_end and end:
                    end = self._repair_tail(end)
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                self._clean_end = end + len(data) if data.endswith(b"\n") else -1
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as exc:
            self._fail(exc)
            raise JournalWriteError(exc.errno, f"cannot write to journal {self.path}: {exc.strerror}") from exc

    def _repair_tail(self, size: int) -> int:
        """End a torn last line (a writer died mid-line); return the file's new size. Under ``flock``."""
        if os.pread(self._fd, 1, size - 1) != b"\n":
            os.write(self._fd, b"\n")
            size += 1
        return size

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
        # The parent writes what it buffered; written again here, it would be there twice.
        self._buffer = []
        self._buffered = 0
        self._clean_end = -1
        if not self._closed:
            self._fd = self._reopen_in_child()

    def _reopen_in_child(self) -> int:
        """An open file description of the child's own: ``flock`` excludes per description.

        A descriptor shared with the parent would let both hold "the" lock at
        once. Kept (with that caveat) when the path no longer names the file.
        """
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except OSError:
            return self._fd
        try:
            mine, inherited = os.fstat(fd), os.fstat(self._fd)
            same_file = (mine.st_dev, mine.st_ino) == (inherited.st_dev, inherited.st_ino)
        except OSError:
            same_file = False
        if not same_file:
            os.close(fd)
            return self._fd
        os.close(self._fd)
        return fd


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
