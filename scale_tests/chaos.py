"""Process-level chaos: SIGKILL shard worker processes under concurrent writers, then verify a fresh bridge.

    python -m scale_tests.chaos [--kills K] [--modes fsync,flush[,none]] [--writers N] [--shards S]
                                [--seed N] [--json FILE] [--path DIR] [--rate MSG_PER_S]
                                [--request-timeout SECONDS]
    chat-bridge bench chaos [same flags]          (also: python -m scale_tests chaos ...)

Per durability mode: a fresh storage path (a temp dir removed afterwards, or DIR/<mode> kept with
--path), one bridge with S shards, one session per writer (spread evenly over the shards), and N
writer tasks storing messages with explicit `message_id`s (single stores and some
`store_chat_messages` batches). A call that fails with TIMEOUT or SHARD_UNAVAILABLE is retried by
the writer with the SAME message_id (contract §10.5) until acknowledged or the run ends. A killer
task K times picks a shard (seeded), reads the worker pid from the shard actor's `probe()`, sends
SIGKILL, and measures the recovery time: from the kill until a history read on that shard succeeds
and the probe answers from a new pid with the log open. Then the writers stop, the bridge closes,
and a FRESH bridge on the same path reads every session back:

- acknowledged ⊆ recovered (lost = acknowledged ids missing; allowed only in `none`, ~1 s per kill),
- no message_id twice in a session (duplicated), nothing recovered that was never sent (phantom),
- per session, the recovered order of acknowledged ids is their acknowledgement order, and every
  acknowledged batch is contiguous,
- every shard came back after each kill and answers the fresh bridge's health_check.

Exits 1 on any of: a lost acknowledged message in fsync/flush, a duplicate, a phantom, an order
violation, a shard that did not come back, a kill that could not be made, or a failure code other
than TIMEOUT / SHARD_UNAVAILABLE.

Defaults: 100 kills per mode, modes fsync,flush, 16 writers, 2 shards (the development machine has
2 cores), writes capped at 2000 messages/s in total (a restart replays the whole log: uncapped, the
logs and with them the recovery times grow without bound; see `run_mode`), request_timeout_s 1 s:
shorter than a restart, so calls in flight at a kill end in TIMEOUT and the writers' same-id
retries run. With the library's 30 s no call fails, and the recovery time includes Ray's wait
before a call to the dead worker fails (~1.1-1.7 s here, against ~1.0 s with a 1 s deadline).
Ray's driver prints one "(raylet) A worker died or was killed..." line per kill (on stdout, with
the table; progress goes to stderr): expected, each is one of our SIGKILLs.
The default test suite runs a short version (tests/test_chaos.py) through `run_mode` and
`problems`, the same code as this command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from api import FFChatAppBridge

from .measure import stats

RETRYABLE = ("TIMEOUT", "SHARD_UNAVAILABLE")
DURABLE_MODES = ("fsync", "flush")
USER = "chaos_user"
_SAMPLE = 50  # ids kept in the report per kind of problem


@dataclass
class KillRecord:
    shard: int
    old_pid: int
    new_pid: int | None
    recovery_ms: float | None  # None: the shard did not come back within the recovery limit
    acknowledged_before: int


@dataclass
class ModeResult:
    """What one durability mode's run saw; `problems()` turns it into a verdict."""

    mode: str
    shards: int
    writers: int
    kills_requested: int
    rate_cap: float = 0.0
    request_timeout_s: float = 0.0
    kills: int = 0
    pid_changes: int = 0
    acknowledged: int = 0
    attempted: int = 0
    recovered: int = 0
    lost: int = 0
    duplicated: int = 0
    phantom: int = 0
    order_violations: int = 0
    split_batches: int = 0
    partial_batch_replays: int = 0
    replays: int = 0            # retries answered "already stored" (the in-doubt call had landed)
    in_doubt: int = 0           # ids still being retried when the run ended (may or may not be stored)
    slowest_call_ms: float = 0.0
    calls_over_deadline: int = 0  # calls that took longer than request_timeout_s + 100 ms (contract §10.6)
    failures_by_code: dict[str, int] = field(default_factory=dict)
    unexpected_failures: list[str] = field(default_factory=list)
    recovery_ms: dict[str, float] = field(default_factory=dict)
    messages_per_s: float = 0.0
    write_seconds: float = 0.0
    verify_seconds: float = 0.0
    shards_back: bool = False
    shards_not_back: list[str] = field(default_factory=list)
    restarts_reported: list[int] = field(default_factory=list)
    kills_per_shard: list[int] = field(default_factory=list)
    sessions_missing: list[str] = field(default_factory=list)
    lost_ids: list[str] = field(default_factory=list)
    duplicated_ids: list[str] = field(default_factory=list)
    phantom_ids: list[str] = field(default_factory=list)
    order_samples: list[str] = field(default_factory=list)
    kill_log: list[KillRecord] = field(default_factory=list)
    path: str = ""


def problems(result: ModeResult) -> list[str]:
    """Why this run fails (empty: it passed). `none` may lose acknowledged writes, never duplicate them."""
    found = []
    durable = result.mode in DURABLE_MODES
    if result.kills < result.kills_requested:
        found.append(f"only {result.kills} of {result.kills_requested} kills were made")
    if result.pid_changes < result.kills:
        found.append(f"{result.kills - result.pid_changes} kills did not yield a new worker pid")
    if durable and result.lost:
        found.append(f"{result.lost} acknowledged messages lost, e.g. {result.lost_ids[:5]}")
    if result.duplicated:
        found.append(f"{result.duplicated} duplicated message ids, e.g. {result.duplicated_ids[:5]}")
    if durable and result.sessions_missing:
        found.append(f"sessions created before the run are gone: {result.sessions_missing}")
    if result.phantom:
        found.append(f"{result.phantom} recovered ids were never sent, e.g. {result.phantom_ids[:5]}")
    if result.order_violations:
        found.append(f"{result.order_violations} sessions out of acknowledgement order: {result.order_samples[:3]}")
    if result.split_batches:
        found.append(f"{result.split_batches} acknowledged batches not contiguous")
    if durable and result.partial_batch_replays:
        found.append(f"{result.partial_batch_replays} retried batches were partly stored already")
    if not result.shards_back:
        found.append(f"shards not back: {result.shards_not_back}")
    if result.unexpected_failures:
        found.append(f"{len(result.unexpected_failures)} non-retryable failures, e.g. {result.unexpected_failures[:3]}")
    return found


class _Run:
    """Shared state of one mode's run: writers append, the killer reads, the verifier checks."""

    def __init__(self, result: ModeResult) -> None:
        self.result = result
        self.stop = asyncio.Event()
        self.acked: dict[str, list[str]] = {}          # session -> ids in acknowledgement order
        self.batches: dict[str, list[list[str]]] = {}  # session -> acknowledged batches (ids)
        self.attempted: set[str] = set()
        self.failures: Counter[str] = Counter()
        self.acknowledged = 0
        self.deadline_ms = 0.0


def _content(message_id: str) -> dict[str, Any]:
    # Deterministic from the id, so a caller-level retry sends exactly the same message.
    role = "user" if zlib.crc32(message_id.encode()) % 2 else "assistant"
    return {"role": role, "content": f"chaos payload {message_id} lorem ipsum dolor sit amet",
            "message_id": message_id}


async def _writer(run: _Run, data: Any, session_id: str, number: int, rng: random.Random,
                  rate: float) -> None:
    """Store messages until the run stops; `rate` caps this writer's messages per second (0: none)."""
    sequence = 0
    acked = run.acked[session_id]
    next_at = time.monotonic()
    while not run.stop.is_set():
        if rate:
            now = time.monotonic()
            if next_at > now:
                await asyncio.sleep(next_at - now)
            elif now - next_at > 1.0:
                next_at = now  # after a stall (a shard restarting) no catch-up burst
        size = rng.randint(2, 8) if rng.random() < 0.25 else 1
        next_at += size / rate if rate else 0.0
        ids = [f"w{number}-{sequence + i}" for i in range(size)]
        sequence += size
        run.attempted.update(ids)
        first_try = True
        while True:
            started = time.monotonic()
            if size == 1:
                result = await data.store_chat_message(USER, session_id, _content(ids[0]))
            else:
                result = await data.store_chat_messages(USER, session_id, [_content(i) for i in ids])
            took_ms = (time.monotonic() - started) * 1000
            run.result.slowest_call_ms = max(run.result.slowest_call_ms, took_ms)
            if took_ms > run.deadline_ms:
                run.result.calls_over_deadline += 1
            if result["success"]:
                if not first_try:
                    replayed = (result["data"]["duplicate"] if size == 1 else result["data"]["duplicates"])
                    if replayed:
                        run.result.replays += 1
                    if size > 1 and 0 < replayed < size:
                        run.result.partial_batch_replays += 1
                acked.extend(ids)
                if size > 1:
                    run.batches[session_id].append(ids)
                run.acknowledged += size
                break
            code = result["metadata"]["error_code"] or "UNKNOWN"
            run.failures[code] += 1
            if code not in RETRYABLE:
                # Not a restart symptom: a finding. This writer stops (a vanished session would
                # otherwise fail every later call the same way); the verdict reports it.
                run.result.unexpected_failures.append(f"{session_id}/{ids[0]}: {code}: {result['error']}")
                run.result.in_doubt += size
                return
            if run.stop.is_set():
                run.result.in_doubt += size  # the run ended before this id was acknowledged
                return
            first_try = False


async def _probe(handle: Any, timeout_s: float = 2.0) -> dict[str, Any] | None:
    try:
        return await asyncio.wait_for(handle.probe.options(concurrency_group="health").remote(), timeout=timeout_s)
    except asyncio.CancelledError:
        raise
    except Exception:  # a dead or restarting actor: the caller polls again
        return None


async def _serving_pid(handle: Any, limit_s: float) -> int | None:
    """The pid of the shard's worker once it serves (log open), or None after `limit_s`."""
    ends = time.monotonic() + limit_s
    while time.monotonic() < ends:
        facts = await _probe(handle)
        if facts and facts.get("log_open") and facts.get("pid"):
            return int(facts["pid"])
        await asyncio.sleep(0.02)
    return None


async def _killer(run: _Run, bridge: Any, shard_sessions: dict[int, str], kills: int, rng: random.Random,
                  recovery_limit_s: float, progress: bool) -> None:
    backend = bridge.backend
    data = bridge.get_data_layer()
    result = run.result
    warm_up_ends = time.monotonic() + recovery_limit_s
    while run.acknowledged < 4 * result.writers:  # writers are running before the first kill
        if time.monotonic() > warm_up_ends:
            result.shards_not_back.append(f"writers acknowledged only {run.acknowledged} messages before any kill")
            return
        await asyncio.sleep(0.01)
    for number in range(kills):
        await asyncio.sleep(rng.uniform(0.05, 0.3))  # let writes flow between kills
        index = rng.randrange(backend.shard_count)
        old_pid = await _serving_pid(backend.shards[index], recovery_limit_s)
        if old_pid is None:
            result.shards_not_back.append(f"shard {index}: not serving before kill {number + 1}")
            return
        acknowledged_before = run.acknowledged
        os.kill(old_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        result.kills += 1
        result.kills_per_shard[index] += 1
        new_pid: int | None = None
        recovery_ms: float | None = None
        session_id = shard_sessions[index]
        while time.monotonic() - killed_at < recovery_limit_s:
            page = await data.get_chat_history(USER, session_id, limit=1, latest=True)
            if page["success"]:
                served_at = time.monotonic()
                facts = await _probe(backend.shards[index])
                if facts and facts.get("log_open") and facts.get("pid") not in (None, old_pid):
                    new_pid = int(facts["pid"])
                    recovery_ms = (served_at - killed_at) * 1000
                    break
            await asyncio.sleep(0.01)
        result.kill_log.append(KillRecord(index, old_pid, new_pid, recovery_ms, acknowledged_before))
        if new_pid is None:
            result.shards_not_back.append(f"shard {index}: not back {recovery_limit_s:.0f} s after kill {number + 1}")
            return
        result.pid_changes += 1
        if progress and (number + 1) % 10 == 0:
            print(f"   {result.mode}: {number + 1}/{kills} kills, {run.acknowledged} acknowledged, "
                  f"last recovery {recovery_ms:.0f} ms", file=sys.stderr, flush=True)


async def _create_sessions(bridge: Any, writers: int, shards: int) -> tuple[list[str], dict[int, str]]:
    """One session per writer, spread evenly over the shards (writer w's session lives on shard w % S)."""
    backend = bridge.backend
    data = bridge.get_data_layer()
    wanted = [number % shards for number in range(writers)]
    sessions: list[str] = []
    candidate = 0
    for shard in wanted:
        while True:
            session_id = f"chaos-s{candidate}"
            candidate += 1
            if backend.session_shard(USER, session_id) == shard:
                break
        created = await data.storage.create_session(USER, "chaos", session_id=session_id)
        if created != session_id:
            raise RuntimeError(f"could not create session {session_id}: {created!r}")
        sessions.append(session_id)
    shard_sessions = {}
    for session_id, shard in zip(sessions, wanted):
        shard_sessions.setdefault(shard, session_id)
    return sessions, shard_sessions


async def _read_all(data: Any, session_id: str) -> list[str] | None:
    """Every message id of the session, oldest first; None if the session itself is gone."""
    ids: list[str] = []
    while True:
        page = await data.get_chat_history(USER, session_id, limit=10000, offset=len(ids))
        if not page["success"] and page["metadata"]["error_code"] == "SESSION_NOT_FOUND":
            return None
        if not page["success"]:
            raise RuntimeError(f"history of {session_id} at offset {len(ids)}: "
                               f"{page['metadata']['error_code']} {page['error']}")
        ids.extend(m["message_id"] for m in page["data"]["messages"])
        if not page["data"]["has_more"] or not page["data"]["messages"]:
            if len(ids) != page["data"]["total_count"]:
                raise RuntimeError(f"history of {session_id}: read {len(ids)}, total_count "
                                   f"{page['data']['total_count']}")
            return ids


async def _verify(run: _Run, path: str, options: dict[str, Any], sessions: list[str]) -> None:
    """Open a fresh bridge on the path and compare every session with what was acknowledged."""
    result = run.result
    bridge = await FFChatAppBridge.create_for_chat_app(path, options)
    try:
        data = bridge.get_data_layer()
        health = await bridge.health_check()
        down = [s for s in health["shards"] if s["status"] == "unavailable"]
        result.shards_not_back += [f"fresh bridge: shard {s['shard']} unavailable: {s['error']}" for s in down]
        if len(health["shards"]) != result.shards:
            result.shards_not_back.append(f"fresh bridge sees {len(health['shards'])} shards")
        for session_id in sessions:
            recovered = await _read_all(data, session_id)
            if recovered is None:
                result.sessions_missing.append(session_id)
                recovered = []
            result.recovered += len(recovered)
            counts = Counter(recovered)
            duplicated = sorted(i for i, n in counts.items() if n > 1)
            result.duplicated += sum(counts[i] - 1 for i in duplicated)
            result.duplicated_ids += [f"{session_id}/{i} x{counts[i]}" for i in duplicated][:_SAMPLE]
            acked = run.acked[session_id]
            present = set(counts)
            lost = [i for i in acked if i not in present]
            result.lost += len(lost)
            result.lost_ids += [f"{session_id}/{i}" for i in lost][:_SAMPLE]
            phantom = [i for i in counts if i not in run.attempted]
            result.phantom += len(phantom)
            result.phantom_ids += [f"{session_id}/{i}" for i in phantom][:_SAMPLE]
            # Order: the acknowledged ids that survived appear in acknowledgement order (first occurrences).
            acked_set = set(acked)
            seen: set[str] = set()
            recovered_order = []
            for i in recovered:
                if i in acked_set and i not in seen:
                    seen.add(i)
                    recovered_order.append(i)
            expected = [i for i in acked if i in present]
            if recovered_order != expected:
                result.order_violations += 1
                first = next((k for k, (a, b) in enumerate(zip(recovered_order, expected)) if a != b),
                             min(len(expected), len(recovered_order)))
                result.order_samples.append(f"{session_id}: position {first}: recovered "
                                            f"{recovered_order[first:first + 3]} expected {expected[first:first + 3]}")
            position = {}
            for k, i in enumerate(recovered):
                position.setdefault(i, k)
            for batch in run.batches[session_id]:
                if all(i in position for i in batch):
                    start = position[batch[0]]
                    if [position[i] for i in batch] != list(range(start, start + len(batch))):
                        result.split_batches += 1
    finally:
        await bridge.close()


async def run_mode(mode: str, path: str, *, kills: int, writers: int = 16, shards: int = 2, seed: int = 1,
                   request_timeout_s: float = 1.0, rate: float = 2000.0, recovery_limit_s: float = 60.0,
                   progress: bool = False) -> ModeResult:
    """One durability mode: write under K SIGKILLs on `path` (which should be empty), then verify.

    `rate` caps the writers' total messages per second (0: as fast as they can). Without a cap the
    run feeds itself: a restart replays the whole log, so the longer the log the longer each
    recovery, and meanwhile the other shards' writers run at full speed (measured here: 100 kills
    in flush mode passed 1.7M messages by kill 40, recovery 12 s and ~1.7 GB per shard process).
    """
    result = ModeResult(mode=mode, shards=shards, writers=writers, kills_requested=kills,
                        kills_per_shard=[0] * shards, path=path, rate_cap=rate, request_timeout_s=request_timeout_s)
    options = {"shard_count": shards, "durability": mode, "request_timeout_s": request_timeout_s,
               "performance_mode": "balanced"}
    run = _Run(result)
    run.deadline_ms = request_timeout_s * 1000 + 100
    bridge = await FFChatAppBridge.create_for_chat_app(path, options)
    try:
        sessions, shard_sessions = await _create_sessions(bridge, writers, shards)
        for session_id in sessions:
            run.acked[session_id] = []
            run.batches[session_id] = []
        if mode == "none":
            # `none` writes to the OS at least every second: let the sessions reach the log, so a
            # kill can cost messages (allowed) but not a whole session's existence.
            await asyncio.sleep(1.5)
        data = bridge.get_data_layer()
        rng = random.Random(f"{seed}-{mode}")
        started = time.monotonic()
        tasks = [asyncio.ensure_future(_writer(run, data, session_id, number, random.Random(f"{seed}-{mode}-{number}"),
                                               rate / writers))
                 for number, session_id in enumerate(sessions)]
        try:
            await _killer(run, bridge, shard_sessions, kills, rng, recovery_limit_s, progress)
        finally:
            run.stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        result.write_seconds = time.monotonic() - started
        health = await bridge.health_check()
        result.restarts_reported = [s["restarts"] for s in health["shards"]]
    finally:
        await bridge.close()
    result.acknowledged = run.acknowledged
    result.attempted = len(run.attempted)
    result.failures_by_code = dict(run.failures)
    result.messages_per_s = run.acknowledged / result.write_seconds if result.write_seconds else 0.0
    recoveries = [k.recovery_ms for k in result.kill_log if k.recovery_ms is not None]
    summary = stats(recoveries)
    result.recovery_ms = {"n": summary["n"], "p50": summary["p50_ms"], "p95": summary["p95_ms"],
                          "max": summary["max_ms"], "avg": summary["avg_ms"]}
    verify_started = time.monotonic()
    # The fresh bridge reads whole histories on a quiet runtime: a generous deadline, no chaos left.
    await _verify(run, path, {**options, "request_timeout_s": 30.0}, sessions)
    result.verify_seconds = time.monotonic() - verify_started
    result.shards_back = not result.shards_not_back
    return result


def print_table(results: list[ModeResult]) -> None:
    header = (f"{'mode':6s} {'kills':>5s} {'acked':>8s} {'lost':>5s} {'dup':>4s} {'replays':>7s} {'in-doubt':>8s} "
              f"{'rec p50':>8s} {'rec max':>8s} {'msg/s':>7s} {'shards':>6s}  failed calls by code")
    print(header)
    print("-" * len(header))
    for r in results:
        failed = ", ".join(f"{code} {n}" for code, n in sorted(r.failures_by_code.items())) or "-"
        print(f"{r.mode:6s} {r.kills:5d} {r.acknowledged:8d} {r.lost:5d} {r.duplicated:4d} {r.replays:7d} "
              f"{r.in_doubt:8d} {r.recovery_ms.get('p50', 0):6.0f}ms {r.recovery_ms.get('max', 0):6.0f}ms "
              f"{r.messages_per_s:7.0f} {'back' if r.shards_back else 'DOWN':>6s}  {failed}")


def _machine() -> dict[str, Any]:
    import ray
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "ray": ray.__version__}


async def run_all(args: argparse.Namespace) -> list[ModeResult]:
    results = []
    for mode in args.modes:
        if args.path:
            path = os.path.join(args.path, mode)
            if os.path.exists(path) and os.listdir(path):
                raise SystemExit(f"{path} is not empty: the chaos run needs a fresh storage path")
            os.makedirs(path, exist_ok=True)
        else:
            path = tempfile.mkdtemp(prefix=f"ffchat-chaos-{mode}-")
        print(f"[{mode}] {args.kills} kills, {args.writers} writers, {args.shards} shards on {path}",
              file=sys.stderr, flush=True)
        try:
            result = await run_mode(mode, path, kills=args.kills, writers=args.writers, shards=args.shards,
                                    seed=args.seed, request_timeout_s=args.request_timeout, rate=args.rate,
                                    progress=True)
        finally:
            if not args.path:
                shutil.rmtree(path, ignore_errors=True)
        results.append(result)
        print(f"      done in {result.write_seconds + result.verify_seconds:.0f} s", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scale_tests.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=100, help="SIGKILLs per durability mode (default 100)")
    parser.add_argument("--modes", default="fsync,flush", help="comma list of fsync, flush, none")
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--shards", type=int, default=2, help="default 2: the development machine has 2 cores")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", default=None, help="write the figures and every kill as JSON")
    parser.add_argument("--path", default=None, help="keep the data under DIR/<mode> instead of a removed temp dir")
    parser.add_argument("--rate", type=float, default=2000.0,
                        help="cap on the writers' total messages/s (default 2000; 0: no cap, see run_mode)")
    parser.add_argument("--request-timeout", type=float, default=1.0,
                        help="the bridge's request_timeout_s (default 1: shorter than a restart, so calls in flight "
                             "at a kill fail and the writers' same-id retries are exercised)")
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in args.modes if m not in ("fsync", "flush", "none")]
    if bad or not args.modes or args.kills < 1 or args.writers < 1 or args.shards < 1 or args.rate < 0:
        parser.error(f"bad arguments (modes {bad or args.modes}, kills {args.kills}, writers {args.writers}, "
                     f"shards {args.shards})")
    from api import runtime
    started = time.perf_counter()
    try:
        results = asyncio.run(run_all(args))
    finally:
        import ray
        if runtime.owns_runtime() and ray.is_initialized():
            ray.shutdown()
    elapsed = time.perf_counter() - started
    print()
    print(f"chaos: SIGKILL of shard worker processes, {args.writers} writers, {args.shards} shards "
          f"on a {os.cpu_count()}-core machine (2 shards by default: the development machine has 2 cores), "
          f"request_timeout_s {args.request_timeout:g}, writes capped at "
          f"{f'{args.rate:g} msg/s' if args.rate else 'none'}, seed {args.seed}")
    print_table(results)
    verdicts = {r.mode: problems(r) for r in results}
    for r in results:
        if r.mode == "none" and r.lost:
            print(f"note: none lost {r.lost} acknowledged messages (allowed: up to ~1 s per kill), "
                  f"e.g. {r.lost_ids[:3]}")
        if r.mode == "none" and r.sessions_missing:
            print(f"note: none lost whole sessions (created > 1 s before the first kill): {r.sessions_missing}")
        if r.calls_over_deadline:
            print(f"note: {r.mode}: {r.calls_over_deadline} store calls took longer than request_timeout_s + 100 ms "
                  f"(slowest {r.slowest_call_ms:.0f} ms; contract §10.6)")
        if sum(r.restarts_reported) != r.kills:
            print(f"note: {r.mode}: health_check reports restarts {r.restarts_reported}, kills per shard "
                  f"{r.kills_per_shard}")
    if args.json:
        if os.path.dirname(args.json):
            os.makedirs(os.path.dirname(args.json), exist_ok=True)
        payload = {"machine": _machine(), "arguments": vars(args), "total_seconds": elapsed,
                   "results": [asdict(r) for r in results], "problems": verdicts}
        with open(args.json, "w") as handle:
            json.dump(payload, handle, indent=2, default=str)
        print(f"json: {args.json}")
    failed = {mode: found for mode, found in verdicts.items() if found}
    for mode, found in failed.items():
        for problem in found:
            print(f"FAIL {mode}: {problem}")
    print(f"\n{'FAILED' if failed else 'passed'} in {elapsed:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
