"""``spanjournal claude-hook``: Claude Code's sub-agents journaled, and a resumed session runs only what never finished.

The hook runs as real processes, children of a stand-in for Claude Code
(``claude_session.py``) that is killed with SIGKILL when its session "dies".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

import claude_session
from claude_session import failure, post, pre
from spanjournal import ChunkState, read_ledger
from spanjournal.claude import chunk_id_for, output_path, parse_hook_input, span_id_for, trace_id_for

pytestmark = pytest.mark.integration

TESTS = Path(__file__).parent
HOOK = claude_session.HOOK


@pytest.fixture
def hook_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The journal the hooks write (SPANJOURNAL_PATH), with no OTLP export and no hook switches set."""
    for name in list(os.environ):
        if name.startswith(("OTEL_", "SPANJOURNAL_", "CLAUDE_")):
            monkeypatch.delenv(name, raising=False)
    journal = tmp_path / "project" / ".claude" / "spanjournal" / "subagents.jsonl"
    monkeypatch.setenv("SPANJOURNAL_PATH", str(journal))
    return journal


def hook(event: Any, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the hook with ``event`` (a mapping, as JSON) on stdin."""
    return _run_text([*HOOK, *args], json.dumps(event), env)


def _run_text(argv: list[str], data: str | bytes, env: dict[str, str] | None) -> subprocess.CompletedProcess[str]:
    raw = data.encode() if isinstance(data, str) else data
    proc = subprocess.run(argv, input=raw, capture_output=True, timeout=60, env=env, check=False)
    return subprocess.CompletedProcess(argv, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


class Session:
    """One run of the stand-in Claude Code: its steps of concurrent hooks, and their results."""

    def __init__(self, tmp: Path, name: str, steps: Sequence[Sequence[dict[str, Any]]], *, stay: bool) -> None:
        plan = tmp / (f"{name}.plan.json" if stay else f"{name}.plan.exit.json")
        plan.write_text(json.dumps(steps))
        self.out = tmp / f"{name}.out.json"
        self.proc = subprocess.Popen(
            [sys.executable, str(TESTS / "claude_session.py"), str(plan), str(self.out)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line == "ready\n", f"the session did not finish its steps: {line!r}"
        self.results: list[list[dict[str, Any]]] = json.loads(self.out.read_text())

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def wait(self) -> None:
        assert self.proc.wait(timeout=60) == 0


def pending(journal: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(Path(sys.executable).parent / "pending"), str(journal), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    return proc


def events(journal: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in journal.read_bytes().splitlines()]


@pytest.fixture
def killed_session(tmp_path: Path, hook_env: Path) -> Iterator[tuple[Path, Session]]:
    """Session s1: ten sub-agents dispatched by ten concurrent hooks, six completed, then SIGKILL."""
    steps = [[pre("s1", n) for n in range(10)], [post("s1", n) for n in range(6)]]
    session = Session(tmp_path, "s1", steps, stay=True)
    try:
        yield hook_env, session
    finally:
        if session.proc.poll() is None:
            session.kill()


# -- the hook protocol ----------------------------------------------------------------


@pytest.mark.parametrize("tool", ["Task", "Agent"])
def test_documented_payloads_of_both_tool_names_are_journaled_unknown_fields_and_all(hook_env: Path, tool: str) -> None:
    extra = {"prompt_id": "p-1", "effort": {"level": "high"}, "agent_id": "x", "field_of_the_future": [1, {"a": 2}]}
    start = {**pre("s1", 3, tool=tool), **extra}
    start["tool_input"] = {**start["tool_input"], "model": "sonnet", "run_in_background": False}
    r = hook(start)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    r = hook({**post("s1", 3, tool=tool), **extra})
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")

    dispatched, completed = events(hook_env)
    chunk = chunk_id_for("general-purpose", start["tool_input"]["prompt"])
    assert dispatched["event"] == "subagent_dispatched"
    assert dispatched["chunk_id"] == completed["chunk_id"] == chunk
    assert dispatched["task_description"] == "Summarise module 03"
    assert dispatched["agent"] == "general-purpose"
    assert dispatched["session_id"] == completed["session_id"] == "s1"
    assert dispatched["attrs"] == {"claude.session_id": "s1", "claude.tool_use_id": "toolu_s1_03"}
    assert dispatched["trace_id"] == completed["trace_id"] == trace_id_for("s1")
    assert dispatched["span_id"] == completed["span_id"] == span_id_for("s1", "toolu_s1_03")
    assert dispatched["pid"] == os.getpid()  # the process the sub-agent runs in: the hook's parent
    assert completed["success"] is True
    assert completed["tokens_used"] == 1003
    assert (completed["input_tokens"], completed["output_tokens"]) == (800, 203)
    assert completed["duration_ms"] == 4003
    answer = Path(completed["output_file"])
    assert answer == output_path(hook_env, chunk)
    assert answer.read_text() == "Module 03 parses the configuration.\n"
    assert read_ledger(hook_env).state(chunk) is ChunkState.DONE


@pytest.mark.parametrize(
    "event",
    [
        {"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": "ls"}},
        {"hook_event_name": "PostToolUse", "tool_name": "Read", "tool_input": {}, "tool_response": {}},
        {"hook_event_name": "SubagentStop", "session_id": "s1", "stop_hook_active": False},
        {"hook_event_name": "UserPromptSubmit", "session_id": "s1", "prompt": "hi", "tool_name": "Task"},
    ],
)
def test_other_events_and_tools_exit_0_and_write_nothing(hook_env: Path, event: dict[str, Any]) -> None:
    r = hook({"session_id": "s1", "transcript_path": "/x", "cwd": "/tmp", **event})
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert not hook_env.parent.exists()


def test_default_journal_is_under_the_claude_project_directory(tmp_path: Path, hook_env: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SPANJOURNAL_PATH"}
    env["CLAUDE_PROJECT_DIR"] = str(tmp_path / "proj")
    assert hook(pre("s1", 1), env=env).returncode == 0
    journal = tmp_path / "proj" / ".claude" / "spanjournal" / "subagents.jsonl"
    assert [e["event"] for e in events(journal)] == ["subagent_dispatched"]
    assert hook(pre("s1", 2), "--journal", str(tmp_path / "elsewhere.jsonl"), env=env).returncode == 0
    assert len(events(tmp_path / "elsewhere.jsonl")) == 1


# -- chunk ids ------------------------------------------------------------------------


def test_the_same_sub_agent_asked_again_is_the_same_chunk() -> None:
    first = parse_hook_input(pre("s1", 7))
    again = pre("s2", 7)
    again["tool_input"]["prompt"] = "  Read src/module_07.py and summarise what it does\n\tin three sentences.  "
    again["tool_input"]["description"] = "a different description"
    second = parse_hook_input(again)
    assert first is not None and second is not None
    assert first.chunk_id == second.chunk_id
    assert (first.span_id, first.trace_id) != (second.span_id, second.trace_id)
    other_type = parse_hook_input(pre("s1", 7, subagent_type="code-reviewer"))
    other_prompt = parse_hook_input(pre("s1", 8))
    assert other_type is not None and other_prompt is not None
    assert len({first.chunk_id, other_type.chunk_id, other_prompt.chunk_id}) == 3


def test_a_marker_in_the_prompt_names_the_chunk() -> None:
    event = pre("s1", 1)
    event["tool_input"]["prompt"] = "spanjournal-chunk: case-027\nRoute this prompt."
    call = parse_hook_input(event)
    assert call is not None and call.chunk_id == "case-027"


@pytest.mark.parametrize("subagent_type", ["code\nreviewer\x00", "../../etc", "ré vue", ""])
def test_derived_chunk_ids_and_answer_files_are_safe(tmp_path: Path, subagent_type: str) -> None:
    chunk = chunk_id_for(subagent_type, "prompt\x07 with a bell")
    assert chunk.isascii() and chunk.isprintable() and "/" not in chunk
    path = output_path(tmp_path / "j.jsonl", "a/../../b\n")
    assert path.parent == tmp_path / "j.outputs"


# -- the session dies, and resumes ----------------------------------------------------


def test_ten_concurrent_hooks_four_never_completed_pending_lists_exactly_those_four(
    killed_session: tuple[Path, Session],
) -> None:
    journal, session = killed_session
    assert all(r["code"] == 0 for step in session.results for r in step)
    lines = events(journal)
    assert sorted(e["event"] for e in lines) == ["subagent_completed"] * 6 + ["subagent_dispatched"] * 10

    # While Claude Code lives, its four sub-agents in flight are running, not pending.
    alive = pending(journal, "--state", "running")
    assert len(alive.stdout.splitlines()) == 4
    session.kill()

    r = pending(journal, "--describe", "--exit-code")
    assert r.returncode == 1
    want = {chunk_id_for("general-purpose", pre("s1", n)["tool_input"]["prompt"]): n for n in range(6, 10)}
    listed = dict(line.split("\t") for line in r.stdout.splitlines())
    assert set(listed) == set(want)
    assert {listed[c] for c in want} == {f"Summarise module {n:02d}" for n in range(6, 10)}
    assert "4 pending: 4 unfinished" in r.stderr


def test_a_second_session_reads_the_six_answers_and_runs_only_the_four(
    tmp_path: Path, killed_session: tuple[Path, Session]
) -> None:
    journal, first = killed_session
    first.kill()
    steps = [[pre("s2", n) for n in range(10)], [post("s2", n) for n in range(6, 10)]]
    second = Session(tmp_path, "s2", steps, stay=False)
    second.wait()
    starts, ends = second.results
    for n in range(6):
        r = starts[n]
        assert r["code"] == 0
        out = json.loads(r["stdout"])["hookSpecificOutput"]
        assert out["hookEventName"] == "PreToolUse"
        assert out["permissionDecision"] == "deny"
        chunk = chunk_id_for("general-purpose", pre("s2", n)["tool_input"]["prompt"])
        answer = output_path(journal, chunk)
        assert str(answer) in out["permissionDecisionReason"]
        assert answer.read_text() == f"Module {n:02d} parses the configuration.\n"
    for r in starts[6:] + ends:
        assert (r["code"], r["stdout"]) == (0, "")
    s2 = [e for e in events(journal) if e["session_id"] == "s2"]
    assert sorted(e["event"] for e in s2) == ["subagent_completed"] * 4 + ["subagent_dispatched"] * 4

    r = pending(journal, "--exit-code")
    assert (r.returncode, r.stdout) == (0, "")
    assert r.stderr.startswith("0 pending (10 chunks")


def test_skip_done_can_be_switched_off(hook_env: Path) -> None:
    assert hook(pre("s1", 1)).returncode == 0
    assert hook(post("s1", 1)).returncode == 0
    assert hook(pre("s2", 1), "--no-skip-done").stdout == ""
    env = {**os.environ, "SPANJOURNAL_CLAUDE_SKIP_DONE": "0"}
    assert hook(pre("s3", 1), env=env).stdout == ""
    assert "deny" in hook(pre("s4", 1)).stdout
    assert [e["session_id"] for e in events(hook_env) if e["event"] == "subagent_dispatched"] == ["s1", "s2", "s3"]


def test_skip_done_reads_from_a_checkpoint_and_never_trusts_a_stale_one(hook_env: Path) -> None:
    from spanjournal.checkpoint import locations

    assert hook(pre("s1", 1)).returncode == 0
    assert hook(post("s1", 1)).returncode == 0
    assert hook(pre("s1", 2)).stdout == ""  # a new sub-agent: the journal is read, its checkpoint saved
    saved = locations(hook_env)[0]
    assert saved.is_file()
    assert "deny" in hook(pre("s2", 1)).stdout  # done, read from the checkpoint and the tail
    # The journal replaced by one in which sub-agent 1 never completed: the checkpoint no longer applies.
    lines = hook_env.read_bytes().splitlines(keepends=True)
    replacement = hook_env.with_name("replacement.jsonl")
    replacement.write_bytes(b"".join(line for line in lines if b"subagent_completed" not in line))
    os.replace(replacement, hook_env)
    assert saved.is_file()
    r = hook(pre("s3", 1))
    assert (r.returncode, r.stdout) == (0, "")


def test_a_done_chunk_whose_answer_file_is_gone_runs_again(hook_env: Path) -> None:
    assert hook(pre("s1", 1)).returncode == 0
    assert hook(post("s1", 1)).returncode == 0
    (answer,) = [Path(e["output_file"]) for e in events(hook_env) if e["event"] == "subagent_completed"]
    answer.unlink()
    r = hook(pre("s2", 1))
    assert (r.returncode, r.stdout) == (0, "")


# -- failures ----------------------------------------------------------------------------


def test_a_failure_is_failed_with_its_error(hook_env: Path) -> None:
    assert hook(pre("s1", 1)).returncode == 0
    r = hook(failure("s1", 1, "API Error: 529 overloaded"))
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    chunk = read_ledger(hook_env)[chunk_id_for("general-purpose", pre("s1", 1)["tool_input"]["prompt"])]
    assert chunk.state is ChunkState.FAILED
    assert chunk.last_error == "API Error: 529 overloaded"
    assert chunk.error_type == "ToolError"
    r = pending(hook_env, "--describe")
    assert r.stdout == f"{chunk.chunk_id}\tSummarise module 01\n"


def test_an_answer_that_is_only_a_usage_limit_notice_is_a_failure(hook_env: Path) -> None:
    assert hook(pre("s1", 1)).returncode == 0
    assert hook(post("s1", 1, answer="You've hit your session limit · resets 1:40pm")).returncode == 0
    assert hook(pre("s1", 2)).returncode == 0
    assert hook(post("s1", 2, answer="The module handles rate limits: it backs off and tries again.")).returncode == 0
    ledger = read_ledger(hook_env)
    one, two = (chunk_id_for("general-purpose", pre("s1", n)["tool_input"]["prompt"]) for n in (1, 2))
    assert ledger.state(one) is ChunkState.FAILED
    assert ledger[one].error_type == "UsageLimit"
    assert ledger.state(two) is ChunkState.DONE
    assert "deny" not in hook(pre("s2", 1)).stdout


def test_a_background_launch_is_not_a_completion(hook_env: Path) -> None:
    assert hook(pre("s1", 1)).returncode == 0
    launched = post("s1", 1)
    launched["tool_response"] = {"status": "async_launched", "agentId": "a1", "outputFile": "/tmp/x"}
    assert hook(launched).returncode == 0
    assert [e["event"] for e in events(hook_env)] == ["subagent_dispatched"]


def unwritable(tmp_path: Path) -> Path:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the journal's directory should be\n")
    return blocker / "subagents.jsonl"


def test_a_journal_that_cannot_be_written_blocks_the_sub_agent_in_strict_mode(tmp_path: Path, hook_env: Path) -> None:
    journal = unwritable(tmp_path)
    r = hook(pre("s1", 1), "--journal", str(journal))
    assert r.returncode == 2
    assert r.stdout == ""
    assert len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith("spanjournal: sub-agent blocked: its dispatch could not be journaled")
    assert str(journal) in r.stderr


def test_lenient_mode_lets_the_sub_agent_run_and_says_why(tmp_path: Path, hook_env: Path) -> None:
    journal = unwritable(tmp_path)
    for args, env in ((["--lenient"], None), ([], {**os.environ, "SPANJOURNAL_CLAUDE_STRICT": "0"})):
        r = hook(pre("s1", 1), "--journal", str(journal), *args, env=env)
        assert r.returncode == 1  # a non-blocking error
        assert r.stderr.startswith("spanjournal: sub-agent runs unjournaled")
        assert len(r.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    "stdin",
    [
        b"",
        b"garbage",
        b"\xff\xfe\x00not utf-8",
        b"[1, 2, 3]",
        b'{"hook_event_name": 5}',
        b'{"hook_event_name": "PreToolUse", "tool_name": "Task", "tool_input": "not an object"}',
        b'{"hook_event_name": "PreToolUse", "tool_name": "Agent", "tool_input": {"prompt": "x"}, "session_id": "s"}',
        b'{"hook_event_name": "PostToolUse", "tool_name": "Task", "session_id": "s", "tool_use_id": "t", '
        b'"tool_input": {"prompt": 42}}',
        b'{"session_id": "s1", "hook_event_name": "PreToolUse", "tool_name": "Task", "tool_use_id": "t"',
    ],
)
def test_garbage_on_stdin_never_blocks(hook_env: Path, stdin: bytes) -> None:
    r = _run_text(HOOK, stdin, None)
    assert r.returncode == 1
    assert r.stdout == ""
    assert len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith("spanjournal claude-hook: ")
    assert "Traceback" not in r.stderr
    assert not hook_env.parent.exists()


def test_the_hook_imports_no_opentelemetry_sdk_without_an_otlp_endpoint(hook_env: Path) -> None:
    probe = (
        "import sys, io, json\n"
        "sys.stdin = io.TextIOWrapper(io.BytesIO(json.dumps(EVENT).encode()))\n"
        "from spanjournal.cli import main\n"
        "code = main(['claude-hook'])\n"
        "heavy = sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'claude_agent_sdk')))\n"
        "print(json.dumps([code, heavy]))\n"
    )
    for event in (pre("s1", 1), post("s1", 1)):
        r = subprocess.run(
            [sys.executable, "-c", f"EVENT = {event!r}\n" + probe], capture_output=True, text=True, check=True
        )
        code, modules = json.loads(r.stdout.splitlines()[-1])
        assert code == 0
        assert modules == []
    assert msgspec.json.decode(hook_env.read_bytes().splitlines()[-1])["event"] == "subagent_completed"


def test_a_mistyped_option_in_the_settings_never_blocks(hook_env: Path) -> None:
    r = hook(pre("s1", 1), "--jurnal", "x.jsonl")
    assert r.returncode == 1
    assert r.stderr.startswith("spanjournal claude-hook: error: unrecognized arguments: --jurnal")
    assert len(r.stderr.splitlines()) == 1


def test_stats_reconcile_and_export_read_a_claude_journal(killed_session: tuple[Path, Session]) -> None:
    journal, session = killed_session
    session.kill()
    spanjournal = str(Path(sys.executable).parent / "spanjournal")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([spanjournal, *args], capture_output=True, text=True, timeout=60, check=False)

    stats = run("stats", str(journal))
    assert stats.returncode == 0
    rows = dict(line.rsplit(None, 1) for line in stats.stdout.splitlines()[1:9] if line.strip())
    assert (rows["chunks"], rows["done"], rows["unfinished"]) == ("10", "6", "4")
    reconcile = run("reconcile", str(journal))
    assert reconcile.returncode == 0  # the four wrote no answer: nothing to record
    assert pending(journal).stdout.count("\n") == 4
    export = run("export", str(journal), "--dry-run")
    assert export.returncode == 0
    spans = export.stdout.splitlines()
    assert sorted(line.split()[0] for line in spans) == ["done"] * 6 + ["unfinished"] * 4
    assert all("service=claude-code" in line and f"trace={trace_id_for('s1')}" in line for line in spans)


def test_started_through_a_shell_the_dispatch_names_claude_codes_process(hook_env: Path) -> None:
    # Claude Code runs a command hook through a shell; "; true" keeps the shell from exec'ing the hook,
    # so the hook's parent is the shell and the process running the sub-agent is this one.
    command = " ".join(HOOK) + " ; true"
    proc = subprocess.run(["sh", "-c", command], input=json.dumps(pre("s1", 1)).encode(), check=False, timeout=60)
    assert proc.returncode == 0
    (dispatched,) = events(hook_env)
    assert dispatched["pid"] == os.getpid()
    assert read_ledger(hook_env).state(dispatched["chunk_id"]) is ChunkState.RUNNING
