"""`spanjournal export` against a real OTLP collector (rotel-agent), over gRPC and HTTP/protobuf.

The journals come from real child processes killed with SIGKILL mid-dispatch: a fan-out
(done, failed and hanging chunks; some hanging ones wrote their output, and
`spanjournal reconcile --apply` records those as done) and a nested run (an orchestrator
dispatch whose sub-agent dispatches are done, failed and hanging). Every attempt must arrive
once, with its original ids and times, the right status and markers; nothing else may arrive.

The expectations are computed from the journal lines with the standard library, not with
spanjournal's reader or export code.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from crash_helpers import crash_fanout
from spanjournal.cli import main
from spanjournal.testing import dispatched_at_least, run_and_kill

try:
    from otlp_collector import ReceivedSpan, RotelCollector, rotel_available
except ModuleNotFoundError:  # tests/ imported as a package (importlib import mode)
    from tests.otlp_collector import ReceivedSpan, RotelCollector, rotel_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not rotel_available(), reason="rotel-agent not installed (pip install rotel)"),
]

FANOUT_SERVICE = "export-it-fanout"
NESTED_SERVICE = "export-it-nested"
CHUNKS = [f"batch-{i // 4}-case-{i:03d}" for i in range(10)]
FAIL = {CHUNKS[1], CHUNKS[6]}
HANG = {CHUNKS[3], CHUNKS[7], CHUNKS[8], CHUNKS[9]}
#: Hanging chunks whose output file is removed before reconcile: they stay unfinished.
STAY_UNFINISHED = {CHUNKS[7], CHUNKS[9]}
#: How long to keep listening after the expected spans arrived, to see that nothing else does.
QUIET_SECONDS = 0.5


def nested_run(journal: str) -> None:
    """A child process: an orchestrator dispatch whose sub-agents end done, failed, and hanging."""
    import spanjournal

    spanjournal.configure(journal=journal, service_name=NESTED_SERVICE, exporter="none", set_global=False)
    with spanjournal.dispatch_span("orchestrator", task_description="fan out", agent_name="orchestrator"):
        with spanjournal.dispatch_span("sub-done", agent_name="worker") as d:
            d.record(tokens_used=7)
        try:
            with spanjournal.dispatch_span("sub-failed", agent_name="worker"):
                raise TimeoutError("sub-agent timed out")
        except TimeoutError:
            pass
        with spanjournal.dispatch_span("sub-hang", agent_name="worker"):
            threading.Event().wait()


@dataclass(frozen=True)
class Expected:
    """One attempt as the collector must receive it."""

    chunk_id: str
    kind: str  # done | failed | reconciled | unfinished
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    service_name: str
    error: str | None = None
    error_type: str | None = None


def _ns(ts: str) -> int:
    dt = datetime.fromisoformat(ts)
    return int(dt.replace(microsecond=0).timestamp()) * 1_000_000_000 + dt.microsecond * 1_000


def expected_attempts(journal: Path, service_name: str) -> list[Expected]:
    """Every dispatch of ``journal`` and how it must arrive, from the raw lines."""
    lines = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    dispatches = [e for e in lines if e["event"] == "subagent_dispatched"]
    completions = {e["span_id"]: e for e in lines if e["event"] == "subagent_completed"}
    last_by_pid: dict[int, int] = {}
    for e in lines:
        if e["event"] != "run_planned" and not e.get("reconciled"):
            last_by_pid[e["pid"]] = max(last_by_pid.get(e["pid"], 0), _ns(e["ts"]))
    out = []
    for d in dispatches:
        c = completions.get(d["span_id"])
        if c is None:
            kind, end = "unfinished", last_by_pid[d["pid"]]
        else:
            kind = "reconciled" if c.get("reconciled") else ("done" if c["success"] else "failed")
            end = _ns(c["ts"])
        out.append(
            Expected(
                chunk_id=d["chunk_id"],
                kind=kind,
                trace_id=d["trace_id"],
                span_id=d["span_id"],
                parent_span_id=d.get("parent_span_id", ""),
                start_ns=_ns(d["ts"]),
                end_ns=end,
                service_name=service_name,
                error=c.get("error") if c else None,
                error_type=c.get("error_type") if c else None,
            )
        )
    return out


@dataclass
class Journals:
    paths: list[Path]
    attempts: list[Expected]


@pytest.fixture(scope="module")
def journals(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Journals]:
    """Two crashed runs' journals, one of them reconciled, and what every attempt must look like."""
    root = tmp_path_factory.mktemp("export-otlp")
    env_before = {k: v for k, v in os.environ.items() if k.startswith("OTEL_")}
    for name in env_before:
        del os.environ[name]
    try:
        fanout = root / "fanout.jsonl"
        outputs = root / "out"
        run = crash_fanout(
            fanout, CHUNKS, hang=HANG, fail=FAIL, outputs=outputs, service_name=FANOUT_SERVICE, timeout=30
        )
        assert run.killed and run.returncode == -9
        for chunk_id in STAY_UNFINISHED:
            (outputs / f"{chunk_id}.json").unlink()
        for chunk_id in HANG - STAY_UNFINISHED:
            # Written after the child's last journal line (as by an agent killed right after
            # writing): the reconciled span ends then, and that must not move the end of the
            # child's unfinished spans, which end at the last event the child itself wrote.
            os.utime(outputs / f"{chunk_id}.json")
        assert main(["reconcile", str(fanout), "--apply"]) == 0

        nested = root / "nested.jsonl"
        child = run_and_kill(nested_run, (str(nested),), kill_when=dispatched_at_least(nested, 4), timeout=30)
        assert child.killed and child.returncode == -9, child.output

        attempts = expected_attempts(fanout, FANOUT_SERVICE) + expected_attempts(nested, NESTED_SERVICE)
        yield Journals([fanout, nested], attempts)
    finally:
        os.environ.update(env_before)


def test_the_journals_hold_every_kind_of_attempt(journals: Journals) -> None:
    kinds = {(a.chunk_id, a.kind) for a in journals.attempts}
    assert kinds == (
        {(c, "done") for c in CHUNKS if c not in FAIL | HANG}
        | {(c, "failed") for c in FAIL}
        | {(c, "reconciled") for c in HANG - STAY_UNFINISHED}
        | {(c, "unfinished") for c in STAY_UNFINISHED}
        | {("orchestrator", "unfinished"), ("sub-done", "done"), ("sub-failed", "failed"), ("sub-hang", "unfinished")}
    )
    by_chunk = {a.chunk_id: a for a in journals.attempts}
    orchestrator = by_chunk["orchestrator"].span_id
    for sub in ("sub-done", "sub-failed", "sub-hang"):
        assert by_chunk[sub].parent_span_id == orchestrator
        assert by_chunk[sub].trace_id == by_chunk["orchestrator"].trace_id


def export_to(collector: RotelCollector, protocol: str, journals: Journals, *extra: str) -> list[ReceivedSpan]:
    endpoint = collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint
    argv = ["export", *map(str, journals.paths), "--endpoint", endpoint, "--protocol", protocol, "--timeout", "5"]
    assert main([*argv, *extra]) == 0
    return collector.spans()


def settle(collector: RotelCollector, count: int) -> list[ReceivedSpan]:
    """The spans once ``count`` arrived and then nothing more for a while."""
    collector.wait_for_spans(count, timeout=10)
    time.sleep(QUIET_SECONDS)
    return collector.spans()


def check(received: ReceivedSpan, want: Expected) -> None:
    where = f"{want.kind} {want.chunk_id}"
    assert received.trace_id == want.trace_id, where
    assert received.parent_span_id == want.parent_span_id, where
    assert (received.start_time_unix_nano, received.end_time_unix_nano) == (want.start_ns, want.end_ns), where
    assert received.kind == "CLIENT", where
    assert received.service_name == want.service_name, where
    attrs: dict[str, Any] = received.attributes
    assert attrs["spanjournal.chunk_id"] == want.chunk_id, where
    assert attrs["gen_ai.operation.name"] == "invoke_agent", where
    assert received.name == f"invoke_agent {attrs['gen_ai.agent.name']}", where
    if want.kind == "done":
        assert received.status_code == "OK", where
        assert not any(k in attrs for k in ("spanjournal.unfinished", "spanjournal.reconciled", "error.type"))
    elif want.kind == "reconciled":
        assert received.status_code == "OK", where
        assert attrs["spanjournal.reconciled"] is True, where
        assert "spanjournal.unfinished" not in attrs, where
    elif want.kind == "failed":
        assert (received.status_code, received.status_message) == ("ERROR", want.error), where
        assert attrs["error.type"] == want.error_type, where
        assert "spanjournal.unfinished" not in attrs, where
    else:
        assert (received.status_code, received.status_message) == ("ERROR", "no completion recorded"), where
        assert attrs["spanjournal.unfinished"] is True, where
        assert attrs["spanjournal.end_time_source"] == "process_last_event", where


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_every_attempt_arrives_once_as_it_was_and_nothing_else(journals: Journals, protocol: str) -> None:
    want = {a.span_id: a for a in journals.attempts}
    with RotelCollector() as collector:
        export_to(collector, protocol, journals)
        received = settle(collector, len(want))
    assert sorted(s.span_id for s in received) == sorted(want)
    for span in received:
        check(span, want[span.span_id])
    tokens = {s.attributes["spanjournal.chunk_id"]: s.attributes.get("gen_ai.usage.input_tokens") for s in received}
    assert tokens[CHUNKS[0]] == 100
    assert received[0].scope_name == "spanjournal"


def test_only_unfinished_sends_exactly_the_attempts_whose_live_span_never_ended(journals: Journals) -> None:
    # Unfinished ones, and reconciled ones: completed later by reconcile, never by their own process.
    want = {a.span_id: a for a in journals.attempts if a.kind in ("unfinished", "reconciled")}
    assert {a.kind for a in want.values()} == {"unfinished", "reconciled"}
    with RotelCollector() as collector:
        export_to(collector, "grpc", journals, "--only", "unfinished")
        received = settle(collector, len(want))
    assert sorted(s.span_id for s in received) == sorted(want)
    for span in received:
        check(span, want[span.span_id])
