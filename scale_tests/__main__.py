"""`python -m scale_tests` / `chat-bridge bench`: the requirements suite on ours and on SQLite, side by side.

    python -m scale_tests [--quick] [--factors 1,2,5,10] [--json FILE] [--chart FILE] [--seed N]
                          [--address auto|host:port] [--sections a,b] [--shards N]
    python -m scale_tests chaos [--kills K] [--modes fsync,flush[,none]] [--writers N] [--shards S] ...

Exits non-zero only on errors or wrong results (lost messages, missing search hits), never on timing.
`chat-bridge bench` takes the same arguments. The `chaos` sub-command is the process-level chaos
run (SIGKILL of shard workers under concurrent writers, then verification through a fresh bridge;
same as `python -m scale_tests.chaos`, see its --help); it fails on a lost or duplicated message.
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
from typing import Any

from api.backend import DATA_PLANE_VARIABLE
from engine.config import MB

from .measure import Figure
from .targets import OursTarget
from .sections import SECTIONS, Context, WrongResult


def _machine() -> dict[str, Any]:
    import psutil
    import ray
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1), "ray": ray.__version__,
            "ray_resources": {k: v for k, v in ray.cluster_resources().items() if not k.startswith("node:")},
            "nodes": len([n for n in ray.nodes() if n.get("Alive")])}


def _start_ray(address: str | None) -> float:
    """Start or join Ray as the library does (the local default: token auth, capped object store,
    a runtime the library owns, so no spare actors are started ahead of need)."""
    import ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = time.perf_counter()
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    else:
        from api import runtime
        asyncio.run(runtime.ensure_ray(None))
    return time.perf_counter() - started


def _format(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("msg/s", "op/s"):
        return f"{value:,.0f}"
    if unit == "bytes":
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def print_table(figures: list[Figure]) -> None:
    header = f"{'section':13s} {'figure':40s} {'ours':>11s} {'sqlite':>11s} {'ratio':>7s} {'target':>11s}  {'':4s} unit"
    print(header)
    print("-" * len(header))
    for f in figures:
        verdict = "" if f.passed is None else ("PASS" if f.passed else "miss")
        ratio = "-" if f.ratio is None else f"{f.ratio:.2f}x"
        target = "-" if f.target is None else ((">=" if f.higher_is_better else "<=") + _format(f.target, f.unit))
        print(f"{f.section:13s} {f.name[:40]:40s} {_format(f.ours, f.unit):>11s} {_format(f.baseline, f.unit):>11s} "
              f"{ratio:>7s} {target:>11s}  {verdict:4s} {f.unit}{('  ' + f.note) if f.note else ''}")


def write_chart(path: str, scalability: dict[str, Any]) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, rows in scalability.items():
        factors = sorted(rows)
        left.plot(factors, [rows[f]["throughput"] for f in factors], marker="o", label=name)
        right.plot(factors, [rows[f]["p95_ms"] for f in factors], marker="o", label=name)
    left.set(title="Store throughput vs load", xlabel="load factor", ylabel="messages / s")
    right.set(title="Real store latency p95 vs load", xlabel="load factor", ylabel="ms")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


# Sections whose figures depend on how calls reach the shards: run once per data plane.
PLANE_SECTIONS = ("operations", "throughput", "scalability", "search")


async def run(args: argparse.Namespace) -> int:
    root = tempfile.mkdtemp(prefix="ffchat-bench-", dir=args.workdir)
    factors = [int(f) for f in args.factors.split(",")]
    ctx = Context(root=root, quick=args.quick, seed=args.seed, factors=factors,
                  capacity_messages=args.capacity_messages)
    names = list(SECTIONS) if not args.sections else args.sections.split(",")
    planes = [plane.strip() for plane in args.data_planes.split(",") if plane.strip()]
    runs = [(name, planes[0]) for name in names] + \
        [(name, plane) for plane in planes[1:] for name in names if name in PLANE_SECTIONS]
    failures: list[str] = []
    started = time.perf_counter()
    try:
        for position, (name, plane) in enumerate(runs, start=1):
            print(f"[{position}/{len(runs)}] {name} ({plane} data plane) ...", file=sys.stderr, flush=True)
            section_started = time.perf_counter()
            try:
                await _run_section(ctx, name, plane, tagged=plane != planes[0])
            except WrongResult as exc:
                failures.append(f"{name} ({plane}): wrong result: {exc}")
            print(f"      done in {time.perf_counter() - section_started:.1f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ctx.details["total_seconds"] = time.perf_counter() - started
    ctx.details["transports"] = {plane: sorted(seen) for plane, seen in OursTarget.transports_seen.items()}
    return _report(args, ctx, failures)


async def _run_section(ctx: Context, name: str, plane: str, tagged: bool) -> None:
    """Run one section with bridges on `plane`; a tagged run's figures say so (`operations[ray]`) and
    its details go under details["<plane> data plane"]."""
    os.environ[DATA_PLANE_VARIABLE] = plane
    before, details = len(ctx.figures), dict(ctx.details)
    try:
        await SECTIONS[name](ctx)
    finally:
        if tagged:
            for figure in ctx.figures[before:]:
                figure.section = f"{figure.section}[{plane}]"
            changed = {key: value for key, value in ctx.details.items() if details.get(key) is not value}
            ctx.details = {**details, f"{plane} data plane": {**ctx.details.get(f"{plane} data plane", {}),
                                                              **changed}}


def _print_processes(memory: dict[str, Any]) -> None:
    """Whole-system memory per process (the memory section's last step: 10,000 messages, fewer --quick)."""
    system = memory.get("system", {}).get("10k")
    if not system or not system.get("by_process"):
        return
    print(f"\nwhole-system USS at {memory['messages_in_10k_step']:,} messages: {system['uss_mb']:.0f} MB "
          f"over {system['processes']} processes")
    for label, uss_mb in system["by_process"]:
        print(f"  {label:32s} {uss_mb:7.1f} MB")


def _report(args: argparse.Namespace, ctx: Context, failures: list[str]) -> int:
    print()
    transports = ", ".join(f"{plane} data plane -> {'/'.join(seen)}" for plane, seen in ctx.details["transports"].items())
    print(f"transport in use: {transports}  (figures tagged [ray] went over Ray actor calls)")
    print_table(ctx.figures)
    chart = None
    if "scalability" in ctx.details and args.chart:
        chart = write_chart(args.chart, ctx.details["scalability"])
        print(f"\nchart: {chart}" if chart else "\nchart skipped: pip install -e '.[plot]' for matplotlib")
    if args.json:
        payload = {"machine": _machine(), "arguments": vars(args), "ray_start_s": args.ray_start_s,
                   "figures": [f.as_dict() for f in ctx.figures], "details": ctx.details, "failures": failures,
                   "chart": chart}
        with open(args.json, "w") as handle:
            json.dump(payload, handle, indent=2, default=str)
        print(f"json: {args.json}")
    _print_processes(ctx.details.get("memory", {}))
    missed = [f for f in ctx.figures if f.passed is False]
    print(f"\n{len(ctx.figures)} figures, {len(missed)} targets missed, {len(failures)} wrong results, "
          f"{ctx.details['total_seconds']:.0f} s (Ray start-up before the suite: {args.ray_start_s:.1f} s)")
    for failure in failures:
        print("WRONG RESULT:", failure)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == ["chaos"]:
        from .chaos import main as chaos_main
        return chaos_main(arguments[1:])
    parser = argparse.ArgumentParser(prog="scale_tests", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (< 1 minute), as CI runs it")
    parser.add_argument("--factors", default="1,2,5,10")
    parser.add_argument("--json", default="bench_results/bench.json")
    parser.add_argument("--chart", default="bench_results/scalability.png")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--capacity-messages", type=int, default=None, metavar="N",
                        help="messages the capacity section loads (default 1,000,000; --quick 50,000; "
                             "10,000,000 is the issue's second size, outside CI)")
    parser.add_argument("--address", default=None, help="run against a running Ray cluster")
    parser.add_argument("--sections", default=None, help=f"comma list of {','.join(SECTIONS)}")
    parser.add_argument("--workdir", default=None, help="where scratch data goes (default: system temp)")
    parser.add_argument("--data-planes", default="direct,ray",
                        help="data planes to measure, first one for every section, the others for "
                             f"{','.join(PLANE_SECTIONS)} (tagged [plane]); 'direct' or 'ray'")
    args = parser.parse_args(arguments)
    for target in (args.json, args.chart):
        if target and os.path.dirname(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
    args.ray_start_s = _start_ray(args.address)
    try:
        return asyncio.run(run(args))
    finally:
        import ray
        ray.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
