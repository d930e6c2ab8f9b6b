"""Journal writer throughput: events/s per durability mode, and group commit.

    python benchmarks/bench_journal.py [--quick]

Rows: events/s for each durability mode with 1 and 16 threads; for ``fsync``
with 16 threads, the ratio against a naive writer that opens, appends, fsyncs
and closes per event (the kernel merges concurrent fsyncs of one file, so it
is a strong baseline) and against "lock, write, fsync" under one lock, plus
events per sync; for ``flush`` with 1 thread, the ratio against "lock, flock,
write" (the writer without its bookkeeping and per-append torn-tail check).
All measured in the same run, in a temporary directory on the project's file
system.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from spanjournal import Journal
from spanjournal._schema import Dispatched, encode

LINE = encode(
    Dispatched(
        ts="2026-05-27T13:22:01.123456+08:00", session_id="5f0c6f0e-7d6b-4c1e-9b1a-3c9d2e8f1a20",
        chunk_id="batch-3-case-027", task_description="Route prompt to expected skill", items_assigned=1,
        trace_id="6513270e269e0d37f2a74de452e6b438", span_id="d23f0824128b2f33", host="bench", pid=4242,
    )
)


def run_threads(threads: int, per_thread: int, append: Callable[[bytes], None]) -> float:
    """Events per second with ``threads`` threads each appending ``per_thread`` events."""
    barrier = threading.Barrier(threads + 1)

    def work() -> None:
        barrier.wait()
        for _ in range(per_thread):
            append(LINE)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter()
    for w in workers:
        w.join()
    return threads * per_thread / (time.perf_counter() - start)


def naive_open_append_fsync_close(path: Path) -> Callable[[bytes], None]:
    def append(line: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    return append


def lock_write_fsync(path: Path) -> tuple[Callable[[bytes], None], Callable[[], None]]:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    lock = threading.Lock()

    def append(line: bytes) -> None:
        with lock:
            os.write(fd, line)
            os.fsync(fd)

    return append, lambda: os.close(fd)


def lock_flock_write(path: Path) -> tuple[Callable[[bytes], None], Callable[[], None]]:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    lock = threading.Lock()

    def append(line: bytes) -> None:
        with lock:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                os.write(fd, line)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    return append, lambda: os.close(fd)


def best_of(repeats: int, measure: Callable[[], float]) -> float:
    return max(measure() for _ in range(repeats))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer events (a smoke run)")
    ap.add_argument("--dir", type=Path, default=Path(__file__).resolve().parents[1] / "bench-data")
    args = ap.parse_args()
    args.dir.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-journal-", dir=args.dir))
    fsync_events = 200 if args.quick else 1000
    fast_events = 5_000 if args.quick else 50_000
    repeats = 1 if args.quick else 3
    try:
        print(f"{'writer':44s} {'threads':>7s} {'events/s':>10s} {'ev/sync':>8s} {'ratio':>7s}")
        counter = iter(range(1_000_000))

        def ours(mode: str, threads: int, events: int) -> tuple[float, float]:
            journal = Journal(work / f"ours-{next(counter)}.jsonl", durability=mode)  # type: ignore[arg-type]
            rate = run_threads(threads, max(1, events // threads), journal.append_bytes)
            journal.close()
            syncs = journal.sync_count - 1  # the sync of the new file itself
            return rate, (events / syncs if syncs > 0 else float("nan"))

        results: dict[tuple[str, int], tuple[float, float]] = {}
        for mode, events in (("none", fast_events), ("flush", fast_events), ("fsync", fsync_events)):
            for threads in (1, 16):
                runs = [ours(mode, threads, events) for _ in range(repeats)]
                results[(mode, threads)] = max(runs)
        naive = best_of(repeats, lambda: run_threads(
            16, fsync_events // 16, naive_open_append_fsync_close(work / f"naive-{next(counter)}.jsonl")))

        def plain() -> float:
            append, close = lock_write_fsync(work / f"plain-{next(counter)}.jsonl")
            try:
                return run_threads(16, fsync_events // 16, append)
            finally:
                close()

        locked = best_of(repeats, plain)

        def flocked() -> float:
            append, close = lock_flock_write(work / f"flock-{next(counter)}.jsonl")
            try:
                return run_threads(1, fast_events, append)
            finally:
                close()

        flock_only = best_of(repeats, flocked)
        for (mode, threads), (rate, per_sync) in results.items():
            extra = f"{per_sync:8.1f}" if mode == "fsync" else f"{'':8s}"
            ratio = f"{rate / naive:6.2f}x" if (mode, threads) == ("fsync", 16) else ""
            print(f"{'spanjournal durability=' + mode:44s} {threads:7d} {rate:10.0f} {extra} {ratio:>7s}")
        print(f"{'baseline: open, append, fsync, close per event':44s} {16:7d} {naive:10.0f} {'':8s} {1:6.2f}x")
        print(f"{'baseline: lock, write, fsync':44s} {16:7d} {locked:10.0f} {1.0:8.1f} {locked / naive:6.2f}x")
        print(f"{'baseline: lock, flock, write':44s} {1:7d} {flock_only:10.0f}")
        fsync16 = results[("fsync", 16)]
        print(
            f"\nfsync, 16 threads: {fsync16[0] / naive:.2f}x the open/append/fsync/close baseline, "
            f"{fsync16[1]:.1f} events per sync (targets: >= 1.0x, >= 5)"
        )
        flush1 = results[("flush", 1)][0]
        print(
            f"flush, 1 thread: {flush1 / flock_only:.2f}x the lock/flock/write baseline "
            "(the difference: the writer's bookkeeping and its torn-tail check per append)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
