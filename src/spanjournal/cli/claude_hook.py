"""``claude-hook``: a Claude Code command hook that journals every sub-agent.

Claude Code runs it with one hook event as JSON on stdin. It acts on
``PreToolUse``, ``PostToolUse`` and ``PostToolUseFailure`` of the sub-agent
tool (``Task`` or ``Agent``); for any other event or tool it exits 0 at once,
writing nothing. The mapping (chunk ids, trace and span ids, lines) is
:mod:`spanjournal.claude`.

Exit codes follow Claude Code's hook protocol, not the other commands':
0 is success (a denial is JSON on stdout with exit 0), 2 blocks the
sub-agent (``PreToolUse`` only: its dispatch could not be journaled, in
strict mode), and 1 is a non-blocking error: malformed stdin never blocks a
tool.

This runs synchronously inside Claude Code on every sub-agent call: it does
not import the OpenTelemetry SDK unless it sends a span.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec

from spanjournal._process import HOST, proc_start
from spanjournal.claude import (
    DEFAULT_JOURNAL,
    HookPayloadError,
    SubagentCall,
    answer_text,
    completed_event,
    deny_output,
    deny_reason,
    dispatched_event,
    done_answer,
    keep_answer,
    launched_in_background,
    now_ts,
    output_path,
    parse_hook_input,
)
from spanjournal.journal import Journal, JournalWriteError

if TYPE_CHECKING:
    from spanjournal._schema import Completed
    from spanjournal.cli._command import Subparsers

#: Exit codes of Claude Code's hook protocol.
HOOK_OK = 0
HOOK_NON_BLOCKING = 1
HOOK_BLOCK = 2

ENV_JOURNAL = "SPANJOURNAL_PATH"
ENV_SKIP_DONE = "SPANJOURNAL_CLAUDE_SKIP_DONE"
ENV_STRICT = "SPANJOURNAL_CLAUDE_STRICT"
ENV_EXPORT_TIMEOUT = "SPANJOURNAL_CLAUDE_EXPORT_TIMEOUT"
#: Set by Claude Code for hook commands: the project's root directory.
ENV_PROJECT_DIR = "CLAUDE_PROJECT_DIR"
#: Seconds ``PostToolUse`` gives the collector before it lets the span go.
DEFAULT_EXPORT_TIMEOUT = 2.0
#: ``service.name`` of the sub-agents' spans (journaled on each dispatch), unless ``OTEL_SERVICE_NAME`` names another.
SERVICE_NAME = "claude-code"
_SHELLS = frozenset({b"sh", b"bash", b"dash", b"zsh", b"ksh", b"fish", b"busybox"})
_FALSE = frozenset({"0", "false", "no", "off"})

DESCRIPTION = """\
A Claude Code command hook: journal every sub-agent (Task/Agent tool call)
and, on resume, deny the ones that already finished, telling Claude where
their answers are. Install it with `spanjournal claude-install`.

stdin:  one hook event (Claude Code's hook JSON).
stdout: nothing, or a PreToolUse denial (hookSpecificOutput JSON).
exit:   0 ok; 2 blocks the sub-agent (its dispatch could not be journaled,
        strict mode); 1 non-blocking error (e.g. malformed stdin).

journal: --journal, else $SPANJOURNAL_PATH, else
         $CLAUDE_PROJECT_DIR/.claude/spanjournal/subagents.jsonl (the
         event's cwd when Claude Code does not set CLAUDE_PROJECT_DIR).
answers: <journal dir>/<journal stem>.outputs/<chunk id>.md
traces:  with OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) set,
         PostToolUse also sends the finished span, waiting at most
         $SPANJOURNAL_CLAUDE_EXPORT_TIMEOUT seconds (default 2)."""

EPILOG = """\
examples:
  spanjournal claude-hook < event.json
  spanjournal claude-hook --journal runs/claude.jsonl --no-skip-done
  SPANJOURNAL_CLAUDE_SKIP_DONE=0 spanjournal claude-hook    # run finished sub-agents again
"""


def register(subparsers: Subparsers) -> None:
    """Add ``spanjournal claude-hook`` (for ``spanjournal --help``; runs go through :func:`hook_main`)."""
    from spanjournal.cli._command import add_command

    parser = add_command(
        subparsers,
        "claude-hook",
        help="Claude Code command hook: journal every sub-agent",
        description=DESCRIPTION,
        epilog=EPILOG,
        handler=run,
    )
    add_arguments(parser)


def hook_main(argv: list[str]) -> int:
    """``spanjournal claude-hook ARGS``, without the start-up cost of the other commands."""
    parser = _HookArgumentParser(
        prog="spanjournal claude-hook",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except Exception as exc:  # whatever it is, it must not block the tool or show a traceback
        _say(f"spanjournal claude-hook: {type(exc).__name__}: {exc}")
        return HOOK_NON_BLOCKING


class _HookArgumentParser(argparse.ArgumentParser):
    """A bad option (a mistyped settings file) is a non-blocking error: it must not block every sub-agent."""

    def error(self, message: str) -> NoReturn:
        _say(f"{self.prog}: error: {message}")
        raise SystemExit(HOOK_NON_BLOCKING)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--journal", metavar="PATH", help="the journal file (default: see above)")
    parser.add_argument(
        "--no-skip-done",
        dest="skip_done",
        action="store_false",
        default=None,
        help=f"run sub-agents whose chunk is already done (default: deny them; or {ENV_SKIP_DONE}=0)",
    )
    parser.add_argument(
        "--lenient",
        dest="strict",
        action="store_false",
        default=None,
        help=f"let a sub-agent run when its dispatch cannot be journaled (default: block it; or {ENV_STRICT}=0)",
    )


def run(args: argparse.Namespace) -> int:
    env = os.environ
    try:
        call = parse_hook_input(sys.stdin.buffer.read())
    except HookPayloadError as exc:
        _say(f"spanjournal claude-hook: {exc}")
        return HOOK_NON_BLOCKING
    if call is None:
        return HOOK_OK
    journal = resolve_journal(args.journal, call, env)
    if call.event == "PreToolUse":
        skip_done = args.skip_done if args.skip_done is not None else _flag(env.get(ENV_SKIP_DONE), True)
        strict = args.strict if args.strict is not None else _flag(env.get(ENV_STRICT), True)
        service = env.get("OTEL_SERVICE_NAME", "").strip() or SERVICE_NAME
        return pre_tool_use(call, journal, skip_done=skip_done, strict=strict, service_name=service)
    return post_tool_use(call, journal, env)


def resolve_journal(option: str | None, call: SubagentCall, env: os._Environ[str] | dict[str, str]) -> Path:
    """The journal file: ``--journal``, ``SPANJOURNAL_PATH``, else the project's default one."""
    chosen = option or env.get(ENV_JOURNAL, "").strip()
    if chosen:
        return Path(chosen)
    project = env.get(ENV_PROJECT_DIR, "").strip() or call.cwd or os.getcwd()
    return Path(project) / DEFAULT_JOURNAL


def pre_tool_use(
    call: SubagentCall, journal: Path, *, skip_done: bool, strict: bool, service_name: str = "claude-code"
) -> int:
    """Deny a finished sub-agent; else make its dispatch durable before it runs."""
    try:
        if skip_done:
            answer = done_answer(journal, call.chunk_id)
            if answer is not None:
                sys.stdout.write(msgspec.json.encode(deny_output(deny_reason(call.chunk_id, answer))).decode() + "\n")
                return HOOK_OK
        host, pid, started = agent_process()
        event = dispatched_event(
            call,
            ts=now_ts(),
            host=host,
            pid=pid,
            proc_start=started,
            output_file=str(output_path(journal, call.chunk_id)),
            cwd=call.cwd,
            service_name=service_name,
        )
        with Journal(journal) as j:
            j.append(event)
    except Exception as exc:
        reason = str(exc) if isinstance(exc, JournalWriteError) else f"{type(exc).__name__}: {exc}"
        if strict:
            _say(f"spanjournal: sub-agent blocked: its dispatch could not be journaled ({reason})")
            return HOOK_BLOCK
        _say(f"spanjournal: sub-agent runs unjournaled ({reason})")
        return HOOK_NON_BLOCKING
    return HOOK_OK


def post_tool_use(call: SubagentCall, journal: Path, env: os._Environ[str] | dict[str, str]) -> int:
    """Keep the answer and journal the completion (success or failure); send the span if configured."""
    if call.event == "PostToolUse" and launched_in_background(call.tool_response):
        return HOOK_OK  # launched, not finished: the dispatch stays open
    try:
        host, pid, _ = agent_process()
        event = completed_event(call, ts=now_ts(), host=host, pid=pid, output_file=None)
        if event.success:
            text = answer_text(call.tool_response)
            if text is not None:
                path = output_path(journal, call.chunk_id)
                keep_answer(path, text)
                event.output_file = str(path)
        with Journal(journal) as j:
            j.append(event)
    except Exception as exc:
        reason = str(exc) if isinstance(exc, JournalWriteError) else f"{type(exc).__name__}: {exc}"
        _say(f"spanjournal: the completion of sub-agent {call.chunk_id} was not journaled ({reason})")
        return HOOK_NON_BLOCKING
    if exporting(env):
        send_span(call, event, journal, _export_timeout(env))
    return HOOK_OK


def agent_process() -> tuple[str, int, int | None]:
    """(host, pid, start time) of the process the sub-agent runs in: Claude Code, the hook's parent.

    Claude Code may start the hook through a shell; a shell parent is
    skipped for its own parent. A sub-agent is then ``running`` while
    Claude Code is alive, and ``unfinished`` once it is gone.
    """
    pid = os.getppid()
    if _command_name(pid) in _SHELLS:
        parent = _parent_of(pid)
        if parent and parent > 1:
            pid = parent
    return HOST, pid, proc_start(pid)


def _command_name(pid: int) -> bytes | None:
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().strip()
    except OSError:
        return None


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rfind(b")") + 2 :].split()[1])
    except (OSError, IndexError, ValueError):
        return None


# -- traces ---------------------------------------------------------------------------


def exporting(env: os._Environ[str] | dict[str, str]) -> bool:
    """Whether the standard OTLP variables ask for spans to be sent."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip() or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )


def _export_timeout(env: os._Environ[str] | dict[str, str]) -> float:
    try:
        value = float(env.get(ENV_EXPORT_TIMEOUT, "") or DEFAULT_EXPORT_TIMEOUT)
    except ValueError:
        return DEFAULT_EXPORT_TIMEOUT
    return value if value > 0 else DEFAULT_EXPORT_TIMEOUT


def send_span(call: SubagentCall, completion: Completed, journal: Path, timeout: float) -> None:
    """Send the finished sub-agent's span to the OTLP collector, within ``timeout`` seconds; never raises.

    Its start is the dispatched line's time. If the collector does not answer
    in time, the hook ends without waiting longer (``spanjournal export``
    can send it later).
    """
    outcome: dict[str, Any] = {}
    exporter_log = _LastMessage()
    logging.getLogger("opentelemetry").addHandler(exporter_log)
    logging.getLogger("opentelemetry").propagate = False  # one line on stderr, not the exporter's own

    def export() -> None:
        try:
            outcome["sent"] = _export_span(call, completion, journal, timeout)
        except Exception as exc:
            outcome["error"] = f"{type(exc).__name__}: {exc}"

    worker = threading.Thread(target=export, name="spanjournal-claude-export", daemon=True)
    worker.start()
    worker.join(timeout + 1.0)
    if worker.is_alive():
        _say(f"spanjournal: the span of {call.chunk_id} was not sent within {timeout:g}s")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(HOOK_OK)  # the exporter's threads must not hold the hook (or Claude Code) any longer
    if "error" in outcome or not outcome.get("sent", False):
        reason = outcome.get("error") or exporter_log.message or "the collector did not accept it"
        _say(f"spanjournal: the span of {call.chunk_id} was not sent ({reason})")


class _LastMessage(logging.Handler):
    """Keeps the exporter's last warning, to say in one line why a span was not sent."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.message: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:
            text = str(record.msg)
        self.message = text[:300]


def _export_span(call: SubagentCall, completion: Completed, journal: Path, timeout: float) -> bool:
    from opentelemetry.sdk.trace.export import SpanExportResult

    from spanjournal.export import JournalSpan, Outcome, build_span, iso_to_ns, make_exporter
    from spanjournal.ledger import read_ledger

    # The chunk's latest dispatch is this call's, unless another session dispatched it since:
    # then its attempts are read (the whole journal, no checkpoint).
    dispatch = read_ledger(journal, keep_attempts=False, checkpoint=True)[call.chunk_id].dispatch
    if dispatch is None or dispatch.span_id != call.span_id:
        dispatch = None
        for attempt in read_ledger(journal)[call.chunk_id].attempts:
            if attempt.dispatch is not None and attempt.dispatch.span_id == call.span_id:
                dispatch = attempt.dispatch
    if dispatch is None:
        return False
    end_ns = iso_to_ns(completion.ts)
    span = JournalSpan(
        dispatch=dispatch,
        completion=completion,
        outcome=Outcome.DONE if completion.success else Outcome.FAILED,
        trace_id=int(call.trace_id, 16),
        span_id=int(call.span_id, 16),
        parent_span_id=None,
        start_ns=min(iso_to_ns(dispatch.ts), end_ns),
        end_ns=end_ns,
        service_name=dispatch.service_name or SERVICE_NAME,
    )
    exporter, _, _ = make_exporter(timeout=timeout)
    try:
        return exporter.export([build_span(span)]) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def _flag(value: str | None, default: bool) -> bool:
    if value is None or not value.strip():
        return default
    return value.strip().lower() not in _FALSE


def _say(message: str) -> None:
    sys.stderr.write(" ".join(message.split()) + "\n")
