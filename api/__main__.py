"""`chat-bridge demo` (also `python -m api`), `chat-bridge bench` (the scale-test harness),
`chat-bridge verify` (engine.verify, through its entry point) and the operator commands `stats`,
`health`, `sessions`, `history`, `search`, `export`, `import`, `purge`, `compact` (api/operator_cli.py)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from importlib.metadata import entry_points
from typing import Any, Callable

PLUGIN_GROUP = "ff_chat_bridge.commands"


async def keep_writing(data: Any, seconds: float) -> None:
    """Store a batch of 10 messages every 10 ms for `seconds` (something to back up or watch live),
    printing the totals once a second."""
    session_id = await data.storage.create_session("demo_user", "Live writes")
    started = last = time.monotonic()
    stored = 0
    while time.monotonic() - started < seconds:
        result = await data.store_chat_messages("demo_user", session_id, [
            {"role": "user", "content": f"live message {stored + i} about trams and seafood"} for i in range(10)])
        stored += result["data"]["count"] if result["success"] else 0
        if time.monotonic() - last >= 1.0:
            last = time.monotonic()
            print(f"writing: {stored} messages stored in session {session_id}", flush=True)
        await asyncio.sleep(0.01)
    print(f"wrote {stored} messages in {time.monotonic() - started:.0f} s (kept in session {session_id})")


async def demo(path: str, write_for: float = 0.0) -> int:
    """A short end-to-end session on `path` (store, page, search, stream, analytics, health), then `write_for` s of writes."""
    from api import FFChatAppBridge
    started = time.perf_counter()
    bridge = await FFChatAppBridge.create_for_chat_app(path, {"performance_mode": "balanced"})
    print(f"bridge ready on {path} in {(time.perf_counter() - started) * 1000:.0f} ms "
          f"({bridge.get_standardized_config()['runtime']['shard_count']} shards, "
          f"durability {bridge.get_standardized_config()['runtime']['durability']})")
    try:
        data = bridge.get_data_layer()
        await data.storage.create_user("demo_user", {"username": "demo"})
        session_id = await data.storage.create_session("demo_user", "Demo conversation")
        turns = [("user", "Hello! Can you help me plan a trip to Lisbon?"),
                 ("assistant", "Of course. Lisbon is lovely in spring; how many days do you have?"),
                 ("user", "Five days, and I love seafood and old trams."),
                 ("assistant", "Ride tram 28 through Alfama and try the seafood in Cais do Sodré.")]
        for role, content in turns:
            result = await data.store_chat_message("demo_user", session_id, {"role": role, "content": content})
            print(f"stored {role:9s} {result['data']['message_id']} in {result['metadata']['operation_time_ms']:.2f} ms")
        batch = await data.store_chat_messages("demo_user", session_id, [
            {"role": "user", "content": f"Follow-up question {i} about trams and seafood"} for i in range(20)])
        print(f"stored a batch of {batch['data']['count']} in {batch['metadata']['operation_time_ms']:.2f} ms")
        page = await data.get_chat_history("demo_user", session_id, limit=3, latest=True)
        again = await data.get_chat_history("demo_user", session_id, limit=3, latest=True)
        print(f"history: {page['data']['total_count']} messages; latest page of 3 "
              f"(cache hit on repeat: {again['metadata']['cache_hit']})")
        found = await data.search_conversations("demo_user", "seafood trams", {"limit": 3})
        meta = found["data"]["search_metadata"]
        print(f"search 'seafood trams': {meta['total_matches']} matches, top {meta['result_count']}:")
        for hit in found["data"]["results"]:
            print(f"   {hit['relevance_score']:.3f}  {hit['content'][:60]}")
        chunks = [chunk async for chunk in data.stream_conversation("demo_user", session_id, chunk_size=10)]
        print(f"streamed {chunks[-1]['data']['chunk_info']['total_streamed']} messages in {len(chunks)} chunks")
        analytics = (await data.get_analytics_summary("demo_user"))["data"]["analytics"]
        print(f"analytics: {analytics['total_messages']} messages in {analytics['total_sessions']} session(s), "
              f"by role {analytics['messages_by_role']}")
        health = await bridge.health_check()
        print(f"health: {health['status']} in {health['check_duration_ms']:.1f} ms; shards "
              + ", ".join(f"{s['shard']}:{s['status']} over {s.get('transport', '?')}" for s in health["shards"])
              + f"; router over {health.get('router_transport', '?')}")
        metrics = await data.fetch_performance_metrics()
        for name, op in sorted(metrics["operation_metrics"].items()):
            print(f"   {name:24s} n={op['total_operations']:3d} p50={op['p50_ms']:.2f} ms p95={op['p95_ms']:.2f} ms")
        await data.delete_session("demo_user", session_id)
        print("deleted the demo session; data lives under", path)
        if write_for > 0:
            await keep_writing(data, write_for)
    finally:
        await bridge.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chat-bridge", description="ff-chat-bridge command line")
    sub = parser.add_subparsers(dest="command")
    demo_parser = sub.add_parser("demo", help="run a short end-to-end session on ./chat_data")
    demo_parser.add_argument("--path", default="./chat_data")
    demo_parser.add_argument("--write-for", type=float, default=0.0, metavar="SECONDS",
                             help="then keep writing for SECONDS (to back up or watch a live store)")
    sub.add_parser("bench", help="run the scale-test harness (same flags as python -m scale_tests)",
                   add_help=False)
    sub.add_parser("verify", help="read every record of every shard of PATH and check it (exit 0 ok, "
                                  "1 damaged, 2 no such path): chat-bridge verify PATH [--json]", add_help=False)
    from . import operator_cli
    operator_cli.add_commands(sub)
    args, rest = parser.parse_known_args(argv)
    if args.command == "verify":
        return _verify(rest)
    if args.command == "bench":
        return _plugin(args.command)(rest)
    if args.command in operator_cli.COMMANDS:
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        problem = operator_cli.check_arguments(args)
        if problem:
            sub.choices[args.command].error(problem)
        return asyncio.run(operator_cli.run(args))
    return asyncio.run(demo(getattr(args, "path", "./chat_data"), getattr(args, "write_for", 0.0)))


def _verify(argv: list[str]) -> int:
    """`chat-bridge verify`: the engine's checker, with a progress bar on a terminal (not with --json)."""
    from .operator_output import byte_progress
    command: Callable[..., int] = _plugin("verify")  # engine.verify.main(argv, progress=...)
    return command(argv, progress=byte_progress("verifying segments", enabled="--json" not in argv))


def _plugin(name: str) -> Callable[[list[str]], int]:
    """A command registered under the `ff_chat_bridge.commands` entry points (the benchmark harness
    is, in pyproject.toml): found by name, so the api package never imports scale_tests (the
    layering test forbids that arrow)."""
    found = [point for point in entry_points(group=PLUGIN_GROUP) if point.name == name]
    if not found:
        raise SystemExit(f"chat-bridge {name}: no '{name}' command is installed (it comes with this "
                         f"project's package metadata: pip install -e .)")
    command: Callable[[list[str]], int] = found[0].load()
    return command


if __name__ == "__main__":
    sys.exit(main())
