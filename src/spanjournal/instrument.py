"""The dispatch decorator and context manager: where a sub-agent call becomes a span.

:func:`dispatch` wraps a function (``def`` or ``async def``) that runs one
unit of work; :func:`dispatch_span` does the same for a block. Each call
starts an OpenTelemetry span named ``invoke_agent {agent}`` with the
identifying attributes *at start* (chunk id, session id, task, items,
expected output file, ``gen_ai.operation.name="invoke_agent"``,
``gen_ai.agent.name``), so the :class:`~spanjournal.JournalSpanProcessor`
writes the ``subagent_dispatched`` line before the body runs.

Strictness lives here. In strict mode (the default) a dispatch whose
dispatched line could not be written raises
:class:`~spanjournal.JournalWriteError` *before* the body runs: no invisible
work. ``strict=False`` runs the body anyway; the failure is logged and
counted (``JournalSpanProcessor.errors``).

Sampling never hides work: when no journal processor saw the span (the
sampler dropped it, the SDK is disabled, or the tracer's provider has no
journal processor), the dispatch writes both events itself.

>>> import spanjournal
>>> @spanjournal.dispatch(chunk_id=lambda case: f"case-{case}", task_description="Route prompt")
... def run_agent(case):
...     spanjournal.current_dispatch().record(input_tokens=1000, output_tokens=234)
...     return "ok"
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import os
import random
import re
import time
from collections.abc import Callable, Coroutine, Mapping
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, ParamSpec, TypeAlias, TypeVar, cast, overload

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from spanjournal import semconv
from spanjournal.journal import JournalWriteError
from spanjournal.processor import MAX_ERROR_CHARS, JournalSpanProcessor, bound_error, latest_processor, start_outcomes

__all__ = [
    "DispatchHandle",
    "DispatchSpan",
    "StartedDispatch",
    "current_dispatch",
    "dispatch",
    "dispatch_span",
    "start_dispatch",
]

logger = logging.getLogger("spanjournal")

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

#: A decorator argument: a value, or a callable of the decorated function's arguments
#: (returning None leaves the attribute out).
Arg: TypeAlias = "T | Callable[..., T | None]"

_ERROR = StatusCode.ERROR
_CLIENT = SpanKind.CLIENT
_CHUNK_ID = semconv.CHUNK_ID
_SESSION_ID = semconv.SESSION_ID
_ERROR_TYPE = semconv.ERROR_TYPE
_INPUT_TOKENS = semconv.GEN_AI_INPUT_TOKENS
_OUTPUT_TOKENS = semconv.GEN_AI_OUTPUT_TOKENS
_time_ns = time.time_ns
_attach = context_api.attach
_detach = context_api.detach
_set_span_in_context = trace.set_span_in_context
_take_start_outcome = start_outcomes.take


class _Runtime:
    """What a dispatch needs: the tracer to start spans with, and the journal to fall back on."""

    __slots__ = ("processor", "service_name", "session_id", "tracer")

    def __init__(
        self,
        tracer: trace.Tracer,
        processor: JournalSpanProcessor | None,
        session_id: str | None,
        service_name: str | None = None,
    ) -> None:
        self.tracer = tracer
        self.processor = processor
        self.session_id = session_id
        self.service_name = service_name


_active: _Runtime | None = None
_fallback: tuple[object, object, _Runtime] | None = None
_not_configured_warned = False


def _activate(runtime: _Runtime | None) -> _Runtime | None:
    """Make ``runtime`` the one dispatches use (spanjournal.config); return the previous one."""
    global _active
    previous, _active = _active, runtime
    return previous


def _runtime() -> _Runtime:
    runtime = _active
    if runtime is not None:
        return runtime
    global _fallback
    provider = trace.get_tracer_provider()
    processor = latest_processor()
    cached = _fallback
    if cached is not None and cached[0] is provider and cached[1] is processor:
        return cached[2]
    from spanjournal import __version__

    runtime = _Runtime(
        provider.get_tracer(semconv.TRACER_NAME, __version__),
        processor,
        processor.session_id if processor is not None else None,
    )
    _fallback = (provider, processor, runtime)
    return runtime


class DispatchHandle:
    """One running dispatch: its span, and the completion fields recorded so far.

    Inside a decorated function, :func:`current_dispatch` returns it;
    :func:`dispatch_span` yields it. :meth:`record` adds what the
    ``subagent_completed`` line and the span should say::

        d = spanjournal.current_dispatch()
        d.record(output_file="responses/027.json", input_tokens=1000, output_tokens=234)
        d.record(success=False, error="quota exceeded")   # a failure without an exception
    """

    __slots__ = (
        "_context_token",
        "_current_token",
        "_ended",
        "_error",
        "_outcome",
        "_parent_span_id",
        "_runtime",
        "_self_journal",
        "_start_ns",
        "_success",
        "chunk_id",
        "journal_error",
        "journaled",
        "span",
    )

    _context_token: Token[Context]
    _current_token: Token[DispatchHandle | None]
    _start_ns: int
    _parent_span_id: int | None

    def __init__(self, chunk_id: str, runtime: _Runtime) -> None:
        self.chunk_id = chunk_id
        #: The OpenTelemetry span (a non-recording one when the sampler dropped it).
        self.span: trace.Span = trace.INVALID_SPAN
        #: Whether the ``subagent_dispatched`` line was written.
        self.journaled = False
        #: Why it was not, if writing it failed.
        self.journal_error: BaseException | None = None
        self._runtime = runtime
        #: Span attributes recorded for the end (the journal reads the completion from them).
        self._outcome: dict[str, Any] | None = None
        self._success = True
        self._error: str | None = None
        self._self_journal = False
        self._ended = False

    @property
    def trace_id(self) -> str:
        """The trace id, 32 hex digits, as written in the journal."""
        return f"{self.span.get_span_context().trace_id:032x}"

    @property
    def span_id(self) -> str:
        """The span id, 16 hex digits, as written in the journal."""
        return f"{self.span.get_span_context().span_id:016x}"

    def record(
        self,
        *,
        success: bool | None = None,
        error: str | None = None,
        error_type: str | None = None,
        output_file: str | os.PathLike[str] | None = None,
        tokens_used: int | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> None:
        """Add completion fields; later calls override earlier ones.

        ``error`` without ``success`` means ``success=False``. An exception
        escaping the dispatch overrides ``success`` and ``error``.
        ``input_tokens``/``output_tokens`` become ``gen_ai.usage.*`` span
        attributes, ``tokens_used`` ``spanjournal.tokens_used``,
        ``error_type`` ``error.type`` (on failures); ``attributes`` are set on
        the span as given.
        """
        if self._ended:
            logger.warning("spanjournal: record() on dispatch %r after it ended is ignored", self.chunk_id)
            return
        out = self._outcome
        if out is None:
            out = self._outcome = {}
        if attributes:
            out.update(attributes)
        if error is not None:
            self._error = str(error)
            if success is None:
                success = False
        if success is not None:
            self._success = bool(success)
        if error_type is not None:
            out[semconv.ERROR_TYPE] = str(error_type)
        if output_file is not None:
            out[semconv.OUTPUT_FILE] = os.fspath(output_file)
        if tokens_used is not None:
            out[semconv.TOKENS_USED] = _check_int("tokens_used", tokens_used)
        if input_tokens is not None:
            out[_INPUT_TOKENS] = _check_int("input_tokens", input_tokens)
        if output_tokens is not None:
            out[_OUTPUT_TOKENS] = _check_int("output_tokens", output_tokens)

    def __repr__(self) -> str:
        return f"<DispatchHandle {self.chunk_id!r} span_id={self.span_id}>"

    # -- lifecycle (used by the decorator and DispatchSpan) ------------------------

    def _not_journaled(self, span: trace.Span, attributes: dict[str, AttributeValue], strict: bool) -> None:
        """No processor journaled the span's start: write it here, or refuse (strict) if that fails."""
        if self.journal_error is None:
            self._journal_start_myself(span, attributes)
        if self.journal_error is not None:
            self._refuse(strict)

    def _journal_start_myself(self, span: trace.Span, attributes: dict[str, AttributeValue]) -> None:
        """No processor saw this span: write the dispatched line through the runtime's processor."""
        self._self_journal = True
        processor = self._runtime.processor
        parent = trace.get_current_span().get_span_context()
        self._parent_span_id = parent.span_id if parent.is_valid else None
        context = span.get_span_context()
        if not context.is_valid:
            trace_id = parent.trace_id if parent.is_valid else random.getrandbits(128)
            context = trace.SpanContext(trace_id, random.getrandbits(64) or 1, is_remote=False)
            self.span = span = NonRecordingSpan(context)
        start = getattr(span, "start_time", None)
        self._start_ns = start if isinstance(start, int) else _time_ns()
        if processor is None:
            self.journal_error = _not_configured()
            return
        line = processor.dispatched_line(
            chunk_id=self.chunk_id,
            start_ns=self._start_ns,
            trace_id=context.trace_id,
            span_id=context.span_id,
            parent_span_id=self._parent_span_id,
            attributes=attributes,
            service_name=self._runtime.service_name,
        )
        error = processor.write(line, "dispatched", self.chunk_id)
        if error is None:
            self.journaled = True
        else:
            self.journal_error = error

    def _refuse(self, strict: bool) -> None:
        error = self.journal_error
        assert error is not None
        if not strict:
            if isinstance(error, _NotConfigured):
                _warn_not_configured()
            return
        span = self.span
        if span.is_recording():
            span.set_attribute(semconv.ERROR_TYPE, "JournalWriteError")
            span.set_status(Status(_ERROR, f"dispatch refused: {error}"))
        self._ended = True
        span.end()
        errno_ = error.errno if isinstance(error, OSError) else None
        raise JournalWriteError(
            errno_, f"dispatch of {self.chunk_id!r} refused: its dispatched line could not be journaled: {error}"
        ) from error

    def _finish(self, exc: BaseException | None) -> None:
        try:
            _current.reset(self._current_token)
        except ValueError:  # exited in another context than entered (a misused dispatch_span)
            _current.set(None)
        _detach(self._context_token)
        span = self.span
        out = self._outcome
        if exc is None and self._success:
            if out:
                out.pop(_ERROR_TYPE, None)  # error.type describes failures only
                span.set_attributes(out)  # a no-op on a non-recording span
            self._ended = True
            span.end()
            if self._self_journal and self.journaled:
                self._journal_end_myself(True, None)
            return
        error = self._error
        if exc is not None:
            error = str(exc) or type(exc).__name__
            if out is None:
                out = self._outcome = {}
            out[_ERROR_TYPE] = type(exc).__name__
        if error is not None and len(error) > MAX_ERROR_CHARS:
            error = bound_error(error, MAX_ERROR_CHARS)
        if span.is_recording():
            if out:
                span.set_attributes(out)
            if exc is not None:
                span.record_exception(exc, escaped=True)
            span.set_status(Status(_ERROR, error))
        self._ended = True
        span.end()
        if self._self_journal and self.journaled:
            self._journal_end_myself(False, error)

    def _journal_end_myself(self, success: bool, error: str | None) -> None:
        processor = self._runtime.processor
        if processor is None:
            return
        end = getattr(self.span, "end_time", None)
        attrs: dict[str, Any] = dict(self._outcome or {})
        if self._runtime.session_id:
            attrs[semconv.SESSION_ID] = self._runtime.session_id
        context = self.span.get_span_context()
        line = processor.completed_line(
            chunk_id=self.chunk_id,
            start_ns=self._start_ns,
            end_ns=end if isinstance(end, int) else _time_ns(),
            trace_id=context.trace_id,
            span_id=context.span_id,
            attributes=attrs,
            success=success,
            error=None if success else error,
        )
        processor.write(line, "completed", self.chunk_id)


_current: ContextVar[DispatchHandle | None] = ContextVar("spanjournal_current_dispatch", default=None)


def current_dispatch() -> DispatchHandle:
    """The handle of the dispatch running in this context (thread or asyncio task).

    Raises ``LookupError`` outside a dispatch.

    >>> @dispatch("case-001")
    ... def run_agent():
    ...     current_dispatch().record(tokens_used=1234)
    """
    handle = _current.get()
    if handle is None:
        raise LookupError("spanjournal.current_dispatch() called outside a dispatch")
    return handle


class _NotConfigured(JournalWriteError):
    pass


def _not_configured() -> _NotConfigured:
    return _NotConfigured(
        None,
        "no journal configured: call spanjournal.configure(journal=...) "
        "or add a JournalSpanProcessor to your TracerProvider",
    )


def _warn_not_configured() -> None:
    global _not_configured_warned
    if not _not_configured_warned:
        _not_configured_warned = True
        logger.warning("spanjournal: dispatches run unjournaled: %s", _not_configured())


# -- argument checks -----------------------------------------------------------------


#: C0 controls, DEL and C1 controls: a chunk id holding one prints as something else (two ids, a
#: cleared line) wherever ids are listed one per line, e.g. ``pending | xargs``.
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f]")


def _check_chunk_id(value: object) -> str:
    if type(value) is str and value:
        if _CONTROL_CHARACTER.search(value) is not None:
            raise ValueError(f"chunk_id {value!r} contains a control character (newline, tab, NUL, ...)")
        return value
    if isinstance(value, bool) or value is None or value == "":
        raise ValueError(f"chunk_id must be a non-empty string, not {value!r}")
    if isinstance(value, (str, int)):
        return _check_chunk_id(str(value))
    raise TypeError(f"chunk_id must be a string, not {type(value).__name__}")


def _check_str(name: str, value: object) -> str:
    if type(value) is str:
        return value
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"{name} must be a string, not {type(value).__name__}")


def _check_path(name: str, value: object) -> str:
    if type(value) is str:
        return value
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    raise TypeError(f"{name} must be a path, not {type(value).__name__}")


def _check_int(name: str, value: object) -> int:
    if type(value) is int:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    raise TypeError(f"{name} must be an int, not {type(value).__name__}")


def _check_attributes(name: str, value: object) -> dict[str, AttributeValue]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping of attribute names to values, not {type(value).__name__}")
    return dict(value)


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    semconv.TASK_DESCRIPTION: _check_str,
    semconv.ITEMS_ASSIGNED: _check_int,
    semconv.OUTPUT_FILE: _check_path,
    semconv.BATCH: _check_str,
    semconv.GEN_AI_AGENT_NAME: _check_str,
}


# -- resolving decorator arguments ---------------------------------------------------

_Resolver = Callable[[tuple[Any, ...], dict[str, Any]], Any]
_VAR_KINDS = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _resolver(fn: Callable[..., Any], target: inspect.Signature | None) -> _Resolver:
    """How to call a decorator argument ``fn`` with the decorated function's arguments.

    With the same arguments when its parameters are the function's (or take
    ``*args``/``**kwargs``); when they name only some of the function's
    parameters (``lambda case: ...`` on ``def run(case, model)``, or on a
    method ``def run(self, case)``), with those, by name.
    """

    def same(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return fn(*args, **kwargs)

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return same
    params = list(sig.parameters.values())
    if target is None or any(p.kind in _VAR_KINDS for p in params):
        return same
    names = [p.name for p in params]
    target_names = list(target.parameters)
    if names == target_names or not set(names) <= set(target_names):
        return same
    positional = [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_ONLY]
    keyword = [p.name for p in params if p.kind is not inspect.Parameter.POSITIONAL_ONLY]

    def by_name(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        bound = target.bind(*args, **kwargs)
        bound.apply_defaults()
        values = bound.arguments
        return fn(*[values[n] for n in positional], **{n: values[n] for n in keyword})

    k = len(names)
    prefix_ok = names == target_names[:k] and all(
        target.parameters[n].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for n in names
    )
    if not prefix_ok:
        return by_name

    def prefix(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not kwargs and len(args) >= k:
            return fn(*args[:k])
        return by_name(args, kwargs)

    return prefix


class _Spec:
    """The parts of a dispatch fixed at decoration: checked constants and argument resolvers."""

    __slots__ = ("attributes", "chunk_id", "dynamic", "name", "strict")

    def __init__(
        self,
        chunk_id: Arg[str],
        *,
        task_description: Arg[str] | None,
        items_assigned: Arg[int] | None,
        output_file: Arg[str | os.PathLike[str]] | None,
        batch: Arg[str] | None,
        agent_name: Arg[str] | None,
        attributes: Arg[Mapping[str, AttributeValue]] | None,
        strict: bool,
        target: Callable[..., Any] | None,
    ) -> None:
        signature: inspect.Signature | None = None
        if target is not None:
            try:
                signature = inspect.signature(target)
            except (TypeError, ValueError):
                signature = None
        self.strict = strict
        self.attributes: dict[str, AttributeValue] = {semconv.GEN_AI_OPERATION_NAME: semconv.INVOKE_AGENT}
        self.dynamic: list[tuple[str, _Resolver, Callable[[str, Any], Any]]] = []
        if callable(chunk_id):
            if target is None:
                raise TypeError("chunk_id must be a string here, not a callable")
            resolve = _resolver(chunk_id, signature)
            self.chunk_id: str | _Resolver = resolve
        else:
            self.chunk_id = _check_chunk_id(chunk_id)
        if callable(attributes):
            self.dynamic.append(("", _resolver(attributes, signature), _check_attributes))
        elif attributes is not None:
            self.attributes.update(_check_attributes("attributes", attributes))
        for key, value in (
            (semconv.TASK_DESCRIPTION, task_description),
            (semconv.ITEMS_ASSIGNED, items_assigned),
            (semconv.OUTPUT_FILE, output_file),
            (semconv.BATCH, batch),
            (semconv.GEN_AI_AGENT_NAME, agent_name),
        ):
            if value is None:
                continue
            check = _CHECKS[key]
            if callable(value) and not isinstance(value, os.PathLike):
                if target is None:
                    raise TypeError(f"{key.rsplit('.', 1)[-1]} must be a value here, not a callable")
                self.dynamic.append((key, _resolver(value, signature), check))
            else:
                self.attributes[key] = check(key.rsplit(".", 1)[-1], value)
        agent = self.attributes.get(semconv.GEN_AI_AGENT_NAME)
        dynamic_agent = any(key == semconv.GEN_AI_AGENT_NAME for key, _, _ in self.dynamic)
        self.name: str | None = None if dynamic_agent else semconv.span_name(cast("str | None", agent))

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> DispatchHandle:
        """Resolve this call's attributes and start its span (strict: raise if not journaled)."""
        runtime = _active or _runtime()
        chunk_id = self.chunk_id
        if type(chunk_id) is not str:
            chunk_id = _check_chunk_id(cast(_Resolver, chunk_id)(args, kwargs))
        attributes = self.attributes.copy()
        if self.dynamic:
            for key, resolve, check in self.dynamic:
                value = resolve(args, kwargs)
                if value is None:
                    continue
                if key:
                    attributes[key] = check(key.rsplit(".", 1)[-1], value)
                else:
                    attributes.update(check("attributes", value))
        attributes[_CHUNK_ID] = chunk_id
        session_id = runtime.session_id
        if session_id:
            attributes[_SESSION_ID] = session_id
        name = self.name
        if name is None:
            name = semconv.span_name(cast("str | None", attributes.get(semconv.GEN_AI_AGENT_NAME)))
        handle = DispatchHandle(chunk_id, runtime)
        span = runtime.tracer.start_span(name, kind=_CLIENT, attributes=attributes)
        handle.span = span
        # A journal processor on the span's provider reports its outcome by span id (it may run on
        # another thread); none did if the span is not recorded or no journal processor is there.
        seen, handle.journal_error = _take_start_outcome(span.get_span_context().span_id)
        if seen and handle.journal_error is None:
            handle.journaled = True
        else:
            handle._not_journaled(span, attributes, self.strict)
        handle._context_token = _attach(_set_span_in_context(span))
        handle._current_token = _current.set(handle)
        return handle


# -- the public entry points ---------------------------------------------------------


class _DispatchDecorator:
    """``@dispatch(...)``: turns a sync or async function into a journaled dispatch."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        constants: dict[str, Any] = {
            k: None if callable(v) and not isinstance(v, os.PathLike) else v for k, v in kwargs.items()
        }
        if constants["chunk_id"] is None and kwargs["chunk_id"] is not None:
            constants["chunk_id"] = "checked-when-called"
        _Spec(target=None, **constants)  # check the constants now, at decoration
        self._kwargs = kwargs

    @overload
    def __call__(self, func: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, func: Callable[P, R]) -> Callable[P, R]: ...

    def __call__(self, func: Callable[P, Any]) -> Callable[P, Any]:
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise TypeError(
                f"@dispatch cannot wrap the generator function {func.__qualname__}: "
                "its body runs after the call returns; dispatch a function that does the work"
            )
        kwargs = dict(self._kwargs)
        if kwargs.get("agent_name") is None:
            kwargs["agent_name"] = getattr(func, "__name__", None)
        spec = _Spec(target=func, **kwargs)
        start = spec.start

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                handle = start(args, kwargs)
                try:
                    result = await func(*args, **kwargs)
                except BaseException as exc:
                    handle._finish(exc)
                    raise
                handle._finish(None)
                return result

            return run_async

        @functools.wraps(func)
        def run(*args: P.args, **kwargs: P.kwargs) -> Any:
            handle = start(args, kwargs)
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                handle._finish(exc)
                raise
            handle._finish(None)
            return result

        return run


def dispatch(
    chunk_id: Arg[str],
    *,
    task_description: Arg[str] | None = None,
    items_assigned: Arg[int] | None = 1,
    output_file: Arg[str | os.PathLike[str]] | None = None,
    batch: Arg[str] | None = None,
    agent_name: Arg[str] | None = None,
    attributes: Arg[Mapping[str, AttributeValue]] | None = None,
    strict: bool = True,
) -> _DispatchDecorator:
    """Decorate a function (``def`` or ``async def``) that runs one unit of work.

    Every argument is a value or a callable of the decorated function's
    arguments (called with the same arguments, or with those its parameters
    name). ``agent_name`` defaults to the function's name; the span is named
    ``invoke_agent {agent_name}``. ``attributes`` adds span attributes at
    start (journaled under ``attrs``).

    Each call writes ``subagent_dispatched`` before the body runs and
    ``subagent_completed`` when it returns or raises; an exception marks the
    completion ``success: false`` with ``error`` (bounded) and
    ``error_type``, sets the span status to ERROR, and is re-raised
    unchanged. ``strict`` (default) raises
    :class:`~spanjournal.JournalWriteError` before the body runs if the
    dispatched line could not be written; ``strict=False`` logs, counts and
    runs the body.

    >>> @dispatch(chunk_id=lambda case: f"batch-{case // 10}-case-{case:03d}",
    ...           task_description="Route prompt to expected skill",
    ...           output_file=lambda case: f"responses/{case:03d}.json",
    ...           agent_name="router")
    ... def run_agent(case: int) -> str:
    ...     return "skill-a"
    """
    return _DispatchDecorator(
        {
            "chunk_id": chunk_id,
            "task_description": task_description,
            "items_assigned": items_assigned,
            "output_file": output_file,
            "batch": batch,
            "agent_name": agent_name,
            "attributes": attributes,
            "strict": strict,
        }
    )


class DispatchSpan:
    """The context manager :func:`dispatch_span` returns; ``with`` and ``async with`` both work."""

    __slots__ = ("_handle", "_spec")

    def __init__(self, spec: _Spec) -> None:
        self._spec = spec
        self._handle: DispatchHandle | None = None

    def __enter__(self) -> DispatchHandle:
        if self._handle is not None:
            raise RuntimeError("a dispatch_span can be entered once; call dispatch_span() again")
        self._handle = self._spec.start((), {})
        return self._handle

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._handle is not None
        self._handle._finish(exc)

    async def __aenter__(self) -> DispatchHandle:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def dispatch_span(
    chunk_id: str,
    *,
    task_description: str | None = None,
    items_assigned: int | None = 1,
    output_file: str | os.PathLike[str] | None = None,
    batch: str | None = None,
    agent_name: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    strict: bool = True,
) -> DispatchSpan:
    """A dispatch as a ``with`` block; the same events and span as :func:`dispatch`.

    >>> with dispatch_span("batch-3-case-027", task_description="Route prompt") as d:
    ...     d.record(output_file="responses/027.json", tokens_used=1234, success=True)
    """
    return DispatchSpan(
        _Spec(
            chunk_id,
            task_description=task_description,
            items_assigned=items_assigned,
            output_file=output_file,
            batch=batch,
            agent_name=agent_name,
            attributes=attributes,
            strict=strict,
            target=None,
        )
    )


# -- dispatches started and ended in different callbacks ------------------------------


class StartedDispatch:
    """A dispatch opened by :func:`start_dispatch`: ended by :meth:`end`, from any callback.

    Frameworks that report "a unit starts" and "a unit ends" in two
    callbacks (LangChain's ``on_chain_start``/``on_chain_end``, the OpenAI
    Agents SDK's hooks and tracing processor) cannot wrap the unit in a
    ``with`` block. The dispatch runs in a context of its own, so starting
    it changes nothing in the caller's context (no current span, no
    :func:`current_dispatch`); pass it as ``parent`` to dispatches it starts.
    """

    __slots__ = ("_context", "handle")

    def __init__(self, handle: DispatchHandle, context: contextvars.Context) -> None:
        #: The dispatch's handle (its span, ``journaled``, :meth:`DispatchHandle.record`).
        self.handle = handle
        self._context = context

    @property
    def chunk_id(self) -> str:
        return self.handle.chunk_id

    @property
    def span(self) -> trace.Span:
        return self.handle.span

    @property
    def ended(self) -> bool:
        return self.handle._ended

    def end(
        self,
        *,
        success: bool | None = None,
        error: str | BaseException | None = None,
        error_type: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        tokens_used: int | None = None,
        output_file: str | os.PathLike[str] | None = None,
    ) -> None:
        """Write ``subagent_completed`` (through the span's end). A second call does nothing.

        ``error`` as an exception fails the dispatch with its message and
        type (as an exception escaping :func:`dispatch` does); as a string,
        with that message.
        """
        handle = self.handle
        if handle._ended:
            return
        if tokens_used is None and input_tokens is not None and output_tokens is not None:
            tokens_used = input_tokens + output_tokens
        exc = error if isinstance(error, BaseException) else None
        handle.record(
            success=success,
            error=None if exc is not None or error is None else str(error),
            error_type=error_type,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            tokens_used=tokens_used,
            output_file=output_file,
        )
        self._context.run(handle._finish, exc)

    def __repr__(self) -> str:
        return f"<StartedDispatch {self.chunk_id!r} ended={self.ended}>"


def start_dispatch(
    chunk_id: str,
    *,
    parent: StartedDispatch | None = None,
    task_description: str | None = None,
    items_assigned: int | None = 1,
    output_file: str | os.PathLike[str] | None = None,
    batch: str | None = None,
    agent_name: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    strict: bool = True,
) -> StartedDispatch:
    """Start a dispatch now and end it later with :meth:`StartedDispatch.end`.

    The same span and events as :func:`dispatch_span`; the span is a child
    of ``parent``'s span if given, else of the current span. ``strict``
    raises :class:`~spanjournal.JournalWriteError` here when the dispatched
    line could not be written.

    >>> d = start_dispatch("case-001", agent_name="router")    # doctest: +SKIP
    >>> d.end(input_tokens=1000, output_tokens=234)             # doctest: +SKIP
    """
    spec = _Spec(
        chunk_id,
        task_description=task_description,
        items_assigned=items_assigned,
        output_file=output_file,
        batch=batch,
        agent_name=agent_name,
        attributes=attributes,
        strict=strict,
        target=None,
    )
    context = contextvars.copy_context()
    parent_span = parent.handle.span if parent is not None else None
    handle = context.run(_start_under, spec, parent_span)
    return StartedDispatch(handle, context)


def _start_under(spec: _Spec, parent_span: trace.Span | None) -> DispatchHandle:
    """Start ``spec`` with ``parent_span`` as the current span (run inside a copied context)."""
    if parent_span is not None:
        _attach(_set_span_in_context(parent_span))
    return spec.start((), {})
