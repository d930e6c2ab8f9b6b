"""configure(): the OTEL_* conventions, explicit arguments winning, plan(), shutdown and exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import spanjournal
from spanjournal import ChunkState, Journal, JournalWriteError, config, read_ledger
from spanjournal.config import ExporterChoice, resolve_exporters
from spanjournal.testing import MemoryJournal


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No OTEL_*/SPANJOURNAL_* settings from the developer's shell; no configuration left behind."""
    for name in list(os.environ):
        if name.startswith(("OTEL_", "SPANJOURNAL_")):
            monkeypatch.delenv(name)
    # The global tracer provider can be set once per process: leave it to the child-process tests.
    monkeypatch.setattr(otel_trace, "set_tracer_provider", lambda provider: None)
    previous = config._activate(None)
    yield
    current = config.current()
    if current is not None:
        current.shutdown()
    config._activate(previous)


def choices(*args: object, **kwargs: object) -> list[str]:
    return [str(c) for c in resolve_exporters(*args, **kwargs)]  # type: ignore[arg-type]


# -- which exporters ---------------------------------------------------------------------


def test_default_with_no_endpoint_anywhere_exports_nothing() -> None:
    assert choices(environ={}) == []
    assert choices(environ={"OTEL_TRACES_EXPORTER": "none"}) == []


def test_an_endpoint_in_the_environment_turns_otlp_on() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}
    assert choices(environ=env) == ["otlp grpc http://collector:4317"]
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert choices(environ=env) == ["otlp http/protobuf http://collector:4318/v1/traces"]
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:9999", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    assert choices(environ=env) == ["otlp http/protobuf http://collector:9999/v1/traces"]
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/custom/path", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"}
    assert choices(environ=env) == ["otlp http/protobuf http://c:4318/custom/path"]
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}
    assert choices(environ=env) == ["otlp grpc http://c:4318"]


def test_explicit_arguments_win_over_the_environment() -> None:
    env = {
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4317",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    }
    assert choices(environ=env) == ["console"]
    assert choices("otlp", environ=env) == ["otlp grpc http://env:4317"]
    assert choices("otlp", endpoint="http://arg:4317", environ=env) == ["otlp grpc http://arg:4317"]
    assert choices("otlp", endpoint="http://arg:4318", protocol="http/protobuf", environ=env) == [
        "otlp http/protobuf http://arg:4318/v1/traces"
    ]
    assert choices("otlp", endpoint="http://arg:1234/v1/traces", protocol="http/protobuf", environ=env) == [
        "otlp http/protobuf http://arg:1234/v1/traces"
    ]
    assert choices("none", environ=env) == []


def test_asking_for_otlp_without_an_endpoint_uses_the_exporters_default() -> None:
    assert choices("otlp", environ={}) == ["otlp grpc (default endpoint)"]
    assert choices(environ={"OTEL_TRACES_EXPORTER": "otlp,console"}) == ["otlp grpc (default endpoint)", "console"]


def test_exporter_objects_and_lists() -> None:
    memory = InMemorySpanExporter()
    (choice,) = resolve_exporters(memory, environ={})
    assert choice == ExporterChoice("instance", instance=memory)
    assert choices([memory, "console"], environ={}) == ["InMemorySpanExporter", "console"]


def test_bad_protocol_and_unknown_exporter_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL='http/json'"):
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
        resolve_exporters(environ=env)
    with pytest.raises(ValueError, match="unknown span exporter 'zipkin-nope'"):
        spanjournal.configure(journal=tmp_path / "j.jsonl", exporter="zipkin-nope")


def test_configure_builds_the_exporters_it_chose(tmp_path: Path) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    sj = spanjournal.configure(
        journal=tmp_path / "j.jsonl",
        exporter=["otlp", "console"],
        endpoint="http://127.0.0.1:9/",
        protocol="http/protobuf",
        headers={"x-team": "router"},
    )
    exporters = [p.span_exporter for p in sj._export_processors if isinstance(p, BatchSpanProcessor)]
    assert isinstance(exporters[0], HttpExporter) and isinstance(exporters[1], ConsoleSpanExporter)
    assert [str(c) for c in sj.exporters] == ["otlp http/protobuf http://127.0.0.1:9/v1/traces", "console"]
    sj.shutdown(timeout=0.5)


# -- journal, session, service, time zone -------------------------------------------------


def test_settings_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPANJOURNAL_PATH", str(tmp_path / "env.jsonl"))
    monkeypatch.setenv("SPANJOURNAL_SESSION_ID", "env-session")
    monkeypatch.setenv("SPANJOURNAL_DURABILITY", "none")
    monkeypatch.setenv("SPANJOURNAL_TZ", "Asia/Kuala_Lumpur")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "env-service")
    sj = spanjournal.configure()
    assert isinstance(sj.journal, Journal)
    assert (sj.journal.path, sj.journal.durability) == (tmp_path / "env.jsonl", "none")
    assert (sj.session_id, sj.service_name, sj.exporters) == ("env-session", "env-service", [])
    with spanjournal.dispatch_span("c-1"):
        pass
    sj.shutdown()
    (line, _) = (tmp_path / "env.jsonl").read_text().splitlines()
    event = json.loads(line)
    assert event["session_id"] == "env-session" and event["service_name"] == "env-service"
    assert event["ts"].endswith("+08:00")


def test_explicit_settings_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPANJOURNAL_PATH", str(tmp_path / "env.jsonl"))
    monkeypatch.setenv("SPANJOURNAL_SESSION_ID", "env-session")
    monkeypatch.setenv("SPANJOURNAL_TZ", "Asia/Kuala_Lumpur")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "env-service")
    sj = spanjournal.configure(
        journal=tmp_path / "arg.jsonl", session_id="arg-session", service_name="arg-service", tz="UTC"
    )
    assert (sj.session_id, sj.service_name) == ("arg-session", "arg-service")
    with spanjournal.dispatch_span("c-1"):
        pass
    sj.shutdown()
    assert not (tmp_path / "env.jsonl").exists()
    event = json.loads((tmp_path / "arg.jsonl").read_text().splitlines()[0])
    assert event["ts"].endswith("+00:00") and event["session_id"] == "arg-session"


def test_defaults_and_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="SPANJOURNAL_PATH"):
        spanjournal.configure()
    with pytest.raises(ValueError, match="durability"):
        spanjournal.configure(journal=tmp_path / "j.jsonl", durability="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown time zone"):
        spanjournal.configure(journal=tmp_path / "j.jsonl", tz="Nowhere/Land")
    (tmp_path / "file").touch()
    with pytest.raises(JournalWriteError):
        spanjournal.configure(journal=tmp_path / "file" / "j.jsonl")
    sj = spanjournal.configure(journal=tmp_path / "j.jsonl")
    assert len(sj.session_id) == 36 and isinstance(sj.journal, Journal) and sj.journal.durability == "fsync"
    assert sj.service_name is not None and sj.service_name.startswith("unknown_service")


def test_plan_makes_undispatched_chunks_never_dispatched(tmp_path: Path) -> None:
    sj = spanjournal.configure(journal=tmp_path / "run.jsonl")
    sj.plan(f"case-{n}" for n in range(4))

    @spanjournal.dispatch(chunk_id=lambda n: f"case-{n}")
    def agent(n: int) -> None:
        pass

    agent(0)
    agent(2)
    sj.shutdown()
    ledger = read_ledger(tmp_path / "run.jsonl")
    assert ledger.state("case-1") is ChunkState.NEVER_DISPATCHED
    assert ledger.pending() == ["case-1", "case-3"]
    with pytest.raises(JournalWriteError):
        sj.plan(["late"])


def test_configure_again_shuts_the_previous_one_down(tmp_path: Path) -> None:
    first = spanjournal.configure(journal=tmp_path / "a.jsonl")
    second = spanjournal.configure(journal=tmp_path / "b.jsonl")
    assert first.is_shutdown and not second.is_shutdown and config.current() is second
    assert isinstance(first.journal, Journal) and first.journal.closed
    with spanjournal.dispatch_span("c-1"):
        pass
    second.shutdown()
    assert config.current() is None
    assert (tmp_path / "a.jsonl").read_bytes() == b""
    assert (tmp_path / "b.jsonl").read_bytes().count(b"\n") == 2


def test_after_shutdown_strict_dispatches_refuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from spanjournal import instrument

    monkeypatch.setattr(instrument, "latest_processor", lambda: None)
    sj = spanjournal.configure(journal=tmp_path / "j.jsonl")
    sj.shutdown()
    sj.shutdown()
    ran = []
    with pytest.raises(JournalWriteError), spanjournal.dispatch_span("c-1"):
        ran.append(1)
    assert ran == []


def test_a_users_provider_keeps_its_own_resource_and_is_not_shut_down(tmp_path: Path) -> None:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "theirs"}), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sj = spanjournal.configure(journal=MemoryJournal(), tracer_provider=provider, service_name="ignored")
    assert sj.service_name == "theirs" and sj.tracer_provider is provider
    with spanjournal.dispatch_span("c-1"):
        pass
    sj.shutdown()
    with provider.get_tracer("t").start_as_current_span("still works"):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["invoke_agent", "still works"]
    assert isinstance(sj.journal, MemoryJournal) and len(sj.journal.lines) == 2
    provider.shutdown()


def test_agent_spans_option_journals_agent_units(tmp_path: Path) -> None:
    off = spanjournal.configure(journal=MemoryJournal(), exporter="none", set_global=False)
    with off.tracer.start_as_current_span("invoke_agent x"):
        pass
    assert isinstance(off.journal, MemoryJournal) and off.journal.lines == []
    sj = spanjournal.configure(
        journal=MemoryJournal(), agent_spans=spanjournal.AgentSpans(), exporter="none", set_global=False
    )
    with sj.tracer.start_as_current_span("invoke_agent x"):
        pass
    assert isinstance(sj.journal, MemoryJournal)
    events = [(e.chunk_id, type(e).__name__) for e in sj.journal.events()]
    assert events == [("x#1", "Dispatched"), ("x#1", "Completed")]
    with pytest.raises(TypeError, match="AgentSpans"):
        spanjournal.configure(journal=MemoryJournal(), agent_spans=True, set_global=False)  # type: ignore[arg-type]


def test_context_manager_and_repr(tmp_path: Path) -> None:
    with spanjournal.configure(journal=tmp_path / "j.jsonl", exporter="none") as sj:
        assert "no exporter" in repr(sj)
    assert sj.is_shutdown


# -- at exit, in a real interpreter ----------------------------------------------------------

CHILD = """
import os, sys, time
import spanjournal
sj = spanjournal.configure(journal=sys.argv[1], durability="none", service_name="exit-test", **KWARGS)

@spanjournal.dispatch(chunk_id=lambda n: f"c-{n}")
def agent(n):
    return n

for n in range(3):
    agent(n)
print("global", __import__("opentelemetry").trace.get_tracer_provider() is sj.tracer_provider)
# no shutdown: the exit handler flushes the journal and stops the exporters
"""


def run_child(tmp_path: Path, kwargs: str = "{}", env: dict[str, str] | None = None) -> tuple[float, str, str]:
    code = CHILD.replace("**KWARGS", f"**{kwargs}")
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SPANJOURNAL_"))}
    child_env.update(env or {})
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "exit.jsonl")],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env,
    )
    assert done.returncode == 0, done.stderr
    return time.monotonic() - started, done.stdout, done.stderr


@pytest.mark.integration
def test_at_exit_the_journal_is_flushed_and_nothing_hangs_or_logs(tmp_path: Path) -> None:
    seconds, out, err = run_child(tmp_path)
    assert err == ""
    assert "global True" in out
    ledger = read_ledger(tmp_path / "exit.jsonl")
    assert ledger.counts()[ChunkState.DONE] == 3
    assert seconds < 15


@pytest.mark.integration
def test_at_exit_with_exporter_none_and_console(tmp_path: Path) -> None:
    _, out, err = run_child(tmp_path, env={"OTEL_TRACES_EXPORTER": "none"})
    assert err == ""
    _, out, err = run_child(tmp_path, env={"OTEL_TRACES_EXPORTER": "console"})
    assert err == ""
    assert out.count('"spanjournal.chunk_id"') == 3, "the console exporter printed every span at exit"


@pytest.mark.integration
def test_an_unreachable_collector_delays_exit_only_as_long_as_the_shutdown_timeout(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    seconds, _, _ = run_child(
        tmp_path,
        kwargs=f"dict(exporter='otlp', endpoint='http://127.0.0.1:{port}', shutdown_timeout=1.0)",
        env={"OTEL_EXPORTER_OTLP_TIMEOUT": "30"},
    )
    assert seconds < 12, f"exit took {seconds:.1f}s"
    assert read_ledger(tmp_path / "exit.jsonl").counts()[ChunkState.DONE] == 3


def test_child_code_is_valid_python() -> None:
    compile(textwrap.dedent(CHILD.replace("**KWARGS", "**{}")), "<child>", "exec")
