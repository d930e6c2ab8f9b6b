"""Reading one large journal on several cores, for the states-only fast path.

The file is cut into parts at line boundaries. Forked children each fold a
part into a states-only ledger and send back what the merge needs, encoded
with msgpack: every chunk id they saw dispatched (for first-dispatch order),
the latest dispatch of each chunk not done within the part, the chunks done,
the spans that failed, and their read statistics. The parent folds the first
part itself, then merges the children's summaries in file order. The merge is
exact because the ledger's state rules do not depend on the order in which a
dispatch and its completion are read, only on which dispatch is latest.

A part that holds events without span ids (which pair by file order) makes
the whole read fall back to one process.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from spanjournal._schema import CompletedState, DispatchedState
from spanjournal._statefold import NativeFold, Segment, fold_segments, native
from spanjournal.reader import ReadIssue, ReadStats

if TYPE_CHECKING:
    from spanjournal.ledger import Ledger

#: Journals smaller than this in all are read in one process.
PARALLEL_MIN_BYTES = 32 * 1024 * 1024
#: At most this many processes read at once.
MAX_WORKERS = 8
#: A child's answer: this (the length of the msgpack summary), the summary, the table's dump.
_HEAD = struct.Struct("<Q")


class _Summary(msgspec.Struct, array_like=True):
    """What a child read in its part: its fold (without the C fold) and its statistics."""

    #: Dispatched chunk ids, by first dispatch.
    seen: list[str]
    #: (chunk_id, span_id, host, pid, proc_start): the latest dispatch of each chunk not done.
    open: list[tuple[str, str, str | None, int | None, int | None]]
    done: list[str]
    failed_spans: list[str]
    #: (chunk_id, span_id): each chunk's last failure, by first failure.
    failures: list[tuple[str, str]]
    planned: list[str]
    spanless: bool
    files: list[str]
    lines: list[int]
    events: int
    read_bytes: int
    torn_tails: int
    bad_lines: int
    unknown_events: int
    issues: list[tuple[str, int, str]]
    torn: list[tuple[str, int, str]]
    error: str = ""


def workers_for(paths: list[Path]) -> int:
    """How many processes to read ``paths`` with (1: do not fork).

    One per idle core, as ``make -l`` does: cores that other processes keep
    busy (by the one-minute load average) are left out, since a reader
    process that has to share a core only adds the cost of its merge.
    """
    if not hasattr(os, "fork") or threading.active_count() > 1:
        return 1  # forking a threaded process could copy a held lock
    total = 0
    for p in paths:
        with contextlib.suppress(OSError):
            total += p.stat().st_size
    if total < PARALLEL_MIN_BYTES:
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    with contextlib.suppress(OSError, AttributeError):
        cpus = min(cpus, (os.cpu_count() or 1) - round(os.getloadavg()[0]))
    return max(1, min(cpus, MAX_WORKERS, total // (PARALLEL_MIN_BYTES // 2)))


def split(paths: list[Path], parts: int) -> list[list[Segment]]:
    """Cut the files into ``parts`` lists of segments of about equal size, at line ends."""
    sizes = [p.stat().st_size for p in paths]
    target = max(1, sum(sizes) // parts)
    out: list[list[Segment]] = [[]]
    room = target
    for path, size in zip(paths, sizes):
        offset = 0
        if room <= 0 and out[-1] and len(out) < parts:  # the files before filled this part
            out.append([])
            room = target
        with open(path, "rb") as f:
            while size - offset > room and len(out) < parts:
                f.seek(offset + room)
                rest = f.readline()
                cut = offset + room + len(rest)
                if cut >= size:
                    break
                out[-1].append((str(path), offset, cut))
                out.append([])
                offset, room = cut, target
        out[-1].append((str(path), offset, None))
        room -= size - offset
    return [p for p in out if p]


def read_parallel(
    ledger: Ledger,
    paths: list[Path],
    parts: int,
    progress: Callable[[int], None] | None,
) -> bool:
    """Fold ``paths`` into the empty states-only ``ledger`` with ``parts`` processes.

    This process reads the first part straight into ``ledger`` while the
    children read the others. Returns False when the parallel read cannot be
    exact or a child failed: ``ledger`` is then spoiled, and the caller reads
    again, in one process, into a new one.
    """
    segments = split(paths, parts)
    children: list[tuple[int, int]] = []
    try:
        for part in segments[1:]:
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                os.close(read_fd)
                _child(part, write_fd)
            os.close(write_fd)
            children.append((pid, read_fd))
        report = (lambda n: progress(n * len(segments))) if progress is not None else None
        fold = NativeFold(ledger) if native() else None
        line_base = fold_segments(ledger, segments[0], report, fold)
        if ledger._synthetic:
            return False
        for _, fd in children:
            summary, table = _receive(fd)
            if summary.error or summary.spanless or (fold is not None) != bool(table):
                return False
            _merge(ledger, summary, table, line_base, fold)
        if fold is not None:
            fold.finish()
    finally:
        for pid, fd in children:
            with contextlib.suppress(OSError):
                os.close(fd)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    if progress is not None:
        progress(ledger.stats.bytes)
    return True


def _child(
    part: list[Segment],
    fd: int,
) -> None:  # pragma: no cover - runs in the child, reported through the pipe
    code = 0
    try:
        try:
            table, summary = _fold_part(part)
        except BaseException as exc:
            summary, table = _empty(error=f"{type(exc).__name__}: {exc}"), b""
            code = 1
        head = msgspec.msgpack.encode(summary)
        for data in (_HEAD.pack(len(head)), head, table):
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
    finally:
        os._exit(code)


def _receive(fd: int) -> tuple[_Summary, memoryview]:
    """A child's summary, and its C table's dump (empty without the C fold), read whole."""
    data = bytearray()
    while chunk := os.read(fd, 1 << 20):
        data += chunk
    view = memoryview(data)
    try:
        (n,) = _HEAD.unpack_from(view)
        return msgspec.msgpack.decode(view[_HEAD.size : _HEAD.size + n], type=_Summary), view[_HEAD.size + n :]
    except (struct.error, msgspec.DecodeError):
        return _empty(error="a reader process died"), view[:0]


def _empty(error: str = "") -> _Summary:
    return _Summary([], [], [], [], [], [], False, [], [], 0, 0, 0, 0, 0, [], [], error=error)


def _fold_part(part: list[Segment]) -> tuple[bytes, _Summary]:
    """Fold one part in this (child) process: its C table's dump (or nothing), and its summary."""
    from spanjournal.ledger import Ledger

    stats = ReadStats(max_issues=1000)
    part_ledger = Ledger(stats, detail=False, keep_attempts=False)
    fold = NativeFold(part_ledger) if native() else None
    lines = fold_segments(part_ledger, part, None, fold)
    table = fold.table.dump() if fold is not None else b""
    done, latest = part_ledger._done, part_ledger._latest  # empty with the C fold
    return table, _Summary(
        seen=list(latest),
        open=[(c, d.span_id, d.host, d.pid, d.proc_start) for c, d in latest.items() if c not in done],
        done=list(done),
        failed_spans=list(part_ledger._completed),
        failures=[(c, f.span_id) for c, f in part_ledger._failures.items()],
        planned=list(part_ledger.planned),
        spanless=part_ledger._synthetic > 0,
        files=list(lines),
        lines=list(lines.values()),
        events=stats.events,
        read_bytes=stats.bytes,
        torn_tails=stats.torn_tails,
        bad_lines=stats.bad_lines,
        unknown_events=stats.unknown_events,
        issues=[(i.path, i.line, i.message) for i in stats.issues],
        torn=[(i.path, i.line, i.message) for i in stats.torn],
    )


def _merge(ledger: Ledger, s: _Summary, table: memoryview, line_base: dict[str, int], fold: NativeFold | None) -> None:
    """Fold one part's summary into ``ledger`` (its table into ``fold``, if given); parts come in file order.

    ``line_base`` carries, per file, the lines of earlier parts: line numbers
    in a part count from the part's start.
    """
    stats = ledger.stats
    offsets = {}
    for path, count in zip(s.files, s.lines):
        offsets[path] = line_base.get(path, 0)
        line_base[path] = offsets[path] + count
    for path, line, message in s.issues:
        if len(stats.issues) < stats.max_issues:
            stats.issues.append(ReadIssue(path, line + offsets.get(path, 0), message))
    stats.torn.extend(ReadIssue(path, line + offsets.get(path, 0), message) for path, line, message in s.torn)
    for path in s.files:
        if not stats.files or stats.files[-1] != path:
            stats.files.append(path)
    stats.events += s.events
    stats.lines += sum(s.lines)
    stats.bytes += s.read_bytes
    stats.torn_tails += s.torn_tails
    stats.bad_lines += s.bad_lines
    stats.unknown_events += s.unknown_events

    if fold is not None:
        fold.table.load(table)
    else:
        _merge_states(ledger, s)
    ledger._plan(s.planned)


def _merge_states(ledger: Ledger, s: _Summary) -> None:
    """Fold a later part's states (read without the C fold) into ``ledger``."""
    ledger._not_done_ids = ledger._undispatched_ids = None
    latest = ledger._latest
    latest.update(dict.fromkeys(s.seen))
    latest.update(
        (c, DispatchedState(chunk_id=c, span_id=span, host=host, pid=pid, proc_start=proc))
        for c, span, host, pid, proc in s.open
    )
    done, failed_spans = ledger._done, ledger._completed
    assert isinstance(done, set) and isinstance(failed_spans, set), "a states-only ledger"
    done.update(s.done)
    failed_spans.update(s.failed_spans)
    for c, span in s.failures:
        ledger._failures[c] = CompletedState(chunk_id=c, success=False, span_id=span)
