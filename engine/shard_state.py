"""The in-memory state of one shard and the one function that changes it: `apply(record)`.

Live writes and replay both go through `apply`, so memory after a restart is exactly memory
before it. Records are applied only after they were encoded (encode before apply). The search
index is derived: replay only notes which messages each user's index still lacks, and a user's
index is built when first read (`searchable`) or by upkeep (`index_some`), in log order.
"""

from __future__ import annotations

import time
from collections import deque
from datetime import datetime
from typing import Any, Iterator

import numpy as np

from . import codec
from .search_index import SearchIndex
from .session_store import SessionState
from .shard_cache import ShardCache
from .vector_index import Embedder, VectorIndex

RECOVERED_TITLE = "Recovered session"
REPLAY_SEAL_S = 0.25  # sealing of tails at the end of an open (the rest is upkeep's)


class ShardState:
    """Users, sessions, messages, search and vector slices and the result cache of one shard."""

    def __init__(self, cache_bytes_max: int, embedder: Embedder | None) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.sessions: dict[tuple[str, str], SessionState] = {}
        self.user_sessions: dict[str, set[str]] = {}
        self.search_index = SearchIndex()
        # Messages not in the search index yet, per user, as (session_id, start, count) runs in log
        # order: building them later gives each message the doc id (so the tie order) incremental
        # indexing would have. A user's positions only move on a delete or purge, which builds first.
        self._unindexed: dict[str, deque[tuple[str, int, int]]] = {}
        self.unindexed_messages = 0
        self.defer_indexing = True  # while replaying; ShardCore clears it once the log is read
        # Sessions whose newest messages are still objects (a table's tail), with the seal pass of
        # their last append: `seal_quiet` compresses the tails of sessions that went quiet.
        self._tails: dict[tuple[str, str], int] = {}
        self._seal_pass = 0
        self.vectors = VectorIndex(embedder)
        self.cache = ShardCache(cache_bytes_max)
        self.message_count = 0
        self.changes = 0  # messages and other records applied since this state was made (or loaded)
        self.dead_messages = 0  # deleted since the last compaction (their records still sit in the log)
        self.orphans = 0  # messages replayed for a session the log never created (older writers)

    def empty_copy(self) -> "ShardState":
        """A new, empty state with the same cache budget, embedder and cache counters (to replay
        the log into)."""
        fresh = ShardState(self.cache.capacity_bytes, self.vectors._embed)
        fresh.cache.hits, fresh.cache.misses = self.cache.hits, self.cache.misses
        return fresh

    # ------------------------------------------------------------------ apply (live and replay)
    def apply(self, record_type: int, body: dict[str, Any]) -> None:
        self.changes += len(body["m"]) if record_type == codec.MESSAGES else 1
        if record_type == codec.MESSAGES:
            self._apply_messages(body)
        elif record_type == codec.USER_PUT:
            self.users[body["u"]] = body["p"]
        elif record_type == codec.USER_DELETE:
            self.users.pop(body["u"], None)
            self.invalidate(body["u"])
        elif record_type == codec.SESSION_PUT:
            key = (body["u"], body["s"])
            state = self.sessions.get(key)
            if state is None:
                self.sessions[key] = SessionState(body["r"])
                self.user_sessions.setdefault(body["u"], set()).add(body["s"])
            else:
                state.record = body["r"]
            self.invalidate(body["u"], body["s"])
        elif record_type == codec.SESSION_DELETE:
            self.delete_session(body["u"], body["s"])
        elif record_type == codec.PURGE:
            self.purge(body["c"], body.get("u"))

    def _apply_messages(self, body: dict[str, Any]) -> None:
        user_id, session_id = body["u"], body["s"]
        state = self.sessions.get((user_id, session_id))
        if state is None:
            # Only an older writer could log messages of a session it never recorded: keep them
            # reachable under a recovered session rather than refuse to open the shard.
            state = self.sessions[(user_id, session_id)] = SessionState({
                "session_id": session_id, "user_id": user_id, "title": RECOVERED_TITLE, "session_type": "chat",
                "created_at": body["t"], "updated_at": body["t"], "metadata": {}})
            self.user_sessions.setdefault(user_id, set()).add(session_id)
            self.orphans += len(body["m"])
        rows = body["m"]
        epochs = _epochs(rows)
        start = len(state.messages)
        state.messages.extend(rows, epochs)
        if state.messages.sealed < len(state.messages):
            self._tails[(user_id, session_id)] = self._seal_pass
        if self.vectors.enabled:
            for row, epoch in zip(rows, epochs):
                self.vectors.add(user_id, session_id, row[0], row[2], row[1], epoch)
        if user_id not in self._unindexed and not self.defer_indexing:
            # A live write of a user whose index is complete keeps it so (from the rows at hand).
            self.search_index.add_many(user_id, session_id, (
                (position, row[2], row[1], epoch) for position, row, epoch in zip(range(start, start + len(rows)),
                                                                                  rows, epochs)))
        else:
            self._note_unindexed(user_id, session_id, start, len(rows))
        self.message_count += len(body["m"])
        state.record["updated_at"] = body["t"]
        self.invalidate(user_id, session_id)

    def replayed(self) -> None:
        """The log is read: live writes index as they go, and sessions' tails are sealed for up to
        REPLAY_SEAL_S (replay is not a sign of which sessions are hot, and its scattered objects pin
        heap pages); upkeep seals the rest of them."""
        self.defer_indexing = False
        self.seal_quiet(REPLAY_SEAL_S, everything=True)

    def seal_quiet(self, seconds: float, everything: bool = False) -> int:
        """Compress, for up to `seconds`, the tails of sessions not appended to since the previous
        pass (or of any, `everything`); returns how many were sealed. A pass that sealed them all
        starts the next one."""
        deadline = time.perf_counter() + seconds
        sealed = 0
        for key, seen in list(self._tails.items()):
            if time.perf_counter() >= deadline:
                return sealed
            if everything or seen < self._seal_pass:
                del self._tails[key]
                state = self.sessions.get(key)
                if state is not None:
                    state.messages.seal()
                sealed += 1
        self._seal_pass += 1
        return sealed

    # ------------------------------------------------------------------ the derived search index
    def _note_unindexed(self, user_id: str, session_id: str, start: int, count: int) -> None:
        runs = self._unindexed.get(user_id)
        if runs is None:
            runs = self._unindexed[user_id] = deque()
        if runs and runs[-1][0] == session_id and runs[-1][1] + runs[-1][2] == start:
            runs[-1] = (session_id, runs[-1][1], runs[-1][2] + count)
        else:
            runs.append((session_id, start, count))
        self.unindexed_messages += count

    def index_user(self, user_id: str, budget: int | None = None) -> int:
        """Index up to `budget` (all if None) of the user's unindexed messages, oldest first; returns
        how many were indexed."""
        runs = self._unindexed.get(user_id)
        done = 0
        while runs and (budget is None or done < budget):
            session_id, start, count = runs[0]
            take = count if budget is None else min(count, budget - done)
            messages = self.sessions[(user_id, session_id)].messages.slice(start, start + take, remember=False)
            self.search_index.add_many(user_id, session_id, (
                (position, m.content, m.role, m.timestamp_epoch) for position, m in enumerate(messages, start)))
            if take == count:
                runs.popleft()
            else:
                runs[0] = (session_id, start + take, count - take)
            done += take
        self.unindexed_messages -= done
        if runs is not None and not runs:
            del self._unindexed[user_id]
        return done

    def index_some(self, budget: int) -> int:
        """Index up to `budget` messages of users whose index is not complete (upkeep calls this)."""
        done = 0
        while self._unindexed and done < budget:
            done += self.index_user(next(iter(self._unindexed)), budget - done)
        return done

    def searchable(self, user_id: str) -> SearchIndex:
        """The search index, complete for `user_id` (built now if it was not yet)."""
        self.index_user(user_id)
        return self.search_index

    def log_order(self) -> dict[str, list[list[Any]]]:
        """Per user, the live messages in the order their search documents are (or will be) added, as
        [session_id, start, count] runs: a checkpoint keeps it so a rebuilt index ties as before."""
        order = {}
        for user_id in set(self.search_index.users()) | set(self._unindexed):
            runs = self.search_index.doc_runs(user_id) + [list(run) for run in self._unindexed.get(user_id, ())]
            if runs:
                order[user_id] = runs
        return order

    def adopt(self, order: dict[str, list[list[Any]]]) -> None:
        """Take loaded sessions' index order (`log_order`) as still to index, and their tails as open."""
        total = 0
        for user_id, runs in order.items():
            self._unindexed[user_id] = deque((str(session_id), int(start), int(count))
                                             for session_id, start, count in runs)
            total += sum(int(count) for _, _, count in runs)
        counted = sum(len(state.messages) for state in self.sessions.values())
        if total != counted or counted != self.message_count:
            raise ValueError(f"checkpoint counts disagree: {total} to index, {counted} stored, "
                             f"{self.message_count} counted")
        self.unindexed_messages = total
        self._tails = {key: 0 for key, state in self.sessions.items() if state.messages.sealed < len(state.messages)}

    def index_nbytes(self) -> int:
        """RAM of the search index and of the runs still to index (a tuple of three in a deque)."""
        return self.search_index.nbytes() + 100 * sum(len(runs) for runs in self._unindexed.values())

    # ------------------------------------------------------------------ deletes
    def delete_session(self, user_id: str, session_id: str) -> int:
        if (user_id, session_id) not in self.sessions:
            return 0
        self.index_user(user_id)  # removals need the user's doc ids; positions move below
        state = self.sessions.pop((user_id, session_id))
        messages = list(state.messages)
        self.search_index.remove_session(user_id, session_id, [m.content for m in messages])
        for message in messages:
            self.vectors.remove(user_id, session_id, message.message_id)
        owned = self.user_sessions.get(user_id)
        if owned is not None:
            owned.discard(session_id)
            if not owned:
                del self.user_sessions[user_id]
                self.search_index.drop_user(user_id)
                self.vectors.drop_user(user_id)
        self.message_count -= len(state.messages)
        self.dead_messages += len(state.messages) + 1
        self.invalidate(user_id, session_id)
        self._compact_index(user_id)
        return len(state.messages)

    def purge(self, cutoff: float, only_user: str | None) -> tuple[int, int]:
        """Delete messages older than `cutoff` and sessions left empty that were created before it."""
        messages_deleted = sessions_deleted = 0
        for (user_id, session_id), state in list(self.sessions.items()):
            if only_user is not None and user_id != only_user:
                continue
            keep = state.messages.epochs() >= cutoff
            if not keep.all():
                self.index_user(user_id)  # removals need the user's doc ids; positions move below
                gone = np.flatnonzero(~keep).tolist()
                old = state.messages.keep_where(keep)
                if state.messages.sealed < len(state.messages):
                    self._tails[(user_id, session_id)] = self._seal_pass
                self.search_index.remove_positions(user_id, session_id,
                                                   {position: m.content for position, m in zip(gone, old)})
                for message in old:
                    self.vectors.remove(user_id, session_id, message.message_id)
                messages_deleted += len(old)
                self.message_count -= len(old)
                self.dead_messages += len(old)
                self.invalidate(user_id, session_id)
            created = datetime.fromisoformat(state.record["created_at"]).timestamp()
            if not state.messages and created < cutoff:
                self.delete_session(user_id, session_id)
                sessions_deleted += 1
            self._compact_index(user_id)
        return messages_deleted, sessions_deleted

    def _compact_index(self, user_id: str) -> None:
        if self.search_index.needs_compaction(user_id):
            self.search_index.rebuild_user(user_id, (
                (session_id, position, m.content, m.role, m.timestamp_epoch)
                for session_id in self.user_sessions.get(user_id, ())
                for position, m in enumerate(self.sessions[(user_id, session_id)].messages)))

    def invalidate(self, user_id: str, session_id: str | None = None) -> None:
        if session_id is not None:
            self.cache.invalidate(("s", user_id, session_id))
        self.cache.invalidate(("u", user_id))

    # ------------------------------------------------------------------ snapshot (compaction)
    def snapshot_records(self, compress: bool) -> Iterator[codec.Record]:
        """The live state as records; message rows are cut into parts of about PART_TARGET_BYTES,
        so every record stays under the reader's bound whatever the message sizes."""
        for user_id, profile in self.users.items():
            yield from codec.pack(codec.USER_PUT, {"u": user_id, "p": profile})
        for (user_id, session_id), state in self.sessions.items():
            record = dict(state.record)
            yield from codec.pack(codec.SESSION_PUT, {"u": user_id, "s": session_id, "r": record})
            rows: list[list[Any]] = []
            size = 0
            for row in state.messages.raw_rows():
                rows.append(row)
                size += (len(row[2]) + (len(str(row[5])) if row[5] else 0)
                         + (sum(map(len, row[4])) if row[4] else 0)) * 4 + 512
                if size >= codec.PART_TARGET_BYTES:
                    yield from codec.pack(codec.MESSAGES, {"u": user_id, "s": session_id, "m": rows,
                                                           "t": record["updated_at"]}, compress)
                    rows, size = [], 0
            if rows:
                yield from codec.pack(codec.MESSAGES, {"u": user_id, "s": session_id, "m": rows,
                                                       "t": record["updated_at"]}, compress)


def _epochs(rows: list[list[Any]]) -> list[float]:
    """The epoch seconds of each row's timestamp (a batch usually shares one: parsed once)."""
    epochs = []
    last_text, epoch = "", 0.0
    for row in rows:
        if row[3] != last_text:
            last_text, epoch = row[3], datetime.fromisoformat(row[3]).timestamp()
        epochs.append(epoch)
    return epochs
