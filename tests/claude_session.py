"""A stand-in for Claude Code in tests: a real process that runs the command hook as Claude Code does.

``python claude_session.py PLAN OUT`` reads a JSON plan: a list of steps,
each a list of hook events (the JSON Claude Code writes on a hook's stdin).
The events of one step run as concurrent ``spanjournal claude-hook``
processes, children of this process (as hooks are children of Claude Code);
the next step starts when they have all exited. Each hook's exit code,
stdout and stderr go to ``OUT`` (JSON), then the line ``ready`` to stdout,
and the process waits to be killed (the session dying with sub-agents in
flight) unless the plan's file name ends in ``.exit.json``.

The module also builds the hook events, in the documented format.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: How the hook is run: the installed console script of this interpreter.
HOOK = [str(Path(sys.executable).parent / "spanjournal"), "claude-hook"]


def tool_input(n: int, *, description: str | None = None, subagent_type: str = "general-purpose") -> dict[str, Any]:
    return {
        "description": description or f"Summarise module {n:02d}",
        "prompt": f"Read src/module_{n:02d}.py and summarise what it does in three sentences.",
        "subagent_type": subagent_type,
    }


def base(session: str, event: str, tool_use_id: str, tool: str, cwd: str) -> dict[str, Any]:
    return {
        "session_id": session,
        "transcript_path": f"/home/user/.claude/projects/p/{session}.jsonl",
        "cwd": cwd,
        "permission_mode": "default",
        "hook_event_name": event,
        "tool_name": tool,
        "tool_use_id": tool_use_id,
    }


def pre(session: str, n: int, *, tool: str = "Task", cwd: str = "/tmp", **kw: Any) -> dict[str, Any]:
    return {**base(session, "PreToolUse", f"toolu_{session}_{n:02d}", tool, cwd), "tool_input": tool_input(n, **kw)}


def post(
    session: str, n: int, *, tool: str = "Task", cwd: str = "/tmp", answer: str | None = None, **kw: Any
) -> dict[str, Any]:
    text = answer if answer is not None else f"Module {n:02d} parses the configuration."
    return {
        **base(session, "PostToolUse", f"toolu_{session}_{n:02d}", tool, cwd),
        "tool_input": tool_input(n, **kw),
        "tool_response": {
            "status": "completed",
            "agentId": f"a{n:015x}",
            "content": [{"type": "text", "text": text}],
            "totalTokens": 1000 + n,
            "totalDurationMs": 4000 + n,
            "totalToolUseCount": 3,
            "usage": {
                "input_tokens": 700,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 0,
                "output_tokens": 200 + n,
            },
        },
    }


def failure(session: str, n: int, error: str, *, tool: str = "Task", cwd: str = "/tmp") -> dict[str, Any]:
    return {
        **base(session, "PostToolUseFailure", f"toolu_{session}_{n:02d}", tool, cwd),
        "tool_input": tool_input(n),
        "error": error,
        "is_interrupt": False,
        "duration_ms": 1200,
    }


def main(plan_path: str, out_path: str) -> None:
    steps: list[list[dict[str, Any]]] = json.loads(Path(plan_path).read_text())
    results: list[list[dict[str, Any]]] = []
    for step in steps:
        procs = [
            subprocess.Popen(HOOK, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in step
        ]
        for proc, event in zip(procs, step):
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(event).encode())
            proc.stdin.close()
        done = []
        for proc in procs:
            assert proc.stdout is not None and proc.stderr is not None
            out, err = proc.stdout.read(), proc.stderr.read()
            done.append({"code": proc.wait(), "stdout": out.decode(), "stderr": err.decode()})
        results.append(done)
    Path(out_path).write_text(json.dumps(results))
    print("ready", flush=True)
    if plan_path.endswith(".exit.json"):
        return
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
