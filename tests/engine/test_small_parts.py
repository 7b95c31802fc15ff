"""Routing stability, cache bounds, metrics, validation texts, error pickling, config precedence."""

import pickle
import subprocess
import sys

import pytest

from engine import errors
from engine.config import EngineConfig
from engine.metrics import LatencyRecorder
from engine.models import (MAX_TITLE_BYTES, check_metadata_dict, check_profile, check_session_type, check_title,
                           normalize_message, parse_timestamp, validate_id)
from engine.routing import shard_index_for, user_shard_index
from engine.shard_cache import ShardCache


def test_routing_is_stable_across_processes():
    """Shard placement does not depend on the process (no hash randomisation)."""
    here = [shard_index_for(f"user{i}", f"s{i}", 7) for i in range(50)] + [user_shard_index("bob", 7)]
    code = ("import sys; sys.path.insert(0, '.');from engine.routing import *;"
            "print([shard_index_for(f'user{i}', f's{i}', 7) for i in range(50)] + [user_shard_index('bob', 7)])")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123"}).stdout.strip()
    assert str(here) == there
    assert shard_index_for("a", "s", 4) in range(4)


def test_cache_is_bounded_in_bytes_and_lru():
    """The cache evicts least-recently-used entries past its byte budget."""
    cache = ShardCache(100)
    cache.put("a", 1, 40)
    cache.put("b", 2, 40)
    cache.get("a")
    cache.put("c", 3, 40)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.bytes == 80
    assert cache.put("huge", 4, 1000) is False


def test_cache_invalidation_by_tag():
    """Invalidating a tag drops exactly the entries carrying it."""
    cache = ShardCache(1000)
    cache.put("p1", 1, 10, [("s", "u", "a")])
    cache.put("p2", 2, 10, [("s", "u", "b")])
    assert cache.invalidate(("s", "u", "a")) == 1
    assert cache.get("p1") is None and cache.get("p2") == 2


def test_latency_recorder_percentiles_are_nearest_rank():
    """p50/p95/p99 are nearest-rank over the recent window; errors are counted."""
    recorder = LatencyRecorder(window=100)
    for value in range(1, 101):
        recorder.record(float(value), error=value == 100)
    snapshot = recorder.snapshot()
    assert (snapshot["p50_ms"], snapshot["p95_ms"], snapshot["p99_ms"]) == (50.0, 95.0, 99.0)
    assert snapshot["error_count"] == 1 and snapshot["total_operations"] == 100


def test_id_validation_texts():
    """Ids follow the contract's rules and texts."""
    assert validate_id("user_1@x.y:z-", "user") == "user_1@x.y:z-"
    for bad, text in [("", "User ID cannot be empty"), ("   ", "User ID cannot be empty"),
                      ("../etc", "Invalid user ID '../etc': must be 1-128 characters of [A-Za-z0-9_.:@-]"),
                      ("..", "Invalid user ID '..'"), ("a" * 129, "Invalid user ID")]:
        with pytest.raises(errors.InvalidInput) as caught:
            validate_id(bad, "user")
        assert caught.value.code == "INVALID_ID" and str(caught.value).startswith(text)


def test_message_validation_order_and_codes():
    """Messages are checked in the contract's order with its codes."""
    cases = [("x", "INVALID_MESSAGE", "Message must be a dict"),
             ({"role": "user", "content": "  "}, "INVALID_MESSAGE", "Message content cannot be empty"),
             ({"content": "hi"}, "INVALID_MESSAGE", "Message missing required fields: ['role']"),
             ({"role": "boss", "content": "hi"}, "INVALID_MESSAGE", "Invalid role"),
             ({"role": "user", "content": 5}, "INVALID_MESSAGE", "Message content must be a string"),
             ({"role": "user", "content": "é" * 600}, "MESSAGE_TOO_LARGE", "Message content is 1200 bytes"),
             ({"role": "user", "content": "hi", "message_id": "a/b"}, "INVALID_ID", "Invalid message ID"),
             ({"role": "user", "content": "hi", "timestamp": "yesterday"}, "INVALID_MESSAGE", "Invalid timestamp")]
    for value, code, text in cases:
        with pytest.raises(errors.InvalidInput) as caught:
            normalize_message(value, 1024)
        assert caught.value.code == code and str(caught.value).startswith(text), value
    metadata = {"a": [1]}
    clean, unknown = normalize_message({"role": "user", "content": "hi", "metadata": metadata, "x": 1,
                                        "timestamp": "2025-01-01T12:00:00"}, 1024)
    assert unknown == ["x"] and clean["timestamp"] == "2025-01-01T12:00:00+00:00"
    clean["metadata"]["a"].append(2)
    assert metadata == {"a": [1]}


def _invalid(function, *args):
    with pytest.raises(errors.InvalidInput) as caught:
        function(*args)
    return caught.value


def _nested(levels):
    value = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def test_message_fields_must_be_storable():
    """Content, attachments and metadata keys and values must be encodable; errors name the field."""
    cases = [({"content": "bad \ud800"}, "Message content: invalid Unicode (lone surrogate '\\ud800' at position 4)"),
             ({"attachments": ["ok", "x\udfff"]}, "Message attachments[1]: invalid Unicode"),
             ({"metadata": {"n": 2**64}}, "Message metadata.n: integer 18446744073709551616 is out of range"),
             ({"metadata": {"v": ["\ud800"]}}, "Message metadata.v[0]: invalid Unicode"),
             ({"metadata": {"k\ud800": 1}}, "Message metadata key 'k\\ud800': invalid Unicode"),
             ({"metadata": {"s": {1}}}, "Message metadata.s: set is not a JSON type"),
             ({"metadata": _nested(33)}, "Message metadata.a.a"),
             ({"metadata": _nested(900)}, "Message metadata.a.a")]
    for extra, text in cases:
        error = _invalid(normalize_message, {"role": "user", "content": "hi", **extra}, 1024)
        assert error.code == "INVALID_MESSAGE" and str(error).startswith(text), extra
    assert str(_invalid(normalize_message, {"role": "user", "content": "hi", "metadata": _nested(900)}, 1024)
               ).endswith("nested deeper than 32 levels")


def test_storable_edges_pass_and_are_copied():
    """32 levels and the integer range ends are storable; the clean metadata is an equal copy."""
    metadata = {"max": 2**64 - 1, "min": -(2**63), "deep": _nested(31), "text": "é😀"}
    clean, _ = normalize_message({"role": "user", "content": "hé", "metadata": metadata}, 1024)
    assert clean["metadata"] == metadata and clean["metadata"] is not metadata
    assert clean["metadata"]["deep"] is not metadata["deep"]


def test_storable_checks_keep_the_contract_order():
    """The encodability checks come after the contract's earlier checks (role present, role value, size)."""
    assert str(_invalid(normalize_message, {"content": "x\ud800"}, 1024)) == "Message missing required fields: ['role']"
    assert str(_invalid(normalize_message, {"role": "boss", "content": "x\ud800"}, 1024)).startswith("Invalid role")
    error = _invalid(normalize_message, {"role": "user", "content": "x" * 2000, "metadata": {"n": 2**64}}, 1024)
    assert error.code == "MESSAGE_TOO_LARGE"


def test_error_texts_never_carry_a_lone_surrogate():
    """Ids and timestamps with a lone surrogate are shown escaped, so the error text itself encodes."""
    cases = [(_invalid(validate_id, "a\ud800", "user"),
              "Invalid user ID 'a\\ud800': must be 1-128 characters of [A-Za-z0-9_.:@-]"),
             (_invalid(normalize_message, {"role": "user", "content": "hi", "timestamp": "x\ud800"}, 1024),
              "Invalid timestamp 'x\\ud800': expected ISO-8601"),
             (_invalid(parse_timestamp, "2025\udc00", "updated_at", "INVALID_ARGUMENT"),
              "Invalid updated_at '2025\\udc00': expected ISO-8601")]
    for error, text in cases:
        assert str(error) == text
        str(error).encode("utf-8")


def test_profile_and_session_metadata_must_be_storable():
    """Profiles and session metadata follow the same rules; their shape errors keep INVALID_ARGUMENT."""
    assert str(_invalid(check_profile, {"username": "\ud800"})).startswith("Profile.username: invalid Unicode")
    assert _invalid(check_profile, {"prefs": {"n": 2**64}}).code == "INVALID_MESSAGE"
    assert _invalid(check_profile, ["x"]).code == "INVALID_ARGUMENT"
    error = _invalid(check_metadata_dict, {"a": _nested(40)}, "session metadata")
    assert error.code == "INVALID_MESSAGE" and str(error).startswith("session metadata.a.a")
    assert _invalid(check_metadata_dict, {"a": "x" * 70_000}, "session metadata").code == "MESSAGE_TOO_LARGE"
    assert check_profile({"username": "é", "n": 2**64 - 1}) == {"username": "é", "n": 2**64 - 1}


def test_titles_and_session_types_are_bounded_and_encodable():
    """Titles are at most 64 KiB of valid UTF-8; session types 1-64 characters; errors say the bound."""
    assert check_title(None) is None and check_title("é" * (MAX_TITLE_BYTES // 2)) == "é" * (MAX_TITLE_BYTES // 2)
    too_long = _invalid(check_title, "é" * (MAX_TITLE_BYTES // 2 + 1))
    assert too_long.code == "MESSAGE_TOO_LARGE"
    assert str(too_long) == "title is 65538 bytes, above the limit of 65536 bytes (64 KiB UTF-8)"
    assert str(_invalid(check_title, "t\ud800")).startswith("title: invalid Unicode")
    assert _invalid(check_title, 5).code == "INVALID_ARGUMENT"
    assert check_session_type("x" * 64) == "x" * 64
    assert str(_invalid(check_session_type, "x" * 65)) == "session_type is 65 characters, above the limit of 64"
    assert str(_invalid(check_session_type, "")) == "session_type must be a non-empty string"
    assert _invalid(check_session_type, "chat\ud800").code == "INVALID_MESSAGE"


@pytest.mark.parametrize("cls", errors.ALL_ERRORS)
def test_every_engine_error_pickles(cls):
    """Engine errors survive pickling with message, code and type."""
    error = cls("something broke", "INVALID_ID")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls and str(copy) == "something broke" and copy.code == "INVALID_ID"


def test_config_precedence_explicit_over_env(monkeypatch):
    """EngineConfig.from_env: explicit > FFCHAT_* environment > defaults."""
    monkeypatch.setenv("FFCHAT_SHARD_COUNT", "5")
    monkeypatch.setenv("FFCHAT_DURABILITY", "fsync")
    config = EngineConfig.from_env(storage_path="/tmp/x", durability="none")
    assert config.shard_count == 5 and config.durability == "none"
    with pytest.raises(Exception):
        EngineConfig(storage_path="/tmp/x", shard_count=0)
