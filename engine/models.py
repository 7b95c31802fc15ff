"""Input validation of values: ids, messages, timestamps, session and user records.

Validation is hand-written rather than a pydantic model per message: the contract fixes the exact
texts and the order of checks, and this runs on the hot path of every store. The typed read shapes
are api's (`ChatMessage`, `ChatSession`); the engine hands out plain dicts.
"""

from __future__ import annotations

import json
import os
import random
import re
from datetime import datetime, timezone
from typing import Any, Mapping

from .errors import InvalidInput
from .storable import check_json, text_bytes

ROLES = ("user", "assistant", "system", "tool")
_ROLE_SET = frozenset(ROLES)
_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
_ID_NAMES = {"user": "User", "session": "Session", "message": "Message"}
MESSAGE_KEYS = ("role", "content", "message_id", "timestamp", "attachments", "metadata")
_MESSAGE_KEY_SET = frozenset(MESSAGE_KEYS)
MAX_ATTACHMENTS = 64
MAX_ATTACHMENT_CHARS = 2048
MAX_METADATA_BYTES = 64 * 1024
# Session record bounds, so a session record (title + type + metadata) always fits one small log
# record and one list_sessions entry: 64 KiB like metadata, and a type is a short name ("chat").
MAX_TITLE_BYTES = 64 * 1024
MAX_SESSION_TYPE_CHARS = 64
# One compact encoder, built once: json.dumps with separators builds a new encoder per call.
_compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


# --------------------------------------------------------------------------- ids
def is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def validate_id(value: Any, kind: str) -> str:
    """Return `value` if it is a valid id of `kind` (user, session, message); raise INVALID_ID otherwise."""
    if type(value) is str and _ID_PATTERN.fullmatch(value) and value not in (".", ".."):
        return value
    name = _ID_NAMES[kind]
    if is_blank(value):
        raise InvalidInput(f"{name} ID cannot be empty", "INVALID_ID")
    shown = _printable(value) if isinstance(value, str) else repr(value)
    if len(shown) > 128:
        shown = shown[:128] + "..."
    raise InvalidInput(f"Invalid {kind} ID '{shown}': must be 1-128 characters of [A-Za-z0-9_.:@-]", "INVALID_ID")


_ids = random.Random(int.from_bytes(os.urandom(16), "big"))


def new_message_id() -> str:
    """`msg_` + 24 hex digits: 96 random bits (seeded from the OS once; no system call per id)."""
    return f"msg_{_ids.getrandbits(96):024x}"


def new_session_id(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return "chat_session_" + now.strftime("%Y%m%d_%H%M%S_%f") + "_" + os.urandom(4).hex()


def _printable(text: str) -> str:
    """`text` made safe to print and encode: a lone surrogate shows as a backslash escape."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# --------------------------------------------------------------------------- time
def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat()


def parse_timestamp(value: Any, what: str = "timestamp", code: str = "INVALID_MESSAGE") -> datetime:
    """ISO string or datetime to an aware UTC datetime (naive means UTC)."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value.strip():
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise InvalidInput(f"Invalid {what} '{_printable(value[:64])}': expected ISO-8601", code) from None
    else:
        raise InvalidInput(f"Invalid {what}: expected an ISO-8601 string or datetime", code)
    try:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        moment = moment.astimezone(timezone.utc)
        moment.timestamp()  # the shard orders and filters by epoch seconds: it must have one
    except (OverflowError, ValueError, TypeError, ArithmeticError) as exc:
        raise InvalidInput(f"Invalid {what}: outside the representable UTC range ({type(exc).__name__})",
                           code) from None
    except Exception as exc:  # a caller's tzinfo whose utcoffset() raises
        raise InvalidInput(f"Invalid {what}: its time zone failed ({type(exc).__name__})", code) from None
    return moment


# --------------------------------------------------------------------------- messages
def _checked_json_copy(value: dict[str, Any], field: str, too_large: str) -> dict[str, Any]:
    """Check `value` is storable (check_json), at most MAX_METADATA_BYTES as compact JSON, and
    return a deep copy (the caller's dict is never touched).

    The walk bounds the depth before json.dumps runs, so no RecursionError can escape; one compact
    dump serves both the size check and the copy.
    """
    check_json(value, field)
    text = _compact_json(value)
    if (len(text) if text.isascii() else len(text.encode("utf-8"))) > MAX_METADATA_BYTES:
        raise InvalidInput(f"{too_large} is above {MAX_METADATA_BYTES} bytes serialised", "MESSAGE_TOO_LARGE")
    copied: dict[str, Any] = json.loads(text)
    return copied


def _check_metadata(metadata: Any) -> dict[str, Any]:
    if not isinstance(metadata, dict) or not all(isinstance(key, str) for key in metadata):
        raise InvalidInput("Message metadata must be a dict with str keys", "INVALID_MESSAGE")
    return _checked_json_copy(metadata, "Message metadata", "Message metadata")


def _check_attachments(attachments: Any) -> list[str]:
    if not isinstance(attachments, (list, tuple)) or len(attachments) > MAX_ATTACHMENTS or not all(
            isinstance(item, str) and len(item) <= MAX_ATTACHMENT_CHARS for item in attachments):
        raise InvalidInput(f"Message attachments must be a list of at most {MAX_ATTACHMENTS} strings of at most "
                           f"{MAX_ATTACHMENT_CHARS} characters", "INVALID_MESSAGE")
    for position, item in enumerate(attachments):
        text_bytes(item, f"Message attachments[{position}]")
    return list(attachments)


def normalize_message(message: Any, max_message_bytes: int) -> tuple[dict[str, Any], list[str]]:
    """Validate one input message in the contract's order; return (clean message, unknown keys).

    The clean message has role, content and, when given, message_id, timestamp (UTC ISO),
    attachments and metadata. Raises InvalidInput with INVALID_MESSAGE, MESSAGE_TOO_LARGE or INVALID_ID.
    """
    if type(message) is not dict and not isinstance(message, Mapping):  # typing's isinstance costs ~1.5 µs
        raise InvalidInput("Message must be a dict", "INVALID_MESSAGE")
    content = message.get("content")
    if content is None or (isinstance(content, str) and not content.strip()):
        raise InvalidInput("Message content cannot be empty", "INVALID_MESSAGE")
    if "role" not in message or message["role"] is None:
        raise InvalidInput("Message missing required fields: ['role']", "INVALID_MESSAGE")
    role = message["role"]
    if not isinstance(role, str) or role not in _ROLE_SET:
        raise InvalidInput(f"Invalid role {role!r}: must be one of {list(ROLES)}", "INVALID_MESSAGE")
    if not isinstance(content, str):
        raise InvalidInput(f"Message content must be a string, got {type(content).__name__}", "INVALID_MESSAGE")
    size = text_bytes(content, "Message content")  # ASCII: len(); otherwise one encode, which finds lone surrogates
    if size > max_message_bytes:
        raise InvalidInput(f"Message content is {size} bytes, above max_message_bytes ({max_message_bytes})",
                           "MESSAGE_TOO_LARGE")
    clean: dict[str, Any] = {"role": role, "content": content}
    if message.get("message_id") is not None:
        clean["message_id"] = validate_id(message["message_id"], "message")
    if message.get("timestamp") is not None:
        clean["timestamp"] = iso(parse_timestamp(message["timestamp"]))
    if message.get("attachments") is not None:
        clean["attachments"] = _check_attachments(message["attachments"])
    if message.get("metadata") is not None:
        clean["metadata"] = _check_metadata(message["metadata"])
    unknown = [key for key in message if key not in _MESSAGE_KEY_SET]
    return clean, unknown


def check_profile(profile: Any) -> dict[str, Any]:
    """A user profile dict: storable (JSON types, valid Unicode), at most 64 KiB; returns a deep copy."""
    if profile is None:
        return {}
    if not isinstance(profile, dict) or not all(isinstance(key, str) for key in profile):
        raise InvalidInput("Profile must be a dict with str keys", "INVALID_ARGUMENT")
    return _checked_json_copy(profile, "Profile", "Profile")


def check_metadata_dict(metadata: Any, what: str = "metadata") -> dict[str, Any]:
    """Session metadata: a storable dict with str keys, at most 64 KiB; returns a deep copy."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(key, str) for key in metadata):
        raise InvalidInput(f"{what} must be a dict with str keys", "INVALID_ARGUMENT")
    return _checked_json_copy(metadata, what, what)


# --------------------------------------------------------------------------- session records
def check_title(value: Any, field: str = "title") -> str | None:
    """A session title: None (the type's default title) or valid Unicode of at most MAX_TITLE_BYTES."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string", "INVALID_ARGUMENT")
    size = text_bytes(value, field)
    if size > MAX_TITLE_BYTES:
        raise InvalidInput(f"{field} is {size} bytes, above the limit of {MAX_TITLE_BYTES} bytes (64 KiB UTF-8)",
                           "MESSAGE_TOO_LARGE")
    return value


def check_session_type(value: Any) -> str:
    """A session type: a non-empty name of at most MAX_SESSION_TYPE_CHARS characters of valid Unicode."""
    if not isinstance(value, str) or not value:
        raise InvalidInput("session_type must be a non-empty string", "INVALID_ARGUMENT")
    if len(value) > MAX_SESSION_TYPE_CHARS:
        raise InvalidInput(f"session_type is {len(value)} characters, above the limit of {MAX_SESSION_TYPE_CHARS}",
                           "INVALID_ARGUMENT")
    text_bytes(value, "session_type")
    return value
