"""The Claude Code CLI's side of the Claude Agent SDK's protocol, played from a script (no network, no API key).

:class:`ScriptedCLI` is a ``claude_agent_sdk`` ``Transport``: the SDK's own
``ClaudeSDKClient`` talks to it exactly as to the CLI. It answers
``initialize``, and when the user's message arrives it plays a turn: for
each step, it sends the ``hook_callback`` control requests the CLI sends for
the sub-agent tool calls of that step (to the callbacks registered for the
event, when the matcher matches the tool name), concurrently, and waits for
the SDK's answers; then it ends the turn with a ``result`` message.

``python claude_sdk_cli.py JOURNAL PLAN`` runs one session in a child
process, with ``spanjournal.claude.hooks(journal=JOURNAL)``, prints
``ready`` and waits to be killed.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient, Transport


@dataclass
class HookCall:
    """One hook event the CLI sent, and the SDK's answer."""

    event: dict[str, Any]
    answer: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class ScriptedCLI(Transport):
    """Plays the CLI: ``steps`` is a list of steps, each a list of hook events sent concurrently."""

    steps: list[list[dict[str, Any]]]
    session_id: str = "sdk-session"
    calls: list[HookCall] = field(default_factory=list)
    _outbox: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    _waiting: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    _hooks: dict[str, list[tuple[str | None, list[str]]]] = field(default_factory=dict)
    _ready: bool = False
    _counter: int = 0
    _turn: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self._ready = True

    def is_ready(self) -> bool:
        return self._ready

    async def end_input(self) -> None:
        return None

    async def close(self) -> None:
        self._ready = False
        await self._outbox.put({"type": "_eof"})

    async def write(self, data: str) -> None:
        for line in data.splitlines():
            if line.strip():
                self._receive(json.loads(line))

    async def read_messages(self) -> AsyncIterator[dict[str, Any]]:  # type: ignore[override]
        while True:
            message = await self._outbox.get()
            if message.get("type") == "_eof":
                return
            yield message

    # -- the CLI's side -----------------------------------------------------------

    def _receive(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "control_request" and message["request"].get("subtype") == "initialize":
            for event, matchers in (message["request"].get("hooks") or {}).items():
                self._hooks[event] = [(m.get("matcher"), m["hookCallbackIds"]) for m in matchers]
            self._answer(message["request_id"], {"commands": [], "hooks_applied": True})
        elif kind == "control_request":
            self._answer(message["request_id"], {})
        elif kind == "control_response":
            response = message["response"]
            future = self._waiting.pop(response["request_id"])
            future.set_result(response)
        elif kind == "user":
            self._turn = asyncio.get_running_loop().create_task(self._play())

    def _answer(self, request_id: str, response: dict[str, Any]) -> None:
        self._outbox.put_nowait(
            {
                "type": "control_response",
                "response": {"subtype": "success", "request_id": request_id, "response": response},
            }
        )

    async def _hook(self, event: dict[str, Any]) -> None:
        call = HookCall(event)
        self.calls.append(call)
        for matcher, callback_ids in self._hooks.get(event["hook_event_name"], []):
            if matcher and not re.fullmatch(matcher, event["tool_name"]):
                continue
            for callback_id in callback_ids:
                self._counter += 1
                request_id = f"cli_req_{self._counter}"
                future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
                self._waiting[request_id] = future
                await self._outbox.put(
                    {
                        "type": "control_request",
                        "request_id": request_id,
                        "request": {
                            "subtype": "hook_callback",
                            "callback_id": callback_id,
                            "input": event,
                            "tool_use_id": event.get("tool_use_id"),
                        },
                    }
                )
                response = await future
                if response.get("subtype") == "error":
                    call.error = response.get("error")
                else:
                    call.answer = response.get("response")

    async def _play(self) -> None:
        for step in self.steps:
            await asyncio.gather(*(self._hook(event) for event in step))
        await self._outbox.put(
            {
                "type": "result",
                "subtype": "success",
                "duration_ms": 10,
                "duration_api_ms": 5,
                "is_error": False,
                "num_turns": 1,
                "session_id": self.session_id,
                "result": "done",
            }
        )


async def run_session(options: ClaudeAgentOptions, steps: list[list[dict[str, Any]]]) -> list[HookCall]:
    """One turn through the SDK's own client; the hook calls the CLI made, with the SDK's answers."""
    cli = ScriptedCLI(steps)
    async with ClaudeSDKClient(options=options, transport=cli) as client:
        await client.query("Run the sub-agents")
        async for _ in client.receive_response():
            pass
    return cli.calls


def denied(call: HookCall) -> str | None:
    """The denial reason in an answer, if the SDK denied the call."""
    out = (call.answer or {}).get("hookSpecificOutput") or {}
    return out.get("permissionDecisionReason") if out.get("permissionDecision") == "deny" else None


def main(journal: str, plan: str) -> None:
    import spanjournal.claude

    options = ClaudeAgentOptions(hooks=spanjournal.claude.hooks(journal=journal))  # type: ignore[arg-type]
    calls = asyncio.run(run_session(options, json.loads(plan)))
    print("ready", json.dumps([c.answer for c in calls]), flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
