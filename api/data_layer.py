"""`FFChatDataLayer`: every data call of the contract (§4), answering with envelopes."""

from __future__ import annotations

import time
from typing import Any, AsyncIterator

from engine import operations as ops
from engine.config import MB
from engine.errors import BridgeClosed, EngineError, ErrorCode, InvalidInput, UserNotFound
from engine.models import iso, new_message_id, normalize_message, validate_id
from engine.text import query_terms

from . import transfer, validation
from .backend import PathBackend
from .envelope import OperationMetrics, Outcome, run_operation
from .errors import StorageError
from .metrics import performance_metrics


class FFChatDataLayer:
    """Chat-optimised data access over the bridge's shard actors.

    Example:
        >>> data = bridge.get_data_layer()
        >>> await data.store_chat_message("alice", session_id, {"role": "user", "content": "hi"})
    """

    def __init__(self, bridge: Any) -> None:
        self._bridge = bridge
        self.config = bridge.settings
        self.storage = bridge._storage_manager
        self.metrics = OperationMetrics()
        if bridge.metrics_path is not None:
            self.metrics.export(bridge.metrics_path, bridge.data_plane)

    # ------------------------------------------------------------------ plumbing
    def _backend(self) -> PathBackend:
        return self._bridge.open_backend()

    def _session_size_warning(self, warnings: list[str], session_id: str, size_bytes: int) -> None:
        limit = self.config.max_session_size_mb
        if size_bytes > limit * MB:
            warnings.append(f"Session {session_id} is {size_bytes / MB:.2f}MB, above max_session_size_mb ({limit}MB)")

    # ------------------------------------------------------------------ storing
    async def store_chat_message(self, user_id: str, session_id: str, message: dict[str, Any]) -> dict[str, Any]:
        """Append one message to an existing session of the user (idempotent on message_id)."""
        async def body(warnings: list[str]) -> Outcome:
            backend = self._backend()
            validation.user_and_session(user_id, session_id)
            clean, unknown = normalize_message(message, self.config.max_message_bytes)
            if unknown:
                warnings.append(f"Ignored unknown message keys: {unknown}")
            clean.setdefault("message_id", new_message_id())
            result: ops.AppendReply = await backend.session(ops.Append(user_id, session_id, [clean]))
            record = result.records[0]
            self._session_size_warning(warnings, session_id, result.session_bytes)
            return Outcome({"message_id": record["message_id"], "stored_at": record["stored_at"],
                            "timestamp": record["timestamp"], "session_updated": True,
                            "duplicate": record["duplicate"]}, result.count)
        return await run_operation(self.metrics, "store_chat_message", body)

    async def store_chat_messages(self, user_id: str, session_id: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """Append up to message_batch_size messages in one round trip, all-or-nothing and contiguous."""
        async def body(warnings: list[str]) -> Outcome:
            backend = self._backend()
            validation.user_and_session(user_id, session_id)
            clean, unknown = validation.messages_batch(messages, self.config.message_batch_size,
                                                       self.config.max_message_bytes)
            if unknown:
                warnings.append(f"Ignored unknown message keys: {unknown}")
            for item in clean:
                item.setdefault("message_id", new_message_id())
            result: ops.AppendReply = await backend.session(ops.Append(user_id, session_id, clean))
            self._session_size_warning(warnings, session_id, result.session_bytes)
            return Outcome({"message_ids": result.message_ids, "stored_at": result.stored_at,
                            "session_updated": True, "count": result.count, "duplicates": result.duplicates},
                           result.count)
        return await run_operation(self.metrics, "store_chat_messages", body)

    # ------------------------------------------------------------------ reading
    async def get_chat_history(self, user_id: str, session_id: str, limit: int | None = None, offset: int = 0, *,
                               before: str | None = None, after: str | None = None,
                               latest: bool = False) -> dict[str, Any]:
        """A page of the conversation, oldest first, by offset (from oldest or newest) or cursor."""
        async def body(warnings: list[str]) -> Outcome:
            backend = self._backend()
            validation.user_and_session(user_id, session_id)
            args = validation.history_args(limit, offset, before, after, latest, self.config.history_page_size)
            page, hit = await backend.session(ops.History(user_id, session_id, *args))
            messages = page["messages"]
            return Outcome({"messages": messages, "total_count": page["total_count"], "has_more": page["has_more"],
                            "pagination": {"limit": args[0], "offset": args[1], "returned_count": len(messages),
                                           "has_next_page": page["has_more"], "before": before, "after": after,
                                           "latest": latest}}, len(messages), hit)
        return await run_operation(self.metrics, "get_chat_history", body, cacheable=True)

    async def stream_conversation(self, user_id: str, session_id: str, chunk_size: int = 50
                                  ) -> AsyncIterator[dict[str, Any]]:
        """Chunks of the messages acknowledged before the first chunk, oldest first."""
        state = {"offset": 0, "end": None, "done": False}

        async def chunk(warnings: list[str]) -> Outcome:
            backend = self._backend()
            if state["end"] is None:
                validation.user_and_session(user_id, session_id)
                validation.int_arg(chunk_size, "chunk_size", 1, 10000)
            result = await backend.session(ops.ReadRange(user_id, session_id, state["offset"], chunk_size,
                                                         state["end"]))
            if state["end"] is None:
                state["end"] = result["total_count"]
            messages = result["messages"]
            start = state["offset"]
            state["offset"] = start + len(messages)
            has_more = state["offset"] < state["end"] and bool(messages)
            state["done"] = not has_more
            return Outcome({"chunk": messages, "chunk_info": {"offset": start, "size": len(messages),
                                                             "has_more": has_more,
                                                             "total_streamed": state["offset"]}}, len(messages))
        while not state["done"]:
            result = await run_operation(self.metrics, "stream_conversation", chunk)
            yield result
            if not result["success"]:
                return

    async def search_conversations(self, user_id: str, query: str, options: dict[str, Any] | None = None
                                   ) -> dict[str, Any]:
        """BM25-ranked search over one user's messages with filters, sort and paging."""
        async def body(warnings: list[str]) -> Outcome:
            started = time.perf_counter()
            backend = self._backend()
            deadline = backend.deadline()
            validate_id(user_id, "user")
            text = validation.query_text(query)
            opts, unknown = validation.search_options(options, self.config.search_result_limit)
            if unknown:
                warnings.append(f"Ignored unknown search options: {unknown}")
            request = await self._search_request(backend, user_id, text, opts, deadline)
            if not request.terms and request.mode == "text":
                warnings.append("Query has no searchable terms")
            found: ops.SearchResult = await backend.fan_out(request, backend.search_phase_timeout(), deadline)
            if found.shards_failed:
                warnings.append(f"Partial results: shards {found.shards_failed} did not answer")
            results = [{k: v for k, v in hit.items() if k != "timestamp_epoch"} for hit in found.results]
            metadata = {"query": text, "search_type": request.mode, "sort": request.sort,
                        "result_count": len(results), "total_matches": found.total, "offset": request.offset,
                        "limit": request.limit, "session_filter": opts["session_ids"],
                        "search_duration_ms": (time.perf_counter() - started) * 1000,
                        "partial": bool(found.shards_failed), "shards_failed": found.shards_failed,
                        "vector_pending": found.pending}
            return Outcome({"results": results, "search_metadata": metadata,
                            "performance_info": {"cache_used": found.cache_hit,
                                                 "index_hit": bool(request.terms) or request.mode != "text",
                                                 "optimization_level": request.mode}}, len(results), found.cache_hit)
        return await run_operation(self.metrics, "search_conversations", body, cacheable=True)

    async def _search_request(self, backend: PathBackend, user_id: str, text: str, opts: dict[str, Any],
                              deadline: float) -> ops.SearchRequest:
        """The router's request for a search; vector and hybrid embed the query within the deadline."""
        mode = opts["search_type"]
        vector = None
        if mode != "text":
            if not self._bridge.vector_search_ready():
                raise InvalidInput("Vector and hybrid search need enable_vector_search=True and an embedder",
                                   ErrorCode.VECTOR_SEARCH_UNAVAILABLE)
            vector = await self._bridge.embed_query(text, deadline)
        return ops.SearchRequest(user_id, backend.user_shard(user_id), mode, query_terms(text), opts["offset"],
                                 opts["limit"], opts["filters"], opts["sort"], opts["include_metadata"], vector,
                                 opts["similarity_threshold"])

    async def get_analytics_summary(self, user_id: str, time_range_days: int = 30) -> dict[str, Any]:
        """Exact counts over [now - days, now) of the user's messages and sessions."""
        async def body(warnings: list[str]) -> Outcome:
            backend = self._backend()
            validate_id(user_id, "user")
            days = validation.int_arg(time_range_days, "time_range_days", 1, 3650)
            result: ops.Cached = await backend.fan_out(
                ops.AnalyticsRequest(user_id, backend.user_shard(user_id), days, time.time()))
            return Outcome({"analytics": result.value}, result.value["total_messages"], result.cache_hit)
        return await run_operation(self.metrics, "get_analytics_summary", body, cacheable=True)

    # ------------------------------------------------------------------ sessions and deletion
    async def list_sessions(self, user_id: str, limit: int | None = None, offset: int = 0) -> dict[str, Any]:
        """The user's sessions, newest first, with exact message counts."""
        async def body(warnings: list[str]) -> Outcome:
            backend = self._backend()
            validate_id(user_id, "user")
            page_limit = self.config.history_page_size if limit is None else validation.int_arg(limit, "limit", 0, 1000)
            start = validation.int_arg(offset, "offset", 0)
            result: ops.SessionListing = await backend.fan_out(
                ops.ListSessionsRequest(user_id, backend.user_shard(user_id)))
            sessions = result.sessions
            if not result.user_exists and not sessions:
                raise UserNotFound(f"User '{user_id}' not found")
            page = sessions[start:start + page_limit]
            has_more = start + page_limit < len(sessions)
            return Outcome({"sessions": page, "total_count": len(sessions), "has_more": has_more,
                            "pagination": {"limit": page_limit, "offset": start, "returned_count": len(page),
                                           "has_next_page": has_more}}, len(page), result.cache_hit)
        return await run_operation(self.metrics, "list_sessions", body, cacheable=True)

    async def delete_session(self, user_id: str, session_id: str) -> dict[str, Any]:
        async def body(warnings: list[str]) -> Outcome:
            backend = self._backend()
            validation.user_and_session(user_id, session_id)
            deleted = await backend.session(ops.DeleteSession(user_id, session_id))
            return Outcome({"session_id": session_id, "deleted": True, "messages_deleted": deleted}, deleted)
        return await run_operation(self.metrics, "delete_session", body)

    async def delete_user(self, user_id: str) -> dict[str, Any]:
        async def body(warnings: list[str]) -> Outcome:
            backend = self._backend()
            validate_id(user_id, "user")
            totals = await backend.fan_out(ops.DeleteUserRequest(user_id, backend.user_shard(user_id)))
            return Outcome({"user_id": user_id, "deleted": True, **totals}, totals["messages_deleted"])
        return await run_operation(self.metrics, "delete_user", body)

    async def purge_older_than(self, days: float, *, user_id: str | None = None) -> dict[str, Any]:
        """Delete messages older than `days` (all users or one) and sessions left empty before the cutoff."""
        async def body(warnings: list[str]) -> Outcome:
            backend = self._backend()
            span = validation.days_arg(days, "days", 36500)
            if user_id is not None:
                validate_id(user_id, "user")
            cutoff = validation.now_minus_days(span)
            totals = await backend.fan_out(ops.PurgeRequest(cutoff.timestamp(), user_id))
            return Outcome({"cutoff": iso(cutoff), **totals}, totals["messages_deleted"])
        return await run_operation(self.metrics, "purge_older_than", body)

    # ------------------------------------------------------------------ export / import (api/transfer.py)
    async def export_session(self, user_id: str, session_id: str, path: Any = None) -> dict[str, Any]:
        """The session as JSONL (header line, then one line per message); atomic write when `path` is given."""
        async def body(warnings: list[str]) -> Outcome:
            result = await transfer.export_session(self._backend(), user_id, session_id, path)
            return Outcome(result, result["message_count"])
        return await run_operation(self.metrics, "export_session", body)

    async def import_session(self, user_id: str, path: Any = None, *, jsonl: str | None = None,
                             session_id: str | None = None, on_conflict: str = "error") -> dict[str, Any]:
        """Import an exported session (creates the user if missing); see on_conflict error|merge|replace."""
        async def body(warnings: list[str]) -> Outcome:
            result = await transfer.import_session(self._backend(), self.config, user_id, path, jsonl, session_id,
                                                   on_conflict)
            return Outcome(result, result["imported"])
        return await run_operation(self.metrics, "import_session", body)

    # ------------------------------------------------------------------ metrics and cache
    def get_performance_metrics(self) -> dict[str, Any]:
        """Metrics of this bridge (sync; shard figures from the latest snapshot)."""
        return performance_metrics(self._bridge, self.metrics)

    async def fetch_performance_metrics(self) -> dict[str, Any]:
        """Like get_performance_metrics, from a fresh shard snapshot."""
        if not self._bridge.is_closed:
            await self._bridge.refresh_shard_snapshot()
        return self.get_performance_metrics()

    def clear_cache(self) -> None:
        """Empty every shard cache of the path (for other bridges too) and wait until each shard has;
        metrics are kept. Every call issued after this returns sees a cold cache. Raises
        StorageError (SHARD_UNAVAILABLE / TIMEOUT) if a shard could not be cleared."""
        try:
            self._backend().clear_caches()
        except BridgeClosed:
            return  # nothing is cached for a closed bridge
        except EngineError as exc:
            raise StorageError(exc.message, operation="clear_cache", error_code=exc.code) from None

    def reset_metrics(self) -> None:
        """Zero this bridge's counters."""
        self.metrics.reset()


__all__ = ["FFChatDataLayer"]
