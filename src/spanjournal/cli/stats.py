"""``spanjournal stats``: how a run went, by group.

Totals by chunk state, success rate by group (the ``batch`` field or the
first group of a regex over the chunk id), tokens and cost, duration
percentiles, failures by ``error_type`` and done chunks whose output file is
missing. A table on a terminal (``rich``), plain columns in a pipe, or
``--json``.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import math
import operator
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import msgspec

from spanjournal.cli import hold_until_exit
from spanjournal.cli._command import EXIT_OK, CliError, add_command, add_read_options, read_journals
from spanjournal.cli._output import JSON_HOLE, MAX_TABLE_ROWS, bounded, escape_id, text_table, write_json
from spanjournal.fold import SUMMARY_FIELDS, ChunkRecord, OutputsByDirectory, add_outputs, dispatch_field
from spanjournal.ledger import ChunkState, Ledger, output_location

if TYPE_CHECKING:
    from spanjournal.cli._command import Subparsers

DESCRIPTION = """\
Summarise a run: chunks by state (dispatched, attempts, done, failed,
unfinished, running, never dispatched, retried), success rate by group,
tokens (total, per done chunk, per group), cost when a price is given,
duration p50/p95/max over completed attempts, failed attempts by error_type,
and done chunks whose output file is missing (relative to --root, default:
the first journal's directory).

--group-by batch (default) or agent groups by that dispatch field; anything
else is a regular expression over the chunk id whose first group (or whole
match) names the group. "Tokens per done chunk" is all tokens spent, failed
attempts included, divided by the chunks done."""

EPILOG = """\
examples:
  spanjournal stats runs/bench.jsonl
  spanjournal stats runs/ --group-by '^(batch-\\d+)' --price-per-1k-tokens 0.003
  spanjournal stats runs/bench.jsonl --json | jq .groups
"""

GROUP_FIELDS = ("batch", "agent")
MISSING_SHOWN = 10
#: A group's chunks by state, one column each, in the order of GroupStats' fields.
_STATES = (ChunkState.DONE, ChunkState.FAILED, ChunkState.UNFINISHED, ChunkState.RUNNING, ChunkState.NEVER_DISPATCHED)
_COLUMN = {state: i for i, state in enumerate(_STATES)}
_DIGITS = re.compile(r"(\d+)")


class Totals(msgspec.Struct, kw_only=True):
    chunks: int = 0
    dispatched: int = 0
    attempts: int = 0
    retried: int = 0
    done: int = 0
    failed: int = 0
    unfinished: int = 0
    running: int = 0
    never_dispatched: int = 0
    success_rate: float | None = None


class GroupStats(msgspec.Struct, kw_only=True):
    group: str
    chunks: int = 0
    done: int = 0
    failed: int = 0
    unfinished: int = 0
    running: int = 0
    never_dispatched: int = 0
    success_rate: float | None = None
    tokens: int = 0
    cost: float | None = None


class Tokens(msgspec.Struct, kw_only=True):
    total: int = 0
    per_done_chunk: float | None = None


class Cost(msgspec.Struct, kw_only=True):
    price_per_1k_tokens: float
    total: float
    per_done_chunk: float | None


class Durations(msgspec.Struct, kw_only=True):
    count: int = 0
    p50: float | None = None
    p95: float | None = None
    max: float | None = None


class MissingOutput(msgspec.Struct, gc=False):
    chunk_id: str
    output_file: str
    #: Where it was looked for.
    path: str


class Journals(msgspec.Struct, kw_only=True):
    files: list[str]
    events: int
    torn_lines: int
    bad_lines: int


class RunStats(msgspec.Struct, kw_only=True):
    """Everything ``stats`` reports; ``--json`` prints it as is."""

    journals: Journals
    totals: Totals
    group_by: str
    groups: list[GroupStats]
    tokens: Tokens
    cost: Cost | None
    duration_ms: Durations
    failures_by_error_type: dict[str, int]
    missing_outputs: list[MissingOutput]


def register(subparsers: Subparsers) -> None:
    """Add ``spanjournal stats``."""
    parser = add_command(
        subparsers,
        "stats",
        help="summarise a run: success by group, tokens, cost, latency, failures",
        description=DESCRIPTION,
        epilog=EPILOG,
        handler=run,
    )
    parser.add_argument(
        "journals", nargs="+", metavar="JOURNAL", help="journal files, directories of *.jsonl, or globs"
    )
    parser.add_argument(
        "--group-by", default="batch", metavar="batch|agent|REGEX", help="how to group chunks (default: batch)"
    )
    parser.add_argument("--price-per-1k-tokens", type=_price, metavar="X", help="price of 1000 tokens, for cost")
    parser.add_argument("--root", metavar="DIR", help="directory output paths are relative to")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "--all-rows", action="store_true", help="print every row of every table (default: at most 50 on a terminal)"
    )
    add_read_options(parser)


def _price(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number: {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    group_of = grouper(args.group_by)
    read = read_journals(args.journals, checkpoint=not args.no_checkpoint, jobs=args.jobs)
    hold_until_exit(read.ledger)  # nothing but stdout and stderr written, no code of the user's run
    root = Path(args.root) if args.root is not None else (read.files[0].parent if read.files else Path("."))
    gc_was_enabled = gc.isenabled()
    gc.disable()  # the report makes no reference cycles: no collection need walk the ledger's many objects
    try:
        result, missing = _tally(
            read.ledger, group_of, group_by=args.group_by, price=args.price_per_1k_tokens, root=root
        )
        if args.json:
            # the rows printed straight from the missing files' lists, a few at a time, no struct made for each
            write_json(sys.stdout, msgspec.structs.replace(result, missing_outputs=JSON_HOLE), hole=missing.json())
            return EXIT_OK
        result.missing_outputs = missing.first(MISSING_SHOWN)  # the tables show no more
    finally:
        if gc_was_enabled:
            gc.enable()
    if _isatty(sys.stdout):
        render_rich(result, sys.stdout, limit=None if args.all_rows else MAX_TABLE_ROWS, missing=missing.count())
    else:
        sys.stdout.write(render_text(result, missing=missing.count()))
    return EXIT_OK


class Grouper:
    """The group of a chunk: a dispatch field (``field``), or the first group of a regex over the chunk id."""

    def __init__(self, field: str | None = None, pattern: re.Pattern[str] | None = None) -> None:
        self.field = field
        self.pattern = pattern

    def label(self, value: str | None) -> str:
        """The group of a dispatch field's value."""
        return value or f"(no {self.field})"

    def __call__(self, chunk_id: str, rec: ChunkRecord | None) -> str:
        if self.field is not None:
            return self.label(dispatch_field(rec, self.field) if rec is not None else None)
        assert self.pattern is not None
        m = self.pattern.search(chunk_id)
        if m is None:
            return "(no match)"
        return (m.group(1) if self.pattern.groups else m.group(0)) or "(empty)"


def grouper(spec: str) -> Grouper:
    """The group of a chunk: a dispatch field, or the first group of a regex over the chunk id."""
    if spec in GROUP_FIELDS:
        return Grouper(field=spec)
    try:
        return Grouper(pattern=re.compile(spec))
    except re.error as exc:
        raise CliError(f"--group-by {spec}: not a field ({', '.join(GROUP_FIELDS)}) nor a valid regex: {exc}") from None


def compute(
    ledger: Ledger,
    group_of: Grouper,
    *,
    group_by: str = "batch",
    price: float | None = None,
    root: Path | None = None,
) -> RunStats:
    """The report of a ledger, from the aggregates its fold keeps (no event is read again).

    Done chunks a checkpoint left unread are counted from its totals (when
    grouping by a field it keeps totals of), not loaded.

    Output files are looked for where :meth:`~spanjournal.ledger.Chunk.output_path`
    says, relative paths without a recorded ``cwd`` under ``root`` (None: not checked).
    """
    result, missing = _tally(ledger, group_of, group_by=group_by, price=price, root=root)
    result.missing_outputs = missing.rows()
    return result


def _tally(
    ledger: Ledger,
    group_of: Grouper,
    *,
    group_by: str = "batch",
    price: float | None = None,
    root: Path | None = None,
) -> tuple[RunStats, MissingFiles]:
    """:func:`compute`, its ``missing_outputs`` left empty and given apart, still by directory."""
    fold = ledger.fold
    not_done = ledger.not_done_states()
    states: dict[str, list[int]] = {}  # group -> its chunks by state (_STATES)
    tokens_by_group: dict[str, int] = {}
    attempts = dispatched = retried = 0
    missing = MissingFiles()
    #: (cwd or "", directory prefix of the output files, their names, their chunk ids)
    directories: list[tuple[str, str, list[str], list[str]]] = []
    outputs = OutputFiles() if root is not None else None
    root_dir = os.fspath(root) if root is not None else None
    done = _COLUMN[ChunkState.DONE]
    summary = fold.done_summary() if group_of.field in SUMMARY_FIELDS else None
    records = fold.loaded() if summary is not None else itertools.chain(fold.chunks.items(), fold.orphans.items())
    if summary is not None:
        assert group_of.field is not None
        for value, (n, tokens, tried, dispatched_n, retried_n) in summary.by_field[group_of.field].items():
            name = group_of.label(value)
            counts = states.get(name)
            if counts is None:
                counts = states[name] = [0] * len(_STATES)
                tokens_by_group[name] = 0
            counts[done] += n
            tokens_by_group[name] += tokens
            attempts += tried
            dispatched += dispatched_n
            retried += retried_n
        if outputs is not None:
            directories.extend(summary.outputs)
    # the done chunks' output files, grouped by directory as a checkpoint's summary groups them (add_outputs)
    files: list[tuple[str | None, str, str]] = []
    field = group_of.field
    no_value = group_of.label(None)
    for cid, rec in records:
        d = rec.dispatch
        holder = d if d is not None else rec  # what dispatch_field(rec, ...) reads
        name = (getattr(holder, field) or no_value) if field is not None else group_of(cid, rec)
        counts = states.get(name)
        if counts is None:
            counts = states[name] = [0] * len(_STATES)
            tokens_by_group[name] = 0
        tokens_by_group[name] += rec.tokens
        n = rec.attempts
        attempts += n
        dispatched += n > 0
        retried += n > 1
        if rec.done:
            counts[done] += 1
            output_file = rec.output_file
            if output_file and outputs is not None:
                files.append((holder.cwd, output_file, cid))
        else:
            counts[_COLUMN[not_done[cid]]] += 1
    by_directory: OutputsByDirectory = {}
    add_outputs(by_directory, files)
    directories.extend((cwd, prefix, names, ids) for (cwd, prefix), (names, ids) in by_directory.items())
    if outputs is not None:
        for cwd, prefix, names, ids in directories:
            # where ``prefix + name`` is (output_location), worked out once for the directory
            probe = output_location(prefix + "x", cwd or None, root_dir) or ""
            full = probe[: len(probe) - 1]
            listing = outputs.listing(_directory_of(probe))
            # a directory that cannot be listed holds none of them; one that holds none needs no look at each name
            if listing is not None and not listing.isdisjoint(names):
                absent = [name not in listing for name in names]
                names = list(itertools.compress(names, absent))
                ids = list(itertools.compress(ids, absent))
            missing.add(prefix, full, names, ids)
    for cid, state in not_done.items():
        if state is ChunkState.NEVER_DISPATCHED:
            name = group_of(cid, None)
            counts = states.get(name)
            if counts is None:
                counts = states[name] = [0] * len(_STATES)
                tokens_by_group[name] = 0
            counts[_COLUMN[state]] += 1
    groups = {name: _group_stats(name, counts, tokens_by_group[name]) for name, counts in states.items()}
    by_state = [sum(column) for column in zip(*states.values())] if states else [0] * len(_STATES)
    totals = Totals(attempts=attempts, dispatched=dispatched, retried=retried, chunks=sum(by_state))
    totals.done, totals.failed, totals.unfinished, totals.running, totals.never_dispatched = by_state
    tokens_total = sum(tokens_by_group.values())
    totals.success_rate = _rate(totals.done, totals.chunks)
    ordered = [groups[k] for k in sorted(groups, key=_natural_key)]
    for group in ordered:
        group.success_rate = _rate(group.done, group.chunks)
        if price is not None:
            group.cost = _cost(group.tokens, price)
    per_done = tokens_total / totals.done if totals.done else None
    cost = None
    if price is not None:
        total_cost = _cost(tokens_total, price)
        cost = Cost(
            price_per_1k_tokens=price,
            total=total_cost,
            per_done_chunk=total_cost / totals.done if totals.done else None,
        )
    failures = sorted(fold.error_types.items(), key=lambda kv: -kv[1])
    stats = ledger.stats
    result = RunStats(
        journals=Journals(
            files=list(stats.files), events=stats.events, torn_lines=stats.torn_tails, bad_lines=stats.bad_lines
        ),
        totals=totals,
        group_by=group_by,
        groups=ordered,
        tokens=Tokens(total=tokens_total, per_done_chunk=per_done),
        cost=cost,
        duration_ms=percentiles(fold.durations),
        failures_by_error_type=dict(failures),
        missing_outputs=[],
    )
    return result, missing


class OutputFiles:
    """Which output files exist: each directory is listed once, not every file stat'ed."""

    def __init__(self) -> None:
        self._listings: dict[str, frozenset[str] | None] = {}

    def listing(self, directory: str) -> frozenset[str] | None:
        """The names in ``directory`` (None if it cannot be listed), listed once."""
        try:
            return self._listings[directory]
        except KeyError:
            try:
                names: frozenset[str] | None = frozenset(os.listdir(directory))
            except OSError:
                names = None
            self._listings[directory] = names
            return names


class MissingFiles:
    """Done chunks whose output file is missing, kept by directory until they are printed.

    They are listed by path, then chunk id. In one directory the paths share
    their beginning, so its rows are put in order by file name alone; and when
    the directories' rows do not interleave (no path of one falls between two
    of another) the list is the directories' rows one after the other: no
    path is sorted, and ``--json`` prints the rows straight from the lists
    (:meth:`json`) without a struct for each.
    """

    def __init__(self) -> None:
        #: (output file up to its name, the path looked at up to the name) -> names, chunk ids
        self._by_directory: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
        self._in_order: list[tuple[str, str, list[str], list[str]]] | None = None

    def add(self, prefix: str, location: str, names: list[str], chunk_ids: list[str]) -> None:
        """The files ``prefix + name`` missing at ``location + name``, of ``chunk_ids`` (one per name)."""
        if not names:
            return
        self._in_order = None
        held = self._by_directory.get((prefix, location))
        if held is None:
            self._by_directory[prefix, location] = (names, chunk_ids)
        else:  # the same directory again (done chunks a checkpoint kept, and the ones read after it)
            self._by_directory[prefix, location] = (held[0] + names, held[1] + chunk_ids)

    def rows(self) -> list[MissingOutput]:
        """Every missing file, by path, chunk id, then output file as the journal names it."""
        ordered = self._ordered()
        if ordered is not None:
            return list(itertools.chain.from_iterable(_rows(*d) for d in ordered))
        rows = list(itertools.chain.from_iterable(_rows(*d) for d in self._directories()))
        # the output file last: one path may be two chunks' output files named from two working
        # directories, and the order must not follow the order the directories were added in
        rows.sort(key=operator.attrgetter("output_file"))
        rows.sort(key=operator.attrgetter("chunk_id"))
        rows.sort(key=operator.attrgetter("path"))
        return rows

    def count(self) -> int:
        return sum(len(names) for names, _ in self._by_directory.values())

    def first(self, n: int) -> list[MissingOutput]:
        """The first ``n`` of :meth:`rows`: only those are made when the directories' rows do not interleave."""
        ordered = self._ordered()
        if ordered is None:
            return self.rows()[:n]
        out: list[MissingOutput] = []
        for prefix, location, names, chunk_ids in ordered:
            if len(out) >= n:
                break
            left = n - len(out)
            out.extend(_rows(prefix, location, names[:left], chunk_ids[:left]))
        return out

    def json(self) -> Iterator[str]:
        """:meth:`rows` as JSON text, in pieces: together, the same as ``msgspec.json.encode(self.rows())``."""
        ordered = self._ordered()
        if ordered is None:
            yield msgspec.json.encode(self.rows()).decode()
            return
        if not ordered:
            yield "[]"
            return
        opening = _ROWS_OPEN
        for prefix, location, names, chunk_ids in ordered:
            if not (_plain([prefix, location]) and _plain(names) and _plain(chunk_ids)):
                # some character needs escaping: msgspec writes these rows
                encoded = msgspec.json.encode(_rows(prefix, location, names, chunk_ids)).decode()
                yield opening + encoded[len(_ROWS_OPEN) : -len(_ROWS_CLOSE)]
                opening = _ROW_SEPARATOR
                continue
            output_file, path = '","output_file":"' + prefix, '","path":"' + location
            for start in range(0, len(names), _ROWS_AT_ONCE):
                some_names = names[start : start + _ROWS_AT_ONCE]
                n = len(some_names)
                # each row: what comes before its chunk id (the end of the row before), the id, ..., its name
                rows = [_ROW_SEPARATOR] * (6 * n)
                rows[0] = opening
                rows[1::6] = chunk_ids[start : start + n]
                rows[2::6] = [output_file] * n
                rows[3::6] = some_names
                rows[4::6] = [path] * n
                rows[5::6] = some_names
                yield "".join(rows)
                opening = _ROW_SEPARATOR
        yield _ROWS_CLOSE

    def _directories(self) -> list[tuple[str, str, list[str], list[str]]]:
        """Each directory's rows, in (name, chunk id) order: by path then chunk id, as its paths share a beginning."""
        if self._in_order is None:
            self._in_order = []
            for (prefix, location), (names, chunk_ids) in self._by_directory.items():
                if not _increasing(names):
                    order = sorted(range(len(chunk_ids)), key=chunk_ids.__getitem__)
                    order.sort(key=names.__getitem__)
                    names = [names[i] for i in order]
                    chunk_ids = [chunk_ids[i] for i in order]
                self._in_order.append((prefix, location, names, chunk_ids))
        return self._in_order

    def _ordered(self) -> list[tuple[str, str, list[str], list[str]]] | None:
        """The directories in the order of their rows, or None when their rows interleave."""
        ordered = sorted(self._directories(), key=lambda d: d[1] + d[2][0])
        for (_, before, names_before, _), (_, after, names_after, _) in itertools.pairwise(ordered):
            if not before + names_before[-1] < after + names_after[0]:
                return None
        return ordered


#: The JSON of MissingOutput rows: what opens the list and its first row, comes between two rows, closes both.
_ROWS_OPEN = '[{"chunk_id":"'
_ROW_SEPARATOR = '"},{"chunk_id":"'
_ROWS_CLOSE = '"}]'
#: Rows made into JSON text at a time.
_ROWS_AT_ONCE = 1 << 16


def _rows(prefix: str, location: str, names: list[str], chunk_ids: list[str]) -> list[MissingOutput]:
    return list(map(MissingOutput, chunk_ids, [prefix + n for n in names], [location + n for n in names]))


def _increasing(names: list[str]) -> bool:
    """Whether each of ``names`` sorts strictly after the one before."""
    return all(map(operator.lt, names, itertools.islice(names, 1, None)))


def _plain(texts: list[str]) -> bool:
    """Whether JSON writes each of ``texts`` as itself between quotes: every escape has a backslash, and so has none."""
    try:
        return b"\\" not in msgspec.json.encode(texts)
    except UnicodeEncodeError:  # a lone surrogate: msgspec says so when it writes the rows
        return False


def _directory_of(path: str) -> str:
    directory = path.rpartition("/")[0]
    return directory or ("/" if path.startswith("/") else ".")


def _group_stats(name: str, counts: list[int], tokens: int) -> GroupStats:
    done, failed, unfinished, running, never_dispatched = counts
    return GroupStats(
        group=name,
        chunks=sum(counts),
        done=done,
        failed=failed,
        unfinished=unfinished,
        running=running,
        never_dispatched=never_dispatched,
        tokens=tokens,
    )


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _cost(tokens: int, price: float) -> float:
    return tokens / 1000 * price


def _natural_key(text: str) -> tuple[bool, list[tuple[int, int | str]]]:
    """``batch-2`` before ``batch-10``; placeholders such as ``(no batch)`` last."""
    parts = [(0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(text) if part]
    return text.startswith("("), parts


def percentiles(values: Sequence[float]) -> Durations:
    """p50, p95 (nearest rank) and max of ``values``."""
    if not values:
        return Durations()
    ordered = sorted(values)
    n = len(ordered)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * n) - 1)]

    return Durations(count=n, p50=rank(0.50), p95=rank(0.95), max=ordered[-1])


# -- rendering ------------------------------------------------------------

Section = tuple[str, Sequence[str], list[Sequence[object]], Sequence[int]]


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


def _seconds(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:,.0f} ms" if ms < 1000 else f"{ms / 1000:,.2f} s"


def _money(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if value >= 1 else f"{value:.4f}"


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def sections(result: RunStats, missing: int | None = None) -> list[Section]:
    """The report as titled tables: (title, headers, rows, right-aligned columns).

    ``missing`` counts the missing output files when ``result`` lists only the first ones.
    """
    t = result.totals
    run_rows: list[Sequence[object]] = [
        ("chunks", _number(t.chunks)),
        ("dispatched", _number(t.dispatched)),
        ("attempts", _number(t.attempts)),
        ("retried", _number(t.retried)),
        ("done", _number(t.done)),
        ("failed", _number(t.failed)),
        ("unfinished", _number(t.unfinished)),
    ]
    if t.running:
        run_rows.append(("running", _number(t.running)))
    if t.never_dispatched:
        run_rows.append(("never dispatched", _number(t.never_dispatched)))
    run_rows += [
        ("success rate", _pct(t.success_rate)),
        ("tokens", _number(result.tokens.total)),
        ("tokens per done chunk", _number(result.tokens.per_done_chunk)),
    ]
    if result.cost is not None:
        run_rows += [
            (f"cost (at {result.cost.price_per_1k_tokens:g} per 1k tokens)", _money(result.cost.total)),
            ("cost per done chunk", _money(result.cost.per_done_chunk)),
        ]
    d = result.duration_ms
    run_rows += [
        (
            f"duration p50 / p95 / max ({_count(d.count, 'attempt')})",
            f"{_seconds(d.p50)} / {_seconds(d.p95)} / {_seconds(d.max)}",
        ),
    ]
    j = result.journals
    read_note = f"{_count(len(j.files), 'journal')}, {_count(j.events, 'event')}"
    if j.torn_lines or j.bad_lines:
        read_note += f", {_count(j.torn_lines + j.bad_lines, 'line')} skipped"
    out: list[Section] = [(f"Run ({read_note})", ("", ""), run_rows, (1,))]

    headers = [result.group_by, "chunks", "done", "failed", "unfinished"]
    if t.running:
        headers.append("running")
    if t.never_dispatched:
        headers.append("never dispatched")
    headers += ["success", "tokens"]
    if result.cost is not None:
        headers.append("cost")
    group_rows: list[Sequence[object]] = []
    for g in result.groups:
        row: list[object] = [g.group, _number(g.chunks), _number(g.done), _number(g.failed), _number(g.unfinished)]
        if t.running:
            row.append(_number(g.running))
        if t.never_dispatched:
            row.append(_number(g.never_dispatched))
        row += [_pct(g.success_rate), _number(g.tokens)]
        if result.cost is not None:
            row.append(_money(g.cost))
        group_rows.append(row)
    out.append((f"By {result.group_by}", headers, group_rows, range(1, len(headers))))

    if result.failures_by_error_type:
        rows: list[Sequence[object]] = [(k, _number(v)) for k, v in result.failures_by_error_type.items()]
        out.append(("Failed attempts by error_type", ("error_type", "attempts"), rows, (1,)))
    if result.missing_outputs:
        shown: list[Sequence[object]] = [
            (escape_id(m.chunk_id), m.path) for m in result.missing_outputs[:MISSING_SHOWN]
        ]
        total = len(result.missing_outputs) if missing is None else missing
        more = total - MISSING_SHOWN
        if more > 0:
            shown.append((f"... {more:,} more row{'s' if more != 1 else ''} not shown", ""))
        title = f"Done chunks whose output file is missing ({total:,})"
        out.append((title, ("chunk", "looked for at"), shown, ()))
    return out


def render_text(result: RunStats, *, missing: int | None = None) -> str:
    """Plain aligned columns: for pipes and logs."""
    parts = []
    for title, headers, rows, right in sections(result, missing):
        parts.append(f"{title}\n" + text_table(headers, rows, right=right))
    return "\n".join(parts)


def render_rich(
    result: RunStats, stream: TextIO, *, limit: int | None = MAX_TABLE_ROWS, missing: int | None = None
) -> None:
    """Tables for a terminal, each cut to ``limit`` rows (with a row saying how many more)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=stream)
    for title, headers, rows, right in sections(result, missing):
        console.print(Text(title, style="bold"))
        shown, left_out = bounded(rows, limit)
        caption = f"{left_out:,} more row{'s' if left_out != 1 else ''} not shown (--all-rows)" if left_out else None
        table = Table(show_header=any(headers), caption=caption)
        for i, header in enumerate(headers):
            table.add_column(Text(header), justify="right" if i in right else "left")
        for row in shown:
            table.add_row(*(Text(str(c)) for c in row))
        console.print(table)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False
