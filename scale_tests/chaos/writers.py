"""The chaos workload: one session per writer, spread evenly over the shards, and writer tasks that
store messages with explicit ids and retry a TIMEOUT or SHARD_UNAVAILABLE with the same ids."""

from __future__ import annotations

import asyncio
import random
import time
import zlib
from typing import Any

from .result import Run

RETRYABLE = ("TIMEOUT", "SHARD_UNAVAILABLE")
USER = "chaos_user"


async def create_sessions(bridge: Any, writers: int, shards: int) -> tuple[list[str], dict[int, str]]:
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


def start_writers(run: Run, data: Any, sessions: list[str], seed: int, rate: float) -> list[asyncio.Future[None]]:
    """One writer task per session, each with its own seeded rng and an equal share of `rate`."""
    mode, writers = run.result.mode, run.result.writers
    return [asyncio.ensure_future(writer(run, data, session_id, number, random.Random(f"{seed}-{mode}-{number}"),
                                         rate / writers))
            for number, session_id in enumerate(sessions)]


def _content(message_id: str) -> dict[str, Any]:
    # Deterministic from the id, so a caller-level retry sends exactly the same message.
    role = "user" if zlib.crc32(message_id.encode()) % 2 else "assistant"
    return {"role": role, "content": f"chaos payload {message_id} lorem ipsum dolor sit amet",
            "message_id": message_id}


class _Pacer:
    """Spaces one writer's calls to at most `rate` messages per second (0: no cap)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.next_at = time.monotonic()

    async def wait(self, size: int) -> None:
        """Sleep until the next call is due, then book `size` messages."""
        if self.rate:
            now = time.monotonic()
            if self.next_at > now:
                await asyncio.sleep(self.next_at - now)
            elif now - self.next_at > 1.0:
                self.next_at = now  # after a stall (a shard restarting) no catch-up burst
        self.next_at += size / self.rate if self.rate else 0.0


async def writer(run: Run, data: Any, session_id: str, number: int, rng: random.Random, rate: float) -> None:
    """Store messages until the run stops; `rate` caps this writer's messages per second (0: none)."""
    pacer = _Pacer(rate)
    sequence = 0
    while not run.stop.is_set():
        size = rng.randint(2, 8) if rng.random() < 0.25 else 1
        await pacer.wait(size)
        ids = [f"w{number}-{sequence + i}" for i in range(size)]
        sequence += size
        run.attempted.update(ids)
        if not await _store_until_acknowledged(run, data, session_id, ids):
            return


async def _store_until_acknowledged(run: Run, data: Any, session_id: str, ids: list[str]) -> bool:
    """Store `ids` (one message or a batch), retrying a retryable failure with the same ids until
    acknowledged; False: this writer stops (a non-retryable failure, or the run ended first)."""
    first_try = True
    while True:
        result = await _timed_store(run, data, session_id, ids)
        if result["success"]:
            _acknowledge(run, session_id, ids, result["data"], first_try)
            return True
        code = result["metadata"]["error_code"] or "UNKNOWN"
        run.failures[code] += 1
        if code not in RETRYABLE:
            # Not a restart symptom: a finding. This writer stops (a vanished session would
            # otherwise fail every later call the same way); the verdict reports it.
            run.result.unexpected_failures.append(f"{session_id}/{ids[0]}: {code}: {result['error']}")
            run.result.in_doubt += len(ids)
            return False
        if run.stop.is_set():
            run.result.in_doubt += len(ids)  # the run ended before this id was acknowledged
            return False
        first_try = False


async def _timed_store(run: Run, data: Any, session_id: str, ids: list[str]) -> dict[str, Any]:
    """One store call; records the slowest call and the calls over the deadline."""
    started = time.monotonic()
    if len(ids) == 1:
        result: dict[str, Any] = await data.store_chat_message(USER, session_id, _content(ids[0]))
    else:
        result = await data.store_chat_messages(USER, session_id, [_content(i) for i in ids])
    took_ms = (time.monotonic() - started) * 1000
    run.result.slowest_call_ms = max(run.result.slowest_call_ms, took_ms)
    if took_ms > run.deadline_ms:
        run.result.calls_over_deadline += 1
    return result


def _acknowledge(run: Run, session_id: str, ids: list[str], stored: dict[str, Any], first_try: bool) -> None:
    """Record acknowledged ids in order; a retry answered "already stored" counts as a replay."""
    size = len(ids)
    if not first_try:
        replayed = stored["duplicate"] if size == 1 else stored["duplicates"]
        if replayed:
            run.result.replays += 1
        if size > 1 and 0 < replayed < size:
            run.result.partial_batch_replays += 1
    run.acked[session_id].extend(ids)
    if size > 1:
        run.batches[session_id].append(ids)
    run.acknowledged += size
