"""The whole recovery story in one command: a run hits a quota cliff, and the journal says what to retry.

``make demo`` runs this in ``demo-run/`` (replacing the previous demo's). In
a fresh directory (``--dir``, else a temporary one) it runs, as real
commands, and prints each with its output:

1. ``router_benchmark.py``: 50 simulated sub-agents in 5 parallel batches;
   the quota runs out after 25 and the process dies hard with agents in
   flight;
2. ``pending``: the unfinished, failed and never-dispatched chunks;
3. ``spanjournal reconcile --apply``: unfinished chunks whose output file is
   already valid are recorded done;
4. ``router_benchmark.py --resume``: re-runs only the rest;
5. ``pending --exit-code``: nothing is left;
6. ``spanjournal stats``: the run by batch;
7. with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, ``spanjournal export --only
   unfinished``: the spans of the agents in flight at the crash, which the
   backend never received, rebuilt from the journal.

It then checks the story from the files (the journal and the benchmark's
``calls.jsonl``) and exits non-zero if any part does not hold: for example
if something is still pending, or a chunk that was done ran again. No
Docker, no collector; with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set the runs also
send their traces (see ``collector-config/``).

The run directory is kept, so the commands it printed can be tried there
afterwards; the last lines say where it is and how to remove it
(``--clean`` removes it at the end instead).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from router_benchmark import CALLS_NAME, DEFAULT_SEED, EXIT_CLIFF, JOURNAL_NAME

import spanjournal

EXAMPLES = Path(__file__).resolve().parent
BENCHMARK = EXAMPLES / "router_benchmark.py"
REPORT_NAME = "report.html"
#: Seconds any one command may take before the demo gives up on it.
COMMAND_TIMEOUT = 60.0
INDENT = "  "


@dataclass
class Step:
    """A command the demo ran, with what it printed."""

    shown: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float


class StoryBroken(Exception):
    """A step did not do what the story says it does."""


def console_command(name: str) -> list[str]:
    """A console script of this environment (``pending``, ``spanjournal``), else its ``python -m`` form."""
    script = Path(sys.executable).parent / name
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    found = shutil.which(name)
    if found:
        return [found]
    if name == "pending":
        return [sys.executable, "-m", "spanjournal.cli", "pending"]
    return [sys.executable, "-m", "spanjournal.cli"]


def heading(number: int | None, title: str, explanation: str = "") -> None:
    label = f"{number}. {title}" if number is not None else title
    print(f"\n== {label} ==")
    if explanation:
        print(explanation)


def run_step(argv: Sequence[str], shown: str, cwd: Path, *, merge: bool = False) -> Step:
    """Run a command in ``cwd``; print it as ``$ shown``, then its output, indented.

    stdout is printed before stderr, unless ``merge`` interleaves them as
    the command wrote them (``Step.stderr`` is then empty).
    """
    print(f"$ {shown}", flush=True)
    started = time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        done = subprocess.run(
            list(argv),
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge else subprocess.PIPE,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise StoryBroken(f"`{shown}` did not finish within {COMMAND_TIMEOUT:.0f} s") from exc
    step = Step(shown, done.returncode, done.stdout, done.stderr or "", time.monotonic() - started)
    for text in (step.stdout, step.stderr):
        for line in text.splitlines():
            print(f"{INDENT}{line}".rstrip())
    print(f"{INDENT}[exit {step.returncode}, {step.seconds:.2f} s]", flush=True)
    return step


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise StoryBroken(what)


def calls_by_run(run_dir: Path) -> list[Counter[str]]:
    """How many times each chunk's agent was called, per benchmark process, from ``calls.jsonl``."""
    runs: dict[str, Counter[str]] = {}
    with open(run_dir / CALLS_NAME, encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                call = json.loads(line)
                runs.setdefault(call["session_id"], Counter())[call["chunk_id"]] += 1
    return list(runs.values())


def tell_story(run_dir: Path, seed: int) -> None:
    """Run the six steps in ``run_dir``; raise :class:`StoryBroken` where the story does not hold."""
    pending = console_command("pending")
    sj_cli = console_command("spanjournal")
    pending_shown = "pending" if len(pending) == 1 else "python -m spanjournal.cli pending"
    sj_shown = "spanjournal" if len(sj_cli) == 1 else "python -m spanjournal.cli"
    bench = [sys.executable, str(BENCHMARK), "--dir", "."]
    bench_shown = f"python {shlex.quote(str(BENCHMARK))} --dir ."

    heading(
        1,
        "The run hits the quota cliff",
        "50 cases, 5 batches of 10 parallel sub-agents. After 25 agents the quota is gone: some agents\n"
        "reply with the quota error, some never return, and the orchestrator dies hard (os._exit).",
    )
    step = run_step([*bench, "--seed", str(seed)], f"{bench_shown} --seed {seed}", run_dir, merge=True)
    expect(step.returncode == EXIT_CLIFF, f"the run should die at the cliff with exit {EXIT_CLIFF}")

    heading(
        2,
        "pending: what must be retried",
        "Unfinished (dispatched, never completed), failed, and never dispatched (planned, not reached).\n"
        "An OTLP backend only ever received the spans that ended; the journal has the rest.",
    )
    step = run_step([*pending, JOURNAL_NAME], f"{pending_shown} {JOURNAL_NAME}", run_dir)
    after_crash = step.stdout.split()
    expect(step.returncode == 0 and bool(after_crash), "pending should list the chunks the crash left behind")

    heading(
        3,
        "reconcile: outputs written just before the crash",
        "An agent that wrote a valid answer file and died before returning is recorded done; a torn\n"
        "or missing file stays pending.",
    )
    step = run_step(
        [*sj_cli, "reconcile", JOURNAL_NAME, "--apply"], f"{sj_shown} reconcile {JOURNAL_NAME} --apply", run_dir
    )
    expect(step.returncode == 0, "reconcile should succeed")
    retry = set(spanjournal.read_ledger(run_dir / JOURNAL_NAME).pending())
    reconciled = set(after_crash) - retry
    expect(bool(reconciled), "reconcile should find at least one valid output")
    expect(retry < set(after_crash), "reconcile should only ever shrink what is pending")

    heading(4, "resume: re-run only the rest", f"{len(retry)} chunks to re-run; every other chunk is left alone.")
    step = run_step([*bench, "--resume"], f"{bench_shown} --resume", run_dir, merge=True)
    expect(step.returncode == 0, "the resumed run should finish every chunk")

    heading(5, "pending: nothing is left", "--exit-code makes pending exit 1 if anything were.")
    step = run_step([*pending, JOURNAL_NAME, "--exit-code"], f"{pending_shown} {JOURNAL_NAME} --exit-code", run_dir)
    expect(step.returncode == 0 and not step.stdout.strip(), "nothing should be pending after the resume")

    heading(6, "stats: the run by batch")
    step = run_step(
        [*sj_cli, "stats", JOURNAL_NAME, "--price-per-1k-tokens", "0.003"],
        f"{sj_shown} stats {JOURNAL_NAME} --price-per-1k-tokens 0.003",
        run_dir,
    )
    expect(step.returncode == 0, "stats should succeed")

    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint:
        heading(
            7,
            "export: the spans that never reached the backend",
            f"Both runs sent their ended spans to {endpoint}. The agents in flight at the crash never\n"
            "ended; their spans are rebuilt from the journal and sent now (search service router-bench).",
        )
        step = run_step(
            [*sj_cli, "export", JOURNAL_NAME, "--only", "unfinished"],
            f"{sj_shown} export {JOURNAL_NAME} --only unfinished",
            run_dir,
        )
        expect(step.returncode == 0, f"export to {endpoint} should succeed")

    heading(None, "The story holds")
    runs = calls_by_run(run_dir)
    expect(len(runs) == 2, f"calls.jsonl should show two runs, not {len(runs)}")
    first, resumed = runs
    reconciled = set(after_crash) - retry
    done_first = set(first) - set(after_crash)
    expect(max((*first.values(), *resumed.values())) == 1, "no run should call a chunk twice")
    expect(set(resumed) == retry, "the resume should call exactly the chunks pending after reconcile")
    expect(not (set(resumed) & (done_first | reconciled)), "no chunk that was done may run again")
    again = set(first) & set(resumed)
    print(
        f"{INDENT}{len(done_first) + len(reconciled) + len(retry)} chunks: {len(done_first)} done in the first run, "
        f"{len(reconciled)} reconciled from its output file,\n"
        f"{INDENT}{len(retry)} run by --resume ({len(again)} of them a second time, "
        f"{len(retry) - len(again)} for the first time); no chunk that was done ran again."
    )

    heading(None, "report: the run as one HTML page", "Timeline, pending list, failures, tokens; opens from disk.")
    step = run_step(
        [*sj_cli, "report", JOURNAL_NAME, "-o", REPORT_NAME],
        f"{sj_shown} report {JOURNAL_NAME} -o {REPORT_NAME}",
        run_dir,
    )
    expect(step.returncode == 0, "report should write the page")
    print(f"{INDENT}report: {run_dir / REPORT_NAME}")


#: The file that marks a directory as a demo's own (``--replace`` removes only such a directory).
DEMO_MARKER = ".spanjournal-demo"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, help="run in this new directory (default: a temporary one)")
    parser.add_argument(
        "--replace", action="store_true", help="with --dir: replace the directory if a previous demo made it"
    )
    parser.add_argument("--clean", action="store_true", help="remove the run directory at the end")
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"the benchmark's seed (default: {DEFAULT_SEED})"
    )
    args = parser.parse_args(argv)
    if args.dir is not None:
        if args.dir.exists() and any(args.dir.iterdir()):
            if not args.replace:
                parser.error(f"--dir {args.dir}: not empty; the demo needs a fresh directory (or --replace)")
            if not (args.dir / DEMO_MARKER).is_file():
                parser.error(f"--dir {args.dir}: not empty and not a previous demo's (no {DEMO_MARKER}); left alone")
            shutil.rmtree(args.dir)
        args.dir.mkdir(parents=True, exist_ok=True)
        run_dir = args.dir.resolve()
    else:
        run_dir = Path(tempfile.mkdtemp(prefix="spanjournal-demo-"))
    (run_dir / DEMO_MARKER).write_text("made by examples/demo.py: --replace may remove this directory\n")
    started = time.monotonic()
    print(
        f"spanjournal demo: a run of sub-agents hits a quota cliff, and the journal says what to retry\n"
        f"run directory: {run_dir} (every command below runs there)"
    )
    try:
        tell_story(run_dir, args.seed)
    except StoryBroken as exc:
        print(f"\ndemo FAILED: {exc} (files kept in {run_dir})", file=sys.stderr)
        return 1
    print(f"\ndemo finished in {time.monotonic() - started:.1f} s")
    if args.clean:
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        scripts = Path(sys.executable).parent
        if shutil.which("pending") != str(scripts / "pending") and (scripts / "activate").is_file():
            print(f"pending and spanjournal are in {scripts}: run `. {shlex.quote(str(scripts / 'activate'))}` first")
        print(f"files kept in {run_dir}: cd there to try the commands above")
        print(f"remove them with: rm -rf {shlex.quote(str(run_dir))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
