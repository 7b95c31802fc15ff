"""Export and import of a session as JSONL (contract 4.8): one header line, then one line per message.

    {"type": "session", "format": "ffchat-session", "version": 1, "session_id": ..., "user_id": ..., ...}
    {"type": "message", "message_id": ..., "role": ..., "content": ..., "timestamp": ..., ...}

A file of many sessions (`chat-bridge export --user / --all`) is the concatenation of session
exports: each header line starts the next session (`sessions_of` splits one). Import parses and
checks everything before it writes, then writes the session, the user and the messages in
batches, every step within the call's one deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any, Iterable, Iterator, TextIO

from engine import operations as ops
from engine.errors import InvalidInput
from engine.models import (check_metadata_dict, check_session_type, check_title, iso, normalize_message,
                           parse_timestamp, validate_id)
from engine.storable import MAX_BATCH_CONTENT_BYTES

from . import validation
from .backend import PathBackend
from .validation import content_bytes

CONFLICT_POLICIES = ("error", "merge", "replace")


def _line_json(line: str, number: int) -> Any:
    try:
        return json.loads(line)
    except ValueError as exc:
        raise InvalidInput(f"line {number}: invalid JSON: {exc}", "INVALID_ARGUMENT") from None
    except RecursionError:
        raise InvalidInput(f"line {number}: invalid JSON: nested too deeply", "INVALID_ARGUMENT") from None


def parse_jsonl(text: str, max_message_bytes: int, first_line: int = 1
                ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, clean messages); errors name the 1-based line, counting `text` from `first_line`."""
    # Lines end at "\n" only: str.splitlines() would also split inside a line at U+2028, U+2029 or
    # U+0085, which json.dumps(ensure_ascii=False) leaves unescaped in exported content.
    lines = text.split("\n")
    if not lines[0].strip():
        raise InvalidInput(f"line {first_line}: missing session header", "INVALID_ARGUMENT")
    header = _line_json(lines[0], first_line)
    if not _is_header(header):
        raise InvalidInput(f"line {first_line}: not an ffchat-session header", "INVALID_ARGUMENT")
    if header.get("version") != 1:
        raise InvalidInput(f"line {first_line}: unsupported version {header.get('version')!r}", "INVALID_ARGUMENT")
    messages: list[dict[str, Any]] = []
    for number, line in enumerate(lines[1:], start=first_line + 1):
        if not line.strip():
            continue
        item = _line_json(line, number)
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


def _is_header(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type") == "session" and item.get("format") == "ffchat-session"


def sessions_of(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """Split a JSONL export of one or many sessions, read line by line, into (first line number,
    one session's JSONL): a new session starts at each header line. Holds one session at a time."""
    first, section = 1, []
    for number, line in enumerate(lines, start=1):
        # A header always holds "ffchat-session"; only lines that do are parsed here.
        if section and '"ffchat-session"' in line and _is_header(_quiet_json(line)):
            yield first, "".join(section)
            first, section = number, []
        section.append(line)
    if section:
        yield first, "".join(section)


def _quiet_json(line: str) -> Any:
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return None  # parse_jsonl names the line when it reads the session


def header_fields(header: dict[str, Any], line: int = 1) -> dict[str, Any]:
    """The session fields of a header, checked like create_session's arguments; errors name `line`."""
    try:
        kind = header.get("session_type")
        fields: dict[str, Any] = {"title": check_title(header.get("title")),
                                  "session_type": check_session_type("chat" if kind is None else kind)}
        for key in ("created_at", "updated_at"):
            if header.get(key) is not None:
                fields[key] = iso(parse_timestamp(header[key], key, "INVALID_ARGUMENT"))
        fields["metadata"] = check_metadata_dict(header.get("metadata"), "session metadata")
    except InvalidInput as exc:
        raise InvalidInput(f"line {line}: {exc.message}", exc.code) from None
    return fields


def content_batches(messages: list[dict[str, Any]], count_limit: int) -> Iterator[list[dict[str, Any]]]:
    """Consecutive batches of at most `count_limit` messages and MAX_BATCH_CONTENT_BYTES of content
    (one message always fits: max_message_bytes is at most 16 MiB)."""
    batch: list[dict[str, Any]] = []
    size = 0
    for message in messages:
        message_bytes = content_bytes(message)
        if batch and (len(batch) >= count_limit or size + message_bytes > MAX_BATCH_CONTENT_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(message)
        size += message_bytes
    if batch:
        yield batch


def _read(path: Any) -> str:
    try:
        name = os.fspath(path)
        with open(name, "rb") as handle:
            raw = handle.read()
    except (OSError, TypeError) as exc:
        raise InvalidInput(f"Cannot read {path!r}: {exc}", "INVALID_ARGUMENT") from None
    try:
        return raw.decode("utf-8")  # decoded whole, so the error's offset is the file's
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"Cannot read {name!r}: not valid UTF-8 (byte {exc.start})", "INVALID_ARGUMENT") from None


async def import_session(backend: PathBackend, config: Any, user_id: Any, path: Any, jsonl: Any, session_id: Any,
                         on_conflict: Any) -> dict[str, Any]:
    """Import one exported session; returns {session_id, imported, skipped, message_count}."""
    deadline = backend.deadline()
    validate_id(user_id, "user")
    if (path is None) == (jsonl is None):
        raise InvalidInput("Give exactly one of path and jsonl", "INVALID_ARGUMENT")
    if on_conflict not in CONFLICT_POLICIES:
        raise InvalidInput(f"on_conflict must be one of {list(CONFLICT_POLICIES)}", "INVALID_ARGUMENT")
    if path is not None:
        jsonl = _read(path)
    if not isinstance(jsonl, str):
        raise InvalidInput("jsonl must be a string", "INVALID_ARGUMENT")
    header, messages = parse_jsonl(jsonl, config.max_message_bytes)
    target = validate_id(session_id if session_id is not None else header.get("session_id"), "session")
    fields = header_fields(header)  # before any write: a bad header must not delete a session on "replace"
    created = await _prepare_session(backend, user_id, target, fields, on_conflict, deadline)
    # A session the import created keeps the header's updated_at; a merge into one that existed is an update.
    updated_at = fields.get("updated_at") if created else None
    imported = skipped = 0
    for batch in content_batches(messages, config.message_batch_size):
        result: ops.AppendReply = await backend.session(ops.Append(user_id, target, batch, updated_at), deadline)
        imported += result.count
        skipped += result.duplicates
    return {"session_id": target, "imported": imported, "skipped": skipped, "message_count": len(messages)}


async def _prepare_session(backend: PathBackend, user_id: str, target: str, fields: dict[str, Any],
                           on_conflict: str, deadline: float) -> bool:
    """Create the user if missing, apply the conflict policy, then create the session (True if
    created). The user comes first, as in create_session: a call cut short never leaves a session
    whose owner search, analytics and delete_user do not know."""
    await backend.user(ops.CreateUser(user_id, {}), deadline)
    existing = await backend.session(ops.GetSession(user_id, target), deadline)
    if existing is not None:
        if on_conflict == "error":
            raise InvalidInput(f"Session '{target}' already exists for user '{user_id}'", "INVALID_ARGUMENT")
        if on_conflict == "replace":
            await backend.session(ops.DeleteSession(user_id, target), deadline)
            existing = None
    if existing is None:
        await backend.session(ops.CreateSession(user_id, target, fields["title"], fields["session_type"],
                                                fields["metadata"], fields.get("created_at"),
                                                fields.get("updated_at")), deadline)
    return existing is None


async def export_session(backend: PathBackend, user_id: str, session_id: str, path: Any) -> dict[str, Any]:
    """The session as JSONL; with `path`, written atomically there (and `jsonl` is None)."""
    validation.user_and_session(user_id, session_id)
    exported = await backend.session(ops.ExportSession(user_id, session_id))
    text = to_jsonl(exported)
    result = {"session_id": session_id, "message_count": len(exported["messages"]),
              "bytes": len(text.encode("utf-8")), "path": None, "jsonl": text}
    if path is not None:
        result["path"] = os.fspath(path)
        result["jsonl"] = None
        _atomic_write(result["path"], text)
    return result


def to_jsonl(exported: dict[str, Any]) -> str:
    session = exported["session"]
    header = {"type": "session", "format": "ffchat-session", "version": 1,
              **{key: session[key] for key in ("session_id", "user_id", "title", "session_type", "created_at",
                                               "updated_at", "metadata")}}
    lines = [json.dumps(header, ensure_ascii=False)]
    for message in exported["messages"]:
        lines.append(json.dumps({"type": "message", **message}, ensure_ascii=False))
    return "\n".join(lines) + "\n"


def _atomic_write(target: str, text: str) -> None:
    with atomic_text_file(target) as handle:
        handle.write(text)


@contextlib.contextmanager
def atomic_text_file(target: str) -> Iterator[TextIO]:
    """A UTF-8 file that appears at `target` whole, or not at all: written to a temporary file beside
    it, fsync'd and renamed over `target` when the block ends; removed if the block raises."""
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".export-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
