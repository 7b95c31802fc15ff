"""engine.operations and the shard's registry: every operation type has one handler whose parameters
are exactly the operation's fields, and everything that crosses Ray pickles."""

from __future__ import annotations

import inspect
import pickle
from dataclasses import fields

import pytest

from engine import backup_ops as bops
from engine import checkpoint
from engine import operations as ops
from engine.shard import Shard
from tests.factories import message

BASES = (ops.ShardOperation, ops.UserOperation, ops.SessionOperation)
OPERATION_TYPES = sorted({value for module in (ops, bops, checkpoint) for value in vars(module).values()
                          if isinstance(value, type) and issubclass(value, ops.ShardOperation)
                          and value not in BASES}, key=lambda kind: kind.__name__)


def test_every_operation_type_has_a_handler():
    """The registry built from `@handles` marks covers every operation type and nothing else."""
    assert set(Shard._handlers) == set(OPERATION_TYPES)


@pytest.mark.parametrize("operation", OPERATION_TYPES, ids=lambda kind: kind.__name__)
def test_handler_parameters_are_the_operation_fields(operation):
    """A handler takes exactly its operation's fields by name (so dispatch by keyword always binds)."""
    parameters = list(inspect.signature(Shard._handlers[operation]).parameters)[1:]
    assert parameters == [field.name for field in fields(operation)]


def test_operations_requests_and_replies_pickle():
    """Operations, fan-out requests and replies survive pickling unchanged (Ray pickles them)."""
    values = [bops.BackupShard("/b", "id"), bops.BackupCommit("/b", "id", {"shards": []}, 2),
              ops.Append("u", "s", [message("hi")], None), ops.History("u", "s", 10, latest=True),
              ops.SearchRequest("u", 1, "hybrid", ["a"], 0, 10, {"roles": ["user"]}, "recent", True, [0.1], 0.2),
              ops.Reply(True, ops.Cached({"x": 1}, True)), ops.AppendReply(["m"], "t", 1, 0, [], 3),
              ops.SearchResult([], 0, [1], False, 2), ops.SessionListing([], True, False)]
    assert [pickle.loads(pickle.dumps(value)) for value in values] == values


def test_an_unknown_operation_fails_alone(tmp_path):
    """An object that is not a registered operation gets INVALID_ARGUMENT; its batch-mates run."""
    from tests.factories import open_shard
    shard = open_shard(tmp_path)
    replies = shard.execute([ops.ShardOperation(), ops.CreateSession("u", "s")])
    assert replies[0].ok is False and replies[0].value.code == "INVALID_ARGUMENT"
    assert replies[1] == ops.Reply(True, True)
    shard.close()


def test_a_read_given_wrong_types_is_invalid_argument_not_an_internal_error(tmp_path):
    """A read whose values have the wrong types (a caller bypassing the api) answers INVALID_ARGUMENT."""
    from tests.factories import open_shard
    shard = open_shard(tmp_path)
    shard.execute([ops.CreateSession("u", "s")])
    reply = shard.execute([ops.History("u", "s", "ten")])[0]  # type: ignore[arg-type]
    assert reply.ok is False and reply.value.code == "INVALID_ARGUMENT" and "History" in reply.value.message
    shard.close()


def test_a_write_given_wrong_types_is_invalid_argument_and_needs_no_reload(tmp_path):
    """A write whose values have the wrong types fails before memory changes: INVALID_ARGUMENT, no
    rebuild of memory from the log, and the shard keeps serving."""
    from tests.factories import open_shard
    shard = open_shard(tmp_path)
    shard.execute([ops.CreateSession("u", "s"), ops.Append("u", "s", [message("kept")])])
    replies = shard.execute([ops.DeleteUserData(["u"]), ops.Append("u", "s", [message("next")])])  # type: ignore[arg-type]
    assert replies[0].ok is False and replies[0].value.code == "INVALID_ARGUMENT"
    assert replies[1].ok and shard.reloads == 0
    assert [m["content"] for m in shard.read_range("u", "s", 0, 10)["messages"]] == ["kept", "next"]
    shard.close()


@pytest.mark.parametrize("bad, code", [
    ({"role": "user", "content": "   "}, "INVALID_MESSAGE"),
    ({"role": "user", "content": "x" * 2048}, "MESSAGE_TOO_LARGE"),
    ({"role": "user", "content": "x", "message_id": 0}, "INVALID_ID"),
    ({"role": "user", "content": "x", "metadata": {"k": "v" * 70_000}}, "MESSAGE_TOO_LARGE"),
])
def test_the_shard_checks_messages_by_the_apis_rules(tmp_path, bad, code):
    """A message sent straight to a shard is checked by the same rules as through the api."""
    from tests.factories import open_shard
    shard = open_shard(tmp_path, max_message_bytes=1024)
    shard.execute([ops.CreateSession("u", "s")])
    reply = shard.execute([ops.Append("u", "s", [bad])])[0]
    assert reply.ok is False and reply.value.code == code and "messages[0]" in reply.value.message
    assert shard.read_range("u", "s", 0, 10)["messages"] == []
    shard.close()
