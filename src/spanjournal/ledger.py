"""The ledger: the journal folded into one record per chunk.

>>> ledger = read_ledger("runs/bench.jsonl")          # doctest: +SKIP
>>> ledger.pending()                                   # doctest: +SKIP
['batch-3-case-027', 'batch-3-case-028']

For each ``chunk_id``, over all journals given, in file order:

========================  ==================================================
state                     meaning
========================  ==================================================
``done``                  some attempt completed with ``success: true``
``failed``                the latest attempt completed with ``success: false``
``unfinished``            the latest attempt was dispatched, never completed
``running``               unfinished, and its process is provably alive
``never_dispatched``      planned (``run_planned`` or ``expect``), never dispatched
========================  ==================================================

``pending`` is ``unfinished`` + ``failed`` + ``never_dispatched``. A
completion pairs with its dispatch by ``span_id`` (falling back to the
chunk's latest attempt); attempts are the dispatches of a chunk in order.
This module does not import OpenTelemetry.
"""

from __future__ import annotations

import enum
import gc
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from spanjournal._process import is_alive
from spanjournal._schema import Completed, Dispatched, StateEvent, decode_state_line
from spanjournal.reader import ReadIssue, ReadStats, scan


class ChunkState(str, enum.Enum):
    """What the reader concludes about one chunk."""

    DONE = "done"
    FAILED = "failed"
    UNFINISHED = "unfinished"
    RUNNING = "running"
    NEVER_DISPATCHED = "never_dispatched"

    def __str__(self) -> str:
        return self.value


PENDING_STATES = frozenset({ChunkState.UNFINISHED, ChunkState.FAILED, ChunkState.NEVER_DISPATCHED})


@dataclass(slots=True)
class Attempt:
    """One dispatch of a chunk and its completion, if one was recorded."""

    dispatch: Dispatched | None
    completion: Completed | None = None

    @property
    def span_id(self) -> str | None:
        source = self.dispatch or self.completion
        return source.span_id if source else None


@dataclass(slots=True)
class Chunk:
    """Everything the journals say about one ``chunk_id``.

    ``attempts`` holds every dispatch/completion pair when the ledger was read
    with ``keep_attempts=True`` (the default); otherwise it is empty and
    ``attempt_count`` still counts them.
    """

    chunk_id: str
    state: ChunkState
    attempt_count: int
    #: The latest dispatch (file order), and that attempt's completion.
    dispatch: Dispatched | None
    completion: Completed | None
    #: The first successful completion of any attempt.
    success: Completed | None
    attempts: list[Attempt]

    @property
    def last_error(self) -> str | None:
        c = self.completion
        return c.error if c is not None and not c.success else None

    @property
    def error_type(self) -> str | None:
        c = self.completion
        return c.error_type if c is not None and not c.success else None

    @property
    def output_file(self) -> str | None:
        """The output file of the success, else the latest attempt's."""
        for event in (self.success, self.completion, self.dispatch):
            path = event.output_file if event is not None else None
            if path:
                return path
        return None

    @property
    def last_ts(self) -> str | None:
        """The time of the latest event known for this chunk."""
        event = self.completion or self.dispatch or self.success
        return event.ts if event is not None else None

    @property
    def trace_id(self) -> str | None:
        event = self.dispatch or self.completion or self.success
        return event.trace_id if event is not None else None

    def completions(self) -> list[Completed]:
        """Every completion known for this chunk, attempt by attempt."""
        out = [a.completion for a in self.attempts if a.completion is not None]
        for c in (self.completion, self.success):
            if c is not None and not any(c is o for o in out):
                out.append(c)
        return out

    @property
    def tokens_used(self) -> int:
        """Tokens over all known completions (``tokens_used``, else input + output)."""
        total = 0
        for c in self.completions():
            if c.tokens_used is not None:
                total += c.tokens_used
            else:
                total += (c.input_tokens or 0) + (c.output_tokens or 0)
        return total

    @property
    def duration_ms(self) -> float | None:
        """Duration of the success, else of the latest completed attempt."""
        c = self.success or self.completion
        return c.duration_ms if c is not None else None


class Ledger:
    """Per-chunk states folded from one or more journals.

    Chunks are ordered by first dispatch; chunks seen only in a completion
    follow, then chunks only planned or expected, in plan order. Internally
    the ledger is a few dicts keyed by chunk id (the fold touches one or two
    per event); :class:`Chunk` records are built when asked for.
    """

    def __init__(self, stats: ReadStats) -> None:
        self.stats = stats
        #: Session ids seen in dispatches, in order.
        self.sessions: dict[str, None] = {}
        self.planned: dict[str, None] = {}
        self._latest: dict[str, Dispatched] = {}
        self._completion: dict[str, Completed] = {}
        self._success: dict[str, Completed] = {}
        self._retries: dict[str, int] = {}
        self._attempts: dict[str, list[Attempt]] = {}
        self._orphan_chunks: dict[str, None] = {}
        self._alive: dict[tuple[Any, Any, Any], bool] = {}

    @property
    def issues(self) -> list[ReadIssue]:
        """Lines skipped or repaired while reading, with file and line."""
        return self.stats.issues

    def chunk_ids(self) -> list[str]:
        """Every chunk id, in ledger order."""
        ids = list(self._latest)
        ids.extend(c for c in self._orphan_chunks if c not in self._latest)
        ids.extend(c for c in self.planned if c not in self._latest and c not in self._orphan_chunks)
        return ids

    def state(self, chunk_id: str) -> ChunkState:
        if chunk_id in self._success:
            return ChunkState.DONE
        if chunk_id in self._completion:
            return ChunkState.FAILED
        d = self._latest.get(chunk_id)
        if d is not None:
            key = (d.host, d.pid, d.proc_start)
            alive = self._alive.get(key)
            if alive is None:
                alive = self._alive[key] = is_alive(*key)
            return ChunkState.RUNNING if alive else ChunkState.UNFINISHED
        if chunk_id in self._orphan_chunks or chunk_id in self.planned:
            return ChunkState.NEVER_DISPATCHED if chunk_id not in self._orphan_chunks else ChunkState.FAILED
        raise KeyError(chunk_id)

    def __getitem__(self, chunk_id: str) -> Chunk:
        state = self.state(chunk_id)
        attempts = self._attempts.get(chunk_id, [])
        dispatched = chunk_id in self._latest
        return Chunk(
            chunk_id=chunk_id,
            state=state,
            attempt_count=self._retries.get(chunk_id, 1) if dispatched else 0,
            dispatch=self._latest.get(chunk_id),
            completion=self._completion.get(chunk_id),
            success=self._success.get(chunk_id),
            attempts=attempts,
        )

    def __contains__(self, chunk_id: object) -> bool:
        return chunk_id in self._latest or chunk_id in self._orphan_chunks or chunk_id in self.planned

    def __iter__(self) -> Iterator[Chunk]:
        for chunk_id in self.chunk_ids():
            yield self[chunk_id]

    def __len__(self) -> int:
        return len(self.chunk_ids())

    def pending(self, states: Iterable[ChunkState | str] = PENDING_STATES) -> list[str]:
        """The chunk ids to retry (by default), in first-dispatch order."""
        wanted = {ChunkState(s) for s in states}
        state = self.state
        return [c for c in self.chunk_ids() if state(c) in wanted]

    def by_state(self, state: ChunkState | str) -> list[Chunk]:
        wanted = ChunkState(state)
        return [self[c] for c in self.chunk_ids() if self.state(c) is wanted]

    def counts(self) -> dict[ChunkState, int]:
        """How many chunks are in each state (every state present, maybe 0)."""
        out = dict.fromkeys(ChunkState, 0)
        for c in self.chunk_ids():
            out[self.state(c)] += 1
        return out


_STATE_DECODER: msgspec.json.Decoder[Any] = msgspec.json.Decoder(StateEvent)  # type: ignore[arg-type]


def read_ledger(
    *paths: str | os.PathLike[str],
    expect: Iterable[str] | str | os.PathLike[str] | None = None,
    keep_attempts: bool = True,
    session: str | None = None,
    max_issues: int = 1000,
    detail: bool = True,
    progress: Callable[[int], None] | None = None,
) -> Ledger:
    """Read journals (files, directories of ``*.jsonl``, globs) into a :class:`Ledger`.

    ``expect`` is an iterable of chunk ids, or the path of a file with one per
    line; expected chunks never dispatched are ``never_dispatched``.
    ``session`` keeps only events of that session id. ``keep_attempts=False``
    keeps only each chunk's latest attempt: memory then depends on the number
    of chunks, not of lines. ``detail=False`` (implies ``keep_attempts=False``)
    decodes only the fields that decide states, the fastest read: then
    errors, tokens, output files and times read as ``None``. Never raises on bad content (see
    ``ledger.issues``); raises :class:`~spanjournal.reader.JournalReadError`
    for a path that cannot be read.
    """
    stats = ReadStats(max_issues=max_issues)
    ledger = Ledger(stats)
    fold = _Fold(ledger, keep_attempts=keep_attempts and detail, session=session)
    kwargs: dict[str, Any] = {"progress": progress}
    if not detail:
        kwargs.update(decoder=_STATE_DECODER, line_decoder=decode_state_line)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # the fold makes many objects and no cycles
    try:
        for batch in scan(paths, stats, **kwargs):
            fold.add(batch)
    finally:
        if gc_was_enabled:
            gc.enable()
    if expect is not None:
        fold.plan(_expected_ids(expect))
    fold.finish()
    return ledger


def _expected_ids(expect: Iterable[str] | str | os.PathLike[str]) -> list[str]:
    if isinstance(expect, (str, os.PathLike)):
        text = Path(expect).read_text(encoding="utf-8-sig")
        return [line.strip() for line in text.splitlines() if line.strip()]
    return list(expect)


class _Fold:
    """Folds batches of events into a ledger's dicts, in file order."""

    def __init__(self, ledger: Ledger, *, keep_attempts: bool, session: str | None) -> None:
        self.ledger = ledger
        self.keep = keep_attempts
        self.session = session
        # Completions seen before their dispatch (journals merged out of
        # order), by span id, waiting for the dispatch to pair with.
        self.orphans: dict[str, Completed] = {}

    def add(self, events: list[Any]) -> None:
        ledger = self.ledger
        latest = ledger._latest
        completion = ledger._completion
        success = ledger._success
        retries = ledger._retries
        attempts = ledger._attempts
        keep = self.keep
        session = self.session
        for e in events:
            if session is not None and e.session_id != session:
                continue
            kind = e.kind
            cid = e.chunk_id if kind != 3 else None
            if kind == 1:
                prev = latest.get(cid)
                latest[cid] = e
                if prev is None:
                    ledger.sessions[e.session_id] = None
                else:
                    retries[cid] = retries.get(cid, 1) + 1
                    completion.pop(cid, None)
                if keep:
                    attempts.setdefault(cid, []).append(Attempt(e))
                if self.orphans and e.span_id in self.orphans:
                    self._complete_latest(cid, self.orphans.pop(e.span_id))
            elif kind == 2:
                d = latest.get(cid)
                if d is None:
                    ledger._orphan_chunks[cid] = None
                    if e.span_id:
                        self.orphans[e.span_id] = e
                    completion[cid] = e
                elif not e.span_id or d.span_id == e.span_id or not d.span_id:
                    self._complete_latest(cid, e)
                elif keep:
                    for a in attempts.get(cid, ()):
                        if a.dispatch is not None and a.dispatch.span_id == e.span_id:
                            if a.completion is None or not a.completion.success:
                                a.completion = e
                            break
                if e.success and cid not in success:
                    success[cid] = e
            elif kind == 3:
                self.plan(e.chunk_ids)

    def _complete_latest(self, cid: str, e: Completed) -> None:
        ledger = self.ledger
        old = ledger._completion.get(cid)
        if old is None or not old.success:
            ledger._completion[cid] = e
        if self.keep:
            ledger._attempts[cid][-1].completion = ledger._completion[cid]
        if e.success and cid not in ledger._success:
            ledger._success[cid] = e

    def plan(self, chunk_ids: Iterable[str]) -> None:
        planned = self.ledger.planned
        for chunk_id in chunk_ids:
            planned[chunk_id] = None

    def finish(self) -> None:
        ledger = self.ledger
        for cid in [c for c in ledger._orphan_chunks if c in ledger._latest]:
            del ledger._orphan_chunks[cid]
