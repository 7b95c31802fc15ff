"""Engine error hierarchy: one root, codes matching the public contract, all picklable.

    EngineError
    ├── InvalidInput (ValueError)           INVALID_ID / INVALID_MESSAGE / MESSAGE_TOO_LARGE / INVALID_ARGUMENT
    ├── SessionNotFound (LookupError)       SESSION_NOT_FOUND
    ├── UserNotFound (LookupError)          USER_NOT_FOUND
    ├── CorruptRecord (OSError-free)        STORAGE_ERROR: mid-log corruption, refuses to open
    ├── ShardLocked                         STORAGE_ERROR: another process holds the shard/path
    ├── StaleEpoch                          STORAGE_ERROR: a newer incarnation owns the shard log
    ├── StorageFailure                      STORAGE_ERROR: unexpected I/O failure
    ├── ShardClosed                         SHARD_UNAVAILABLE: the shard was closed
    ├── ShardUnassigned                     SHARD_UNAVAILABLE: a (restarted) host serves no shard yet
    └── PathNotOpen                         SHARD_UNAVAILABLE: the router does not know the path (restarted)
"""

from __future__ import annotations


class EngineError(Exception):
    """Root of every engine error; `code` is the contract's error code."""

    default_code = "STORAGE_ERROR"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message, code)
        self.message = message
        self.code = code or self.default_code

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # keep the constructor shape across pickling
        return (type(self), (self.message, self.code))


class InvalidInput(EngineError, ValueError):
    """The caller's input breaks a rule; nothing was written."""

    default_code = "INVALID_ARGUMENT"


class SessionNotFound(EngineError, LookupError):
    default_code = "SESSION_NOT_FOUND"


class UserNotFound(EngineError, LookupError):
    default_code = "USER_NOT_FOUND"


class CorruptRecord(EngineError):
    """A record in the middle of a segment failed its checks."""


class ShardLocked(EngineError):
    """Another process holds the lock of this shard or path."""


class StaleEpoch(EngineError):
    """A newer incarnation opened this shard; this one must stop writing."""


class StorageFailure(EngineError):
    """An unexpected I/O failure."""


class ShardClosed(EngineError):
    default_code = "SHARD_UNAVAILABLE"


class ShardUnassigned(EngineError):
    """The actor holds no shard (fresh from the pool, or restarted by Ray): assign it, then retry."""

    default_code = "SHARD_UNAVAILABLE"


class PathNotOpen(EngineError):
    """The router has no record of the path (it restarted): re-register the path, then retry."""

    default_code = "SHARD_UNAVAILABLE"


ALL_ERRORS = (
    EngineError, InvalidInput, SessionNotFound, UserNotFound, CorruptRecord,
    ShardLocked, StaleEpoch, StorageFailure, ShardClosed, ShardUnassigned, PathNotOpen,
)
