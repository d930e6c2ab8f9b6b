"""A real Jaeger v2 for tests: built from source once, run on free loopback ports.

The binary comes from ``collector-config/jaeger.sh build`` (the same script
``make jaeger`` uses), which builds Jaeger with Go into a cache outside the
repository the first time and only prints its path afterwards. Each
:class:`JaegerServer` runs ``collector-config/jaeger.yaml``, the config users
run, with its ports set through the environment, and is stopped by its pid.

Queries go to Jaeger's own HTTP query API (the one its UI uses):
``/api/traces?service=...&tags=...`` and ``/api/traces/<trace id>``. A span
there looks like::

    {"traceID": "...", "spanID": "...", "operationName": "invoke_agent simulated",
     "references": [{"refType": "CHILD_OF", "traceID": "...", "spanID": "<parent>"}],
     "startTime": <µs>, "duration": <µs>,
     "tags": [{"key": "gen_ai.agent.name", "type": "string", "value": "simulated"},
              {"key": "otel.status_code", "type": "string", "value": "ERROR"}, ...],
     "processID": "p1"}
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
JAEGER_SCRIPT = REPO / "collector-config" / "jaeger.sh"
JAEGER_CONFIG = REPO / "collector-config" / "jaeger.yaml"
#: The trace page jaeger.sh serves as Jaeger's UI (a source build has none of its own).
JAEGER_UI_ASSETS = REPO / "collector-config" / "jaeger-ui"
#: Exit status of ``jaeger.sh build`` when there is no Go toolchain.
NO_GO_TOOLCHAIN = 3
#: A cold build on a 2-core machine takes several minutes.
BUILD_TIMEOUT = 1800.0
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
PORT_VARIABLES = ("JAEGER_OTLP_GRPC_PORT", "JAEGER_OTLP_HTTP_PORT", "JAEGER_UI_PORT", "JAEGER_QUERY_GRPC_PORT")

_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class JaegerError(RuntimeError):
    """Jaeger could not be built, started or queried."""


@dataclass(frozen=True)
class Build:
    """The outcome of ``jaeger.sh build``: the binary, or why there is none."""

    binary: Path | None
    reason: str


@functools.cache
def build_jaeger() -> Build:
    """Build Jaeger once per test session (cached on disk across sessions).

    No Go toolchain gives a ``Build`` without a binary and the reason (tests
    skip on it); any other build failure raises :class:`JaegerError`.
    """
    try:
        done = subprocess.run(
            ["bash", str(JAEGER_SCRIPT), "build"],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise JaegerError(f"building Jaeger took more than {BUILD_TIMEOUT:.0f}s") from exc
    if done.returncode == NO_GO_TOOLCHAIN:
        return Build(None, done.stderr.strip())
    if done.returncode != 0:
        raise JaegerError(f"jaeger.sh build failed ({done.returncode}):\n{done.stderr[-3000:]}")
    binary = Path(done.stdout.strip().splitlines()[-1])
    if not os.access(binary, os.X_OK):
        raise JaegerError(f"jaeger.sh build printed {binary}, which is not an executable")
    return Build(binary, "")


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def tag(span: Mapping[str, Any], key: str) -> Any:
    """The value of one tag of a Jaeger API span, or None."""
    for item in span.get("tags") or []:
        if item["key"] == key:
            return item["value"]
    return None


def parent_span_id(span: Mapping[str, Any]) -> str:
    """The span id of a Jaeger API span's CHILD_OF reference, or ``""``."""
    for ref in span.get("references") or []:
        if ref.get("refType") == "CHILD_OF":
            return str(ref["spanID"])
    return ""


class JaegerServer:
    """A private Jaeger on free loopback ports, started from ``collector-config/jaeger.yaml``.

    ::

        with JaegerServer(binary) as jaeger:
            ...  # send OTLP to jaeger.grpc_endpoint
            spans = jaeger.wait_for_spans("my-service", 3)
    """

    def __init__(self, binary: Path, *, config: Path = JAEGER_CONFIG, env: Mapping[str, str] | None = None) -> None:
        self.binary = binary
        self.config = config
        self.extra_env = dict(env or {})
        self.ports: dict[str, int] = {}
        self.workdir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['JAEGER_OTLP_GRPC_PORT']}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['JAEGER_OTLP_HTTP_PORT']}"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['JAEGER_UI_PORT']}"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def __enter__(self) -> JaegerServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_text(self) -> str:
        if self.workdir is None:
            return ""
        try:
            return (self.workdir / "jaeger.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, attempts: int = 3) -> None:
        """Start Jaeger and wait until its OTLP ports and query API answer (fresh ports on a clash)."""
        self.workdir = Path(tempfile.mkdtemp(prefix="jaeger-server-"))
        atexit.register(self._kill_at_exit)
        failure = ""
        for _ in range(attempts):
            self.ports = dict(zip(PORT_VARIABLES, _free_ports(len(PORT_VARIABLES)), strict=True))
            env = {**os.environ, "JAEGER_UI_ASSETS": str(JAEGER_UI_ASSETS), **self.extra_env}
            env.update({k: str(v) for k, v in self.ports.items()})
            with open(self.workdir / "jaeger.log", "wb") as log:
                self._process = subprocess.Popen(
                    [str(self.binary), "--config", str(self.config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=self.workdir,
                )
            outcome = self._await_ready()
            if outcome == "ready":
                return
            failure = f"Jaeger {outcome} (ports {self.ports}); log:\n{self.log_text()[-3000:]}"
            self._terminate()
        self.stop()
        raise JaegerError(failure)

    def _await_ready(self) -> str:
        assert self._process is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return f"exited during start-up with status {self._process.returncode}"
            if _accepts(self.ports["JAEGER_OTLP_GRPC_PORT"]) and _accepts(self.ports["JAEGER_OTLP_HTTP_PORT"]):
                try:
                    self.get_json("/api/services")
                except (OSError, JaegerError):
                    pass
                else:
                    return "ready"
            time.sleep(0.05)
        return f"did not answer within {STARTUP_TIMEOUT:.0f}s"

    def _terminate(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        """Stop Jaeger by its pid (SIGTERM, bounded wait, SIGKILL); safe to call twice."""
        self._terminate()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        atexit.unregister(self._kill_at_exit)

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _kill_at_exit(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()

    # ----------------------------------------------------------------------
    # The query API
    # ----------------------------------------------------------------------

    def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        url = self.ui_url + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with _no_proxy.open(url, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise JaegerError(f"GET {url}: HTTP {exc.code} {exc.read()[:500]!r}") from exc

    def search(self, service: str, tags: Mapping[str, str] | None = None) -> list[list[dict[str, Any]]]:
        """The traces Jaeger's trace search returns for ``service`` (and ``tags``), each as its spans.

        A search returns whole traces: every trace holding a span that matches.
        """
        params = {"service": service, "limit": "1000", "lookback": "2d"}
        if tags:
            params["tags"] = json.dumps(dict(tags))
        answer = self.get_json("/api/traces", params) or {"data": []}
        return [list(trace["spans"]) for trace in answer["data"] or []]

    def spans(self, service: str) -> list[dict[str, Any]]:
        """Every span of every trace of ``service``."""
        return [span for trace in self.search(service) for span in trace]

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        """Every span of one trace, from ``/api/traces/<trace id>`` (empty if unknown)."""
        answer = self.get_json(f"/api/traces/{trace_id}")
        if not answer or not answer.get("data"):
            return []
        return list(answer["data"][0]["spans"])

    def wait_for(
        self, fetch: Callable[[], list[dict[str, Any]]], count: int, timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """Poll ``fetch`` until it returns at least ``count`` spans (raise on timeout)."""
        deadline = time.monotonic() + timeout
        spans = fetch()
        while len(spans) < count:
            if time.monotonic() > deadline:
                raise JaegerError(f"expected {count} spans, Jaeger has {len(spans)} after {timeout:.0f}s")
            time.sleep(0.1)
            spans = fetch()
        return spans
