"""The generic agent_spans option with real framework instrumentations, scripted models, real SIGKILLs.

- The official OpenAI Agents instrumentation (``opentelemetry-instrumentation-openai-agents-v2``):
  an orchestrator calls the sub-agent ``researcher`` as a tool on six topics in parallel; three
  never answer; the process is killed after the other three completed. ``pending`` lists the three
  slow ones (and their orchestrator) by ids that the same run gives them again, with the real
  agent name; the same run again leaves nothing pending.
- openllmetry's LangChain instrumentation starts its spans with no attributes and names a graph
  node's span ``execute_task {node}``: units can be matched by name only, and what that gives is
  shown below (see the README for why the native handler is the way for LangGraph).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

pytest.importorskip("agents")
pytest.importorskip("opentelemetry.instrumentation.openai_agents")

RUNS = Path(__file__).parent / "agent_runs"
DEADLINE = 120.0


def events(journal: Path) -> list[dict[str, object]]:
    if not journal.exists():
        return []
    return [msgspec.json.decode(line) for line in journal.read_bytes().splitlines() if line.endswith(b"}")]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SPANJOURNAL_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env["OPENAI_API_KEY"] = "sk-not-used"  # the scripted models never call out
    return env


def run_until(
    script: str, journal: Path, mode: str, kill_when: int | None, units: int = 7, env: dict[str, str] | None = None
) -> None:
    """Run a scripted fan-out; with ``kill_when``, SIGKILL it once that many sub-agents completed.

    (and ``units`` units were dispatched).
    """
    child = subprocess.Popen(
        [sys.executable, str(RUNS / script), str(journal), mode],
        env={**child_env(), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            if child.poll() is not None:
                break
            if kill_when is not None:
                seen = events(journal)
                done = [e for e in seen if e["event"] == "subagent_completed" and "research" in str(e["chunk_id"])]
                started = [e for e in seen if e["event"] == "subagent_dispatched"]
                if len(done) >= kill_when and len(started) >= units:
                    os.kill(child.pid, signal.SIGKILL)
                    child.wait()
                    return
            time.sleep(0.02)
        else:
            pytest.fail(f"{script} {mode} did not finish in {DEADLINE:.0f}s")
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
    _, err = child.communicate()
    assert child.returncode == 0, err.decode()
    assert kill_when is None, "the child ended before it could be killed"


def pending(journal: Path) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "spanjournal.cli", "pending", str(journal)],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
        check=True,
    )
    return out.stdout.split()


@pytest.mark.integration
def test_openai_agents_instrumentation_killed_mid_fanout_then_run_again(tmp_path: Path) -> None:
    journal = tmp_path / "run.jsonl"
    run_until("openai_agents_fanout.py", journal, "slow", kill_when=3)
    # Topics 1, 3 and 5 are slow: their researchers are the 2nd, 4th and 6th the orchestrator started.
    left = ["orchestrator#1", *(f"orchestrator#1/researcher#{n}" for n in (2, 4, 6))]
    assert sorted(pending(journal)) == left
    dispatched = {e["chunk_id"]: e for e in events(journal) if e["event"] == "subagent_dispatched"}
    assert {d["agent"] for d in dispatched.values()} == {"orchestrator", "researcher"}, "real names, no placeholder"
    assert len(dispatched) == 7, "no chunk for the run's root span"

    run_until("openai_agents_fanout.py", journal, "fast", kill_when=None)
    assert pending(journal) == []
    second = [e["chunk_id"] for e in events(journal) if e["event"] == "subagent_dispatched"][7:]
    assert sorted(second) == sorted(dispatched), "the same run again gives every unit the same id"


@pytest.mark.integration
def test_openai_agents_instrumentation_with_sampler_always_off_and_inside_a_dispatch(tmp_path: Path) -> None:
    sampled_off = tmp_path / "off.jsonl"
    run_until("openai_agents_fanout.py", sampled_off, "fast", kill_when=None, env={"OTEL_TRACES_SAMPLER": "always_off"})
    ids = [e["chunk_id"] for e in events(sampled_off) if e["event"] == "subagent_dispatched"]
    assert sorted(ids) == ["orchestrator#1", *(f"orchestrator#1/researcher#{n}" for n in range(1, 7))]
    assert pending(sampled_off) == []

    inside = tmp_path / "inside.jsonl"
    run_until("openai_agents_fanout.py", inside, "dispatched", kill_when=None)
    ids = [e["chunk_id"] for e in events(inside) if e["event"] == "subagent_dispatched"]
    assert sorted(ids) == ["review-1", *(f"review-1/researcher#{n}" for n in range(1, 7))]
    assert pending(inside) == []


@pytest.mark.integration
def test_openai_agents_instrumentation_a_model_error_is_a_failed_chunk_with_its_error(tmp_path: Path) -> None:
    journal = tmp_path / "run.jsonl"
    run_until("openai_agents_fanout.py", journal, "failing", kill_when=None)
    failed = [e for e in events(journal) if e["event"] == "subagent_completed" and not e["success"]]
    assert [e["chunk_id"] for e in failed] == ["orchestrator#1/researcher#3"], "topic 2: the third researcher"
    assert "429 quota exceeded" in str(failed[0]["error"])
    assert pending(journal) == ["orchestrator#1/researcher#3"]


@pytest.mark.integration
def test_openllmetry_langgraph_send_fanout_matched_by_span_name_killed_then_run_again(tmp_path: Path) -> None:
    pytest.importorskip("langgraph")
    pytest.importorskip("opentelemetry.instrumentation.langchain")
    journal = tmp_path / "run.jsonl"
    run_until("langgraph_fanout.py", journal, "slow", kill_when=3, units=6)
    # Topics 1, 3 and 5 are slow; asyncio starts the Send tasks in the order they were sent.
    assert sorted(pending(journal)) == ["research#2", "research#4", "research#6"]
    run_until("langgraph_fanout.py", journal, "fast", kill_when=None)
    assert pending(journal) == []
