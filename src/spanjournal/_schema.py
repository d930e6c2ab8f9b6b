"""The journal's event schema (v1): the one source of truth.

Writer, reader and tests all use these types. Each event is one JSON object
per line. Optional fields are *absent* when unknown, never ``null``: the
structs are encoded with ``omit_defaults``. Readers ignore fields they do not
know, and :func:`decode_line` maps an event name it does not know to
:class:`UnknownEvent`, so the format can grow without breaking old readers.

>>> line = encode(Completed(ts="2026-05-27T13:22:01.123456+08:00",
...     session_id="s", chunk_id="batch-3-case-027", success=True))
>>> line
b'{"v":1,"event":"subagent_completed","chunk_id":"batch-3-case-027","success":true,"ts":"2026-05-27T13:22:01.123456+08:00","session_id":"s"}\\n'
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

SCHEMA_VERSION = 1

DISPATCHED = "subagent_dispatched"
COMPLETED = "subagent_completed"
RUN_PLANNED = "run_planned"


class _Event(
    msgspec.Struct,
    tag_field="event",
    omit_defaults=True,
    kw_only=True,
    gc=False,
):
    #: 1 for a dispatch, 2 for a completion, 3 for a plan: a cheap switch for readers.
    kind: ClassVar[int] = 0

    v: int = SCHEMA_VERSION
    ts: str = ""
    session_id: str = ""


class Dispatched(_Event, tag=DISPATCHED):
    """A unit of work is about to run: durable before the agent starts."""

    kind: ClassVar[int] = 1

    chunk_id: str
    task_description: str | None = None
    items_assigned: int | None = None
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    host: str | None = None
    pid: int | None = None
    proc_start: int | None = None
    output_file: str | None = None
    #: The dispatching process's working directory: what a relative ``output_file`` is relative to.
    cwd: str | None = None
    batch: str | None = None
    agent: str | None = None
    service_name: str | None = None
    attrs: dict[str, Any] | None = None


class Completed(_Event, tag=COMPLETED):
    """A unit of work returned (``success``) or failed."""

    kind: ClassVar[int] = 2

    chunk_id: str
    success: bool
    output_file: str | None = None
    error: str | None = None
    error_type: str | None = None
    tokens_used: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    duration_ms: float | None = None
    trace_id: str | None = None
    span_id: str | None = None
    host: str | None = None
    pid: int | None = None
    reconciled: bool | None = None
    validation: str | None = None


class RunPlanned(_Event, tag=RUN_PLANNED):
    """The full list of chunks a run intends to dispatch."""

    kind: ClassVar[int] = 3

    chunk_ids: list[str]


class UnknownEvent(msgspec.Struct, kw_only=True):
    """An event whose name this reader does not know: kept, otherwise ignored."""

    kind: ClassVar[int] = 0
    event: str


Event = Dispatched | Completed | RunPlanned
KNOWN_EVENTS = frozenset({DISPATCHED, COMPLETED, RUN_PLANNED})

_encoder = msgspec.json.Encoder()
_V1_PREFIX = b'{"v":%d,' % SCHEMA_VERSION
_event_decoder: msgspec.json.Decoder[Event] = msgspec.json.Decoder(Event)


class _Probe(msgspec.Struct):
    event: str = ""


_probe_decoder = msgspec.json.Decoder(_Probe)


def encode(event: _Event | Any) -> bytes:
    """Encode one event (a schema struct or a mapping) as a ``\\n``-terminated line.

    ``v`` is always written, even though it equals its default. Mappings are
    written as they are, unknown fields included.
    """
    if isinstance(event, _Event):
        body = _encoder.encode(event)
        if event.v == SCHEMA_VERSION:  # omitted as a default: state it first
            return _V1_PREFIX + body[1:] + b"\n"
        return body + b"\n"
    if "v" not in event:
        event = {"v": SCHEMA_VERSION, **event}
    return _encoder.encode(event) + b"\n"


def decode_line(line: bytes) -> Event | UnknownEvent:
    """Decode one line (without its ``\\n``).

    Raises :class:`msgspec.DecodeError` (bad JSON, non-UTF-8) or
    :class:`msgspec.ValidationError` (a known field of the wrong type).
    """
    try:
        return _event_decoder.decode(line)
    except msgspec.ValidationError:
        probe = _probe_decoder.decode(line)
        if probe.event and probe.event not in KNOWN_EVENTS:
            return UnknownEvent(event=probe.event)
        raise
