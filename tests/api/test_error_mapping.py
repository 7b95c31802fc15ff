"""api._errors.map_ray_errors: Ray failures become contract errors whose text is never a traceback."""

import pytest
from ray import exceptions as ray_exceptions

from api._errors import RequestTimeout, ShardUnavailable, clean_error_text, map_ray_errors
from engine.errors import InvalidInput

TRACEBACK = ("\x1b[36mray::ShardActor.execute()\x1b[39m (pid=7700, ip=192.0.2.2, actor_id=32b0)\n"
             "Traceback (most recent call last):\n  File \"engine/codec.py\", line 40, in encode\n"
             "    payload = _pack(body)\nOverflowError: Integer value out of range")


def _task_error(cause):
    """What Ray raises when an actor method raised `cause` (built without a running Ray)."""
    error = ray_exceptions.RayTaskError("ShardActor.execute", TRACEBACK, cause, proctitle="ray::ShardActor.execute()",
                                        pid=7700, ip="192.0.2.2")
    return error.as_instanceof_cause()


def test_raw_task_error_text_is_a_coloured_traceback():
    """The premise: str() of Ray's task error is the multi-line remote traceback with terminal codes."""
    text = str(_task_error(OverflowError("Integer value out of range")))
    assert 'File "engine/codec.py", line 40' in text and "\x1b[36m" in text


def test_non_engine_exception_in_an_actor_becomes_a_clean_storage_error():
    """An actor's OverflowError maps to STORAGE_ERROR naming the type and the message's first line only."""
    mapped = map_ray_errors(_task_error(OverflowError("Integer value out of range\nsecond line")), "shard 0")
    assert mapped.code == "STORAGE_ERROR"
    assert str(mapped) == "shard 0 failed: OverflowError: Integer value out of range"


def test_terminal_codes_and_control_characters_are_stripped_and_length_bounded():
    """Colour codes, control characters and lone surrogates are dropped; the text is at most 300 chars + '...'."""
    cause = UnicodeEncodeError("utf-8", "bad \ud800", 4, 5, "surrogates not allowed")
    assert str(map_ray_errors(_task_error(cause), "shard 1")) == (
        "shard 1 failed: UnicodeEncodeError: 'utf-8' codec can't encode character '\\ud800' in position 4: "
        "surrogates not allowed")
    assert clean_error_text("\x1b[31mred\x1b[0m \x07bell\ud800") == "red bell"
    long = map_ray_errors(_task_error(ValueError("\x1b[1m" + "x" * 1000)), "shard 2")
    assert str(long) == "shard 2 failed: ValueError: " + "x" * 300 + "..."
    assert str(map_ray_errors(_task_error(RecursionError()), "shard 3")) == "shard 3 failed: RecursionError"


def test_engine_error_raised_in_an_actor_passes_through_unwrapped():
    """An engine error comes back as itself (its clean message and code), not as Ray's wrapper."""
    mapped = map_ray_errors(_task_error(InvalidInput("Message content: invalid Unicode", "INVALID_MESSAGE")), "shard 0")
    assert type(mapped) is InvalidInput and str(mapped) == "Message content: invalid Unicode"
    assert mapped.code == "INVALID_MESSAGE"


@pytest.mark.parametrize("exc, cls", [(ray_exceptions.GetTimeoutError("late"), RequestTimeout),
                                      (TimeoutError(), RequestTimeout),
                                      (ray_exceptions.RayActorError(), ShardUnavailable)])
def test_timeouts_and_dead_actors_keep_their_codes(exc, cls):
    """Deadlines map to TIMEOUT and dead actors to SHARD_UNAVAILABLE, with short texts."""
    mapped = map_ray_errors(exc, "shard 0")
    assert type(mapped) is cls and "\n" not in str(mapped)


def test_other_local_exceptions_are_cleaned_too():
    """A non-Ray exception with a multi-line message keeps only its first line."""
    mapped = map_ray_errors(RuntimeError("\x1b[33mboom\x1b[0m\nTraceback (most recent call last):"), "router")
    assert str(mapped) == "router failed: RuntimeError: boom" and mapped.code == "STORAGE_ERROR"
