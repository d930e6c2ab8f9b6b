"""Overhead of a journaled dispatch against a plain OpenTelemetry span.

    python benchmarks/bench_overhead.py [--quick]

Every row is one way of running an empty agent, timed per call in the same
run on one thread, in many short rounds interleaved row by row (so that load
from other processes falls on every row alike); ratios are against the plain
SDK span with a ``BatchSpanProcessor`` whose exporter drops everything:

- ``plain span``: ``tracer.start_as_current_span(name)`` with no attributes;
- ``plain span + attrs``: the same span with the attributes a dispatch
  carries (chunk id, session, task, items, agent at start; token usage
  before the end), set by hand: what instrumenting without spanjournal
  costs;
- ``straightforward``: a naive processor and decorator, for scale: the
  tracer looked up per call, attributes checked per call, a schema struct
  and ``datetime.isoformat`` per event;
- ``@dispatch, durability=...``: the decorator with the journal processor
  (and the same dropping batch processor), for each durability mode; the
  body records token usage like a real agent;
- ``@dispatch, none, hand-built lines``: the same with the lines built as
  the processor did before they went through the schema structs (the
  fields that repeat encoded once and cached): what a second copy of the
  schema would save;
- ``@dispatch, none, public span API``: the same with the processor reading
  spans through the SDK's public API only (what it does when the check of
  the private fields fails).

The target (issue 3) is ``@dispatch, durability=none`` at most 1.5x ``plain
span + attrs``. ``fsync`` is dominated by the disk's sync latency; it is
shown for scale with fewer calls.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from datetime import datetime
from typing import Any

import msgspec
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode, format_span_id, format_trace_id
from opentelemetry.util.types import AttributeValue

import spanjournal
from spanjournal import Completed, Dispatched, Journal, config, semconv
from spanjournal import processor as processor_module
from spanjournal._process import self_identity
from spanjournal._schema import COMPLETED, DISPATCHED, SCHEMA_VERSION
from spanjournal.processor import JournalSpanProcessor

SESSION = "5f0c6f0e-7d6b-4c1e-9b1a-3c9d2e8f1a20"


class DropExporter(SpanExporter):
    """Accepts every batch and keeps nothing."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def plain_runner(with_attributes: bool) -> Callable[[int], None]:
    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}), shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))
    tracer = provider.get_tracer("bench")

    if not with_attributes:

        def bare(i: int) -> None:
            with tracer.start_as_current_span("invoke_agent router"):
                pass

        return bare

    def with_attrs(i: int) -> None:
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "router",
            "spanjournal.task_description": "Route prompt to expected skill",
            "spanjournal.items_assigned": 1,
            "spanjournal.chunk_id": f"batch-3-case-{i:06d}",
            "spanjournal.session_id": SESSION,
        }
        with tracer.start_as_current_span("invoke_agent router", attributes=attributes) as span:
            span.set_attributes({"gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 234})

    return with_attrs


def dispatch_runner(journal_path: Path, durability: str) -> tuple[Callable[[int], None], config.Spanjournal]:
    sj = config.build(
        journal_path,
        durability=durability,  # type: ignore[arg-type]
        session_id=SESSION,
        service_name="bench",
        exporter=DropExporter(),
        set_global=False,
    )

    @spanjournal.dispatch(
        chunk_id=lambda i: f"batch-3-case-{i:06d}",
        task_description="Route prompt to expected skill",
        items_assigned=1,
        agent_name="router",
    )
    def run_agent(i: int) -> None:
        spanjournal.current_dispatch().record(input_tokens=1000, output_tokens=234)

    return run_agent, sj


class HandBuiltLinesProcessor(JournalSpanProcessor):
    """The processor as it was before lines were encoded through the schema structs, for scale.

    It encoded the fields that repeat from dispatch to dispatch once per
    distinct set and glued them to a dict encoded per event: a second copy of
    the schema. Its row shows what that copy saved.
    """

    _tails: dict[tuple[Any, ...], bytes]
    _completion_tail: tuple[object, bytes]

    def _dispatch_line(
        self,
        chunk_id: str,
        start_ns: int,
        trace_id: int,
        span_id: int,
        parent_span_id: int | None,
        attributes: Mapping[str, Any],
        service_name: str | None,
        agent_override: str | None = None,
    ) -> bytes:
        get = attributes.get
        session = get(_SESSION_ID)
        task = get(_TASK_DESCRIPTION)
        batch = get(_BATCH)
        agent = agent_override or get(_AGENT)
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



_KNOWN_START_KEYS = processor_module._KNOWN_START_KEYS
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
_getcwd = processor_module._getcwd
_str_or_none = processor_module._str_or_none
bound_error = processor_module.bound_error


def hand_built(sj: config.Spanjournal) -> None:
    """Make ``sj``'s processor build its lines by hand, as before."""
    processor = sj.processor
    processor.__class__ = HandBuiltLinesProcessor
    assert isinstance(processor, HandBuiltLinesProcessor)
    processor._tails = {}
    processor._completion_tail = (None, b"")


class NaiveJournalProcessor(SpanProcessor):
    """The straightforward processor, for scale: a schema struct and ``datetime.isoformat`` per event."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        attrs = span.attributes or {}
        if "spanjournal.chunk_id" not in attrs:
            return
        host, pid, proc_start = self_identity()
        ctx = span.get_span_context()
        self.journal.append(
            Dispatched(
                ts=datetime.fromtimestamp((span.start_time or 0) / 1e9).astimezone().isoformat(timespec="microseconds"),
                session_id=str(attrs.get("spanjournal.session_id", "")),
                chunk_id=str(attrs["spanjournal.chunk_id"]),
                task_description=str(attrs.get("spanjournal.task_description")),
                items_assigned=int(attrs.get("spanjournal.items_assigned", 0)),  # type: ignore[arg-type]
                trace_id=format_trace_id(ctx.trace_id),
                span_id=format_span_id(ctx.span_id),
                parent_span_id=format_span_id(span.parent.span_id) if span.parent else None,
                host=host,
                pid=pid,
                proc_start=proc_start,
                agent=str(attrs.get("gen_ai.agent.name")),
                service_name=str(span.resource.attributes.get("service.name")),
            )
        )

    def on_end(self, span: ReadableSpan) -> None:
        attrs = span.attributes or {}
        if "spanjournal.chunk_id" not in attrs or span.context is None:
            return
        host, pid, _ = self_identity()
        self.journal.append(
            Completed(
                ts=datetime.fromtimestamp((span.end_time or 0) / 1e9).astimezone().isoformat(timespec="microseconds"),
                session_id=str(attrs.get("spanjournal.session_id", "")),
                chunk_id=str(attrs["spanjournal.chunk_id"]),
                success=span.status.status_code is not StatusCode.ERROR,
                input_tokens=attrs.get("gen_ai.usage.input_tokens"),  # type: ignore[arg-type]
                output_tokens=attrs.get("gen_ai.usage.output_tokens"),  # type: ignore[arg-type]
                duration_ms=((span.end_time or 0) - (span.start_time or 0)) / 1e6,
                trace_id=format_trace_id(span.context.trace_id),
                span_id=format_span_id(span.context.span_id),
                host=host,
                pid=pid,
            )
        )


def naive_runner(journal_path: Path) -> tuple[Callable[[int], None], Journal]:
    """The straightforward decorator: the tracer looked up and every attribute checked per call."""
    journal = Journal(journal_path, durability="none")
    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}), shutdown_on_exit=False)
    provider.add_span_processor(NaiveJournalProcessor(journal))
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))

    def naive_dispatch(func: Callable[[int], None]) -> Callable[[int], None]:
        def run(i: int) -> None:
            attributes: dict[str, AttributeValue] = {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "router",
                "spanjournal.task_description": "Route prompt to expected skill",
                "spanjournal.items_assigned": 1,
                "spanjournal.chunk_id": f"batch-3-case-{i:06d}",
                "spanjournal.session_id": SESSION,
            }
            for key, value in attributes.items():
                if not isinstance(key, str) or not isinstance(value, (str, int)):
                    raise TypeError(key)
            tracer = provider.get_tracer("spanjournal", "0.1.0")
            with tracer.start_as_current_span("invoke_agent router", kind=SpanKind.CLIENT, attributes=attributes):
                func(i)

        return run

    @naive_dispatch
    def run_agent(i: int) -> None:
        trace.get_current_span().set_attributes({"gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 234})

    return run_agent, journal


#: Rows that read spans through the SDK's public API instead of the checked private fields.
PUBLIC_API_ROWS: set[str] = set()
PRIVATE_FIELDS = processor_module._PRIVATE_FIELDS


def time_per_call(
    run: Callable[[int], None], calls: int, start: int, sj: config.Spanjournal | None, name: str = ""
) -> float:
    """Seconds per call of ``run`` over ``calls`` calls (with ``sj`` the active configuration)."""
    config._activate(sj)
    processor_module._PRIVATE_FIELDS = PRIVATE_FIELDS and name not in PUBLIC_API_ROWS
    t0 = time.perf_counter()
    for i in range(start, start + calls):
        run(i)
    return (time.perf_counter() - t0) / calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (a few seconds)")
    parser.add_argument("--calls", type=int, default=100, help="calls per timed round (default 100)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 300, quick 60)")
    args = parser.parse_args(argv)
    calls = args.calls
    rounds = args.rounds or (60 if args.quick else 300)
    fsync_calls = 2

    with tempfile.TemporaryDirectory(prefix="spanjournal-bench-", dir=Path(__file__).resolve().parent) as tmp:
        runners: dict[str, tuple[Callable[[int], None], int, config.Spanjournal | None]] = {
            "plain span": (plain_runner(False), calls, None),
            "plain span + attrs": (plain_runner(True), calls, None),
        }
        naive, naive_journal = naive_runner(Path(tmp) / "naive.jsonl")
        runners["straightforward, durability=none"] = (naive, calls, None)
        configured: list[config.Spanjournal] = []
        for mode in ("none", "flush", "fsync"):
            run, sj = dispatch_runner(Path(tmp) / f"{mode}.jsonl", mode)
            configured.append(sj)
            runners[f"@dispatch, durability={mode}"] = (run, fsync_calls if mode == "fsync" else calls, sj)
            if mode == "none":
                run, sj = dispatch_runner(Path(tmp) / "public.jsonl", mode)
                configured.append(sj)
                runners["@dispatch, none, public span API"] = (run, calls, sj)
                PUBLIC_API_ROWS.add("@dispatch, none, public span API")
                run, sj = dispatch_runner(Path(tmp) / "hand-built.jsonl", mode)
                hand_built(sj)
                configured.append(sj)
                runners["@dispatch, none, hand-built lines"] = (run, calls, sj)

        samples: dict[str, list[float]] = {name: [] for name in runners}
        counter = 0
        for name, (run, n, active) in runners.items():  # warm up
            time_per_call(run, n * 5, counter, active, name)
            counter += 1_000_000
        for _ in range(rounds):
            for name, (run, n, active) in runners.items():
                samples[name].append(time_per_call(run, n, counter, active, name))
                counter += 1_000_000
        config._activate(None)
        for configured_sj in configured:
            configured_sj.shutdown()
        naive_journal.close()

    def fast(values: list[float]) -> float:
        return sorted(values)[len(values) // 10]

    base, base_attrs = fast(samples["plain span"]), fast(samples["plain span + attrs"])
    mid, mid_attrs = statistics.median(samples["plain span"]), statistics.median(samples["plain span + attrs"])
    print(f"{'':34} {'us/call':>8} {'vs plain':>9} {'vs plain+attrs':>15}   {'median':>8} {'vs plain+attrs':>15}")
    for name, values in samples.items():
        per, med = fast(values), statistics.median(values)
        print(
            f"{name:34} {per * 1e6:8.2f} {per / base:8.2f}x {per / base_attrs:14.2f}x"
            f"   {med * 1e6:8.2f} {med / mid_attrs:14.2f}x"
        )
    print(
        f"\nus/call: fastest decile of {rounds} interleaved rounds of {calls} calls (fsync: {fsync_calls}), "
        f"the cost with the least interference;\nmedian: the middle round. Python {sys.version.split()[0]}; "
        f"plain span median {mid * 1e6:.2f} us."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
