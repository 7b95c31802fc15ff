"""Fault injection: fail one I/O step with ENOSPC or EIO (optionally after a short write) and check
that the live shard equals a reference that saw only the operations acknowledged as successful,
keeps serving, retries failed background steps until health is clean, and reopens equal."""

from __future__ import annotations

import errno

from engine import operations as ops
from engine.errors import StorageFailure
from engine.shard import Shard
from engine.simulated_filesystem import SimulatedFileSystem

from .harness import UNIT_SECONDS, Clock, Tally, canon, create_manifest, new_shard, record_bound, reference_run
from .workloads import Op, Workload


def inject_faults(workload: Workload, tally: Tally, codes: tuple[int, ...] = (errno.ENOSPC, errno.EIO)) -> None:
    """Fail each step once (ENOSPC, EIO; writes also after a short write) and check the shard keeps
    serving, matches a reference of the acknowledged operations, heals and reopens equal."""
    steps = reference_run(workload).steps
    for step in range(1, steps + 1):
        for code in codes:
            for partial in ((0, 7) if code == errno.ENOSPC else (0,)):
                label = f"{errno.errorcode[code]} at step {step}" + (f" after {partial} bytes" if partial else "")
                attempt_fault(workload, step, code, partial, label, tally)


def attempt_fault(workload: Workload, step: int, code: int, partial: int, label: str, tally: Tally) -> None:
    """One fault point: a failed check or anything that escaped the engine becomes a failure in the tally."""
    tally.fault_points += 1
    try:
        faulty_run(workload, step, code, partial, tally)
    except Exception as exc:  # AssertionError or anything that escaped the engine
        tally.failures.append(f"{workload.name}: {label}: {type(exc).__name__}: {exc}")


def faulty_run(workload: Workload, fail_step: int, code: int, partial: int, tally: Tally) -> None:
    """Run the workload with step `fail_step` failing with `code` (after `partial` bytes of a write);
    raises AssertionError where the shard departs from its acknowledged operations or stops serving."""
    fs = SimulatedFileSystem(fail=lambda step: code if step.number == fail_step else None,
                             partial_write_on_fail=partial)
    clock, reference_clock = Clock(), Clock()
    with record_bound(workload):
        shard, reference = _open_pair(workload, fs, clock, reference_clock)
        _run_units(workload, shard, reference, clock, reference_clock)
        if workload.durability != "none":  # a crash now, with any failed step still pending, loses nothing
            _reopened_equal(workload, fs, reference, tally,
                            "a crash after the fault lost or resurrected data").log.release()
        _heal(shard, clock)
        _write_after_fault(shard, reference, clock)
        _reopened_equal(workload, fs, reference, tally,
                        "reopened state differs from the acknowledged operations").close()


def _open_pair(workload: Workload, fs: SimulatedFileSystem, clock: Clock, reference_clock: Clock) -> tuple[Shard, Shard]:
    """Open the shard on the faulty file system (a failed open released everything: a retry must
    succeed) and the reference shard on a clean one."""
    clean = SimulatedFileSystem()
    if workload.with_manifest:
        create_manifest(clean)
        try:
            create_manifest(fs)
        except StorageFailure:
            create_manifest(fs)  # the lock was released: a retry opens
    shard = new_shard(workload, fs, clock)
    try:
        shard.open()
    except StorageFailure:
        shard = new_shard(workload, fs, clock)
        shard.open()  # the failed open released everything: the retry must succeed
    reference = new_shard(workload, clean, reference_clock)
    reference.open()
    return shard, reference


def _run_units(workload: Workload, shard: Shard, reference: Shard, clock: Clock, reference_clock: Clock) -> None:
    """Run every unit on the shard and only its acknowledged operations on the reference; equal after each."""
    for position, unit in enumerate(workload.units):
        clock.now += UNIT_SECONDS * 4
        reference_clock.now = clock.now
        results = shard.execute(unit)
        accepted = [op for op, (ok, _) in zip(unit, results) if ok]
        reference.execute(accepted)
        if canon(shard.state) != canon(reference.state):
            raise AssertionError(f"after unit {position} the live state differs from the acknowledged operations")


def _reopened_equal(workload: Workload, fs: SimulatedFileSystem, reference: Shard, tally: Tally,
                    problem: str) -> Shard:
    """A shard opened on what a process crash would leave now; raises `problem` unless it equals the reference."""
    reopened = new_shard(workload, fs.after_process_crash())
    reopened.open()
    if canon(reopened.state) != canon(reference.state):
        tally.lost += 1
        raise AssertionError(problem)
    return reopened


def _heal(shard: Shard, clock: Clock) -> None:
    """Let backoffs pass so failed background steps are retried; the shard must end up not degraded."""
    for _ in range(80):
        clock.now += 1.0
        shard.maintain()
    health = shard.probe()
    if health["degraded"]:
        raise AssertionError(f"still degraded after retries: {health['degraded_reason']}, "
                             f"pending {health['pending_steps']}")


def _after_fault() -> list[Op]:
    return [ops.CreateSession("after", "fault")]


def _write_after_fault(shard: Shard, reference: Shard, clock: Clock) -> None:
    """The shard takes a write after the fault and closes cleanly; the reference does the same."""
    probe = shard.execute(_after_fault())
    if not probe[0][0]:  # the one fault may hit this write: then the next one must succeed
        clock.now += 10.0
        probe = shard.execute(_after_fault())
    if not probe[0][0]:
        raise AssertionError(f"the shard does not take writes after the fault: {probe[0][1]}")
    reference.execute(_after_fault())
    try:
        shard.close()
    except StorageFailure as exc:
        raise AssertionError(f"close failed: {exc}") from None
    reference.close()
