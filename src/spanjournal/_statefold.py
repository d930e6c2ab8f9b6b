"""The states-only fold of a ledger (``read_ledger(detail=False)``), fast.

When the C extension :mod:`spanjournal._speedups` is built, blocks of lines
go straight to its table, which folds every line whose meaning is plain
without making Python objects, and stops at any other line. That line is
decoded here, exactly as the pure-Python reader would (reports, unknown
events, lines without span ids), and its event is folded through the table,
in file order. At the end the table is handed to the ledger, which makes
Python objects only for the chunks not done.
Without the extension (or with ``SPANJOURNAL_PURE_PYTHON=1`` in the
environment) the reader's own decode and :meth:`Ledger._add` do the work.

Both ways give the same ledger, with one difference: the C fold keeps the
latest dispatch only of chunks not done (those of done chunks read as
``None``), as a parallel read already does.

In a parallel read (:mod:`spanjournal._parallel`) each reader process
sends back its table's dump, which the parent loads in file order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from spanjournal._schema import CompletedState, DispatchedState, StateEvent, decode_state_line
from spanjournal.reader import _decode_lines_one_by_one, _scan_file

if TYPE_CHECKING:
    from spanjournal.ledger import Ledger

try:
    from spanjournal._speedups import DISPATCHED, DONE, Table
except ImportError:  # pragma: no cover - built wherever a C compiler was found
    Table = None  # type: ignore[misc, assignment]
    DISPATCHED, DONE = 1, 2

#: Decodes blocks of lines into the state-only views (the pure-Python way).
STATE_DECODER: msgspec.json.Decoder[Any] = msgspec.json.Decoder(StateEvent)

Segment = tuple[str, int, "int | None"]  # path, start offset, stop offset (None: to EOF)


def native() -> bool:
    """Whether the C fold is built and not switched off by ``SPANJOURNAL_PURE_PYTHON``."""
    return Table is not None and os.environ.get("SPANJOURNAL_PURE_PYTHON", "") in ("", "0")


class NotNative(Exception):
    """The C table cannot hold a value a journal holds (a pid beyond 64 bits): read it the Python way."""


class NativeFold:
    """Feeds blocks of lines to a C table; lines it stops at are decoded here."""

    def __init__(self, ledger: Ledger, name: str = "") -> None:
        assert Table is not None
        self.table = Table()
        self.ledger = ledger
        self.name = name

    def block(self, buf: bytearray, start: int, end: int, line_no: int) -> int:
        """Fold the lines of ``buf[start:end]``; return how many there were."""
        feed, stats = self.table.feed, self.ledger.stats
        lines = 0
        while start < end:
            start, folded = feed(buf, start, end)
            lines += folded
            stats.events += folded
            if start < end:  # a line the table left to Python
                nl = buf.index(b"\n", start, end) + 1
                line = bytes(buf[start:nl])
                lines += 1
                self.add(_decode_lines_one_by_one(line, line_no + lines - 1, self.name, stats, decode_state_line))
                start = nl
        return lines

    def add(self, events: Iterable[Any]) -> None:
        """Fold events decoded in Python, in file order (the ledger's rules for missing span ids)."""
        table, ledger = self.table, self.ledger
        for e in events:
            if e.kind == 1:
                span = e.span_id or _synthetic(ledger)
                try:
                    table.dispatch(e.chunk_id, span, e.host, e.pid, e.proc_start)
                except OverflowError as exc:
                    raise NotNative(f"{self.name}: {exc}") from exc
            elif e.kind == 2:
                span = e.span_id or table.latest_span(e.chunk_id) or _synthetic(ledger)
                table.complete(e.chunk_id, span, e.success)
            elif e.kind == 3:
                ledger._plan(e.chunk_ids)

    def finish(self) -> None:
        """Hand the table to the (empty) ledger it was folded for.

        The ledger gets Python objects only for what ``pending`` needs: the
        chunks not done, the failures, the failed spans. Its dispatched and
        done chunks stay in the table, behind :class:`NativeLatest` and
        :class:`NativeDone`.
        """
        ledger, table = self.ledger, self.table
        assert not ledger._latest and not ledger._done and not ledger._failures, "an empty ledger"
        open_, failed_spans, failures = table.summary()
        ledger._not_done_ids = ledger._undispatched_ids = None
        ledger._latest = NativeLatest(  # type: ignore[assignment]  # read-only from here on
            table,
            {
                c: DispatchedState(chunk_id=c, span_id=span, host=host, pid=pid, proc_start=proc)
                for c, span, host, pid, proc in open_
            },
        )
        ledger._done = NativeDone(table)  # type: ignore[assignment]
        ledger._completed = failed_spans
        ledger._failures = {c: CompletedState(chunk_id=c, success=False, span_id=span) for c, span in failures}


class NativeLatest(Mapping[str, "DispatchedState | None"]):
    """``Ledger._latest`` kept in a C table: chunk id -> its latest dispatch.

    Dispatches are kept for chunks not done (``open``); done chunks map to
    ``None``. Iteration (by first dispatch) makes the ids once, when asked.
    """

    def __init__(self, table: Any, open: dict[str, DispatchedState]) -> None:
        self._table = table
        self.open = open
        self._ids: list[str] | None = None

    def __getitem__(self, chunk_id: str) -> DispatchedState | None:
        d = self.open.get(chunk_id)
        if d is None and not self._table.flags(chunk_id) & DISPATCHED:
            raise KeyError(chunk_id)
        return d

    def get(self, chunk_id: str, default: Any = None) -> Any:
        d = self.open.get(chunk_id)
        if d is None and not self._table.flags(chunk_id) & DISPATCHED:
            return default
        return d

    def __contains__(self, chunk_id: object) -> bool:
        return chunk_id in self.open or (isinstance(chunk_id, str) and bool(self._table.flags(chunk_id) & DISPATCHED))

    def __iter__(self) -> Iterator[str]:
        if self._ids is None:
            self._ids = self._table.ids(DISPATCHED)
        return iter(self._ids)

    def __len__(self) -> int:
        return int(self._table.counts()[1])


class NativeDone(AbstractSet[str]):
    """``Ledger._done`` kept in a C table: the chunk ids with a success."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def __contains__(self, chunk_id: object) -> bool:
        return isinstance(chunk_id, str) and bool(self._table.flags(chunk_id) & DONE)

    def __iter__(self) -> Iterator[str]:
        return iter(self._table.ids(DONE))

    def __len__(self) -> int:
        return int(self._table.counts()[2])


def _synthetic(ledger: Ledger) -> str:
    ledger._synthetic += 1
    return f"-{ledger._synthetic}"


def fold_segments(
    ledger: Ledger,
    segments: Sequence[Segment],
    progress: Callable[[int], None] | None,
    fold: NativeFold | None = None,
    *,
    use_native: bool = True,
) -> dict[str, int]:
    """Fold parts of journal files into the states-only ``ledger``, in order.

    Returns the lines read per file. With ``fold``, lines go to its table,
    and the caller merges it; otherwise the C fold is used (and merged) when
    it is built and ``use_native``, else the Python one. Raises
    :class:`NotNative` when the C table cannot hold what a journal says.
    """
    stats = ledger.stats
    lines: dict[str, int] = {}
    # One table for all segments: a completion without a span id pairs with
    # its chunk's latest dispatch, which may be in an earlier file.
    own = fold is None and use_native and native()
    if own:
        fold = NativeFold(ledger)
    for path, start, stop in segments:
        before = stats.lines
        if not stats.files or stats.files[-1] != path:
            stats.files.append(path)
        if fold is not None:
            fold.name = path
            tails = _scan_file(Path(path), stats, STATE_DECODER, decode_state_line, progress, start, stop, fold.block)
            for tail in tails:
                fold.add(tail)
        else:
            for batch in _scan_file(Path(path), stats, STATE_DECODER, decode_state_line, progress, start, stop):
                ledger._add(batch)
        lines[path] = lines.get(path, 0) + stats.lines - before
    if own and fold is not None:
        fold.finish()
    return lines
