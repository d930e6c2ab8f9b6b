"""The README's framework examples run as they are, and journal what they say they do.

Each ``python`` block of the sections "OpenAI Agents SDK" and "LangChain /
LangGraph" is run in a fresh interpreter in an empty directory; its journal
is then read with ``json`` and checked.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def section_code(title: str) -> list[str]:
    """The ``python`` code blocks of the README section headed ``## {title}``."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match is not None, f"README has no section {title!r}"
    blocks = re.findall(r"^```python\n(.*?)^```", match.group(1), re.M | re.S)
    assert blocks, f"README section {title!r} has no python example"
    return blocks


def run_example(code: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SPANJOURNAL_", "OPENAI_"))}
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def journal_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_openai_agents_example_runs_and_journals_each_agent(tmp_path: Path) -> None:
    pytest.importorskip("agents")
    (code,) = section_code("OpenAI Agents SDK")
    out = run_example(code, tmp_path)
    events = journal_events(tmp_path / "runs" / "survey.jsonl")
    dispatched = {e["chunk_id"]: e for e in events if e["event"] == "subagent_dispatched"}
    completed = {e["chunk_id"]: e for e in events if e["event"] == "subagent_completed"}
    assert sorted(d["agent"] for d in dispatched.values()) == ["orchestrator", "pricing", "security"]
    assert dispatched["survey-1"]["agent"] == "orchestrator"
    assert all(c["success"] for c in completed.values()) and completed.keys() == dispatched.keys()
    for chunk_id, event in dispatched.items():
        if chunk_id != "survey-1":
            assert chunk_id.startswith(f"survey-1/{event['agent']}-")
            assert event["parent_span_id"] == dispatched["survey-1"]["span_id"]
    assert "survey-1 done orchestrator 240" in out


def test_langchain_example_runs_and_journals_each_send(tmp_path: Path) -> None:
    pytest.importorskip("langgraph")
    (code,) = section_code("LangChain / LangGraph")
    out = run_example(code, tmp_path)
    events = journal_events(tmp_path / "runs" / "research.jsonl")
    dispatched = [e for e in events if e["event"] == "subagent_dispatched"]
    completed = [e for e in events if e["event"] == "subagent_completed"]
    assert len(dispatched) == len(completed) == 3
    assert {d["agent"] for d in dispatched} == {"research"}
    assert all(c["success"] and c["tokens_used"] == 92 for c in completed)
    assert out.count(" done research 92") == 3
