"""What the commands print besides their answer: warnings, progress, tables.

Everything here writes to a stream it is given (stderr for warnings and
progress), so stdout stays the command's answer alone. Nothing here imports
``rich``: plain text is fast to start and safe to pipe.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TextIO

import msgspec

from spanjournal.reader import ReadStats

#: Read problems printed before "... and N more".
MAX_WARNINGS = 10
#: A read that takes longer than this (seconds) shows a progress bar on a terminal.
PROGRESS_AFTER_SECONDS = 1.0
_PROGRESS_EVERY_SECONDS = 0.1
_BAR_WIDTH = 30
_MB = 1024 * 1024


#: Stands, in a value given to :func:`write_json`, for the JSON text of its ``hole`` (JSON never holds a NUL byte).
JSON_HOLE = msgspec.Raw(b"\0")


def write_json(stream: TextIO, value: object, *, hole: Iterable[str] | None = None) -> None:
    """``value`` as one line of JSON on ``stream``: its bytes straight to the stream's buffer when it has one.

    With ``hole``, the one :data:`JSON_HOLE` in ``value`` is written as the
    pieces of JSON text ``hole`` gives, one after the other: a long list is
    printed without ever being held whole.
    """
    data = msgspec.json.encode(value)
    head, tail = data.split(b"\0") if hole is not None else (data, b"")
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        stream.write(head.decode())
        for piece in hole or ():
            stream.write(piece)
        stream.write(tail.decode() + "\n")
        return
    stream.flush()
    buffer.write(head)
    for piece in hole or ():
        buffer.write(piece.encode())
    buffer.write(tail)
    buffer.write(b"\n")
    buffer.flush()


def plural(n: int, word: str, many: str | None = None) -> str:
    """``plural(1, "line")`` is ``"1 line"``, ``plural(2000, "line")`` is ``"2,000 lines"``."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def has_control_chars(text: str) -> bool:
    """Whether ``text`` holds a character a terminal or ``xargs`` would not show as itself (newline, tab, escape...)."""
    return not text.isprintable() and any(unicodedata.category(ch) in _CONTROL_CATEGORIES for ch in text)


_CONTROL_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


def escape_id(chunk_id: str) -> str:
    """A chunk id as printed: itself, or JSON-quoted (``"a\\nb"``) when it holds control characters.

    A newline inside an id printed raw would make two ids of one for ``xargs``.
    """
    if has_control_chars(chunk_id):
        import json  # only for such an id: not on every command's start

        return json.dumps(chunk_id)
    return chunk_id


#: Rows a table shows on a terminal before "N more rows not shown".
MAX_TABLE_ROWS = 50


def bounded(rows: Sequence[Sequence[object]], limit: int | None = MAX_TABLE_ROWS) -> tuple[list[Sequence[object]], int]:
    """``rows`` cut to ``limit`` (``None``: all), and how many were left out."""
    if limit is None or len(rows) <= limit:
        return list(rows), 0
    return list(rows[:limit]), len(rows) - limit


class Progress:
    """A progress bar on ``stream`` for a read of ``total`` bytes.

    Call it with the bytes read so far (the ``progress`` callback of
    :func:`~spanjournal.ledger.read_ledger`). Nothing is drawn unless
    ``stream`` is a terminal and the read has already taken ``after`` seconds,
    so small journals and pipes never see it. :meth:`close` wipes the bar.
    """

    def __init__(
        self,
        total: int,
        stream: TextIO,
        *,
        label: str = "reading",
        after: float = PROGRESS_AFTER_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.stream = stream
        self.label = label
        self.after = after
        self.clock = clock
        self.enabled = total > 0 and _isatty(stream)
        self.started = clock()
        self.shown = False
        self._drawn_at = 0.0
        self._width = 0

    def __call__(self, done: int) -> None:
        if not self.enabled:
            return
        now = self.clock()
        elapsed = now - self.started
        if elapsed < self.after or (self.shown and now - self._drawn_at < _PROGRESS_EVERY_SECONDS):
            return
        self.shown = True
        self._drawn_at = now
        fraction = min(done / self.total, 1.0)
        filled = int(fraction * _BAR_WIDTH)
        rate = done / elapsed / _MB if elapsed > 0 else 0.0
        text = (
            f"\r{self.label} [{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {fraction:4.0%}"
            f"  {done / _MB:,.0f}/{self.total / _MB:,.0f} MB  {rate:,.0f} MB/s"
        )
        self._width = max(self._width, len(text) - 1)
        self.stream.write(text)
        self.stream.flush()

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self.shown = False


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def report_read_problems(
    stats: ReadStats,
    files: Sequence[Path],
    stream: TextIO,
    *,
    limit: int = MAX_WARNINGS,
) -> int:
    """Print skipped and repaired lines as ``file:line: message``, at most ``limit``.

    Returns how many problems there were in all.
    """
    issues = [*stats.issues, *stats.torn]
    if not issues and not stats.bad_lines:
        return 0
    order = {str(p): i for i, p in enumerate(files)}
    issues.sort(key=lambda issue: (order.get(issue.path, len(order)), issue.line))
    total = max(len(issues), stats.bad_lines + stats.torn_tails)
    for issue in issues[:limit]:
        stream.write(f"{issue}\n")
    hidden = total - min(limit, len(issues))
    if hidden > 0:
        stream.write(f"... and {plural(hidden, 'more problem')} in the journal\n")
    return total


def read_summary(stats: ReadStats) -> list[str]:
    """The read problems worth a mention in a one-line summary."""
    parts = []
    if stats.torn_tails:
        parts.append(f"{plural(stats.torn_tails, 'torn line')} skipped")
    if stats.bad_lines:
        parts.append(f"{plural(stats.bad_lines, 'bad line')} skipped")
    return parts


def text_table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, right: Iterable[int] = ()) -> str:
    """Rows as aligned plain-text columns under ``headers`` (none if all empty); ``right``: right-aligned columns."""
    header = [[str(h) for h in headers]] if any(headers) else []
    cells = [*header, *([str(c) for c in row] for row in rows)]
    widths = [max(map(len, column), default=0) for column in zip(*cells)] if cells else [0] * len(headers)
    right_set = set(right)
    # one format for every row: "{:<9}  {:>5}": each cell padded as str.ljust / str.rjust would
    line = "  ".join(f"{{:{'>' if i in right_set else '<'}{w}}}" for i, w in enumerate(widths))
    return "\n".join([line.format(*row).rstrip() for row in cells]) + "\n"
