"""Crash at every I/O step of a workload and check every state a restart may find.

For each step k the process crashes there, and a restart may find: the OS's view (process kill),
the interrupted write torn at chosen byte offsets, and power-loss views (only fsync'd data and
directory entries, or part of the unsynced tail). Each reopened state must equal the state after
some prefix of the records the workload logged, a prefix at least as long as the acknowledged ones
(for the modes and crash kinds that promise it) and no longer than the acknowledged plus the
interrupted unit: nothing acknowledged lost, nothing duplicated, nothing unwritten, deleted stays
deleted. Then the reopened shard takes a write and reopens again.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from engine import operations as ops
from engine import codec
from engine.manifest import PathManifest
from engine.simulated_filesystem import SimulatedFileSystem

from .harness import Reference, Tally, canon, crashed_run, new_shard, record_bound, reference_run
from .workloads import ROOT, Workload


def torn_offsets(data: bytes) -> list[int]:
    """Byte offsets at which to tear an interrupted write: every byte of a short write; for a long
    one the first header bytes, both sides of every frame boundary, the middle and the end."""
    if len(data) <= 48:
        return list(range(len(data)))
    offsets = {1, 2, 7, codec.FRAME_HEADER_SIZE - 1, codec.FRAME_HEADER_SIZE, codec.FRAME_HEADER_SIZE + 1,
               len(data) // 2, len(data) - 1}
    position = data.find(codec.FRAME_MAGIC, 1)
    while position != -1 and len(offsets) < 40:
        offsets.update((position - 1, position, position + 1))
        position = data.find(codec.FRAME_MAGIC, position + 1)
    return sorted(offset for offset in offsets if 0 < offset < len(data))


def survivors(fs: SimulatedFileSystem, workload: Workload) -> Iterator[tuple[str, SimulatedFileSystem, bool]]:
    """(label, file system, is power loss) for every state a restart may find."""
    yield "process crash", fs.after_process_crash(), False
    step = fs.crashed
    if step is not None and step.operation in ("write", "pwrite"):
        for offset in torn_offsets(step.data):
            yield f"write torn at byte {offset}/{len(step.data)}", fs.torn(offset), False
    yield "power loss", fs.after_power_loss(), True
    yield "power loss, half the unsynced bytes kept", fs.after_power_loss(unsynced_kept=0.5), True
    yield "power loss, unsynced renames kept", fs.after_power_loss(entries_volatile=True), True
    yield "power loss, odd pages of unsynced appends kept", fs.after_power_loss(pages="odd"), True
    yield "power loss, only the last unsynced page kept", fs.after_power_loss(pages="last"), True


def bounds(reference: Reference, workload: Workload, acknowledged: int, power_loss: bool) -> tuple[int, int]:
    """Record counts the recovered state may correspond to: [lowest, highest]."""
    if acknowledged < 0:
        return 0, 0
    highest = reference.records_after_unit[min(acknowledged + 1, len(reference.records_after_unit) - 1)]
    if power_loss and workload.durability != "fsync":
        return 0, highest
    if workload.durability == "none":
        return reference.written_after_unit[acknowledged], highest
    return reference.records_after_unit[acknowledged], highest


def check_recovery(workload: Workload, reference: Reference, fs: SimulatedFileSystem, low: int, high: int,
                   label: str, tally: Tally) -> None:
    """Reopen, compare with the allowed prefixes, then write and reopen again."""
    tally.recoveries += 1
    with record_bound(workload):
        try:
            if workload.with_manifest:
                count = PathManifest(ROOT, fs).open(3, explicit=False)
                if count != 1 and high > 0:
                    raise AssertionError(f"manifest re-initialised with {count} shards over existing data")
            shard = new_shard(workload, fs)
            shard.open()
        except AssertionError:
            raise
        except Exception as exc:  # the property under test: a shard always opens
            tally.unopenable += 1
            tally.failures.append(f"{workload.name}: {label}: did not open: {type(exc).__name__}: {exc}")
            return
        got = canon(shard.state)
        matches = reference.states.get(got, [])
        if not any(low <= index <= high for index in matches):
            _classify(reference, got, low, tally)
            tally.failures.append(f"{workload.name}: {label}: recovered state is not a prefix in [{low}, {high}] "
                                  f"(matches prefixes {matches[:5]})")
            shard.close()
            return
        results = shard.execute([ops.CreateSession("after", "crash"),
                                 ops.Append("after", "crash", [{"role": "user", "content": "still writable",
                                                                 "message_id": "after-1"}])])
        shard.close()
        again = new_shard(workload, fs)
        again.open()
        written = again.read_range("after", "crash", 0, 10)["messages"] if results[1][0] else []
        again.close()
        if [m["message_id"] for m in written] != ["after-1"]:
            tally.failures.append(f"{workload.name}: {label}: a write after recovery did not survive a reopen")


def _classify(reference: Reference, got: tuple[Any, ...], low: int, tally: Tally) -> None:
    """Count lost and duplicated messages against the lowest allowed prefix, for the report."""
    def ids(snapshot: tuple[Any, ...]) -> list[str]:
        return [m[0] for _, _, messages in snapshot[1] for m in messages]
    wanted, found = ids(reference.counts[low]), ids(got)
    tally.lost += len(set(wanted) - set(found))
    tally.duplicated += len(found) - len(set(found))


def enumerate_crashes(workload: Workload, tally: Tally, step_filter: Callable[[int], bool] = lambda k: True) -> None:
    """Crash at every step of the workload; check every state a restart may find."""
    reference = reference_run(workload)
    for step in range(1, reference.steps + 1):
        if not step_filter(step):
            continue
        fs, acknowledged = crashed_run(workload, step)
        tally.crash_points += 1
        for label, survivor, power_loss in survivors(fs, workload):
            low, high = bounds(reference, workload, acknowledged, power_loss)
            check_recovery(workload, reference, survivor, low, high,
                           f"crash at step {step} ({fs.crashed.operation if fs.crashed else '?'}), {label}", tally)
