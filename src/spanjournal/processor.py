"""JournalSpanProcessor: where a span becomes a journal line.

The OpenTelemetry SDK calls a span processor when a span starts and when it
ends, on the thread that starts or ends it. :class:`JournalSpanProcessor`
writes a ``subagent_dispatched`` line in ``on_start`` (durable, with the
default ``fsync`` journal, before the agent runs) and a
``subagent_completed`` line in ``on_end``. Only dispatch spans, the ones
that carry ``spanjournal.chunk_id`` from their start, are journaled; every
other span passes through untouched. With ``journal_agent_spans=True`` spans
of other instrumentations whose ``gen_ai.operation.name`` is
``invoke_agent`` are journaled too.

The processor never raises into the code that starts or ends a span: a
failed write is logged (the first one loudly), counted in
:attr:`JournalSpanProcessor.errors`, and reported to the dispatch that
caused it, which decides whether to refuse to run the agent (strict mode).

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

import msgspec
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from spanjournal import semconv
from spanjournal._process import self_identity
from spanjournal._schema import COMPLETED, DISPATCHED, SCHEMA_VERSION
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
_KNOWN_START_KEYS = frozenset(
    {
        semconv.CHUNK_ID,
        semconv.SESSION_ID,
        semconv.TASK_DESCRIPTION,
        semconv.ITEMS_ASSIGNED,
        semconv.OUTPUT_FILE,
        semconv.BATCH,
        semconv.GEN_AI_AGENT_NAME,
        semconv.GEN_AI_OPERATION_NAME,
    }
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


class _StartTicket(Protocol):
    """Filled by ``on_start`` for the dispatch that is starting a span on this thread."""

    journaled: bool
    journal_error: BaseException | None


class _ThreadState(threading.local):
    ticket: _StartTicket | None = None


#: The dispatch starting a span on this thread, if any (set by spanjournal.instrument).
_thread_state = _ThreadState()

#: Processors not shut down, oldest first.
_live: list[weakref.ref[JournalSpanProcessor]] = []
_live_lock = threading.Lock()


def latest_processor() -> JournalSpanProcessor | None:
    """The most recently created processor that is not shut down, if any.

    The dispatch decorator writes events through it when no processor saw
    the span (the sampler dropped it, or the tracer's provider has no
    journal processor) and :func:`spanjournal.configure` was not called.
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
    ``spanjournal.session_id`` overrides it; default: a new UUID); ``tz`` is the time zone of the
    ``ts`` field (default: local). ``journal_agent_spans`` also journals
    spans of other instrumentations that carry ``gen_ai.operation.name =
    "invoke_agent"`` at start; their chunk id is the attribute named by
    ``agent_chunk_id_attribute`` if they carry it, else their span id.

    For users who build their own ``TracerProvider``::

        provider = TracerProvider()
        provider.add_span_processor(JournalSpanProcessor("runs/bench.jsonl"))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))

    Thread safety: ``on_start``/``on_end`` may be called from any thread
    concurrently; the journal serialises the writes. They never raise.
    """

    def __init__(
        self,
        journal: Journal | JournalLike | str | os.PathLike[str],
        *,
        session_id: str | None = None,
        tz: str | tzinfo | None = None,
        durability: Durability = "fsync",
        journal_agent_spans: bool = False,
        agent_chunk_id_attribute: str | None = None,
        max_error_chars: int = MAX_ERROR_CHARS,
    ) -> None:
        if isinstance(journal, (str, os.PathLike)):
            self.journal: Journal | JournalLike = Journal(journal, durability=durability)
            self._owns_journal = True
        else:
            self.journal = journal
            self._owns_journal = False
        self.session_id = session_id or str(uuid.uuid4())
        self.timestamps = TimestampFormatter(tz)
        #: Formats nanoseconds since the epoch as the journal's ``ts``.
        self.format_ts = self.timestamps.format
        self.journal_agent_spans = journal_agent_spans
        self.agent_chunk_id_attribute = agent_chunk_id_attribute
        self.max_error_chars = max_error_chars
        #: How many events could not be written (each one was logged).
        self.errors = 0
        #: The latest write error, if any.
        self.last_error: BaseException | None = None
        self._append = self.journal.append_bytes
        self._lock = threading.Lock()
        self._shutdown = False
        self._agent_spans: set[int] = set()
        self._resource: Resource | None = None
        self._service_name: str | None = None
        self._tails: dict[tuple[Any, ...], bytes] = {}
        self._completion_tail: tuple[object, bytes] = (None, b"")
        with _live_lock:
            _live[:] = [r for r in _live if (p := r()) is not None and not p.is_shutdown]
            _live.append(weakref.ref(self))

    # -- the SpanProcessor interface -------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Write ``subagent_dispatched`` for a dispatch span. Never raises."""
        if self._shutdown:
            return
        try:
            attrs = span._attributes
            attrs = attrs._dict if type(attrs) is BoundedAttributes else _plain(attrs)
            chunk_id = attrs.get(_CHUNK_ID)
            context = span._context
            if chunk_id is None or context is None:
                if context is None or not self.journal_agent_spans or not attrs:
                    return
                if attrs.get(_OPERATION) != semconv.INVOKE_AGENT:
                    return
                chunk_id = self._agent_chunk_id(attrs, context.span_id)
                with self._lock:
                    self._agent_spans.add(context.span_id)
            parent = span._parent
            resource = span._resource
            line = self._dispatch_line(
                chunk_id if type(chunk_id) is str else str(chunk_id),
                span._start_time or 0,
                context.trace_id,
                context.span_id,
                parent.span_id if parent is not None else 0,
                attrs,
                self._service_name if resource is self._resource else self._service_of(resource),
            )
            self._append(line)
            error = None
        except Exception as exc:
            error = self._failed(exc, "dispatched", span)
        ticket = _thread_state.ticket
        if ticket is not None:
            if error is None:
                ticket.journaled = True
            else:
                ticket.journal_error = error

    def on_end(self, span: ReadableSpan) -> None:
        """Write ``subagent_completed`` for a dispatch span. Never raises."""
        if self._shutdown:
            return
        try:
            attrs = span._attributes
            attrs = attrs._dict if type(attrs) is BoundedAttributes else _plain(attrs)
            chunk_id = attrs.get(_CHUNK_ID)
            context = span._context
            if chunk_id is None or context is None:
                if context is None or not self._agent_spans:
                    return
                with self._lock:
                    if context.span_id not in self._agent_spans:
                        return
                    self._agent_spans.discard(context.span_id)
                chunk_id = self._agent_chunk_id(attrs, context.span_id)
            status = span._status
            failed = status.status_code is _ERROR
            self._append(
                self._completion_line(
                    chunk_id if type(chunk_id) is str else str(chunk_id),
                    span._start_time or 0,
                    span._end_time or 0,
                    context.trace_id,
                    context.span_id,
                    attrs,
                    not failed,
                    status.description if failed else None,
                )
            )
        except Exception as exc:
            self._failed(exc, "completed", span)

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
        """The ``subagent_dispatched`` line for a span with these start attributes.

        Fields are those of :class:`~spanjournal.Dispatched`, in the order
        the design document shows them; absent when unknown.
        """
        return self._dispatch_line(
            chunk_id, start_ns, trace_id, span_id, parent_span_id or 0, attributes or _EMPTY, service_name
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
        """The ``subagent_completed`` line for a span that ended with these attributes.

        Fields are those of :class:`~spanjournal.Completed`; absent when unknown.
        """
        return self._completion_line(chunk_id, start_ns, end_ns, trace_id, span_id, attributes, success, error)

    def _dispatch_line(
        self,
        chunk_id: str,
        start_ns: int,
        trace_id: int,
        span_id: int,
        parent_span_id: int,
        attributes: Mapping[str, Any],
        service_name: str | None,
    ) -> bytes:
        get = attributes.get
        session = get(_SESSION_ID)
        task = get(_TASK_DESCRIPTION)
        batch = get(_BATCH)
        agent = get(_AGENT)
        items = get(_ITEMS_ASSIGNED)
        output_file = get(_OUTPUT_FILE)
        # The fields that repeat from dispatch to dispatch are encoded once per distinct set.
        key = (task, batch, agent, items, service_name, self_identity(), _getcwd())
        try:
            tail = self._tails[key]
        except KeyError:
            tail = self._dispatch_tail(key)
        except TypeError:  # an unhashable attribute value
            tail = self._dispatch_tail(key, keep=False)
        event: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "event": DISPATCHED,
            "ts": self.format_ts(start_ns),
            "session_id": (session if type(session) is str else _str_or_none(session)) or self.session_id,
            "chunk_id": chunk_id,
        }
        if output_file is not None:
            event["output_file"] = output_file if type(output_file) is str else str(output_file)
        event["trace_id"] = trace_id.to_bytes(16, "big").hex()
        event["span_id"] = span_id.to_bytes(8, "big").hex()
        if parent_span_id:
            event["parent_span_id"] = parent_span_id.to_bytes(8, "big").hex()
        known = (
            (session is not None)
            + (task is not None)
            + (batch is not None)
            + (agent is not None)
            + (items is not None)
            + (output_file is not None)
            + (_CHUNK_ID in attributes)
            + (_OPERATION in attributes)
        )
        if len(attributes) > known:
            extra = {k: v for k, v in attributes.items() if k not in _KNOWN_START_KEYS}
            if extra:
                event["attrs"] = extra
        return _encode(event)[:-1] + tail

    def _dispatch_tail(self, key: tuple[Any, ...], keep: bool = True) -> bytes:
        """``,"task_description":…,"host":…}\n``: the end of a dispatched line for these values."""
        task, batch, agent, items, service_name, (host, pid, proc_start), cwd = key
        fields: dict[str, Any] = {}
        if task is not None:
            fields["task_description"] = _str_or_none(task)
        if batch is not None:
            fields["batch"] = _str_or_none(batch)
        if agent is not None:
            fields["agent"] = _str_or_none(agent)
        if type(items) is int:
            fields["items_assigned"] = items
        fields["host"] = host
        fields["pid"] = pid
        if proc_start is not None:
            fields["proc_start"] = proc_start
        if cwd is not None:
            fields["cwd"] = cwd
        if service_name is not None:
            fields["service_name"] = service_name
        tail = b"," + _encode(fields)[1:] + b"\n"
        if keep:
            if len(self._tails) >= _TAIL_CACHE_SIZE:
                self._tails.clear()
            self._tails[key] = tail
        return tail

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
        session = get(_SESSION_ID)
        event: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "event": COMPLETED,
            "ts": self.format_ts(end_ns),
            "session_id": (session if type(session) is str else _str_or_none(session)) or self.session_id,
            "chunk_id": chunk_id,
            "success": success,
        }
        value = get(_OUTPUT_FILE)
        if value is not None:
            event["output_file"] = value if type(value) is str else str(value)
        if not success:
            if error:
                limit = self.max_error_chars
                event["error"] = error if len(error) <= limit else bound_error(error, limit)
            value = get(_ERROR_TYPE)
            if value is not None:
                event["error_type"] = value if type(value) is str else str(value)
        value = get(_TOKENS_USED)
        if type(value) is int:
            event["tokens_used"] = value
        value = get(_INPUT_TOKENS)
        if type(value) is int:
            event["input_tokens"] = value
        value = get(_OUTPUT_TOKENS)
        if type(value) is int:
            event["output_tokens"] = value
        if end_ns and start_ns:
            event["duration_ms"] = (end_ns - start_ns) / 1e6
        event["trace_id"] = trace_id.to_bytes(16, "big").hex()
        event["span_id"] = span_id.to_bytes(8, "big").hex()
        identity = self_identity()
        cached = self._completion_tail
        if cached[0] is not identity:
            tail = b"," + _encode({"host": identity[0], "pid": identity[1]})[1:] + b"\n"
            cached = self._completion_tail = (identity, tail)
        return _encode(event)[:-1] + cached[1]

    def write(self, line: bytes, what: str, chunk_id: object) -> BaseException | None:
        """Append one line; return the error instead of raising it (it is logged and counted)."""
        try:
            self._append(line)
        except Exception as exc:
            return self._failed(exc, what, chunk_id)
        return None

    # -- internals -----------------------------------------------------------------

    def _agent_chunk_id(self, attrs: Mapping[str, Any], span_id: int) -> str:
        key = self.agent_chunk_id_attribute
        value = attrs.get(key) if key else None
        return str(value) if value is not None else f"{span_id:016x}"

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
            about = about.attributes.get(semconv.CHUNK_ID) if about.attributes else about.name
        message = "spanjournal: could not journal %s event for %r (%d errors so far): %s"
        if first:
            logger.error(message, what, about, 1, exc, exc_info=not isinstance(exc, OSError))
        else:
            logger.debug(message, what, about, self.errors, exc)
        return exc


def _after_fork_in_child() -> None:
    global _live_lock
    _live_lock = threading.Lock()
    for ref in _live:
        processor = ref()
        if processor is not None:
            processor._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


_EMPTY: Mapping[str, Any] = {}


def _plain(attributes: Any) -> Mapping[str, Any]:
    """Span attributes as a mapping to read (the SDK's ``BoundedAttributes`` is read through its dict)."""
    if attributes is None:
        return _EMPTY
    inner = getattr(attributes, "_dict", None)
    mapping: Mapping[str, Any] = inner if type(inner) is dict else attributes
    return mapping


_SESSION_ID = semconv.SESSION_ID
_CHUNK_ID = semconv.CHUNK_ID
_OPERATION = semconv.GEN_AI_OPERATION_NAME
_OUTPUT_FILE = semconv.OUTPUT_FILE
_ERROR_TYPE = semconv.ERROR_TYPE

_ITEMS_ASSIGNED = semconv.ITEMS_ASSIGNED
_TASK_DESCRIPTION = semconv.TASK_DESCRIPTION
_BATCH = semconv.BATCH
_AGENT = semconv.GEN_AI_AGENT_NAME
_TOKENS_USED = semconv.TOKENS_USED
_INPUT_TOKENS = semconv.GEN_AI_INPUT_TOKENS
_OUTPUT_TOKENS = semconv.GEN_AI_OUTPUT_TOKENS
_encode = msgspec.json.Encoder().encode
_TAIL_CACHE_SIZE = 1024


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
