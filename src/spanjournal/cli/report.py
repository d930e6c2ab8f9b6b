"""``spanjournal report``: the run as one self-contained HTML page.

The page (``report_page.html``, shipped with the package) holds its script,
its style and the run's data as embedded JSON: no network, no server, it
opens from disk. It shows the state counts, a timeline (one bar per attempt,
coloured by outcome; attempts that never completed drawn up to the last event
of their session and marked cut off; the moment each session's writer
stopped), the pending list with descriptions and last errors, failures by
error type, tokens and cost by batch and agent, and filters (state, agent,
batch, text) that work on the embedded data.

Large runs stay usable: the timeline is drawn on a canvas, one row per chunk
while the chunks shown fit, otherwise one row per batch, agent or range of
chunks, where each row shows how many attempts were in flight at each moment,
by outcome; the chunk list draws only the rows in view.

Times are shown in the time zone of the journal's ``ts`` (the offset of its
first event), as the journal's writer chose it.
"""

from __future__ import annotations

import argparse
import html
import math
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from spanjournal.cli._command import EXIT_OK, CliError, add_command, read_journals
from spanjournal.cli.stats import GroupStats, _price, compute, grouper
from spanjournal.ledger import Attempt, Chunk, ChunkState, Ledger

if TYPE_CHECKING:
    from spanjournal.cli._command import Subparsers

DESCRIPTION = """\
Write the run as one self-contained HTML page: state counts, a timeline of
every attempt (coloured by outcome; attempts cut off by a crash drawn up to
the last event of their session; the moment each session's writer stopped),
the pending list with descriptions and last errors, failures by error type,
tokens and cost by batch and agent. The data is embedded in the page, so it
can be filtered by state, agent, batch and text with no server and no
network. Times are in the journal's own time zone.

Large runs stay usable: beyond a few hundred chunks the timeline shows one
row per batch (or agent, or range of chunks) with the attempts in flight over
time, and the chunk list draws only the rows in view."""

EPILOG = """\
examples:
  spanjournal report runs/bench.jsonl -o report.html
  spanjournal report runs/ -o runs/report.html --price-per-1k-tokens 0.003
"""

PAGE_RESOURCE = "report_page.html"
#: Where the page's template takes the run's data.
DATA_PLACEHOLDER = "/*SPANJOURNAL_DATA*/null"
TITLE_PLACEHOLDER = "<!--SPANJOURNAL_TITLE-->"
#: Version of the embedded data's layout, read by the page's script.
DATA_VERSION = 1

#: The outcome of one attempt, as the page colours it (index into ``OUTCOMES``).
OUTCOMES = ("done", "failed", "cut_off", "running", "reconciled")
DONE, FAILED, CUT_OFF, RUNNING, RECONCILED = range(len(OUTCOMES))
STATES = tuple(ChunkState)
#: A last error longer than this is shortened in the page (the journal keeps it whole).
MAX_ERROR_CHARS = 2000


def register(subparsers: Subparsers) -> None:
    """Add ``spanjournal report``."""
    parser = add_command(
        subparsers,
        "report",
        help="write the run as one self-contained HTML page",
        description=DESCRIPTION,
        epilog=EPILOG,
        handler=run,
    )
    parser.add_argument(
        "journals", nargs="+", metavar="JOURNAL", help="journal files, directories of *.jsonl, or globs"
    )
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="the HTML file to write")
    parser.add_argument("--title", metavar="TEXT", help="the page's title (default: the first journal's name)")
    parser.add_argument("--price-per-1k-tokens", type=_price, metavar="X", help="price of 1000 tokens, for cost")


def run(args: argparse.Namespace) -> int:
    output = Path(args.output)
    if output.is_dir():
        raise CliError(f"-o {args.output}: is a directory")
    if not output.parent.is_dir():
        raise CliError(f"-o {args.output}: no such directory: {output.parent}")
    read = read_journals(args.journals, keep_attempts=True)
    title = args.title or read.files[0].name
    data = build(read.ledger, files=[str(p) for p in read.files], title=title, price=args.price_per_1k_tokens)
    write_page(output, data)
    sys.stdout.write(f"{output}\n")
    return EXIT_OK


# -- the embedded data ----------------------------------------------------------------


class StringTable:
    """Strings stored once in the page; columns hold their index (-1 for none)."""

    def __init__(self) -> None:
        self.strings: list[str] = []
        self._index: dict[str, int] = {}

    def __call__(self, text: str | None) -> int:
        if text is None or text == "":
            return -1
        i = self._index.get(text)
        if i is None:
            i = self._index[text] = len(self.strings)
            self.strings.append(text)
        return i


class SessionOut(msgspec.Struct, kw_only=True):
    """One writing process (a ``session_id``): when it wrote first and last, and how it ended."""

    id: str
    host: str | None
    pid: int | None
    first: float
    last: float
    #: ``running`` (its process is alive), ``cut_off`` (it stopped with attempts in flight) or ``finished``.
    ended: str
    cut_off: int


class FailureGroup(msgspec.Struct, kw_only=True):
    error_type: str
    attempts: int
    #: Chunks whose latest attempt failed with this error type.
    failed_now: int
    example: str | None


class Columns(msgspec.Struct, kw_only=True):
    """One list per field, one entry per chunk (strings as :class:`StringTable` indexes)."""

    id: list[str] = msgspec.field(default_factory=list)
    state: list[int] = msgspec.field(default_factory=list)
    batch: list[int] = msgspec.field(default_factory=list)
    agent: list[int] = msgspec.field(default_factory=list)
    desc: list[int] = msgspec.field(default_factory=list)
    error: list[int] = msgspec.field(default_factory=list)
    error_type: list[int] = msgspec.field(default_factory=list)
    output: list[int] = msgspec.field(default_factory=list)
    attempts: list[int] = msgspec.field(default_factory=list)
    tokens: list[int] = msgspec.field(default_factory=list)


class AttemptColumns(msgspec.Struct, kw_only=True):
    """One list per field, one entry per attempt; times in ms after ``ReportData.t0`` (to the microsecond)."""

    chunk: list[int] = msgspec.field(default_factory=list)
    session: list[int] = msgspec.field(default_factory=list)
    start: list[float] = msgspec.field(default_factory=list)
    end: list[float] = msgspec.field(default_factory=list)
    outcome: list[int] = msgspec.field(default_factory=list)


class ReportData(msgspec.Struct, kw_only=True):
    """Everything the page shows, as embedded in it."""

    v: int = DATA_VERSION
    title: str
    generated: str
    files: list[str]
    events: int
    skipped_lines: int
    #: Epoch milliseconds (whole) at or before the earliest event; every time in the page is relative to it.
    t0: float
    #: The journal's UTC offset in minutes, and as written (``+08:00``).
    offset_minutes: int
    offset: str
    states: list[str]
    outcomes: list[str]
    counts: dict[str, int]
    strings: list[str]
    chunks: Columns
    attempts: AttemptColumns
    #: Chunk indexes in the order ``pending`` prints them.
    pending: list[int]
    sessions: list[SessionOut]
    failures: list[FailureGroup]
    by_batch: list[GroupStats]
    by_agent: list[GroupStats]
    tokens: int
    price_per_1k_tokens: float | None
    cost: float | None


@dataclass
class _Session:
    host: str | None = None
    pid: int | None = None
    first: float = float("inf")
    last: float = float("-inf")
    alive: bool = False
    open_attempts: list[int] = field(default_factory=list)

    def saw(self, ms: float) -> None:
        self.first = min(self.first, ms)
        self.last = max(self.last, ms)


class _Clock:
    """``ts`` strings to epoch milliseconds; remembers the first offset seen (the journal's time zone)."""

    def __init__(self) -> None:
        self.offset: timedelta | None = None

    def __call__(self, ts: str | None) -> float | None:
        if not ts:
            return None
        try:
            moment = datetime.fromisoformat(ts)
        except ValueError:
            return None
        if moment.tzinfo is None:  # no offset: read as UTC
            return moment.replace(tzinfo=timezone.utc).timestamp() * 1000
        if self.offset is None:
            self.offset = moment.utcoffset()
        return moment.timestamp() * 1000


def build(ledger: Ledger, *, files: Sequence[str], title: str, price: float | None = None) -> ReportData:
    """The data of the page for ``ledger`` (read with its attempts kept)."""
    strings = StringTable()
    clock = _Clock()
    cols = Columns()
    raw_attempts: list[tuple[int, str, float | None, float | None, int]] = []
    sessions: dict[str, _Session] = {}
    failure_attempts: dict[str, int] = {}
    failure_now: dict[str, int] = {}
    failure_example: dict[str, str] = {}
    index_of: dict[str, int] = {}
    counts = dict.fromkeys((str(s) for s in STATES), 0)

    for i, chunk in enumerate(ledger):
        index_of[chunk.chunk_id] = i
        counts[str(chunk.state)] += 1
        d = chunk.dispatch
        cols.id.append(chunk.chunk_id)
        cols.state.append(STATES.index(chunk.state))
        cols.batch.append(strings(d.batch if d is not None else None))
        cols.agent.append(strings(d.agent if d is not None else None))
        cols.desc.append(strings(d.task_description if d is not None else None))
        error = chunk.last_error
        cols.error.append(strings(error[:MAX_ERROR_CHARS] if error is not None else None))
        cols.error_type.append(strings(chunk.error_type))
        cols.output.append(strings(chunk.output_file))
        cols.attempts.append(chunk.attempt_count)
        cols.tokens.append(chunk.tokens_used)
        if chunk.state is ChunkState.FAILED:
            key = chunk.error_type or "(none)"
            failure_now[key] = failure_now.get(key, 0) + 1
        for attempt in _attempts_of(chunk):
            _fold_attempt(i, chunk, attempt, clock, sessions, raw_attempts)
            c = attempt.completion
            if c is not None and not c.success:
                key = c.error_type or "(none)"
                failure_attempts[key] = failure_attempts.get(key, 0) + 1
                if c.error and key not in failure_example:
                    failure_example[key] = c.error[:MAX_ERROR_CHARS]

    known = [t for _, _, start, end, _ in raw_attempts for t in (start, end) if t is not None]
    known += [s.first for s in sessions.values() if s.first != float("inf")]
    t0 = float(math.floor(min(known))) if known else 0.0  # whole ms: the page adds times to it exactly
    session_ids = list(sessions)
    session_index = {s: n for n, s in enumerate(session_ids)}
    out_attempts = AttemptColumns()
    for chunk_index, session_id, start, end, outcome in raw_attempts:
        s = sessions[session_id]
        if outcome == CUT_OFF and s.alive:
            outcome = RUNNING
        begin = start if start is not None else (end if end is not None else s.last)
        if end is None or outcome in (CUT_OFF, RUNNING):
            end = max(s.last, begin)  # drawn up to the last event of its session
        out_attempts.chunk.append(chunk_index)
        out_attempts.session.append(session_index[session_id])
        out_attempts.start.append(round(begin - t0, 3))
        out_attempts.end.append(round(end - t0, 3))
        out_attempts.outcome.append(outcome)
        if outcome == CUT_OFF:
            s.open_attempts.append(chunk_index)

    offset = clock.offset or timedelta(0)
    by_batch = compute(ledger, grouper("batch"), group_by="batch", price=price)
    by_agent = compute(ledger, grouper("agent"), group_by="agent", price=price)
    failures = [
        FailureGroup(
            error_type=key,
            attempts=n,
            failed_now=failure_now.get(key, 0),
            example=failure_example.get(key),
        )
        for key, n in sorted(failure_attempts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    stats = ledger.stats
    return ReportData(
        title=title,
        generated=datetime.now(timezone(offset)).isoformat(sep=" ", timespec="seconds"),
        files=list(files),
        events=stats.events,
        skipped_lines=stats.bad_lines + stats.torn_tails,
        t0=t0,
        offset_minutes=int(offset.total_seconds() // 60),
        offset=_offset_text(offset),
        states=[str(s) for s in STATES],
        outcomes=list(OUTCOMES),
        counts=counts,
        strings=strings.strings,
        chunks=cols,
        attempts=out_attempts,
        pending=[index_of[c] for c in ledger.pending()],
        sessions=[
            SessionOut(
                id=sid,
                host=s.host,
                pid=s.pid,
                first=round(s.first - t0, 3),
                last=round(s.last - t0, 3),
                ended="running" if s.alive else ("cut_off" if s.open_attempts else "finished"),
                cut_off=len(s.open_attempts),
            )
            for sid, s in sessions.items()
        ],
        failures=failures,
        by_batch=by_batch.groups,
        by_agent=by_agent.groups,
        tokens=by_batch.tokens.total,
        price_per_1k_tokens=price,
        cost=by_batch.cost.total if by_batch.cost is not None else None,
    )


def _attempts_of(chunk: Chunk) -> Iterable[Attempt]:
    if chunk.attempts:
        return chunk.attempts
    if chunk.completion is not None:  # completed, with no dispatch in the journals
        return (Attempt(None, chunk.completion),)
    return ()


def _fold_attempt(
    chunk_index: int,
    chunk: Chunk,
    attempt: Attempt,
    clock: _Clock,
    sessions: dict[str, _Session],
    out: list[tuple[int, str, float | None, float | None, int]],
) -> None:
    d, c = attempt.dispatch, attempt.completion
    session_id = (d.session_id if d is not None else None) or (c.session_id if c is not None else "") or ""
    s = sessions.get(session_id)
    if s is None:
        s = sessions[session_id] = _Session()
    start = clock(d.ts) if d is not None else None
    end = clock(c.ts) if c is not None else None
    if d is not None:
        if s.host is None:
            s.host, s.pid = d.host, d.pid
        if start is not None:
            s.saw(start)
    if c is None:
        outcome = CUT_OFF
        if chunk.state is ChunkState.RUNNING and d is chunk.dispatch:
            s.alive = True
    elif c.reconciled:
        outcome = RECONCILED  # its time is the output file's, written by this session's agent
        if end is not None:
            s.saw(end)
    else:
        outcome = DONE if c.success else FAILED
        if end is not None:
            s.saw(end)
    out.append((chunk_index, session_id, start, end, outcome))


def _offset_text(offset: timedelta) -> str:
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


# -- the page -----------------------------------------------------------------


def page_template() -> str:
    """The page's HTML, script and style, with placeholders for the title and the data."""
    return resources.files("spanjournal.cli").joinpath(PAGE_RESOURCE).read_text(encoding="utf-8")


def render_page(data: ReportData) -> bytes:
    """The whole page: the template with the data embedded as JSON (safe inside ``<script>``)."""
    # "<" only occurs inside JSON strings, where \u003c means the same: no "</script>" or "<!--" can end the element
    payload = msgspec.json.encode(data).replace(b"<", b"\\u003c")
    template = page_template()
    head, sep, tail = template.partition(DATA_PLACEHOLDER)
    if not sep:
        raise RuntimeError(f"{PAGE_RESOURCE} has no data placeholder")
    head = head.replace(TITLE_PLACEHOLDER, html.escape(data.title))
    return head.encode() + payload + tail.encode()


def write_page(path: Path, data: ReportData) -> None:
    """Write the page whole or not at all (a reader never sees half a page)."""
    body = render_page(data)
    try:
        fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    except OSError as exc:
        raise CliError(f"-o {path}: cannot write: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)  # 0600, as the journal: the page holds its descriptions and errors
        os.replace(partial, path)
    except OSError as exc:
        Path(partial).unlink(missing_ok=True)
        raise CliError(f"-o {path}: cannot write: {exc.strerror or exc}") from None


__all__ = ["ReportData", "build", "render_page", "write_page"]
