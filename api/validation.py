"""Argument checks shared by the data layer and the facade; each raises InvalidInput with a code."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from engine.errors import InvalidInput
from engine.models import ROLES, normalize_message, parse_timestamp, validate_id
from engine.storable import MAX_BATCH_CONTENT_BYTES, text_bytes

SEARCH_OPTIONS = {"search_type", "limit", "offset", "session_ids", "roles", "start_time", "end_time", "date_range",
                  "sort", "similarity_threshold", "include_metadata", "include_context"}
MAX_QUERY_CHARS = 1024


def int_arg(value: Any, name: str, low: int, high: int | None = None) -> int:
    if type(value) is not int or value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise InvalidInput(f"{name} must be an int {bound}, got {_show(value)}", "INVALID_ARGUMENT")
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 64 else text[:64] + "..."


def user_and_session(user_id: Any, session_id: Any) -> None:
    validate_id(user_id, "user")
    validate_id(session_id, "session")


def messages_batch(messages: Any, batch_limit: int, max_message_bytes: int) -> tuple[list[dict], list[str]]:
    """Validate every message before anything is written; the first failure names its index."""
    if not isinstance(messages, (list, tuple)):
        raise InvalidInput("messages must be a list of message dicts", "INVALID_ARGUMENT")
    if len(messages) > batch_limit:
        raise InvalidInput(f"Batch of {len(messages)} messages is above message_batch_size ({batch_limit})",
                           "INVALID_ARGUMENT")
    clean: list[dict] = []
    unknown: list[str] = []
    seen: set[str] = set()
    for position, message in enumerate(messages):
        try:
            item, extra = normalize_message(message, max_message_bytes)
        except InvalidInput as exc:
            raise InvalidInput(f"messages[{position}]: {exc.message}", exc.code) from None
        if "message_id" in item:
            if item["message_id"] in seen:
                raise InvalidInput(f"messages[{position}]: message_id '{item['message_id']}' repeated in the batch",
                                   "INVALID_ARGUMENT")
            seen.add(item["message_id"])
        unknown.extend(key for key in extra if key not in unknown)
        clean.append(item)
    check_batch_content(clean)
    return clean, unknown


def content_bytes(message: dict[str, Any]) -> int:
    """UTF-8 size of a validated message's content."""
    return text_bytes(message["content"], "Message content")


def check_batch_content(clean: list[dict[str, Any]]) -> None:
    """A batch holds at most MAX_BATCH_CONTENT_BYTES of content (one log record, one Ray argument)."""
    # A character is at most 4 UTF-8 bytes: small batches never pay for exact sizes.
    if sum(len(item["content"]) for item in clean) * 4 <= MAX_BATCH_CONTENT_BYTES:
        return
    total = sum(content_bytes(item) for item in clean)
    if total > MAX_BATCH_CONTENT_BYTES:
        raise InvalidInput(f"Batch content is {total} bytes in {len(clean)} messages, above the limit of "
                           f"{MAX_BATCH_CONTENT_BYTES} bytes (64 MiB) per store_chat_messages call; "
                           f"split it into smaller batches", "INVALID_ARGUMENT")


def history_args(limit: Any, offset: Any, before: Any, after: Any, latest: Any, default_limit: int) -> tuple:
    limit = default_limit if limit is None else int_arg(limit, "limit", 0, 10000)
    offset = int_arg(offset, "offset", 0)
    if type(latest) is not bool:
        raise InvalidInput(f"latest must be a bool, got {_show(latest)}", "INVALID_ARGUMENT")
    if before is not None and after is not None:
        raise InvalidInput("Give at most one of before and after", "INVALID_ARGUMENT")
    cursor = before if before is not None else after
    if cursor is not None:
        if offset != 0 or latest:
            raise InvalidInput("A cursor cannot be combined with offset or latest", "INVALID_ARGUMENT")
        try:
            validate_id(cursor, "message")
        except InvalidInput as exc:
            raise InvalidInput(f"Invalid cursor: {exc.message}", "INVALID_ARGUMENT") from None
    return limit, offset, before, after, latest


def _time(value: Any, name: str) -> float | None:
    if value is None:
        return None
    return parse_timestamp(value, name, "INVALID_ARGUMENT").timestamp()


def _unique_list(value: Any, valid: Any, message: str) -> list[Any] | None:
    """A list/tuple/set option as a list without repeats (first occurrence kept), or None if not given."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple, set)) or not all(valid(item) for item in value):
        raise InvalidInput(message, "INVALID_ARGUMENT")
    return list(dict.fromkeys(value))


def search_options(options: Any, default_limit: int) -> tuple[dict[str, Any], list[str]]:
    """Validated search options and the list of unknown option names."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise InvalidInput("Search options must be a dict", "INVALID_ARGUMENT")
    unknown = [key for key in options if key not in SEARCH_OPTIONS]
    search_type = options.get("search_type", "text")
    if search_type not in ("text", "vector", "hybrid"):
        raise InvalidInput(f"Unknown search_type {_show(search_type)}: use text, vector or hybrid", "INVALID_ARGUMENT")
    limit = int_arg(options.get("limit", default_limit), "limit", 0, 1000)
    offset = int_arg(options.get("offset", 0), "offset", 0, 10000)
    sort = options.get("sort", "relevance")
    if sort not in ("relevance", "recent"):
        raise InvalidInput(f"sort must be 'relevance' or 'recent', got {_show(sort)}", "INVALID_ARGUMENT")
    session_ids = _unique_list(options.get("session_ids"), lambda s: isinstance(s, str),
                               "session_ids must be a list of session ids")
    roles = _unique_list(options.get("roles"), lambda r: r in ROLES, f"roles must be a subset of {list(ROLES)}")
    start, end = options.get("start_time"), options.get("end_time")
    date_range = options.get("date_range")
    if date_range is not None:
        if not isinstance(date_range, dict):
            raise InvalidInput("date_range must be a dict with start and end", "INVALID_ARGUMENT")
        start = start if start is not None else date_range.get("start")
        end = end if end is not None else date_range.get("end")
    threshold = options.get("similarity_threshold")
    if threshold is not None and (type(threshold) not in (int, float) or not -1.0 <= threshold <= 1.0):
        raise InvalidInput("similarity_threshold must be a number in -1..1", "INVALID_ARGUMENT")
    include_metadata = options.get("include_metadata", True)
    if type(include_metadata) is not bool:
        raise InvalidInput("include_metadata must be a bool", "INVALID_ARGUMENT")
    filters: dict[str, Any] = {}
    if session_ids is not None:
        filters["session_ids"] = session_ids
    if roles is not None:
        filters["roles"] = roles
    start_ts, end_ts = _time(start, "start_time"), _time(end, "end_time")
    if start_ts is not None:
        filters["start_ts"] = start_ts
    if end_ts is not None:
        filters["end_ts"] = end_ts
    return {"search_type": search_type, "limit": limit, "offset": offset, "sort": sort, "filters": filters,
            "session_ids": session_ids, "similarity_threshold": threshold,
            "include_metadata": include_metadata}, unknown


def query_text(query: Any) -> str:
    if not isinstance(query, str):
        raise InvalidInput(f"Search query must be a string, got {type(query).__name__}", "INVALID_ARGUMENT")
    if not query.strip():
        raise InvalidInput("Search query cannot be empty", "INVALID_ARGUMENT")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidInput(f"Search query is longer than {MAX_QUERY_CHARS} characters", "INVALID_ARGUMENT")
    return query


def days_arg(value: Any, name: str, high: float) -> float:
    """A positive number of days: 0 < days <= high (bools are not numbers here)."""
    if type(value) not in (int, float) or not 0 < value <= high:
        raise InvalidInput(f"{name} must be a number with 0 < {name} <= {high:g}, got {_show(value)}",
                           "INVALID_ARGUMENT")
    return float(value)


def now_minus_days(days: float) -> datetime:
    from datetime import timedelta, timezone
    return datetime.now(timezone.utc) - timedelta(days=days)
