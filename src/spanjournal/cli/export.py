"""``spanjournal export``: send a journal's attempts to an OTLP backend, unfinished ones included.

A thin layer over :mod:`spanjournal.export`, which is imported (with the
OpenTelemetry SDK) only when the command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from spanjournal.cli._command import EXIT_OK, CliError, add_command
from spanjournal.cli._output import Progress, plural, read_summary, report_read_problems
from spanjournal.reader import JournalReadError, journal_files

if TYPE_CHECKING:
    from spanjournal.cli._command import Subparsers
    from spanjournal.export import ExportStats

#: The backend could not be reached or refused the spans.
EXIT_EXPORT_FAILED = 1

DESCRIPTION = """\
Rebuild every attempt in the journals as an OpenTelemetry span and send them
to an OTLP backend (Jaeger, an OpenTelemetry Collector, ...), with their
original trace, span and parent ids, times and attributes.

Attempts that never completed (the run died) are sent too: status ERROR,
"no completion recorded", ending at the last event the journal holds from
their process, with spanjournal.unfinished=true when their chunk still needs
a retry (search for it in Jaeger). Failed attempts are ERROR with their
error; reconciled ones OK with spanjournal.reconciled=true. If the run's
spans already reached the backend live, send only what is missing there:
--only unfinished (attempts whose live span never ended: no completion, or
one recorded later by reconcile).

Endpoint, protocol, headers and timeout also come from the standard
OTEL_EXPORTER_OTLP_* and OTEL_EXPORTER_OTLP_TRACES_* variables; options win.
The protocol and endpoint are chosen as spanjournal.configure() chooses them:
--protocol, else OTEL_EXPORTER_OTLP_TRACES_PROTOCOL / OTEL_EXPORTER_OTLP_PROTOCOL,
else grpc, or http/protobuf when the port is 4318. With no endpoint set,
localhost (4317 for grpc): when nothing listens there, it says so at once.
A gRPC attempt answered UNIMPLEMENTED (an OTLP/HTTP port) gets a hint to use
--protocol http/protobuf. --timeout bounds each request by the clock.
Attempts whose time OTLP cannot carry (before 1970, after 2554) are skipped
with a warning naming them; the rest is sent.

Every export that sends keeps a record of the spans the backend acknowledged
(batches refused are not recorded), per journal file and endpoint URL, in
.NAME.spanjournal-exported beside the journal (never *.jsonl; in
$XDG_CACHE_HOME/spanjournal when the folder is not writable): one 8-byte
hash per span. With --new, spans in that record are left out: run it again
after the journal grew and only what is new is sent. A span is the same span
when its trace id, span id and outcome (done, reconciled, failed, unfinished,
running) are: an attempt sent as unfinished or running that has completed
since is sent again, completed, and the backend then holds both; an
unfinished one whose chunk another attempt has done since is not (only its
spanjournal.superseded marker changed). A journal replaced by another file,
truncated or rewritten since its record was made no longer matches it:
--new then sends all of its spans and says so on stderr. An export of a
single journal that sent every span it selected also records where it
stopped reading: --new then reads only what was appended since (completed
attempts never change; those still open there are kept in the record).
SPANJOURNAL_NO_CHECKPOINT=1 reads the journal whole, with the same answer.

stdout: with --dry-run, one line per span that would be sent.
stderr: a one-line summary (with --new, how many spans were left out as
        sent before), and warnings for lines that were skipped.
exit:   0; 1 when the backend cannot be reached or refuses the spans;
        2 for usage errors and journals that cannot be read."""

EPILOG = """\
examples:
  spanjournal export runs/bench.jsonl
  spanjournal export runs/bench.jsonl --endpoint http://localhost:4317 --protocol grpc
  spanjournal export runs/ --only unfinished --service-name router-bench
  spanjournal export runs/bench.jsonl --dry-run | grep unfinished
  spanjournal export runs/bench.jsonl --new       # later, after the journal grew: only what is new
  OTEL_EXPORTER_OTLP_ENDPOINT=https://otlp.example.com \\
    OTEL_EXPORTER_OTLP_HEADERS="authorization=Bearer $TOKEN" spanjournal export runs/bench.jsonl
"""

#: Loggers the exporters report through; their retries and failures are summed up in one line instead.
_EXPORTER_LOGGERS = ("opentelemetry.exporter", "opentelemetry.sdk")


def register(subparsers: Subparsers) -> None:
    """Add ``spanjournal export``."""
    parser = add_command(
        subparsers,
        "export",
        help="send the journal to an OTLP backend, unfinished spans included",
        description=DESCRIPTION,
        epilog=EPILOG,
        handler=run,
    )
    add_arguments(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "journals", nargs="+", metavar="JOURNAL", help="journal files, directories of *.jsonl, or globs"
    )
    parser.add_argument(
        "--endpoint",
        metavar="URL",
        help="OTLP base URL, e.g. http://localhost:4318 (http/protobuf adds /v1/traces) "
        "or http://localhost:4317 (grpc)",
    )
    parser.add_argument("--protocol", choices=("grpc", "http/protobuf"), help="OTLP protocol")
    parser.add_argument(
        "--service-name",
        metavar="NAME",
        help="service.name for sessions whose journal records none (default: OTEL_SERVICE_NAME, else spanjournal)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=("all", "unfinished", "failed"),
        help="send only attempts whose live span never ended (unfinished or reconciled), "
        "or only failed ones (repeatable; default: all)",
    )
    parser.add_argument(
        "--new",
        action="store_true",
        help="leave out spans an earlier export of the same journal sent to the same endpoint with the "
        "same outcome (trace id, span id, outcome); an attempt that completed since is sent again",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be sent (with --new: only what is new); send nothing"
    )
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        metavar="SECONDS",
        help="give up on a request after this long, whatever the backend does (default: "
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT, OTEL_EXPORTER_OTLP_TIMEOUT, else 10)",
    )
    parser.add_argument("--batch-size", type=_positive_int, default=512, metavar="N", help="spans per request")


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    from spanjournal import export
    from spanjournal.exported import SentRecord

    err = sys.stderr
    try:
        files, skipped = journal_files(args.journals)  # a named file that is not a journal: exit 2, nothing sent
    except JournalReadError as exc:
        raise CliError(str(exc)) from None
    for line in skipped:
        err.write(f"{line}\n")
    try:
        protocol, url = export.resolve_target(args.endpoint, args.protocol)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    service = args.service_name or os.environ.get("OTEL_SERVICE_NAME") or None
    only = args.only or ["all"]
    stats = export.ExportStats()
    record = SentRecord.open(files, url) if args.new or not args.dry_run else None
    if args.new and record is not None:
        for path, why in record.invalidated:
            err.write(f"warning: {path}: {why} since it was exported to {url}: sending all of its spans again\n")
    progress = Progress(sum(_size(p) for p in files), err)
    if args.dry_run:
        try:
            out = sys.stdout
            spans = export.journal_spans(
                files, service_name=service, only=only, stats=stats, progress=progress, record=record, new_only=args.new
            )
            for span in spans:
                if not export.time_in_range(span):
                    stats.skip_out_of_range(span)
                    continue
                out.write(export.describe_span(span) + "\n")
        finally:
            progress.close()
        left_out = f"; {plural(stats.sent_before, 'span')} left out as sent before" if args.new else ""
        _report(stats, files, err, f"would send {stats.summary()} to {url} ({protocol}){left_out}; nothing sent")
        return EXIT_OK

    try:
        timeout = export.request_timeout(args.timeout)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if not export.endpoint_configured(args.endpoint):
        refused = export.probe_endpoint(url, timeout=min(timeout, 2.0))
        if refused:
            err.write(
                f"{args.prog}: error: no OTLP endpoint configured (--endpoint, or OTEL_EXPORTER_OTLP_ENDPOINT)"
                f" and nothing listens at the default {url} ({protocol}): {refused} (nothing sent)\n"
            )
            return EXIT_EXPORT_FAILED

    with _quiet_exporter_logs():
        exporter, protocol, url = export.make_exporter(args.endpoint, args.protocol, timeout=args.timeout)
        try:
            export.export_journal(
                files,
                exporter,
                service_name=service,
                only=only,
                batch_size=args.batch_size,
                stats=stats,
                progress=progress,
                timeout=timeout,
                record=record,
                new_only=args.new,
            )
        except export.ExportError as exc:
            progress.close()
            report_read_problems(stats.read, files, err)
            cause = exc.reason
            if cause is None or cause == export.NO_ANSWER:
                cause = export.probe_endpoint(url) or cause
            reason = f": {cause}" if cause else ""
            sent = f"{plural(exc.sent, 'span')} sent before the failure" if exc.sent else "nothing sent"
            hint = export.protocol_hint(protocol, cause)
            err.write(
                f"{args.prog}: error: cannot send spans to {url} ({protocol}){reason} ({sent})"
                + (f"; {hint}" if hint else "")
                + "\n"
            )
            return EXIT_EXPORT_FAILED
        finally:
            progress.close()
            exporter.shutdown()
            if record is not None:
                record.save()
                for path in record.unsaved:
                    err.write(
                        f"warning: {path}: what was sent cannot be recorded (neither beside it nor in"
                        " the cache directory): --new will send it again\n"
                    )
    left_out = f"; {plural(stats.sent_before, 'span')} left out as sent before" if args.new else ""
    _report(stats, files, err, f"sent {stats.summary()} to {url} ({protocol}) in {stats.seconds:.1f}s{left_out}")
    return EXIT_OK


def _report(stats: ExportStats, files: list[Path], err: TextIO, head: str) -> None:
    report_read_problems(stats.read, files, err)
    for warning in stats.warnings():
        err.write(f"warning: {warning}\n")
    notes = read_summary(stats.read)
    err.write(head + (f" ({', '.join(notes)})" if notes else "") + "\n")


@contextlib.contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    """Keep the exporters' retry warnings and tracebacks off the terminal: the command sums up."""
    saved = []
    for name in _EXPORTER_LOGGERS:
        logger = logging.getLogger(name)
        handler = logging.NullHandler()
        saved.append((logger, handler, logger.propagate))
        logger.addHandler(handler)
        logger.propagate = False
    try:
        yield
    finally:
        for logger, handler, propagate in saved:
            logger.removeHandler(handler)
            logger.propagate = propagate


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
