"""Seeded random runs: random workloads, each crashed at a few random steps and failed at a few others."""

from __future__ import annotations

import errno
import random

from engine import operations as ops

from .enumeration import enumerate_crashes
from .faults import attempt_fault
from .harness import WALL_CLOCK, Tally, reference_run
from .workloads import Op, Workload, message


def random_workload(rng: random.Random, length: int) -> Workload:
    """Random operations over two users and three sessions, in a random mode."""
    durability = rng.choice(["fsync", "flush", "none"])
    units: list[list[Op]] = [[ops.CreateSession("alice", "s1"), ops.CreateSession("bob", "s1")]]
    next_id = 0
    for _ in range(length):
        unit: list[Op] = []
        for _ in range(rng.randint(1, 3)):
            user, session = rng.choice([("alice", "s1"), ("bob", "s1"), ("alice", "s2")])
            kind = rng.random()
            if kind < 0.55:
                batch = [message(f"r{next_id + i}", "y" * rng.choice([5, 300, 1500])) for i in range(rng.randint(1, 4))]
                next_id += len(batch)
                unit.append(ops.Append(user, session, batch))
            elif kind < 0.65:
                unit.append(ops.CreateSession(user, session))
            elif kind < 0.72:
                unit.append(ops.DeleteSession(user, session))
            elif kind < 0.78:
                unit.append(ops.Compact())
            elif kind < 0.84:
                unit.append(ops.UpdateSession(user, session, {"title": f"t{next_id}"}))
            elif kind < 0.9:
                unit.append(ops.Flush())
            else:
                unit.append(ops.Purge(WALL_CLOCK + 1, user))
        units.append(unit)
    return Workload(f"random ({durability})", durability, units, segment_bytes_max=4096,
                    compress_sealed=rng.random() < 0.5, record_bytes_max=rng.choice([None, 4096]))


def randomised(seed: int, runs: int, tally: Tally) -> None:
    """`runs` random workloads; each crashes at a few random steps and fails a few random steps."""
    rng = random.Random(seed)
    for run in range(runs):
        workload = random_workload(rng, rng.randint(3, 8))
        steps = reference_run(workload).steps
        chosen = set(rng.sample(range(1, steps + 1), min(6, steps)))
        enumerate_crashes(workload, tally, step_filter=lambda k: k in chosen)
        faults = set(rng.sample(range(1, steps + 1), min(3, steps)))
        for step in faults:
            code = rng.choice([errno.ENOSPC, errno.EIO])
            label = f"run {run} seed {seed}: {errno.errorcode[code]} at step {step}"
            attempt_fault(workload, step, code, rng.choice([0, 5]), label, tally)
