"""Write a synthetic journal for benchmarks: realistic line sizes and states.

    python benchmarks/synthetic.py out.jsonl --events 1000000

Every chunk is dispatched once; most complete successfully, some fail and are
retried, some are left unfinished. About 300 bytes per line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from spanjournal._schema import Completed, Dispatched, encode


def journal_for(events: int, data_dir: Path) -> tuple[Path, dict[str, int]]:
    """The synthetic journal of ``events`` events in ``data_dir`` and its expected counts (written once)."""
    path = data_dir / f"pending-{events}.jsonl"
    meta = path.with_suffix(".counts.json")
    if path.exists() and meta.exists():
        return path, json.loads(meta.read_text())
    print(f"writing {path} ({events:,} events) ...", file=sys.stderr)
    data_dir.mkdir(parents=True, exist_ok=True)
    counts = write_journal(path, events)
    meta.write_text(json.dumps(counts))
    return path, counts


def write_journal(path: Path, events: int, seed: int = 7) -> dict[str, int]:
    """Write about ``events`` events; return the expected state counts."""
    rng = random.Random(seed)
    counts = {"done": 0, "failed": 0, "unfinished": 0}
    session = "5f0c6f0e-7d6b-4c1e-9b1a-3c9d2e8f1a20"
    host = "bench-host"
    buf: list[bytes] = []
    written = 0
    n = 0
    with open(path, "wb") as f:
        while written < events:
            batch = n // 100
            chunk = f"batch-{batch}-case-{n:07d}"
            trace = f"{rng.getrandbits(128):032x}"
            attempts = 2 if rng.random() < 0.05 else 1
            for attempt in range(attempts):
                span = f"{rng.getrandbits(64):016x}"
                ts = f"2026-05-27T13:{(n // 60) % 60:02d}:{n % 60:02d}.{attempt:06d}+08:00"
                buf.append(encode(Dispatched(
                    ts=ts, session_id=session, chunk_id=chunk,
                    task_description="Route prompt to expected skill",
                    items_assigned=1, trace_id=trace, span_id=span, host=host,
                    pid=4242, proc_start=123456, output_file=f"responses/{n:07d}.json",
                    batch=f"batch-{batch}", agent="router")))
                written += 1
                last = attempt == attempts - 1
                r = rng.random()
                if not last:
                    buf.append(encode(Completed(
                        ts=ts, session_id=session, chunk_id=chunk, success=False,
                        error="quota exceeded: 429 Too Many Requests", error_type="QuotaError",
                        duration_ms=812.5, trace_id=trace, span_id=span, host=host, pid=4242)))
                    written += 1
                elif r < 0.02:
                    counts["unfinished"] += 1
                elif r < 0.04:
                    buf.append(encode(Completed(
                        ts=ts, session_id=session, chunk_id=chunk, success=False,
                        error="quota exceeded: 429 Too Many Requests", error_type="QuotaError",
                        duration_ms=812.5, trace_id=trace, span_id=span, host=host, pid=4242)))
                    written += 1
                    counts["failed"] += 1
                else:
                    buf.append(encode(Completed(
                        ts=ts, session_id=session, chunk_id=chunk, success=True,
                        output_file=f"responses/{n:07d}.json", tokens_used=1234,
                        input_tokens=1000, output_tokens=234, duration_ms=8123.4,
                        trace_id=trace, span_id=span, host=host, pid=4242)))
                    written += 1
                    counts["done"] += 1
            n += 1
            if len(buf) >= 10000:
                f.write(b"".join(buf))
                buf.clear()
        f.write(b"".join(buf))
    counts["chunks"] = n
    counts["bytes"] = os.path.getsize(path)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", type=Path)
    ap.add_argument("--events", type=int, default=1_000_000)
    args = ap.parse_args()
    print(write_journal(args.path, args.events))


if __name__ == "__main__":
    main()
