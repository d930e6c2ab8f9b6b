"""Benchmark ``spanjournal export --new --dry-run`` after a journal grew, against a full ``export --dry-run``.

    python benchmarks/bench_export_new.py            # bench_pending's 1,000,000-event journal
    python benchmarks/bench_export_new.py --quick    # its 100,000-event journal
    python benchmarks/bench_export_new.py JOURNAL --repeat 2

The synthetic journals are written to ``bench-data/`` when missing, as
``bench_pending.py`` writes them.

On a copy of JOURNAL (the journal itself is never written to):

1. every span is exported once, through the library, to an exporter that
   accepts every batch and keeps nothing, with the record of what was sent
   saved as ``export --new`` keeps it (setup, not timed);
2. 1,000 events are appended: completions of 100 attempts that were sent
   unfinished (their outcome changes, so they must be sent again) and 450
   new attempts dispatched and completed;
3. in one run, each the fastest of ``--repeat`` runs, stdout to a file
   (seconds, peak memory ``ru_maxrss``, lines printed), to the same endpoint:
   ``export COPY --dry-run``; ``export COPY --dry-run --new``, which starts
   at the record's mark; the same with ``SPANJOURNAL_NO_CHECKPOINT=1``, which
   reads the whole journal and leaves out what the record's hashes hold;
4. 1,000 more events, among them 100 dispatches never completed (to tell
   whether their chunk is done, ``--new`` then reads the journal's fold,
   cold the first time: no checkpoint of the copy exists yet), and
   ``export COPY --dry-run --new`` twice: cold, then with the checkpoint.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from opentelemetry.sdk.trace import ReadableSpan  # noqa: E402
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult  # noqa: E402
from synthetic import journal_for  # noqa: E402

from spanjournal._schema import Completed, Dispatched, encode  # noqa: E402
from spanjournal.export import export_journal  # noqa: E402
from spanjournal.exported import SentRecord  # noqa: E402

ENDPOINT = "http://127.0.0.1:4317"
CHANGED = 100
NEW = 450
TS = "2026-05-28T09:00:00.000000+08:00"


class Accepting(SpanExporter):
    """Accepts every batch; keeps the first ``CHANGED`` unfinished spans' ids and chunk."""

    def __init__(self) -> None:
        self.unfinished: list[tuple[str, str, str]] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for s in spans:
            attrs = s.attributes or {}
            if len(self.unfinished) < CHANGED and attrs.get("spanjournal.unfinished") and s.context is not None:
                chunk = str(attrs["spanjournal.chunk_id"])
                self.unfinished.append((f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}", chunk))
        return SpanExportResult.SUCCESS


def command() -> list[str]:
    script = Path(sys.executable).parent / "spanjournal"
    return [str(script)] if script.exists() else [sys.executable, "-m", "spanjournal"]


def measure(args: Sequence[str], out: Path, env: dict[str, str] | None = None) -> tuple[float, int, int, str]:
    """Seconds, ru_maxrss in bytes, lines on stdout and the last stderr line of one run."""
    with open(out, "wb") as stdout:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [*command(), *args], stdout=stdout, stderr=subprocess.PIPE, env={**os.environ, **(env or {})}
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        assert proc.stderr is not None
        err = proc.stderr.read().decode(errors="replace")
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}): {err}")
    with open(out, "rb") as f:  # a block at a time: this process must stay small (see setup)
        lines = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
    return seconds, usage.ru_maxrss * 1024, lines, err.strip().splitlines()[-1]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("journal", type=Path, nargs="?", help="default: the synthetic journal of bench_pending.py")
    parser.add_argument("--quick", action="store_true", help="the 100,000-event synthetic journal (without JOURNAL)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--setup", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.setup:
        setup(args.journal)
        return
    if args.journal is None:
        args.journal, _ = journal_for(100_000 if args.quick else 1_000_000, REPO / "bench-data")
    with tempfile.TemporaryDirectory(prefix="bench-export-new-") as tmp:
        os.environ["XDG_CACHE_HOME"] = os.path.join(tmp, "cache")
        copy = Path(tmp) / "bench.jsonl"
        shutil.copyfile(args.journal, copy)
        # In a child, so that this process stays small: a child's ru_maxrss counts what it had before exec.
        subprocess.run([sys.executable, __file__, str(copy), "--setup"], check=True)
        lines = []
        for line in (Path(tmp) / "unfinished").read_text().splitlines():
            trace, span, chunk = line.split(" ", 2)
            lines.append(encode(Completed(chunk_id=chunk, span_id=span, trace_id=trace, success=True, ts=TS)))
        for i in range(NEW):
            chunk, span = f"appended-{i:05d}", secrets.token_hex(8)
            trace = secrets.token_hex(16)
            lines.append(encode(Dispatched(chunk_id=chunk, span_id=span, trace_id=trace, agent="router", ts=TS)))
            lines.append(encode(Completed(chunk_id=chunk, span_id=span, trace_id=trace, success=True, ts=TS)))
        with open(copy, "ab") as f:
            f.write(b"".join(lines))
        print(f"appended {len(lines):,} events ({CHANGED} completions of unfinished attempts)")

        dry_run = ["export", str(copy), "--endpoint", ENDPOINT, "--dry-run"]
        out = Path(tmp) / "out"
        results = {}
        for name, extra, env in (
            ("export --dry-run", [], None),
            ("export --dry-run --new", ["--new"], None),
            ("  the same, no mark", ["--new"], {"SPANJOURNAL_NO_CHECKPOINT": "1"}),
        ):
            results[name] = min(measure([*dry_run, *extra], out, env) for _ in range(args.repeat))
        show(results)
        full, new = results["export --dry-run"][0], results["export --dry-run --new"][0]
        hashes = results["  the same, no mark"][0]
        print(f"--new: {new / full:.1%} of the full dry run's time; without the mark {hashes / full:.0%}")

        lines = []
        for i in range(NEW + CHANGED):
            chunk, span, trace = f"appended-2-{i:05d}", secrets.token_hex(8), secrets.token_hex(16)
            lines.append(encode(Dispatched(chunk_id=chunk, span_id=span, trace_id=trace, agent="router", ts=TS)))
            if i >= CHANGED:
                lines.append(encode(Completed(chunk_id=chunk, span_id=span, trace_id=trace, success=True, ts=TS)))
        with open(copy, "ab") as f:
            f.write(b"".join(lines))
        print(f"appended {len(lines):,} more events ({CHANGED} dispatches never completed)")
        results = {}
        for name in ("export --dry-run --new (cold fold)", "export --dry-run --new (checkpoint)"):
            results[name] = measure([*dry_run, "--new"], out)
        show(results)
        print(f"load average {os.getloadavg()[0]:.2f}")


def setup(copy: Path) -> None:
    """Export every span of ``copy`` once and save the record; the first unfinished ones go to ``unfinished``."""
    start = time.perf_counter()
    record = SentRecord.open([copy], ENDPOINT)
    exporter = Accepting()
    stats = export_journal([copy], exporter, record=record, batch_size=4096)
    record.save()
    print(f"setup: {stats.sent:,} spans exported and recorded in {time.perf_counter() - start:.1f} s")
    with open(copy.parent / "unfinished", "w") as f:
        f.writelines(f"{trace} {span} {chunk}\n" for trace, span, chunk in exporter.unfinished)


def show(results: dict[str, tuple[float, int, int, str]]) -> None:
    for name, (seconds, rss, printed, summary) in results.items():
        print(f"{name:<36} {seconds:6.2f} s  {rss / 2**20:6.0f} MB  {printed:>9,} lines  {summary}")


if __name__ == "__main__":
    main()
