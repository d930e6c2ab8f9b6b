"""Async fan-out: ``@spanjournal.dispatch`` on ``async def`` agents, run with ``asyncio.gather``.

Twelve simulated summariser agents run concurrently on one event loop (at
most ``--concurrency`` at a time). Each call is a dispatch: its
``subagent_dispatched`` line is written when the coroutine starts, its
``subagent_completed`` line when it returns or raises. An agent that raises
(here: a quota error on every fourth document, on the first run only) is
recorded as failed, with ``error_type``, and the exception still reaches
``gather``. :func:`spanjournal.current_dispatch` is per task, so each agent
records its own token usage.

Run it twice: the first run leaves the failures pending, the second retries
exactly those (``read_ledger(...).pending()``)::

    python examples/async_fanout.py            # 9 done, 3 failed
    python examples/async_fanout.py            # retries the 3, then nothing is pending
    pending runs/async-fanout/journal.jsonl    # empty

Journal writes are synchronous: with the default ``fsync`` durability each
dispatch waits for its line to reach the disk, on the event loop's thread,
before the agent runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import spanjournal

DEFAULT_DIR = Path("runs/async-fanout")
DOCUMENTS = 12
DEFAULT_CONCURRENCY = 6
JOURNAL_NAME = "journal.jsonl"
#: Documents whose agent hits the quota on the first run.
FLAKY_EVERY = 4


class QuotaError(RuntimeError):
    """The provider refused the call: the quota is used up."""


def doc_chunk_id(doc: int) -> str:
    return f"doc-{doc:02d}"


@spanjournal.dispatch(
    chunk_id=doc_chunk_id,
    task_description="Summarise one document",
    output_file=lambda doc: f"summaries/{doc:02d}.json",
    agent_name="summariser",
)
async def summarise(doc: int, run_dir: Path, flaky: bool) -> str:
    """One agent: think, write ``summaries/NN.json``, return the summary; or raise :class:`QuotaError`."""
    rng = random.Random(doc)
    await asyncio.sleep(rng.uniform(0.02, 0.1))
    if flaky:
        raise QuotaError(f"429: quota exceeded while summarising document {doc}")
    summary = f"Document {doc} in {rng.randint(2, 5)} sentences."
    (run_dir / "summaries" / f"{doc:02d}.json").write_text(json.dumps({"doc": doc, "summary": summary}) + "\n")
    spanjournal.current_dispatch().record(input_tokens=rng.randint(800, 1600), output_tokens=rng.randint(60, 200))
    return summary


async def fan_out(docs: Sequence[int], run_dir: Path, *, first_run: bool, concurrency: int) -> list[object]:
    """Run one agent per document concurrently; the results (or exceptions) in document order."""
    slots = asyncio.Semaphore(concurrency)

    async def bounded(doc: int) -> str:
        async with slots:
            return await summarise(doc, run_dir, flaky=first_run and doc % FLAKY_EVERY == FLAKY_EVERY - 1)

    return await asyncio.gather(*(bounded(d) for d in docs), return_exceptions=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="async_fanout.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"run directory (default: {DEFAULT_DIR})")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="agents at a time")
    args = parser.parse_args(argv)
    run_dir: Path = args.dir
    journal = run_dir / JOURNAL_NAME
    first_run = not journal.exists()
    (run_dir / "summaries").mkdir(parents=True, exist_ok=True)
    docs = list(range(DOCUMENTS))
    if not first_run:
        todo = set(spanjournal.read_ledger(journal).pending())
        docs = [d for d in docs if doc_chunk_id(d) in todo]

    sj = spanjournal.configure(journal=journal, service_name="async-fanout")
    if first_run:
        sj.plan(doc_chunk_id(d) for d in docs)
    results = asyncio.run(fan_out(docs, run_dir, first_run=first_run, concurrency=args.concurrency))
    sj.shutdown()

    failed = [f"{doc_chunk_id(d)}: {r}" for d, r in zip(docs, results) if isinstance(r, BaseException)]
    print(f"{'first run' if first_run else 'retry'}: {len(docs)} agents, {len(docs) - len(failed)} done")
    for line in failed:
        print(f"  failed {line}")
    pending = spanjournal.read_ledger(journal).pending()
    print(f"pending: {' '.join(pending)} (run again to retry them)" if pending else "pending: nothing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
