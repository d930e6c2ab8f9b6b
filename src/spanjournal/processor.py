"""JournalSpanProcessor: where a span becomes a journal line.

The OpenTelemetry SDK calls a span processor when a span starts and when it
ends, on the thread that starts or ends it. :class:`JournalSpanProcessor`
writes a ``subagent_dispatched`` line in ``on_start`` (durable, with the
default ``fsync`` journal, before the agent runs) and a
``subagent_completed`` line in ``on_end``. Only dispatch spans, the ones
that carry ``spanjournal.chunk_id`` from their start, are journaled; every
other span passes through untouched. With ``agent_spans=AgentSpans()`` the
agent spans of other instrumentations are journaled as units too (see
:mod:`spanjournal.agent_spans`).

Lines are built as the schema's structs (:class:`~spanjournal.Dispatched`,
:class:`~spanjournal.Completed`) and encoded by the schema's ``encode``: the
schema is written in one place. Spans are read through the SDK's public
``ReadableSpan`` API, or through its private fields where a check at import
(:func:`private_fields_match_public_api`) showed they hold the same values;
``SPANJOURNAL_SPAN_API=public`` forces the public API.

The processor never raises into the code that starts or ends a span: a
failed write is logged (the first one loudly), counted in
:attr:`JournalSpanProcessor.errors`, and reported to the dispatch that
caused it (keyed by span id, see :class:`StartOutcomes`), which decides
whether to refuse to run the agent (strict mode).

>>> from opentelemetry.sdk.trace import TracerProvider
>>> from spanjournal.testing import MemoryJournal
>>> journal = MemoryJournal()
>>> provider = TracerProvider()
>>> provider.add_span_processor(JournalSpanProcessor(journal, session_id="s-1"))
>>> tracer = provider.get_tracer("example")
>>> with tracer.start_as_current_span("invoke_agent", attributes={"spanjournal.chunk_id": "c-1"}):
...     pass
>>> [type(e).__name__ for e in journal.events()]
['Dispatched', 'Completed']
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
import weakref
from collections.abc import Mapping
from datetime import datetime, timezone, tzinfo
from typing import Any, Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Status, StatusCode, set_span_in_context

from spanjournal import semconv
from spanjournal._process import self_identity
from spanjournal._schema import Completed, Dispatched, encode
from spanjournal.agent_spans import AgentSpans, UnitTracker
from spanjournal.journal import Durability, Journal

__all__ = [
    "MAX_ERROR_CHARS",
    "JournalLike",
    "JournalSpanProcessor",
    "TimestampFormatter",
    "resolve_tz",
]

logger = logging.getLogger("spanjournal")

#: Error messages longer than this are cut (with a marker) in the journal and on the span.
MAX_ERROR_CHARS = 2000

_ERROR = StatusCode.ERROR
#: The start attributes a dispatch line keeps in its own fields; any other goes to ``attrs``.
_KNOWN_START_KEYS = frozenset(
    {semconv.FIELD_ATTRIBUTES[name] for name in Dispatched.__struct_fields__ if name in semconv.FIELD_ATTRIBUTES}
    | {semconv.GEN_AI_OPERATION_NAME}
)


@runtime_checkable
class JournalLike(Protocol):
    """What the processor writes to: :class:`~spanjournal.Journal`, or a test double.

    ``append_bytes`` takes one ``\\n``-terminated line and raises (typically
    :class:`~spanjournal.JournalWriteError`) when it cannot keep it.
    """

    def append_bytes(self, line: bytes) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def bound_error(message: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``message`` cut to at most ``limit`` characters, saying how much was cut.

    Idempotent: a bounded message is returned as it is.

    >>> bound_error("quota exceeded: " + "x" * 100, limit=45)
    'quota exceeded: xxxxxxx[… 93 more characters]'
    """
    if len(message) <= limit:
        return message
    if limit < 40:
        return message[:limit]
    cut = len(message) - limit
    while True:
        marker = f"[… {cut} more characters]"
        keep = max(0, limit - len(marker))
        if len(message) - keep == cut:
            return message[:keep] + marker
        cut = len(message) - keep


def resolve_tz(tz: str | tzinfo | None) -> tzinfo | None:
    """A time zone from a name (``"UTC"``, ``"Asia/Kuala_Lumpur"``, ``"local"``) or a tzinfo.

    ``None`` and ``"local"`` mean the machine's local time zone (returned as
    ``None``); an unknown name raises ``ValueError``.

    >>> resolve_tz("UTC")
    datetime.timezone.utc
    """
    if tz is None or isinstance(tz, tzinfo):
        return tz
    name = tz.strip()
    if name.lower() in ("", "local"):
        return None
    if name.upper() in ("UTC", "Z"):
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {tz!r}") from exc


class TimestampFormatter:
    """Formats span times (nanoseconds since the epoch) as ISO 8601 with microseconds and offset.

    ``datetime.isoformat`` per event is slow; this keeps the formatted date,
    time and offset of recent seconds and only adds the microseconds: an
    event in the same second as the one before costs two comparisons and a
    few string joins. Microseconds are truncated, not rounded. Thread safe
    (a race only formats a second twice).

    >>> fmt = TimestampFormatter("Asia/Kuala_Lumpur")
    >>> fmt(1_779_859_321_123_456_789)
    '2026-05-27T13:22:01.123456+08:00'
    """

    __slots__ = ("_cache", "_last", "tz")

    _CACHE_SIZE = 256

    def __init__(self, tz: str | tzinfo | None = None) -> None:
        self.tz = resolve_tz(tz)
        self._cache: dict[int, tuple[int, str, str]] = {}
        #: (first ns of the second, "YYYY-MM-DDTHH:MM:SS.", offset) of the latest second formatted.
        self._last: tuple[int, str, str] = (-(10**9), "", "")

    def __call__(self, ns: int) -> str:
        return self.format(ns)

    def format(self, ns: int) -> str:
        """The ISO 8601 text of ``ns`` nanoseconds since the epoch."""
        last = self._last
        micros = (ns - last[0]) // 1000
        if not 0 <= micros < 1_000_000:
            last = self._second(ns // 1_000_000_000)
            micros = (ns - last[0]) // 1000
        return f"{last[1]}{_DIGITS3[micros // 1000]}{_DIGITS3[micros % 1000]}{last[2]}"

    def _second(self, sec: int) -> tuple[int, str, str]:
        parts = self._cache.get(sec)
        if parts is None:
            utc = datetime.fromtimestamp(sec, timezone.utc)
            text = (utc.astimezone() if self.tz is None else utc.astimezone(self.tz)).isoformat()
            parts = (sec * 1_000_000_000, text[:19] + ".", text[19:])
            if len(self._cache) >= self._CACHE_SIZE:
                self._cache.clear()
            self._cache[sec] = parts
        self._last = parts
        return parts


_DIGITS3 = tuple(f"{i:03d}" for i in range(1000))


class StartOutcomes:
    """What ``on_start`` did with each dispatch span, keyed by span id, until the dispatch asks.

    The dispatch decorator starts a span and then asks here whether a journal
    processor wrote its dispatched line, and with what error. Keyed by span
    id, not by thread: the SDK may call ``on_start`` on another thread (its
    ``ConcurrentMultiSpanProcessor`` does). An entry no dispatch asks for (a
    span started by hand with ``spanjournal.chunk_id``) is dropped when the
    span ends.
    """

    __slots__ = ("_outcomes",)

    def __init__(self) -> None:
        self._outcomes: dict[int, BaseException | None] = {}

    def record(self, span_id: int, error: BaseException | None) -> None:
        """A processor journaled (``error`` None) or failed to journal the span's start."""
        outcomes = self._outcomes
        if error is not None or span_id not in outcomes:
            outcomes[span_id] = error

    def take(self, span_id: int) -> tuple[bool, BaseException | None]:
        """(whether a journal processor saw the span's start, its error) — asked once."""
        outcomes = self._outcomes
        if span_id in outcomes:
            return True, outcomes.pop(span_id, None)
        return False, None

    def forget(self, span_id: int) -> None:
        self._outcomes.pop(span_id, None)


#: The outcome of journaling each dispatch span's start (read by spanjournal.instrument).
start_outcomes = StartOutcomes()

#: Processors not shut down, oldest first.
_live: list[weakref.ref[JournalSpanProcessor]] = []
_live_lock = threading.Lock()


def latest_processor() -> JournalSpanProcessor | None:
    """The most recently created processor that is not shut down, if any.

    The dispatch decorator writes events through it when no processor saw
    the span (the tracer's provider has no journal processor, or a sampler
    that is not :class:`~spanjournal.sampling.JournalSampler` dropped it) and
    :func:`spanjournal.configure` was not called.
    """
    with _live_lock:
        refs = list(_live)
    for ref in reversed(refs):
        processor = ref()
        if processor is not None and not processor.is_shutdown:
            return processor
    return None


class JournalSpanProcessor(SpanProcessor):
    """Mirrors dispatch spans into a journal: start -> dispatched, end -> completed.

    ``journal`` is a :class:`~spanjournal.Journal` (or anything
    :class:`JournalLike`), or a path, in which case the processor opens it
    with ``durability`` and closes it at :meth:`shutdown`; a journal passed
    in is flushed at shutdown and left open for its owner to close.

    ``session_id`` is written on every event (a span attribute
    ``spanjournal.session_id`` overrides it; default: a new UUID); ``tz`` is
    the time zone of the ``ts`` field (default: local). ``agent_spans`` (an
    :class:`~spanjournal.AgentSpans`) also journals the agent spans of other
    instrumentations as units: which spans, and how their chunk ids are made,
    is documented there.

    For users who build their own ``TracerProvider``::

        provider = TracerProvider(sampler=JournalSampler(your_sampler))
        provider.add_span_processor(JournalSpanProcessor("runs/bench.jsonl"))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))

    Thread safety: ``on_start``/``on_end`` may be called from any thread
    concurrently; the journal serialises the writes. They never raise: a
    span processor cannot stop the code that starts a span, so for the agent
    spans of other instrumentations a journal that cannot be written is
    logged (naming the chunk) and counted in :attr:`errors`, and the agent
    runs. Only ``@dispatch``/``dispatch_span`` refuse to run (strict mode).
    """

    def __init__(
        self,
        journal: Journal | JournalLike | str | os.PathLike[str],
        *,
        session_id: str | None = None,
        tz: str | tzinfo | None = None,
        durability: Durability = "fsync",
        agent_spans: AgentSpans | None = None,
        max_error_chars: int = MAX_ERROR_CHARS,
    ) -> None:
        if isinstance(journal, (str, os.PathLike)):
            self.journal: Journal | JournalLike = Journal(journal, durability=durability)
            self._owns_journal = True
        else:
            self.journal = journal
            self._owns_journal = False
        if agent_spans is not None and not isinstance(agent_spans, AgentSpans):
            raise TypeError(f"agent_spans must be an AgentSpans, not {type(agent_spans).__name__}")
        self.session_id = session_id or str(uuid.uuid4())
        self.timestamps = TimestampFormatter(tz)
        #: Formats nanoseconds since the epoch as the journal's ``ts``.
        self.format_ts = self.timestamps.format
        #: Which agent spans of other instrumentations are units (None: only dispatch spans).
        self.agent_spans = agent_spans
        self._units = UnitTracker(agent_spans) if agent_spans is not None else None
        self.max_error_chars = max_error_chars
        #: How many events could not be written (each one was logged).
        self.errors = 0
        #: The latest write error, if any.
        self.last_error: BaseException | None = None
        self._append = self.journal.append_bytes
        self._lock = threading.Lock()
        self._shutdown = False
        self._resource: Resource | None = None
        self._service_name: str | None = None
        with _live_lock:
            _live[:] = [r for r in _live if (p := r()) is not None and not p.is_shutdown]
            _live.append(weakref.ref(self))

    # -- the SpanProcessor interface -------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Write ``subagent_dispatched`` for a dispatch span or an agent unit. Never raises."""
        if self._shutdown:
            return
        chunk_id: object = None
        span_id = 0
        dispatch = False
        try:
            if _PRIVATE_FIELDS:
                attrs = span._attributes
                attrs = attrs._dict if type(attrs) is BoundedAttributes else _attributes(span)
                context = span._context
                parent = span._parent
                start_ns = span._start_time
                resource = span._resource
            else:
                attrs = _attributes(span)
                context = span.context
                parent = span.parent
                start_ns = span.start_time
                resource = span.resource
            if context is None:
                return
            span_id = context.span_id
            chunk_id = attrs.get(_CHUNK_ID)
            parent_span_id = parent.span_id if parent is not None else None
            agent = None
            units = self._units
            if chunk_id is not None:
                dispatch = True
                chunk_id = chunk_id if type(chunk_id) is str else str(chunk_id)
                if units is not None:
                    name = attrs.get(_AGENT)
                    units.open_dispatch(span_id, parent_span_id, chunk_id, name if type(name) is str else None)
            else:
                if units is None:
                    return
                unit = units.start(span_id, parent_span_id, span.name, attrs)
                if unit is None:
                    return
                chunk_id, agent, parent_span_id = unit.chunk_id, unit.agent, unit.parent_span_id
            self._append(
                self._dispatch_line(
                    chunk_id,
                    start_ns or 0,
                    context.trace_id,
                    span_id,
                    parent_span_id,
                    attrs,
                    self._service_name if resource is self._resource else self._service_of(resource),
                    agent,
                )
            )
            error = None
        except Exception as exc:
            error = self._failed(exc, "dispatched", chunk_id if chunk_id is not None else span)
        if dispatch:
            start_outcomes.record(span_id, error)

    def on_end(self, span: ReadableSpan) -> None:
        """Write ``subagent_completed`` for a dispatch span or an agent unit. Never raises."""
        if self._shutdown:
            return
        chunk_id: object = None
        try:
            if _PRIVATE_FIELDS:
                attrs = span._attributes
                attrs = attrs._dict if type(attrs) is BoundedAttributes else _attributes(span)
                context = span._context
                start_ns, end_ns, status = span._start_time, span._end_time, span._status
            else:
                attrs = _attributes(span)
                context = span.context
                start_ns, end_ns, status = span.start_time, span.end_time, span.status
            if context is None:
                return
            chunk_id = attrs.get(_CHUNK_ID)
            units = self._units
            if chunk_id is not None:
                start_outcomes.forget(context.span_id)
                if units is not None:
                    units.end(context.span_id)
                chunk_id = chunk_id if type(chunk_id) is str else str(chunk_id)
            else:
                if units is None:
                    return
                unit = units.end(context.span_id)
                if unit is None:
                    return
                chunk_id = unit.chunk_id
            failed = status.status_code is _ERROR
            self._append(
                self._completion_line(
                    chunk_id,
                    start_ns or 0,
                    end_ns or 0,
                    context.trace_id,
                    context.span_id,
                    attrs,
                    not failed,
                    status.description if failed else None,
                )
            )
        except Exception as exc:
            self._failed(exc, "completed", chunk_id if chunk_id is not None else span)

    def shutdown(self) -> None:
        """Flush the journal; close it if this processor opened it. Idempotent."""
        if self._shutdown:
            return
        self._shutdown = True
        try:
            if self._owns_journal:
                self.journal.close()
            elif getattr(self.journal, "failed", None) is None:
                self.journal.flush()
        except Exception as exc:
            self._failed(exc, "shutdown", None)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Write buffered events (``durability="none"``); False if that failed."""
        if self._shutdown:
            return True
        try:
            self.journal.flush()
        except Exception as exc:
            self._failed(exc, "flush", None)
            return False
        return True

    @property
    def is_shutdown(self) -> bool:
        return self._shutdown

    # -- mapping spans to lines (also used by the decorator for unrecorded spans) --

    def dispatched_line(
        self,
        *,
        chunk_id: str,
        start_ns: int,
        trace_id: int,
        span_id: int,
        parent_span_id: int | None,
        attributes: Mapping[str, Any] | None,
        service_name: str | None = None,
    ) -> bytes:
        """The ``subagent_dispatched`` line for a span with these start attributes."""
        return self._dispatch_line(
            chunk_id, start_ns, trace_id, span_id, parent_span_id, attributes or _EMPTY, service_name, None
        )

    def completed_line(
        self,
        *,
        chunk_id: str,
        start_ns: int,
        end_ns: int,
        trace_id: int,
        span_id: int,
        attributes: Mapping[str, Any],
        success: bool,
        error: str | None = None,
    ) -> bytes:
        """The ``subagent_completed`` line for a span that ended with these attributes."""
        return self._completion_line(chunk_id, start_ns, end_ns, trace_id, span_id, attributes, success, error)

    def _dispatch_line(
        self,
        chunk_id: str,
        start_ns: int,
        trace_id: int,
        span_id: int,
        parent_span_id: int | None,
        attributes: Mapping[str, Any],
        service_name: str | None,
        agent: str | None,
    ) -> bytes:
        get = attributes.get
        session = get(_SESSION_ID)
        task = get(_TASK_DESCRIPTION)
        items = get(_ITEMS_ASSIGNED)
        output_file = get(_OUTPUT_FILE)
        batch = get(_BATCH)
        agent_attr = get(_AGENT)
        extra = None
        known = (
            (session is not None)
            + (task is not None)
            + (items is not None)
            + (output_file is not None)
            + (batch is not None)
            + (agent_attr is not None)
            + (_CHUNK_ID in attributes)
            + (_OPERATION in attributes)
        )
        if len(attributes) > known:
            extra = {k: v for k, v in attributes.items() if k not in _KNOWN_START_KEYS} or None
        host, pid, proc_start = self_identity()
        return encode(
            Dispatched(
                ts=self.format_ts(start_ns),
                session_id=(session if type(session) is str else _str_or_none(session)) or self.session_id,
                chunk_id=chunk_id,
                task_description=task if type(task) is str else _str_or_none(task),
                items_assigned=items if type(items) is int else None,
                trace_id=f"{trace_id:032x}",
                span_id=f"{span_id:016x}",
                parent_span_id=f"{parent_span_id:016x}" if parent_span_id else None,
                host=host,
                pid=pid,
                proc_start=proc_start,
                output_file=output_file if type(output_file) is str else _str_or_none(output_file),
                cwd=_getcwd(),
                batch=batch if type(batch) is str else _str_or_none(batch),
                agent=agent if agent is not None else _str_or_none(agent_attr),
                service_name=service_name,
                attrs=extra,
            )
        )

    def _completion_line(
        self,
        chunk_id: str,
        start_ns: int,
        end_ns: int,
        trace_id: int,
        span_id: int,
        attributes: Mapping[str, Any],
        success: bool,
        error: str | None,
    ) -> bytes:
        get = attributes.get
        input_tokens = get(_INPUT_TOKENS)
        output_tokens = get(_OUTPUT_TOKENS)
        tokens_used = get(_TOKENS_USED)
        if not success and error:
            limit = self.max_error_chars
            if len(error) > limit:
                error = bound_error(error, limit)
        host, pid, _ = self_identity()
        return encode(
            Completed(
                ts=self.format_ts(end_ns),
                session_id=_str_or_none(get(_SESSION_ID)) or self.session_id,
                chunk_id=chunk_id,
                success=success,
                output_file=_str_or_none(get(_OUTPUT_FILE)),
                error=error or None if not success else None,
                error_type=None if success else _str_or_none(get(_ERROR_TYPE)),
                tokens_used=tokens_used if type(tokens_used) is int else None,
                input_tokens=input_tokens if type(input_tokens) is int else None,
                output_tokens=output_tokens if type(output_tokens) is int else None,
                duration_ms=(end_ns - start_ns) / 1e6 if end_ns and start_ns else None,
                trace_id=f"{trace_id:032x}",
                span_id=f"{span_id:016x}",
                host=host,
                pid=pid,
            )
        )

    def write(self, line: bytes, what: str, chunk_id: object) -> BaseException | None:
        """Append one line; return the error instead of raising it (it is logged and counted)."""
        try:
            self._append(line)
        except Exception as exc:
            return self._failed(exc, what, chunk_id)
        return None

    # -- internals -----------------------------------------------------------------

    def _service_of(self, resource: Resource | None) -> str | None:
        if resource is None:
            return None
        if resource is not self._resource:
            name = resource.attributes.get("service.name")
            self._service_name = name if isinstance(name, str) else None
            self._resource = resource
        return self._service_name

    def _failed(self, exc: BaseException, what: str, about: object) -> BaseException:
        with self._lock:
            self.errors += 1
            self.last_error = exc
            first = self.errors == 1
        if isinstance(about, ReadableSpan):
            about = f"span {about.name!r}"
        message = "spanjournal: could not journal %s event for %s (%d errors so far): %s"
        if first:
            logger.error(message, what, _describe(about), 1, exc, exc_info=not isinstance(exc, OSError))
        else:
            logger.debug(message, what, _describe(about), self.errors, exc)
        return exc


def _describe(about: object) -> str:
    if about is None:
        return "the journal"
    if isinstance(about, str) and not about.startswith("span "):
        return f"chunk {about!r}"
    return str(about)


def _after_fork_in_child() -> None:
    global _live_lock
    _live_lock = threading.Lock()
    for ref in _live:
        processor = ref()
        if processor is not None:
            processor._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


_EMPTY: Mapping[str, Any] = {}


def _attributes(span: ReadableSpan) -> Mapping[str, Any]:
    """A span's attributes, through the SDK's public API."""
    attributes = span.attributes
    return attributes if attributes is not None else _EMPTY


def private_fields_match_public_api() -> bool:
    """Whether the SDK's private span fields the processor reads hold what its public API returns.

    The fast path reads ``_attributes`` (a ``BoundedAttributes``, through
    its ``_dict``), ``_context``, ``_parent``, ``_start_time``,
    ``_end_time``, ``_status`` and ``_resource``: the public properties copy
    or wrap them on every access. Checked once, at import, on a real span of
    the installed SDK; any difference, missing field or error means the
    public API is used. Never raises.
    """
    try:
        provider = TracerProvider(sampler=ALWAYS_ON, shutdown_on_exit=False)
        parent = provider.get_tracer("spanjournal.probe").start_span("parent")
        span: Any = provider.get_tracer("spanjournal.probe").start_span(
            "probe", context=set_span_in_context(parent), attributes={_CHUNK_ID: "probe", "n": 1}
        )
        started = (
            type(span._attributes) is BoundedAttributes
            and type(span._attributes._dict) is dict
            and span._attributes._dict == dict(span.attributes or {})
            and span._context is span.context
            and span._parent is span.parent
            and span._parent is not None
            and span._start_time == span.start_time
            and span._resource is span.resource
        )
        span.set_status(Status(_ERROR, "probe"))
        span.end()
        parent.end()
        ended = (
            span._end_time == span.end_time
            and span._end_time is not None
            and span._status is span.status
            and span._status.status_code is _ERROR
        )
        provider.shutdown()
        return bool(started and ended)
    except Exception:
        return False


# The attribute each journal field is read from (one table: ``semconv.FIELD_ATTRIBUTES``).
_FIELD = semconv.FIELD_ATTRIBUTES
_SESSION_ID = _FIELD["session_id"]
_CHUNK_ID = _FIELD["chunk_id"]
_OUTPUT_FILE = _FIELD["output_file"]
_ERROR_TYPE = _FIELD["error_type"]
_ITEMS_ASSIGNED = _FIELD["items_assigned"]
_TASK_DESCRIPTION = _FIELD["task_description"]
_BATCH = _FIELD["batch"]
_AGENT = _FIELD["agent"]
_TOKENS_USED = _FIELD["tokens_used"]
_INPUT_TOKENS = _FIELD["input_tokens"]
_OUTPUT_TOKENS = _FIELD["output_tokens"]
_OPERATION = semconv.GEN_AI_OPERATION_NAME


def _getcwd() -> str | None:
    """This process's working directory, or None if it was removed."""
    try:
        return os.getcwd()
    except OSError:
        return None


def _str_or_none(value: object) -> str | None:
    """Attribute values are written as the schema types them: strings stay, others become text."""
    if value is None or type(value) is str:
        return value
    return str(value)


#: Read spans through the SDK's private fields (checked against the public API once, here).
_PRIVATE_FIELDS = private_fields_match_public_api() and os.environ.get("SPANJOURNAL_SPAN_API") != "public"
