"""The one place Ray failures become contract errors (SHARD_UNAVAILABLE, TIMEOUT, clean STORAGE_ERROR)."""

from __future__ import annotations

import logging
import re

from engine.errors import ConnectionLost, EngineError, ErrorCode, RequestTimeout, ShardUnavailable

logger = logging.getLogger(__name__)
MAX_ERROR_CHARS = 300
# CSI sequences such as "\x1b[36m" (colours) and "\x1b[2K"; Ray puts them in task tracebacks.
_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def is_retryable_ray_error(exc: BaseException) -> bool:
    """Actor died, restarting or unreachable, or its direct connection broke: the call may be
    retried (idempotently)."""
    if isinstance(exc, ConnectionLost):
        return True
    from ray import exceptions as ray_exceptions
    return isinstance(exc, (ray_exceptions.RayActorError, ray_exceptions.ActorUnavailableError,
                            ray_exceptions.ObjectLostError))


def clean_error_text(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """The first non-blank line of `text`, without terminal codes or control characters, at most
    `limit` characters: safe to show a caller, never a traceback."""
    text = _TERMINAL_CODES.sub("", text)
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    first = "".join(character for character in first if character.isprintable())
    return first if len(first) <= limit else first[:limit] + "..."


def describe_exception(exc: BaseException) -> str:
    """`Type: first line of the message`, cleaned and bounded."""
    message = clean_error_text(str(exc))
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def unwrap_ray_error(exc: BaseException) -> BaseException:
    """The exception an actor raised, not Ray's wrapper (whose text is the remote traceback)."""
    from ray import exceptions as ray_exceptions
    if isinstance(exc, ray_exceptions.RayTaskError) and isinstance(exc.cause, BaseException):
        return exc.cause
    return exc


def map_ray_errors(exc: BaseException, what: str) -> EngineError:
    """Map a Ray failure to ShardUnavailable or RequestTimeout; engine errors pass through.

    Anything else (an actor raised a non-engine exception: Ray delivers it as a RayTaskError whose
    text is the remote traceback, with terminal colour codes) becomes STORAGE_ERROR naming the
    original exception type and the first line of its message; the full text goes to the log.
    """
    from ray import exceptions as ray_exceptions
    cause = unwrap_ray_error(exc)
    if isinstance(cause, EngineError):
        return cause  # not the Ray wrapper, whose str() is the remote traceback
    if isinstance(exc, (TimeoutError, ray_exceptions.GetTimeoutError)):
        return RequestTimeout(f"{what} did not finish before the request deadline")
    if is_retryable_ray_error(exc):
        return ShardUnavailable(f"{what} is unavailable: {type(exc).__name__}")
    logger.error("%s failed: %s", what, exc)
    return EngineError(f"{what} failed: {describe_exception(cause)}", ErrorCode.STORAGE_ERROR)
