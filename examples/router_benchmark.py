"""Router benchmark: 50 simulated sub-agents, a quota cliff, and a resume that retries only what is left.

The scenario spanjournal was made for. A prompt router is benchmarked on 50
cases; each case is one sub-agent call that reads a prompt, ranks the skills
it could be routed to, and writes that ranking to ``responses/NNN.json``. The
cases go out as 5 batches of 10 sub-agents running in parallel (threads).
The agents are simulated: no network, no API key; each thinks for a random
short time. Everything is deterministic for a given ``--seed``.

After 25 agents (``--cliff``) the provider's quota is gone, and the agents of
the batch that crosses it fail the three ways real ones do:

- some return the provider's quota message instead of a JSON answer: the
  dispatch records the failure (``record(success=False, error=...)``);
- some never return: the orchestrator dies (``os._exit``) while they are in
  flight, so their ``subagent_dispatched`` lines have no completion;
- some of those had written their output file just before the end: one a
  whole, valid answer; one only half of it.

Every call goes through :func:`spanjournal.dispatch`, so the journal knows
all of it, and the batches after the crash were planned (``plan()``), so
they read as ``never_dispatched``. Then::

    python examples/router_benchmark.py                        # exits 3 at the cliff
    pending runs/router-bench/journal.jsonl                    # what must be retried
    spanjournal reconcile runs/router-bench/journal.jsonl --apply
    python examples/router_benchmark.py --resume               # reconciles, re-runs the rest
    spanjournal stats runs/router-bench/journal.jsonl

``--resume`` reconciles first (outputs already valid are recorded done),
then re-runs exactly ``read_ledger(journal).pending()`` and touches nothing
else. The run directory holds:

- ``journal.jsonl``: the spanjournal journal;
- ``run.json``: the run's parameters, which ``--resume`` reuses;
- ``responses/NNN.json``: one ranked answer per case;
- ``calls.jsonl``: one line per agent call (``chunk_id``, ``pid``,
  ``session_id``), appended before the agent works, so anyone can count how
  often each chunk ran.

Spans go to an OTLP backend when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (see
``collector-config/``); without it nothing is exported and nothing is logged
about it. Exit status: 0 when every case is done, 1 when some are still
pending, 2 for usage errors, 3 when the run died at the quota cliff.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import random
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import spanjournal
from spanjournal.cli import main as spanjournal_cli

SERVICE_NAME = "router-bench"
DEFAULT_DIR = Path("runs/router-bench")
DEFAULT_CASES = 50
DEFAULT_BATCH_SIZE = 10
DEFAULT_CLIFF = 25
DEFAULT_SEED = 7

JOURNAL_NAME = "journal.jsonl"
CALLS_NAME = "calls.jsonl"
PARAMS_NAME = "run.json"
RESPONSES_DIR = "responses"

EXIT_DONE = 0
EXIT_PENDING = 1
EXIT_USAGE = 2
EXIT_CLIFF = 3

#: How long a simulated agent thinks, in seconds.
THINK_SECONDS = (0.05, 0.25)
#: How long the orchestrator waits for a batch's agents to settle before the crash.
SETTLE_TIMEOUT = 30.0
#: How long spans that ended get to reach the OTLP backend before the crash.
EXPORT_FLUSH_TIMEOUT = 2.0
#: How often the simulated router ranks the expected skill first.
ACCURACY = 0.8

SKILLS = ("web-search", "code-review", "summarize", "translate", "calendar", "sql-query", "math", "image-gen")
PROMPTS = {
    "web-search": "Find the latest news about {topic}",
    "code-review": "Review this pull request that touches {topic}",
    "summarize": "Give me the gist of this long report on {topic}",
    "translate": "Translate our onboarding notes on {topic} into French",
    "calendar": "Book an hour next week to discuss {topic}",
    "sql-query": "How many customers asked about {topic} last quarter? Query the warehouse",
    "math": "Estimate the yearly cost of {topic} at 3% growth",
    "image-gen": "Draw a poster announcing {topic}",
}
TOPICS = (
    "the quarterly roadmap",
    "solar panel subsidies",
    "the new billing service",
    "GPU prices",
    "the Kuala Lumpur office move",
    "vector databases",
    "the support backlog",
    "rate limiting",
)
QUOTA_MESSAGE = (
    "API Error: 429 quota exceeded for model router-small: "
    "your organisation has used its token quota for this period; retry after it resets."
)


class Fate(str, enum.Enum):
    """What a simulated agent does: answer, or one of the ways agents fail at a quota cliff."""

    ANSWER = "answer"
    #: Returns the provider's quota message instead of a JSON answer.
    QUOTA_ERROR = "quota_error"
    #: Never returns: still in flight when the process dies.
    HANG = "hang"
    #: Writes its whole, valid answer file, then never returns.
    WROTE_THEN_HANG = "wrote_then_hang"
    #: Gets halfway through writing its answer file, then never returns.
    TORN_THEN_HANG = "torn_then_hang"

    @property
    def returns(self) -> bool:
        return self in (Fate.ANSWER, Fate.QUOTA_ERROR)


#: The fates of the agents over the quota, in the order they are handed out
#: (then shuffled by the seed): a cliff crossed by 5 agents gives 2 quota
#: errors, 1 valid output, 1 torn output and 1 agent with no output at all.
OVER_QUOTA_FATES = (
    Fate.QUOTA_ERROR,
    Fate.WROTE_THEN_HANG,
    Fate.HANG,
    Fate.TORN_THEN_HANG,
    Fate.QUOTA_ERROR,
    Fate.WROTE_THEN_HANG,
    Fate.HANG,
    Fate.QUOTA_ERROR,
    Fate.WROTE_THEN_HANG,
    Fate.HANG,
)


@dataclass(frozen=True)
class Case:
    """One benchmark case: a prompt and the skill it should be routed to."""

    number: int
    batch: int
    prompt: str
    expected: str

    @property
    def chunk_id(self) -> str:
        return f"batch-{self.batch}-case-{self.number:03d}"

    @property
    def batch_name(self) -> str:
        return f"batch-{self.batch}"

    @property
    def output_file(self) -> str:
        """Where the answer goes, relative to the run directory (as the journal records it)."""
        return f"{RESPONSES_DIR}/{self.number:03d}.json"


def make_cases(count: int, batch_size: int, seed: int) -> list[Case]:
    """The benchmark's cases, numbered from 1, the same for the same seed."""
    rng = random.Random(f"{seed}/cases")
    cases = []
    for number in range(1, count + 1):
        expected = rng.choice(SKILLS)
        prompt = PROMPTS[expected].format(topic=rng.choice(TOPICS))
        cases.append(Case(number, (number - 1) // batch_size + 1, prompt, expected))
    return cases


def case_rng(seed: int, case: Case) -> random.Random:
    """The random source of one case's agent: independent of thread scheduling."""
    return random.Random(f"{seed}/agent/{case.number}")


def ranked_answer(case: Case, rng: random.Random) -> dict[str, object]:
    """The simulated router's answer: the three likeliest skills, best first."""
    others = [s for s in SKILLS if s != case.expected]
    rng.shuffle(others)
    top = case.expected if rng.random() < ACCURACY else others.pop()
    ranking = [top, *[s for s in others if s != top][:2]]
    scores = sorted((round(rng.uniform(0.05, 0.95), 3) for _ in ranking), reverse=True)
    return {
        "case": case.number,
        "chunk_id": case.chunk_id,
        "prompt": case.prompt,
        "expected": case.expected,
        "ranking": [{"skill": s, "score": p} for s, p in zip(ranking, scores)],
        "correct": top == case.expected,
    }


class Run:
    """One process's share of the benchmark: where it writes, who is over the quota, who is stuck.

    Thread safe: agents report calls and hangs from their threads.
    """

    def __init__(self, run_dir: Path, seed: int, cliff: int | None, session_id: str) -> None:
        self.run_dir = run_dir
        self.seed = seed
        self.cliff = cliff
        self.session_id = session_id
        self.agents_started = 0
        self.fates: dict[str, Fate] = {}
        self._hanging = 0
        self._changed = threading.Condition()
        self._calls = os.open(run_dir / CALLS_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def assign_fates(self, batch: Sequence[Case]) -> dict[str, Fate]:
        """Number this batch's agents on from the ones before, and decide what each does."""
        over = []
        for case in batch:
            self.agents_started += 1
            over_quota = self.cliff is not None and self.agents_started > self.cliff
            self.fates[case.chunk_id] = Fate.ANSWER
            if over_quota:
                over.append(case)
        if over:
            rng = random.Random(f"{self.seed}/cliff/{batch[0].batch}")
            fates = [OVER_QUOTA_FATES[i % len(OVER_QUOTA_FATES)] for i in range(len(over))]
            rng.shuffle(fates)
            for case, fate in zip(over, fates):
                self.fates[case.chunk_id] = fate
        return {c.chunk_id: self.fates[c.chunk_id] for c in batch}

    def count_call(self, case: Case) -> None:
        """Append this call to ``calls.jsonl`` with one unbuffered write: it survives ``os._exit``."""
        line = {"chunk_id": case.chunk_id, "case": case.number, "pid": os.getpid(), "session_id": self.session_id}
        os.write(self._calls, (json.dumps(line) + "\n").encode())

    def hang(self) -> NoReturn:
        """Never return: the agent stays in flight until the process dies."""
        with self._changed:
            self._hanging += 1
            self._changed.notify_all()
        threading.Event().wait()
        raise AssertionError("unreachable")

    def close(self) -> None:
        os.close(self._calls)

    def wait_hanging(self, count: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._hanging >= count, timeout)


def simulated_agent(case: Case, run: Run) -> str:
    """The sub-agent: thinks, writes its answer to its output file, and replies with it.

    Over the quota it replies with the provider's error message, or never
    replies at all (see :class:`Fate`).
    """
    fate = run.fates[case.chunk_id]
    rng = case_rng(run.seed, case)
    time.sleep(rng.uniform(*THINK_SECONDS))
    if fate is Fate.QUOTA_ERROR:
        return QUOTA_MESSAGE
    if fate is Fate.HANG:
        run.hang()
    text = json.dumps(ranked_answer(case, rng), indent=2) + "\n"
    path = run.run_dir / case.output_file
    if fate is Fate.TORN_THEN_HANG:
        path.write_text(text[: len(text) // 2], encoding="utf-8")
        run.hang()
    path.write_text(text, encoding="utf-8")
    if fate is Fate.WROTE_THEN_HANG:
        run.hang()
    return text


@spanjournal.dispatch(
    chunk_id=lambda case: case.chunk_id,
    task_description="Route prompt to expected skill",
    output_file=lambda case, run: str(run.run_dir.resolve() / case.output_file),
    batch=lambda case: case.batch_name,
    items_assigned=1,
    agent_name="router",
)
def run_agent(case: Case, run: Run) -> bool:
    """Dispatch one case to a sub-agent; True when it produced a ranked answer.

    A reply that is not a JSON ranking (the quota message) is recorded as a
    failure on the dispatch; it is not an exception, just as real agent
    frameworks hand back an error text.
    """
    run.count_call(case)
    reply = simulated_agent(case, run)
    rng = case_rng(run.seed, case)
    input_tokens = 600 + len(case.prompt) * 4 + rng.randrange(400)
    handle = spanjournal.current_dispatch()
    try:
        answer = json.loads(reply)
    except json.JSONDecodeError:
        error_type = "QuotaError" if "quota" in reply.lower() else "InvalidReply"
        handle.record(success=False, error=reply, error_type=error_type, input_tokens=input_tokens, output_tokens=0)
        return False
    if not isinstance(answer, dict) or not answer.get("ranking"):
        handle.record(success=False, error="reply has no ranking", error_type="InvalidReply")
        return False
    output_file = str(run.run_dir.resolve() / case.output_file)
    handle.record(output_file=output_file, input_tokens=input_tokens, output_tokens=len(reply) // 4)
    return True


@dataclass
class BatchResult:
    name: str
    agents: int
    done: int = 0
    failed: int = 0
    in_flight: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        parts = [f"{self.done} done"]
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.in_flight:
            parts.append(f"{self.in_flight} never returned")
        return f"{self.name:<9} {self.agents:>2} agents  {', '.join(parts):<40} {self.seconds:5.2f} s"


def run_batch(batch: Sequence[Case], run: Run, sj: spanjournal.Spanjournal) -> BatchResult:
    """Dispatch a batch's agents in parallel threads and wait for them.

    If some agents of the batch never return (the quota cliff), wait until
    the others have finished and the stuck ones are in flight, then die
    hard, like a crashed orchestrator: no completion is ever written for
    the stuck ones. Spans that ended are flushed to the OTLP backend first
    (a long-running process would have exported them by then); the ones in
    flight never get there.
    """
    fates = run.assign_fates(batch)
    result = BatchResult(batch[0].batch_name, len(batch))
    started = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=len(batch), thread_name_prefix=result.name)
    futures: dict[str, Future[bool]] = {c.chunk_id: pool.submit(run_agent, c, run) for c in batch}
    returning = [futures[c] for c, fate in fates.items() if fate.returns]
    stuck = [c for c, fate in fates.items() if not fate.returns]
    wait_futures(returning, timeout=None if not stuck else SETTLE_TIMEOUT)
    for future in returning:
        error = future.exception() if future.done() else None
        if error is not None:
            print(f"{result.name}: an agent raised {type(error).__name__}: {error}", file=sys.stderr)
        if future.done() and error is None and future.result():
            result.done += 1
        else:
            result.failed += 1
    result.seconds = time.monotonic() - started
    if stuck:
        run.wait_hanging(len(stuck), SETTLE_TIMEOUT)
        result.in_flight = len(stuck)
        result.seconds = time.monotonic() - started
        print(result.line(), flush=True)
        die_at_the_cliff(run, sj, len(stuck))
    pool.shutdown(wait=True)
    return result


def die_at_the_cliff(run: Run, sj: spanjournal.Spanjournal, in_flight: int) -> NoReturn:
    print(
        f"quota cliff after agent {run.cliff}: the orchestrator dies now (os._exit({EXIT_CLIFF})) "
        f"with {in_flight} agent{'s' if in_flight != 1 else ''} in flight",
        flush=True,
    )
    if sj.exporters:
        sj.force_flush(timeout=EXPORT_FLUSH_TIMEOUT)
    sys.stderr.flush()
    os._exit(EXIT_CLIFF)


def by_batch(cases: Iterable[Case]) -> list[list[Case]]:
    """Cases grouped by their batch, batches and cases in order."""
    groups: dict[int, list[Case]] = {}
    for case in sorted(cases, key=lambda c: c.number):
        groups.setdefault(case.batch, []).append(case)
    return [groups[b] for b in sorted(groups)]


def run_cases(cases: Sequence[Case], run_dir: Path, seed: int, cliff: int | None, *, plan: bool) -> int:
    """Configure spanjournal, run ``cases`` batch by batch, and report what is left pending."""
    journal = run_dir / JOURNAL_NAME
    (run_dir / RESPONSES_DIR).mkdir(parents=True, exist_ok=True)
    sj = spanjournal.configure(journal=journal, service_name=SERVICE_NAME)
    exporters = ", ".join(map(str, sj.exporters)) or "none (set OTEL_EXPORTER_OTLP_ENDPOINT to send traces)"
    print(f"journal {journal}  session {sj.session_id}\ntraces  {exporters}", flush=True)
    if plan:
        sj.plan(c.chunk_id for c in cases)
    run = Run(run_dir, seed, cliff, sj.session_id)
    for batch in by_batch(cases):
        print(run_batch(batch, run, sj).line(), flush=True)
    run.close()
    sj.shutdown()
    return report_pending(journal)


def report_pending(journal: Path) -> int:
    ledger = spanjournal.read_ledger(journal)
    pending = ledger.pending()
    if not pending:
        print(f"all {len(ledger)} chunks done")
        return EXIT_DONE
    print(f"{len(pending)} of {len(ledger)} chunks pending: run again with --resume")
    return EXIT_PENDING


def fresh_run(run_dir: Path, count: int, batch_size: int, seed: int, cliff: int | None) -> int:
    if (run_dir / JOURNAL_NAME).exists():
        print(
            f"router_benchmark: {run_dir} already holds a run ({JOURNAL_NAME}): "
            "resume it with --resume, or choose another --dir",
            file=sys.stderr,
        )
        return EXIT_USAGE
    run_dir.mkdir(parents=True, exist_ok=True)
    params = {"cases": count, "batch_size": batch_size, "seed": seed}
    (run_dir / PARAMS_NAME).write_text(json.dumps(params, indent=2) + "\n", encoding="utf-8")
    cases = make_cases(count, batch_size, seed)
    batches = (count + batch_size - 1) // batch_size
    where = f"quota cliff after {cliff} agents" if cliff is not None else "no quota cliff"
    print(f"router-bench: {count} cases in {batches} batches of {batch_size} parallel sub-agents, {where}, seed {seed}")
    return run_cases(cases, run_dir, seed, cliff, plan=True)


def resume(run_dir: Path, cliff: int | None) -> int:
    """Reconcile outputs, then re-run exactly what the journal says is pending."""
    journal = run_dir / JOURNAL_NAME
    try:
        params = json.loads((run_dir / PARAMS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"router_benchmark: {run_dir} holds no run to resume ({PARAMS_NAME}: {exc})", file=sys.stderr)
        return EXIT_USAGE
    print(f"$ spanjournal reconcile {journal} --apply", flush=True)
    code = spanjournal_cli(["reconcile", str(journal), "--apply"])
    sys.stdout.flush()
    sys.stderr.flush()
    if code != 0:
        return code
    ledger = spanjournal.read_ledger(journal)
    pending = ledger.pending()
    cases = {c.chunk_id: c for c in make_cases(params["cases"], params["batch_size"], params["seed"])}
    unknown = [c for c in pending if c not in cases]
    if unknown:
        print(f"router_benchmark: the journal has chunks this run does not: {', '.join(unknown)}", file=sys.stderr)
        return EXIT_USAGE
    states: dict[str, int] = {}
    for chunk_id in pending:
        state = ledger.state(chunk_id).value.replace("_", " ")
        states[state] = states.get(state, 0) + 1
    running = ledger.pending([spanjournal.ChunkState.RUNNING])
    left = len(ledger) - len(pending)
    why = ", ".join(f"{n} {s}" for s, n in states.items())
    print(f"resume: {len(pending)} pending ({why}); {left} others left alone" if pending else "resume: nothing pending")
    if running:
        print(f"resume: {len(running)} chunks are still running in another process and are left alone")
    if not pending:
        return EXIT_DONE
    return run_cases([cases[c] for c in pending], run_dir, params["seed"], cliff, plan=False)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="router_benchmark.py",
        description="Benchmark a prompt router with simulated sub-agents that hit a quota cliff; resume after.",
    )
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"run directory (default: {DEFAULT_DIR})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default: {DEFAULT_SEED})")
    parser.add_argument("--cases", type=int, default=DEFAULT_CASES, help=f"number of cases (default: {DEFAULT_CASES})")
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help=f"agents per batch (default: {DEFAULT_BATCH_SIZE})"
    )
    parser.add_argument(
        "--cliff",
        type=int,
        metavar="N",
        help=f"the quota runs out after N agents of this process; 0: never "
        f"(default: {DEFAULT_CLIFF} for a new run, never for --resume)",
    )
    parser.add_argument("--resume", action="store_true", help="reconcile, then re-run only the pending chunks")
    args = parser.parse_args(argv)
    if args.cases < 1 or args.batch_size < 1 or (args.cliff is not None and args.cliff < 0):
        parser.error("--cases and --batch-size must be positive, --cliff not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cliff = args.cliff if args.cliff is not None else (None if args.resume else DEFAULT_CLIFF)
    if cliff == 0:
        cliff = None
    if args.resume:
        return resume(args.dir, cliff)
    return fresh_run(args.dir, args.cases, args.batch_size, args.seed, cliff)


if __name__ == "__main__":
    sys.exit(main())
