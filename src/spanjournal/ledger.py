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
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import filterfalse
from operator import attrgetter
from pathlib import Path
from typing import Any

from spanjournal._parallel import read_parallel, workers_for
from spanjournal._process import is_alive
from spanjournal._schema import Completed, Dispatched
from spanjournal._statefold import NativeLatest, NotNative, fold_segments
from spanjournal.reader import ReadIssue, ReadStats, resolve_paths, scan


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
    def task_description(self) -> str | None:
        """What the chunk's latest dispatch said it was for."""
        return self.dispatch.task_description if self.dispatch is not None else None

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
    follow, then chunks only planned or expected, in plan order.

    Internally the ledger is keyed for speed: the latest dispatch per chunk,
    completions per ``span_id``, and successes per chunk. A chunk's state is
    then a lookup (done if it has a success; failed if its latest dispatch's
    span has a completion; otherwise unfinished or running), independent of
    the order in which completions and dispatches were read. :class:`Chunk`
    records are built when asked for.
    """

    def __init__(self, stats: ReadStats, *, detail: bool = True, keep_attempts: bool = True) -> None:
        self.stats = stats
        self.detail = detail
        #: Session ids seen in dispatches, in order (with ``detail`` only).
        self.sessions: dict[str, None] = {}
        self.planned: dict[str, None] = {}
        self._latest: dict[str, Any] = {}
        # detail: span -> completion; states only: the set of failed spans.
        self._completed: dict[str, Any] | set[str] = {} if detail else set()
        # detail: chunk -> its first success; states only: the set of done chunks.
        self._done: dict[str, Any] | set[str] = {} if detail else set()
        # chunk -> its last failure, for chunks that may have no dispatch.
        self._failures: dict[str, Any] = {}
        self._undispatched_ids: list[str] | None = None
        self._dispatches: Counter[str] = Counter()
        self._attempts: dict[str, list[Any]] | None = {} if keep_attempts and detail else None
        self._alive: dict[tuple[Any, Any, Any], bool] = {}
        self._synthetic = 0
        self._not_done_ids: list[str] | None = None
        self._not_done_state: dict[str, ChunkState] = {}
        self._states_of: list[str] | None = None

    @property
    def issues(self) -> list[ReadIssue]:
        """Lines skipped or repaired while reading, with file and line."""
        return self.stats.issues

    def chunk_ids(self) -> list[str]:
        """Every chunk id, in ledger order."""
        latest = self._latest
        ids = list(latest)
        ids.extend(self._undispatched())
        ids.extend(self._only_planned())
        return ids

    def _undispatched(self) -> list[str]:
        """Chunks with completions but no dispatch: failed ones first, then done ones.

        Worked out when first asked for (it looks at every done chunk), not
        during the fold; ``pending`` needs only the failed ones.
        """
        if self._undispatched_ids is None:
            latest, done = self._latest, self._done
            ids = self._undispatched_failures()
            seen = set(ids)
            orphans = (c for c in done if c not in latest and c not in seen)
            ids.extend(orphans if isinstance(done, dict) else sorted(orphans))
            self._undispatched_ids = ids
        return self._undispatched_ids

    def _undispatched_failures(self) -> list[str]:
        latest = self._latest
        return [c for c in self._failures if c not in latest]

    def _only_planned(self) -> list[str]:
        latest, done, failures = self._latest, self._done, self._failures
        return [c for c in self.planned if c not in latest and c not in done and c not in failures]

    def _not_done(self) -> list[str]:
        """Chunk ids without a success, in ledger order (kept once computed)."""
        if self._not_done_ids is None:
            done, latest = self._done, self._latest
            if isinstance(latest, NativeLatest):
                ids = list(latest.open)  # the C fold kept them apart
            else:
                ids = list(filterfalse(done.__contains__, latest))
            ids.extend(filterfalse(done.__contains__, self._undispatched_failures()))
            ids.extend(self._only_planned())
            self._not_done_ids = ids
        return self._not_done_ids

    def state(self, chunk_id: str) -> ChunkState:
        """The state of one chunk; ``KeyError`` for a chunk the ledger does not know."""
        if chunk_id in self._done:
            return ChunkState.DONE
        return self._state_not_done(chunk_id)

    def _state_not_done(self, chunk_id: str) -> ChunkState:
        """The state of a chunk known to have no success."""
        d = self._latest.get(chunk_id)
        if d is not None:
            if d.span_id in self._completed:
                return ChunkState.FAILED
            key = (d.host, d.pid, d.proc_start)
            alive = self._alive.get(key)
            if alive is None:
                alive = self._alive[key] = is_alive(*key)
            return ChunkState.RUNNING if alive else ChunkState.UNFINISHED
        if chunk_id in self._failures:
            return ChunkState.FAILED
        if chunk_id in self.planned:
            return ChunkState.NEVER_DISPATCHED
        raise KeyError(chunk_id)

    def __getitem__(self, chunk_id: str) -> Chunk:
        state = self.state(chunk_id)
        d = self._latest.get(chunk_id)
        completed = self._completed
        by_span = completed.get if isinstance(completed, dict) else _no_completion
        if d is not None:
            completion = by_span(d.span_id)
        elif chunk_id in self._latest:  # a done chunk whose dispatch the C fold did not keep
            completion = None
        else:
            completion = self._failures.get(chunk_id)
        attempts = []
        if self._attempts is not None:
            attempts = [Attempt(a, by_span(a.span_id)) for a in self._attempts.get(chunk_id, ())]
        return Chunk(
            chunk_id=chunk_id,
            state=state,
            attempt_count=self._dispatches.get(chunk_id, 0) if self.detail else int(chunk_id in self._latest),
            dispatch=d,
            completion=completion,
            success=self._done.get(chunk_id) if isinstance(self._done, dict) else None,
            attempts=attempts,
        )

    def __contains__(self, chunk_id: object) -> bool:
        return any(chunk_id in m for m in (self._latest, self._done, self._failures, self.planned))

    def __iter__(self) -> Iterator[Chunk]:
        for chunk_id in self.chunk_ids():
            yield self[chunk_id]

    def __len__(self) -> int:
        return len(self._latest) + len(self._undispatched()) + len(self._only_planned())

    def completions(self) -> Iterable[Completed]:
        """Every completion read (one per span id), for totals over all attempts.

        Needs a ledger read with ``detail=True`` (the default); a states-only
        ledger has none to give.
        """
        completed = self._completed
        return completed.values() if isinstance(completed, dict) else ()

    def pending(self, states: Iterable[ChunkState | str] = PENDING_STATES) -> list[str]:
        """The chunk ids to retry (by default), in first-dispatch order."""
        wanted = {ChunkState(s) for s in states}
        if ChunkState.DONE in wanted:
            state = self.state
            return [c for c in self.chunk_ids() if state(c) in wanted]
        return [c for c, s in self._not_done_states().items() if s in wanted]

    def by_state(self, state: ChunkState | str) -> list[Chunk]:
        return [self[c] for c in self.pending([state])]

    def counts(self) -> dict[ChunkState, int]:
        """How many chunks are in each state (every state present, maybe 0)."""
        out = dict.fromkeys(ChunkState, 0)
        out[ChunkState.DONE] = len(self._done)
        for s in self._not_done_states().values():
            out[s] += 1
        return out

    def _not_done_states(self) -> dict[str, ChunkState]:
        """The state of each chunk without a success, in ledger order (kept with ``_not_done``)."""
        ids = self._not_done()
        if self._states_of is not ids:  # worked out for another list: the ledger changed since
            self._not_done_state = {c: self._state_not_done(c) for c in ids}
            self._states_of = ids
        return self._not_done_state

    # -- the fold -------------------------------------------------------------

    def _add(self, events: list[Any]) -> None:
        """Fold one batch of events, in file order."""
        self._not_done_ids = self._undispatched_ids = None
        ds = [e for e in events if e.kind == 1]
        cs = [e for e in events if e.kind == 2]
        if len(ds) + len(cs) != len(events):
            for e in events:
                if e.kind == 3:
                    self._plan(e.chunk_ids)
        d_ids = list(map(_chunk_id, ds))
        if not (all(map(_span_id, ds)) and all(map(_span_id, cs))):  # a span id missing (None) or empty
            self._add_in_order(events)
            return
        self._latest.update(zip(d_ids, ds))
        if self.detail:
            self._dispatches.update(d_ids)
            sessions = self.sessions
            for e in ds:
                if e.session_id not in sessions:
                    sessions[e.session_id] = None
            if self._attempts is not None:
                attempts = self._attempts
                for cid, e in zip(d_ids, ds):
                    attempts.setdefault(cid, []).append(e)
        completed = self._completed
        done = self._done
        successes = filter(_success, cs)
        failures = list(filterfalse(_success, cs))
        if isinstance(completed, dict):
            assert isinstance(done, dict)
            completed.update(zip(map(_span_id, cs), cs))
            for e in successes:
                if e.chunk_id not in done:
                    done[e.chunk_id] = e
        else:
            # A success decides its chunk by chunk id alone: only failed spans are needed.
            completed.update(map(_span_id, failures))
            done.update(map(_chunk_id, successes))
        for e in failures:
            self._failures[e.chunk_id] = e

    def _add_in_order(self, events: list[Any]) -> None:
        """The same fold one event at a time, for events without span ids.

        A dispatch without ``span_id`` gets a synthetic one (``-N``, never a
        real hex id); a completion without one belongs to its chunk's latest
        dispatch at that point of the file.
        """
        for e in events:
            kind = e.kind
            if kind == 1:
                if not e.span_id:
                    self._synthetic += 1
                    e.span_id = f"-{self._synthetic}"
                self._add([e])
            elif kind == 2:
                if not e.span_id:
                    d = self._latest.get(e.chunk_id)
                    if d is not None:
                        e.span_id = d.span_id
                    else:
                        self._synthetic += 1
                        e.span_id = f"-{self._synthetic}"
                self._add([e])
            elif kind == 3:
                self._plan(e.chunk_ids)

    def _plan(self, chunk_ids: Iterable[str]) -> None:
        self._not_done_ids = self._undispatched_ids = None
        self.planned.update(dict.fromkeys(chunk_ids))


_chunk_id = attrgetter("chunk_id")
_span_id = attrgetter("span_id")
_success = attrgetter("success")


def _no_completion(span: object) -> None:
    return None


def read_ledger(
    *paths: str | os.PathLike[str],
    expect: Iterable[str] | str | os.PathLike[str] | None = None,
    keep_attempts: bool = True,
    session: str | None = None,
    max_issues: int = 1000,
    detail: bool = True,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> Ledger:
    """Read journals (files, directories of ``*.jsonl``, globs) into a :class:`Ledger`.

    ``expect`` is an iterable of chunk ids, or the path of a file with one per
    line; expected chunks never dispatched are ``never_dispatched``.
    ``session`` keeps only events of that session id. ``keep_attempts=False``
    keeps only each chunk's latest attempt: memory then depends on the number
    of chunks, not of lines. ``detail=False`` decodes only the fields that
    decide states, the fastest read (then ``attempts`` is empty and errors,
    tokens, output files and times read as ``None``, and so does the
    dispatch of a done chunk): lines are folded in C when the extension is
    built (see :mod:`spanjournal._statefold`), and a large journal is read by
    ``workers`` processes (default: one per idle core, for journals of tens
    of megabytes and more; 1 never forks). Never raises on bad
    content (see ``ledger.issues``); raises
    :class:`~spanjournal.reader.JournalReadError` for a path that cannot be
    read.
    """
    if session is not None:
        detail = True
    stats = ReadStats(max_issues=max_issues)
    ledger = Ledger(stats, detail=detail, keep_attempts=keep_attempts)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # the fold makes many objects and no cycles
    try:
        if detail:
            for batch in scan(paths, stats, progress=progress):
                if session is not None:
                    batch = [e for e in batch if e.session_id == session]
                ledger._add(batch)
        else:
            ledger = _read_states(ledger, resolve_paths(paths), workers, progress)
    finally:
        if gc_was_enabled:
            gc.enable()
    if expect is not None:
        ledger._plan(_expected_ids(expect))
    return ledger


def _read_states(
    ledger: Ledger, files: list[Path], workers: int | None, progress: Callable[[int], None] | None
) -> Ledger:
    parts = workers_for(files) if workers is None else workers
    whole = [(str(p), 0, None) for p in files]
    try:
        if parts > 1 and read_parallel(ledger, files, parts, progress):
            return ledger
        if parts > 1:  # spoiled: read again, in one process, into a new ledger
            ledger = _states_ledger(ledger.stats.max_issues)
        fold_segments(ledger, whole, progress)
    except NotNative:
        ledger = _states_ledger(ledger.stats.max_issues)
        fold_segments(ledger, whole, progress, use_native=False)
    return ledger


def _states_ledger(max_issues: int) -> Ledger:
    return Ledger(ReadStats(max_issues=max_issues), detail=False, keep_attempts=False)


def _expected_ids(expect: Iterable[str] | str | os.PathLike[str]) -> list[str]:
    if isinstance(expect, (str, os.PathLike)):
        text = Path(expect).read_text(encoding="utf-8-sig")
        return [line.strip() for line in text.splitlines() if line.strip()]
    return list(expect)
