"""The fold: a journal's events folded into one record per chunk.

:class:`LedgerState` is the one place where the rules that turn events into
answers are written: which attempt is a chunk's latest, when a chunk is done
or failed, which output file it has, how many tokens it spent. It has one way
to take an event (:meth:`LedgerState.apply`) and one way to take another
state read from a later part of the journals (:meth:`LedgerState.merge`).
Every command asks the same state: :class:`~spanjournal.ledger.Ledger` is a
view over it, ``stats`` reads the aggregates it keeps up to date, and a
checkpoint (:mod:`spanjournal.checkpoint`) is this state saved, so that a
later read folds only what was appended since.

Memory follows the number of chunks, not of lines: a chunk keeps a small
:class:`ChunkRecord`; the full dispatch is kept only while the chunk is not
done, and every event is known by its line (a :data:`LineRef`), from which
the ledger reads it back when asked.

The rules (in file order, over all journals given):

- a dispatch is a new attempt of its chunk and becomes its latest;
- a completion pairs with its dispatch by ``span_id``; one without a span id
  belongs to its chunk's latest dispatch at that point of the file;
- a chunk is done once any attempt completed with ``success: true``; it is
  failed when its latest attempt completed with ``success: false``;
- a chunk's output file is the one its success names, else the one named by
  its latest event that names one; a relative one is relative to the working
  directory (``cwd``) of the chunk's latest dispatch;
- a completion's tokens are ``tokens_used``, else ``input_tokens + output_tokens``.

This module does not import OpenTelemetry.
"""

from __future__ import annotations

import array
import bisect
import itertools
import operator
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgspec

from spanjournal._schema import Completed, Dispatched, RunPlanned

#: A line of a journal: ``file number << LINE_BITS | line number`` (line numbers count from 1; 0: none).
LineRef = int
LINE_BITS = 40

_DONE = operator.attrgetter("done")

#: What ``failures_by_error_type`` counts a failure without ``error_type`` as.
NO_ERROR_TYPE = "(none)"


#: The process of a dispatch: ``(host, pid, proc_start)``, what tells a running chunk from an unfinished one.
Process = tuple[str | None, int | None, int | None]


def line_ref(file_no: int, line: int) -> LineRef:
    return file_no << LINE_BITS | line


def split_ref(ref: LineRef) -> tuple[int, int]:
    """``(file number, line number)`` of a :data:`LineRef`."""
    return ref >> LINE_BITS, ref & ((1 << LINE_BITS) - 1)


def tokens_of(c: Completed) -> int:
    """The tokens a completion spent: ``tokens_used``, else input + output."""
    if c.tokens_used is not None:
        return c.tokens_used
    return (c.input_tokens or 0) + (c.output_tokens or 0)


class ChunkRecord(msgspec.Struct, array_like=True, gc=False):
    """What the fold keeps of one chunk."""

    #: Dispatches of the chunk (attempts).
    attempts: int = 0
    #: The latest dispatch's span id (a synthetic one, starting with ``-``, if it had none).
    span: str | None = None
    dispatch_line: LineRef = 0
    #: Some attempt completed with ``success: true``; the first such completion.
    done: bool = False
    success_span: str | None = None
    success_line: LineRef = 0
    #: The latest failure's span id (for a chunk never dispatched: its latest attempt).
    failure_span: str | None = None
    #: Tokens over every completion of the chunk.
    tokens: int = 0
    output_file: str | None = None
    output_from_success: bool = False
    #: The latest dispatch itself, kept while the chunk is not done (its process tells running
    #: from unfinished); once done, only the fields below are kept of it.
    dispatch: Dispatched | None = None
    #: The latest dispatch's ``batch``, ``agent`` and working directory (``cwd``: what a
    #: relative output file is relative to), once the chunk is done; see :func:`dispatch_field`.
    batch: str | None = None
    agent: str | None = None
    cwd: str | None = None
    #: Every dispatch and completion of the chunk, in file order (only with ``keep_attempts``).
    history: list[Any] | None = None


def _keep_dispatch_fields(rec: ChunkRecord, d: Dispatched, recent: list[str | None]) -> None:
    """Keep what is asked of a done chunk's latest dispatch without keeping the dispatch.

    A value equal to the one the previous done chunk kept (``recent``: batch,
    agent, cwd) is taken from it: the chunks of a batch then hold one string,
    not one each (a quarter less memory for a large journal, for a string
    comparison).
    """
    if d.batch != recent[0]:
        recent[0] = d.batch
    if d.agent != recent[1]:
        recent[1] = d.agent
    rec.batch = recent[0]
    rec.agent = recent[1]
    if not rec.output_from_success:
        if d.cwd != recent[2]:
            recent[2] = d.cwd
        rec.cwd = recent[2]


def dispatch_field(rec: ChunkRecord, name: str) -> str | None:
    """``batch``, ``agent`` or ``cwd`` of a chunk's latest dispatch."""
    d = rec.dispatch
    return getattr(d if d is not None else rec, name)  # type: ignore[no-any-return]


class FoldFields(msgspec.Struct, array_like=True):
    """A :class:`LedgerState` besides its dispatched chunks, as a checkpoint saves it and a reader process sends it."""

    orphans: dict[str, ChunkRecord]
    planned: list[str]
    sessions: list[str]
    failed: dict[str, Completed]
    durations: bytes
    error_types: dict[str, int]
    spanless_orphans: list[str]
    synthetic: int
    token: str


class NotMergeable(Exception):
    """A later part holds a completion without span id whose dispatch is in an earlier part."""


class LedgerState:
    """The journals folded so far.

    ``keep_attempts`` keeps every event of every attempt (for
    ``Chunk.attempts``), not only the latest; ``session`` folds only the
    events of that session id.
    """

    def __init__(self, *, keep_attempts: bool = False, session: str | None = None) -> None:
        self.keep_attempts = keep_attempts
        self.session = session
        #: Dispatched chunks, in first-dispatch order (done ones may still be in ``_lazy``: see :attr:`chunks`).
        self._chunks: dict[str, ChunkRecord] = {}
        self._lazy: LazyDone | None = None
        #: The dispatches and failures of chunks not done, when a checkpoint left them encoded (see :class:`LazyOpen`).
        self._open: LazyOpen | None = None
        #: Chunks seen only in completions (so far), in order of first completion.
        self.orphans: dict[str, ChunkRecord] = {}
        self.planned: dict[str, None] = {}
        #: Session ids of dispatches, in order.
        self.sessions: dict[str, None] = {}
        #: span id -> its failed completion.
        self.failed: dict[str, Completed] = {}
        #: Durations (ms) of completions that ran here (not reconciled ones).
        self.durations: array.array[float] = array.array("d")
        #: Failed completions by ``error_type``.
        self.error_types: dict[str, int] = {}
        #: Chunks with a completion without span id that had no dispatch before it.
        self.spanless_orphans: set[str] = set()
        self._synthetic = 0
        self._token = os.urandom(4).hex()
        #: The batch, agent and cwd the latest done chunk kept (see :func:`_keep_dispatch_fields`).
        self._recent: list[str | None] = [None, None, None]

    # -- folding ------------------------------------------------------------

    def apply(self, event: Any, line: LineRef = 0) -> None:
        """Fold one event (a schema struct), read at ``line``."""
        self.apply_batch((event,), (line,))

    def apply_batch(self, events: Iterable[Any], lines: Iterable[LineRef]) -> None:
        """Fold events in file order, each with its line.

        The rules of the module docstring, written once (one loop, for speed).
        """
        chunks, orphans, failed, sessions = self._chunks, self.orphans, self.failed, self.sessions
        durations, error_types, session = self.durations, self.error_types, self.session
        keep = self.keep_attempts
        add_duration = durations.append
        recent = self._recent
        lazy_open = self._open
        for e, line in zip(events, lines):
            if session is not None and e.session_id != session:
                continue
            cls = type(e)  # (cheaper than the structs' ``kind``)
            if cls is Dispatched:  # a dispatch: a new attempt, the chunk's latest
                cid = e.chunk_id
                rec = chunks.get(cid)
                if rec is None and self._lazy is not None and self._lazy.may_hold(cid):
                    chunks = self.chunks  # a chunk done before the checkpoint: load them all
                    rec = chunks.get(cid)
                if rec is None:
                    rec = orphans.pop(cid, None) if orphans else None
                    if rec is None and not keep and e.span_id:  # the common case: a chunk's first dispatch
                        chunks[cid] = ChunkRecord(
                            attempts=1, span=e.span_id, dispatch_line=line, output_file=e.output_file, dispatch=e
                        )
                        if e.session_id not in sessions:
                            sessions[e.session_id] = None
                        continue
                    if rec is None:
                        rec = ChunkRecord(history=[] if keep else None)
                    chunks[cid] = rec
                elif lazy_open is not None and cid in lazy_open.processes:  # a record restored without its dispatch
                    self._load_open()
                    lazy_open = None
                span = e.span_id or self._synthetic_span()
                rec.attempts += 1
                rec.span = span
                rec.dispatch_line = line
                if e.output_file and not rec.output_from_success:
                    rec.output_file = e.output_file
                if rec.done:
                    _keep_dispatch_fields(rec, e, recent)
                else:
                    rec.dispatch = e
                if keep:
                    rec.history.append(e)  # type: ignore[union-attr]
                if e.session_id not in sessions:
                    sessions[e.session_id] = None
            elif cls is Completed:  # a completion: of its span's attempt, else of the chunk's latest
                cid = e.chunk_id
                rec = chunks.get(cid)
                if rec is None and self._lazy is not None and self._lazy.may_hold(cid):
                    chunks = self.chunks
                    rec = chunks.get(cid)
                if rec is None:
                    rec = orphans.get(cid)
                    if rec is None:
                        rec = orphans[cid] = ChunkRecord(history=[] if keep else None)
                elif lazy_open is not None and cid in lazy_open.processes:
                    self._load_open()
                    lazy_open = None
                span = e.span_id
                if not span:
                    if rec.span is not None:
                        span = rec.span
                    else:
                        span = self._synthetic_span()
                        self.spanless_orphans.add(cid)
                tokens = e.tokens_used
                rec.tokens += tokens if tokens is not None else (e.input_tokens or 0) + (e.output_tokens or 0)
                if e.duration_ms is not None and not e.reconciled:
                    add_duration(e.duration_ms)
                if keep:
                    rec.history.append(e)  # type: ignore[union-attr]
                if e.success:
                    if not rec.done:
                        rec.done = True
                        # the common case, the latest attempt's success: one string for both spans
                        rec.success_span = rec.span if span == rec.span else span
                        rec.success_line = line
                        d = rec.dispatch
                        if d is not None:
                            _keep_dispatch_fields(rec, d, recent)
                            rec.dispatch = None
                        if e.output_file:
                            rec.output_file = e.output_file
                            rec.output_from_success = True
                else:
                    failed[span] = e
                    rec.failure_span = span
                    error_type = e.error_type or NO_ERROR_TYPE
                    error_types[error_type] = error_types.get(error_type, 0) + 1
                    if e.output_file and not rec.output_from_success:
                        rec.output_file = e.output_file
            elif cls is RunPlanned:
                self.plan(e.chunk_ids)

    def plan(self, chunk_ids: Iterable[str]) -> None:
        """Chunks a run intends to dispatch (``run_planned``, ``expect``)."""
        self.planned.update(dict.fromkeys(chunk_ids))

    def fields(self, failed: dict[str, Completed] | None = None) -> FoldFields:
        """Everything but the dispatched chunks, to save or send; ``failed`` replaces :attr:`failed` if given."""
        self._load_open()
        return FoldFields(
            orphans=self.orphans,
            planned=list(self.planned),
            sessions=list(self.sessions),
            failed=self.failed if failed is None else failed,
            durations=self.durations.tobytes(),
            error_types=self.error_types,
            spanless_orphans=sorted(self.spanless_orphans),
            synthetic=self._synthetic,
            token=self._token,
        )

    def restore_fields(self, fields: FoldFields) -> None:
        """Take back what :meth:`fields` gave (the chunks come through :meth:`restore_chunks`)."""
        self.orphans = fields.orphans
        self.planned = dict.fromkeys(fields.planned)
        self.sessions = dict.fromkeys(fields.sessions)
        self.failed = fields.failed
        self.durations = array.array("d")
        self.durations.frombytes(fields.durations)
        self.error_types = fields.error_types
        self.spanless_orphans = set(fields.spanless_orphans)
        self._synthetic, self._token = fields.synthetic, fields.token

    def _synthetic_span(self) -> str:
        self._synthetic += 1
        return f"-{self._token}-{self._synthetic}"

    # -- merging ------------------------------------------------------------

    def merge(self, other: LedgerState, *, file_offset: int = 0, line_offset: int = 0, take: bool = False) -> None:
        """Fold ``other``, the state of what comes after this one in file order, into this one.

        ``other`` is left as it was (its records are copied), unless ``take``:
        then its records become this state's, and ``other`` is not to be used
        again. Its line references move up by ``file_offset`` files and
        ``line_offset`` lines (``other`` folded a later part of the same file,
        numbering its lines from 1). Raises
        :class:`NotMergeable` when ``other`` holds a completion without span
        id that would have paired with a dispatch of this state.
        """
        other._load_open()
        if other.spanless_orphans and any(c in self.chunks for c in other.spanless_orphans):
            raise NotMergeable(", ".join(sorted(other.spanless_orphans)))
        shift = (file_offset << LINE_BITS) + line_offset
        _moved = _shifted if take else _copied
        chunks, orphans = self.chunks, self.orphans
        for cid, theirs in other.chunks.items():
            ours = chunks.get(cid)
            if ours is None:
                ours = orphans.pop(cid, None)
                if ours is None:
                    chunks[cid] = _moved(theirs, shift)
                    continue
                chunks[cid] = ours
            _combine(ours, theirs, shift, self._recent)
        for cid, theirs in other.orphans.items():
            ours = chunks.get(cid) or orphans.get(cid)
            if ours is None:
                orphans[cid] = _moved(theirs, shift)
            else:
                _combine(ours, theirs, shift, self._recent)
        self.planned.update(other.planned)
        self.sessions.update(other.sessions)
        self.failed.update(other.failed)
        self.durations.extend(other.durations)
        for k, n in other.error_types.items():
            self.error_types[k] = self.error_types.get(k, 0) + n
        self.spanless_orphans |= other.spanless_orphans - self.chunks.keys()

    # -- answers ------------------------------------------------------------

    @property
    def chunks(self) -> dict[str, ChunkRecord]:
        """Dispatched chunks, in first-dispatch order (loads done ones a checkpoint left unread)."""
        self._load_open()
        lazy = self._lazy
        if lazy is not None:
            self._lazy = None
            self._chunks, older_failures = lazy.load(self._chunks)
            failed = self.failed  # updated in place: a fold under way holds it
            for span, completion in older_failures.items():
                failed.setdefault(span, completion)
        return self._chunks

    def restore_chunks(
        self, open_chunks: dict[str, ChunkRecord], done: LazyDone | None, open_details: LazyOpen | None = None
    ) -> None:
        """Chunks from a checkpoint: those not done (their dispatches and failures maybe still encoded,
        in ``open_details``), and the done ones still encoded until a question needs them."""
        self._chunks = open_chunks
        self._lazy = done
        self._open = open_details

    def _load_open(self) -> None:
        """Decode the dispatches and failures of the chunks not done that a checkpoint left encoded."""
        lazy = self._open
        if lazy is None:
            return
        self._open = None
        details = lazy.read()
        # The records are as restored: a fold that touches one loads these first.
        for rec, dispatch in zip(lazy.records, details.dispatches):
            rec.dispatch = dispatch
        failed = self.failed  # updated in place (a fold under way holds it), the older failures first
        newer = dict(failed)
        failed.clear()
        failed.update(details.failed)
        failed.update(newer)

    def only_planned(self) -> list[str]:
        """Chunks planned (or expected) and never dispatched nor completed, in plan order."""
        chunks, orphans, lazy = self._chunks, self.orphans, self._lazy
        if lazy is None:
            return [c for c in self.planned if c not in chunks and c not in orphans]
        out = [c for c in lazy.only_planned if c not in chunks and c not in orphans]
        for c in itertools.islice(self.planned, lazy.planned_count, None):  # planned since the checkpoint
            if c in chunks or c in orphans:
                continue
            if lazy.may_hold(c):
                _ = self.chunks
                return self.only_planned()
            out.append(c)
        return out

    def done_summary(self) -> DoneSummary | None:
        """The totals of the done chunks a checkpoint left unread (None when every chunk is loaded).

        With it, :meth:`loaded` gives the other chunks.
        """
        return self._lazy.read_summary() if self._lazy is not None else None

    def loaded(self) -> Iterator[tuple[str, ChunkRecord]]:
        """Every chunk record loaded (all of them, but those :meth:`done_summary` covers)."""
        self._load_open()
        yield from self._chunks.items()
        yield from self.orphans.items()

    def not_done(self) -> list[tuple[str, bool, Process | None]]:
        """Dispatched chunks without a success, in order: each id, whether its latest attempt failed, and
        the process of its latest dispatch (:meth:`process_of`). Reads no done chunk, and no dispatch."""
        is_failed, process_of = self.is_failed, self.process_of
        return [(c, is_failed(r), process_of(c, r)) for c, r in self._chunks.items() if not r.done]

    def done_count(self) -> int:
        """Chunks with a success."""
        lazy = self._lazy.count if self._lazy is not None else 0
        done: int = sum(map(_DONE, self._chunks.values())) + sum(map(_DONE, self.orphans.values()))
        return lazy + done

    def has_chunks(self) -> bool:
        return bool(self._chunks or self.orphans or (self._lazy is not None and self._lazy.count))

    def record(self, chunk_id: str) -> ChunkRecord | None:
        return self.records([chunk_id])[0]

    def records(self, chunk_ids: list[str]) -> list[ChunkRecord | None]:
        """The record of each of ``chunk_ids`` (None: not dispatched nor completed), dispatches loaded."""
        lazy_open = self._open
        if lazy_open is not None and not lazy_open.processes.keys().isdisjoint(chunk_ids):
            self._load_open()
        chunks, orphans = self._chunks, self.orphans
        out = []
        for cid in chunk_ids:
            rec = chunks.get(cid) or orphans.get(cid)
            if rec is None and self._lazy is not None and self._lazy.may_hold(cid):
                rec = self.chunks.get(cid)
                chunks = self._chunks
            out.append(rec)
        return out

    def is_failed(self, rec: ChunkRecord) -> bool:
        """Not done, and the latest attempt failed (or, never dispatched, some attempt did)."""
        if rec.done:
            return False
        if rec.attempts:
            return rec.span in self.failed or (self._open is not None and rec.span in self._open.failed_spans)
        return rec.failure_span is not None

    def process_of(self, chunk_id: str, rec: ChunkRecord) -> Process | None:
        """``(host, pid, proc_start)`` of the latest dispatch of a chunk not done (None: none known)."""
        d = rec.dispatch
        if d is not None:
            return (d.host, d.pid, d.proc_start)
        return self._open.processes.get(chunk_id) if self._open is not None and not rec.done else None

    def latest_completion(self, rec: ChunkRecord) -> tuple[Completed | None, LineRef]:
        """The completion of the chunk's latest attempt: the failure itself, or the success's line."""
        span = rec.span if rec.attempts else (rec.failure_span if not rec.done else rec.success_span)
        if span is None:
            return None, 0
        if rec.done and span == rec.success_span:
            return None, rec.success_line
        self._load_open()
        return self.failed.get(span), 0

    def dispatched_count(self) -> int:
        """Chunks dispatched at least once or completed (all but the only planned ones)."""
        return len(self._chunks) + len(self.orphans) + (self._lazy.count if self._lazy is not None else 0)


def chunk_hash(chunk_id: str) -> int:
    """A stable 32-bit hash of a chunk id (to tell, without loading them, which chunks may be done)."""
    return zlib.crc32(chunk_id.encode("utf-8", "surrogatepass"))


def chunk_hashes(chunk_ids: Iterable[str]) -> array.array[int]:
    """The sorted :func:`chunk_hash` of each of ``chunk_ids``, as ``array('I')``."""
    crc32 = zlib.crc32
    return array.array("I", sorted([crc32(c.encode("utf-8", "surrogatepass")) for c in chunk_ids]))


#: The dispatch fields whose groups a checkpoint keeps totals of for done chunks (``stats --group-by``).
SUMMARY_FIELDS = ("batch", "agent")
_SUMMARY_VALUES = operator.attrgetter(*SUMMARY_FIELDS)


class DoneSummary(msgspec.Struct, array_like=True, gc=False):
    """What ``stats`` asks of done chunks, so that a checkpoint answers it without loading them."""

    #: field -> its value ("" when absent) -> [chunks, tokens, attempts, dispatched chunks, retried chunks]
    by_field: dict[str, dict[str, list[int]]]
    #: The output files of done chunks, by (cwd or "", the file's path up to its last "/" included):
    #: their names (after that "/") and chunk ids.
    outputs: list[tuple[str, str, list[str], list[str]]]


#: Output files by (cwd or "", the file's path up to its last "/" included): their names and chunk ids.
OutputsByDirectory = dict[tuple[str, str], tuple[list[str], list[str]]]


def add_outputs(outputs: OutputsByDirectory, files: Iterable[tuple[str | None, str, str]]) -> None:
    """Each ``(cwd, output_file, chunk_id)`` of ``files``: the output file of that chunk (dispatched in
    ``cwd``), under its directory in ``outputs``.

    The one grouping of output files that a checkpoint saves (:class:`DoneSummary`) and
    ``stats`` adds to, so that a directory is looked up once, whichever of the two saw the file.
    Files of one directory tend to come one after another: the last directory is kept at hand.
    """
    last_cwd: str | None = None
    last_head: str | None = None  # none yet: every head is a str
    last_sep = ""
    names: list[str] = []
    chunk_ids: list[str] = []
    for cwd, output_file, chunk_id in files:
        head, sep, name = output_file.rpartition("/")
        if head != last_head or sep != last_sep or cwd != last_cwd:
            key = (cwd or "", head + sep)
            held = outputs.get(key)
            if held is None:
                held = outputs[key] = ([], [])
            names, chunk_ids = held
            last_cwd, last_head, last_sep = cwd, head, sep
        names.append(name)
        chunk_ids.append(chunk_id)


def summarize_done(records: Iterable[tuple[str, ChunkRecord]]) -> DoneSummary:
    """The :class:`DoneSummary` of done chunks' records (a checkpoint saves it beside them).

    One pass: totals by the combination of :data:`SUMMARY_FIELDS` values
    (few), summed per field at the end.
    """
    by_values: dict[tuple[str | None, ...], list[int]] = {}
    files: list[tuple[str | None, str, str]] = []
    values_of = _SUMMARY_VALUES
    for cid, rec in records:
        d = rec.dispatch  # None for a done chunk: its dispatch fields are on the record (dispatch_field)
        source = rec if d is None else d
        key = values_of(source)
        totals = by_values.get(key)
        if totals is None:
            totals = by_values[key] = [0, 0, 0, 0, 0]
        attempts = rec.attempts
        totals[0] += 1
        totals[1] += rec.tokens
        totals[2] += attempts
        if attempts:
            totals[3] += 1
            if attempts > 1:
                totals[4] += 1
        output_file = rec.output_file
        if output_file:
            files.append((source.cwd, output_file, cid))
    outputs: OutputsByDirectory = {}
    add_outputs(outputs, files)
    by_field: dict[str, dict[str, list[int]]] = {f: {} for f in SUMMARY_FIELDS}
    for values, totals in by_values.items():
        for f, value in zip(SUMMARY_FIELDS, values):
            groups = by_field[f]
            group = groups.get(value or "")
            if group is None:
                groups[value or ""] = list(totals)
            else:
                for i, n in enumerate(totals):
                    group[i] += n
    return DoneSummary(by_field, [(cwd, prefix, names, ids) for (cwd, prefix), (names, ids) in outputs.items()])


class OpenDetails(msgspec.Struct, array_like=True, gc=False):
    """What a checkpoint keeps apart of its chunks not done: their latest dispatches, in order, and their failures."""

    dispatches: list[Dispatched | None]
    failed: dict[str, Completed]


class LazyOpen:
    """The chunks not done of a checkpoint: their records restored without their dispatches, which
    ``read`` decodes (with their failures) when a question needs more than their states.

    ``processes`` (chunk id -> the process of its dispatch, or None) and ``failed_spans`` answer
    which of them failed and which may still be running.
    """

    def __init__(
        self,
        read: Callable[[], OpenDetails],
        records: dict[str, ChunkRecord],
        processes: list[Process | None],
        failed_spans: list[str],
    ) -> None:
        self.read = read
        self.records = list(records.values())
        self.processes = dict(zip(records, processes))
        self.failed_spans = frozenset(failed_spans)


class LazyDone:
    """The done chunks of a checkpoint, still encoded: ``load`` decodes them when a question needs them.

    ``read`` returns every dispatched chunk id in first-dispatch order, the done chunks' records, and
    the failures not kept with the chunks not done.
    """

    def __init__(
        self,
        read: Callable[[], tuple[list[str], dict[str, ChunkRecord], dict[str, Completed]]],
        hashes: bytes,
        count: int,
        *,
        only_planned: list[str],
        planned_count: int,
        read_summary: Callable[[], DoneSummary],
    ) -> None:
        self._read = read
        self.read_summary = read_summary
        #: The chunks planned and never dispatched when the checkpoint was saved, and how many were planned then.
        self.only_planned = only_planned
        self.planned_count = planned_count
        self.hashes = array.array("I")
        self.hashes.frombytes(hashes)
        self.count = count

    def may_hold(self, chunk_id: str) -> bool:
        h = chunk_hash(chunk_id)
        i = bisect.bisect_left(self.hashes, h)
        return i < len(self.hashes) and self.hashes[i] == h

    def load(self, newer: dict[str, ChunkRecord]) -> tuple[dict[str, ChunkRecord], dict[str, Completed]]:
        """All dispatched chunks in order: the done ones decoded, with ``newer`` (not done then, or new since);
        and the failures the checkpoint kept apart (of done chunks, and of attempts no longer the latest)."""
        order, done, failures = self._read()
        out: dict[str, ChunkRecord] = {}
        for cid in order:
            rec = done.get(cid) or newer.pop(cid, None)
            if rec is not None:
                out[cid] = rec
        out.update(newer)
        return out, failures


def _copied(rec: ChunkRecord, shift: int) -> ChunkRecord:
    """A copy of ``rec`` with its line references moved up by ``shift``."""
    out = msgspec.structs.replace(rec)
    if out.history is not None:
        out.history = list(out.history)
    return _shifted(out, shift)


def _shifted(rec: ChunkRecord, shift: int) -> ChunkRecord:
    """``rec`` itself, its line references moved up by ``shift``."""
    if shift:
        if rec.dispatch_line:
            rec.dispatch_line += shift
        if rec.success_line:
            rec.success_line += shift
    return rec


def _combine(ours: ChunkRecord, theirs: ChunkRecord, shift: int, recent: list[str | None]) -> None:
    """Fold a later part's record of a chunk into this part's."""
    if theirs.attempts:
        ours.attempts += theirs.attempts
        ours.span = theirs.span
        ours.dispatch_line = theirs.dispatch_line + shift if theirs.dispatch_line else 0
        ours.batch, ours.agent = dispatch_field(theirs, "batch"), dispatch_field(theirs, "agent")
        if not ours.output_from_success:
            ours.cwd = dispatch_field(theirs, "cwd")
        ours.dispatch = theirs.dispatch
    if theirs.failure_span is not None:
        ours.failure_span = theirs.failure_span
    if not ours.output_from_success and theirs.output_file:
        ours.output_file = theirs.output_file
        ours.output_from_success = theirs.output_from_success
    if theirs.done and not ours.done:
        ours.done = True
        ours.success_span = theirs.success_span
        ours.success_line = theirs.success_line + shift if theirs.success_line else 0
    if ours.done and ours.dispatch is not None:
        _keep_dispatch_fields(ours, ours.dispatch, recent)
        ours.dispatch = None
    ours.tokens += theirs.tokens
    if ours.history is not None and theirs.history is not None:
        ours.history.extend(theirs.history)
