"""What ``spanjournal export`` sent: a record per journal file and endpoint, so ``export --new`` sends the rest.

A span counts as sent to an endpoint when the backend there acknowledged the
request that carried it. It is known by its trace id, its span id and its
outcome (done, reconciled, failed, unfinished, running): an attempt sent
while unfinished (or running) that later completed is sent again, completed,
and the backend then holds both; an unfinished attempt whose chunk was done
since by another attempt keeps its outcome and is not sent again (its
``spanjournal.superseded`` marker would be the only change).

The record is kept per journal file (the file that holds the attempt's
dispatch), beside it as ``.NAME.spanjournal-exported`` (never ``*.jsonl``, so
a directory of journals never reads one) or, where the journal's folder is
not writable, in the user's cache directory, as checkpoints are (see
:func:`spanjournal.checkpoint.locations`). It holds, for each endpoint URL,
one 64-bit hash per span sent (sorted, 8 bytes each) and what shows the
journal is still the file it was read from: device, inode, the size it had
and :func:`spanjournal.checkpoint.digest` of the bytes up to that size. A
journal replaced by another file, truncated, or rewritten in place no longer
matches: its record is set aside (every span is new again), and the next
export that sends writes a new one.

An entry may also hold a *mark*: a byte offset of the journal (the end of a
complete line, checked like a checkpoint with its own digest) and the state
of :mod:`spanjournal.export`'s read at that offset, saved by an export of
that one journal that sent every span it selected. Every attempt that had
completed before the offset was then acknowledged, and a completed attempt
never changes, so ``export --new`` can start there: it reads only the bytes
after the offset and rebuilds the attempts still open at it. The hashes are
what decide, either way; the mark only saves reading.

>>> record = SentRecord.open([Path("runs/bench.jsonl")], "http://localhost:4317")  # doctest: +SKIP
>>> record.was_sent("runs/bench.jsonl", span_key(trace_id, span_id, "done"))       # doctest: +SKIP
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import heapq
import os
import sys
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from spanjournal.checkpoint import digest, digest_of_path, locations, write_atomically

#: The file beside a journal: ``.NAME.spanjournal-exported``.
SUFFIX = ".spanjournal-exported"
MAGIC = b"SJSENT\x00\x00"
#: Bumped whenever what the record holds changes meaning (then every span is new once more).
FORMAT = 1
_HASHES = "Q"


def span_key(trace_id: int, span_id: int, outcome: str) -> int:
    """The 64-bit hash a span is recorded by: its trace id, span id and outcome."""
    data = trace_id.to_bytes(16, "big") + span_id.to_bytes(8, "big") + outcome.encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


class _Entry(msgspec.Struct, array_like=True):
    endpoint: str
    dev: int
    ino: int
    #: The journal's size when it was read, and the digest of its bytes up to there.
    size: int
    digest: bytes
    #: Sorted, distinct :func:`span_key` values (``array('Q')`` bytes, little-endian).
    hashes: bytes
    #: The mark: its offset (0: none), the digest of the journal's bytes before it, the read's state there.
    mark_offset: int = 0
    mark_digest: bytes = b""
    mark: bytes = b""


class _Saved(msgspec.Struct, array_like=True):
    format: int
    journal: str
    entries: list[_Entry]


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_Saved)


@dataclass
class _Journal:
    """One journal file's part of the record."""

    path: Path
    identity: tuple[int, int] | None = None
    size: int = 0
    digest: bytes = b""
    #: What earlier exports to this endpoint sent, when their record still matches the journal.
    before: array.array[int] = field(default_factory=lambda: array.array(_HASHES))
    #: Acknowledged by the backend in this run.
    new: array.array[int] = field(default_factory=lambda: array.array(_HASHES))
    #: The mark of the earlier record, when it still matches the journal: (offset, state).
    mark: tuple[int, bytes] | None = None
    #: The mark this run's read proposes, and whether the export that read it sent everything.
    proposed: tuple[int, bytes] | None = None
    accepted: bool = False


class SentRecord:
    """What was sent from some journal files to one endpoint, and what this run adds to it."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._journals: dict[str, _Journal] = {}
        #: Journals whose earlier record no longer matches them, with why: every span of theirs is new.
        self.invalidated: list[tuple[Path, str]] = []
        #: Journals whose record :meth:`save` could write nowhere.
        self.unsaved: list[Path] = []

    @classmethod
    def open(cls, journals: Iterable[Path], endpoint: str) -> SentRecord:
        """Read the record of each journal for ``endpoint``, checking it still matches the journal."""
        record = cls(endpoint)
        for path in journals:
            record._open(path)
        return record

    def _open(self, path: Path) -> None:
        journal = self._journals[str(path)] = _Journal(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            st = os.fstat(fd)
            journal.identity, journal.size = (st.st_dev, st.st_ino), st.st_size
            journal.digest = digest(fd, st.st_size)
            entry = _find(path, self.endpoint)
            if entry is None:
                return
            why = _mismatch(entry, fd, journal.identity, st.st_size)
            if why is None and entry.mark_offset:
                with contextlib.suppress(OSError):
                    if entry.mark_offset <= st.st_size and digest(fd, entry.mark_offset) == entry.mark_digest:
                        journal.mark = (entry.mark_offset, entry.mark)
        except OSError:
            return
        finally:
            os.close(fd)
        if why is not None:
            self.invalidated.append((path, why))
            return
        journal.before = _from_little_endian(entry.hashes)

    @property
    def before(self) -> int:
        """How many spans the earlier records still valid hold."""
        return sum(len(j.before) for j in self._journals.values())

    def was_sent(self, journal: str, key: int) -> bool:
        """Whether the span of ``key``, dispatched in ``journal``, was sent to this endpoint before."""
        entry = self._journals.get(journal)
        if entry is None:
            return False
        hashes = entry.before
        i = bisect_left(hashes, key)
        return i < len(hashes) and hashes[i] == key

    def add(self, sent: Iterable[tuple[str, int]]) -> None:
        """Record spans the backend acknowledged: ``(journal, key)`` pairs."""
        journals = self._journals
        for journal, key in sent:
            entry = journals.get(journal)
            if entry is None:
                entry = journals[journal] = _Journal(Path(journal))
            entry.new.append(key)

    def mark(self, journal: str) -> tuple[int, bytes] | None:
        """The mark of ``journal``'s earlier record, if it still matches the journal: (offset, state)."""
        entry = self._journals.get(journal)
        return entry.mark if entry is not None else None

    def propose_mark(self, journal: str, offset: int, state: bytes) -> None:
        """The state of a read of ``journal`` at ``offset``; saved only once :meth:`accept_marks` is called."""
        entry = self._journals.get(journal)
        if entry is not None:
            entry.proposed, entry.accepted = (offset, state), False

    def accept_marks(self) -> None:
        """The export sent every span it selected: the proposed marks hold."""
        for entry in self._journals.values():
            entry.accepted = entry.proposed is not None

    def save(self) -> list[Path]:
        """Write the record of each journal this run sent spans of; where they went.

        Spans recorded meanwhile by another export of the same journal to the
        same endpoint are kept. A journal that cannot be recorded anywhere is
        left out (its spans count as new next time): never raises.
        """
        written = []
        for journal in self._journals.values():
            if (journal.new or journal.accepted) and journal.identity is not None:
                where = self._save(journal)
                if where is not None:
                    written.append(where)
                else:
                    self.unsaved.append(journal.path)
        return written

    def _save(self, journal: _Journal) -> Path | None:
        assert journal.identity is not None
        saved = _read(journal.path)
        entries = [] if saved is None else [e for e in saved.entries if e.endpoint != self.endpoint]
        parts = [journal.before, array.array(_HASHES, sorted(journal.new))]
        mine = _find_in(saved, self.endpoint)
        if mine is not None:
            # Spans another export of this journal to this endpoint recorded since this one read the record.
            with contextlib.suppress(OSError):
                fd = os.open(journal.path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if _mismatch(mine, fd, journal.identity, journal.size) is None:
                        parts.append(_from_little_endian(mine.hashes))
                finally:
                    os.close(fd)
        merged = _merged(parts)
        mark_offset, mark_digest, mark = 0, b"", b""
        chosen = journal.proposed if journal.accepted else journal.mark
        if chosen is not None:
            hashed = digest_of_path(journal.path, chosen[0], journal.identity)
            if hashed is not None:
                mark_offset, mark_digest, mark = chosen[0], hashed, chosen[1]
        entry = _Entry(
            endpoint=self.endpoint,
            dev=journal.identity[0],
            ino=journal.identity[1],
            size=journal.size,
            digest=journal.digest,
            hashes=_little_endian(merged),
            mark_offset=mark_offset,
            mark_digest=mark_digest,
            mark=mark,
        )
        blob = _ENCODER.encode(_Saved(FORMAT, os.path.realpath(journal.path), [*entries, entry]))
        for where in locations(journal.path, SUFFIX):
            if write_atomically(where, (MAGIC, blob)):
                return where
        return None


def _merged(parts: Iterable[array.array[int]]) -> array.array[int]:
    """The distinct hashes of sorted arrays, sorted, in one array (no set, no list of them all)."""
    out = array.array(_HASHES)
    last = None
    append = out.append
    for h in heapq.merge(*parts):
        if h != last:
            append(h)
            last = h
    return out


def _little_endian(hashes: array.array[int]) -> bytes:
    if sys.byteorder != "little":
        hashes = array.array(_HASHES, hashes)
        hashes.byteswap()
    return hashes.tobytes()


def _from_little_endian(data: bytes) -> array.array[int]:
    hashes = array.array(_HASHES)
    hashes.frombytes(data)
    if sys.byteorder != "little":
        hashes.byteswap()
    return hashes


def _mismatch(entry: _Entry, fd: int, identity: tuple[int, int], size: int) -> str | None:
    """Why a record no longer matches the journal open as ``fd``, else None."""
    if (entry.dev, entry.ino) != identity:
        return "replaced by another file"
    if size < entry.size:
        return "truncated"
    if digest(fd, entry.size) != entry.digest:
        return "rewritten"
    return None


def _read(journal: Path) -> _Saved | None:
    """The record kept for ``journal`` (beside it, else in the cache directory), if one is readable."""
    real = os.path.realpath(journal)
    for where in locations(journal, SUFFIX):
        try:
            data = where.read_bytes()
        except OSError:
            continue
        if not data.startswith(MAGIC):
            continue
        try:
            saved = _DECODER.decode(memoryview(data)[len(MAGIC) :])
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        if saved.format != FORMAT or saved.journal != real:
            continue
        if any(len(e.hashes) % 8 for e in saved.entries):
            continue
        return saved
    return None


def _find_in(saved: _Saved | None, endpoint: str) -> _Entry | None:
    if saved is None:
        return None
    return next((e for e in saved.entries if e.endpoint == endpoint), None)


def _find(journal: Path, endpoint: str) -> _Entry | None:
    return _find_in(_read(journal), endpoint)


__all__ = ["SUFFIX", "SentRecord", "span_key"]
