"""Checks of collector-config/. Static (Docker cannot run here): every YAML parses,
the collector's pipelines only use components it defines, the compose file
publishes what the collector listens on and points it at a service that
listens where the exporter sends, and runs the Jaeger release the no-Docker
path builds. Real: the no-Docker Jaeger config is accepted by the Jaeger binary
built from source, and the README's commands exist and do what it says (its
rotel commands are run)."""

from __future__ import annotations

import copy
import os
import re
import shlex
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from jaeger_server import JAEGER_CONFIG, JAEGER_SCRIPT, build_jaeger
from otlp_collector import RotelCollector, pid_alive, rotel_available

CONFIG_DIR = Path(__file__).resolve().parent.parent / "collector-config"
COMPOSE_FILE = CONFIG_DIR / "docker-compose.yaml"
COLLECTOR_FILE = CONFIG_DIR / "otel-collector.yaml"
README = CONFIG_DIR / "README.md"

COMPONENT_KINDS = ("receivers", "processors", "exporters")
OTLP_GRPC_EXPORTERS = {"otlp", "otlp_grpc"}
OTLP_HTTP_EXPORTERS = {"otlphttp", "otlp_http"}
DEFAULT_COLLECTOR_CONFIG = "/etc/otelcol-contrib/config.yaml"
JAEGER_OTLP_PORTS = {"grpc": 4317, "http": 4318}
JAEGER_UI_PORT = 16686
HOST_RECEIVER_PORTS = {"grpc": 4317, "http": 4318}

Config = dict[str, Any]


# --------------------------------------------------------------------------
# Checkers: each returns a list of human-readable problems, empty when fine.
# --------------------------------------------------------------------------


def component_type(component_id: str) -> str:
    """``otlp_grpc/jaeger`` -> ``otlp_grpc``."""
    return component_id.split("/", 1)[0]


def pipeline_problems(config: Config) -> list[str]:
    """Pipelines reference only defined components, and every defined component is used."""
    problems: list[str] = []
    pipelines = (config.get("service") or {}).get("pipelines") or {}
    if not pipelines:
        problems.append("service.pipelines is empty")
    connectors = set(config.get("connectors") or {})
    defined = {kind: set(config.get(kind) or {}) for kind in COMPONENT_KINDS}
    used: dict[str, set[str]] = {kind: set() for kind in COMPONENT_KINDS}
    used_connectors: set[str] = set()
    for name, pipeline in pipelines.items():
        pipeline = pipeline or {}
        for kind in ("receivers", "exporters"):
            if not pipeline.get(kind):
                problems.append(f"pipeline {name}: has no {kind}")
        for kind in COMPONENT_KINDS:
            for component in pipeline.get(kind) or []:
                if kind != "processors" and component in connectors:
                    used_connectors.add(component)
                elif component in defined[kind]:
                    used[kind].add(component)
                else:
                    problems.append(f"pipeline {name}: {kind[:-1]} {component!r} is not defined")
    for kind in COMPONENT_KINDS:
        for component in sorted(defined[kind] - used[kind]):
            problems.append(f"{kind[:-1]} {component!r} is defined but not used in any pipeline")
    for component in sorted(connectors - used_connectors):
        problems.append(f"connector {component!r} is defined but not used in any pipeline")
    extensions = set(config.get("extensions") or {})
    listed = set((config.get("service") or {}).get("extensions") or [])
    for component in sorted(listed - extensions):
        problems.append(f"extension {component!r} is not defined")
    for component in sorted(extensions - listed):
        problems.append(f"extension {component!r} is defined but not enabled")
    return problems


def memory_limiter_problems(config: Config) -> list[str]:
    """Every pipeline starts with a memory_limiter processor (and has it only there)."""
    problems: list[str] = []
    for name, pipeline in ((config.get("service") or {}).get("pipelines") or {}).items():
        processors = [component_type(p) for p in (pipeline or {}).get("processors") or []]
        if not processors or processors[0] != "memory_limiter":
            problems.append(f"pipeline {name}: first processor is not memory_limiter ({processors})")
        elif "memory_limiter" in processors[1:]:
            problems.append(f"pipeline {name}: memory_limiter appears more than once")
    return problems


def split_host_port(endpoint: str) -> tuple[str, int | None]:
    """``0.0.0.0:4317`` or ``http://jaeger:4317`` -> (host, port)."""
    parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
    return parts.hostname or "", parts.port


def otlp_receiver_endpoints(config: Config) -> dict[str, tuple[str, int | None]]:
    """Protocol ("grpc"/"http") -> (host, port) of the OTLP receiver's endpoints."""
    endpoints: dict[str, tuple[str, int | None]] = {}
    for rid, receiver in (config.get("receivers") or {}).items():
        if component_type(rid) != "otlp":
            continue
        for protocol, settings in ((receiver or {}).get("protocols") or {}).items():
            endpoint = (settings or {}).get("endpoint")
            endpoints[protocol] = split_host_port(endpoint) if endpoint else ("", None)
    return endpoints


def otlp_exporter_targets(config: Config) -> dict[str, tuple[str, str, int | None]]:
    """Exporter id -> (protocol, host, port) for every OTLP exporter."""
    targets: dict[str, tuple[str, str, int | None]] = {}
    for eid, exporter in (config.get("exporters") or {}).items():
        kind = component_type(eid)
        if kind in OTLP_GRPC_EXPORTERS | OTLP_HTTP_EXPORTERS:
            protocol = "grpc" if kind in OTLP_GRPC_EXPORTERS else "http"
            targets[eid] = (protocol, *split_host_port(str((exporter or {}).get("endpoint", ""))))
    return targets


def published_ports(service: Mapping[str, Any]) -> set[tuple[int, int]]:
    """(host port, container port) pairs of a compose service's ``ports``."""
    pairs: set[tuple[int, int]] = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, Mapping):
            if entry.get("published") is not None:
                pairs.add((int(entry["published"]), int(entry["target"])))
            continue
        spec = str(entry).split("/", 1)[0]
        parts = spec.rsplit(":", 2)
        if len(parts) >= 2 and parts[-2]:
            pairs.add((int(parts[-2]), int(parts[-1])))
    return pairs


def container_ports(service: Mapping[str, Any]) -> set[int]:
    """Container ports a compose service declares (``expose`` and the container side of ``ports``)."""
    ports = {int(str(p).split("/", 1)[0]) for p in service.get("expose") or []}
    for entry in service.get("ports") or []:
        if isinstance(entry, Mapping):
            ports.add(int(entry["target"]))
        else:
            ports.add(int(str(entry).split("/", 1)[0].rsplit(":", 1)[-1]))
    return ports


def collector_service(compose: Config) -> tuple[str, Mapping[str, Any]]:
    """The one compose service running an OpenTelemetry Collector image."""
    found = [
        (name, svc)
        for name, svc in (compose.get("services") or {}).items()
        if str((svc or {}).get("image", "")).startswith("otel/opentelemetry-collector")
    ]
    if len(found) != 1:
        raise AssertionError(f"expected one collector service, found {[n for n, _ in found]}")
    return found[0]


def config_path_in_container(service: Mapping[str, Any]) -> str:
    """The ``--config`` the collector is started with (the image default if none)."""
    command = service.get("command") or []
    args = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    for i, arg in enumerate(args):
        if arg.startswith("--config="):
            return str(arg.split("=", 1)[1])
        if arg == "--config" and i + 1 < len(args):
            return str(args[i + 1])
    return DEFAULT_COLLECTOR_CONFIG


def bind_mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """Container path -> host path of a compose service's bind mounts."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, Mapping):
            if volume.get("type", "bind") == "bind":
                mounts[str(volume["target"])] = str(volume["source"])
            continue
        parts = str(volume).split(":")
        if len(parts) >= 2:
            mounts[parts[1]] = parts[0]
    return mounts


def mounted_config_problems(compose: Config, compose_dir: Path) -> tuple[Path | None, list[str]]:
    """The host file mounted as the collector's config, and problems finding it."""
    _, service = collector_service(compose)
    target = config_path_in_container(service)
    source = bind_mounts(service).get(target)
    if source is None:
        return None, [f"nothing is mounted at the collector's --config {target}"]
    path = (compose_dir / source).resolve()
    if not path.is_file():
        return path, [f"the mounted collector config {source} does not exist ({path})"]
    return path, []


def wiring_problems(compose: Config, collector: Config) -> list[str]:
    """The compose file and the collector config agree on ports and hosts."""
    problems: list[str] = []
    services: dict[str, Any] = compose.get("services") or {}
    collector_name, collector_svc = collector_service(compose)
    published = published_ports(collector_svc)

    receivers = otlp_receiver_endpoints(collector)
    for protocol, host_port in HOST_RECEIVER_PORTS.items():
        if protocol not in receivers:
            problems.append(f"the collector has no OTLP {protocol} receiver")
            continue
        host, port = receivers[protocol]
        if host not in ("0.0.0.0", "::", ""):
            problems.append(f"OTLP {protocol} receiver listens on {host!r}, unreachable from outside its container")
        if port is None:
            problems.append(f"OTLP {protocol} receiver has no explicit port")
        elif (host_port, port) not in published:
            problems.append(
                f"OTLP {protocol} receiver port {port} is not published as {host_port}:{port} "
                f"by {collector_name} (published: {sorted(published)})"
            )

    targets = otlp_exporter_targets(collector)
    if not targets:
        problems.append("the collector has no OTLP exporter")
    for eid, (protocol, host, port) in targets.items():
        target_svc = services.get(host)
        if target_svc is None or host == collector_name:
            problems.append(f"exporter {eid}: host {host!r} is not another compose service ({sorted(services)})")
            continue
        if port is None or port not in container_ports(target_svc):
            problems.append(f"exporter {eid}: service {host} does not declare container port {port}")
        image = str(target_svc.get("image", ""))
        if image.startswith("jaegertracing/jaeger:") and port != JAEGER_OTLP_PORTS[protocol]:
            problems.append(
                f"exporter {eid}: Jaeger takes OTLP/{protocol} on {JAEGER_OTLP_PORTS[protocol]}, not {port}"
            )
        if host not in (collector_svc.get("depends_on") or []):
            problems.append(f"{collector_name} does not depend_on {host}")

    jaeger = [n for n, s in services.items() if str((s or {}).get("image", "")).startswith("jaegertracing/jaeger:")]
    if len(jaeger) != 1:
        problems.append(f"expected one jaegertracing/jaeger service, found {jaeger}")
    else:
        image = services[jaeger[0]]["image"]
        if not re.fullmatch(r"jaegertracing/jaeger:2\.\d+\.\d+", image):
            problems.append(f"Jaeger image {image} is not a pinned 2.x release")
        if (JAEGER_UI_PORT, JAEGER_UI_PORT) not in published_ports(services[jaeger[0]]):
            problems.append(f"Jaeger UI {JAEGER_UI_PORT} is not published by {jaeger[0]}")

    seen: dict[int, str] = {}
    for name, svc in services.items():
        for host_port, _ in published_ports(svc or {}):
            if host_port in seen:
                problems.append(f"host port {host_port} is published by both {seen[host_port]} and {name}")
            seen[host_port] = name
    return problems


# --------------------------------------------------------------------------
# The real files
# --------------------------------------------------------------------------


def load_yaml(path: Path) -> Config:
    """Parse one YAML file, which must hold a mapping."""
    with path.open(encoding="utf-8") as f:
        data = yaml.safe_load(f)
    assert isinstance(data, dict), f"{path} does not hold a mapping"
    return data


@pytest.fixture(scope="module")
def compose() -> Config:
    """collector-config/docker-compose.yaml."""
    return load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def collector() -> Config:
    """collector-config/otel-collector.yaml."""
    return load_yaml(COLLECTOR_FILE)


def test_every_yaml_file_parses() -> None:
    files = sorted([*CONFIG_DIR.glob("*.yaml"), *CONFIG_DIR.glob("*.yml")])
    assert {f.name for f in files} >= {"docker-compose.yaml", "otel-collector.yaml"}
    for path in files:
        load_yaml(path)


def test_collector_pipelines_are_complete(collector: Config) -> None:
    assert pipeline_problems(collector) == []
    assert memory_limiter_problems(collector) == []
    traces = collector["service"]["pipelines"]["traces"]
    assert traces["receivers"] == ["otlp"]
    assert [component_type(p) for p in traces["processors"]] == ["memory_limiter", "batch"]
    assert {component_type(e) for e in traces["exporters"]} in (
        {"otlp_grpc", "debug"},
        {"otlp", "debug"},
    )
    assert otlp_receiver_endpoints(collector) == {"grpc": ("0.0.0.0", 4317), "http": ("0.0.0.0", 4318)}
    targets = otlp_exporter_targets(collector)
    assert list(targets.values()) == [("grpc", "jaeger", 4317)]
    (exporter_id,) = targets
    assert collector["exporters"][exporter_id]["tls"]["insecure"] is True
    limiter = collector["processors"]["memory_limiter"]
    assert limiter["check_interval"]
    assert limiter.get("limit_mib") or limiter.get("limit_percentage")


def test_compose_runs_jaeger_behind_the_collector(compose: Config, collector: Config) -> None:
    path, problems = mounted_config_problems(compose, CONFIG_DIR)
    assert problems == []
    assert path == COLLECTOR_FILE.resolve()
    assert load_yaml(path) == collector
    assert wiring_problems(compose, collector) == []


def test_readme_matches_the_compose_file(compose: Config) -> None:
    text = README.read_text(encoding="utf-8")
    _, collector_svc = collector_service(compose)
    assert (4317, 4317) in published_ports(collector_svc)
    assert "docker compose up -d" in text
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317" in text
    assert f"http://localhost:{JAEGER_UI_PORT}" in text
    assert "router-bench" in text


# --------------------------------------------------------------------------
# The checkers must catch broken configs
# --------------------------------------------------------------------------


def _exporter_id(cfg: Config) -> str:
    return next(str(e) for e in cfg["exporters"] if component_type(e) in OTLP_GRPC_EXPORTERS)


def _break_collector(mutate: Callable[[Config], None]) -> Config:
    cfg = load_yaml(COLLECTOR_FILE)
    mutate(cfg)
    return cfg


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        (
            lambda c: c["service"]["pipelines"]["traces"]["exporters"].append("zipkin"),
            "exporter 'zipkin' is not defined",
        ),
        (
            lambda c: c["service"]["pipelines"]["traces"]["processors"].remove("batch"),
            "processor 'batch' is defined but not used",
        ),
        (lambda c: c["receivers"].update({"otlp/extra": {}}), "receiver 'otlp/extra' is defined but not used"),
        (lambda c: c["service"]["pipelines"]["traces"].update(receivers=[]), "pipeline traces: has no receivers"),
        (lambda c: c["service"]["pipelines"].clear(), "service.pipelines is empty"),
        (lambda c: c.update(extensions={"health_check": {}}), "extension 'health_check' is defined but not enabled"),
        (lambda c: c["service"].update(extensions=["pprof"]), "extension 'pprof' is not defined"),
    ],
)
def test_pipeline_checker_catches(mutate: Callable[[Config], None], complaint: str) -> None:
    problems = pipeline_problems(_break_collector(mutate))
    assert any(complaint in p for p in problems), problems


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        (
            lambda c: c["service"]["pipelines"]["traces"].update(processors=["batch", "memory_limiter"]),
            "first processor is not memory_limiter",
        ),
        (lambda c: c["service"]["pipelines"]["traces"].update(processors=[]), "first processor is not memory_limiter"),
        (lambda c: c["service"]["pipelines"]["traces"]["processors"].append("memory_limiter"), "more than once"),
    ],
)
def test_memory_limiter_checker_catches(mutate: Callable[[Config], None], complaint: str) -> None:
    problems = memory_limiter_problems(_break_collector(mutate))
    assert any(complaint in p for p in problems), problems


def _set_compose(path: str, value: Any) -> Callable[[Config, Config], None]:
    def mutate(compose: Config, _collector: Config) -> None:
        *parents, last = path.split(".")
        node = compose
        for key in parents:
            node = node[key]
        node[last] = value

    return mutate


def _set_collector(mutate: Callable[[Config], None]) -> Callable[[Config, Config], None]:
    return lambda _compose, collector: mutate(collector)


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        (_set_compose("services.otel-collector.ports", ["4317:4317"]), "OTLP http receiver port 4318 is not published"),
        (
            _set_compose("services.otel-collector.ports", ["14317:4317", "4318:4318"]),
            "OTLP grpc receiver port 4317 is not published as 4317:4317",
        ),
        (
            _set_collector(lambda c: c["receivers"]["otlp"]["protocols"]["grpc"].update(endpoint="localhost:4317")),
            "unreachable from outside",
        ),
        (
            _set_collector(lambda c: c["receivers"]["otlp"]["protocols"]["http"].update(endpoint="0.0.0.0:5318")),
            "OTLP http receiver port 5318 is not published",
        ),
        (_set_collector(lambda c: c["receivers"]["otlp"]["protocols"].pop("http")), "no OTLP http receiver"),
        (
            _set_collector(lambda c: c["exporters"][_exporter_id(c)].update(endpoint="tempo:4317")),
            "host 'tempo' is not another compose service",
        ),
        (
            _set_collector(lambda c: c["exporters"][_exporter_id(c)].update(endpoint="otel-collector:4317")),
            "not another compose service",
        ),
        (
            _set_collector(lambda c: c["exporters"][_exporter_id(c)].update(endpoint="jaeger:14250")),
            "does not declare container port 14250",
        ),
        (_set_compose("services.jaeger.expose", ["4318"]), "does not declare container port 4317"),
        (_set_compose("services.jaeger.ports", ["4317:4317", "16686:16686"]), "host port 4317 is published by both"),
        (_set_compose("services.jaeger.ports", []), "Jaeger UI 16686 is not published"),
        (_set_compose("services.jaeger.image", "jaegertracing/jaeger:latest"), "not a pinned 2.x release"),
        (
            _set_compose("services.jaeger.image", "jaegertracing/all-in-one:1.60"),
            "expected one jaegertracing/jaeger service",
        ),
        (_set_compose("services.otel-collector.depends_on", []), "does not depend_on jaeger"),
    ],
)
def test_wiring_checker_catches(mutate: Callable[[Config, Config], None], complaint: str) -> None:
    compose, collector = load_yaml(COMPOSE_FILE), load_yaml(COLLECTOR_FILE)
    mutate(compose, collector)
    problems = wiring_problems(compose, collector)
    assert any(complaint in p for p in problems), problems


@pytest.mark.parametrize(
    ("volumes", "command", "complaint"),
    [
        (["./missing-collector.yaml:/etc/otelcol-contrib/config.yaml:ro"], None, "does not exist"),
        (
            ["./otel-collector.yaml:/etc/otelcol/config.yaml:ro"],
            None,
            "nothing is mounted at the collector's --config /etc/otelcol-contrib/config.yaml",
        ),
        (
            ["./otel-collector.yaml:/etc/otelcol-contrib/config.yaml:ro"],
            ["--config", "/conf/c.yaml"],
            "nothing is mounted at the collector's --config /conf/c.yaml",
        ),
    ],
)
def test_mount_checker_catches(volumes: list[str], command: list[str] | None, complaint: str) -> None:
    compose = copy.deepcopy(load_yaml(COMPOSE_FILE))
    service = compose["services"]["otel-collector"]
    service["volumes"] = volumes
    if command is None:
        service.pop("command", None)
    else:
        service["command"] = command
    _, problems = mounted_config_problems(compose, CONFIG_DIR)
    assert any(complaint in p for p in problems), problems


def test_port_parsing_understands_compose_syntaxes() -> None:
    service = {
        "ports": ["4317:4317", "127.0.0.1:4318:4318/tcp", 9000, {"target": 16686, "published": "16687"}],
        "expose": ["5000", 5001],
    }
    assert published_ports(service) == {(4317, 4317), (4318, 4318), (16687, 16686)}
    assert container_ports(service) == {4317, 4318, 9000, 16686, 5000, 5001}
    assert split_host_port("http://jaeger:4317") == ("jaeger", 4317)
    assert split_host_port("0.0.0.0:4318") == ("0.0.0.0", 4318)


# --------------------------------------------------------------------------
# The README's no-Docker command, run for real
# --------------------------------------------------------------------------


def documented_rotel_args() -> list[str]:
    """The flags after ``start`` of the rotel command the README documents."""
    lines = [
        line
        for line in README.read_text(encoding="utf-8").splitlines()
        if '"$ROTEL_AGENT" start --exporter otlp' in line
    ]
    assert len(lines) == 1, lines
    tokens = shlex.split(lines[0])
    return tokens[tokens.index("start") + 1 :]


def _with_endpoint(args: list[str], endpoint: str) -> list[str]:
    flag = args.index("--otlp-exporter-endpoint")
    return [*args[: flag + 1], endpoint, *args[flag + 2 :]]


def test_documented_rotel_command_is_an_otlp_forwarder() -> None:
    args = documented_rotel_args()
    assert args[:2] == ["--exporter", "otlp"]
    assert args[args.index("--otlp-exporter-protocol") + 1] == "grpc"
    assert urlsplit(args[args.index("--otlp-exporter-endpoint") + 1]).port == 4317
    assert not {"--otlp-grpc-endpoint", "--otlp-http-endpoint", "--daemon"} & set(args)


@pytest.mark.integration
@pytest.mark.skipif(not rotel_available(), reason="rotel-agent not installed (pip install rotel)")
def test_documented_rotel_command_forwards_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    for proxy in ("http_proxy", "https_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    args = documented_rotel_args()

    with RotelCollector() as closed:
        closed_endpoint = closed.grpc_endpoint
    with RotelCollector(exporter_args=_with_endpoint(args, closed_endpoint), stop_timeout=3) as lonely:
        assert lonely.is_running()
        lonely_pid = lonely.pid
    assert not pid_alive(lonely_pid)

    with RotelCollector() as backend:
        forwarding_args = _with_endpoint(args, backend.grpc_endpoint)
        with RotelCollector(exporter_args=forwarding_args) as forwarder:
            provider = TracerProvider(resource=Resource.create({"service.name": "router-bench"}))
            memory = InMemorySpanExporter()
            provider.add_span_processor(SimpleSpanProcessor(memory))
            provider.get_tracer("readme-check").start_span("forwarded").end()
            (span,) = memory.get_finished_spans()
            exporter = OTLPSpanExporter(endpoint=forwarder.grpc_endpoint, insecure=True, timeout=5)
            try:
                assert exporter.export([span]) == SpanExportResult.SUCCESS
            finally:
                exporter.shutdown()
                provider.shutdown()
            span_id = f"{span.context.span_id:016x}"
            (arrived,) = backend.wait_for_spans(1, timeout=10)
            assert forwarder.is_running()
            forwarder_pid = forwarder.pid
        assert not pid_alive(forwarder_pid)
    assert (arrived.span_id, arrived.trace_id) == (span_id, f"{span.context.trace_id:032x}")
    assert (arrived.name, arrived.service_name) == ("forwarded", "router-bench")
    assert arrived.start_time_unix_nano == span.start_time
    assert arrived.end_time_unix_nano == span.end_time


# --------------------------------------------------------------------------
# Every command the README runs exists
# --------------------------------------------------------------------------

REPO = CONFIG_DIR.parent


def makefile_targets(makefile: Path) -> set[str]:
    """The targets a Makefile defines (``name:`` at the start of a line)."""
    targets: set[str] = set()
    for line in makefile.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9_.$()/-][^:=\s]*(?:\s+[^:=\s]+)*)\s*:(?!=)", line)
        if match and not line.startswith("\t"):
            targets.update(match.group(1).split())
    return targets


def code_lines(text: str) -> list[str]:
    """The lines of the Markdown's fenced code blocks."""
    lines: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
        elif inside:
            lines.append(line.strip())
    return lines


def missing_commands(text: str, repo: Path = REPO) -> list[str]:
    """Commands in the Markdown's code blocks that name a script, make target or subcommand that is not there.

    Scripts run as ``python X.py`` are looked for in the repository root, where
    the README's commands run, and in collector-config/ (after ``cd
    collector-config``).
    """
    problems: list[str] = []
    targets = makefile_targets(repo / "Makefile")
    script_commands = set(re.findall(r"^\s{4}(\w+)\)", JAEGER_SCRIPT.read_text(encoding="utf-8"), re.M))
    for line in code_lines(text):
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
            words = words[1:]  # VAR=value prefixes
        if not words:
            continue
        if words[0] in ("python", "python3") and len(words) > 1 and words[1].endswith(".py"):
            if not any((base / words[1]).is_file() for base in (repo, repo / "collector-config")):
                problems.append(f"{line}: there is no {words[1]}")
        elif words[0] == "make":
            for target in words[1:]:
                if not target.startswith("-") and "=" not in target and target not in targets:
                    problems.append(f"{line}: the Makefile has no target {target!r}")
        elif words[0].endswith("jaeger.sh") and (len(words) < 2 or words[1] not in script_commands):
            problems.append(f"{line}: jaeger.sh has no command {words[1:2]} (it has {sorted(script_commands)})")
    return problems


def test_every_command_the_readme_runs_exists() -> None:
    assert missing_commands(README.read_text(encoding="utf-8")) == []


def test_the_command_checker_catches_what_is_not_there() -> None:
    text = "\n".join(
        [
            "```sh",
            "OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 python bench.py",
            "make demo jaeger-up",
            "collector-config/jaeger.sh launch",
            "python examples/demo.py",
            "make jaeger",
            "```",
            "python not-in-a-code-block.py",
        ]
    )
    assert missing_commands(text) == [
        "OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 python bench.py: there is no bench.py",
        "make demo jaeger-up: the Makefile has no target 'jaeger-up'",
        "collector-config/jaeger.sh launch: jaeger.sh has no command ['launch']"
        " (it has ['build', 'run', 'start', 'stop'])",
    ]


def documented_span_printing_args() -> list[str]:
    """The flags after ``start`` of the README's "print every span" rotel command."""
    lines = [line for line in code_lines(README.read_text(encoding="utf-8")) if "--debug-log traces" in line]
    assert len(lines) == 1, lines
    tokens = shlex.split(lines[0])
    return tokens[tokens.index("start") + 1 :]


@pytest.mark.integration
@pytest.mark.skipif(not rotel_available(), reason="rotel-agent not installed (pip install rotel)")
def test_documented_span_printing_command_prints_the_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import tempfile
    import time

    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from otlp_collector import _accepts, _free_port, rotel_agent_path

    for proxy in ("http_proxy", "https_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    args = documented_span_printing_args()
    assert "--otlp-exporter-endpoint" not in args, "the printing command needs no backend"
    grpc_port, http_port = _free_port(), _free_port()
    with tempfile.TemporaryDirectory(prefix="rotel-print-") as tmp:
        out_path = Path(tmp) / "out"
        with out_path.open("wb") as out:
            rotel = subprocess.Popen(
                [
                    str(rotel_agent_path()), "start", *args,
                    "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}", "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
                    "--pid-file", f"{tmp}/rotel.pid", "--log-file", f"{tmp}/rotel.log",
                ],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, "NO_COLOR": "1"},
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not _accepts(grpc_port):
                assert rotel.poll() is None and time.monotonic() < deadline, out_path.read_text()
                time.sleep(0.05)
            provider = TracerProvider()
            exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{grpc_port}", insecure=True, timeout=5)
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            span = provider.get_tracer("readme-check").start_span("span-the-readme-promises")
            span.set_attribute("spanjournal.chunk_id", "case-007")
            span.end()
            provider.shutdown()
            trace_id = f"{span.get_span_context().trace_id:032x}"
            while trace_id not in out_path.read_text(errors="replace"):
                assert rotel.poll() is None, out_path.read_text()
                if time.monotonic() > deadline:
                    pytest.fail(f"rotel did not print the span:\n{out_path.read_text()[-2000:]}")
                time.sleep(0.05)
            printed = out_path.read_text(errors="replace")
        finally:
            os.kill(rotel.pid, signal.SIGTERM)
            rotel.wait(timeout=10)
    assert "span-the-readme-promises" in printed
    assert "spanjournal.chunk_id: Str(case-007)" in printed


# --------------------------------------------------------------------------
# Jaeger: one release for Docker and the no-Docker path
# --------------------------------------------------------------------------


def script_setting(name: str) -> str:
    """A ``NAME=value`` setting of collector-config/jaeger.sh."""
    match = re.search(rf"^{name}=(\S+)$", JAEGER_SCRIPT.read_text(encoding="utf-8"), re.M)
    assert match, f"jaeger.sh sets no {name}"
    return match.group(1)


def test_compose_runs_the_jaeger_release_the_no_docker_path_builds(compose: Config) -> None:
    release = script_setting("JAEGER_RELEASE")
    assert re.fullmatch(r"v2\.\d+\.\d+", release)
    assert script_setting("JAEGER_MODULE_VERSION") == "v1.75.0"
    (image,) = [svc["image"] for svc in compose["services"].values() if svc["image"].startswith("jaegertracing/")]
    assert image == f"jaegertracing/jaeger:{release.removeprefix('v')}"
    assert f"jaegertracing/jaeger:{release.removeprefix('v')}" in README.read_text(encoding="utf-8")


def test_the_no_docker_jaeger_config_listens_on_loopback_on_the_usual_ports() -> None:
    config = load_yaml(JAEGER_CONFIG)
    assert pipeline_problems(config) == []
    defaults = {"grpc": 4317, "http": 4318}
    for protocol, settings in config["receivers"]["otlp"]["protocols"].items():
        host, port_spec = settings["endpoint"].split(":", 1)
        assert host == "127.0.0.1"
        assert port_spec.endswith(f":-{defaults.pop(protocol)}}}"), port_spec
    assert defaults == {}
    query = config["extensions"]["jaeger_query"]
    assert query["http"]["endpoint"] == "127.0.0.1:${env:JAEGER_UI_PORT:-16686}"
    assert query["grpc"]["endpoint"].startswith("127.0.0.1:")
    # Jaeger's query service traces itself by default, to localhost:4317 whatever its own ports.
    assert query["enable_tracing"] is False
    assert config["service"]["telemetry"]["metrics"]["level"] == "none"  # no self-metrics port (8888)
    (storage,) = config["extensions"]["jaeger_storage"]["backends"]
    assert query["storage"]["traces"] == storage
    assert config["exporters"]["jaeger_storage_exporter"]["trace_storage"] == storage


@pytest.mark.integration
def test_the_real_jaeger_accepts_the_no_docker_config_and_rejects_a_broken_one(tmp_path: Path) -> None:
    import subprocess

    build = build_jaeger()
    if build.binary is None:
        pytest.skip(f"Jaeger cannot be built here: {build.reason}")
    checked = subprocess.run(
        [str(build.binary), "validate", "--config", str(JAEGER_CONFIG)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    broken = tmp_path / "jaeger.yaml"
    broken.write_text(JAEGER_CONFIG.read_text().replace("processors: [batch]", "processors: [batch, tail]"))
    rejected = subprocess.run(
        [str(build.binary), "validate", "--config", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert rejected.returncode != 0
    assert "tail" in rejected.stdout + rejected.stderr
    version = subprocess.run([str(build.binary), "version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0, version.stderr
    assert script_setting("JAEGER_RELEASE") in version.stdout + version.stderr
