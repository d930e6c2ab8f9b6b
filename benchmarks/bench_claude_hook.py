"""Wall time of the Claude Code command hook, beside a bare ``python -c pass``.

    python benchmarks/bench_claude_hook.py            # 200 runs of each
    python benchmarks/bench_claude_hook.py --quick    # 30 runs of each

Claude Code runs the hook synchronously on every sub-agent call, as a new
process. Each run here is one process, as Claude Code starts it, with one hook
event on stdin, on a journal that grows as the runs go (``fsync``
durability, the default):

- ``python -c pass``: the interpreter alone, the floor of any Python hook;
- ``PreToolUse``: a new sub-agent (skip-done reads the journal, then the
  dispatched line is appended and synced);
- ``PostToolUse``: its completion (answer file written and synced, line appended and synced);
- ``PreToolUse, done``: a finished sub-agent asked again (read, then deny);
- ``other tool``: a ``PreToolUse`` for ``Bash``: exit at once.

Runs are interleaved (one of each kind per round), so a busy machine slows
all kinds alike; still, on a shared machine expect noise. Ratios are to the
bare interpreter measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HOOK = [str(Path(sys.executable).parent / "spanjournal"), "claude-hook"]


def event(kind: str, session: str, n: int) -> bytes:
    data: dict[str, Any] = {
        "session_id": session,
        "transcript_path": f"/home/user/.claude/projects/p/{session}.jsonl",
        "cwd": "/tmp",
        "hook_event_name": "PreToolUse" if kind.startswith("pre") else "PostToolUse",
        "tool_name": "Bash" if kind == "other" else "Task",
        "tool_use_id": f"toolu_{session}_{n:05d}",
        "tool_input": {
            "description": f"Summarise module {n:05d}",
            "prompt": f"Read src/module_{n:05d}.py and summarise what it does in three sentences.",
            "subagent_type": "general-purpose",
        },
    }
    if kind == "post":
        data["tool_response"] = {
            "status": "completed",
            "content": [{"type": "text", "text": f"Module {n:05d} parses the configuration. " * 20}],
            "totalTokens": 5000,
            "totalDurationMs": 30000,
            "usage": {"input_tokens": 4000, "output_tokens": 1000},
        }
    return json.dumps(data).encode()


def timed(argv: list[str], stdin: bytes, env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, input=stdin, capture_output=True, env=env, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed ({proc.returncode}): {proc.stderr.decode()}")
    return elapsed


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    runs = 30 if args.quick else args.runs
    with tempfile.TemporaryDirectory() as tmp:
        journal = Path(tmp) / "subagents.jsonl"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SPANJOURNAL_", "CLAUDE_"))}
        env["SPANJOURNAL_PATH"] = str(journal)
        times: dict[str, list[float]] = {"python -c pass": [], "other tool": [], "PreToolUse": [], "PostToolUse": []}
        times["PreToolUse, done"] = []
        for n in range(runs):
            times["python -c pass"].append(timed([sys.executable, "-c", "pass"], b"", env))
            times["other tool"].append(timed(HOOK, event("other", "s1", n), env))
            times["PreToolUse"].append(timed(HOOK, event("pre", "s1", n), env))
            times["PostToolUse"].append(timed(HOOK, event("post", "s1", n), env))
            times["PreToolUse, done"].append(timed(HOOK, event("pre", "s2", n), env))
        lines = sum(1 for _ in journal.open("rb"))
    base = statistics.median(times["python -c pass"])
    print(f"{runs} runs of each, interleaved; journal grew to {lines} lines ({sys.version.split()[0]})")
    print(f"{'':<18} {'p50 ms':>8} {'p95 ms':>8} {'p50 / python -c pass':>22}")
    for name, values in times.items():
        p50, p95 = percentile(values, 50) * 1000, percentile(values, 95) * 1000
        print(f"{name:<18} {p50:8.1f} {p95:8.1f} {p50 / 1000 / base:21.2f}x")


if __name__ == "__main__":
    main()
