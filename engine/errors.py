"""The error tree: one root, a class per failure a caller must tell apart, codes as class attributes.

    EngineError                              code
    ├── InvalidInput (ValueError)            INVALID_ARGUMENT (or INVALID_ID / INVALID_MESSAGE /
    │   │                                    MESSAGE_TOO_LARGE / VECTOR_SEARCH_UNAVAILABLE, given)
    │   └── PathConfigMismatch               CONFIG_ERROR: a setting differs from the open path's
    │       ├── ShardCountMismatch           shard_count differs from the stored one
    │       ├── DurabilityMismatch           stronger durability than the path's shards give
    │       └── EmbedderMismatch             an embedder the path's shards do not use
    ├── SessionNotFound (LookupError)        SESSION_NOT_FOUND
    ├── UserNotFound (LookupError)           USER_NOT_FOUND
    ├── StorageFailure                       STORAGE_ERROR: an I/O step failed
    ├── CorruptRecord                        STORAGE_ERROR: damaged durable data, the shard refuses to open
    ├── ShardLocked                          STORAGE_ERROR: another process holds the shard or path
    ├── StaleEpoch                           STORAGE_ERROR: a newer instance owns the shard log; this one stops
    ├── Unavailable                          SHARD_UNAVAILABLE: retry later
    │   ├── ShardUnavailable                 a shard (or the router) cannot be reached
    │   ├── ShardClosed                      the shard's log is closed
    │   ├── ShardUnassigned                  a (restarted) actor serves no shard yet: assign, retry
    │   ├── ConnectionLost                   the direct connection to a shard broke: reconnect, retry
    │   └── PathNotOpen                      the router does not know the path (restarted): re-register
    ├── RequestTimeout (TimeoutError)        TIMEOUT: the call's deadline passed
    └── BridgeClosed                         BRIDGE_CLOSED: the bridge was closed

The storage errors are siblings, not subclasses of StorageFailure: a handler that retries a failed
write must never catch a fencing (StaleEpoch) or corruption error by accident.
Callers tell errors apart by class (`except ShardCountMismatch`), never by comparing codes. Every
error pickles with its message and code (Ray sends them between processes).
"""

from __future__ import annotations


class ErrorCode:
    """The contract's error codes (`metadata.error_code`, `ChatIntegrationError.error_code`)."""

    INVALID_ID = "INVALID_ID"
    INVALID_MESSAGE = "INVALID_MESSAGE"
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
    USER_NOT_FOUND = "USER_NOT_FOUND"
    VECTOR_SEARCH_UNAVAILABLE = "VECTOR_SEARCH_UNAVAILABLE"
    BRIDGE_CLOSED = "BRIDGE_CLOSED"
    SHARD_UNAVAILABLE = "SHARD_UNAVAILABLE"
    TIMEOUT = "TIMEOUT"
    STORAGE_ERROR = "STORAGE_ERROR"
    SEARCH_ERROR = "SEARCH_ERROR"
    CONFIG_ERROR = "CONFIG_ERROR"
    INIT_ERROR = "INIT_ERROR"
    PERFORMANCE_ERROR = "PERFORMANCE_ERROR"


class EngineError(Exception):
    """Root of every engine error; `code` is the contract's error code."""

    default_code = ErrorCode.STORAGE_ERROR

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

    default_code = ErrorCode.INVALID_ARGUMENT


class PathConfigMismatch(InvalidInput):
    """A bridge asks an open path for a setting its shards do not have; `config_field` names it."""

    default_code = ErrorCode.CONFIG_ERROR
    config_field = ""


class ShardCountMismatch(PathConfigMismatch):
    """An explicit shard_count differs from the number of shards stored at the path."""

    config_field = "shard_count"


class DurabilityMismatch(PathConfigMismatch):
    """A bridge asks for stronger durability than the open path's shards give."""

    config_field = "durability"


class EmbedderMismatch(PathConfigMismatch):
    """A bridge asks for an embedder the open path's shards do not use."""

    config_field = "embedder"


class SessionNotFound(EngineError, LookupError):
    default_code = ErrorCode.SESSION_NOT_FOUND


class UserNotFound(EngineError, LookupError):
    default_code = ErrorCode.USER_NOT_FOUND


class StorageFailure(EngineError):
    """An I/O step failed."""


class CorruptRecord(EngineError):
    """Durable data is damaged (a record a later one says was on disk fails its checks)."""


class ShardLocked(EngineError):
    """Another process holds the lock of this shard or path."""


class StaleEpoch(EngineError):
    """A newer incarnation opened this shard; this one must stop writing."""


class Unavailable(EngineError):
    """Something the call needs cannot serve right now; a retry later may succeed."""

    default_code = ErrorCode.SHARD_UNAVAILABLE


class ShardUnavailable(Unavailable):
    """A shard or the router cannot be reached (actor dead, restarting, or unreachable)."""


class ShardClosed(Unavailable):
    """The shard's log is closed."""


class ConnectionLost(Unavailable, ConnectionError):
    """The direct connection to a shard broke, was refused, or its actor restarted: the caller
    reconnects (asking Ray for the shard's endpoint again) and retries inside its deadline."""


class ShardUnassigned(Unavailable):
    """The actor holds no shard (fresh from the pool, or restarted by Ray): assign it, then retry."""


class PathNotOpen(Unavailable):
    """The router has no record of the path (it restarted): re-register the path, then retry."""


class RequestTimeout(EngineError, TimeoutError):
    """The call's deadline passed before it finished."""

    default_code = ErrorCode.TIMEOUT


class BridgeClosed(EngineError):
    """The bridge was closed; nothing more is read or written through it."""

    default_code = ErrorCode.BRIDGE_CLOSED


ALL_ERRORS = (
    EngineError, InvalidInput, PathConfigMismatch, ShardCountMismatch, DurabilityMismatch, EmbedderMismatch, SessionNotFound, UserNotFound, StorageFailure, CorruptRecord,
    ShardLocked, StaleEpoch, Unavailable, ShardUnavailable, ShardClosed, ShardUnassigned, PathNotOpen,
    RequestTimeout, BridgeClosed,
)
