"""The journal reader: where a line is read.

:func:`scan` streams one or more journals and yields decoded events in file
order, in batches. It never raises on bad content:

- lines are split on ``b"\\n"`` only;
- an unterminated last line is accepted if it parses as a complete event
  (only its newline was lost), otherwise it is a torn tail, dropped silently
  and counted;
- a malformed line anywhere else (garbage, blank, non-UTF-8, a known field of
  the wrong type, too long) is skipped and reported as a :class:`ReadIssue`
  naming file and line; a byte-order mark is removed and reported;
- events with a name this reader does not know are counted and ignored.

The fast path decodes the lines of a block with one ``map`` of msgspec's
decoder; a block that holds anything odd is read again line by line for
exact reports.
Every command reads through the same decoder (the full schema), so every
command classifies every line the same way.
This module does not import OpenTelemetry.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
from bisect import bisect_right
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import msgspec

from spanjournal._schema import Event, UnknownEvent, decode_line

#: Bytes read per block. Lines longer than a block grow the buffer. Small enough that the block
#: stays in the CPU cache between counting its lines and decoding them (8 MiB blocks read ~30% slower).
BLOCK_BYTES = 256 * 1024
#: A line longer than this is skipped (and reported) without being decoded.
MAX_LINE_BYTES = 64 * 1024 * 1024

_BOM = b"\xef\xbb\xbf"
# msgspec raises UnicodeDecodeError, not DecodeError, for bad UTF-8 inside a string.
# msgspec raises RecursionError for nesting deeper than it allows.
_UNDECODABLE = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError)
_WHITESPACE = b" \t\r"


TORN_TAIL = "torn last line skipped (an interrupted write)"


class JournalReadError(OSError):
    """A journal path is missing or cannot be read (not: its content is bad)."""


@dataclass(frozen=True)
class ReadIssue:
    """One line that was skipped or repaired, with where it is."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass
class ReadStats:
    """What a scan met, beyond the events it yielded."""

    files: list[str] = field(default_factory=list)
    events: int = 0
    #: Newline-terminated lines met (blank and bad ones included).
    lines: int = 0
    bytes: int = 0
    torn_tails: int = 0
    #: Where each torn tail was (not an issue: a crash leaves one, and it is
    #: dropped silently; a command may still name it).
    torn: list[ReadIssue] = field(default_factory=list)
    bad_lines: int = 0
    unknown_events: int = 0
    issues: list[ReadIssue] = field(default_factory=list)
    #: Issues beyond this many are counted in ``bad_lines`` but not kept.
    max_issues: int = 1000

    def copy(self) -> ReadStats:
        return replace(self, files=list(self.files), torn=list(self.torn), issues=list(self.issues))

    def add(self, other: ReadStats) -> None:
        """Count ``other`` (a later file's read) in these statistics."""
        self.files.extend(other.files)
        self.events += other.events
        self.lines += other.lines
        self.bytes += other.bytes
        self.torn_tails += other.torn_tails
        self.torn.extend(other.torn)
        self.bad_lines += other.bad_lines
        self.unknown_events += other.unknown_events
        self.issues.extend(other.issues[: max(0, self.max_issues - len(self.issues))])

    def report(self, path: str, line: int, message: str, *, bad: bool = True) -> None:
        if bad:
            self.bad_lines += 1
        if len(self.issues) < self.max_issues:
            self.issues.append(ReadIssue(path, line, message))

    def holds_journal(self) -> bool:
        """Whether the file these statistics are of is a journal: some line is a journal event, or it
        has no complete line (empty, or its first line still being written: a torn tail)."""
        return self.events > self.unknown_events or self.lines == self.torn_tails


class NotAJournalError(JournalReadError):
    """A file named as a journal in which no line is a journal event (and that is not empty)."""


#: Why a file is not read as a journal (:meth:`ReadStats.holds_journal`).
NOT_A_JOURNAL = "not a journal (no line is a journal event)"


def resolve_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand journal arguments: files, directories (their ``*.jsonl``), globs.

    Raises :class:`JournalReadError` with a one-line message for a path that
    does not exist, is not readable, or is a directory without journals.
    """
    return [path for path, _ in resolve_journals(paths)]


def journal_files(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[str]]:
    """:func:`resolve_paths`, keeping the files that are journals, and a line for each one left out.

    A file named itself that is not a journal raises :class:`NotAJournalError`;
    one found in a directory or by a glob is left out. A journal is read up to
    its first journal event (its first block), a file that is not one whole.
    """
    files: list[Path] = []
    skipped: list[str] = []
    for path, named in resolve_journals(paths):
        if is_journal(path):
            files.append(path)
        else:
            skipped.append(not_a_journal(path, named))
    return files, skipped


def not_a_journal(path: str | os.PathLike[str], named: bool) -> str:
    """For a file that is not a journal: :class:`NotAJournalError` if it was named itself, else the
    line that says it was left out (a file found in a directory or by a glob)."""
    if named:
        raise NotAJournalError(f"{os.fspath(path)}: {NOT_A_JOURNAL}")
    return f"{os.fspath(path)}: skipped, {NOT_A_JOURNAL}"


def is_journal(path: Path) -> bool:
    """Whether some line of the file is a journal event, or it has no complete line.

    The rule of :meth:`ReadStats.holds_journal`, read only up to the first journal event.
    """
    stats = ReadStats(max_issues=0)
    scan = FileScan(path, stats)
    with contextlib.closing(scan.batches()) as batches:
        for _ in batches:
            if stats.events > stats.unknown_events:
                return True
    return stats.holds_journal()


def resolve_journals(paths: Iterable[str | os.PathLike[str]]) -> list[tuple[Path, bool]]:
    """Like :func:`resolve_paths`, with whether each file was named itself (not found in a directory or glob)."""
    out: list[tuple[Path, bool]] = []
    for raw in paths:
        text = os.fspath(raw)
        p = Path(text)
        if p.is_dir():
            found = sorted(q for q in p.glob("*.jsonl") if q.is_file())
            if not found:
                raise JournalReadError(f"{text}: directory holds no *.jsonl journal")
            out.extend((q, False) for q in found)
        elif p.exists():
            if not p.is_file():
                raise JournalReadError(f"{text}: not a regular file")
            out.append((p, True))
        elif glob.has_magic(text):
            found = sorted(Path(q) for q in glob.glob(text) if Path(q).is_file())
            if not found:
                raise JournalReadError(f"{text}: no journal matches")
            out.extend((q, False) for q in found)
        else:
            raise JournalReadError(f"{text}: no such journal")
    for p, _ in out:
        if not os.access(p, os.R_OK):
            raise JournalReadError(f"{p}: permission denied")
    return out


Decoder = msgspec.json.Decoder[Any]

#: The one decoder of every command: each line is classified the same way by all.
_DECODER: Decoder = msgspec.json.Decoder(Event)
_DECODE = _DECODER.decode


def scan(
    paths: Iterable[str | os.PathLike[str]],
    stats: ReadStats | None = None,
    *,
    progress: Callable[[int], None] | None = None,
) -> Iterator[list[Any]]:
    """Yield the events of ``paths`` in file order, in batches (lists).

    ``stats`` collects counts and :class:`ReadIssue` reports. ``progress`` is
    called with the bytes read so far.
    """
    if stats is None:
        stats = ReadStats()
    for path in resolve_paths(paths):
        stats.files.append(str(path))
        file_scan = FileScan(path, stats)
        for events, _ in file_scan.batches(progress):
            yield events
        if file_scan.tail is not None:
            yield [file_scan.tail]


class FileScan:
    """One pass over a journal file, from a line start to its end.

    :meth:`batches` yields the events of the newline-terminated lines, each
    with its line number. Afterwards ``offset`` is the end of the last such
    line and ``lines`` their count; an unterminated last line that parses is
    ``tail`` (at line ``lines + 1``), one that does not is a torn tail
    (counted in ``stats``). ``index`` holds ``(lines before, byte offset)``
    at the start of every block read, to find a line again quickly.
    With ``end``, the scan stops there as if the file ended (a range of a
    file, cut at a line boundary, read by one of several processes).
    """

    def __init__(
        self,
        path: Path,
        stats: ReadStats,
        *,
        offset: int = 0,
        lines: int = 0,
        file: io.FileIO | None = None,
        end: int | None = None,
    ) -> None:
        self.path = path
        self.file = file
        self.end = end
        self.stats = stats
        self.offset = offset
        self.lines = lines
        self.index: list[tuple[int, int]] = []
        self.tail: Any = None
        self.identity: tuple[int, int] | None = None
        self.size = 0
        #: ``stats`` as it was before the unterminated last line was looked at.
        self.complete_stats = stats

    def batches(
        self, progress: Callable[[int], None] | None = None
    ) -> Generator[tuple[list[Any], Sequence[int]], None, None]:
        path, stats = self.path, self.stats
        name = str(path)
        f = self.file if self.file is not None else open_journal(path)
        with f:
            st = os.fstat(f.fileno())
            self.identity = (st.st_dev, st.st_ino)
            if self.offset:
                f.seek(self.offset)
            buf = bytearray(BLOCK_BYTES)
            start = 0  # bytes of an incomplete line kept at the front of buf
            line_no = self.lines  # lines before the block being decoded
            skipping_from = 0  # line number of an overlong line being skipped, or 0
            block_offset = self.offset  # file offset of buf[0]
            while True:
                if start == len(buf):
                    if len(buf) >= MAX_LINE_BYTES:
                        if not skipping_from:
                            skipping_from = line_no + 1
                        block_offset += start
                        start = 0
                    else:
                        buf.extend(bytes(len(buf)))
                space = memoryview(buf)[start:]
                if self.end is not None:
                    space = space[: max(0, self.end - block_offset - start)]
                try:
                    n = f.readinto(space)
                except OSError as exc:
                    raise JournalReadError(f"{name}: {exc.strerror}") from exc
                finally:
                    space.release()
                if not n:
                    break
                stats.bytes += n
                end = start + n
                cut = buf.rfind(b"\n", 0, end)
                if cut < 0:
                    start = end
                    continue
                block_start = 0
                if skipping_from:
                    first_nl = buf.find(b"\n", 0, end)
                    stats.report(name, skipping_from, f"line longer than {MAX_LINE_BYTES} bytes skipped")
                    stats.lines += skipping_from - line_no
                    line_no = skipping_from
                    skipping_from = 0
                    block_start = first_nl + 1
                if block_start <= cut:
                    self.index.append((line_no, block_offset + block_start))
                    # (one copy: a slice of the bytearray, then bytes of it, would copy the block twice)
                    block = bytes(memoryview(buf)[block_start : cut + 1])
                    lines, events, numbers = _decode_block(block, line_no, name, stats)
                    line_no += lines
                    stats.lines += lines
                    self.lines = line_no
                    self.offset = block_offset + cut + 1
                    yield events, numbers
                rest = end - cut - 1
                buf[:rest] = buf[cut + 1 : end]
                block_offset += cut + 1
                start = rest
                if progress is not None:
                    progress(stats.bytes)
            self.lines = line_no
            if not skipping_from:
                self.offset = block_offset
            self.size = block_offset + start
            self.complete_stats = stats.copy()
            if skipping_from:
                stats.report(name, skipping_from, f"line longer than {MAX_LINE_BYTES} bytes skipped")
            elif start:
                tail = bytes(buf[:start]).strip(_WHITESPACE)
                event = _decode_tail(tail) if tail else None
                stats.lines += 1
                if event is not None:
                    stats.events += 1
                    if isinstance(event, UnknownEvent):
                        stats.unknown_events += 1
                    else:
                        self.tail = event
                elif tail:
                    stats.torn_tails += 1
                    stats.torn.append(ReadIssue(name, line_no + 1, TORN_TAIL))


def open_journal(path: Path) -> io.FileIO:
    """Open a journal for reading, unbuffered; :class:`JournalReadError` if it cannot be."""
    try:
        return open(path, "rb", buffering=0)
    except OSError as exc:
        raise JournalReadError(f"{path}: {exc.strerror}") from exc


def read_lines(path: str | os.PathLike[str], index: Sequence[tuple[int, int]], wanted: Iterable[int]) -> dict[int, Any]:
    """Decode the lines numbered ``wanted`` of a file again, using its block ``index``.

    Lines that cannot be found or decoded are left out.
    """
    out: dict[int, Any] = {}
    todo = sorted(set(wanted))
    if not todo:
        return out
    starts = [lines for lines, _ in index] or [0]
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError:
        return out
    with f:
        i = 0
        while i < len(todo):
            block = max(0, bisect_right(starts, todo[i] - 1) - 1)
            line_no, offset = index[block] if index else (0, 0)
            f.seek(offset)
            limit = starts[block + 1] if block + 1 < len(starts) else None
            while i < len(todo) and (limit is None or todo[i] <= limit):
                target = todo[i]
                raw = b""
                while line_no < target:
                    raw = f.readline()
                    if not raw:
                        return out
                    line_no += 1
                with contextlib.suppress(*_UNDECODABLE):
                    out[target] = decode_line(raw.rstrip(b"\n").removeprefix(_BOM).strip(_WHITESPACE))
                i += 1
    return out


def _decode_tail(tail: bytes) -> Any:
    if tail.startswith(_BOM):
        tail = tail[len(_BOM) :]
    try:
        return decode_line(tail)
    except _UNDECODABLE:
        return None


def _decode_block(block: bytes, line_no: int, name: str, stats: ReadStats) -> tuple[int, list[Any], Sequence[int]]:
    """The number of lines of a block of whole lines, their events, and the events' line numbers.

    Each line is decoded alone (msgspec, in C: ``map`` over the lines), so a
    line is an event exactly when it is one JSON object of the schema: two
    objects on a line, one object over two lines, a blank line all fail.
    The first line that fails sends the block to be read again line by line,
    for exact reports.
    """
    lines = block.split(b"\n")
    lines.pop()  # after the block's last newline
    try:
        events = list(map(_DECODE, lines))
    except _UNDECODABLE:
        events, numbers = _decode_lines_one_by_one(block, line_no, name, stats)
        return len(lines), events, numbers
    stats.events += len(lines)
    return len(lines), events, range(line_no + 1, line_no + len(lines) + 1)


def _decode_lines_one_by_one(block: bytes, line_no: int, name: str, stats: ReadStats) -> tuple[list[Any], list[int]]:
    out: list[Any] = []
    numbers: list[int] = []
    for i, line in enumerate(block.split(b"\n")[:-1], start=line_no + 1):
        if line.startswith(_BOM):
            line = line[len(_BOM) :]
            stats.report(name, i, "byte-order mark removed", bad=False)
        if not line.strip(_WHITESPACE):
            stats.report(name, i, "blank line skipped")
            continue
        try:
            event = decode_line(line)
        except msgspec.ValidationError as exc:
            stats.report(name, i, f"bad event skipped: {exc}")
            continue
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            stats.report(name, i, f"{_describe_garbage(line, exc)} skipped")
            continue
        stats.events += 1
        if isinstance(event, UnknownEvent):
            stats.unknown_events += 1
            continue
        out.append(event)
        numbers.append(i)
    return out, numbers


def _describe_garbage(line: bytes, exc: Exception) -> str:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return "line that is not UTF-8"
    return f"line that is not a JSON event ({exc})"
