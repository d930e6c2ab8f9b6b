"""claude-hook with the OTLP variables set: completed sub-agents arrive at a real collector (rotel-agent)
as spans with the journal's trace and span ids, start and end times; the hook never fails for the collector."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from claude_session import HOOK, failure, post, pre

try:
    from otlp_collector import ReceivedSpan, RotelCollector, rotel_available
except ModuleNotFoundError:  # tests/ imported as a package (importlib import mode)
    from tests.otlp_collector import ReceivedSpan, RotelCollector, rotel_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not rotel_available(), reason="rotel-agent not installed (pip install rotel)"),
]

QUIET_SECONDS = 0.5


def clean_env(journal: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "SPANJOURNAL_", "CLAUDE_"))
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy")
    }
    env.update(SPANJOURNAL_PATH=str(journal), NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    env.update(extra)
    return env


def hook(event: dict[str, Any], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        HOOK, input=json.dumps(event), capture_output=True, text=True, timeout=60, env=env, check=False
    )


def ns(ts: str) -> int:
    moment = datetime.fromisoformat(ts)
    whole = int(moment.timestamp())
    return whole * 1_000_000_000 + moment.microsecond * 1000


def lines(journal: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in journal.read_text().splitlines()]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_completed_sub_agents_arrive_as_spans_with_the_journals_ids(tmp_path: Path, protocol: str) -> None:
    journal = tmp_path / "subagents.jsonl"
    with RotelCollector() as collector:
        endpoint = collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint
        env = clean_env(journal, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_EXPORTER_OTLP_PROTOCOL=protocol)
        for n in range(3):
            assert hook(pre("s1", n), env).returncode == 0
        for event in (post("s1", 0), failure("s1", 1, "API Error: 529 overloaded")):
            r = hook(event, env)
            assert (r.returncode, r.stderr) == (0, "")
        collector.wait_for_spans(2, timeout=10)
        time.sleep(QUIET_SECONDS)
        received = {s.span_id: s for s in collector.spans()}

    events = lines(journal)
    dispatches = {e["span_id"]: e for e in events if e["event"] == "subagent_dispatched"}
    completions = {e["span_id"]: e for e in events if e["event"] == "subagent_completed"}
    assert set(received) == set(completions)  # the one still running is not sent
    for span_id, completion in completions.items():
        span: ReceivedSpan = received[span_id]
        dispatch = dispatches[span_id]
        assert span.trace_id == dispatch["trace_id"] == completion["trace_id"]
        assert (span.start_time_unix_nano, span.end_time_unix_nano) == (ns(dispatch["ts"]), ns(completion["ts"]))
        assert span.name == "invoke_agent general-purpose"
        assert span.service_name == "claude-code"
        assert span.attributes["spanjournal.chunk_id"] == dispatch["chunk_id"]
        assert span.attributes["spanjournal.task_description"] == dispatch["task_description"]
        assert span.attributes["claude.tool_use_id"] == dispatch["attrs"]["claude.tool_use_id"]
        if completion["success"]:
            assert span.status_code == "OK"
            assert span.attributes["gen_ai.usage.output_tokens"] == completion["output_tokens"]
        else:
            assert span.status_code == "ERROR"
            assert span.status_message == "API Error: 529 overloaded"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_collector_that_is_not_there_never_fails_the_hook(tmp_path: Path) -> None:
    journal = tmp_path / "subagents.jsonl"
    env = clean_env(
        journal,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}",
        SPANJOURNAL_CLAUDE_EXPORT_TIMEOUT="0.5",
    )
    assert hook(pre("s1", 0), env).returncode == 0
    r = hook(post("s1", 0), env)
    assert r.returncode == 0
    assert r.stdout == ""
    assert r.stderr.startswith("spanjournal: the span of ") and len(r.stderr.splitlines()) == 1
    assert [e["event"] for e in lines(journal)] == ["subagent_dispatched", "subagent_completed"]
