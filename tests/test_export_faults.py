"""``spanjournal export`` on odd input and odd servers: one bad time, a trickling server, no endpoint, a
wrong protocol. Real servers on loopback: rotel-agent, and a socket server that answers one byte every 2 s."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_journals import BIN, completed, dispatched, write_journal

try:
    from otlp_collector import ReceivedSpan, RotelCollector, needs_rotel
except ModuleNotFoundError:  # tests/ imported as a package (importlib import mode)
    from tests.otlp_collector import ReceivedSpan, RotelCollector, needs_rotel

pytestmark = pytest.mark.integration


def no_otel_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(extra)
    return env


def export(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "spanjournal"), "export", *map(str, args)],
        capture_output=True,
        text=True,
        env=env if env is not None else no_otel_env(),
        timeout=60,
    )


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    return write_journal(tmp_path / "run.jsonl", [dispatched("ok"), completed("ok")])


@pytest.fixture(scope="module")
def collector() -> Iterator[RotelCollector]:
    # (every test that asks for it is marked needs_rotel)
    with RotelCollector() as c:
        yield c


# -- a time outside what OTLP carries ------------------------------------------------------------


@needs_rotel
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_time_outside_otlps_range_skips_that_span_with_a_warning(
    tmp_path: Path, collector: RotelCollector, protocol: str
) -> None:
    session = f"range-{protocol}"
    j = write_journal(
        tmp_path / "run.jsonl",
        [
            dispatched("before-1970", session=session, ts="1969-12-31T23:59:59.000000+00:00"),
            completed("before-1970", session=session, ts="1970-01-01T00:00:01.000000+00:00"),
            dispatched("year-9999", session=session, ts="9999-12-31T23:59:59.000000+00:00"),
            dispatched("fine", session=session),
            completed("fine", session=session),
        ],
    )
    endpoint = collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint
    result = export(j, "--endpoint", endpoint, "--protocol", protocol)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    warning = next(line for line in result.stderr.splitlines() if line.startswith("warning: 2 spans not sent"))
    assert "'before-1970' (ts 1969-12-31T23:59:59.000000+00:00)" in warning
    assert "'year-9999' (ts 9999-12-31T23:59:59.000000+00:00)" in warning
    assert "1970" in warning and "2554" in warning  # the range OTLP can carry
    assert f"sent 1 span (1 done) to {endpoint}" in result.stderr.splitlines()[-1]
    def mine(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
        return [s for s in spans if s.resource_attributes.get("spanjournal.session_id") == session]

    spans = collector.wait_for_spans(lambda spans: bool(mine(spans)))
    assert [s.attributes.get("spanjournal.chunk_id") for s in mine(spans)] == ["fine"]


# -- --timeout bounds a run against a trickling server --------------------------------------------


class TricklingServer:
    """Accepts connections, reads what comes, and answers one byte every 2 s, for ever (until stopped)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.5)
            with contextlib.suppress(TimeoutError):
                conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nX-Slow: " + b"y" * 10_000:
                if self.stop.wait(2.0):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_timeout_bounds_the_run_against_a_server_that_answers_one_byte_every_2s(journal: Path, protocol: str) -> None:
    server = TricklingServer()
    try:
        # Without a bound on the whole request this runs for as long as the server trickles (the
        # subprocess timeout, 60 s, then fails the test); with it, it ends after about 3 s.
        result = export(journal, "--endpoint", f"http://127.0.0.1:{server.port}", "--protocol", protocol,
                        "--timeout", "3")  # fmt: skip
    finally:
        server.close()
    assert server.connections >= 1
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"spanjournal export: error: cannot send spans to http://127.0.0.1:{server.port}")
    assert "(nothing sent)" in lines[0]
    if protocol == "http/protobuf":
        assert "no complete answer within 3s" in lines[0]


# -- no endpoint configured -----------------------------------------------------------------------


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_with_no_endpoint_configured_it_says_so_at_once(journal: Path) -> None:
    if _listening(4317):
        pytest.skip("something listens on localhost:4317 here")
    result = export(journal)
    assert result.returncode == 1
    assert result.stderr == (
        "spanjournal export: error: no OTLP endpoint configured (--endpoint, or OTEL_EXPORTER_OTLP_ENDPOINT)"
        " and nothing listens at the default http://localhost:4317 (grpc): connection refused (nothing sent)\n"
    )


# -- an OTLP/HTTP port that is not 4318 -------------------------------------------------------------


@needs_rotel
def test_an_http_port_sent_grpc_gets_a_hint_and_the_protocol_variable_decides(
    journal: Path, collector: RotelCollector
) -> None:
    result = export(journal, "--endpoint", collector.http_endpoint)
    assert result.returncode == 1
    assert result.stderr == (
        f"spanjournal export: error: cannot send spans to {collector.http_endpoint} (grpc): gRPC status"
        " UNIMPLEMENTED (nothing sent); if it is an OTLP/HTTP endpoint, use --protocol http/protobuf"
        " (or OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf)\n"
    )
    result = export(journal, "--endpoint", collector.http_endpoint,
                    env=no_otel_env(OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"sent 1 span (1 done) to {collector.http_endpoint}/v1/traces")
