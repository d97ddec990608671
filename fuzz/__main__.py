"""`python3 -m fuzz --cases N`: the long fuzz run (see fuzz/__init__.py)."""

from __future__ import annotations

import argparse
import resource
import sys
import time

from fuzz.cases import make_case
from fuzz.checks import check, target


def _peak_mib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m fuzz", description=__doc__)
    parser.add_argument("--cases", type=int, default=100_000, help="How many cases (default 100,000).")
    parser.add_argument("--start", type=int, default=0, help="Number of the first case.")
    parser.add_argument("--replay", type=int, action="append", default=[], metavar="N",
                        help="Run only case N (repeatable) and show it.")
    parser.add_argument("--max-failures", type=int, default=20, help="Stop after this many failures.")
    args = parser.parse_args(argv)
    numbers = args.replay or range(args.start, args.start + args.cases)
    failures = 0
    started = time.perf_counter()
    done = 0
    with target() as t:
        for number in numbers:
            case = make_case(number)
            problem = check(t, case)
            done += 1
            if args.replay:
                print(case.describe())
                print(f"  -> {problem or 'every goal holds'}")
            if problem:
                failures += 1
                print(f"FAILURE {problem}\n  reproduce: python3 -m fuzz --replay {number}\n  {case.describe()}",
                      flush=True)
                if failures >= args.max_failures:
                    break
            if done % 10_000 == 0:
                rate = done / (time.perf_counter() - started)
                print(f"{done} cases, {rate:.0f} cases/s, {failures} failures, peak RSS {_peak_mib()} MiB",
                      flush=True)
        answered = ", ".join(f"{k}: {v}" for k, v in sorted(t.outcomes.items()) if v)
    elapsed = time.perf_counter() - started
    print(f"answers: {answered}")
    print(f"fuzz: {done} cases in {elapsed:.1f} s ({done / elapsed:.0f} cases/s), {failures} failures, "
          f"peak RSS {_peak_mib()} MiB")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
