"""What any cold read in Python pays, beside ``pending`` and the naive script, on one journal.

    python benchmarks/bench_floor.py                  # bench_pending's 1,000,000-event journal
    python benchmarks/bench_floor.py --quick          # its 100,000-event journal, one run each
    python benchmarks/bench_floor.py JOURNAL --repeat 5

Each step is a program in its own process (best of ``--repeat``), in one run:

- the interpreter alone, ``import msgspec``, and all that plain ``pending`` imports:
  the floor of any command after an append (its answer may take at most 5% of a cold read);
- reading the file and splitting its lines;
- msgspec's decode of every line into the schema's structs (what every command
  does, so that they all classify a line alike), with no fold;
- that decode plus the least fold that answers ``pending``: one dict of
  dispatches and one set of successes (no attempts, tokens, failures, line
  numbers or output files);
- the naive script of ``bench_pending.py`` and ``spanjournal pending --no-checkpoint``.

The table gives each as a fraction of the naive script. What lies between
"the least fold" and ``pending`` is the fold's own bookkeeping.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pending import NAIVE, compile_package, spanjournal_command  # noqa: E402
from synthetic import journal_for  # noqa: E402

_BLOCKS = """
def blocks(path):
    with open(path, "rb") as f:
        tail = b""
        while True:
            block = f.read(1 << 20)
            if not block:
                return
            lines = (tail + block).split(b"\\n")
            tail = lines.pop()
            yield [line for line in lines if line]
"""


def programs(journal: Path) -> dict[str, list[str]]:
    path = str(journal)
    py = [sys.executable, "-c"]
    return {
        "interpreter start": [*py, "pass"],
        "import msgspec": [*py, "import msgspec"],
        "import spanjournal.cli.pending": [*py, "import spanjournal.cli.pending"],
        "read + split lines": [*py, _BLOCKS + f"for lines in blocks({path!r}): pass"],
        "decode to the schema, no fold": [
            *py,
            "import msgspec\nfrom spanjournal._schema import Event\n"
            "decode = msgspec.json.Decoder(Event).decode\n"
            + _BLOCKS
            + f"for lines in blocks({path!r}): list(map(decode, lines))",
        ],
        "decode + the least fold (a dict, a set)": [
            *py,
            "import msgspec\nfrom spanjournal._schema import Dispatched, Event\n"
            "decode = msgspec.json.Decoder(Event).decode\n"
            + _BLOCKS
            + "dispatched, done = {}, set()\n"
            + f"for lines in blocks({path!r}):\n"
            "    for e in map(decode, lines):\n"
            "        if type(e) is Dispatched:\n"
            "            dispatched[e.chunk_id] = e.span_id\n"
            "        elif e.success:\n"
            "            done.add(e.chunk_id)\n"
            "print(len(dispatched.keys() - done))",
        ],
        "naive: json.loads + 2 set comprehensions": [sys.executable, "-c", NAIVE, path],
        "spanjournal pending --no-checkpoint": [*spanjournal_command(), "pending", path, "--no-checkpoint"],
    }


def best(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("journal", type=Path, nargs="?", help="default: the synthetic journal of bench_pending.py")
    ap.add_argument("--quick", action="store_true", help="the 100,000-event journal, one run each")
    ap.add_argument("--repeat", type=int, help="runs of each step, the best kept (default 3; --quick 1)")
    args = ap.parse_args()
    repeat = args.repeat or (1 if args.quick else 3)
    journal = args.journal
    if journal is None:
        journal, _ = journal_for(100_000 if args.quick else 1_000_000, REPO / "bench-data")
    compile_package()
    results = {name: best(cmd, repeat) for name, cmd in programs(journal).items()}
    naive = results["naive: json.loads + 2 set comprehensions"]
    size = journal.stat().st_size
    print(f"\n{journal.name} ({size / 1e6:,.0f} MB), best of {repeat}, each step in its own process\n")
    print(f"{'':42s} {'time':>9s} {'of naive':>9s} {'naive is':>9s}")
    for name, seconds in results.items():
        print(f"{name:42s} {seconds:8.3f}s {100 * seconds / naive:8.1f}% {naive / seconds:8.1f}x")


if __name__ == "__main__":
    main()
