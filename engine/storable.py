"""What a shard can store: valid Unicode text and JSON-typed values of bounded depth and range.

The contract's "storable means encodable" rule (§4.1). The api checks every field with these
functions before anything is sent, and the shard checks again what it encodes, so a value that
cannot become log bytes fails alone with INVALID_MESSAGE naming the field, and changes nothing.
"""

from __future__ import annotations

import math
from typing import Any

from .config import MB
from .errors import InvalidInput

MAX_NESTING = 32
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
MAX_BATCH_CONTENT_BYTES = 64 * MB
_CODE = "INVALID_MESSAGE"


def text_bytes(value: str, field: str, code: str = _CODE) -> int:
    """UTF-8 size of `value`; raises InvalidInput if it is not valid Unicode (a lone surrogate)."""
    if value.isascii():
        return len(value)
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{field}: invalid Unicode (lone surrogate {value[exc.start]!r} at position "
                           f"{exc.start})", code) from None


def check_text(value: Any, field: str, code: str = _CODE) -> str:
    """`value` if it is a str of valid Unicode; raises InvalidInput naming `field` otherwise."""
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string, got {type(value).__name__}", code)
    text_bytes(value, field, code)
    return value


def check_json(value: Any, field: str, code: str = _CODE) -> None:
    """Raise InvalidInput unless `value` holds only JSON types (dict with str keys, list, str, int,
    float, bool, None), valid Unicode, integers in -2**63..2**64-1 and at most MAX_NESTING levels
    of containers (the outermost dict or list is level 1)."""
    _walk(value, field, 0, code)


# A path is the root field name or a (parent path, key or list position) pair: building the pair
# costs one tuple per value, and the text is only formatted for an error (this runs on every store).
_Path = Any


def _field(path: _Path) -> str:
    segments: list[str] = []
    while isinstance(path, tuple):
        path, step = path
        segments.append(f"[{step}]" if isinstance(step, int) else f".{_key_name(step)}")
    root: str = path
    return root + "".join(reversed(segments))


def _walk(value: Any, path: _Path, depth: int, code: str) -> None:
    if isinstance(value, str):
        if not value.isascii():
            _check_encodes(value, path, code)
    elif isinstance(value, int):  # bool included
        if not INT_MIN <= value <= INT_MAX:
            raise InvalidInput(f"{_field(path)}: integer {_short(value)} is out of range (-2**63..2**64-1)", code)
    elif isinstance(value, float):
        if not math.isfinite(value):  # JSON has no NaN or Infinity: an export would not be valid JSON
            raise InvalidInput(f"{_field(path)}: {value} is not a JSON number (NaN and infinities are not)", code)
    elif value is None:
        return
    elif isinstance(value, (dict, list)):
        if depth >= MAX_NESTING:
            raise InvalidInput(f"{_short_field(_field(path))}: nested deeper than {MAX_NESTING} levels", code)
        if isinstance(value, list):
            for position, item in enumerate(value):
                _walk(item, (path, position), depth + 1, code)
            return
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"{_field(path)}: key {_short(key)} is not a string", code)
            if not key.isascii():
                text_bytes(key, f"{_field(path)} key {_short(key)}", code)
            _walk(item, (path, key), depth + 1, code)
    else:
        raise InvalidInput(f"{_field(path)}: {type(value).__name__} is not a JSON type (use dict, list, str, int, "
                           f"float, bool or None)", code)


def _check_encodes(value: str, path: _Path, code: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        text_bytes(value, _field(path), code)  # raises with the position of the surrogate


def _key_name(key: str) -> str:
    return key if key.isidentifier() and len(key) <= 40 else repr(key[:40] + ("..." if len(key) > 40 else ""))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


def _short_field(field: str) -> str:
    return field if len(field) <= 120 else field[:60] + "..." + field[-40:]
