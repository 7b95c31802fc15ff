"""Crash-point enumeration and fault injection for one shard, on the simulated file system.

`python -m scale_tests.crash_points [--seed N] [--runs M] [--skip-enumeration]` runs the enumeration
(every workload: a crash and a fault at every I/O step) and a longer randomised run (the default test
suite runs the enumeration and a short seeded randomised run). Exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import time

from .enumeration import enumerate_crashes
from .faults import inject_faults
from .harness import Tally
from .randomised import randomised
from .workloads import workloads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scale_tests.crash_points", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--runs", type=int, default=200, help="randomised workloads after the enumeration")
    parser.add_argument("--skip-enumeration", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    tally = Tally()
    if not args.skip_enumeration:
        _enumerate_all(tally)
    randomised(args.seed, args.runs, tally)
    print(f"\ncrash points {tally.crash_points}, recoveries checked {tally.recoveries}, fault points "
          f"{tally.fault_points}; lost {tally.lost}, duplicated {tally.duplicated}, unopenable {tally.unopenable}, "
          f"failures {len(tally.failures)} (seed {args.seed}, {args.runs} random runs, "
          f"{time.perf_counter() - started:.0f} s)")
    for failure in tally.failures[:30]:
        print("  " + failure)
    return 1 if tally.failures else 0


def _enumerate_all(tally: Tally) -> None:
    """Every workload: a crash and a fault at every step, one line each."""
    for workload in workloads():
        part = Tally()
        enumerate_crashes(workload, part)
        inject_faults(workload, part)
        print(f"{workload.name:36s} {workload.durability:5s} crash points {part.crash_points:5d} "
              f"recoveries {part.recoveries:6d} fault points {part.fault_points:5d} failures {len(part.failures)}",
              flush=True)
        tally.add(part)
