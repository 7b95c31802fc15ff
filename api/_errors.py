"""The one place Ray failures become contract errors (SHARD_UNAVAILABLE, TIMEOUT)."""

from __future__ import annotations

from engine.errors import EngineError


class ShardUnavailable(EngineError):
    default_code = "SHARD_UNAVAILABLE"


class RequestTimeout(EngineError):
    default_code = "TIMEOUT"


def is_retryable_ray_error(exc: BaseException) -> bool:
    """Actor died, restarting or unreachable: the call may be retried (idempotently)."""
    from ray import exceptions as ray_exceptions
    return isinstance(exc, (ray_exceptions.RayActorError, ray_exceptions.ActorUnavailableError,
                            ray_exceptions.ObjectLostError))


def map_ray_errors(exc: BaseException, what: str) -> EngineError:
    """Map a Ray failure to ShardUnavailable or RequestTimeout (engine errors pass through)."""
    from ray import exceptions as ray_exceptions
    if isinstance(exc, EngineError):
        return exc
    if isinstance(exc, (TimeoutError, ray_exceptions.GetTimeoutError)):
        return RequestTimeout(f"{what} did not finish before the request deadline")
    if is_retryable_ray_error(exc):
        return ShardUnavailable(f"{what} is unavailable: {type(exc).__name__}")
    return EngineError(f"{what} failed: {type(exc).__name__}: {exc}", "STORAGE_ERROR")
