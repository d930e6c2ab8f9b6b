"""Rebuild a journal's attempts as OpenTelemetry spans and send them to an OTLP backend.

OTLP backends receive only ended spans, so after a crash Jaeger shows the
agents that finished and nothing of the ones that were in flight. The journal
holds every dispatch with its ids, start time and attributes; this module
turns each attempt (a dispatch and its completion, if any) back into a span:

- a completed attempt keeps its trace id, span id, parent span id, start and
  end time (the events' ``ts``) and the journaled attributes; a failure has
  status ERROR with the error as description, a success status OK, and a
  reconciled success is OK with ``spanjournal.reconciled=true``;
- an attempt with no completion has status ERROR, description
  ``"no completion recorded"``, and ends at the last time the journal knows of
  for its process (host, pid, start time): the latest event that process
  wrote (a reconciled completion is written by another process and does not
  count); ``spanjournal.end_time_source`` says so. It carries
  ``spanjournal.unfinished=true`` when its chunk still needs a retry (no
  attempt of it succeeded), or ``spanjournal.superseded=true`` when another
  attempt of the chunk succeeded;
- an attempt whose process is provably still alive (``running``) ends at the
  export time, with status UNSET and ``spanjournal.running=true``.

Each span's resource carries ``service.name`` (the dispatch's
``service_name``, else the one seen earlier in its session, else the caller's
default) and ``spanjournal.session_id``, so spans group per session.

The journal is streamed: completions are paired with their dispatch by span
id as the file is read and sent in batches; only dispatches still waiting
for a completion are held in memory, and those never completed are sent at
the end. Whether an unfinished chunk was later done is the answer of the
fold (:class:`~spanjournal.fold.LedgerState`), the one every command asks,
kept up to date as the journals stream by.

>>> exporter, protocol, url = make_exporter("http://localhost:4317")   # doctest: +SKIP
>>> export_journal(["runs/bench.jsonl"], exporter).summary()          # doctest: +SKIP
'1204 spans (1180 done, 12 failed, 3 reconciled, 9 unfinished)'
>>> for span in journal_spans(["runs/bench.jsonl"], only="unfinished"):  # doctest: +SKIP
...     print(describe_span(span))
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import itertools
import logging
import os
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import msgspec
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from spanjournal import __version__, semconv
from spanjournal import checkpoint as checkpoints
from spanjournal._process import is_alive
from spanjournal._schema import Completed, Dispatched
from spanjournal.exported import SentRecord, span_key
from spanjournal.fold import LedgerState
from spanjournal.reader import FileScan, ReadIssue, ReadStats, journal_files

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = [
    "DEFAULT_SERVICE_NAME",
    "ExportError",
    "ExportStats",
    "JournalSpan",
    "Outcome",
    "SpanTimeOutOfRange",
    "build_span",
    "describe_span",
    "endpoint_configured",
    "export_journal",
    "journal_spans",
    "make_exporter",
]

#: ``service.name`` when neither the journal nor the caller names one.
DEFAULT_SERVICE_NAME = "spanjournal"
#: Spans per export request (the SDK's batch processor default).
DEFAULT_BATCH_SIZE = 512
#: The status description of an attempt without a completion.
UNFINISHED_DESCRIPTION = "no completion recorded"

Protocol = Literal["grpc", "http/protobuf"]
PROTOCOLS: tuple[Protocol, ...] = ("grpc", "http/protobuf")
#: Where spans go when neither an option nor the environment names an endpoint.
DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
DEFAULT_HTTP_ENDPOINT = "http://localhost:4318/v1/traces"
#: Seconds per export request when neither an option nor the environment says (the exporters' default).
DEFAULT_TIMEOUT = 10.0

#: What ``only`` may select: every attempt, those never completed, those that failed.
ONLY_CHOICES = ("all", "unfinished", "failed")

# Attributes only a rebuilt span carries (the rest are in ``spanjournal.semconv``).
ATTR_RECONCILED = "spanjournal.reconciled"
ATTR_VALIDATION = "spanjournal.validation"
ATTR_UNFINISHED = "spanjournal.unfinished"
ATTR_SUPERSEDED = "spanjournal.superseded"
ATTR_RUNNING = "spanjournal.running"
ATTR_END_TIME_SOURCE = "spanjournal.end_time_source"
ATTR_SYNTHETIC_IDS = "spanjournal.synthetic_ids"
#: The resource attribute that groups a session's spans.
RESOURCE_SESSION_ID = semconv.SESSION_ID

#: ``spanjournal.end_time_source`` values.
END_PROCESS_LAST_EVENT = "process_last_event"
END_SESSION_LAST_EVENT = "session_last_event"
END_EXPORT_TIME = "export_time"

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: OTLP carries times as unsigned 64-bit nanoseconds since 1970: up to 2554-07-21T23:34:33Z.
OTLP_MAX_NS = 2**64 - 1
OTLP_TIME_RANGE = "1970-01-01 to 2554-07-21 UTC"
_HEX = re.compile(r"[0-9a-fA-F]+")
_INT64 = 2**63


class Outcome(str, enum.Enum):
    """How one attempt ended, as far as the journal knows."""

    DONE = "done"
    RECONCILED = "reconciled"
    FAILED = "failed"
    UNFINISHED = "unfinished"
    RUNNING = "running"

    def __str__(self) -> str:
        return self.value


_SELECTIONS: dict[str, frozenset[Outcome]] = {
    "all": frozenset(Outcome),
    # Attempts whose live span never ended, so never reached a backend: no
    # completion at all, or one written later by ``reconcile``.
    "unfinished": frozenset({Outcome.UNFINISHED, Outcome.RUNNING, Outcome.RECONCILED}),
    "failed": frozenset({Outcome.FAILED}),
}


class SpanTimeOutOfRange(ValueError):
    """A span's start or end is outside what OTLP can carry (before 1970, after 2554)."""


class ExportError(RuntimeError):
    """The backend did not accept a batch: nothing after it was sent."""

    def __init__(self, message: str, *, sent: int, reason: str | None = None) -> None:
        super().__init__(message)
        self.sent = sent
        self.reason = reason


@dataclass
class ExportStats:
    """What an export read, rebuilt and sent."""

    read: ReadStats = field(default_factory=ReadStats)
    #: Spans rebuilt and selected, by outcome.
    outcomes: Counter[Outcome] = field(default_factory=Counter)
    #: Spans the backend accepted, and in how many requests.
    sent: int = 0
    batches: int = 0
    #: Dispatches skipped because their ``ts`` is not an ISO 8601 time.
    bad_times: int = 0
    #: Completions with no dispatch to pair with (not exported).
    orphan_completions: int = 0
    #: Attempts whose trace or span id was missing or invalid, so one was derived.
    synthetic_ids: int = 0
    #: Attempts not sent because a time is outside OTLP's range: ``'chunk' (ts ...)``.
    out_of_range: list[str] = field(default_factory=list)
    #: Spans left out because an earlier export sent them (``--new``), not counted in ``outcomes``.
    sent_before: int = 0
    #: Files of a directory or glob left out as not journals, a line each.
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def spans(self) -> int:
        return sum(self.outcomes.values())

    def warnings(self) -> list[str]:
        """One line per thing a user should know was left out or made up."""
        out = []
        if self.bad_times:
            out.append(f"{self.bad_times} dispatch(es) with an unreadable ts skipped")
        if self.orphan_completions:
            out.append(f"{self.orphan_completions} completion(s) without a matching dispatch not exported")
        if self.synthetic_ids:
            out.append(f"{self.synthetic_ids} attempt(s) had no valid trace/span id: ids derived from chunk and ts")
        if self.out_of_range:
            shown = ", ".join(self.out_of_range[:_LISTED])
            more = f" and {len(self.out_of_range) - _LISTED} more" if len(self.out_of_range) > _LISTED else ""
            n = len(self.out_of_range)
            out.append(
                f"{n} span{'s' if n != 1 else ''} not sent: a time outside what OTLP carries"
                f" ({OTLP_TIME_RANGE}): {shown}{more}"
            )
        return out

    def skip_out_of_range(self, span: JournalSpan) -> None:
        """Count ``span`` as not sent, its time being outside OTLP's range."""
        self.out_of_range.append(_out_of_range_text(span))
        if self.outcomes.get(span.outcome):
            self.outcomes[span.outcome] -= 1

    def summary(self) -> str:
        """``12 spans (8 done, 1 failed, 1 reconciled, 2 unfinished)``."""
        parts = [f"{n} {o}" for o in Outcome if (n := self.outcomes.get(o, 0))]
        detail = f" ({', '.join(parts)})" if parts else ""
        return f"{self.spans} span{'s' if self.spans != 1 else ''}{detail}"


#: How many skipped spans a warning names.
_LISTED = 5


def _out_of_range_text(span: JournalSpan) -> str:
    return f"{span.dispatch.chunk_id!r} (ts {span.dispatch.ts})"


@dataclass(frozen=True)
class JournalSpan:
    """One attempt rebuilt from the journal: everything its span will carry.

    Plain data, independent of the OpenTelemetry SDK; :func:`build_span`
    makes the SDK's ``ReadableSpan`` of it, :func:`describe_span` a line of text.
    """

    dispatch: Dispatched
    completion: Completed | None
    outcome: Outcome
    trace_id: int
    span_id: int
    parent_span_id: int | None
    start_ns: int
    end_ns: int
    service_name: str
    #: For attempts without a completion: where the end time comes from.
    end_source: str | None = None
    #: For attempts without a completion: another attempt of the chunk succeeded.
    superseded: bool = False
    synthetic_ids: bool = False
    #: The journal file that holds the dispatch.
    journal: str = ""

    @property
    def sent_key(self) -> int:
        """What the span is recorded by once sent (:func:`spanjournal.exported.span_key`): ids and outcome."""
        return span_key(self.trace_id, self.span_id, self.outcome.value)

    @property
    def name(self) -> str:
        return semconv.span_name(self.dispatch.agent)

    @property
    def status(self) -> tuple[StatusCode, str | None]:
        """The span status code and description."""
        outcome = self.outcome
        if outcome is Outcome.DONE or outcome is Outcome.RECONCILED:
            return StatusCode.OK, None
        if outcome is Outcome.FAILED:
            c = self.completion
            assert c is not None
            return StatusCode.ERROR, c.error or c.error_type or "failed"
        if outcome is Outcome.RUNNING:
            return StatusCode.UNSET, None
        return StatusCode.ERROR, UNFINISHED_DESCRIPTION

    def attributes(self) -> dict[str, Any]:
        """The span attributes: the journaled ones, then what the export adds."""
        d = self.dispatch
        attrs: dict[str, Any] = {}
        if d.attrs:
            for key, value in d.attrs.items():
                converted = _attribute_value(value)
                if converted is not None:
                    attrs[key] = converted
        attrs[semconv.GEN_AI_OPERATION_NAME] = semconv.INVOKE_AGENT
        _set_field_attributes(attrs, d, _DISPATCH_ATTRIBUTES)
        c = self.completion
        if c is not None:
            _set_field_attributes(attrs, c, _COMPLETION_ATTRIBUTES if not c.success else _SUCCESS_ATTRIBUTES)
            if c.reconciled:
                attrs[ATTR_RECONCILED] = True
                if c.validation:
                    attrs[ATTR_VALIDATION] = c.validation
        elif self.outcome is Outcome.RUNNING:
            attrs[ATTR_RUNNING] = True
        elif self.superseded:
            attrs[ATTR_SUPERSEDED] = True
        else:
            attrs[ATTR_UNFINISHED] = True
        if self.end_source is not None:
            attrs[ATTR_END_TIME_SOURCE] = self.end_source
        if self.synthetic_ids:
            attrs[ATTR_SYNTHETIC_IDS] = True
        return attrs


_FieldAttributes = tuple[tuple[str, str], ...]


def _field_attributes(struct: type[msgspec.Struct], leave_out: frozenset[str] = frozenset()) -> _FieldAttributes:
    """``(field, attribute)`` for each of the struct's fields a span carries (``semconv.FIELD_ATTRIBUTES``)."""
    return tuple(
        (name, semconv.FIELD_ATTRIBUTES[name])
        for name in struct.__struct_fields__
        if name in semconv.FIELD_ATTRIBUTES and name not in leave_out
    )


#: A completion repeats the dispatch's chunk and session: the span's are the dispatch's.
_DISPATCH_ATTRIBUTES = _field_attributes(Dispatched)
_COMPLETION_ATTRIBUTES = _field_attributes(Completed, frozenset({"chunk_id", "session_id"}))
#: ``error.type`` is only on a span that ended in error.
_SUCCESS_ATTRIBUTES = _field_attributes(Completed, frozenset({"chunk_id", "session_id", "error_type"}))


def _set_field_attributes(attrs: dict[str, Any], event: msgspec.Struct, fields: _FieldAttributes) -> None:
    """Set the attribute of each field the event knows (not absent, not empty); later events win."""
    for name, attribute in fields:
        value = getattr(event, name)
        if value is not None and value != "":
            attrs[attribute] = value


def _attribute_value(value: Any) -> Any:
    """A journaled ``attrs`` value as an OTel attribute value (None: leave it out)."""
    if value is None:
        return None
    if isinstance(value, (str, bool, float)):
        return value
    if isinstance(value, int):
        return value if -_INT64 <= value < _INT64 else str(value)
    if isinstance(value, list) and value:
        kinds = {type(v) for v in value}
        if len(kinds) == 1 and kinds <= {str, bool, int, float}:
            if kinds == {int} and not all(-_INT64 <= v < _INT64 for v in value):
                return msgspec.json.encode(value).decode()
            return tuple(value)
    return msgspec.json.encode(value).decode()


def iso_to_ns(ts: str) -> int:
    """Unix nanoseconds of an ISO 8601 time with offset (the journal's ``ts``).

    Exact: microseconds times 1000, no float rounding. A trailing ``Z`` means
    UTC; a time without offset is taken as local time. Raises ``ValueError``.

    >>> iso_to_ns("1970-01-01T08:00:01.000002+08:00")
    1000002000
    """
    if ts.endswith(("Z", "z")):
        ts = ts[:-1] + "+00:00"
    dt = datetime.fromisoformat(ts)
    if dt.tzinfo is None:
        dt = dt.astimezone()
    delta: timedelta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _parse_id(text: str | None, digits: int) -> int | None:
    if text is None or len(text) != digits or not _HEX.fullmatch(text):
        return None
    value = int(text, 16)
    return value or None


def _derived_ids(d: Dispatched) -> tuple[int, int]:
    """Stable ids for a dispatch that has none: trace per chunk, span per dispatch."""
    trace = hashlib.blake2b(f"{d.session_id}\x1f{d.chunk_id}".encode(), digest_size=16).digest()
    span = hashlib.blake2b(f"{d.session_id}\x1f{d.chunk_id}\x1f{d.ts}".encode(), digest_size=8).digest()
    return int.from_bytes(trace, "big") or 1, int.from_bytes(span, "big") or 1


ProcessKey = tuple[Any, ...]


def _process_key(d: Dispatched) -> ProcessKey:
    if d.host and d.pid:
        return (d.host, d.pid, d.proc_start)
    return ("session", d.session_id)


@dataclass
class _Open:
    """A dispatch waiting for its completion."""

    dispatch: Dispatched
    key: str
    process: ProcessKey
    trace_id: int
    span_id: int
    parent_span_id: int | None
    start_ns: int
    synthetic_ids: bool
    service_name: str
    journal: str


def _open_entry(d: Dispatched, start_ns: int, service: str, journal: str) -> _Open:
    """A dispatch as it waits for its completion: its ids (derived if missing), process and start."""
    trace_id = _parse_id(d.trace_id, 32)
    span_id = _parse_id(d.span_id, 16)
    synthetic = trace_id is None or span_id is None
    if synthetic:
        derived_trace, derived_span = _derived_ids(d)
        trace_id = trace_id or derived_trace
        span_id = span_id or derived_span
    assert trace_id is not None and span_id is not None
    return _Open(
        dispatch=d,
        key=d.span_id if d.span_id else f"{span_id:016x}",
        process=_process_key(d),
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=_parse_id(d.parent_span_id, 16),
        start_ns=start_ns,
        synthetic_ids=synthetic,
        service_name=service,
        journal=journal,
    )


class _MarkState(msgspec.Struct, array_like=True):
    """A single journal's read by :func:`journal_spans` at a line boundary, kept as a mark.

    With it a later read starts at the offset: the attempts completed before
    it are known to have been sent, those still open are rebuilt from their
    dispatches, and the read's counts and warnings so far are kept.
    """

    format: int
    version: str
    #: The ``service.name`` of sessions that name none, and the outcomes every completed attempt was sent for.
    service: str
    selection: list[str]
    lines: int
    events: int
    bad_lines: int
    unknown_events: int
    issues: list[tuple[int, str]]
    bad_times: int
    orphan_completions: int
    synthetic_ids: int
    #: Completed attempts before the offset, by outcome: those sent (``closed``) and those OTLP cannot carry.
    closed: dict[str, int]
    out_of_range: list[tuple[str, str]]
    #: The pairer: open dispatches (with their service name), in dispatch order, and the rest of its state.
    open: list[tuple[Dispatched, str]]
    latest: dict[str, str]
    early: list[Completed]
    last_seen: list[tuple[list[Any], int]]
    session_service: dict[str, str]


_MARK_FORMAT = 1
_MARK_ENCODER = msgspec.msgpack.Encoder()
_MARK_DECODER = msgspec.msgpack.Decoder(_MarkState)


def _outcome(c: Completed) -> Outcome:
    if not c.success:
        return Outcome.FAILED
    return Outcome.RECONCILED if c.reconciled else Outcome.DONE


class _Pairer:
    """Pairs completions with dispatches as batches of events stream by.

    A completion pairs with the open dispatch of its span id, else (no span id
    on either side) with the latest open dispatch of its chunk, as the ledger
    does. A completion read before its dispatch (journals merged out of order)
    waits for it. Only open dispatches and such early completions are held.
    """

    def __init__(self, default_service: str, stats: ExportStats) -> None:
        self.default_service = default_service
        self.stats = stats
        self.open: dict[str, _Open] = {}
        #: chunk id -> span key of its latest open dispatch.
        self.latest: dict[str, str] = {}
        self.early: dict[str, Completed] = {}
        self.last_seen: dict[ProcessKey, int] = {}
        self.session_service: dict[str, str] = {}
        #: The journal file being read.
        self.journal = ""

    def add(self, events: Iterable[Any]) -> Iterator[JournalSpan]:
        for e in events:
            kind = e.kind
            if kind == 1:
                span = self._dispatched(e)
                if span is not None:
                    yield span
            elif kind == 2:
                span = self._completed(e)
                if span is not None:
                    yield span

    def _dispatched(self, d: Dispatched) -> JournalSpan | None:
        try:
            start_ns = iso_to_ns(d.ts)
        except ValueError:
            self.stats.bad_times += 1
            return None
        if d.service_name:
            service = d.service_name
            self.session_service.setdefault(d.session_id, service)
        else:
            service = self.session_service.get(d.session_id, self.default_service)
        entry = _open_entry(d, start_ns, service, self.journal)
        if entry.synthetic_ids:
            self.stats.synthetic_ids += 1
        self._seen(entry.process, start_ns)
        key = entry.key
        early = self.early.pop(d.span_id, None) if d.span_id and self.early else None
        if early is not None:
            return self._close(entry, early)
        self.open[key] = entry
        self.latest[d.chunk_id] = key
        return None

    def _completed(self, c: Completed) -> JournalSpan | None:
        entry = self.open.pop(c.span_id, None) if c.span_id else None
        if entry is None:
            key = self.latest.get(c.chunk_id)
            candidate = self.open.get(key) if key is not None else None
            if key is not None and candidate is not None and (not c.span_id or not candidate.dispatch.span_id):
                entry = self.open.pop(key)
            elif c.span_id:
                self.early[c.span_id] = c
                return None
            else:
                self.stats.orphan_completions += 1
                return None
        if self.latest.get(entry.dispatch.chunk_id) == entry.key:
            del self.latest[entry.dispatch.chunk_id]
        return self._close(entry, c)

    def _close(self, entry: _Open, c: Completed) -> JournalSpan:
        try:
            end_ns = iso_to_ns(c.ts)
        except ValueError:
            end_ns = entry.start_ns + int((c.duration_ms or 0.0) * 1_000_000)
        end_ns = max(end_ns, entry.start_ns)
        if not c.reconciled and (c.pid is None or c.pid == entry.dispatch.pid):
            self._seen(entry.process, end_ns)
        return JournalSpan(
            dispatch=entry.dispatch,
            completion=c,
            outcome=_outcome(c),
            trace_id=entry.trace_id,
            span_id=entry.span_id,
            parent_span_id=entry.parent_span_id,
            start_ns=entry.start_ns,
            end_ns=end_ns,
            service_name=entry.service_name,
            synthetic_ids=entry.synthetic_ids,
            journal=entry.journal,
        )

    def _seen(self, process: ProcessKey, ns: int) -> None:
        if ns > self.last_seen.get(process, 0):
            self.last_seen[process] = ns

    def restore(self, mark: _MarkState) -> None:
        """Take up the state of a mark (before any event is added)."""
        self.stats.bad_times += mark.bad_times
        self.stats.orphan_completions += mark.orphan_completions
        self.stats.synthetic_ids += mark.synthetic_ids
        for d, service in mark.open:
            entry = _open_entry(d, iso_to_ns(d.ts), service, self.journal)
            self.open[entry.key] = entry
        self.latest = dict(mark.latest)
        self.early = {c.span_id: c for c in mark.early if c.span_id}
        self.last_seen = {tuple(key): ns for key, ns in mark.last_seen}
        self.session_service = dict(mark.session_service)

    def finish(self, now_ns: int) -> Iterator[JournalSpan]:
        """The attempts never completed, in dispatch order (``superseded`` not yet known: see :func:`_superseded`)."""
        self.stats.orphan_completions += len(self.early)
        self.early.clear()
        alive: dict[ProcessKey, bool] = {}
        for entry in self.open.values():
            key = entry.process
            if key not in alive:
                alive[key] = key[0] != "session" and is_alive(*key)
        for entry in self.open.values():
            running = alive[entry.process]
            if running:
                end_ns, source = max(now_ns, entry.start_ns), END_EXPORT_TIME
            else:
                end_ns = max(self.last_seen.get(entry.process, 0), entry.start_ns)
                source = END_SESSION_LAST_EVENT if entry.process[0] == "session" else END_PROCESS_LAST_EVENT
            yield JournalSpan(
                dispatch=entry.dispatch,
                completion=None,
                outcome=Outcome.RUNNING if running else Outcome.UNFINISHED,
                trace_id=entry.trace_id,
                span_id=entry.span_id,
                parent_span_id=entry.parent_span_id,
                start_ns=entry.start_ns,
                end_ns=end_ns,
                service_name=entry.service_name,
                end_source=source,
                synthetic_ids=entry.synthetic_ids,
                journal=entry.journal,
            )
        self.open.clear()


def _is_done(fold: LedgerState, chunk_id: str) -> bool:
    rec = fold.record(chunk_id)
    return rec is not None and rec.done


def _selection(only: str | Iterable[str]) -> frozenset[Outcome]:
    names = [only] if isinstance(only, str) else list(only)
    if not names:
        names = ["all"]
    wanted: set[Outcome] = set()
    for name in names:
        if name not in _SELECTIONS:
            raise ValueError(f"only must be one of {', '.join(ONLY_CHOICES)}, not {name!r}")
        wanted |= _SELECTIONS[name]
    return frozenset(wanted)


def journal_spans(
    paths: Iterable[str | os.PathLike[str]],
    *,
    service_name: str | None = None,
    only: str | Iterable[str] = "all",
    stats: ExportStats | None = None,
    now_ns: int | None = None,
    progress: Callable[[int], None] | None = None,
    record: SentRecord | None = None,
    new_only: bool = False,
) -> Iterator[JournalSpan]:
    """Stream the attempts of ``paths`` as :class:`JournalSpan` records.

    Completed attempts come in completion order as the journals are read;
    attempts never completed come last, in dispatch order. ``service_name``
    is used for dispatches whose session names none. ``only`` is ``"all"``,
    ``"unfinished"`` (live span never ended: no completion, running, or reconciled),
    ``"failed"``, or several of them. ``now_ns`` is the export time (default:
    now). ``progress`` is called with the bytes read so far. Raises
    :class:`~spanjournal.reader.JournalReadError` for a path that cannot be
    read, :class:`~spanjournal.reader.NotAJournalError` for a file named in
    ``paths`` in which no line is a journal event; such a file found in a
    directory or by a glob is left out, with a line in ``stats.skipped``.
    Bad lines are counted in ``stats.read``.

    With ``new_only``, spans ``record`` holds (sent before with the same
    outcome) are left out and counted in ``stats.sent_before``; a single
    journal is then read from the record's mark when it has a valid one (see
    :mod:`spanjournal.exported`; not with ``SPANJOURNAL_NO_CHECKPOINT``), with
    the same spans, counts and warnings as a read from the start (but for
    spans completed before the mark with a time OTLP cannot carry: they are
    not yielded again, only listed in ``stats.out_of_range``). With
    ``record``, the read of a single journal proposes a new mark to it.
    """
    if new_only and record is None:
        raise ValueError("new_only needs a record of what was sent")
    wanted = _selection(only)
    files, skipped = journal_files(paths)
    stats = stats if stats is not None else ExportStats()
    stats.skipped.extend(skipped)
    pairer = _Pairer(service_name or DEFAULT_SERVICE_NAME, stats)
    now = now_ns if now_ns is not None else time.time_ns()
    outcomes = stats.outcomes
    sent = record if new_only else None
    marking = record is not None and len(files) == 1
    #: Completed attempts selected, by outcome (for a mark): those OTLP can carry, and the others.
    closed: Counter[str] = Counter()
    beyond: list[tuple[str, str]] = []
    fold: LedgerState | None = LedgerState()
    is_done: Callable[[str], bool] = _never_done
    no_lines = itertools.repeat(0)

    def selected(spans: Iterable[JournalSpan], completed: bool) -> Iterator[JournalSpan]:
        for span in spans:
            if span.outcome in wanted:
                if completed and marking:
                    if time_in_range(span):
                        closed[span.outcome.value] += 1
                    else:
                        beyond.append((span.outcome.value, _out_of_range_text(span)))
                # A span OTLP cannot carry was never sent: it is yielded, for its caller to skip and name.
                if sent is not None and time_in_range(span) and sent.was_sent(span.journal, span.sent_key):
                    stats.sent_before += 1
                    continue
                outcomes[span.outcome] += 1
                if span.outcome is Outcome.UNFINISHED:
                    span = _superseded(span, is_done)
                yield span

    for path in files:
        name = str(path)
        stats.read.files.append(name)
        pairer.journal = name
        offset, lines = 0, 0
        mark = _usable_mark(record, name, wanted, pairer.default_service) if marking and new_only else None
        if mark is not None:
            offset, state = mark
            lines = state.lines
            _restore_read(stats, state, name, offset, wanted)
            pairer.restore(state)
            closed.update({o: n for o, n in state.closed.items() if o in _values(wanted)})
            beyond.extend((o, text) for o, text in state.out_of_range if o in _values(wanted))
            fold = None
        file_scan = FileScan(path, stats.read, offset=offset, lines=lines)
        for events, _ in file_scan.batches(progress):
            if fold is not None:
                fold.apply_batch(events, no_lines)
            yield from selected(pairer.add(events), True)
        if marking:
            assert record is not None
            blob = _mark_blob(pairer, stats, file_scan, wanted, closed, beyond)
            if blob is not None:
                record.propose_mark(name, file_scan.offset, blob)
        if file_scan.tail is not None:
            if fold is not None:
                fold.apply_batch([file_scan.tail], no_lines)
            yield from selected(pairer.add([file_scan.tail]), True)
    # Read from a mark: the fold of the whole journal (with checkpoints), read if a span needs it.
    is_done = functools.partial(_is_done, fold) if fold is not None else _DoneInJournal(files[0])
    yield from selected(pairer.finish(now), False)


def _superseded(span: JournalSpan, is_done: Callable[[str], bool]) -> JournalSpan:
    """An unfinished attempt, marked superseded when its chunk is done (asked only of spans that are yielded)."""
    if is_done(span.dispatch.chunk_id):
        return dataclasses.replace(span, superseded=True)
    return span


def _never_done(chunk_id: str) -> bool:
    raise AssertionError("asked before the journals were read")


def _values(wanted: frozenset[Outcome]) -> frozenset[str]:
    return frozenset(o.value for o in wanted)


class _DoneInJournal:
    """Whether a chunk is done, from the fold of the whole journal (read with checkpoints), read when first asked."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fold: LedgerState | None = None

    def __call__(self, chunk_id: str) -> bool:
        if self.fold is None:
            from spanjournal.ledger import read_ledger

            self.fold = read_ledger(self.path, keep_attempts=False, checkpoint=True).fold
        return _is_done(self.fold, chunk_id)


def _usable_mark(
    record: SentRecord | None, journal: str, wanted: frozenset[Outcome], service: str
) -> tuple[int, _MarkState] | None:
    """The record's mark for ``journal`` if a read may start there: same version and service, a wider selection."""
    if record is None or not checkpoints.enabled():
        return None
    found = record.mark(journal)
    if found is None:
        return None
    offset, blob = found
    try:
        state = _MARK_DECODER.decode(blob)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if (state.format, state.version, state.service) != (_MARK_FORMAT, __version__, service):
        return None
    if not _values(wanted) <= set(state.selection):
        return None
    return offset, state


def _restore_read(stats: ExportStats, state: _MarkState, name: str, offset: int, wanted: frozenset[Outcome]) -> None:
    """Count what the read before the mark met, as a read from the start would have."""
    read = stats.read
    read.events += state.events
    read.lines += state.lines
    read.bytes += offset
    read.bad_lines += state.bad_lines
    read.unknown_events += state.unknown_events
    room = max(0, read.max_issues - len(read.issues))
    read.issues.extend(ReadIssue(name, line, message) for line, message in state.issues[:room])
    stats.sent_before += sum(n for o, n in state.closed.items() if o in _values(wanted))
    stats.out_of_range.extend(text for o, text in state.out_of_range if o in _values(wanted))


def _mark_blob(
    pairer: _Pairer,
    stats: ExportStats,
    file_scan: FileScan,
    wanted: frozenset[Outcome],
    closed: Counter[str],
    beyond: list[tuple[str, str]],
) -> bytes | None:
    """The state of a single journal's read at the end of its last complete line, encoded; None if it cannot be."""
    read = file_scan.complete_stats
    state = _MarkState(
        format=_MARK_FORMAT,
        version=__version__,
        service=pairer.default_service,
        selection=sorted(_values(wanted)),
        lines=file_scan.lines,
        events=read.events,
        bad_lines=read.bad_lines,
        unknown_events=read.unknown_events,
        issues=[(i.line, i.message) for i in read.issues],
        bad_times=stats.bad_times,
        orphan_completions=stats.orphan_completions,
        synthetic_ids=stats.synthetic_ids,
        closed=dict(closed),
        out_of_range=list(beyond),
        open=[(e.dispatch, e.service_name) for e in pairer.open.values()],
        latest=dict(pairer.latest),
        early=list(pairer.early.values()),
        last_seen=[(list(key), ns) for key, ns in pairer.last_seen.items()],
        session_service=dict(pairer.session_service),
    )
    try:
        return _MARK_ENCODER.encode(state)
    except (TypeError, OverflowError, ValueError):  # a value msgpack cannot hold (an int beyond 64 bits)
        return None


_SCOPE = InstrumentationScope(semconv.TRACER_NAME, __version__)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_STATUS_OK = Status(StatusCode.OK)
_STATUS_UNSET = Status(StatusCode.UNSET)


class _Resources:
    """One ``Resource`` per (service name, session), made once."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], Resource] = {}

    def get(self, service_name: str, session_id: str) -> Resource:
        key = (service_name, session_id)
        resource = self._cache.get(key)
        if resource is None:
            attrs: dict[str, str] = {"service.name": service_name}
            if session_id:
                attrs[RESOURCE_SESSION_ID] = session_id
            resource = self._cache[key] = Resource.create(attrs)
        return resource


_default_resources = _Resources()


def time_in_range(span: JournalSpan) -> bool:
    """Whether OTLP can carry ``span``'s start and end (unsigned nanoseconds since 1970)."""
    return 0 <= span.start_ns <= OTLP_MAX_NS and 0 <= span.end_ns <= OTLP_MAX_NS


def build_span(span: JournalSpan, resources: _Resources | None = None) -> ReadableSpan:
    """The OpenTelemetry ``ReadableSpan`` an exporter sends for ``span``.

    Raises :class:`SpanTimeOutOfRange` for a time OTLP cannot carry (an
    encoder would fail on the whole batch).
    """
    if not time_in_range(span):
        raise SpanTimeOutOfRange(f"{span.dispatch.chunk_id!r}: a time outside {OTLP_TIME_RANGE}")
    resource = (resources or _default_resources).get(span.service_name, span.dispatch.session_id)
    code, description = span.status
    if code is StatusCode.OK:
        status = _STATUS_OK
    elif code is StatusCode.UNSET:
        status = _STATUS_UNSET
    else:
        status = Status(code, description)
    parent = (
        SpanContext(span.trace_id, span.parent_span_id, is_remote=False, trace_flags=_SAMPLED)
        if span.parent_span_id is not None
        else None
    )
    return ReadableSpan(
        name=span.name,
        context=SpanContext(span.trace_id, span.span_id, is_remote=False, trace_flags=_SAMPLED),
        parent=parent,
        resource=resource,
        attributes=span.attributes(),
        kind=SpanKind.CLIENT,
        status=status,
        start_time=span.start_ns,
        end_time=span.end_ns,
        instrumentation_scope=_SCOPE,
    )


def describe_span(span: JournalSpan) -> str:
    """One readable line for ``--dry-run``: outcome, start, duration, status, name, ids.

    For example (one line)::

        unfinished  2026-05-27T13:22:01.123456+08:00  +12.500s  ERROR "no completion recorded"
        invoke_agent router  chunk=batch-3-case-027  trace=0af7…  span=00f0…  parent=-  service=bench
        end=process_last_event
    """
    code, description = span.status
    status = code.name if description is None else f"{code.name} {msgspec.json.encode(description).decode()}"
    duration = (span.end_ns - span.start_ns) / 1e9
    parent = f"{span.parent_span_id:016x}" if span.parent_span_id is not None else "-"
    extra = ""
    if span.end_source is not None:
        extra += f"  end={span.end_source}"
    if span.superseded:
        extra += "  superseded"
    return (
        f"{span.outcome.value:<10}  {span.dispatch.ts}  {duration:+.3f}s  {status}  {span.name}"
        f"  chunk={span.dispatch.chunk_id}  trace={span.trace_id:032x}  span={span.span_id:016x}"
        f"  parent={parent}  service={span.service_name}{extra}"
    )


#: The reason given when the exporter says no more than that it gave up.
NO_ANSWER = "no answer within the timeout"
#: How the reason starts when the exporter raised rather than returned a failure.
EXPORTER_RAISED = "the exporter failed"


class _ExporterLog(logging.Handler):
    """Keeps what an exporter logged while failing, to say why in one line."""

    #: (pattern in the exporter's messages, what the user is told), most telling first.
    CAUSES: tuple[tuple[re.Pattern[str], str], ...] = (
        (re.compile(r"connection refused", re.I), "connection refused"),
        (
            re.compile(r"name or service not known|nodename nor servname|name resolution|domain name not found", re.I),
            "host name not found",
        ),
        (re.compile(r"batch code: (\d+), reason: ([^\n]*)"), r"HTTP \1 \2"),
        (re.compile(r"error code: StatusCode\.(\w+)"), r"gRPC status \1"),
        (re.compile(r"DEADLINE_EXCEEDED|timed out", re.I), "timed out"),
        (re.compile(r"due to timeout, max retries"), NO_ANSWER),
    )
    KEEP = 20

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad log call must not break the export
            message = str(record.msg)
        self.messages = [*self.messages[-(self.KEEP - 1) :], message]

    def reason(self, raised: str | None = None) -> str | None:
        """The cause of the failure in a few words, else the last message (first line, shortened).

        ``raised`` is what an exporter that raised instead of logging said (older
        OTLP exporters do): it is read as the last message.
        """
        messages = self.messages if raised is None else [*self.messages, raised]
        for pattern, cause in self.CAUSES:
            for message in reversed(messages):
                m = pattern.search(message)
                if m:
                    return m.expand(cause).strip()
        if not messages:
            return None
        last = messages[-1].splitlines()[0] if messages[-1] else ""
        return last if len(last) <= 200 else last[:199] + "…"


def export_journal(
    paths: Iterable[str | os.PathLike[str]],
    exporter: SpanExporter,
    *,
    service_name: str | None = None,
    only: str | Iterable[str] = "all",
    batch_size: int = DEFAULT_BATCH_SIZE,
    stats: ExportStats | None = None,
    now_ns: int | None = None,
    progress: Callable[[int], None] | None = None,
    timeout: float | None = None,
    record: SentRecord | None = None,
    new_only: bool = False,
) -> ExportStats:
    """Send the attempts of ``paths`` through ``exporter``, ``batch_size`` spans per request.

    Stops at the first batch the exporter does not accept and raises
    :class:`ExportError`. ``timeout`` (seconds) bounds each request by the
    wall clock, whatever the server does (one byte every few seconds keeps
    a socket's own timeout from ever firing); ``None`` leaves it to the
    exporter. Spans with a time OTLP cannot carry are skipped and listed in
    ``stats.warnings()``. The exporter is not shut down: it belongs to the caller.

    ``record`` collects the spans of each batch the backend acknowledged
    (:meth:`SentRecord.add`; the caller saves it, even after an
    :class:`ExportError`) and, once every batch was accepted, where the read
    of a single journal stopped (:meth:`SentRecord.accept_marks`); with
    ``new_only`` the spans it already holds are not sent (counted in
    ``stats.sent_before``), and a single journal is read from its mark.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if new_only and record is None:
        raise ValueError("new_only needs a record of what was sent")
    stats = stats if stats is not None else ExportStats()
    resources = _Resources()
    log = _ExporterLog()
    logger = logging.getLogger("opentelemetry.exporter")
    logger.addHandler(log)
    started = time.monotonic()
    try:
        batch: list[ReadableSpan] = []
        keys: list[tuple[str, int]] = []
        spans = journal_spans(
            paths,
            service_name=service_name,
            only=only,
            stats=stats,
            now_ns=now_ns,
            progress=progress,
            record=record,
            new_only=new_only,
        )
        for span in spans:
            try:
                batch.append(build_span(span, resources))
            except SpanTimeOutOfRange:
                stats.skip_out_of_range(span)
                continue
            if record is not None:
                keys.append((span.journal, span.sent_key))
            if len(batch) >= batch_size:
                _send(exporter, batch, stats, log, timeout)
                if record is not None:
                    record.add(keys)
                batch, keys = [], []
        if batch:
            _send(exporter, batch, stats, log, timeout)
            if record is not None:
                record.add(keys)
        if record is not None:
            record.accept_marks()
    finally:
        logger.removeHandler(log)
        stats.seconds = time.monotonic() - started
    return stats


#: How much longer than its timeout a request may take before it is abandoned (the exporter's own
#: timeout, with its better reason, fires first when the server answers at all).
TIMEOUT_GRACE = 1.0


def _send(
    exporter: SpanExporter,
    batch: list[ReadableSpan],
    stats: ExportStats,
    log: _ExporterLog,
    timeout: float | None = None,
) -> None:
    result, failure = _export_within(exporter, batch, timeout)
    if result is not SpanExportResult.SUCCESS:
        reason = log.reason(failure) if failure and failure.startswith(EXPORTER_RAISED) else failure or log.reason()
        raise ExportError(
            f"the backend did not accept {len(batch)} spans ({stats.sent} sent before)"
            + (f": {reason}" if reason else ""),
            sent=stats.sent,
            reason=reason,
        )
    stats.sent += len(batch)
    stats.batches += 1


def _export_within(
    exporter: SpanExporter, batch: list[ReadableSpan], timeout: float | None
) -> tuple[SpanExportResult, str | None]:
    """``exporter.export(batch)``, abandoned after ``timeout`` (+ grace) seconds; the result and why it failed.

    The request runs in a daemon thread: one stuck on a server that never
    finishes its answer is left behind (the exporter's shutdown closes its
    connection), and the caller goes on.
    """
    outcome: list[tuple[SpanExportResult, str | None]] = []

    def attempt() -> None:
        try:
            outcome.append((exporter.export(batch), None))
        except Exception as exc:  # an exporter bug or an encoding error: one line, not a traceback
            outcome.append((SpanExportResult.FAILURE, f"{EXPORTER_RAISED}: {type(exc).__name__}: {exc}"))

    if timeout is None:
        attempt()
    else:
        worker = threading.Thread(target=attempt, name="spanjournal-export", daemon=True)
        worker.start()
        worker.join(timeout + TIMEOUT_GRACE)
        if not outcome:
            return SpanExportResult.FAILURE, f"no complete answer within {timeout:g}s"
    return outcome[0]


def resolve_target(
    endpoint: str | None = None, protocol: str | None = None, environ: Mapping[str, str] | None = None
) -> tuple[Protocol, str]:
    """The OTLP protocol and URL spans go to, decided as :func:`spanjournal.configure` decides.

    ``endpoint`` is a base URL like ``OTEL_EXPORTER_OTLP_ENDPOINT`` (over HTTP
    ``/v1/traces`` is added unless it is there; a missing scheme is
    ``http://``), else ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (as is), else
    ``OTEL_EXPORTER_OTLP_ENDPOINT``, else localhost. ``protocol``, else
    ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``, else ``OTEL_EXPORTER_OTLP_PROTOCOL``,
    else ``http/protobuf`` if the port is 4318 and ``grpc`` otherwise.
    Raises ``ValueError`` for a protocol other than those two.

    >>> resolve_target("collector:4318", environ={})
    ('http/protobuf', 'http://collector:4318/v1/traces')
    """
    from spanjournal.config import resolve_exporters

    if endpoint and "://" not in endpoint:
        endpoint = "http://" + endpoint.strip()
    (choice,) = resolve_exporters("otlp", endpoint=endpoint, protocol=protocol, environ=environ)
    chosen: Protocol = "grpc" if choice.protocol == "grpc" else "http/protobuf"
    url = choice.endpoint or (DEFAULT_GRPC_ENDPOINT if chosen == "grpc" else DEFAULT_HTTP_ENDPOINT)
    return chosen, url


def endpoint_configured(endpoint: str | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Whether an endpoint is named (argument or ``OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT``), not the default."""
    env = os.environ if environ is None else environ
    return bool(endpoint or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def request_timeout(timeout: float | None = None, environ: Mapping[str, str] | None = None) -> float:
    """Seconds per export request: ``timeout``, else ``OTEL_EXPORTER_OTLP_TRACES_TIMEOUT``, else
    ``OTEL_EXPORTER_OTLP_TIMEOUT`` (seconds, as the Python exporters read them), else 10."""
    if timeout is not None:
        return timeout
    env = os.environ if environ is None else environ
    for name in ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        text = env.get(name)
        if text:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{name}={text!r}: not a number of seconds") from None
            if value > 0:
                return value
    return DEFAULT_TIMEOUT


def protocol_hint(protocol: str, reason: str | None) -> str | None:
    """A hint when a failure looks like the other OTLP protocol answered, else ``None``.

    A gRPC request to an OTLP/HTTP port is answered ``UNIMPLEMENTED`` (an
    HTTP/2 server with no such route) or by an HTTP/1 server.
    """
    if protocol == "grpc" and reason and ("UNIMPLEMENTED" in reason or "http1" in reason.lower()):
        return (
            "if it is an OTLP/HTTP endpoint, use --protocol http/protobuf"
            " (or OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf)"
        )
    return None


def make_exporter(
    endpoint: str | None = None,
    protocol: str | None = None,
    *,
    timeout: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[SpanExporter, Protocol, str]:
    """An OTLP span exporter configured like the SDK's, explicit arguments first.

    Returns the exporter, the protocol and the endpoint URL it sends to.
    Headers, timeout (seconds, as the Python SDK reads it), TLS and
    compression also come from the ``OTEL_EXPORTER_OTLP_*`` variables the
    exporters read themselves. Raises ``ValueError`` for an unsupported protocol.
    """
    chosen, url = resolve_target(endpoint, protocol)
    exporter: SpanExporter
    if chosen == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        exporter = GrpcExporter(endpoint=url, timeout=timeout, headers=dict(headers) if headers else None)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        exporter = HttpExporter(endpoint=url, timeout=timeout, headers=headers)
    return exporter, chosen, url


def probe_endpoint(url: str, timeout: float = 2.0) -> str | None:
    """Why a TCP connection to ``url``'s host and port fails, in a few words; None if it connects.

    For error messages: the exporters do not always log the cause of a failure.
    """
    parsed = urlsplit(url if "://" in url else "http://" + url)
    host = parsed.hostname or "localhost"
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:
        return "invalid port in the endpoint"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror:
        return "host name not found"
    except ConnectionRefusedError:
        return "connection refused"
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout:g}s"
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
