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
The ledger is a view over :class:`~spanjournal.fold.LedgerState`, where the
rules live. With ``checkpoint=True`` each journal's folded state is saved
(:mod:`spanjournal.checkpoint`), so the next read folds only what was
appended since. :func:`follow` keeps the state in memory for a live view.
This module does not import OpenTelemetry.
"""

from __future__ import annotations

import enum
import gc
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spanjournal import checkpoint as checkpoints
from spanjournal._process import is_alive
from spanjournal._schema import Completed, Dispatched
from spanjournal.fold import (
    ChunkRecord,
    LedgerState,
    LineRef,
    NotMergeable,
    Process,
    dispatch_field,
    line_ref,
    split_ref,
)
from spanjournal.reader import (
    FileScan,
    ReadIssue,
    ReadStats,
    not_a_journal,
    open_journal,
    read_lines,
    resolve_journals,
)
from spanjournal.reader import (
    NotAJournalError as NotAJournalError,  # raised by read_ledger; importable from here as before
)


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


def output_location(output_file: str | None, cwd: str | None, root: str | None = None) -> str | None:
    """Where a chunk's output file is: the rule every command uses.

    An absolute ``output_file`` is itself; a relative one is relative to the
    working directory its dispatch recorded (``cwd``), else to ``root``
    (when given), else to the current directory.
    """
    if not output_file:
        return None
    if output_file.startswith("/"):
        return output_file
    base = cwd or root
    if not base:
        return output_file
    return base + output_file if base.endswith("/") else f"{base}/{output_file}"


def output_path(output_file: str | None, cwd: str | None, root: str | os.PathLike[str] | None = None) -> Path | None:
    """:func:`output_location` as a :class:`~pathlib.Path`."""
    where = output_location(output_file, cwd, os.fspath(root) if root is not None else None)
    return Path(where) if where is not None else None


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
    attempts: list[Attempt] = field(default_factory=list)
    #: The output file: the one the success names, else the one named by the chunk's latest event naming one.
    output_file: str | None = None
    #: The working directory of the latest dispatch (what a relative ``output_file`` is relative to).
    cwd: str | None = None
    #: Tokens over every completion of the chunk (``tokens_used``, else input + output).
    tokens_used: int = 0

    @property
    def last_error(self) -> str | None:
        c = self.completion
        return c.error if c is not None and not c.success else None

    @property
    def error_type(self) -> str | None:
        c = self.completion
        return c.error_type if c is not None and not c.success else None

    def output_path(self, root: str | os.PathLike[str] | None = None) -> Path | None:
        """Where the output file is (see :func:`output_path`), or None if the journal names none."""
        return output_path(self.output_file, self.cwd, root)

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
    def duration_ms(self) -> float | None:
        """Duration of the success, else of the latest completed attempt."""
        c = self.success or self.completion
        return c.duration_ms if c is not None else None


@dataclass
class Source:
    """A journal file a ledger was read from, and where its blocks of lines start."""

    path: str
    index: list[tuple[int, int]]


#: Chunk records fetched again from the journal at a time, when iterating.
_PAGE = 4096


class Ledger:
    """Per-chunk states folded from one or more journals: a view over a :class:`LedgerState`.

    Chunks are ordered by first dispatch; chunks seen only in a completion
    follow (failed ones first), then chunks only planned or expected, in
    plan order. The full events of chunks not done are kept; those of done
    chunks are read again from the journal when asked for.
    """

    def __init__(
        self,
        fold: LedgerState,
        stats: ReadStats,
        sources: list[Source] | None = None,
        skipped: list[str] | None = None,
    ) -> None:
        self.fold = fold
        self.stats = stats
        self.sources = sources or []
        #: Files of a directory or glob that were not journals, with why (one line each).
        self.skipped = skipped or []
        self._alive: dict[tuple[Any, Any, Any], bool] = {}
        self._not_done: dict[str, ChunkState] | None = None

    @property
    def issues(self) -> list[ReadIssue]:
        """Lines skipped or repaired while reading, with file and line."""
        return self.stats.issues

    @property
    def sessions(self) -> dict[str, None]:
        """Session ids seen in dispatches, in order."""
        return self.fold.sessions

    @property
    def planned(self) -> dict[str, None]:
        return self.fold.planned

    def chunk_ids(self) -> list[str]:
        """Every chunk id, in ledger order."""
        fold = self.fold
        ids = list(fold.chunks)
        orphans = fold.orphans
        ids.extend(c for c, r in orphans.items() if not r.done)
        ids.extend(c for c, r in orphans.items() if r.done)
        ids.extend(self._only_planned())
        return ids

    def _only_planned(self) -> list[str]:
        return self.fold.only_planned()

    def state(self, chunk_id: str) -> ChunkState:
        """The state of one chunk; ``KeyError`` for a chunk the ledger does not know."""
        rec = self.fold.record(chunk_id)
        if rec is None:
            if chunk_id in self.fold.planned:
                return ChunkState.NEVER_DISPATCHED
            raise KeyError(chunk_id)
        return self._state_of(chunk_id, rec)

    def _state_of(self, chunk_id: str, rec: ChunkRecord) -> ChunkState:
        if rec.done:
            return ChunkState.DONE
        if self.fold.is_failed(rec):
            return ChunkState.FAILED
        return self._running_or_not(self.fold.process_of(chunk_id, rec))

    def _running_or_not(self, process: Process | None) -> ChunkState:
        if process is None:
            return ChunkState.UNFINISHED  # no process known (is_alive(None, None, None) is False)
        alive = self._alive.get(process)
        if alive is None:
            alive = self._alive[process] = is_alive(*process)
        return ChunkState.RUNNING if alive else ChunkState.UNFINISHED

    def not_done_states(self) -> dict[str, ChunkState]:
        """The state of each chunk without a success, in ledger order (worked out once)."""
        if self._not_done is None:
            fold = self.fold
            failed, running_or_not = ChunkState.FAILED, self._running_or_not
            out = {c: failed if is_failed else running_or_not(process) for c, is_failed, process in fold.not_done()}
            out.update((c, ChunkState.FAILED) for c, r in fold.orphans.items() if not r.done)
            out.update((c, ChunkState.NEVER_DISPATCHED) for c in self._only_planned())
            self._not_done = out
        return self._not_done

    def __getitem__(self, chunk_id: str) -> Chunk:
        return self.chunks([chunk_id])[0]

    def chunks(self, chunk_ids: list[str]) -> list[Chunk]:
        """Chunks by id, reading the events of done chunks again from the journal in one pass."""
        fold = self.fold
        recs = fold.records(chunk_ids)
        wanted: list[LineRef] = []
        for cid, rec in zip(chunk_ids, recs):
            if rec is None:
                if cid not in fold.planned:
                    raise KeyError(cid)
            elif rec.history is None:
                if rec.dispatch is None and rec.dispatch_line:
                    wanted.append(rec.dispatch_line)
                if rec.success_line:
                    wanted.append(rec.success_line)
        lines = self._read_again(wanted)
        known = self._not_done or {}  # states worked out already (pending, counts)
        out = []
        for cid, rec in zip(chunk_ids, recs):
            if rec is None:
                out.append(Chunk(cid, ChunkState.NEVER_DISPATCHED, 0, None, None, None))
                continue
            attempts: list[Attempt] = []
            if rec.history is not None:  # every event kept
                events = rec.history
                dispatch = next((e for e in reversed(events) if e.kind == 1), None)
                success = next((e for e in events if e.kind == 2 and e.success), None)
                attempts = _pair(cid, events)
            else:  # only the latest dispatch of a chunk not done: read the others again
                dispatch = rec.dispatch
                if dispatch is None and rec.dispatch_line:
                    dispatch = _event_of(lines.get(rec.dispatch_line), cid, 1)
                success = _event_of(lines.get(rec.success_line), cid, 2) if rec.success_line else None
            completion, completion_line = fold.latest_completion(rec)
            if completion is None and completion_line:
                completion = success
            out.append(
                Chunk(  # by position, in field order (keywords cost a third more here)
                    cid,  # chunk_id
                    known.get(cid) or self._state_of(cid, rec),  # state
                    rec.attempts,  # attempt_count
                    dispatch,
                    completion,
                    success,
                    attempts,
                    rec.output_file,
                    dispatch_field(rec, "cwd"),  # cwd
                    rec.tokens,  # tokens_used
                )
            )
        return out

    def _read_again(self, refs: list[LineRef]) -> dict[LineRef, Any]:
        by_file: dict[int, list[int]] = {}
        for ref in refs:
            file_no, line = split_ref(ref)
            by_file.setdefault(file_no, []).append(line)
        out: dict[LineRef, Any] = {}
        for file_no, lines in by_file.items():
            if file_no < len(self.sources):
                source = self.sources[file_no]
                for line, event in read_lines(source.path, source.index, lines).items():
                    out[line_ref(file_no, line)] = event
        return out

    def __contains__(self, chunk_id: object) -> bool:
        if not isinstance(chunk_id, str):
            return False
        return self.fold.record(chunk_id) is not None or chunk_id in self.fold.planned

    def __iter__(self) -> Iterator[Chunk]:
        ids = self.chunk_ids()
        for start in range(0, len(ids), _PAGE):
            yield from self.chunks(ids[start : start + _PAGE])

    def __len__(self) -> int:
        return self.fold.dispatched_count() + len(self._only_planned())

    def completions(self) -> list[Completed]:
        """Every completion known (all of them with ``keep_attempts``; else each chunk's latest and success)."""
        out: list[Completed] = []
        for chunk in self:
            out.extend(chunk.completions())
        return out

    def pending(self, states: Iterable[ChunkState | str] = PENDING_STATES) -> list[str]:
        """The chunk ids to retry (by default), in first-dispatch order."""
        wanted = {ChunkState(s) for s in states}
        if ChunkState.DONE in wanted:
            state = self.state
            return [c for c in self.chunk_ids() if state(c) in wanted]
        return [c for c, s in self.not_done_states().items() if s in wanted]

    def by_state(self, state: ChunkState | str) -> list[Chunk]:
        return self.chunks(self.pending([state]))

    def counts(self) -> dict[ChunkState, int]:
        """How many chunks are in each state (every state present, maybe 0)."""
        out = dict.fromkeys(ChunkState, 0)
        not_done = self.not_done_states()
        for s in not_done.values():
            out[s] += 1
        out[ChunkState.DONE] = self.fold.done_count()
        return out


def _event_of(event: Any, chunk_id: str, kind: int) -> Any:
    """``event`` if it is the expected kind of event of ``chunk_id`` (the journal may have changed since)."""
    if event is None or event.kind != kind or event.chunk_id != chunk_id:
        return None
    return event


def _pair(chunk_id: str, events: list[Any]) -> list[Attempt]:
    """A chunk's attempts from its lines in file order: completions pair by span id, else with the latest."""
    attempts: list[Attempt] = []
    by_span: dict[str, Attempt] = {}
    early: dict[str, Completed] = {}
    for e in events:
        if e is None or e.chunk_id != chunk_id:
            continue
        if e.kind == 1:
            attempt = Attempt(e, early.pop(e.span_id, None) if e.span_id else None)
            attempts.append(attempt)
            if e.span_id:
                by_span[e.span_id] = attempt
        elif e.kind == 2:
            target = by_span.get(e.span_id) if e.span_id else (attempts[-1] if attempts else None)
            if target is not None:
                target.completion = e
            elif e.span_id:
                early[e.span_id] = e
    return attempts


# -- reading ------------------------------------------------------------------


@dataclass
class FileFold:
    """One journal file folded: its state and statistics up to ``offset``, and its unterminated last event."""

    path: Path
    explicit: bool
    state: LedgerState
    stats: ReadStats
    offset: int
    lines: int
    index: list[tuple[int, int]]
    identity: tuple[int, int] | None
    size: int
    tail: Any = None
    tail_stats: ReadStats | None = None
    #: The hash of the bytes before ``offset`` (see :func:`spanjournal.checkpoint.digest`), when kept.
    digest: bytes | None = None

    def is_journal(self) -> bool:
        """Whether some line is a journal event, or the file has no complete line (:meth:`ReadStats.holds_journal`)."""
        return (self.tail_stats or self.stats).holds_journal()


def fold_file(
    path: Path,
    *,
    explicit: bool = True,
    keep_attempts: bool = False,
    session: str | None = None,
    checkpoint: bool = False,
    max_issues: int = 1000,
    progress: Callable[[int], None] | None = None,
    previous: FileFold | None = None,
    jobs: int = 1,
) -> FileFold:
    """Fold one journal file, from a valid checkpoint (or ``previous``, kept in memory) when there is one.

    With ``jobs > 1`` and neither, the file is read in ``jobs`` processes
    (:mod:`spanjournal._jobs`), or in this one if that fails.
    """
    f = open_journal(path)
    try:
        st = os.fstat(f.fileno())
        restored: checkpoints.Restored | None = None
        if previous is not None and previous.identity == (st.st_dev, st.st_ino) and st.st_size >= previous.offset:
            try:
                same = checkpoints.digest(f.fileno(), previous.offset) == previous.digest
            except OSError:
                same = False
            if same:
                restored = checkpoints.Restored(
                    previous.state, previous.stats, previous.offset, previous.lines, previous.index
                )
        elif checkpoint and not keep_attempts and session is None:
            restored = checkpoints.load(path, f.fileno(), max_issues=max_issues)
    except BaseException:
        f.close()
        raise
    if restored is not None:
        state, stats, offset, lines, index = (
            restored.state,
            restored.stats,
            restored.offset,
            restored.lines,
            list(restored.index),
        )
        stats.files = [str(path)]
        stats.issues = [ReadIssue(str(path), i.line, i.message) for i in stats.issues]
    else:
        state = LedgerState(keep_attempts=keep_attempts, session=session)
        stats = ReadStats(files=[str(path)], max_issues=max_issues)
        offset = lines = 0
        index = []
    start = offset
    parts = None
    if jobs > 1 and restored is None and not keep_attempts:
        from spanjournal import _jobs  # only a read that asks for processes forks

        parts = _jobs.fold_in_parts(path, jobs, session=session, max_issues=max_issues)
    if parts is not None:
        f.close()
        if progress is not None:
            progress(parts.stats.bytes)
        state, stats, complete = parts.state, parts.stats, parts.complete_stats
        index = parts.index
        end: tuple[int, int, tuple[int, int] | None, int, Any] = (
            parts.offset,
            parts.lines,
            parts.identity,
            parts.size,
            parts.tail,
        )
    else:
        scan = FileScan(path, stats, offset=offset, lines=lines, file=f)
        apply_batch = state.apply_batch
        for events, numbers in scan.batches(progress):
            apply_batch(events, numbers)
        index.extend(scan.index)
        complete = scan.complete_stats
        end = (scan.offset, scan.lines, scan.identity, scan.size, scan.tail)
    end_offset, end_lines, identity, size, tail = end
    # A file whose lines hold no journal event gets no checkpoint: it is refused or skipped as not
    # a journal, and a mistyped path must not leave a file beside whatever it names.
    use_checkpoints = checkpoint and not keep_attempts and session is None and complete.events > complete.unknown_events
    if use_checkpoints and checkpoints.worth_saving(restored is not None, start, end_offset):
        checkpoints.save(path, identity, state, complete, end_offset, end_lines, index)
    folded = FileFold(
        path=path,
        explicit=explicit,
        state=state,
        stats=complete,
        offset=end_offset,
        lines=end_lines,
        index=index,
        identity=identity,
        size=size,
        tail=tail,
        tail_stats=stats if stats is not complete else None,
    )
    return folded


def _combine(
    folds: list[FileFold], *, keep_attempts: bool, session: str | None, max_issues: int, reuse: bool
) -> Ledger:
    """One ledger of the files' folds, in file order; files that are not journals are skipped or refused."""
    skipped: list[str] = []
    kept: list[FileFold] = []
    for ff in folds:
        if ff.is_journal():
            kept.append(ff)
        else:
            skipped.append(not_a_journal(ff.path, ff.explicit))
    stats = ReadStats(max_issues=max_issues)
    sources = []
    for ff in kept:
        stats.add(ff.tail_stats or ff.stats)
        sources.append(Source(str(ff.path), ff.index))
    if reuse and len(kept) == 1 and kept[0].tail is None:
        return Ledger(kept[0].state, stats, sources, skipped)
    state = LedgerState(keep_attempts=keep_attempts, session=session)
    try:
        for file_no, ff in enumerate(kept):
            if reuse or file_no:
                state.merge(ff.state, file_offset=file_no)
            else:
                state = ff.state
            if ff.tail is not None:
                state.apply_batch([ff.tail], [line_ref(file_no, ff.lines + 1)])
    except NotMergeable:
        state = _fold_in_one(kept, keep_attempts=keep_attempts, session=session)
    return Ledger(state, stats, sources, skipped)


def _fold_in_one(folds: list[FileFold], *, keep_attempts: bool, session: str | None) -> LedgerState:
    """All files folded into one state, line by line (completions without span ids pair across files)."""
    state = LedgerState(keep_attempts=keep_attempts, session=session)
    for file_no, ff in enumerate(folds):
        scan = FileScan(ff.path, ReadStats(max_issues=0))
        base = file_no << 40
        for events, numbers in scan.batches():
            state.apply_batch(events, [base + n for n in numbers])
        if scan.tail is not None:
            state.apply_batch([scan.tail], [base + scan.lines + 1])
    return state


def read_ledger(
    *paths: str | os.PathLike[str],
    expect: Iterable[str] | str | os.PathLike[str] | None = None,
    keep_attempts: bool = True,
    session: str | None = None,
    max_issues: int = 1000,
    detail: bool | None = None,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
    checkpoint: bool = False,
    jobs: int = 1,
) -> Ledger:
    """Read journals (files, directories of ``*.jsonl``, globs) into a :class:`Ledger`.

    ``expect`` is an iterable of chunk ids, or the path of a file with one per
    line; expected chunks never dispatched are ``never_dispatched``.
    ``session`` keeps only events of that session id. ``keep_attempts=False``
    keeps only each chunk's latest attempt (``Chunk.attempts`` is empty):
    memory then depends on the number of chunks, not of lines.
    ``checkpoint=True`` saves each journal's folded state
    (:mod:`spanjournal.checkpoint`, only with ``keep_attempts=False`` and no
    ``session``) and starts from a valid saved one, so a later read folds
    only what was appended; ``SPANJOURNAL_NO_CHECKPOINT=1`` turns it off.
    ``jobs=N`` (N > 1) reads each journal that has no valid checkpoint in N
    processes (forked; see :mod:`spanjournal._jobs`), with the same answers
    and warnings as a read in one, and only with ``keep_attempts=False``;
    the default, 1, never forks. ``detail`` and ``workers`` are deprecated
    and ignored: every read is the same fold.

    A file named in ``paths`` in which no line is a journal event (and that
    is not empty) raises :class:`NotAJournalError`; such a file found in a
    directory or by a glob is skipped and named in ``ledger.skipped``. Never
    raises on bad content (see ``ledger.issues``); raises
    :class:`~spanjournal.reader.JournalReadError` for a path that cannot be
    read.
    """
    if detail is not None or workers is not None:
        warnings.warn(
            "read_ledger(detail=..., workers=...) is deprecated and ignored: every read is the same fold",
            DeprecationWarning,
            stacklevel=2,
        )
    checkpoint = checkpoint and checkpoints.enabled()
    folds = []
    done_bytes = 0
    gc_was_enabled = gc.isenabled()
    gc.disable()  # the fold makes many objects and no cycles
    try:
        for path, explicit in resolve_journals(paths):
            report = None
            if progress is not None:
                base = done_bytes

                def report(n: int, base: int = base) -> None:
                    assert progress is not None
                    progress(base + n)

            ff = fold_file(
                path,
                explicit=explicit,
                keep_attempts=keep_attempts,
                session=session,
                checkpoint=checkpoint,
                max_issues=max_issues,
                progress=report,
                jobs=jobs,
            )
            done_bytes += ff.stats.bytes
            folds.append(ff)
        ledger = _combine(folds, keep_attempts=keep_attempts, session=session, max_issues=max_issues, reuse=False)
    finally:
        if gc_was_enabled:
            gc.enable()
    if expect is not None:
        ledger.fold.plan(_expected_ids(expect))
    return ledger


class Follower:
    """Keeps a ledger of journals up to date in memory: each :meth:`poll` folds only what was appended.

    A journal that was truncated or replaced since the last poll is read
    again from its start; a path that does not exist yet is empty until it
    appears. Made by :func:`follow`.
    """

    def __init__(
        self,
        paths: tuple[str | os.PathLike[str], ...],
        *,
        expect: Iterable[str] | str | os.PathLike[str] | None = None,
        keep_attempts: bool = False,
        session: str | None = None,
        max_issues: int = 1000,
    ) -> None:
        self.paths = paths
        self.expect = expect
        self.keep_attempts = keep_attempts
        self.session = session
        self.max_issues = max_issues
        self._folds: dict[Path, FileFold] = {}

    def poll(self) -> Ledger:
        """The ledger of everything in the journals now."""
        existing = [p for p in self.paths if os.path.lexists(p)]
        folds = []
        for path, explicit in resolve_journals(existing) if existing else []:
            previous = self._folds.get(path)
            ff = fold_file(
                path,
                explicit=explicit,
                keep_attempts=self.keep_attempts,
                session=self.session,
                max_issues=self.max_issues,
                previous=previous,
            )
            ff.digest = checkpoints.digest_of_path(path, ff.offset, ff.identity)
            self._folds[path] = ff
            folds.append(ff)
        ledger = _combine(
            folds, keep_attempts=self.keep_attempts, session=self.session, max_issues=self.max_issues, reuse=True
        )
        if self.expect is not None:
            ledger.fold.plan(_expected_ids(self.expect))  # the same ids each time: planning again changes nothing
        return ledger


def follow(*paths: str | os.PathLike[str], **read_ledger_kwargs: Any) -> Follower:
    """Follow journals for a live view: ``follow(path).poll()`` is the up-to-date :class:`Ledger`.

    Takes the arguments of :func:`read_ledger` (``expect``, ``keep_attempts``
    (default False here), ``session``, ``max_issues``). Each ``poll()`` reads
    only the bytes appended since the previous one.

    >>> live = follow("runs/bench.jsonl")     # doctest: +SKIP
    >>> live.poll().counts()                  # doctest: +SKIP
    """
    options = {k: v for k, v in read_ledger_kwargs.items() if k in ("expect", "keep_attempts", "session", "max_issues")}
    unknown = set(read_ledger_kwargs) - set(options) - {"checkpoint", "detail", "workers", "progress"}
    if unknown:
        raise TypeError(f"follow() got unexpected arguments: {', '.join(sorted(unknown))}")
    return Follower(paths, **options)


def _expected_ids(expect: Iterable[str] | str | os.PathLike[str]) -> list[str]:
    if isinstance(expect, (str, os.PathLike)):
        text = Path(expect).read_text(encoding="utf-8-sig")
        return [line.strip() for line in text.splitlines() if line.strip()]
    return list(expect)
