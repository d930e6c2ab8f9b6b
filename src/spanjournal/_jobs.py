"""Reading one journal in several processes (``--jobs N``, ``read_ledger(jobs=N)``).

The file is cut into ``N`` byte ranges at line boundaries. Each range but
the last is folded in a forked child with the same reader and the same
:class:`~spanjournal.fold.LedgerState` as a read in one process, its lines
numbered from 1; the child sends its state and read statistics back through
a pipe, encoded with msgpack as a checkpoint encodes them. The parent folds
the last range itself (it alone can end in an unterminated line), then merges
the parts in file order with :meth:`LedgerState.merge`, moving each part's
line numbers up by the lines of the parts before it: answers, line numbers in
warnings and the checkpoint saved afterwards are those of a read in one
process. Anything that goes wrong (a child that fails, a file replaced under
the read, parts that cannot be merged) gives None: the caller then reads the
file in one process.

Only a caller that asks for it forks (the CLI's ``--jobs``, or ``jobs > 1``
passed to :func:`~spanjournal.ledger.read_ledger`). This module does not
import OpenTelemetry.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from spanjournal.fold import ChunkRecord, FoldFields, LedgerState, NotMergeable
from spanjournal.reader import FileScan, ReadIssue, ReadStats, open_journal

#: Bytes looked at, at a time, for the line end after a cut point.
_PROBE_BYTES = 64 * 1024


class _Part(msgspec.Struct, array_like=True):
    """What a child sends back: its range's fold and read statistics (lines numbered from 1)."""

    chunks: dict[str, ChunkRecord]
    fold: FoldFields
    lines: int
    index: list[tuple[int, int]]
    events: int
    read_bytes: int
    bad_lines: int
    unknown_events: int
    issues: list[tuple[int, str]]


@dataclass
class PartsFold:
    """A journal folded in parts, merged: what :func:`~spanjournal.ledger.fold_file` needs of a scan."""

    state: LedgerState
    #: The statistics of the newline-terminated lines, and of every line (the unterminated last one too).
    complete_stats: ReadStats
    stats: ReadStats
    offset: int
    lines: int
    index: list[tuple[int, int]]
    identity: tuple[int, int]
    size: int
    tail: Any


def cut_points(fd: int, size: int, parts: int) -> list[int]:
    """Offsets, each just after a newline, that cut ``size`` bytes into at most ``parts`` ranges of whole lines."""
    cuts: list[int] = []
    for k in range(1, parts):
        pos = max(size * k // parts, cuts[-1] if cuts else 1)
        found = -1
        probe = pos - 1
        while probe < size:
            block = os.pread(fd, _PROBE_BYTES, probe)
            if not block:
                break
            i = block.find(b"\n")
            if i >= 0:
                found = probe + i + 1
                break
            probe += len(block)
        if found < 0 or found >= size:
            break
        if not cuts or found > cuts[-1]:
            cuts.append(found)
    return cuts


def fold_in_parts(path: Path, jobs: int, *, session: str | None, max_issues: int) -> PartsFold | None:
    """Fold ``path`` from its start in ``jobs`` processes; None when it cannot be (read it in one then)."""
    try:
        f = open_journal(path)
    except OSError:
        return None
    with f:
        st = os.fstat(f.fileno())
        identity = (st.st_dev, st.st_ino)
        cuts = cut_points(f.fileno(), st.st_size, jobs)
    if not cuts:
        return None
    starts = [0, *cuts]
    children: list[tuple[int, int]] = []
    try:
        for begin, end in zip(starts, cuts):
            children.append(_start_child(path, identity, begin, end, session, max_issues))
        last = _fold_last(path, identity, cuts[-1], session, max_issues)
        parts = [_collect(pid, fd) for pid, fd in children]
        children = []
    finally:
        for pid, fd in children:  # the parent's own range failed: do not leave children behind
            with contextlib.suppress(OSError):
                os.close(fd)
            with contextlib.suppress(OSError):
                os.waitpid(pid, 0)
    if last is None or any(p is None for p in parts):
        return None
    return _merge(str(path), identity, [p for p in parts if p is not None], last, session, max_issues)


def _start_child(
    path: Path, identity: tuple[int, int], begin: int, end: int, session: str | None, max_issues: int
) -> tuple[int, int]:
    """Fork a child that folds ``[begin, end)`` and writes its :class:`_Part` to a pipe; (pid, read end)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.close(read_fd)
            blob = msgspec.msgpack.encode(fold_range(path, identity, begin, end, session, max_issues))
            with open(write_fd, "wb") as out:
                out.write(blob)
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    return pid, read_fd


def fold_range(
    path: Path, identity: tuple[int, int], begin: int, end: int, session: str | None, max_issues: int
) -> _Part:
    """Fold the whole lines of ``path`` in ``[begin, end)`` (run in a child)."""
    state = LedgerState(session=session)
    stats = ReadStats(max_issues=max_issues)
    scan = _scan_of(path, identity, stats, begin, end)
    for events, numbers in scan.batches():
        state.apply_batch(events, numbers)
    return _Part(
        chunks=state.chunks,
        fold=state.fields(),
        lines=scan.lines,
        index=scan.index,
        events=stats.events,
        read_bytes=stats.bytes,
        bad_lines=stats.bad_lines,
        unknown_events=stats.unknown_events,
        issues=[(i.line, i.message) for i in stats.issues],
    )


def _scan_of(path: Path, identity: tuple[int, int], stats: ReadStats, begin: int, end: int | None) -> FileScan:
    f = open_journal(path)
    st = os.fstat(f.fileno())
    if (st.st_dev, st.st_ino) != identity:
        f.close()
        raise OSError(f"{path}: replaced while being read")
    return FileScan(path, stats, offset=begin, file=f, end=end)


@dataclass
class _Last:
    state: LedgerState
    scan: FileScan
    stats: ReadStats


def _fold_last(path: Path, identity: tuple[int, int], begin: int, session: str | None, max_issues: int) -> _Last | None:
    """Fold the last range here: from ``begin`` to the end of the file, its unterminated last line included."""
    state = LedgerState(session=session)
    stats = ReadStats(max_issues=max_issues)
    try:
        scan = _scan_of(path, identity, stats, begin, None)
        for events, numbers in scan.batches():
            state.apply_batch(events, numbers)
    except OSError:
        return None
    return _Last(state, scan, stats)


def _collect(pid: int, fd: int) -> _Part | None:
    """A child's part, or None if it failed."""
    chunks = []
    try:
        with open(fd, "rb") as pipe:
            while block := pipe.read(1 << 20):
                chunks.append(block)
    except OSError:
        pass
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        return None
    try:
        return msgspec.msgpack.decode(b"".join(chunks), type=_Part)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _state_of(part: _Part, session: str | None) -> LedgerState:
    state = LedgerState(session=session)
    state.restore_chunks(part.chunks, None)
    state.restore_fields(part.fold)
    return state


def _shifted(name: str, stats: ReadStats, lines: int) -> ReadStats:
    """``stats`` of a part, its lines moved up by ``lines`` (the lines of the parts before it)."""
    out = stats.copy()
    out.files = []
    out.issues = [ReadIssue(name, i.line + lines, i.message) for i in stats.issues]
    out.torn = [ReadIssue(name, i.line + lines, i.message) for i in stats.torn]
    return out


def _merge(
    name: str, identity: tuple[int, int], parts: list[_Part], last: _Last, session: str | None, max_issues: int
) -> PartsFold | None:
    state = _state_of(parts[0], session)
    complete = ReadStats(files=[name], max_issues=max_issues)
    index: list[tuple[int, int]] = []
    before = 0
    try:
        for i, part in enumerate(parts):
            if i:
                state.merge(_state_of(part, session), line_offset=before, take=True)
            stats = ReadStats(
                events=part.events,
                lines=part.lines,
                bytes=part.read_bytes,
                bad_lines=part.bad_lines,
                unknown_events=part.unknown_events,
                issues=[ReadIssue(name, line + before, message) for line, message in part.issues],
                max_issues=max_issues,
            )
            complete.add(stats)
            index.extend((lines + before, offset) for lines, offset in part.index)
            before += part.lines
        state.merge(last.state, line_offset=before, take=True)
    except NotMergeable:
        return None
    scan = last.scan
    full = complete.copy()
    complete.add(_shifted(name, scan.complete_stats, before))
    full.add(_shifted(name, last.stats, before))
    index.extend((lines + before, offset) for lines, offset in scan.index)
    return PartsFold(
        state=state,
        complete_stats=complete,
        stats=full,
        offset=scan.offset,
        lines=scan.lines + before,
        index=index,
        identity=identity,
        size=scan.size,
        tail=scan.tail,
    )
