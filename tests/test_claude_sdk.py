"""``spanjournal.claude.hooks()`` through the Claude Agent SDK's own client and hook protocol.

The CLI's side is played by a scripted transport (``claude_sdk_cli.py``): the
SDK registers the hooks at ``initialize`` and answers the CLI's
``hook_callback`` requests, as with the real CLI. No network, no API key.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from claude_agent_sdk import ClaudeAgentOptions
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import spanjournal
import spanjournal.claude
import spanjournal.config
from claude_sdk_cli import HookCall, denied, run_session
from claude_session import failure, post, pre
from spanjournal import ChunkState, read_ledger
from spanjournal.claude import chunk_id_for, output_path, session_span_id_for, trace_id_for

pytestmark = pytest.mark.integration

TESTS = Path(__file__).parent


def chunk(n: int) -> str:
    return chunk_id_for("general-purpose", pre("s", n)["tool_input"]["prompt"])


def lines(journal: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in journal.read_text().splitlines()]


@pytest.fixture
def configured(tmp_path: Path) -> Iterator[tuple[Path, InMemorySpanExporter]]:
    journal = tmp_path / "sdk.jsonl"
    exporter = InMemorySpanExporter()
    sj = spanjournal.configure(journal=journal, exporter=exporter, set_global=False, service_name="sdk-test")
    try:
        yield journal, exporter
    finally:
        sj.shutdown()


def play(steps: list[list[dict[str, Any]]], **hook_options: Any) -> list[HookCall]:
    options = ClaudeAgentOptions(hooks=spanjournal.claude.hooks(**hook_options))  # type: ignore[arg-type]
    return asyncio.run(run_session(options, steps))


def test_sub_agents_are_journaled_and_traced_through_the_sdk(configured: tuple[Path, InMemorySpanExporter]) -> None:
    journal, exporter = configured
    steps = [
        [pre("s1", 1, tool="Task"), pre("s1", 2, tool="Agent"), {**pre("s1", 3), "tool_name": "Bash"}],
        [post("s1", 1, tool="Task"), failure("s1", 2, "API Error: 529 overloaded", tool="Agent")],
    ]
    calls = play(steps)
    assert all(c.error is None and c.answer == {} for c in calls if c.event["tool_name"] != "Bash")

    events = lines(journal)
    dispatched = {e["chunk_id"]: e for e in events if e["event"] == "subagent_dispatched"}
    assert set(dispatched) == {chunk(1), chunk(2)}  # the Bash call is not a sub-agent
    for n in (1, 2):
        d = dispatched[chunk(n)]
        assert d["task_description"] == f"Summarise module {n:02d}"
        assert d["agent"] == "general-purpose"
        assert d["trace_id"] == trace_id_for("s1")  # the Claude session's trace
        assert d["parent_span_id"] == session_span_id_for("s1")
        assert d["attrs"]["claude.tool_use_id"] == f"toolu_s1_{n:02d}"
    ledger = read_ledger(journal)
    assert ledger.state(chunk(1)) is ChunkState.DONE
    assert ledger[chunk(1)].output_file == str(output_path(journal, chunk(1)))
    assert output_path(journal, chunk(1)).read_text() == "Module 01 parses the configuration.\n"
    assert ledger[chunk(1)].tokens_used == 1001
    assert ledger.state(chunk(2)) is ChunkState.FAILED
    assert ledger[chunk(2)].last_error == "API Error: 529 overloaded"

    configured_now = spanjournal.config.current()
    assert configured_now is not None and configured_now.force_flush()
    spans = {s.attributes["spanjournal.chunk_id"]: s for s in exporter.get_finished_spans()}
    assert set(spans) == {chunk(1), chunk(2)}
    for n in (1, 2):
        context = spans[chunk(n)].get_span_context()
        assert f"{context.span_id:016x}" == dispatched[chunk(n)]["span_id"]
        assert f"{context.trace_id:032x}" == trace_id_for("s1")
    assert spans[chunk(2)].status.description == "API Error: 529 overloaded"


class SdkSession:
    """Session 1 in a child process: ten sub-agents, six completed; killed with SIGKILL."""

    def __init__(self, journal: Path, steps: list[list[dict[str, Any]]]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(TESTS / "claude_sdk_cli.py"), str(journal), json.dumps(steps)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("ready "), line

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


def test_a_resumed_sdk_session_reads_the_finished_answers_and_runs_only_the_rest(tmp_path: Path) -> None:
    journal = tmp_path / "sdk.jsonl"
    first = SdkSession(journal, [[pre("s1", n) for n in range(10)], [post("s1", n) for n in range(6)]])
    try:
        assert len(read_ledger(journal).pending(["running"])) == 4
    finally:
        first.kill()
    assert sorted(read_ledger(journal).pending()) == sorted(chunk(n) for n in range(6, 10))

    sj = spanjournal.configure(journal=journal, exporter="none", set_global=False)
    try:
        calls = play([[pre("s2", n) for n in range(10)], [post("s2", n) for n in range(6, 10)]])
    finally:
        sj.shutdown()
    for call in calls[:6]:
        reason = denied(call)
        assert reason is not None
        n = int(call.event["tool_use_id"][-2:])
        assert str(output_path(journal, chunk(n))) in reason
    assert [denied(c) for c in calls[6:]] == [None] * 8
    assert read_ledger(journal).pending() == []


def test_strict_denies_a_sub_agent_whose_dispatch_cannot_be_journaled(tmp_path: Path) -> None:
    journal = tmp_path / "sdk.jsonl"
    sj = spanjournal.configure(journal=journal, exporter="none", set_global=False)
    try:
        sj.journal.close()  # from now on every append fails
        strict = play([[pre("s1", 1)]])
        lenient = play([[pre("s1", 2)], [post("s1", 2)]], strict=False, skip_done=False)
    finally:
        sj.shutdown()
    reason = denied(strict[0])
    assert reason is not None and reason.startswith("spanjournal: the sub-agent was not run")
    assert "could not be journaled" in reason
    assert [denied(c) for c in lenient] == [None, None]
    assert [c.error for c in lenient] == [None, None]


def test_hooks_refuse_a_journal_other_than_the_configured_one(configured: tuple[Path, Any], tmp_path: Path) -> None:
    journal, _ = configured
    assert spanjournal.claude.hooks(journal=journal)["PreToolUse"][0].matcher == "Task|Agent"
    with pytest.raises(ValueError, match="configured with another journal"):
        spanjournal.claude.hooks(journal=tmp_path / "other.jsonl")


def test_import_spanjournal_does_not_import_the_sdk() -> None:
    code = (
        "import spanjournal, spanjournal.claude, sys; print(any(m.startswith('claude_agent_sdk') for m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"
