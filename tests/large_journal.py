"""A large, realistic journal: a fan-out that hits a quota cliff, dies, and is resumed.

Used by the report's browser tests and by ``benchmarks/bench_report.py``.
``write_large_run(path, chunks=100_000)`` writes, in time order:

- session 1 plans every chunk and runs them on ``workers`` parallel slots
  (durations from 2 to 30 s); after 55 % of the chunks the quota runs out and
  half the attempts fail fast with ``QuotaError``; at 70 % the process dies
  with every slot busy: those attempts have no completion (cut off);
- session 2, ten minutes later, retries the failed and cut-off chunks and
  goes on until 95 %: the last 5 % stay never dispatched.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from spanjournal._schema import Completed, Dispatched, RunPlanned, encode

ZONE = timezone(timedelta(hours=8))
START = datetime(2026, 5, 27, 9, 0, tzinfo=ZONE).timestamp()
AGENTS = ("router", "summariser", "grader", "extractor")
QUOTA_ERROR = "429 quota exceeded for model router-small: your organisation has used its token quota"


@dataclass
class LargeRun:
    """What was written: the expected answer, for checks."""

    path: Path
    chunks: int
    cut_off: set[str] = field(default_factory=set)
    pending: set[str] = field(default_factory=set)
    attempts: int = 0


def chunk_name(n: int, per_batch: int) -> str:
    return f"batch-{n // per_batch:03d}-case-{n:06d}"


def _ts(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, ZONE).isoformat(timespec="microseconds")


def write_large_run(
    path: Path, chunks: int = 100_000, *, batches: int = 100, workers: int = 64, seed: int = 7
) -> LargeRun:
    rng = random.Random(seed)
    per_batch = max(1, chunks // batches)
    ids = [chunk_name(n, per_batch) for n in range(chunks)]
    run = LargeRun(path, chunks)
    lines: list[tuple[float, int, bytes]] = []  # (time, order, line)
    order = 0

    def emit(t: float, line: bytes) -> None:
        nonlocal order
        order += 1
        lines.append((t, order, line))

    def session(
        sid: str, pid: int, todo: list[int], start: float, cliff: int | None, crash_at: int | None
    ) -> tuple[float, list[int], list[int]]:
        """Run ``todo``; return (last event time, failed, cut off) chunk indexes."""
        slots = [start] * workers
        heapq.heapify(slots)
        failed: list[int] = []
        cut: list[int] = []
        in_flight: list[tuple[float, int, str, str, float, bool]] = []
        crash_time = None
        for k, n in enumerate(todo):
            begin = heapq.heappop(slots)
            if crash_at is not None and k == crash_at:
                crash_time = begin
                heapq.heappush(slots, begin)
                break
            quota_gone = cliff is not None and k >= cliff
            fails = quota_gone and rng.random() < 0.5
            duration = rng.uniform(0.3, 1.5) if fails else rng.uniform(2.0, 30.0)
            end = begin + duration
            heapq.heappush(slots, end)
            chunk = ids[n]
            span = f"{rng.getrandbits(64):016x}"
            trace = f"{rng.getrandbits(128):032x}"
            emit(
                begin,
                encode(
                    Dispatched(
                        ts=_ts(begin),
                        session_id=sid,
                        chunk_id=chunk,
                        task_description=f"Case {n}: route the prompt",
                        items_assigned=1,
                        trace_id=trace,
                        span_id=span,
                        host="bench-host",
                        pid=pid,
                        proc_start=1000 + pid,
                        output_file=f"responses/{n:06d}.json",
                        batch=f"batch-{n // per_batch:03d}",
                        agent=AGENTS[n % len(AGENTS)],
                    )
                ),
            )
            run.attempts += 1
            in_flight.append((end, n, span, trace, duration, fails))
            if fails:
                failed.append(n)
        last = 0.0
        for end, n, span, trace, duration, fails in in_flight:
            if crash_time is not None and end > crash_time:
                cut.append(n)
                continue
            chunk = ids[n]
            if fails:
                emit(
                    end,
                    encode(
                        Completed(
                            ts=_ts(end),
                            session_id=sid,
                            chunk_id=chunk,
                            success=False,
                            error=QUOTA_ERROR,
                            error_type="QuotaError",
                            duration_ms=duration * 1000,
                            trace_id=trace,
                            span_id=span,
                            host="bench-host",
                            pid=pid,
                        )
                    ),
                )
            else:
                emit(
                    end,
                    encode(
                        Completed(
                            ts=_ts(end),
                            session_id=sid,
                            chunk_id=chunk,
                            success=True,
                            output_file=f"responses/{n:06d}.json",
                            input_tokens=900 + n % 200,
                            output_tokens=150,
                            duration_ms=duration * 1000,
                            trace_id=trace,
                            span_id=span,
                            host="bench-host",
                            pid=pid,
                        )
                    ),
                )
            last = max(last, end)
        if crash_time is not None:
            last = max(last, crash_time)
        return last, failed, cut

    s1, s2 = "0b5e7f6a-1111-4c1e-9b1a-3c9d2e8f1a20", "7c1d2e3f-2222-4c1e-9b1a-3c9d2e8f1a20"
    emit(START, encode(RunPlanned(ts=_ts(START), session_id=s1, chunk_ids=ids)))
    first = list(range(chunks))
    end1, failed1, cut1 = session(s1, 4242, first, START, int(chunks * 0.55), int(chunks * 0.70))
    dispatched1 = int(chunks * 0.70)
    retry = sorted(set(failed1) | set(cut1)) + list(range(dispatched1, int(chunks * 0.95)))
    _, failed2, _ = session(s2, 4343, retry, end1 + 600, None, None)
    run.cut_off = {ids[n] for n in cut1}
    run.pending = {ids[n] for n in range(int(chunks * 0.95), chunks)} | {ids[n] for n in failed2}
    lines.sort()
    with open(path, "wb") as f:
        f.write(b"".join(line for _, _, line in lines))
    return run
