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
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from datetime import datetime

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode, format_span_id, format_trace_id
from opentelemetry.util.types import AttributeValue

import spanjournal
from spanjournal import Completed, Dispatched, Journal, config
from spanjournal import processor as processor_module
from spanjournal._process import self_identity

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
