"""``spanjournal watch``: a live terminal view of a running fan-out.

Redrawn as the journal grows: chunks by state (of the plan), throughput and
an ETA, the latest failures with their errors, tokens and cost so far, and a
breakdown by batch or agent. ``--once`` prints one frame; piped output is
plain text (a new frame when something changed); Ctrl-C ends it quietly.

A journal that does not exist yet is waited for; one that is replaced
(written anew under the same name) is read anew. Each look folds only what
was appended since the previous one (:func:`spanjournal.ledger.follow`), so
watching a journal of millions of events costs little once it is read.
"""

from __future__ import annotations

import argparse
import glob
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TextIO

from spanjournal._schema import Completed
from spanjournal.cli._command import EXIT_OK, add_command, read_journals
from spanjournal.cli._output import plural, text_table
from spanjournal.cli.stats import RunStats, _price, compute, grouper
from spanjournal.ledger import ChunkState, Ledger, follow
from spanjournal.reader import JournalReadError

if TYPE_CHECKING:
    from spanjournal.cli._command import Subparsers

DESCRIPTION = """\
Watch a running fan-out live: chunks by state (done, failed, running,
unfinished, never dispatched, of the plan), throughput over the last minute
and an ETA, the latest failures with their errors, tokens and cost so far,
and a breakdown by batch or agent. Redrawn every --interval seconds when the
journal changed. A journal that does not exist yet is waited for, and one
that is replaced is read anew.

--once prints one frame and exits; output to a pipe is plain text (a frame
each time something changed); Ctrl-C stops."""

EPILOG = """\
examples:
  spanjournal watch runs/bench.jsonl
  spanjournal watch runs/ --group-by agent --price-per-1k-tokens 0.003
  spanjournal watch runs/bench.jsonl --once | head -20
"""

#: Seconds between looks at the journal.
DEFAULT_INTERVAL = 1.0
#: Throughput is measured over this window (seconds) before now.
RATE_WINDOW_SECONDS = 60.0
RECENT_FAILURES = 5
#: Failed chunks read back at one look (the newest), to find the latest failures.
NEW_FAILURES_READ = 20
MAX_GROUP_ROWS = 12
STATE_STYLES = {
    "done": "green",
    "failed": "red",
    "running": "blue",
    "unfinished": "yellow",
    "never dispatched": "bright_black",
}


def register(subparsers: Subparsers) -> None:
    """Add ``spanjournal watch``."""
    parser = add_command(
        subparsers,
        "watch",
        help="watch a running fan-out live in the terminal",
        description=DESCRIPTION,
        epilog=EPILOG,
        handler=run,
    )
    parser.add_argument(
        "journals", nargs="+", metavar="JOURNAL", help="journal files, directories of *.jsonl, or globs"
    )
    parser.add_argument("--once", action="store_true", help="print one frame and exit")
    parser.add_argument(
        "--interval", type=_interval, default=DEFAULT_INTERVAL, metavar="SECONDS", help="time between looks (default 1)"
    )
    parser.add_argument(
        "--group-by", default="batch", metavar="batch|agent|REGEX", help="breakdown by (default: batch)"
    )
    parser.add_argument("--price-per-1k-tokens", type=_price, metavar="X", help="price of 1000 tokens, for cost")


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


# -- one frame ----------------------------------------------------------------------------


@dataclass
class Failure:
    ts: str
    chunk_id: str
    error_type: str
    error: str
    sort_key: float = 0.0


@dataclass
class Frame:
    """What one redraw shows."""

    journals: list[str]
    #: Why there is nothing to show yet (a journal that does not exist yet...), else None.
    waiting: str | None = None
    stats: RunStats | None = None
    #: Done attempts per minute over the last minute, and over the whole run.
    rate_recent: float | None = None
    rate_overall: float | None = None
    eta_seconds: float | None = None
    failures: list[Failure] = field(default_factory=list)
    #: Wall-clock time of the frame and of the latest event, in the journal's offset.
    now: str = ""
    latest: str = ""


def make_frame(
    ledger: Ledger,
    journals: Sequence[str],
    *,
    group_by: str = "batch",
    price: float | None = None,
    now: datetime | None = None,
) -> Frame:
    """The frame of ``ledger`` at ``now`` (default: the current time), from the journal alone: ``--once``.

    Throughput is measured from the times of the done completions (over the
    last minute before ``now``, and over the run), and the latest failures are
    the latest failed completions: this reads every completion back, once.
    """
    stats = compute(ledger, grouper(group_by), group_by=group_by, price=price)
    done_times: list[float] = []
    failures: list[tuple[float, Any]] = []
    first = math.inf
    last = -math.inf
    offset: timedelta | None = None
    for c in ledger.completions():
        moment = _parse(c.ts)
        if moment is None:
            continue
        if offset is None:
            offset = moment.utcoffset()
        t = moment.timestamp()
        last = max(last, t)
        if c.success:
            if not c.reconciled:
                done_times.append(t)
                if c.duration_ms is not None:
                    first = min(first, t - c.duration_ms / 1000)
        else:
            failures.append((t, c))
    zone = timezone(offset or timedelta(0))
    now = now or datetime.now(zone)
    now_t = now.timestamp()
    frame = Frame(journals=list(journals), stats=stats, now=now.astimezone(zone).strftime("%H:%M:%S"))
    if last > -math.inf:
        frame.latest = datetime.fromtimestamp(last, zone).strftime("%H:%M:%S")
    window = RATE_WINDOW_SECONDS
    if first < math.inf:  # a run younger than the window: over its life so far
        window = min(window, max(now_t - first, 1.0))
    recent = sum(1 for t in done_times if now_t - window <= t <= now_t)
    frame.rate_recent = recent * 60.0 / window
    if done_times and first < math.inf and max(done_times) > first:
        frame.rate_overall = len(done_times) * 60.0 / (max(done_times) - first)
    _eta(frame)
    failures.sort(key=lambda tc: tc[0], reverse=True)
    frame.failures = [f for f in (_failure(c, zone) for _, c in failures[:RECENT_FAILURES]) if f is not None]
    return frame


class Watcher:
    """One live view: follows the journals and makes a frame at each look.

    The journals are followed with :func:`spanjournal.ledger.follow`, so a
    look folds only what was appended since the previous one (a journal
    replaced or truncated is read again from its start; one that does not
    exist yet is waited for). A frame then costs little more than the fold's
    own aggregates: throughput is measured from the done count of the looks
    of the last minute, and the latest failures are the chunks that turned
    failed since the previous look, each read back once.
    """

    def __init__(
        self,
        journals: Sequence[str],
        *,
        group_by: str = "batch",
        price: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.journals = list(journals)
        self.group_by = group_by
        self.group_of = grouper(group_by)
        self.price = price
        self.clock = clock
        self.follower = follow(*journals)
        self.zone: timezone | None = None
        self._samples: deque[tuple[float, int]] = deque()
        self._failed: set[str] | None = None
        self._failures: list[Failure] = []

    def frame(self) -> Frame:
        missing = [j for j in self.journals if not glob.has_magic(j) and not os.path.lexists(j)]
        try:
            ledger = self.follower.poll()
        except JournalReadError as exc:
            return Frame(journals=self.journals, waiting=str(exc), now=self._now())
        if missing and not len(ledger):
            return Frame(journals=self.journals, waiting=f"{missing[0]}: no such journal (yet)", now=self._now())
        if self.zone is None:
            self.zone = _zone_of(ledger)
        stats = compute(ledger, self.group_of, group_by=self.group_by, price=self.price)
        frame = Frame(journals=self.journals, stats=stats, now=self._now())
        t, done = self.clock(), stats.totals.done
        samples = self._samples
        samples.append((t, done))
        while len(samples) > 2 and samples[1][0] <= t - RATE_WINDOW_SECONDS:
            samples.popleft()
        base_t, base_done = samples[0]
        if t - base_t >= 1.0:
            frame.rate_recent = max(0, done - base_done) * 60.0 / (t - base_t)
        _eta(frame)
        self._update_failures(ledger)
        frame.failures = list(self._failures)
        return frame

    def _update_failures(self, ledger: Ledger) -> None:
        failed = [c for c, s in ledger.not_done_states().items() if s is ChunkState.FAILED]
        if self._failed is None:
            fresh = failed[-NEW_FAILURES_READ * 2 :]
        else:
            seen = self._failed
            fresh = [c for c in failed if c not in seen][-NEW_FAILURES_READ:]
        self._failed = set(failed)
        news = [f for f in (_failure(ledger[c].completion, self.zone) for c in fresh) if f is not None]
        news.sort(key=lambda f: f.sort_key, reverse=True)
        known = {f.chunk_id for f in news}
        self._failures = [*news, *(f for f in self._failures if f.chunk_id not in known)][:RECENT_FAILURES]

    def _now(self) -> str:
        return datetime.now(self.zone).strftime("%H:%M:%S")


def _zone_of(ledger: Ledger) -> timezone | None:
    """The time zone of the journal's ``ts`` (its first chunk's)."""
    for chunk_id in ledger.chunk_ids()[:1]:
        ts = ledger[chunk_id].last_ts
        moment = _parse(ts) if ts else None
        if moment is not None and moment.utcoffset() is not None:
            return timezone(moment.utcoffset() or timedelta(0))
    return None


def _failure(c: Completed | None, zone: timezone | None) -> Failure | None:
    if c is None or c.success:
        return None
    moment = _parse(c.ts)
    shown = moment.astimezone(zone).strftime("%H:%M:%S") if moment is not None else ""
    return Failure(
        ts=shown,
        chunk_id=c.chunk_id,
        error_type=c.error_type or "",
        error=" ".join((c.error or "").split()),
        sort_key=moment.timestamp() if moment is not None else 0.0,
    )


def _eta(frame: Frame) -> None:
    assert frame.stats is not None
    remaining = frame.stats.totals.chunks - frame.stats.totals.done
    if remaining and frame.rate_recent:
        frame.eta_seconds = remaining / frame.rate_recent * 60.0


def _parse(ts: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(ts)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _money(value: float) -> str:
    return f"{value:,.2f}" if value >= 1 else f"{value:.4f}"


def state_counts(frame: Frame) -> list[tuple[str, int]]:
    """(state words, count), in the order the view shows them."""
    assert frame.stats is not None
    t = frame.stats.totals
    return [
        ("done", t.done),
        ("failed", t.failed),
        ("running", t.running),
        ("unfinished", t.unfinished),
        ("never dispatched", t.never_dispatched),
    ]


def summary_lines(frame: Frame) -> list[str]:
    """The lines above the tables: progress, throughput, ETA, tokens, cost."""
    assert frame.stats is not None
    s = frame.stats
    t = s.totals
    share = f" ({t.done / t.chunks:.0%})" if t.chunks else ""
    lines = [f"{t.done:,} of {plural(t.chunks, 'chunk')} done{share}"]
    rate = f"throughput {frame.rate_recent or 0:,.1f}/min over the last minute"
    if frame.rate_overall is not None:
        rate += f", {frame.rate_overall:,.1f}/min over the run"
    if frame.eta_seconds is not None:
        rate += f"; ETA {_duration(frame.eta_seconds)}"
    elif t.chunks - t.done and not t.running:
        rate += "; nothing running"
    lines.append(rate)
    money = f"tokens {s.tokens.total:,}"
    if s.cost is not None:
        money += f", cost {_money(s.cost.total)} (at {s.cost.price_per_1k_tokens:g} per 1k tokens)"
    lines.append(money)
    return lines


def group_rows(frame: Frame) -> tuple[list[str], list[list[str]]]:
    assert frame.stats is not None
    s = frame.stats
    headers = [s.group_by, "chunks", "done", "failed", "running", "unfinished", "never", "tokens"]
    if s.cost is not None:
        headers.append("cost")
    rows = []
    for g in s.groups[:MAX_GROUP_ROWS]:
        row = [g.group, *(f"{n:,}" for n in (g.chunks, g.done, g.failed, g.running, g.unfinished))]
        row += [f"{g.never_dispatched:,}", f"{g.tokens:,}"]
        if s.cost is not None:
            row.append(_money(g.cost or 0.0))
        rows.append(row)
    if len(s.groups) > MAX_GROUP_ROWS:
        rows.append([f"... and {len(s.groups) - MAX_GROUP_ROWS} more", *([""] * (len(headers) - 1))])
    return headers, rows


def header_line(frame: Frame) -> str:
    latest = f", latest event {frame.latest}" if frame.latest else ""
    return f"spanjournal watch {' '.join(frame.journals)}  ({frame.now}{latest})"


def render_text(frame: Frame, width: int = 100) -> str:
    """The frame as plain text: for pipes, logs and ``--once`` off a terminal."""
    out = [header_line(frame)]
    if frame.waiting is not None:
        out.append(f"waiting: {frame.waiting}")
        return "\n".join(out) + "\n"
    out.append("  ".join(f"{words} {n:,}" for words, n in state_counts(frame)))
    out.extend(summary_lines(frame))
    if frame.failures:
        out.append("")
        out.append("latest failures")
        rows = [[f.ts, f.chunk_id, f.error_type, _cut(f.error, max(20, width - 50))] for f in frame.failures]
        out.append(text_table(["", "", "", ""], rows).rstrip("\n"))
    headers, rows = group_rows(frame)
    out.append("")
    out.append(f"by {frame.stats.group_by if frame.stats else ''}")
    out.append(text_table(headers, rows, right=range(1, len(headers))).rstrip("\n"))
    return "\n".join(out) + "\n"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render_rich(frame: Frame) -> Any:
    """The frame as a ``rich`` renderable, for a terminal."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = [Text(header_line(frame), style="bold")]
    if frame.waiting is not None:
        parts.append(Text(f"waiting: {frame.waiting}", style="yellow"))
        return Group(*parts)
    assert frame.stats is not None
    t = frame.stats.totals
    counts = Text()
    for words, n in state_counts(frame):
        counts.append(f"{words} ", style=STATE_STYLES[words])
        counts.append(f"{n:,}   ", style="bold " + STATE_STYLES[words])
    parts.append(counts)
    progress, *rest = summary_lines(frame)
    bar = Table.grid(padding=(0, 2))
    bar.add_row(ProgressBar(total=max(t.chunks, 1), completed=t.done, width=50), Text(progress))
    parts.append(bar)
    parts.extend(Text(line) for line in rest)
    if frame.failures:
        table = Table(title="latest failures", title_justify="left", show_header=False, box=None, padding=(0, 1))
        for column in ("time", "chunk", "type", "error"):
            table.add_column(
                column, no_wrap=column != "error", overflow="ellipsis", style="red" if column == "type" else None
            )
        for f in frame.failures:
            table.add_row(f.ts, f.chunk_id, f.error_type, Text(f.error, overflow="ellipsis", no_wrap=True))
        parts += [Text(""), table]
    headers, rows = group_rows(frame)
    groups = Table(title=f"by {frame.stats.group_by}", title_justify="left", padding=(0, 1))
    for i, header in enumerate(headers):
        groups.add_column(header, justify="right" if i else "left", style=_column_style(header))
    for row in rows:
        groups.add_row(*row)
    parts += [Text(""), groups]
    return Group(*parts)


def _column_style(header: str) -> str | None:
    return {"done": "green", "failed": "red", "running": "blue", "unfinished": "yellow"}.get(header)


# -- the command --------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    grouper(args.group_by)  # a bad --group-by is a usage error (CliError) now, not at the first frame
    terminal = _isatty(sys.stdout)
    try:
        if args.once:
            read = read_journals(args.journals)
            frame = make_frame(read.ledger, args.journals, group_by=args.group_by, price=args.price_per_1k_tokens)
            _print_once(frame, terminal)
            return EXIT_OK
        watcher = Watcher(args.journals, group_by=args.group_by, price=args.price_per_1k_tokens)
        if terminal:
            _live(watcher.frame, args.interval)
        else:
            _stream(watcher.frame, args.interval, sys.stdout)
    except KeyboardInterrupt:
        pass  # the way to stop it
    return EXIT_OK


def _print_once(frame: Frame, terminal: bool) -> None:
    if terminal:
        from rich.console import Console

        Console().print(render_rich(frame))
    else:
        sys.stdout.write(render_text(frame))


def _live(make: Callable[[], Frame], interval: float) -> None:
    from rich.live import Live

    with Live(render_rich(make()), auto_refresh=False, redirect_stderr=False) as live:
        while True:
            time.sleep(interval)
            live.update(render_rich(make()), refresh=True)


def _stream(make: Callable[[], Frame], interval: float, out: TextIO) -> None:
    """Plain frames, one each time the view changed (the clock alone does not count)."""
    shown = None
    while True:
        frame = make()
        text = render_text(frame)
        body = text.split("\n", 1)[1]
        if body != shown:
            out.write(("\n" if shown is not None else "") + text)
            out.flush()
            shown = body
        time.sleep(interval)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


__all__ = ["Frame", "Watcher", "make_frame", "render_text"]
