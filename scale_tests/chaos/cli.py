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
retries run. With the library's 30 s no call fails, and the recovery time also includes Ray's
wait before a call to the dead worker fails.
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
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from typing import Any

from .result import ModeResult, problems
from .run import run_mode

MODES = ("fsync", "flush", "none")


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


def _storage_path(args: argparse.Namespace, mode: str) -> str:
    """DIR/<mode> (must be empty) with --path, else a fresh temp dir that run_all removes."""
    if not args.path:
        return tempfile.mkdtemp(prefix=f"ffchat-chaos-{mode}-")
    path = os.path.join(args.path, mode)
    if os.path.exists(path) and os.listdir(path):
        raise SystemExit(f"{path} is not empty: the chaos run needs a fresh storage path")
    os.makedirs(path, exist_ok=True)
    return path


async def run_all(args: argparse.Namespace) -> list[ModeResult]:
    results = []
    for mode in args.modes:
        path = _storage_path(args, mode)
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


def _parse(argv: list[str] | None) -> argparse.Namespace:
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
    bad = [m for m in args.modes if m not in MODES]
    # Every shard needs a writer (the killer picks shards that writers are writing to).
    if bad or not args.modes or args.kills < 1 or args.shards < 1 or args.writers < args.shards or args.rate < 0:
        parser.error(f"bad arguments (modes {bad or args.modes}, kills {args.kills}, writers {args.writers}, "
                     f"shards {args.shards})")
    return args


def _run_all_once(args: argparse.Namespace) -> list[ModeResult]:
    """Run every mode; stop the Ray runtime afterwards if this process started it."""
    from api import runtime
    try:
        return asyncio.run(run_all(args))
    finally:
        import ray
        if runtime.owns_runtime() and ray.is_initialized():
            ray.shutdown()


def _print_notes(results: list[ModeResult]) -> None:
    """What is allowed or worth a look but fails nothing."""
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


def _write_json(args: argparse.Namespace, results: list[ModeResult], verdicts: dict[str, list[str]],
                elapsed: float) -> None:
    if os.path.dirname(args.json):
        os.makedirs(os.path.dirname(args.json), exist_ok=True)
    payload = {"machine": _machine(), "arguments": vars(args), "total_seconds": elapsed,
               "results": [asdict(r) for r in results], "problems": verdicts}
    with open(args.json, "w") as handle:
        json.dump(payload, handle, indent=2, default=str)
    print(f"json: {args.json}")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    started = time.perf_counter()
    results = _run_all_once(args)
    elapsed = time.perf_counter() - started
    print()
    print(f"chaos: SIGKILL of shard worker processes, {args.writers} writers, {args.shards} shards "
          f"on a {os.cpu_count()}-core machine, "
          f"request_timeout_s {args.request_timeout:g}, writes capped at "
          f"{f'{args.rate:g} msg/s' if args.rate else 'none'}, seed {args.seed}")
    print_table(results)
    verdicts = {r.mode: problems(r) for r in results}
    _print_notes(results)
    if args.json:
        _write_json(args, results, verdicts, elapsed)
    failed = {mode: found for mode, found in verdicts.items() if found}
    for mode, found in failed.items():
        for problem in found:
            print(f"FAIL {mode}: {problem}")
    print(f"\n{'FAILED' if failed else 'passed'} in {elapsed:.0f} s")
    return 1 if failed else 0
