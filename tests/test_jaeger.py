"""End to end against a real Jaeger v2 (built from source here), read back through Jaeger's query API
and seen in a browser.

One child process runs a fan-out with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at Jaeger: flat agents
(each its own trace) and an orchestrator whose sub-agents run on threads under it. Some agents finish,
some fail, some hang; the child is SIGKILLed once every finished agent's span has reached Jaeger live.
Then ``spanjournal export --only unfinished`` sends what Jaeger never got. Expectations come from the
journal's raw lines (standard library only), and from Jaeger's own answers.

The browser test takes a screenshot of the trace page; with ``SPANJOURNAL_SAVE_SCREENSHOT=1`` it is
saved as docs/jaeger-trace.png, the picture in the README.
"""

from __future__ import annotations

import contextvars
import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from spanjournal.cli import main
from spanjournal.ledger import ChunkState, read_ledger
from spanjournal.testing import run_and_kill

try:
    from jaeger_server import JaegerServer, build_jaeger, parent_span_id, tag
except ModuleNotFoundError:  # tests/ imported as a package (importlib import mode)
    from tests.jaeger_server import JaegerServer, build_jaeger, parent_span_id, tag

pytestmark = pytest.mark.integration

SERVICE = "jaeger-e2e-fanout"
FLAT = [f"case-{i:02d}" for i in range(8)]
FLAT_FAIL = {"case-01", "case-05"}
FLAT_HANG = {"case-03", "case-06", "case-07"}
SUBS = [f"sub-{i}" for i in range(5)]
SUB_FAIL = {"sub-1"}
SUB_HANG = {"sub-2", "sub-4"}
ORCHESTRATOR = "orchestrator"
UNFINISHED = FLAT_HANG | SUB_HANG | {ORCHESTRATOR}
FAILED = FLAT_FAIL | SUB_FAIL
DONE = (set(FLAT) | set(SUBS)) - FAILED - FLAT_HANG - SUB_HANG
REPO = Path(__file__).resolve().parent.parent
SCREENSHOT = REPO / "docs" / "jaeger-trace.png"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class AgentFailed(RuntimeError):
    """A simulated agent's failure."""


def fanout_with_orchestrator(journal: str) -> None:
    """A child process: flat agents, and an orchestrator with sub-agents on threads; some hang."""
    from concurrent.futures import ThreadPoolExecutor

    import spanjournal

    spanjournal.configure(journal=journal, service_name=SERVICE, set_global=False)

    def agent(chunk_id: str, hang: set[str], fail: set[str], agent_name: str) -> None:
        try:
            with spanjournal.dispatch_span(chunk_id, task_description="route a prompt", agent_name=agent_name) as d:
                if chunk_id in hang:
                    threading.Event().wait()
                if chunk_id in fail:
                    raise AgentFailed(f"429 quota exceeded for {chunk_id}")
                d.record(input_tokens=120, output_tokens=30)
        except AgentFailed:
            pass

    def orchestrate() -> None:
        with (
            spanjournal.dispatch_span(ORCHESTRATOR, task_description="fan out", agent_name="orchestrator"),
            ThreadPoolExecutor(len(SUBS)) as subs,
        ):
            for chunk_id in SUBS:  # each sub-agent runs in the orchestrator's context: its child span
                subs.submit(contextvars.copy_context().run, agent, chunk_id, SUB_HANG, SUB_FAIL, "worker")

    with ThreadPoolExecutor(len(FLAT) + 1) as pool:
        pool.submit(orchestrate)
        for chunk_id in FLAT:
            pool.submit(agent, chunk_id, FLAT_HANG, FLAT_FAIL, "router")


@dataclass(frozen=True)
class Attempt:
    """One journaled dispatch, from the raw lines."""

    chunk_id: str
    trace_id: str
    span_id: str
    parent_span_id: str
    agent_name: str
    completion: dict[str, Any] | None


def journal_attempts(journal: Path) -> dict[str, Attempt]:
    """chunk id -> attempt, read with ``json`` only."""
    lines = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    completions = {e["span_id"]: e for e in lines if e["event"] == "subagent_completed"}
    return {
        e["chunk_id"]: Attempt(
            e["chunk_id"],
            e["trace_id"],
            e["span_id"],
            e.get("parent_span_id") or "",
            e["agent"],
            completions.get(e["span_id"]),
        )
        for e in lines
        if e["event"] == "subagent_dispatched"
    }


@dataclass
class Run:
    jaeger: JaegerServer
    journal: Path
    attempts: dict[str, Attempt]
    live: list[dict[str, Any]]  # what Jaeger held when the child was killed
    exported: list[dict[str, Any]]  # what it holds after export --only unfinished


@pytest.fixture(scope="module")
def jaeger_binary() -> Path:
    build = build_jaeger()
    if build.binary is None:
        pytest.skip(f"Jaeger cannot be built here: {build.reason}")
    return build.binary


@pytest.fixture(scope="module")
def run(jaeger_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("jaeger-e2e")
    journal = root / "fanout.jsonl"
    with JaegerServer(jaeger_binary) as jaeger:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = jaeger.grpc_endpoint
        env["OTEL_BSP_SCHEDULE_DELAY"] = "50"  # ended spans leave the live batch queue quickly
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        finished = len(DONE) + len(FAILED)

        def in_flight_and_finished_ones_delivered() -> bool:
            if not journal.exists():
                return False
            ledger = read_ledger(journal, keep_attempts=False)
            if any(c not in ledger for c in [*FLAT, *SUBS, ORCHESTRATOR]):
                return False
            if any(ledger.state(c) is not ChunkState.RUNNING for c in UNFINISHED):
                return False
            return len(jaeger.spans(SERVICE)) >= finished

        child = run_and_kill(
            fanout_with_orchestrator,
            (str(journal),),
            kill_when=in_flight_and_finished_ones_delivered,
            timeout=60,
            poll_interval=0.05,
            env=env,
        )
        assert child.killed and child.returncode == -9, child.output
        live = jaeger.spans(SERVICE)
        argv = ["export", str(journal), "--only", "unfinished", "--endpoint", jaeger.grpc_endpoint]
        assert main([*argv, "--protocol", "grpc", "--timeout", "10"]) == 0
        exported = jaeger.wait_for(lambda: jaeger.spans(SERVICE), finished + len(UNFINISHED))
        yield Run(jaeger, journal, journal_attempts(journal), live, exported)


def by_span_id(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["spanID"]: s for s in spans}


def test_finished_agents_reach_jaeger_live_with_the_journals_ids_and_genai_attributes(run: Run) -> None:
    assert set(run.attempts) == set(FLAT) | set(SUBS) | {ORCHESTRATOR}
    finished = {a.span_id: a for a in run.attempts.values() if a.completion is not None}
    assert {a.chunk_id for a in finished.values()} == DONE | FAILED
    live = by_span_id(run.live)
    assert sorted(live) == sorted(finished), "Jaeger must hold exactly the finished agents before the export"
    for span_id, attempt in finished.items():
        span = live[span_id]
        where = attempt.chunk_id
        assert span["traceID"] == attempt.trace_id, where
        assert parent_span_id(span) == attempt.parent_span_id, where
        assert span["operationName"] == f"invoke_agent {attempt.agent_name}", where
        assert tag(span, "gen_ai.operation.name") == "invoke_agent", where
        assert tag(span, "gen_ai.agent.name") == attempt.agent_name, where
        assert tag(span, "spanjournal.chunk_id") == attempt.chunk_id, where
        assert tag(span, "spanjournal.unfinished") is None, where
        if attempt.chunk_id in FAILED:
            assert (tag(span, "otel.status_code"), tag(span, "error")) == ("ERROR", True), where
            assert tag(span, "otel.status_description") == f"429 quota exceeded for {attempt.chunk_id}", where
            assert tag(span, "error.type") == "AgentFailed", where
        else:
            assert tag(span, "otel.status_code") != "ERROR", where  # a live success is UNSET: no tag
            assert tag(span, "error") is None, where
            assert tag(span, "gen_ai.usage.input_tokens") == 120, where
            assert tag(span, "gen_ai.usage.output_tokens") == 30, where


def test_after_export_every_attempt_is_in_jaeger_once(run: Run) -> None:
    counts = Counter(s["spanID"] for s in run.exported)
    assert sorted(counts) == sorted(a.span_id for a in run.attempts.values())
    assert set(counts.values()) == {1}
    spans = by_span_id(run.exported)
    for attempt in run.attempts.values():
        span = spans[attempt.span_id]
        assert span["traceID"] == attempt.trace_id, attempt.chunk_id
        if attempt.chunk_id in UNFINISHED:
            assert tag(span, "spanjournal.unfinished") is True, attempt.chunk_id
            assert tag(span, "otel.status_code") == "ERROR", attempt.chunk_id
            assert tag(span, "otel.status_description") == "no completion recorded", attempt.chunk_id
        else:
            assert tag(span, "spanjournal.unfinished") is None, attempt.chunk_id


def test_a_jaeger_tag_search_lists_exactly_the_unfinished_attempts(run: Run) -> None:
    traces = run.jaeger.search(SERVICE, {"spanjournal.unfinished": "true"})
    tagged = {s["spanID"] for trace in traces for s in trace if tag(s, "spanjournal.unfinished") is True}
    unfinished = {run.attempts[c].span_id for c in UNFINISHED}
    assert tagged == unfinished
    # Jaeger returns whole traces: each unfinished flat agent's own, and the orchestrator's; no other.
    assert {trace[0]["traceID"] for trace in traces} == {run.attempts[c].trace_id for c in UNFINISHED}
    assert len(traces) == len(FLAT_HANG) + 1


def test_unfinished_sub_agents_sit_under_their_orchestrator_in_the_trace(run: Run) -> None:
    orchestrator = run.attempts[ORCHESTRATOR]
    trace = by_span_id(run.jaeger.trace(orchestrator.trace_id))
    assert sorted(trace) == sorted([orchestrator.span_id, *(run.attempts[c].span_id for c in SUBS)])
    assert parent_span_id(trace[orchestrator.span_id]) == ""
    for chunk_id in SUBS:
        span = trace[run.attempts[chunk_id].span_id]
        assert parent_span_id(span) == orchestrator.span_id, chunk_id
        assert (tag(span, "spanjournal.unfinished") is True) == (chunk_id in SUB_HANG), chunk_id
    for chunk_id in FLAT:
        assert run.attempts[chunk_id].parent_span_id == "", chunk_id
        assert parent_span_id(by_span_id(run.exported)[run.attempts[chunk_id].span_id]) == "", chunk_id


# --------------------------------------------------------------------------
# Seen in a browser
# --------------------------------------------------------------------------


def chromium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(
            [
                CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-proxy-server",
                "--hide-scrollbars", f"--user-data-dir={profile}", "--virtual-time-budget=15000", *args,
            ],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_the_trace_page_in_a_browser_shows_the_unfinished_sub_agents(run: Run) -> None:
    from html.parser import HTMLParser

    from PIL import Image

    orchestrator = run.attempts[ORCHESTRATOR]
    url = f"{run.jaeger.ui_url}/trace/{orchestrator.trace_id}"
    dom = chromium("--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]

    rows: dict[str, dict[str, str]] = {}

    class SpanRows(HTMLParser):
        def handle_starttag(self, name: str, attrs: list[tuple[str, str | None]]) -> None:
            attributes = {k: v or "" for k, v in attrs}
            if name == "tr" and "data-span-id" in attributes:
                rows[attributes["data-span-id"]] = attributes

    SpanRows().feed(dom.stdout)
    assert sorted(rows) == sorted([orchestrator.span_id, *(run.attempts[c].span_id for c in SUBS)]), dom.stdout[-3000:]
    shown_unfinished = {sid for sid, row in rows.items() if "unfinished" in row["class"].split()}
    assert shown_unfinished == {run.attempts[c].span_id for c in SUB_HANG | {ORCHESTRATOR}}
    for chunk_id in SUBS:
        assert rows[run.attempts[chunk_id].span_id]["data-parent-span-id"] == orchestrator.span_id
    for chunk_id in SUBS:
        assert f">{chunk_id}<" in dom.stdout

    with tempfile.TemporaryDirectory(prefix="jaeger-screenshot-") as tmp:
        shot = Path(tmp) / "trace.png"
        taken = chromium(f"--screenshot={shot}", "--window-size=1280,520", url)
        assert taken.returncode == 0 and shot.is_file(), taken.stderr[-2000:]
        with Image.open(shot) as image:
            assert image.size == (1280, 520)
            colors = image.convert("RGB").getcolors(maxcolors=1 << 20) or []
        # A blank or error page has a handful of colours; the trace page has text, bars and badges.
        assert len(colors) > 50, f"the screenshot looks blank ({len(colors)} colours)"
        assert max(count for count, _ in colors) < 0.95 * 1280 * 520
        if os.environ.get("SPANJOURNAL_SAVE_SCREENSHOT") == "1":
            SCREENSHOT.parent.mkdir(exist_ok=True)
            shutil.copyfile(shot, SCREENSHOT)


# --------------------------------------------------------------------------
# The README's three commands
# --------------------------------------------------------------------------


def readme_jaeger_commands() -> list[str]:
    """The indented commands of the README's "Jaeger and other OTLP backends" section."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Jaeger and other OTLP backends", 1)[1].split("\n## ", 1)[0]
    return [line.strip().split("  #", 1)[0].strip() for line in section.splitlines() if line.startswith("    ")]


def test_the_readmes_three_commands_show_the_demos_in_flight_agents_in_jaeger(
    jaeger_binary: Path, tmp_path: Path
) -> None:
    import re
    import sys
    import urllib.parse

    commands = readme_jaeger_commands()
    assert len(commands) == 3, commands
    assert commands[0] == "make jaeger"
    env_assignment, make_demo = commands[1].split(" ", 1)
    assert make_demo == "make demo"
    assert env_assignment == "OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317"
    url = urllib.parse.urlsplit(re.search(r"'(http://[^']+)'", commands[2]).group(1))  # type: ignore[union-attr]
    assert (url.hostname, url.port, url.path) == ("localhost", 16686, "/search")
    query = dict(urllib.parse.parse_qsl(url.query))

    # The demo (what `make demo` runs), sending to a Jaeger started from the same config.
    with JaegerServer(jaeger_binary) as jaeger:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=jaeger.grpc_endpoint, NO_PROXY="127.0.0.1,localhost")
        env["no_proxy"] = env["NO_PROXY"]
        demo = subprocess.run(
            [sys.executable, str(REPO / "examples" / "demo.py"), "--dir", str(tmp_path / "run")],
            capture_output=True, text=True, env=env, timeout=300, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        lines = [json.loads(line) for line in (tmp_path / "run" / "journal.jsonl").read_text().splitlines()]
        completed = {e["span_id"] for e in lines if e["event"] == "subagent_completed"}
        in_flight = {e["span_id"] for e in lines if e["event"] == "subagent_dispatched"} - completed
        assert in_flight, "the demo's crash leaves agents in flight"
        tags = json.loads(query["tags"])
        listed = jaeger.wait_for(lambda: [s for t in jaeger.search(query["service"], tags) for s in t], len(in_flight))
        page = chromium("--dump-dom", f"{jaeger.ui_url}{url.path}?{url.query}") if CHROMIUM else None
    assert sorted(s["spanID"] for s in listed) == sorted(in_flight)
    for span in listed:
        assert tag(span, "otel.status_description") == "no completion recorded"
    if page is not None:  # the page Jaeger serves at that address lists the same traces
        assert page.returncode == 0, page.stderr[-2000:]
        assert f"{query['service']}: {len(in_flight)} traces" in page.stdout


def test_make_jaeger_starts_it_in_the_background_and_stops_it_by_pid(jaeger_binary: Path, tmp_path: Path) -> None:
    import socket
    import urllib.request

    try:
        from jaeger_server import JAEGER_SCRIPT, PORT_VARIABLES
    except ModuleNotFoundError:
        from tests.jaeger_server import JAEGER_SCRIPT, PORT_VARIABLES

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / jaeger_binary.name).symlink_to(jaeger_binary)  # the built binary, as a cache holding it
    sockets = [socket.socket() for _ in PORT_VARIABLES]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = {name: str(s.getsockname()[1]) for name, s in zip(PORT_VARIABLES, sockets, strict=True)}
    for s in sockets:
        s.close()
    env = {**os.environ, **ports, "SPANJOURNAL_JAEGER_CACHE": str(cache)}

    def script(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(JAEGER_SCRIPT), command], capture_output=True, text=True, env=env, timeout=120
        )

    started = script("start")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        ui = f"http://127.0.0.1:{ports['JAEGER_UI_PORT']}"
        assert f"UI {ui}" in started.stdout
        assert f"OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:{ports['JAEGER_OTLP_GRPC_PORT']}" in started.stdout
        pid = int((cache / "jaeger.pid").read_text())
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{ui}/api/services", timeout=10) as response:
            assert json.load(response)["errors"] is None
        with opener.open(f"{ui}/trace/0123456789abcdef", timeout=10) as response:
            assert "spanjournal trace page" in response.read().decode()  # the page jaeger.sh serves as the UI
        again = script("start")
        assert again.returncode == 0 and f"already running (pid {pid})" in again.stdout
    finally:
        stopped = script("stop")
    assert stopped.returncode == 0 and f"stopped Jaeger (pid {pid})" in stopped.stdout
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        threading.Event().wait(0.1)
    else:
        pytest.fail(f"Jaeger pid {pid} is still running after stop")
    assert not (cache / "jaeger.pid").exists()
