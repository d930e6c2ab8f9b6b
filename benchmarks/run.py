"""Run every benchmark and print its table of ratios, measured in the same run.

    python benchmarks/run.py [--quick]

Each ``bench_*.py`` beside this file is run in its own process (so one's
memory and threads do not disturb the next) with the same flags.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every benchmark")
    ap.add_argument("only", nargs="*", help="names of benchmarks to run (e.g. journal overhead pending)")
    args = ap.parse_args()
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in args.only]
    failed = 0
    for script in scripts:
        title = script.stem.removeprefix("bench_")
        print(f"\n== {title} ({script.name}) ==", flush=True)
        started = time.perf_counter()
        cmd = [sys.executable, str(script)] + (["--quick"] if args.quick else [])
        code = subprocess.call(cmd)
        print(f"-- {title}: {time.perf_counter() - started:.1f} s{'' if code == 0 else f', exit {code}'}")
        failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
