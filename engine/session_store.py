"""In-memory session and message state of one shard, and the pure read helpers over it."""

from __future__ import annotations

from bisect import bisect_left
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

from .errors import InvalidInput
from .message_table import MessageTable, StoredMessage, copy_json

__all__ = ["MessageTable", "SessionState", "StoredMessage", "history_page", "page_bytes", "analytics_digest"]


class SessionState:
    """A session record with its ordered messages (a MessageTable)."""

    __slots__ = ("record", "messages")

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record
        self.messages = MessageTable()

    @property
    def content_bytes(self) -> int:
        return self.messages.content_bytes

    @property
    def ram_bytes(self) -> int:
        return self.messages.ram_bytes() + 64 + 100 * len(self.record)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.record)
        out["metadata"] = copy_json(self.record.get("metadata") or {})
        out["message_count"] = len(self.messages)
        return out


def history_page(session: SessionState, limit: int, offset: int, before: str | None, after: str | None,
                 latest: bool) -> dict[str, Any]:
    """A page of a session, oldest first, with the true total and has_more in the paging direction."""
    messages = session.messages
    total = len(messages)
    if before is not None or after is not None:
        cursor = before if before is not None else after
        position = messages.position_of(cursor)  # type: ignore[arg-type]
        if position is None:
            raise InvalidInput(f"Cursor message_id '{cursor}' is not in this session", "INVALID_ARGUMENT")
        if before is not None:
            start = max(0, position - limit)
            page, has_more = messages[start:position], start > 0
        else:
            end = position + 1 + limit
            page, has_more = messages[position + 1:end], end < total
    elif latest:
        end = max(0, total - offset)
        start = max(0, end - limit)
        page, has_more = messages[start:end], start > 0
    else:
        page, has_more = messages[offset:offset + limit], offset + limit < total
    return {"messages": [message.to_dict() for message in page], "total_count": total, "has_more": has_more}


def page_bytes(page: dict[str, Any]) -> int:
    """Size estimate of a cached page (content + per-message overhead)."""
    return 256 + sum(len(m["content"]) + 240 for m in page["messages"])


class SessionDigest(NamedTuple):
    """What analytics needs of one session, independent of any time window."""

    created: float  # epoch seconds
    epochs: list[float]  # message timestamps, sorted
    roles: list[str]  # the role of each message, in the order of `epochs`


def analytics_digest(sessions: list[SessionState]) -> list[SessionDigest]:
    """A user's sessions on one shard as digests: computed once, cached until the user's next write,
    and enough to answer any window exactly (`partial_from_digest`)."""
    digests = []
    for session in sessions:
        stamped = sorted(zip(session.messages.epochs().tolist(), session.messages.roles()))
        digests.append(SessionDigest(datetime.fromisoformat(session.record["created_at"]).timestamp(),
                                     [epoch for epoch, _ in stamped], [role for _, role in stamped]))
    return digests


def digest_bytes(digests: list[SessionDigest]) -> int:
    """Size estimate of cached digests."""
    return 128 + sum(96 + 48 * len(digest.epochs) for digest in digests)


def partial_from_digest(digests: list[SessionDigest], window_start: float, window_end: float) -> dict[str, Any]:
    """One shard's share of a user's analytics over [window_start, window_end)."""
    middle = window_start + (window_end - window_start) / 2
    by_role = {"user": 0, "assistant": 0, "system": 0, "tool": 0}
    days: set[str] = set()
    counted_sessions = messages_in_window = first_half = 0
    last_activity: float | None = None
    for digest in digests:
        first, stop = bisect_left(digest.epochs, window_start), bisect_left(digest.epochs, window_end)
        newest = max(digest.created, digest.epochs[-1]) if digest.epochs else digest.created
        last_activity = newest if last_activity is None else max(last_activity, newest)
        counted_sessions += window_start <= digest.created < window_end or stop > first
        messages_in_window += stop - first
        first_half += bisect_left(digest.epochs, middle, first, stop) - first
        for role in digest.roles[first:stop]:
            by_role[role] += 1
        days.update(datetime.fromtimestamp(epoch, timezone.utc).date().isoformat()
                    for epoch in digest.epochs[first:stop])
    return {"sessions": counted_sessions, "messages": messages_in_window, "by_role": by_role,
            "days": sorted(days), "last_activity": last_activity, "first_half": first_half,
            "second_half": messages_in_window - first_half}


def merge_analytics(parts: list[dict[str, Any]], days: int, now: datetime) -> dict[str, Any]:
    """Merge per-shard analytics partials into the contract's analytics dict."""
    sessions = sum(part["sessions"] for part in parts)
    messages = sum(part["messages"] for part in parts)
    by_role = {role: sum(part["by_role"][role] for part in parts) for role in ("user", "assistant", "system", "tool")}
    active_days = len({day for part in parts for day in part["days"]})
    activity = [part["last_activity"] for part in parts if part["last_activity"] is not None]
    first = sum(part["first_half"] for part in parts)
    second = sum(part["second_half"] for part in parts)
    if messages == 0:
        trend = "inactive"
    elif second > first * 1.2:
        trend = "increasing"
    elif second < first * 0.8:
        trend = "decreasing"
    else:
        trend = "stable"
    last_days_ago = int((now.timestamp() - max(activity)) // 86400) if activity else None
    return {
        "total_sessions": sessions,
        "total_messages": messages,
        "avg_session_length": messages / sessions if sessions else 0.0,
        "usage_patterns": {"sessions_per_day": sessions / days,
                           "messages_per_session": messages / sessions if sessions else 0.0,
                           "active_days": active_days},
        "recent_activity": {"last_session_days_ago": last_days_ago, "activity_trend": trend},
        "messages_by_role": by_role,
        "time_range_days": days,
        "window_start": (now - timedelta(days=days)).isoformat(),
        "window_end": now.isoformat(),
    }
