"""End to end against a real collector: every journaled dispatch arrives as a span, failures as ERROR.

rotel-agent (from the ``rotel`` PyPI package) runs on free loopback ports and
prints every span it receives; configure() sends to it over OTLP/gRPC and
OTLP/HTTP, set up by arguments and by the standard environment variables.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import spanjournal
from otlp_collector import ReceivedSpan, RotelCollector, rotel_available
from spanjournal import config

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not rotel_available(), reason="rotel-agent not installed (pip install rotel)"),
]


class QuotaError(Exception):
    pass


@pytest.fixture(scope="module")
def collector() -> Iterator[RotelCollector]:
    with RotelCollector() as c:
        yield c


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(("OTEL_", "SPANJOURNAL_")) or name.lower() in ("http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    previous = config._activate(None)
    yield
    current = config.current()
    if current is not None:
        current.shutdown()
    config._activate(previous)


def run_workload() -> None:
    """Twelve dispatches on four threads: successes, exceptions, recorded failures, a nested one."""

    @spanjournal.dispatch(
        chunk_id=lambda n: f"batch-{n // 4}-case-{n:03d}",
        task_description="Route prompt to expected skill",
        items_assigned=1,
        output_file=lambda n: f"responses/{n:03d}.json",
        batch=lambda n: f"batch-{n // 4}",
        agent_name="router",
    )
    def agent(n: int) -> None:
        handle = spanjournal.current_dispatch()
        handle.record(input_tokens=100 + n, output_tokens=n)
        if n % 5 == 1:
            raise QuotaError(f"quota exceeded at case {n}")
        if n % 5 == 2:
            handle.record(success=False, error="429 Too Many Requests", error_type="QuotaMessage")
        if n == 3:
            with spanjournal.dispatch_span("batch-0-case-003-sub", agent_name="checker"):
                pass

    def worker(numbers: range) -> None:
        for n in numbers:
            with contextlib.suppress(QuotaError):
                agent(n)

    threads = [threading.Thread(target=worker, args=(range(t, 12, 4),)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)


def check_arrivals(collector: RotelCollector, journal: Path, service: str) -> None:
    lines = [msgspec.json.decode(line) for line in journal.read_bytes().splitlines()]
    dispatched = {e["span_id"]: e for e in lines if e["event"] == "subagent_dispatched"}
    completed = {e["span_id"]: e for e in lines if e["event"] == "subagent_completed"}
    assert len(dispatched) == 13 and dispatched.keys() == completed.keys()

    def ours(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
        return [s for s in spans if s.service_name == service]

    def all_arrived(spans: list[ReceivedSpan]) -> bool:
        return {s.span_id for s in ours(spans)} >= dispatched.keys()

    received = {s.span_id: s for s in ours(collector.wait_for_spans(all_arrived, timeout=20))}
    assert received.keys() == dispatched.keys(), "exactly the journaled dispatches arrived"
    failures = 0
    for span_id, start in dispatched.items():
        span, end = received[span_id], completed[span_id]
        assert span.trace_id == start["trace_id"] == end["trace_id"]
        assert span.parent_span_id == start.get("parent_span_id", "")
        assert span.attributes["spanjournal.chunk_id"] == start["chunk_id"]
        assert span.attributes["spanjournal.session_id"] == start["session_id"]
        assert span.attributes["gen_ai.operation.name"] == "invoke_agent"
        assert span.kind == "CLIENT"
        assert span.resource_attributes["service.name"] == service == start["service_name"]
        if end["success"]:
            assert span.status_code == "UNSET"
        else:
            failures += 1
            assert span.status_code == "ERROR"
            assert span.status_message == end["error"]
            assert span.attributes["error.type"] == end["error_type"]
        if start["chunk_id"].endswith("-sub"):
            assert span.name == "invoke_agent checker"
            parent = dispatched[start["parent_span_id"]]
            assert parent["chunk_id"] == "batch-0-case-003"
        else:
            assert span.name == "invoke_agent router"
            assert span.attributes["spanjournal.output_file"] == start["output_file"]
            assert span.attributes["gen_ai.usage.input_tokens"] == end["input_tokens"]
    assert failures == 5  # cases 1, 6, 11 raised; cases 2, 7 recorded a failure


def configure_for(protocol: str, via: str, collector: RotelCollector, journal: Path, service: str,
                  monkeypatch: pytest.MonkeyPatch) -> Any:
    endpoint = collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint
    if via == "arguments":
        return spanjournal.configure(
            journal=journal, service_name=service, exporter="otlp", endpoint=endpoint, protocol=protocol,
            headers={"x-spanjournal-test": "1"}, set_global=False,
        )  # fmt: skip
    monkeypatch.setenv("OTEL_SERVICE_NAME", service)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-spanjournal-test=1")
    monkeypatch.setenv("SPANJOURNAL_PATH", str(journal))
    return spanjournal.configure(set_global=False)


@pytest.mark.parametrize("via", ["arguments", "environment"])
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_every_journaled_dispatch_arrives_at_the_collector(
    protocol: str, via: str, collector: RotelCollector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = f"bridge-{protocol.replace('/', '-')}-{via}"
    journal = tmp_path / "run.jsonl"
    sj = configure_for(protocol, via, collector, journal, service, monkeypatch)
    assert [c.protocol for c in sj.exporters] == [protocol]
    run_workload()
    sj.shutdown(timeout=15)
    check_arrivals(collector, journal, service)
