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

The fast path hands whole blocks of lines to msgspec's ``decode_lines``; a
block that holds anything odd is read again line by line for exact reports.
This module does not import OpenTelemetry.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from spanjournal._schema import Event, UnknownEvent, decode_line

#: Bytes read per block. Lines longer than a block grow the buffer.
BLOCK_BYTES = 8 * 1024 * 1024
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

    def report(self, path: str, line: int, message: str, *, bad: bool = True) -> None:
        if bad:
            self.bad_lines += 1
        if len(self.issues) < self.max_issues:
            self.issues.append(ReadIssue(path, line, message))


def resolve_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand journal arguments: files, directories (their ``*.jsonl``), globs.

    Raises :class:`JournalReadError` with a one-line message for a path that
    does not exist, is not readable, or is a directory without journals.
    """
    out: list[Path] = []
    for raw in paths:
        text = os.fspath(raw)
        p = Path(text)
        if p.is_dir():
            found = sorted(q for q in p.glob("*.jsonl") if q.is_file())
            if not found:
                raise JournalReadError(f"{text}: directory holds no *.jsonl journal")
            out.extend(found)
        elif p.exists():
            if not p.is_file():
                raise JournalReadError(f"{text}: not a regular file")
            out.append(p)
        elif glob.has_magic(text):
            found = sorted(Path(q) for q in glob.glob(text) if Path(q).is_file())
            if not found:
                raise JournalReadError(f"{text}: no journal matches")
            out.extend(found)
        else:
            raise JournalReadError(f"{text}: no such journal")
    for p in out:
        if not os.access(p, os.R_OK):
            raise JournalReadError(f"{p}: permission denied")
    return out


Decoder = msgspec.json.Decoder[Any]
LineDecoder = Callable[[bytes], Any]
#: Takes a block of whole lines, ``buf[start:end]``, and the number of lines
#: before it in the file; consumes the block and returns how many lines it held.
BlockHandler = Callable[[bytearray, int, int, int], int]


def scan(
    paths: Iterable[str | os.PathLike[str]],
    stats: ReadStats | None = None,
    *,
    decoder: Decoder | None = None,
    line_decoder: LineDecoder = decode_line,
    progress: Callable[[int], None] | None = None,
) -> Iterator[list[Any]]:
    """Yield the events of ``paths`` in file order, in batches (lists).

    ``decoder`` (a ``msgspec.json.Decoder`` of an event union) and
    ``line_decoder`` choose the event types; the defaults decode the full
    schema. ``stats`` collects counts and :class:`ReadIssue` reports.
    ``progress`` is called with the bytes read so far.
    """
    if stats is None:
        stats = ReadStats()
    if decoder is None:
        decoder = _FULL_DECODER
    for path in resolve_paths(paths):
        stats.files.append(str(path))
        yield from _scan_file(path, stats, decoder, line_decoder, progress)


_FULL_DECODER: Decoder = msgspec.json.Decoder(Event)


def _scan_file(
    path: Path,
    stats: ReadStats,
    decoder: Decoder,
    line_decoder: LineDecoder,
    progress: Callable[[int], None] | None,
    offset: int = 0,
    stop: int | None = None,
    handle_block: BlockHandler | None = None,
) -> Iterator[list[Any]]:
    """Scan ``path`` from byte ``offset`` (a line start) to ``stop`` (a line end, or EOF).

    Line numbers in reports count from the ``offset``. With ``handle_block``,
    blocks of whole lines go to it rather than to ``decoder``; only an
    unterminated last line is still decoded and yielded here.
    """
    name = str(path)
    try:
        f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise JournalReadError(f"{name}: {exc.strerror}") from exc
    with f:
        if offset:
            f.seek(offset)
        remaining = -1 if stop is None else stop - offset
        buf = bytearray(BLOCK_BYTES)
        start = 0  # bytes of an incomplete line kept at the front of buf
        line_no = 0  # lines before the block being decoded
        skipping_from = 0  # line number of an overlong line being skipped, or 0
        while remaining:
            if start == len(buf):
                if len(buf) >= MAX_LINE_BYTES:
                    if not skipping_from:
                        skipping_from = line_no + 1
                    start = 0
                else:
                    buf.extend(bytes(len(buf)))
            space = memoryview(buf)[start:] if remaining < 0 else memoryview(buf)[start : start + remaining]
            try:
                n = f.readinto(space)
            except OSError as exc:
                raise JournalReadError(f"{name}: {exc.strerror}") from exc
            finally:
                space.release()
            if not n:
                break
            if remaining > 0:
                remaining -= n
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
            if block_start <= cut and handle_block is not None:
                lines = handle_block(buf, block_start, cut + 1, line_no)
                line_no += lines
                stats.lines += lines
            elif block_start <= cut:
                view = memoryview(buf)[block_start : cut + 1]
                lines, whole = block_lines(buf, block_start, cut + 1)
                yield _decode_block(view, lines, whole, line_no, name, stats, decoder, line_decoder)
                view.release()
                line_no += lines
                stats.lines += lines
            rest = end - cut - 1
            buf[:rest] = buf[cut + 1 : end]
            start = rest
            if progress is not None:
                progress(stats.bytes)
        if skipping_from:
            stats.report(name, skipping_from, f"line longer than {MAX_LINE_BYTES} bytes skipped")
        elif start:
            tail = bytes(buf[:start]).strip(_WHITESPACE)
            event = _decode_tail(tail, line_decoder) if tail else None
            stats.lines += 1
            if event is not None:
                stats.events += 1
                if isinstance(event, UnknownEvent):
                    stats.unknown_events += 1
                else:
                    yield [event]
            elif tail:
                stats.torn_tails += 1
                stats.torn.append(ReadIssue(name, line_no + 1, TORN_TAIL))


def _decode_tail(tail: bytes, line_decoder: LineDecoder) -> Any:
    if tail.startswith(_BOM):
        tail = tail[len(_BOM) :]
    try:
        return line_decoder(tail)
    except _UNDECODABLE:
        return None


def _block_lines(buf: bytearray, start: int, end: int) -> tuple[int, bool]:
    """The lines of ``buf[start:end]``, and whether each starts with ``{`` and ends with ``}``.

    ``decode_lines`` takes several values on one line and one value over
    several lines, and passes over blank lines: only when each line is one
    object does the number of events it returns tell that each line held
    one. (The C extension does the same in one pass.)
    """
    lines = buf.count(b"\n", start, end)
    whole = buf[start] == 0x7B and buf.count(b"}\n", start, end) == lines == buf.count(b"\n{", start, end) + 1
    return lines, whole


try:
    from spanjournal._speedups import block_lines
except ImportError:  # pragma: no cover - built wherever a C compiler was found
    block_lines = _block_lines  # type: ignore[assignment]  # takes the bytearray the reader has


def _decode_block(
    view: memoryview,
    lines: int,
    whole: bool,
    line_no: int,
    name: str,
    stats: ReadStats,
    decoder: Decoder,
    line_decoder: LineDecoder,
) -> list[Any]:
    if whole:
        try:
            events = decoder.decode_lines(view)
        except _UNDECODABLE:
            pass
        else:
            if len(events) == lines:
                stats.events += lines
                return events
    return _decode_lines_one_by_one(bytes(view), line_no, name, stats, line_decoder)


def _decode_lines_one_by_one(
    block: bytes, line_no: int, name: str, stats: ReadStats, line_decoder: LineDecoder
) -> list[Any]:
    out: list[Any] = []
    for i, line in enumerate(block.split(b"\n")[:-1], start=line_no + 1):
        if line.startswith(_BOM):
            line = line[len(_BOM) :]
            stats.report(name, i, "byte-order mark removed", bad=False)
        if not line.strip(_WHITESPACE):
            stats.report(name, i, "blank line skipped")
            continue
        try:
            event = line_decoder(line)
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
    return out


def _describe_garbage(line: bytes, exc: Exception) -> str:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return "line that is not UTF-8"
    return f"line that is not a JSON event ({exc})"
