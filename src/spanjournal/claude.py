"""Claude Code and the Claude Agent SDK: every sub-agent journaled.

Claude Code runs a sub-agent through its ``Task`` tool (``Agent`` in newer
versions). Its hooks see each call start (``PreToolUse``) and end
(``PostToolUse``, or ``PostToolUseFailure``). This module maps those hook
events onto the journal, for both ways of receiving them:

- the command hook ``spanjournal claude-hook`` (one process per event, see
  :mod:`spanjournal.cli.claude_hook`), and
- :func:`hooks`, the in-process callbacks for ``ClaudeAgentOptions(hooks=...)``
  of the Claude Agent SDK.

The rules both follow are here, once:

**Chunk ids.** A sub-agent is identified by what it was asked, so the same
sub-agent asked again in a new session (after a crash or a usage limit) is
the same chunk: ``claude-<type>-<hash>``, the rule of
:mod:`spanjournal.chunk_ids` for the name ``claude-<type>`` (``<type>`` is the
``subagent_type``, ``general-purpose`` when absent) and the prompt: the hash
is of the name and the normalised prompt (Unicode NFC, every run of
whitespace, newlines included, made one space, trimmed; case is kept). The
description is not part of the id (it is shown by ``pending``). A line
``spanjournal-chunk: ID`` in the prompt (or the description) overrides the
rule: ``ID`` is 1 to 128 characters of ``[A-Za-z0-9._:/@+-]``.

**Ids for traces.** All sub-agents of one Claude session share a trace: the
trace id is derived from the session id, the span id from the
``tool_use_id`` (SHA-256 of a fixed label and those ids), so the
``PostToolUse`` process finds the ``PreToolUse`` line's span without reading
the journal.

**Answers.** A sub-agent's final answer is kept beside the journal, in
``<journal dir>/<journal stem>.outputs/<chunk id>.md``, named (absolute) in
the completion's ``output_file``. When a chunk is already ``done`` and its
answer file exists, ``PreToolUse`` denies the call with a reason that names
the file, so Claude reads the answer instead of paying for the sub-agent
again.

This module imports neither the OpenTelemetry SDK nor the Claude Agent SDK at
import time: the command hook runs on every sub-agent call.

>>> chunk_id_for("code-reviewer", "Review  src/auth.py\\n for bugs")
'claude-code-reviewer-1638ea1cd90ffe4e'
>>> chunk_id_for("code-reviewer", "spanjournal-chunk: auth-review\\nReview src/auth.py")
'auth-review'
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import msgspec

from spanjournal._schema import Completed, Dispatched
from spanjournal.chunk_ids import derived_chunk_id

if TYPE_CHECKING:
    from claude_agent_sdk.types import HookCallback

    from spanjournal.config import Spanjournal

__all__ = [
    "CHUNK_MARKER",
    "DEFAULT_JOURNAL",
    "SUBAGENT_EVENTS",
    "SUBAGENT_TOOLS",
    "HookPayloadError",
    "SubagentCall",
    "answer_text",
    "chunk_id_for",
    "completed_event",
    "deny_output",
    "deny_reason",
    "dispatched_event",
    "done_answer",
    "hooks",
    "keep_answer",
    "output_path",
    "parse_hook_input",
    "session_span_id_for",
    "span_id_for",
    "trace_id_for",
]

#: The tool names under which Claude Code runs a sub-agent.
SUBAGENT_TOOLS = frozenset({"Task", "Agent"})
#: The hook events that are acted on; every other event is ignored.
SUBAGENT_EVENTS = ("PreToolUse", "PostToolUse", "PostToolUseFailure")
#: The settings-file matcher for the sub-agent tools.
SUBAGENT_MATCHER = "Task|Agent"
#: A line with this marker in the prompt names the chunk id.
CHUNK_MARKER = "spanjournal-chunk:"
#: The journal, relative to the Claude project directory, when no other is named.
DEFAULT_JOURNAL = Path(".claude") / "spanjournal" / "subagents.jsonl"
#: ``subagent_type`` when the call names none (Claude Code's default agent).
DEFAULT_SUBAGENT_TYPE = "general-purpose"
#: Error messages longer than this are cut in the journal.
MAX_ERROR_CHARS = 2000
#: Attributes kept on each dispatch (``attrs``), so a line leads back to Claude's own records.
ATTR_SESSION_ID = "claude.session_id"
ATTR_TOOL_USE_ID = "claude.tool_use_id"
#: ``error_type`` of a sub-agent that answered with a usage-limit message instead of its work.
USAGE_LIMIT_ERROR = "UsageLimit"

_MARKER = re.compile(r"spanjournal-chunk:[ \t]*([A-Za-z0-9._:/@+-]{1,128})(?![A-Za-z0-9._:/@+-])")
_UNSAFE_FILE = re.compile(r"[^A-Za-z0-9._-]")
# A short answer that is only a usage-limit notice: the sub-agent was cut off, its work is not there.
_USAGE_LIMIT = re.compile(
    r"usage limit reached|(?:session|usage|weekly|5-hour) limit\b.*\breset|hit your (?:usage |session )?limit"
    r"|out of (?:extra )?usage|rate limit(?:ed)?\b.*\btry again",
    re.IGNORECASE | re.DOTALL,
)
_USAGE_LIMIT_MAX_CHARS = 400


class HookPayloadError(ValueError):
    """A hook event that is not what Claude Code's hook protocol sends."""


class SubagentCall(msgspec.Struct, frozen=True, kw_only=True):
    """One hook event about a sub-agent call, with everything the journal needs."""

    event: str
    tool_name: str
    session_id: str
    tool_use_id: str
    subagent_type: str
    description: str | None
    prompt: str
    chunk_id: str
    cwd: str | None
    #: ``PostToolUse``: what the tool returned.
    tool_response: Any = None
    #: ``PostToolUseFailure``: the error, and whether the user interrupted the call.
    error: str | None = None
    interrupted: bool = False
    #: ``PostToolUse``/``PostToolUseFailure``: the tool's run time, when Claude Code reports it.
    duration_ms: float | None = None

    @property
    def trace_id(self) -> str:
        return trace_id_for(self.session_id)

    @property
    def span_id(self) -> str:
        return span_id_for(self.session_id, self.tool_use_id)


_decoder = msgspec.json.Decoder()


def parse_hook_input(payload: bytes | str | Mapping[str, Any]) -> SubagentCall | None:
    """The sub-agent call a hook event is about; None for other events and tools.

    ``payload`` is the JSON Claude Code writes on a command hook's stdin, or
    the ``input`` mapping an SDK hook callback receives. Unknown fields are
    ignored. Raises :class:`HookPayloadError` (one line) for input that is
    not a hook event.
    """
    if isinstance(payload, Mapping):
        data: Any = payload
    else:
        raw = payload.encode() if isinstance(payload, str) else payload
        if not raw.strip():
            raise HookPayloadError("no hook event on stdin (expected one JSON object)")
        try:
            data = _decoder.decode(raw)
        except msgspec.DecodeError as exc:
            raise HookPayloadError(f"stdin is not a JSON hook event: {exc}") from None
    if not isinstance(data, Mapping):
        raise HookPayloadError(f"stdin is not a JSON hook event: a JSON {type(data).__name__}, not an object")
    event = data.get("hook_event_name")
    if not isinstance(event, str):
        raise HookPayloadError("hook event without a hook_event_name")
    if event not in SUBAGENT_EVENTS or data.get("tool_name") not in SUBAGENT_TOOLS:
        return None
    tool_input = data.get("tool_input")
    if not isinstance(tool_input, Mapping):
        raise HookPayloadError(f"{event} for {data.get('tool_name')}: tool_input is not an object")
    session_id = _required_str(data, "session_id", event)
    tool_use_id = _required_str(data, "tool_use_id", event)
    prompt = tool_input.get("prompt")
    if not isinstance(prompt, str):
        raise HookPayloadError(f"{event} for {data['tool_name']}: tool_input.prompt is not a string")
    subagent_type = tool_input.get("subagent_type")
    if not isinstance(subagent_type, str) or not subagent_type.strip():
        subagent_type = DEFAULT_SUBAGENT_TYPE
    description = tool_input.get("description")
    description = description if isinstance(description, str) and description.strip() else None
    cwd = data.get("cwd")
    error = data.get("error", data.get("error_message"))
    duration = data.get("duration_ms")
    return SubagentCall(
        event=event,
        tool_name=str(data["tool_name"]),
        session_id=session_id,
        tool_use_id=tool_use_id,
        subagent_type=subagent_type,
        description=description,
        prompt=prompt,
        chunk_id=chunk_id_for(subagent_type, prompt, description),
        cwd=cwd if isinstance(cwd, str) and cwd else None,
        tool_response=data.get("tool_response"),
        error=None if error is None else str(error),
        interrupted=data.get("is_interrupt") is True,
        duration_ms=float(duration) if isinstance(duration, (int, float)) and not isinstance(duration, bool) else None,
    )


def _required_str(data: Mapping[str, Any], key: str, event: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise HookPayloadError(f"{event} without a {key}")
    return value


# -- ids -----------------------------------------------------------------------------


def chunk_id_for(subagent_type: str, prompt: str, description: str | None = None) -> str:
    """The chunk id of a sub-agent asked ``prompt`` (see the module documentation)."""
    for text in (prompt, description or ""):
        marked = _MARKER.search(text)
        if marked:
            return marked.group(1)
    return derived_chunk_id(f"claude-{subagent_type or DEFAULT_SUBAGENT_TYPE}", prompt)


def _hex_id(label: str, *parts: str, digits: int) -> str:
    value = hashlib.sha256("\0".join((label, *parts)).encode()).hexdigest()[:digits]
    return value if value.strip("0") else "1".zfill(digits)  # the all-zero id is invalid


def trace_id_for(session_id: str) -> str:
    """The trace id (32 hex digits) every sub-agent of a Claude session shares."""
    return _hex_id("spanjournal.claude.trace", session_id, digits=32)


def span_id_for(session_id: str, tool_use_id: str) -> str:
    """The span id (16 hex digits) of one sub-agent call."""
    return _hex_id("spanjournal.claude.span", session_id, tool_use_id, digits=16)


def session_span_id_for(session_id: str) -> str:
    """The span id of a Claude session's root, which no process records: the parent of its in-process spans."""
    return _hex_id("spanjournal.claude.session", session_id, digits=16)


# -- answers -------------------------------------------------------------------------


def output_path(journal: str | os.PathLike[str], chunk_id: str) -> Path:
    """Where a chunk's final answer is kept: ``<journal dir>/<journal stem>.outputs/<chunk>.md`` (absolute).

    A chunk id with characters unsafe in a file name gets them replaced by
    ``_`` and a short hash added, so two ids never share a file.
    """
    path = Path(os.path.abspath(journal))
    name = _UNSAFE_FILE.sub("_", chunk_id)
    if name != chunk_id or name.startswith("."):
        name = f"{name.lstrip('.')}-{hashlib.sha256(chunk_id.encode()).hexdigest()[:8]}"
    return path.parent / f"{path.stem}.outputs" / f"{name}.md"


def answer_text(tool_response: Any) -> str | None:
    """The sub-agent's final answer in a tool response: its text blocks, joined.

    Claude Code's sub-agent tool answers ``{"content": [{"type": "text",
    "text": ...}], "totalTokens": ..., "usage": {...}, ...}``; older versions
    answer the list of blocks, or a string.
    """
    if isinstance(tool_response, str):
        return tool_response
    content = tool_response.get("content") if isinstance(tool_response, Mapping) else tool_response
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            b["text"]
            for b in content
            if isinstance(b, Mapping) and b.get("type", "text") == "text" and isinstance(b.get("text"), str)
        ]
        return "\n\n".join(texts) if texts else None
    return None


def launched_in_background(tool_response: Any) -> bool:
    """A ``run_in_background`` call: the tool returned at launch, the sub-agent has not finished."""
    return isinstance(tool_response, Mapping) and tool_response.get("status") == "async_launched"


def usage_limit_notice(answer: str | None) -> str | None:
    """The answer, if it is only a usage-limit notice (the sub-agent was cut off), else None."""
    if answer is None:
        return None
    text = answer.strip()
    if len(text) > _USAGE_LIMIT_MAX_CHARS or not _USAGE_LIMIT.search(text):
        return None
    return text


def keep_answer(path: Path, text: str) -> None:
    """Write an answer file whole (temporary file, fsync, rename), mode 0600."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8", "surrogatepass"))
            if not text.endswith("\n"):
                f.write(b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def done_answer(journal: str | os.PathLike[str], chunk_id: str) -> Path | None:
    """The answer file of ``chunk_id`` if the journal says it is done and the file is there.

    A journal that does not exist yet, or cannot be read, has nothing done.
    The journal is read from its checkpoint (saved beside it, as every command
    does), so each call folds only what was appended since: the hook asks this
    before every sub-agent of a session.
    """
    from spanjournal.ledger import ChunkState, read_ledger
    from spanjournal.reader import JournalReadError

    if not os.path.exists(journal):
        return None
    try:
        chunk = read_ledger(journal, keep_attempts=False, checkpoint=True)[chunk_id]
    except (KeyError, JournalReadError):
        return None
    if chunk.state is not ChunkState.DONE:
        return None
    output = chunk.output_file
    if not output:
        return None
    path = Path(output)
    if not path.is_absolute():
        path = Path(os.path.dirname(os.path.abspath(journal))) / path
    return path if path.is_file() else None


def deny_reason(chunk_id: str, answer: Path) -> str:
    """What Claude is told when a finished sub-agent is not run again."""
    return (
        f"This sub-agent already finished in an earlier session (spanjournal chunk {chunk_id}). "
        f"Its final answer is in {answer}: read that file and use it instead of running the sub-agent again."
    )


def deny_output(reason: str) -> dict[str, Any]:
    """The hook output that denies a ``PreToolUse`` call, with ``reason`` shown to Claude."""
    return {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": "deny",
            "permissionDecisionReason": reason,
        }
    }


# -- journal lines -------------------------------------------------------------------


def now_ts() -> str:
    """The current time as a journal ``ts``: local ISO 8601, microseconds."""
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="microseconds")


def dispatched_event(
    call: SubagentCall,
    *,
    ts: str,
    host: str,
    pid: int,
    proc_start: int | None,
    output_file: str | None,
    cwd: str | None,
    service_name: str | None = None,
) -> Dispatched:
    """The ``subagent_dispatched`` line of a ``PreToolUse`` event."""
    return Dispatched(
        ts=ts,
        session_id=call.session_id,
        chunk_id=call.chunk_id,
        task_description=call.description,
        items_assigned=1,
        trace_id=call.trace_id,
        span_id=call.span_id,
        host=host,
        pid=pid,
        proc_start=proc_start,
        output_file=output_file,
        cwd=cwd,
        agent=call.subagent_type,
        service_name=service_name,
        attrs={ATTR_SESSION_ID: call.session_id, ATTR_TOOL_USE_ID: call.tool_use_id},
    )


def usage_of(tool_response: Any) -> tuple[int | None, int | None, int | None]:
    """(tokens_used, input_tokens, output_tokens) a tool response reports, each None if absent.

    Input tokens count cache reads and writes too: they are input the sub-agent was billed for.
    """
    if not isinstance(tool_response, Mapping):
        return None, None, None
    total = _int(tool_response.get("totalTokens"))
    usage = tool_response.get("usage")
    if not isinstance(usage, Mapping):
        return total, None, None
    parts = [_int(usage.get(k)) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")]
    known = [p for p in parts if p is not None]
    return total, (sum(known) if known else None), _int(usage.get("output_tokens"))


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def completed_event(
    call: SubagentCall,
    *,
    ts: str,
    host: str,
    pid: int,
    output_file: str | None,
) -> Completed:
    """The ``subagent_completed`` line of a ``PostToolUse`` or ``PostToolUseFailure`` event.

    A ``PostToolUse`` whose answer is only a usage-limit notice is a failure
    (``error_type`` ``UsageLimit``): the sub-agent was cut off, not done.
    """
    tokens, input_tokens, output_tokens = usage_of(call.tool_response)
    duration = call.duration_ms
    if duration is None and isinstance(call.tool_response, Mapping):
        total_ms = _int(call.tool_response.get("totalDurationMs"))
        duration = float(total_ms) if total_ms is not None else None
    error: str | None
    error_type: str | None
    if call.event == "PostToolUseFailure":
        success, error = False, call.error or "the sub-agent tool failed"
        error_type = "Interrupted" if call.interrupted else "ToolError"
    else:
        notice = usage_limit_notice(answer_text(call.tool_response))
        success, error, error_type = notice is None, notice, (USAGE_LIMIT_ERROR if notice else None)
    if error is not None and len(error) > MAX_ERROR_CHARS:
        error = error[: MAX_ERROR_CHARS - 1] + "…"
    return Completed(
        ts=ts,
        session_id=call.session_id,
        chunk_id=call.chunk_id,
        success=success,
        output_file=output_file if success else None,
        error=error,
        error_type=error_type,
        tokens_used=tokens,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        duration_ms=duration,
        trace_id=call.trace_id,
        span_id=call.span_id,
        host=host,
        pid=pid,
    )


# -- the Claude Agent SDK ------------------------------------------------------------


def hooks(
    journal: str | os.PathLike[str] | None = None,
    *,
    skip_done: bool = True,
    strict: bool = True,
    matcher: str = SUBAGENT_MATCHER,
) -> dict[str, list[Any]]:
    """The hooks mapping for ``ClaudeAgentOptions(hooks=...)``: every sub-agent journaled.

    The same rules as the ``spanjournal claude-hook`` command hook, in
    process: ``PreToolUse`` starts a dispatch span (its ``subagent_dispatched``
    line is written before the sub-agent runs), ``PostToolUse`` and
    ``PostToolUseFailure`` end it; spans go through the configured tracer
    provider. ``skip_done`` denies sub-agents whose chunk is already done,
    naming the answer file. ``strict``: a sub-agent whose dispatch could not
    be journaled is denied (``False``: it runs, and the error is logged).

    ``journal`` is the journal path. Without it, the active configuration
    (:func:`spanjournal.configure`) is used, else ``SPANJOURNAL_PATH``; a path
    with nothing configured is configured here (``configure(journal=...)``).

    >>> from claude_agent_sdk import ClaudeAgentOptions              # doctest: +SKIP
    >>> options = ClaudeAgentOptions(hooks=spanjournal.claude.hooks(journal="runs/claude.jsonl"))  # doctest: +SKIP

    Needs the ``claude`` extra: ``pip install 'spanjournal[claude]'``.
    """
    from spanjournal._claude_sdk import SdkHooks, configured_for

    try:
        from claude_agent_sdk import HookMatcher
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "spanjournal.claude.hooks needs the Claude Agent SDK: pip install 'spanjournal[claude]'"
        ) from exc
    sj: Spanjournal = configured_for(journal)
    bridge = SdkHooks(sj, skip_done=skip_done, strict=strict)
    pre = cast("HookCallback", bridge.pre_tool_use)
    post = cast("HookCallback", bridge.post_tool_use)
    return {
        "PreToolUse": [HookMatcher(matcher=matcher, hooks=[pre])],
        "PostToolUse": [HookMatcher(matcher=matcher, hooks=[post])],
        "PostToolUseFailure": [HookMatcher(matcher=matcher, hooks=[post])],
    }
