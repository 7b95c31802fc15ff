"""Chaos verification: a fresh bridge on the same path reads every session back and compares it with
what the writers had acknowledged (lost, duplicated, phantom, order, contiguous batches)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from api import FFChatAppBridge

from .result import ModeResult, Run
from .writers import USER

_SAMPLE = 50  # ids kept in the report per kind of problem


async def verify(run: Run, path: str, options: dict[str, Any], sessions: list[str]) -> None:
    """Open a fresh bridge on the path and compare every session with what was acknowledged."""
    result = run.result
    bridge = await FFChatAppBridge.create_for_chat_app(path, options)
    try:
        data = bridge.get_data_layer()
        _check_shards(result, await bridge.health_check())
        for session_id in sessions:
            recovered = await read_all(data, session_id)
            if recovered is None:
                result.sessions_missing.append(session_id)
                recovered = []
            result.recovered += len(recovered)
            _check_ids(run, session_id, recovered)
            _check_order(run, session_id, recovered)
            _check_batches(run, session_id, recovered)
    finally:
        await bridge.close()


async def read_all(data: Any, session_id: str) -> list[str] | None:
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


def _check_shards(result: ModeResult, health: dict[str, Any]) -> None:
    """Every shard answers the fresh bridge's health check."""
    down = [s for s in health["shards"] if s["status"] == "unavailable"]
    result.shards_not_back += [f"fresh bridge: shard {s['shard']} unavailable: {s['error']}" for s in down]
    if len(health["shards"]) != result.shards:
        result.shards_not_back.append(f"fresh bridge sees {len(health['shards'])} shards")


def _check_ids(run: Run, session_id: str, recovered: list[str]) -> None:
    """Duplicated ids, acknowledged ids missing (lost) and ids never sent (phantom)."""
    result = run.result
    counts = Counter(recovered)
    duplicated = sorted(i for i, n in counts.items() if n > 1)
    result.duplicated += sum(counts[i] - 1 for i in duplicated)
    result.duplicated_ids += [f"{session_id}/{i} x{counts[i]}" for i in duplicated][:_SAMPLE]
    lost = [i for i in run.acked[session_id] if i not in counts]
    result.lost += len(lost)
    result.lost_ids += [f"{session_id}/{i}" for i in lost][:_SAMPLE]
    phantom = [i for i in counts if i not in run.attempted]
    result.phantom += len(phantom)
    result.phantom_ids += [f"{session_id}/{i}" for i in phantom][:_SAMPLE]


def _check_order(run: Run, session_id: str, recovered: list[str]) -> None:
    """The acknowledged ids that survived appear in acknowledgement order (first occurrences)."""
    result = run.result
    acked = run.acked[session_id]
    acked_set, present = set(acked), set(recovered)
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


def _check_batches(run: Run, session_id: str, recovered: list[str]) -> None:
    """Every acknowledged batch that survived is contiguous."""
    position: dict[str, int] = {}
    for k, i in enumerate(recovered):
        position.setdefault(i, k)
    for batch in run.batches[session_id]:
        if all(i in position for i in batch):
            start = position[batch[0]]
            if [position[i] for i in batch] != list(range(start, start + len(batch))):
                run.result.split_batches += 1
