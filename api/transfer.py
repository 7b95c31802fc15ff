"""JSONL import of a session (the export side lives in data_layer): parse, validate, write in batches."""

from __future__ import annotations

import json
import os
from typing import Any

from engine.errors import InvalidInput
from engine.models import check_metadata_dict, iso, normalize_message, parse_timestamp, validate_id

CONFLICT_POLICIES = ("error", "merge", "replace")


def parse_jsonl(text: str, max_message_bytes: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, clean messages); errors name the 1-based line."""
    lines = [line for line in text.splitlines()]
    if not lines or not lines[0].strip():
        raise InvalidInput("line 1: missing session header", "INVALID_ARGUMENT")
    try:
        header = json.loads(lines[0])
    except ValueError as exc:
        raise InvalidInput(f"line 1: invalid JSON: {exc}", "INVALID_ARGUMENT") from None
    if not isinstance(header, dict) or header.get("type") != "session" or header.get("format") != "ffchat-session":
        raise InvalidInput("line 1: not an ffchat-session header", "INVALID_ARGUMENT")
    if header.get("version") != 1:
        raise InvalidInput(f"line 1: unsupported version {header.get('version')!r}", "INVALID_ARGUMENT")
    messages: list[dict[str, Any]] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise InvalidInput(f"line {number}: invalid JSON: {exc}", "INVALID_ARGUMENT") from None
        if not isinstance(item, dict) or item.get("type") != "message":
            raise InvalidInput(f"line {number}: expected a message object", "INVALID_ARGUMENT")
        item = {key: value for key, value in item.items() if key != "type"}
        try:
            clean, _ = normalize_message(item, max_message_bytes)
        except InvalidInput as exc:
            raise InvalidInput(f"line {number}: {exc.message}", exc.code) from None
        if "message_id" not in clean:
            raise InvalidInput(f"line {number}: message_id is required in an export", "INVALID_ARGUMENT")
        messages.append(clean)
    return header, messages


def _header_fields(header: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if isinstance(header.get("title"), str):
        fields["title"] = header["title"]
    if isinstance(header.get("session_type"), str):
        fields["session_type"] = header["session_type"]
    for key in ("created_at", "updated_at"):
        if header.get(key) is not None:
            fields[key] = iso(parse_timestamp(header[key], key, "INVALID_ARGUMENT"))
    fields["metadata"] = check_metadata_dict(header.get("metadata"), "session metadata")
    return fields


async def import_session_body(data_layer: Any, user_id: Any, path: Any, jsonl: Any, session_id: Any,
                              on_conflict: Any) -> dict[str, Any]:
    validate_id(user_id, "user")
    if (path is None) == (jsonl is None):
        raise InvalidInput("Give exactly one of path and jsonl", "INVALID_ARGUMENT")
    if on_conflict not in CONFLICT_POLICIES:
        raise InvalidInput(f"on_conflict must be one of {list(CONFLICT_POLICIES)}", "INVALID_ARGUMENT")
    if path is not None:
        try:
            with open(os.fspath(path), encoding="utf-8") as handle:
                jsonl = handle.read()
        except (OSError, TypeError) as exc:
            raise InvalidInput(f"Cannot read {path!r}: {exc}", "INVALID_ARGUMENT") from None
    if not isinstance(jsonl, str):
        raise InvalidInput("jsonl must be a string", "INVALID_ARGUMENT")
    config = data_layer.config
    header, messages = parse_jsonl(jsonl, config.max_message_bytes)
    target = validate_id(session_id if session_id is not None else header.get("session_id"), "session")
    backend = data_layer._backend()
    await backend.user_call(user_id, "create_user", {})
    existing = await backend.session_call(user_id, target, "get_session")
    if existing is not None:
        if on_conflict == "error":
            raise InvalidInput(f"Session '{target}' already exists for user '{user_id}'", "INVALID_ARGUMENT")
        if on_conflict == "replace":
            await backend.session_call(user_id, target, "delete_session")
            existing = None
    if existing is None:
        fields = _header_fields(header)
        await backend.session_call(user_id, target, "create_session", fields.get("title"),
                                   fields.get("session_type", "chat"), fields["metadata"], fields.get("created_at"),
                                   fields.get("updated_at"))
    imported = skipped = 0
    size = config.message_batch_size
    for start in range(0, len(messages), size):
        result = await backend.session_call(user_id, target, "append", messages[start:start + size])
        imported += result["count"]
        skipped += result["duplicates"]
    return {"session_id": target, "imported": imported, "skipped": skipped, "message_count": len(messages)}
