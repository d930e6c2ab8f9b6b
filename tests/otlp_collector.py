"""A real OTLP collector for tests: runs ``rotel-agent`` (from the ``rotel`` PyPI
package) on free loopback ports and parses the spans it prints.

Rotel is started with ``--exporter blackhole --debug-log traces
--debug-log-verbosity detailed``: it accepts OTLP over gRPC and HTTP/protobuf,
drops the data, and prints every received ``ResourceSpans`` to stdout.  The
printed form (rotel 0.0.1-alpha10, PyPI ``rotel`` 0.0.1a15) looks like::

    ResourceSpans #0
    Resource SchemaURL:
    Resource attributes:
         -> service.name: Str(router-bench)
    ScopeSpans #0
    ScopeSpans SchemaURL:
    InstrumentationScope spanjournal 0.1.0
    InstrumentationScope attributes:
         -> scope.attr: Int(1)
    Span #0
        Trace ID       : 0af7651916cd43dd8448eb211c80319c
        Parent ID      : b7ad6b7169203331
        ID             : 00f067aa0ba902b7
        Name           : run_agent
        Kind           : SPAN_KIND_CLIENT
        TraceState     : a=b
    Start time: 1700000000000000500
    End time: 1700000000000000900
        Status code    : STATUS_CODE_ERROR
        Status message : quota exceeded
    Attributes:
         -> chunk_id: Str(batch-3-case-027)
         -> tokens: Int(1234)
         -> cost: Double(0.25)
         -> ok: Bool(false)
         -> tags: Slice(Str(a), Str(b))
    Events:
    SpanEvent #0
         -> Name: exception
         -> Timestamp: 1700000000000000800
         -> DroppedAttributesCount: 0
         -> Attributes::
              -> exception.type: Str(QuotaError)
    Links:
    SpanLink #0
         -> Trace ID: 0af7651916cd43dd8448eb211c80319c
         -> ID: b7ad6b7169203331
         -> TraceState:
         -> DroppedAttributesCount: 0

Other values print as ``Map(k:Int(1), s:Str(x))``, ``Bytes([0, 1])`` and
``Empty``.  Sections with nothing in them (attributes, events, links,
``TraceState``) are left out, and so are both status lines when the span
carries no status.  Rotel's own log lines (``<timestamp>  INFO ...``) share the
stream and are skipped.
Strings are printed raw: a value with a newline continues on the next lines,
and nothing is escaped, so a string that itself looks like ``), x: Str(`` can
be split ambiguously; the parser resolves that by taking the first reading that
accounts for the whole line.  Each ``ResourceSpans`` dump reaches the file in a
single ``write``, so a file read never sees half a dump.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeAlias

import pytest

AttrValue: TypeAlias = str | int | float | bool | bytes | tuple["AttrValue", ...] | dict[str, "AttrValue"] | None
SpanPredicate: TypeAlias = Callable[[list["ReceivedSpan"]], bool]

DEFAULT_STARTUP_TIMEOUT = 15.0
DEFAULT_STOP_TIMEOUT = 5.0
DEFAULT_WAIT_TIMEOUT = 10.0


class CollectorError(RuntimeError):
    """The collector could not be found, started, or stopped, or it died."""


class CollectorOutputError(ValueError):
    """The collector printed a span block this module cannot parse."""


@dataclass(frozen=True)
class ReceivedEvent:
    """A span event as the collector received it."""

    name: str
    time_unix_nano: int
    attributes: dict[str, AttrValue] = field(default_factory=dict)


@dataclass(frozen=True)
class ReceivedLink:
    """A span link as the collector received it."""

    trace_id: str
    span_id: str
    trace_state: str = ""
    attributes: dict[str, AttrValue] = field(default_factory=dict)


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the collector received it.

    ``kind`` is the ``opentelemetry.trace.SpanKind`` member name ("INTERNAL",
    "SERVER", "CLIENT", "PRODUCER", "CONSUMER", or "UNSPECIFIED");
    ``status_code`` is "UNSET", "OK" or "ERROR".
    """

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    status_code: str
    status_message: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    attributes: dict[str, AttrValue] = field(default_factory=dict)
    resource_attributes: dict[str, AttrValue] = field(default_factory=dict)
    scope_name: str = ""
    scope_version: str = ""
    scope_attributes: dict[str, AttrValue] = field(default_factory=dict)
    trace_state: str = ""
    events: tuple[ReceivedEvent, ...] = ()
    links: tuple[ReceivedLink, ...] = ()

    @property
    def service_name(self) -> str | None:
        """The ``service.name`` resource attribute, if it is a string."""
        value = self.resource_attributes.get("service.name")
        return value if isinstance(value, str) else None


# --------------------------------------------------------------------------
# Parsing the detailed debug log
# --------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LOG_LINE = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z?\s+(?:TRACE|DEBUG|INFO|WARN|ERROR)\b.*",
    re.DOTALL,
)
_SPAN_FIELD = re.compile(
    r"    (Trace ID|Parent ID|ID|Name|Kind|TraceState|Status code|Status message) *: ?(.*)",
    re.DOTALL,
)
_STRUCTURAL = [
    re.compile(p)
    for p in (
        r"ResourceSpans #\d+",
        r"Resource SchemaURL: ?.*",
        r"Resource attributes:",
        r"ScopeSpans #\d+",
        r"ScopeSpans SchemaURL: ?.*",
        r"InstrumentationScope( .*)?",
        r"Span #\d+",
        r"    (Trace ID|Parent ID|ID|Name|Kind|TraceState|Status code|Status message) *:.*",
        r"Start time: ?.*",
        r"End time: ?.*",
        r"Attributes:",
        r"Events:",
        r"Links:",
        r"SpanEvent #\d+",
        r"SpanLink #\d+",
        r"     -> .*",
        r"          -> .*",
    )
]
_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX16 = re.compile(r"[0-9a-f]{16}")
_INT = re.compile(r"-?\d+")
_KINDS = {
    "SPAN_KIND_UNSPECIFIED": "UNSPECIFIED",
    "SPAN_KIND_INTERNAL": "INTERNAL",
    "SPAN_KIND_SERVER": "SERVER",
    "SPAN_KIND_CLIENT": "CLIENT",
    "SPAN_KIND_PRODUCER": "PRODUCER",
    "SPAN_KIND_CONSUMER": "CONSUMER",
    "Unspecified": "UNSPECIFIED",
    "Internal": "INTERNAL",
    "Server": "SERVER",
    "Client": "CLIENT",
    "Producer": "PRODUCER",
    "Consumer": "CONSUMER",
}
_STATUSES = {
    "STATUS_CODE_UNSET": "UNSET",
    "STATUS_CODE_OK": "OK",
    "STATUS_CODE_ERROR": "ERROR",
    "Unset": "UNSET",
    "Ok": "OK",
    "Error": "ERROR",
}
_TYPE_PREFIXES = ("Str(", "Int(", "Double(", "Bool(", "Bytes(", "Slice(", "Map(", "Empty")
_INT_VALUE = re.compile(r"Int\((-?\d+)\)")
_DOUBLE_VALUE = re.compile(r"Double\(([^()]*)\)")
_BOOL_VALUE = re.compile(r"Bool\((true|false)\)")
_BYTES_VALUE = re.compile(r"Bytes\(\[((?:\d+(?:, \d+)*)?)\]\)")


def _value_readings(text: str, pos: int) -> Iterator[tuple[AttrValue, int]]:
    """Yield every (value, end position) reading of a printed AnyValue at ``pos``."""
    if text.startswith("Empty", pos):
        yield None, pos + len("Empty")
    elif text.startswith("Str(", pos):
        start = pos + len("Str(")
        close = text.find(")", start)
        while close != -1:
            yield text[start:close], close + 1
            close = text.find(")", close + 1)
    elif m := _INT_VALUE.match(text, pos):
        yield int(m.group(1)), m.end()
    elif m := _DOUBLE_VALUE.match(text, pos):
        try:
            number = float(m.group(1))
        except ValueError:
            return
        yield number, m.end()
    elif m := _BOOL_VALUE.match(text, pos):
        yield m.group(1) == "true", m.end()
    elif m := _BYTES_VALUE.match(text, pos):
        digits = m.group(1)
        yield bytes(int(b) for b in digits.split(", ")) if digits else b"", m.end()
    elif text.startswith("Slice(", pos):
        start = pos + len("Slice(")
        if text.startswith(")", start):
            yield (), start + 1
        yield from _slice_readings(text, start, ())
    elif text.startswith("Map(", pos):
        start = pos + len("Map(")
        if text.startswith(")", start):
            yield {}, start + 1
        yield from _map_readings(text, start, {})


def _slice_readings(text: str, pos: int, items: tuple[AttrValue, ...]) -> Iterator[tuple[AttrValue, int]]:
    for value, end in _value_readings(text, pos):
        if text.startswith(")", end):
            yield (*items, value), end + 1
        if text.startswith(", ", end):
            yield from _slice_readings(text, end + 2, (*items, value))


def _map_readings(text: str, pos: int, items: dict[str, AttrValue]) -> Iterator[tuple[AttrValue, int]]:
    colon = text.find(":", pos)
    while colon != -1:
        if text.startswith(_TYPE_PREFIXES, colon + 1):
            key = text[pos:colon]
            for value, end in _value_readings(text, colon + 1):
                extended = {**items, key: value}
                if text.startswith(")", end):
                    yield extended, end + 1
                if text.startswith(", ", end):
                    yield from _map_readings(text, end + 2, extended)
        colon = text.find(":", colon + 1)


def parse_attribute(entry: str) -> tuple[str, AttrValue]:
    """Parse ``key: Type(value)`` (the text after ``-> ``) into a key and a Python value.

    Str -> str, Int -> int, Double -> float, Bool -> bool, Bytes -> bytes,
    Empty -> None, Slice -> tuple, Map -> dict.
    """
    for sep in re.finditer(": ", entry):
        for value, end in _value_readings(entry, sep.end()):
            if end == len(entry):
                return entry[: sep.start()], value
    raise CollectorOutputError(f"cannot parse attribute entry {entry!r}")


def _is_structural(line: str) -> bool:
    return any(p.fullmatch(line) for p in _STRUCTURAL)


def _is_log_line(line: str) -> bool:
    return _LOG_LINE.fullmatch(_ANSI.sub("", line)) is not None


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join continuation lines (the rest of a multi-line string) onto the line they continue."""
    logical: list[tuple[int, str]] = []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        if _is_structural(line) or _is_log_line(line) or not logical:
            logical.append((number, line))
        else:
            first, previous = logical[-1]
            logical[-1] = (first, previous + "\n" + line)
    return logical


@dataclass
class _SpanDraft:
    first_line: int
    resource_attributes: dict[str, AttrValue]
    scope_name: str
    scope_version: str
    scope_attributes: dict[str, AttrValue]
    fields: dict[str, str] = field(default_factory=dict)
    start: int | None = None
    end: int | None = None
    attributes: dict[str, AttrValue] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)


def _require(condition: bool, line_no: int, line: str, why: str) -> None:
    if not condition:
        raise CollectorOutputError(f"line {line_no}: {why}: {line!r}")


def _nanos(value: str, line_no: int, line: str) -> int:
    _require(_INT.fullmatch(value) is not None, line_no, line, "not an integer time")
    return int(value)


def _finish(draft: _SpanDraft) -> ReceivedSpan:
    f = draft.fields
    where = f"span starting at line {draft.first_line}"
    for name in ("Trace ID", "Parent ID", "ID", "Name", "Kind"):
        if name not in f:
            raise CollectorOutputError(f"{where}: missing {name!r} ({f})")
    if draft.start is None or draft.end is None:
        raise CollectorOutputError(f"{where}: missing start or end time ({f})")
    if not _HEX32.fullmatch(f["Trace ID"]):
        raise CollectorOutputError(f"{where}: bad trace id {f['Trace ID']!r}")
    if not _HEX16.fullmatch(f["ID"]):
        raise CollectorOutputError(f"{where}: bad span id {f['ID']!r}")
    if f["Parent ID"] and not _HEX16.fullmatch(f["Parent ID"]):
        raise CollectorOutputError(f"{where}: bad parent span id {f['Parent ID']!r}")
    if f["Kind"] not in _KINDS:
        raise CollectorOutputError(f"{where}: unknown kind {f['Kind']!r}")
    status = f.get("Status code", "STATUS_CODE_UNSET")
    if status not in _STATUSES:
        raise CollectorOutputError(f"{where}: unknown status code {status!r}")
    events = []
    for e in draft.events:
        if "Name" not in e or "Timestamp" not in e:
            raise CollectorOutputError(f"{where}: incomplete event {e}")
        events.append(ReceivedEvent(e["Name"], e["Timestamp"], e["attributes"]))
    links = []
    for link in draft.links:
        if not _HEX32.fullmatch(link.get("Trace ID", "")) or not _HEX16.fullmatch(link.get("ID", "")):
            raise CollectorOutputError(f"{where}: bad link {link}")
        links.append(ReceivedLink(link["Trace ID"], link["ID"], link.get("TraceState", ""), link["attributes"]))
    return ReceivedSpan(
        trace_id=f["Trace ID"],
        span_id=f["ID"],
        parent_span_id=f["Parent ID"],
        name=f["Name"],
        kind=_KINDS[f["Kind"]],
        status_code=_STATUSES[status],
        status_message=f.get("Status message", ""),
        start_time_unix_nano=draft.start,
        end_time_unix_nano=draft.end,
        attributes=draft.attributes,
        resource_attributes=dict(draft.resource_attributes),
        scope_name=draft.scope_name,
        scope_version=draft.scope_version,
        scope_attributes=dict(draft.scope_attributes),
        trace_state=f.get("TraceState", ""),
        events=tuple(events),
        links=tuple(links),
    )


def parse_debug_output(text: str) -> list[ReceivedSpan]:
    """Parse rotel's detailed trace debug log into spans, in the order printed.

    Log lines (``<timestamp> INFO ...``) and anything before the first
    ``ResourceSpans`` header are skipped; only complete lines are read.
    Raises :class:`CollectorOutputError` on anything inside a dump it does not
    understand, rather than dropping or half-reading a span.
    """
    text = text[: text.rfind("\n") + 1]
    spans: list[ReceivedSpan] = []
    in_dump = False
    resource_attrs: dict[str, AttrValue] = {}
    scope_name, scope_version = "", ""
    scope_attrs: dict[str, AttrValue] = {}
    draft: _SpanDraft | None = None
    section = ""
    item: dict[str, Any] | None = None
    nested_attrs: dict[str, AttrValue] | None = None

    def close_span() -> None:
        nonlocal draft
        if draft is not None:
            spans.append(_finish(draft))
            draft = None

    for line_no, line in _logical_lines(text):
        if _is_log_line(line):
            continue
        if re.fullmatch(r"ResourceSpans #\d+", line):
            close_span()
            in_dump = True
            resource_attrs, scope_attrs = {}, {}
            scope_name, scope_version = "", ""
            section, item, nested_attrs = "", None, None
            continue
        if not in_dump:
            continue
        if re.fullmatch(r"(Resource|ScopeSpans) SchemaURL: ?.*", line):
            section = ""
        elif line == "Resource attributes:":
            _require(draft is None, line_no, line, "resource attributes inside a span")
            section = "resource"
        elif re.fullmatch(r"ScopeSpans #\d+", line):
            close_span()
            scope_name, scope_version, scope_attrs = "", "", {}
            section = ""
        elif line == "InstrumentationScope attributes:":
            _require(draft is None, line_no, line, "scope attributes inside a span")
            section = "scope"
        elif line.startswith("InstrumentationScope"):
            _require(draft is None and "\n" not in line, line_no, line, "bad scope line")
            scope_name, _, scope_version = line[len("InstrumentationScope ") :].rpartition(" ")
            section = ""
        elif re.fullmatch(r"Span #\d+", line):
            close_span()
            draft = _SpanDraft(line_no, resource_attrs, scope_name, scope_version, scope_attrs)
            section = "fields"
        elif m := _SPAN_FIELD.fullmatch(line):
            _require(draft is not None and section == "fields", line_no, line, "field outside span")
            assert draft is not None
            name, value = m.group(1), m.group(2)
            _require(name not in draft.fields, line_no, line, "repeated field")
            if name not in ("Name", "Status message", "TraceState"):
                _require("\n" not in value, line_no, line, "unexpected continuation")
            draft.fields[name] = value
        elif m := re.fullmatch(r"(Start|End) time: ?(.*)", line, re.DOTALL):
            _require(draft is not None and section == "fields", line_no, line, "time outside span")
            assert draft is not None
            nanos = _nanos(m.group(2), line_no, line)
            if m.group(1) == "Start":
                draft.start = nanos
            else:
                draft.end = nanos
        elif line in ("Attributes:", "Events:", "Links:"):
            _require(draft is not None, line_no, line, "span section outside span")
            section = line[:-1].lower()
            item, nested_attrs = None, None
        elif m := re.fullmatch(r"Span(Event|Link) #\d+", line):
            expected = "events" if m.group(1) == "Event" else "links"
            _require(draft is not None and section == expected, line_no, line, "misplaced item")
            assert draft is not None
            item, nested_attrs = {"attributes": {}}, None
            draft.events.append(item) if expected == "events" else draft.links.append(item)
        elif line.startswith("          -> "):
            _require(nested_attrs is not None, line_no, line, "nested attribute without owner")
            assert nested_attrs is not None
            key, value = parse_attribute(line[len("          -> ") :])
            nested_attrs[key] = value
        elif line.startswith("     -> "):
            entry = line[len("     -> ") :]
            if section in ("resource", "scope", "attributes"):
                target = {"resource": resource_attrs, "scope": scope_attrs}.get(section)
                if target is None:
                    assert draft is not None
                    target = draft.attributes
                key, value = parse_attribute(entry)
                target[key] = value
            elif section in ("events", "links") and item is not None:
                if entry == "Attributes::":
                    nested_attrs = item["attributes"]
                    continue
                m = re.fullmatch(
                    r"(Name|Timestamp|Trace ID|ID|TraceState|DroppedAttributesCount): ?(.*)", entry, re.DOTALL
                )
                _require(m is not None, line_no, line, f"unknown {section[:-1]} field")
                assert m is not None
                key, value = m.group(1), m.group(2)
                if key in ("Timestamp", "DroppedAttributesCount"):
                    item[key] = _nanos(value, line_no, line)
                else:
                    item[key] = value
            else:
                _require(False, line_no, line, "entry without a section")
        else:
            _require(False, line_no, line, "unrecognised line in a span dump")
    close_span()
    return spans


# --------------------------------------------------------------------------
# Running the collector
# --------------------------------------------------------------------------


def rotel_agent_path() -> Path:
    """Locate the ``rotel-agent`` binary shipped inside the ``rotel`` package.

    Same place ``rotel.agent.Agent.agent_path`` uses (next to the package's
    ``__init__``), found without importing the package.
    """
    spec = importlib.util.find_spec("rotel")
    if spec is None or not spec.submodule_search_locations:
        raise CollectorError("the 'rotel' package is not installed (pip install rotel)")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "rotel-agent"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise CollectorError(f"no executable rotel-agent in {list(spec.submodule_search_locations)}")


def rotel_available() -> bool:
    """Whether a usable ``rotel-agent`` binary is installed (for skip conditions)."""
    try:
        rotel_agent_path()
    except CollectorError:
        return False
    return True


#: For tests that need a real collector: skipped, with the reason, where rotel-agent is not installed.
needs_rotel = pytest.mark.skipif(not rotel_available(), reason="rotel-agent not installed (pip install rotel)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _at_least(count: int) -> SpanPredicate:
    def enough(spans: list[ReceivedSpan]) -> bool:
        return len(spans) >= count

    return enough


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0 probe)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RotelCollector:
    """A private ``rotel-agent`` on free loopback ports, for one test.

    Use as a context manager::

        with RotelCollector() as collector:
            exporter = OTLPSpanExporter(endpoint=collector.grpc_endpoint, insecure=True)
            ...
            spans = collector.wait_for_spans(3)

    The child runs in the foreground (no ``--daemon``) with its pid and log
    files in a private temp dir and stdout+stderr captured to a file; it is
    stopped by its pid: SIGTERM, a bounded wait, then SIGKILL.  The output
    stays readable through :meth:`spans` after the collector stopped.
    ``exporter_args`` replaces the default ``--exporter blackhole``, e.g. to
    try a forwarding set-up; the detailed trace debug log is on either way.
    """

    def __init__(
        self,
        *,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        exporter_args: Sequence[str] = ("--exporter", "blackhole"),
        extra_args: Sequence[str] = (),
        binary: Path | None = None,
        keep_files: bool = False,
    ) -> None:
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.exporter_args = tuple(exporter_args)
        self.extra_args = tuple(extra_args)
        self.binary = binary
        self.keep_files = keep_files
        self.grpc_port = 0
        self.http_port = 0
        self.workdir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None
        self._final_output: str | None = None

    @property
    def grpc_endpoint(self) -> str:
        """OTLP/gRPC endpoint, e.g. ``http://127.0.0.1:40123``."""
        self._require_started()
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """OTLP/HTTP base endpoint; traces go to ``http_endpoint + "/v1/traces"``."""
        self._require_started()
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int:
        """The pid of the rotel-agent child process."""
        self._require_started()
        assert self._process is not None
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """The child's exit status once it has exited, else None."""
        return None if self._process is None else self._process.poll()

    @property
    def output_path(self) -> Path:
        """The file rotel's stdout and stderr go to."""
        self._require_started()
        assert self.workdir is not None
        return self.workdir / "rotel-agent.out"

    def __enter__(self) -> RotelCollector:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _require_started(self) -> None:
        if self._process is None:
            raise CollectorError("collector not started")

    def command(self, binary: Path) -> list[str]:
        """The rotel-agent command line for the chosen ports and work dir."""
        assert self.workdir is not None
        return [
            str(binary),
            "start",
            *self.exporter_args,
            "--debug-log", "traces",
            "--debug-log-verbosity", "detailed",
            "--otlp-grpc-endpoint", f"127.0.0.1:{self.grpc_port}",
            "--otlp-http-endpoint", f"127.0.0.1:{self.http_port}",
            "--pid-file", str(self.workdir / "rotel-agent.pid"),
            "--log-file", str(self.workdir / "rotel-agent.log"),
            *self.extra_args,
        ]  # fmt: skip

    def start(self, attempts: int = 3) -> None:
        """Start the child and wait until both ports accept connections.

        Retries with fresh ports if the child exits during start-up (a port
        taken between choosing and binding it); raises :class:`CollectorError`
        with the child's output when it cannot come up.
        """
        if self._process is not None or self.workdir is not None:
            raise CollectorError("a RotelCollector can be started only once")
        binary = self.binary or rotel_agent_path()
        self.workdir = Path(tempfile.mkdtemp(prefix="rotel-collector-"))
        atexit.register(self._kill_at_exit)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROTEL_")}
        env["NO_COLOR"] = "1"
        failure = ""
        try:
            for _ in range(attempts):
                self.grpc_port = _free_port()
                self.http_port = _free_port()
                while self.http_port == self.grpc_port:
                    self.http_port = _free_port()
                self._output = open(self.workdir / "rotel-agent.out", "wb")  # noqa: SIM115 - open while the child runs
                try:
                    self._process = subprocess.Popen(
                        self.command(binary),
                        stdin=subprocess.DEVNULL,
                        stdout=self._output,
                        stderr=subprocess.STDOUT,
                        env=env,
                        cwd=self.workdir,
                        close_fds=True,
                    )
                except OSError as exc:
                    raise CollectorError(f"cannot run {binary}: {exc}") from exc
                outcome = self._await_ready()
                if outcome == "ready":
                    return
                failure = (
                    f"rotel-agent {outcome} (grpc :{self.grpc_port}, http :{self.http_port}, "
                    f"status {self._process.poll()}); output:\n{self._read_output_file()[-2000:]}"
                )
                self._terminate()
                if outcome != "exited during start-up":
                    break
            raise CollectorError(failure)
        except BaseException:
            self.stop()
            raise

    def _await_ready(self) -> str:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return "exited during start-up"
            if _accepts(self.grpc_port) and _accepts(self.http_port):
                return "ready" if self._process.poll() is None else "exited during start-up"
            time.sleep(0.02)
        return f"did not listen within {self.startup_timeout}s"

    def _terminate(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                try:
                    process.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired as exc:
                    raise CollectorError(f"rotel-agent pid {process.pid} survived SIGKILL") from exc
        if self._output is not None:
            self._output.close()
            self._output = None

    def stop(self) -> None:
        """Stop the child by its pid (SIGTERM, bounded wait, SIGKILL) and clean up.

        Safe to call more than once and after the child already exited; the
        output stays available to :meth:`spans` afterwards.
        """
        try:
            self._terminate()
        finally:
            if self.workdir is not None and self._final_output is None:
                self._final_output = self._read_output_file()
                if not self.keep_files:
                    shutil.rmtree(self.workdir, ignore_errors=True)
            atexit.unregister(self._kill_at_exit)

    def _kill_at_exit(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=self.stop_timeout)

    def _read_output_file(self) -> str:
        if self.workdir is None:
            return ""
        try:
            return (self.workdir / "rotel-agent.out").read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def output_text(self) -> str:
        """Everything the child printed so far (or in total, once stopped)."""
        if self._final_output is not None:
            return self._final_output
        self._require_started()
        return self._read_output_file()

    def is_running(self) -> bool:
        """Whether the child process is still alive."""
        return self._process is not None and self._process.poll() is None

    def spans(self) -> list[ReceivedSpan]:
        """All spans the collector has printed so far, in arrival order."""
        return parse_debug_output(self.output_text())

    def wait_for_spans(
        self,
        predicate_or_count: int | SpanPredicate,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        interval: float = 0.05,
    ) -> list[ReceivedSpan]:
        """Poll :meth:`spans` until there are at least N spans or the predicate holds.

        Returns the spans seen at that moment.  Raises ``TimeoutError`` after
        ``timeout`` seconds, and :class:`CollectorError` at once if the child
        died, both with a summary of what arrived.
        """
        if isinstance(predicate_or_count, int):
            predicate = _at_least(predicate_or_count)
            description = f"{predicate_or_count} spans"
        else:
            predicate = predicate_or_count
            description = getattr(predicate, "__name__", "predicate")
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if predicate(spans):
                return spans
            if not self.is_running():
                raise CollectorError(
                    f"rotel-agent is not running (status {self.returncode}) while waiting for "
                    f"{description}; got {len(spans)} spans; output tail:\n{self.output_text()[-2000:]}"
                )
            if time.monotonic() >= deadline:
                names = [(s.name, s.span_id) for s in spans]
                raise TimeoutError(f"waited {timeout}s for {description}; got {len(spans)} spans: {names}")
            time.sleep(interval)
