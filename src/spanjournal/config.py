"""configure(): one call that sets up the journal, the tracer provider and the exporters.

>>> import spanjournal
>>> sj = spanjournal.configure(journal="runs/bench.jsonl", service_name="router-bench")  # doctest: +SKIP
>>> sj.plan(["case-001", "case-002"])        # doctest: +SKIP
>>> sj.shutdown()                            # doctest: +SKIP

Settings follow the OpenTelemetry environment conventions, and an explicit
argument always wins over the environment:

====================  ==========================================================
argument              environment (first set wins), default
====================  ==========================================================
``journal``           ``SPANJOURNAL_PATH``; required
``session_id``        ``SPANJOURNAL_SESSION_ID``; a new UUID
``durability``        ``SPANJOURNAL_DURABILITY``; ``"fsync"``
``tz``                ``SPANJOURNAL_TZ``; local time
``service_name``      ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``
``exporter``          ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``, ``none``,
                      or any installed exporter entry point); ``otlp``
``endpoint``          ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
                      ``OTEL_EXPORTER_OTLP_ENDPOINT``
``protocol``          ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``,
                      ``OTEL_EXPORTER_OTLP_PROTOCOL``; ``grpc``
                      (``http/protobuf`` when the endpoint's port is 4318)
``sampler``           ``OTEL_TRACES_SAMPLER``, ``OTEL_TRACES_SAMPLER_ARG``
====================  ==========================================================

With no exporter chosen and no endpoint configured anywhere, spans are not
exported (the journal is written all the same): a default set-up never waits
on, or logs about, a collector that is not there. Headers, timeouts,
compression and certificates come from the standard ``OTEL_EXPORTER_OTLP_*``
variables, read by the OpenTelemetry exporters themselves.

:meth:`Spanjournal.shutdown` runs at interpreter exit too; it closes the
journal first, then gives the exporters a bounded time.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlparse

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import Sampler

from spanjournal import instrument, semconv
from spanjournal._schema import RunPlanned, encode
from spanjournal.agent_spans import AgentSpans
from spanjournal.journal import DURABILITY_MODES, Durability, Journal
from spanjournal.processor import JournalLike, JournalSpanProcessor, resolve_tz
from spanjournal.sampling import JournalSampler

__all__ = [
    "DEFAULT_DURABILITY",
    "DEFAULT_PROTOCOL",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "ENV_DURABILITY",
    "ENV_JOURNAL",
    "ENV_SESSION_ID",
    "ENV_TZ",
    "ExporterChoice",
    "Spanjournal",
    "configure",
    "current",
    "resolve_exporters",
]

logger = logging.getLogger("spanjournal")

ENV_JOURNAL = "SPANJOURNAL_PATH"
ENV_SESSION_ID = "SPANJOURNAL_SESSION_ID"
ENV_DURABILITY = "SPANJOURNAL_DURABILITY"
ENV_TZ = "SPANJOURNAL_TZ"

OTEL_TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"
OTEL_EXPORTER_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
OTEL_EXPORTER_OTLP_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
OTEL_EXPORTER_OTLP_TRACES_PROTOCOL = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"

DEFAULT_DURABILITY: Durability = "fsync"
#: The Python SDK's ``otlp`` exporter speaks gRPC; port 4318 means HTTP.
DEFAULT_PROTOCOL = "grpc"
#: Seconds :meth:`Spanjournal.shutdown` gives the exporters (the journal is closed first).
DEFAULT_SHUTDOWN_TIMEOUT = 5.0
PROTOCOLS = ("grpc", "http/protobuf")
HTTP_TRACES_PATH = "/v1/traces"
_HTTP_PORT = 4318


@dataclass(frozen=True)
class ExporterChoice:
    """One span exporter :func:`configure` will build: what, and where to.

    ``kind`` is ``"otlp"``, ``"console"``, ``"entry_point"`` (an installed
    ``opentelemetry_traces_exporter`` entry point named ``name``) or
    ``"instance"`` (an exporter object passed in).
    """

    kind: str
    name: str = ""
    protocol: str | None = None
    #: The full traces URL for HTTP, the target for gRPC; None: the exporter's default.
    endpoint: str | None = None
    instance: SpanExporter | None = None

    def __str__(self) -> str:
        if self.kind == "otlp":
            return f"otlp {self.protocol} {self.endpoint or '(default endpoint)'}"
        if self.kind == "instance":
            return type(self.instance).__name__
        return self.name or self.kind


def resolve_exporters(
    exporter: str | SpanExporter | Sequence[str | SpanExporter] | None = None,
    *,
    endpoint: str | None = None,
    protocol: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[ExporterChoice]:
    """Decide the exporters from the arguments and the ``OTEL_*`` environment.

    Pure (builds nothing), so the decision can be shown and tested.

    >>> resolve_exporters(environ={})
    []
    >>> [str(c) for c in resolve_exporters(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})]
    ['otlp http/protobuf http://collector:4318/v1/traces']
    >>> [str(c) for c in resolve_exporters("otlp", endpoint="http://localhost:4317", environ={})]
    ['otlp grpc http://localhost:4317']
    """
    env = os.environ if environ is None else environ
    implicit = exporter is None and not env.get(OTEL_TRACES_EXPORTER, "").strip()
    if exporter is None:
        items: list[str | SpanExporter] = [n.strip() for n in env.get(OTEL_TRACES_EXPORTER, "otlp").split(",")]
    elif isinstance(exporter, (str, SpanExporter)):
        items = [exporter]
    else:
        items = list(exporter)
    choices: list[ExporterChoice] = []
    for item in items:
        if isinstance(item, SpanExporter):
            choices.append(ExporterChoice("instance", instance=item))
            continue
        name = item.strip().lower()
        if name in ("", "none"):
            if name == "none":
                return [c for c in choices if c.kind == "instance"]
            continue
        if name == "console":
            choices.append(ExporterChoice("console", name="console"))
        elif name == "otlp":
            choice = _otlp_choice(endpoint, protocol, env)
            if choice is None and implicit:
                continue
            choices.append(choice or ExporterChoice("otlp", protocol=_protocol(protocol, None, env)))
        else:
            choices.append(ExporterChoice("entry_point", name=item.strip()))
    return choices


def _protocol(explicit: str | None, endpoint: str | None, env: Mapping[str, str]) -> str:
    source = "protocol"
    value = explicit
    if not value:
        for var in (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL):
            if env.get(var, "").strip():
                value, source = env[var], var
                break
    if not value:
        port = urlparse(endpoint).port if endpoint and "//" in endpoint else None
        return "http/protobuf" if port == _HTTP_PORT else DEFAULT_PROTOCOL
    value = value.strip().lower()
    if value not in PROTOCOLS:
        raise ValueError(f"{source}={value!r}: spanjournal supports OTLP over {' or '.join(PROTOCOLS)}")
    return value


def _otlp_choice(endpoint: str | None, protocol: str | None, env: Mapping[str, str]) -> ExporterChoice | None:
    """The OTLP exporter for an endpoint configured somewhere, or None if none is."""
    signal_url = env.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "").strip()
    base_url = env.get(OTEL_EXPORTER_OTLP_ENDPOINT, "").strip()
    if endpoint:
        url, is_base = endpoint.strip(), True
    elif signal_url:
        url, is_base = signal_url, False
    elif base_url:
        url, is_base = base_url, True
    else:
        return None
    proto = _protocol(protocol, url, env)
    if proto == "http/protobuf" and is_base and not url.rstrip("/").endswith(HTTP_TRACES_PATH):
        url = url.rstrip("/") + HTTP_TRACES_PATH
    return ExporterChoice("otlp", protocol=proto, endpoint=url)


def _sampler_from_environment() -> Sampler:
    """The sampler ``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG`` choose, as the SDK reads them."""
    return TracerProvider(shutdown_on_exit=False).sampler


def _build_exporter(choice: ExporterChoice, headers: Mapping[str, str] | None) -> SpanExporter:
    if choice.kind == "instance":
        assert choice.instance is not None
        return choice.instance
    if choice.kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if choice.kind == "otlp":
        kwargs: dict[str, Any] = {}
        if choice.endpoint:
            kwargs["endpoint"] = choice.endpoint
        if headers is not None:
            kwargs["headers"] = dict(headers)
        if choice.protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

            return GrpcExporter(**kwargs)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter(**kwargs)
    from importlib.metadata import entry_points

    found = list(entry_points(group="opentelemetry_traces_exporter", name=choice.name))
    if not found:
        raise ValueError(
            f"unknown span exporter {choice.name!r}: use otlp, console or none, or install a package that provides it"
        )
    return cast(SpanExporter, found[0].load()())


class Spanjournal:
    """A configured journal + tracer provider: what :func:`configure` returns.

    Attributes: ``journal``, ``processor`` (the :class:`JournalSpanProcessor`),
    ``tracer_provider``, ``tracer``, ``session_id``, ``service_name``,
    ``exporters`` (what spans are sent to, as :class:`ExporterChoice`).
    Usable as a context manager (shut down on exit).

    >>> sj = configure(journal="runs/bench.jsonl", exporter="none")   # doctest: +SKIP
    >>> sj.plan(f"case-{i:03d}" for i in range(50))                   # doctest: +SKIP
    >>> sj.shutdown()                                                  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        journal: Journal | JournalLike,
        owns_journal: bool,
        processor: JournalSpanProcessor,
        tracer_provider: TracerProvider,
        owns_provider: bool,
        export_processors: list[SpanProcessor],
        exporters: list[ExporterChoice],
        session_id: str,
        shutdown_timeout: float,
    ) -> None:
        from spanjournal import __version__

        self.journal = journal
        self.processor = processor
        self.tracer_provider = tracer_provider
        self.tracer: trace.Tracer = tracer_provider.get_tracer(semconv.TRACER_NAME, __version__)
        self.session_id = session_id
        name = tracer_provider.resource.attributes.get("service.name")
        self.service_name: str | None = name if isinstance(name, str) else None
        self.exporters = exporters
        self.shutdown_timeout = shutdown_timeout
        self._owns_journal = owns_journal
        self._owns_provider = owns_provider
        self._export_processors = export_processors
        self._runtime = instrument._Runtime(self.tracer, processor, session_id, self.service_name)
        self._lock = threading.Lock()
        self._shut = False
        atexit.register(self._shutdown_at_exit)

    @property
    def errors(self) -> int:
        """How many journal events could not be written (see the log for each)."""
        return self.processor.errors

    @property
    def is_shutdown(self) -> bool:
        return self._shut

    def plan(self, chunk_ids: Iterable[str]) -> None:
        """Write a ``run_planned`` event: chunks never dispatched then read as ``never_dispatched``.

        Raises :class:`~spanjournal.JournalWriteError` if it cannot be written.
        """
        ids = [str(c) for c in chunk_ids]
        event = RunPlanned(ts=self.processor.format_ts(time.time_ns()), session_id=self.session_id, chunk_ids=ids)
        self.journal.append_bytes(encode(event))

    def force_flush(self, timeout: float | None = None) -> bool:
        """Write buffered journal events, then export pending spans (bounded by ``timeout`` seconds)."""
        ok = self.processor.force_flush()
        if self._export_processors:
            limit = self.shutdown_timeout if timeout is None else timeout
            ok = _bounded(lambda: [p.force_flush(int(limit * 1000)) for p in self._export_processors], limit) and ok
        return ok

    def shutdown(self, timeout: float | None = None) -> None:
        """Close the journal, then flush and stop the exporters within ``timeout`` seconds. Idempotent.

        Dispatches after this write nothing (strict ones raise). Spans the
        exporters could not send in time are dropped with one warning; the
        journal has them (``spanjournal export`` can send them later).
        """
        with self._lock:
            if self._shut:
                return
            self._shut = True
        atexit.unregister(self._shutdown_at_exit)
        _deactivate(self)
        self.processor.shutdown()
        if self._owns_journal:
            try:
                self.journal.close()
            except Exception as exc:
                logger.error("spanjournal: closing the journal failed: %s", exc)
        limit = self.shutdown_timeout if timeout is None else timeout
        stop: list[Any] = [self.tracer_provider.shutdown] if self._owns_provider else []
        stop += [p.shutdown for p in self._export_processors if not self._owns_provider]
        if stop and not _bounded(lambda: [f() for f in stop], limit):
            logger.warning(
                "spanjournal: span exporters did not finish within %.1fs; unsent spans are dropped "
                "(the journal has every dispatch)",
                limit,
            )

    def _shutdown_at_exit(self) -> None:
        try:
            self.shutdown()
        except Exception as exc:
            logger.error("spanjournal: shutdown at exit failed: %s", exc)

    def __enter__(self) -> Spanjournal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        exporters = ", ".join(map(str, self.exporters)) or "no exporter"
        return f"<Spanjournal {self.journal!r} session={self.session_id} -> {exporters}>"


def _bounded(work: Any, timeout: float) -> bool:
    """Run ``work()`` in a daemon thread; False if it did not finish within ``timeout`` seconds."""
    done = threading.Event()

    def run() -> None:
        try:
            work()
        except Exception as exc:
            logger.error("spanjournal: span exporter failed: %s", exc)
        finally:
            done.set()

    threading.Thread(target=run, name="spanjournal-exporters", daemon=True).start()
    return done.wait(max(0.0, timeout))


_lock = threading.Lock()
_current: Spanjournal | None = None


def current() -> Spanjournal | None:
    """The active configuration (the last :func:`configure` not shut down), if any."""
    return _current


def _activate(sj: Spanjournal | None) -> Spanjournal | None:
    """Make ``sj`` the configuration dispatches use; return the previous one (not shut down)."""
    global _current
    with _lock:
        previous, _current = _current, sj
        instrument._activate(sj._runtime if sj is not None else None)
    return previous


def _deactivate(sj: Spanjournal) -> None:
    global _current
    with _lock:
        if _current is sj:
            _current = None
            instrument._activate(None)


def build(
    journal: str | os.PathLike[str] | Journal | JournalLike | None = None,
    *,
    service_name: str | None = None,
    session_id: str | None = None,
    durability: Durability | None = None,
    tz: str | tzinfo | None = None,
    exporter: str | SpanExporter | Sequence[str | SpanExporter] | None = None,
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | None = None,
    sampler: Sampler | None = None,
    tracer_provider: TracerProvider | None = None,
    set_global: bool = True,
    agent_spans: AgentSpans | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
) -> Spanjournal:
    """Like :func:`configure`, without making the result the active configuration."""
    env = os.environ
    if journal is None:
        journal = env.get(ENV_JOURNAL, "").strip() or None
        if journal is None:
            raise ValueError(f"no journal: pass configure(journal=...) or set {ENV_JOURNAL}")
    if durability is None:
        durability = cast(Durability, env.get(ENV_DURABILITY, "").strip().lower() or DEFAULT_DURABILITY)
    if durability not in DURABILITY_MODES:
        raise ValueError(f"durability must be one of {', '.join(DURABILITY_MODES)}, not {durability!r}")
    if tz is None:
        tz = env.get(ENV_TZ, "").strip() or None
    tz = resolve_tz(tz)
    session_id = session_id or env.get(ENV_SESSION_ID, "").strip() or str(uuid.uuid4())
    choices = resolve_exporters(exporter, endpoint=endpoint, protocol=protocol)
    exporters = [_build_exporter(c, headers) for c in choices]

    owns_journal = isinstance(journal, (str, os.PathLike))
    journal_obj: Journal | JournalLike = (
        Journal(cast("str | os.PathLike[str]", journal), durability=durability) if owns_journal else journal  # type: ignore[assignment]
    )
    processor = JournalSpanProcessor(journal_obj, session_id=session_id, tz=tz, agent_spans=agent_spans)
    owns_provider = tracer_provider is None
    if tracer_provider is None:
        attributes = dict(resource_attributes or {})
        if service_name:
            attributes["service.name"] = service_name
        tracer_provider = TracerProvider(
            resource=Resource.create(attributes),
            sampler=JournalSampler(sampler or _sampler_from_environment(), agent_spans),
            shutdown_on_exit=False,
        )
    elif agent_spans is not None and not isinstance(tracer_provider.sampler, JournalSampler):
        logger.warning(
            "spanjournal: agent spans the sampler of your tracer provider drops are not journaled; "
            "build it with sampler=spanjournal.JournalSampler(your_sampler, agent_spans)"
        )
    tracer_provider.add_span_processor(processor)
    export_processors: list[SpanProcessor] = []
    for span_exporter in exporters:
        batch = BatchSpanProcessor(span_exporter)
        tracer_provider.add_span_processor(batch)
        export_processors.append(batch)
    if set_global and owns_provider:
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            trace.set_tracer_provider(tracer_provider)
        else:
            logger.debug("spanjournal: a global tracer provider is already set; leaving it in place")
    return Spanjournal(
        journal=journal_obj,
        owns_journal=owns_journal,
        processor=processor,
        tracer_provider=tracer_provider,
        owns_provider=owns_provider,
        export_processors=export_processors,
        exporters=choices,
        session_id=session_id,
        shutdown_timeout=shutdown_timeout,
    )


def configure(
    journal: str | os.PathLike[str] | Journal | JournalLike | None = None,
    *,
    service_name: str | None = None,
    session_id: str | None = None,
    durability: Durability | None = None,
    tz: str | tzinfo | None = None,
    exporter: str | SpanExporter | Sequence[str | SpanExporter] | None = None,
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | None = None,
    sampler: Sampler | None = None,
    tracer_provider: TracerProvider | None = None,
    set_global: bool = True,
    agent_spans: AgentSpans | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
) -> Spanjournal:
    """Set up the journal, tracing and export; dispatches use it from now on.

    ``journal`` is a path (opened with ``durability``: ``"fsync"``,
    ``"flush"`` or ``"none"``) or a journal object. ``tz`` is the time zone
    of the journal's ``ts`` (e.g. ``"Asia/Kuala_Lumpur"``; default local).
    ``exporter`` is ``"otlp"``, ``"console"``, ``"none"``, an exporter
    object, or a list; see the module documentation for the environment
    variables each argument falls back to. ``tracer_provider`` adds the
    journal to a provider you built (its resource and exporters are kept;
    ``exporter`` adds more); otherwise a new provider is made and, with
    ``set_global``, installed as the global one if none was. A previous
    configuration is shut down.

    ``sampler`` (default: the one ``OTEL_TRACES_SAMPLER`` chooses) decides
    what is exported, never what is journaled: it is wrapped in a
    :class:`~spanjournal.sampling.JournalSampler`, which records every span
    the journal needs even when the sampler drops it.

    ``agent_spans`` makes the agent spans of other instrumentations journaled
    units: ``agent_spans=spanjournal.AgentSpans()`` journals every
    ``invoke_agent`` span that names its agent (the outermost of a unit only),
    with a chunk id that is the same when the same agent is asked again; see
    :class:`~spanjournal.AgentSpans` for which spans, how ids are made, and
    how to change either.

    >>> sj = configure(journal="runs/bench.jsonl", service_name="router-bench",
    ...                durability="fsync", tz="Asia/Kuala_Lumpur")          # doctest: +SKIP
    """
    sj = build(
        journal,
        service_name=service_name,
        session_id=session_id,
        durability=durability,
        tz=tz,
        exporter=exporter,
        endpoint=endpoint,
        protocol=protocol,
        headers=headers,
        sampler=sampler,
        tracer_provider=tracer_provider,
        set_global=set_global,
        agent_spans=agent_spans,
        resource_attributes=resource_attributes,
        shutdown_timeout=shutdown_timeout,
    )
    previous = _activate(sj)
    if previous is not None and previous is not sj:
        previous.shutdown()
    return sj
