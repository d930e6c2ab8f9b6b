"""Self-test of the real-collector helper: rotel-agent receives spans from the
OpenTelemetry SDK exporters (gRPC and HTTP/protobuf) and every field comes back
exactly; the parser reads rotel's real output and refuses what it cannot read."""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode

from otlp_collector import (
    CollectorError,
    CollectorOutputError,
    ReceivedEvent,
    ReceivedSpan,
    RotelCollector,
    needs_rotel,
    parse_attribute,
    parse_debug_output,
    pid_alive,
)

T0 = 1_764_000_000_123_456_789


@pytest.fixture
def clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep OTEL_* settings and proxies of the developer's shell out of the exporters."""
    for name in list(os.environ):
        if name.startswith("OTEL_") or name.lower() in ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


class FixedIds(IdGenerator):
    """Hands out the given ids in order, so the test knows every id in advance."""

    def __init__(self, trace_ids: Sequence[int], span_ids: Sequence[int]) -> None:
        self._traces: Iterator[int] = iter(trace_ids)
        self._spans: Iterator[int] = iter(span_ids)

    def generate_trace_id(self) -> int:
        return next(self._traces)

    def generate_span_id(self) -> int:
        return next(self._spans)


def _expected_spans(protocol: str, salt: int) -> dict[str, ReceivedSpan]:
    """The spans :func:`_emit` produces, as the collector must report them."""
    trace_a = f"{0x0AF7651916CD43DD8448EB211C80319C + salt:032x}"
    trace_b = f"{0x4BF92F3577B34DA6A3CE929D0E0E4736 + salt:032x}"
    root, child_fail, child_ok, other = (
        f"{0x00F067AA0BA902B7 + salt:016x}",
        f"{0x53995C3F42CD8AD8 + salt:016x}",
        f"{0x7A085853722DC6D2 + salt:016x}",
        f"{0x1A2B3C4D5E6F7081 + salt:016x}",
    )
    return {
        root: ReceivedSpan(
            trace_id=trace_a,
            span_id=root,
            parent_span_id="",
            name="dispatch batch-3",
            kind="SERVER",
            status_code="UNSET",
            status_message="",
            start_time_unix_nano=T0,
            end_time_unix_nano=T0 + 9_000_000_001,
            attributes={"batch": "batch-3", "items_assigned": 2, "protocol": protocol},
        ),
        child_fail: ReceivedSpan(
            trace_id=trace_a,
            span_id=child_fail,
            parent_span_id=root,
            name="run_agent",
            kind="CLIENT",
            status_code="ERROR",
            status_message="QuotaError: quota exhausted (429)",
            start_time_unix_nano=T0 + 1_000,
            end_time_unix_nano=T0 + 8_123_400_000,
            attributes={
                "chunk_id": "batch-3-case-027",
                "tokens_used": 1234,
                "big": 2**62 + 7,
                "negative": -42,
                "cost_usd": 0.0123,
                "ratio": -1.5e-7,
                "success": False,
                "retry": True,
                "note": "line one\nline two, with (parens): Str(x)",
                "unicode": "café ✓",
                "empty": "",
                "tags": ("router", "bench"),
            },
            events=(ReceivedEvent("quota_hit", T0 + 8_000_000_000, {"remaining": 0, "window": "1m"}),),
        ),
        child_ok: ReceivedSpan(
            trace_id=trace_a,
            span_id=child_ok,
            parent_span_id=root,
            name="run_agent",
            kind="INTERNAL",
            status_code="OK",
            status_message="",
            start_time_unix_nano=T0 + 2_000,
            end_time_unix_nano=T0 + 3_000,
            attributes={"chunk_id": "batch-3-case-028", "success": True, "duration_ms": 8123.4},
        ),
        other: ReceivedSpan(
            trace_id=trace_b,
            span_id=other,
            parent_span_id="",
            name="journal flush",
            kind="PRODUCER",
            status_code="UNSET",
            status_message="",
            start_time_unix_nano=T0 + 10,
            end_time_unix_nano=T0 + 20,
            attributes={"bytes": 512},
        ),
    }


def _emit(protocol: str, endpoint: str, salt: int) -> dict[str, object]:
    """Create the spans of :func:`_expected_spans` with the SDK and export them.

    Returns the resource attributes the SDK attached.
    """
    expected = list(_expected_spans(protocol, salt).values())
    root, child_fail, child_ok, other = expected
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"router-bench-{protocol}", "run.attempt": 2}),
        id_generator=FixedIds(
            [int(root.trace_id, 16), int(other.trace_id, 16)],
            [int(s.span_id, 16) for s in expected],
        ),
    )
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("spanjournal.selftest", "0.1.0")

    parent = tracer.start_span(root.name, kind=SpanKind.SERVER, start_time=root.start_time_unix_nano)
    parent.set_attributes(root.attributes)
    ctx = trace.set_span_in_context(parent)
    failing = tracer.start_span(
        child_fail.name, context=ctx, kind=SpanKind.CLIENT, start_time=child_fail.start_time_unix_nano
    )
    failing.set_attributes(child_fail.attributes)
    event = child_fail.events[0]
    failing.add_event(event.name, event.attributes, timestamp=event.time_unix_nano)
    ok = tracer.start_span(child_ok.name, context=ctx, start_time=child_ok.start_time_unix_nano)
    ok.set_attributes(child_ok.attributes)
    ok.set_status(Status(StatusCode.OK))
    ok.end(end_time=child_ok.end_time_unix_nano)
    failing.set_status(Status(StatusCode.ERROR, child_fail.status_message))
    failing.end(end_time=child_fail.end_time_unix_nano)
    parent.end(end_time=root.end_time_unix_nano)
    lone = tracer.start_span(
        other.name,
        context=trace.set_span_in_context(trace.INVALID_SPAN),
        kind=SpanKind.PRODUCER,
        start_time=other.start_time_unix_nano,
    )
    lone.set_attributes(other.attributes)
    lone.end(end_time=other.end_time_unix_nano)

    finished = memory.get_finished_spans()
    assert [f"{s.context.span_id:016x}" for s in finished] == [
        child_ok.span_id,
        child_fail.span_id,
        root.span_id,
        other.span_id,
    ]
    exporter: SpanExporter
    if protocol == "grpc":
        exporter = GrpcExporter(endpoint=endpoint, insecure=True, timeout=5)
    else:
        exporter = HttpExporter(endpoint=f"{endpoint}/v1/traces", timeout=5)
    try:
        assert exporter.export(finished) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
        provider.shutdown()
    return dict(provider.resource.attributes)


@pytest.mark.integration
@needs_rotel
@pytest.mark.usefixtures("clean_otel_env")
def test_spans_round_trip_over_grpc_and_http() -> None:
    with RotelCollector() as collector:
        pid = collector.pid
        assert pid_alive(pid)
        assert collector.grpc_endpoint == f"http://127.0.0.1:{collector.grpc_port}"
        assert collector.http_endpoint == f"http://127.0.0.1:{collector.http_port}"
        assert collector.grpc_port != collector.http_port
        assert collector.spans() == []

        expected: dict[str, ReceivedSpan] = {}
        sent_over: dict[str, str] = {}
        resources: dict[str, dict[str, object]] = {}
        for salt, (protocol, endpoint) in enumerate(
            [("grpc", collector.grpc_endpoint), ("http", collector.http_endpoint)]
        ):
            resources[protocol] = _emit(protocol, endpoint, salt)
            for span_id, span in _expected_spans(protocol, salt).items():
                expected[span_id] = span
                sent_over[span_id] = protocol

        def all_arrived(spans: list[ReceivedSpan]) -> bool:
            return set(expected) <= {s.span_id for s in spans}

        received = collector.wait_for_spans(all_arrived, timeout=10)
        workdir = collector.workdir

    assert not pid_alive(pid), f"rotel-agent pid {pid} still alive after exit"
    assert collector.returncode is not None
    assert workdir is not None and not workdir.exists()

    assert len(received) == len(expected) == 8
    assert len({s.span_id for s in received}) == 8
    assert collector.spans() == received
    for span in received:
        want = expected[span.span_id]
        protocol = sent_over[span.span_id]
        assert span.trace_id == want.trace_id
        assert span.parent_span_id == want.parent_span_id
        assert span.name == want.name
        assert span.kind == want.kind
        assert span.status_code == want.status_code
        assert span.status_message == want.status_message
        assert span.start_time_unix_nano == want.start_time_unix_nano
        assert span.end_time_unix_nano == want.end_time_unix_nano
        assert span.attributes == want.attributes
        for key, value in span.attributes.items():
            assert type(value) is type(want.attributes[key]), key
        assert span.events == want.events
        assert span.links == ()
        assert span.scope_name == "spanjournal.selftest"
        assert span.scope_version == "0.1.0"
        assert span.resource_attributes == resources[protocol]
        assert span.service_name == f"router-bench-{protocol}"
        assert span.resource_attributes["run.attempt"] == 2
        assert span.resource_attributes["telemetry.sdk.language"] == "python"


@pytest.mark.integration
@needs_rotel
def test_collector_is_stopped_when_the_body_raises() -> None:
    collector = RotelCollector()
    with pytest.raises(RuntimeError, match="test body failed"), collector:
        pid = collector.pid
        assert collector.is_running()
        raise RuntimeError("test body failed")
    assert not pid_alive(pid)
    assert not collector.is_running()
    assert collector.returncode is not None


@pytest.mark.integration
@needs_rotel
def test_wait_for_spans_is_bounded() -> None:
    with (
        RotelCollector() as collector,
        pytest.raises(TimeoutError, match=re.escape("waited 0.3s for 1 spans; got 0 spans")),
    ):
        collector.wait_for_spans(1, timeout=0.3)


@pytest.mark.integration
@needs_rotel
def test_start_failure_is_loud_and_leaves_nothing_behind() -> None:
    collector = RotelCollector(extra_args=["--exporter-that-does-not-exist"])
    with pytest.raises(CollectorError, match="exited during start-up"):
        collector.start()
    assert not collector.is_running()
    assert collector.workdir is not None and not collector.workdir.exists()


def test_missing_binary_is_reported_and_cleaned_up(tmp_path: Path) -> None:
    collector = RotelCollector(binary=tmp_path / "no-such-agent")
    with pytest.raises(CollectorError, match="cannot run"):
        collector.start()
    assert collector.workdir is not None and not collector.workdir.exists()
    with pytest.raises(CollectorError, match="only once"):
        collector.start()


STUBBORN_AGENT = """\
import signal, socket, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("stubborn agent up", flush=True)
listeners = []
for flag in ("--otlp-grpc-endpoint", "--otlp-http-endpoint"):
    host, port = sys.argv[sys.argv.index(flag) + 1].rsplit(":", 1)
    listener = socket.socket()
    listener.bind((host, int(port)))
    listener.listen()
    listeners.append(listener)
while True:
    time.sleep(1)
"""


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path: Path) -> None:
    agent = tmp_path / "stubborn-agent"
    agent.write_text(f"#!{sys.executable}\n{STUBBORN_AGENT}")
    agent.chmod(0o755)
    collector = RotelCollector(binary=agent, stop_timeout=0.5)
    with collector:
        pid = collector.pid
        assert collector.is_running()
    assert collector.returncode == -signal.SIGKILL
    assert not pid_alive(pid)
    assert "stubborn agent up" in collector.output_text()


SAMPLE = """\
2026-11-27T21:44:45.395308Z  INFO Starting Rotel. grpc_endpoint="127.0.0.1:47317" http_endpoint="127.0.0.1:47318"
ResourceSpans #0
Resource SchemaURL:\x20
Resource attributes:
     -> service.name: Str(router-bench)
     -> run.attempt: Int(2)
ScopeSpans #0
ScopeSpans SchemaURL:\x20
InstrumentationScope spanjournal 0.1.0
InstrumentationScope attributes:
     -> scope.attr: Bool(true)
Span #0
    Trace ID       : 0af7651916cd43dd8448eb211c80319c
    Parent ID      : b7ad6b7169203331
    ID             : 00f067aa0ba902b7
    Name           : run_agent
second line
    Kind           : SPAN_KIND_CLIENT
    TraceState     : a=b
Start time: 1764000000123456789
End time: 1764000009123456790
    Status code    : STATUS_CODE_ERROR
    Status message : quota: exhausted
Attributes:
     -> s: Str(a, b) c)
     -> multi: Str(x

    indented: y
)
     -> i: Int(-3)
     -> d: Double(0.0000001)
     -> b: Bool(false)
     -> arr: Slice(Str(p, q)), Double(1.5), Bool(true))
     -> none: Empty
     -> m: Map(x:Int(1), y:Str(z))
     -> raw: Bytes([0, 1, 97])
     -> nothing: Slice()
Events:
SpanEvent #0
     -> Name: exception
     -> Timestamp: 1764000008000000000
     -> DroppedAttributesCount: 0
     -> Attributes::
          -> exception.type: Str(QuotaError)
          -> exception.stacktrace: Str(Traceback (most recent call last):
  File "x.py", line 1, in <module>
    raise QuotaError("no")
QuotaError: no
)
Links:
SpanLink #0
     -> Trace ID: 4bf92f3577b34da6a3ce929d0e0e4736
     -> ID: 1a2b3c4d5e6f7081
     -> TraceState:\x20
     -> DroppedAttributesCount: 0
Span #1
    Trace ID       : 0af7651916cd43dd8448eb211c80319c
    Parent ID      :\x20
    ID             : b7ad6b7169203331
    Name           :\x20
    Kind           : SPAN_KIND_UNSPECIFIED
Start time: 0
End time: 0
ResourceSpans #1
Resource SchemaURL: http://example/schema
ScopeSpans #0
ScopeSpans SchemaURL:\x20
InstrumentationScope bare\x20
Span #0
    Trace ID       : 4bf92f3577b34da6a3ce929d0e0e4736
    Parent ID      :\x20
    ID             : 1a2b3c4d5e6f7081
    Name           : lone
    Kind           : SPAN_KIND_CONSUMER
Start time: 5
End time: 6
    Status code    : STATUS_CODE_OK
    Status message :\x20
2026-11-27T21:44:50.000000Z  INFO Shutdown signal received.
"""


def test_parser_reads_every_part_of_a_real_dump() -> None:
    first, bare, lone = parse_debug_output(SAMPLE)
    assert first.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert first.parent_span_id == "b7ad6b7169203331"
    assert first.span_id == "00f067aa0ba902b7"
    assert first.name == "run_agent\nsecond line"
    assert first.kind == "CLIENT"
    assert first.trace_state == "a=b"
    assert (first.start_time_unix_nano, first.end_time_unix_nano) == (1764000000123456789, 1764000009123456790)
    assert (first.status_code, first.status_message) == ("ERROR", "quota: exhausted")
    assert first.attributes == {
        "s": "a, b) c",
        "multi": "x\n\n    indented: y\n",
        "i": -3,
        "d": 1e-7,
        "b": False,
        "arr": ("p, q)", 1.5, True),
        "none": None,
        "m": {"x": 1, "y": "z"},
        "raw": b"\x00\x01a",
        "nothing": (),
    }
    assert first.resource_attributes == {"service.name": "router-bench", "run.attempt": 2}
    assert first.service_name == "router-bench"
    assert (first.scope_name, first.scope_version, first.scope_attributes) == (
        "spanjournal",
        "0.1.0",
        {"scope.attr": True},
    )
    assert first.events == (
        ReceivedEvent(
            "exception",
            1764000008000000000,
            {
                "exception.type": "QuotaError",
                "exception.stacktrace": 'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n'
                '    raise QuotaError("no")\nQuotaError: no\n',
            },
        ),
    )
    assert [(link.trace_id, link.span_id, link.attributes) for link in first.links] == [
        ("4bf92f3577b34da6a3ce929d0e0e4736", "1a2b3c4d5e6f7081", {})
    ]
    assert (bare.name, bare.kind, bare.status_code, bare.status_message) == ("", "UNSPECIFIED", "UNSET", "")
    assert bare.resource_attributes == first.resource_attributes
    assert (lone.kind, lone.status_code, lone.resource_attributes) == ("CONSUMER", "OK", {})
    assert (lone.scope_name, lone.scope_version) == ("bare", "")


def test_parser_ignores_colour_codes_on_log_lines_and_an_unfinished_last_line() -> None:
    coloured = "\x1b[2m2026-11-27T21:42:41.334667Z\x1b[0m \x1b[32m INFO\x1b[0m Starting Rotel.\n"
    assert parse_debug_output(coloured + SAMPLE + "ResourceSpans #2") == parse_debug_output(SAMPLE)
    assert parse_debug_output("") == []


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("k: Str()", ("k", "")),
        ("k: Str(()", ("k", "(")),
        ("k: Double(inf)", ("k", float("inf"))),
        ("k: Double(-2)", ("k", -2.0)),
        ("k: Int(9223372036854775807)", ("k", 2**63 - 1)),
        ("a.b: Slice(Slice(Int(1)), Map())", ("a.b", ((1,), {}))),
    ],
)
def test_parse_attribute(entry: str, expected: tuple[str, object]) -> None:
    assert parse_attribute(entry) == expected


def _corrupt(old: str, new: str) -> str:
    assert old in SAMPLE
    return SAMPLE.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        (_corrupt("Trace ID       : 0af7651916cd43dd8448eb211c80319c", "Trace ID       : 0AF7"), "bad trace id"),
        (_corrupt("ID             : 00f067aa0ba902b7", "ID             : xyz"), "bad span id"),
        (_corrupt("Parent ID      : b7ad6b7169203331", "Parent ID      : 12"), "bad parent span id"),
        (_corrupt("End time: 1764000009123456790\n", ""), "missing start or end time"),
        (_corrupt("Start time: 1764000000123456789", "Start time: 2025-01-01"), "not an integer time"),
        (_corrupt("SPAN_KIND_CLIENT", "SPAN_KIND_WEIRD"), "unknown kind"),
        (_corrupt("STATUS_CODE_ERROR", "STATUS_CODE_MAYBE"), "unknown status code"),
        (_corrupt("     -> i: Int(-3)", "     -> i: Int(three)"), "cannot parse attribute"),
        (_corrupt("     -> i: Int(-3)", "     -> i: Quaternion(1)"), "cannot parse attribute"),
        (_corrupt("Span #1\n", "Span #1\nSurprise\n"), "unrecognised line"),
        (_corrupt("    Kind           : SPAN_KIND_UNSPECIFIED\n", ""), "missing 'Kind'"),
        (_corrupt("Events:\n", ""), "misplaced item"),
    ],
)
def test_parser_fails_loudly_on_blocks_it_cannot_read(text: str, complaint: str) -> None:
    with pytest.raises(CollectorOutputError, match=complaint):
        parse_debug_output(text)
