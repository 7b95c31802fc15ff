"""Storable means encodable (contract §4.1, issue 8.1): every field a caller hands the api is checked
before anything is sent, and a bad one is rejected by name with a clean error, writing nothing."""

import asyncio
import json
from datetime import datetime

import pytest

from api import StorageError
from api.transfer import content_batches
from api.validation import check_batch_content
from engine.config import MB
from engine.errors import InvalidInput
from engine.storable import MAX_BATCH_CONTENT_BYTES

IN_PROCESS = True  # unit tests of the api layer: router and shards run in this process, no Ray

OUT_OF_RANGE = "Message metadata.n: integer 18446744073709551616 is out of range (-2**63..2**64-1)"


def _nested(levels):
    """A dict nested `levels` deep (the outermost dict is level 1)."""
    value = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def _too_deep(field):
    return field + ".a" * 32 + ": nested deeper than 32 levels"


def _assert_rejected(result, code, error):
    """A failure envelope with exactly this code and text, which is never a traceback."""
    assert result["success"] is False and result["data"] is None
    assert result["metadata"]["error_code"] == code and result["metadata"]["records_affected"] == 0
    assert result["error"] == error
    assert "Traceback" not in result["error"] and "\x1b" not in result["error"]


def _assert_storage_error(caught, code, message):
    error = caught.value
    assert error.error_code == code and error.message == message
    assert "Traceback" not in str(error) and "\x1b" not in str(error)


async def _count(data, user_id, session_id):
    history = await data.get_chat_history(user_id, session_id)
    assert history["success"] is True, history
    return history["data"]["total_count"]


async def _store_rejected(data, session, message, code, error):
    user_id, session_id = session
    result = await data.store_chat_message(user_id, session_id, {"role": "user", "content": "x", **message})
    _assert_rejected(result, code, error)
    assert await _count(data, user_id, session_id) == 0


# ------------------------------------------------------------------ messages
async def test_metadata_integer_above_2_64_is_rejected_by_name(data, session):
    """metadata {"n": 2**64} is INVALID_MESSAGE naming metadata.n (it was a Ray traceback) and writes nothing."""
    await _store_rejected(data, session, {"metadata": {"n": 2**64}}, "INVALID_MESSAGE", OUT_OF_RANGE)


async def test_metadata_integer_below_minus_2_63_is_rejected_by_name(data, session):
    """metadata {"n": -2**63 - 1} is INVALID_MESSAGE naming metadata.n and writes nothing."""
    await _store_rejected(data, session, {"metadata": {"n": -(2**63) - 1}}, "INVALID_MESSAGE",
                          "Message metadata.n: integer -9223372036854775809 is out of range (-2**63..2**64-1)")


async def test_integer_range_ends_store_and_read_back_equal(data, session):
    """2**64-1 and -2**63 are storable and read back equal, in history and after a cache-cold read."""
    user_id, session_id = session
    metadata = {"max": 2**64 - 1, "min": -(2**63), "nested": [{"max": 2**64 - 1}]}
    stored = await data.store_chat_message(user_id, session_id,
                                           {"role": "user", "content": "ends", "metadata": metadata})
    assert stored["success"] is True, stored
    data.clear_cache()
    history = await data.get_chat_history(user_id, session_id)
    assert history["data"]["messages"][0]["metadata"] == metadata


async def test_lone_surrogate_in_content_is_rejected_by_name(data, session):
    """Content with a lone surrogate is INVALID_MESSAGE naming the content (it was a Ray traceback)."""
    await _store_rejected(data, session, {"content": "bad \ud800"}, "INVALID_MESSAGE",
                          "Message content: invalid Unicode (lone surrogate '\\ud800' at position 4)")


async def test_lone_surrogate_in_metadata_value_is_rejected_by_name(data, session):
    """A metadata value with a lone surrogate is INVALID_MESSAGE naming its path."""
    await _store_rejected(data, session, {"metadata": {"tags": ["ok", "b\udc00"]}}, "INVALID_MESSAGE",
                          "Message metadata.tags[1]: invalid Unicode (lone surrogate '\\udc00' at position 1)")


async def test_lone_surrogate_in_metadata_key_is_rejected_by_name(data, session):
    """A metadata key with a lone surrogate is INVALID_MESSAGE naming the key."""
    await _store_rejected(data, session, {"metadata": {"inner": {"k\ud800": 1}}}, "INVALID_MESSAGE",
                          "Message metadata.inner key 'k\\ud800': invalid Unicode (lone surrogate '\\ud800' at "
                          "position 1)")


async def test_lone_surrogate_in_attachment_is_rejected_by_name(data, session):
    """An attachment with a lone surrogate is INVALID_MESSAGE naming its position."""
    await _store_rejected(data, session, {"attachments": ["a.png", "\ud83d.png"]}, "INVALID_MESSAGE",
                          "Message attachments[1]: invalid Unicode (lone surrogate '\\ud83d' at position 0)")


async def test_non_json_metadata_value_is_rejected_by_name(data, session):
    """A set inside metadata is INVALID_MESSAGE naming its path."""
    await _store_rejected(data, session, {"metadata": {"s": {1, 2}}}, "INVALID_MESSAGE",
                          "Message metadata.s: set is not a JSON type (use dict, list, str, int, float, bool or None)")


async def test_metadata_nested_33_levels_is_rejected(data, session):
    """Metadata 33 levels deep is INVALID_MESSAGE naming the level that is too deep."""
    await _store_rejected(data, session, {"metadata": _nested(33)}, "INVALID_MESSAGE", _too_deep("Message metadata"))


@pytest.mark.parametrize("levels", [500, 900, 5000])
async def test_deeply_nested_metadata_fails_cleanly_and_history_stays_readable(data, session, levels):
    """500-5000 levels fail with INVALID_MESSAGE (it was a pickling RecursionError) and the history still reads."""
    await _store_rejected(data, session, {"metadata": _nested(levels)}, "INVALID_MESSAGE",
                          _too_deep("Message metadata"))


async def test_metadata_nested_32_levels_stores_and_reads_back(data, session):
    """Metadata exactly 32 levels deep is storable and reads back equal."""
    user_id, session_id = session
    metadata = _nested(32)
    stored = await data.store_chat_message(user_id, session_id,
                                           {"role": "user", "content": "deep", "metadata": metadata})
    assert stored["success"] is True, stored
    data.clear_cache()
    assert (await data.get_chat_history(user_id, session_id))["data"]["messages"][0]["metadata"] == metadata


async def test_batch_names_the_index_of_the_unstorable_message(data, session):
    """In store_chat_messages the error names the bad message's index, and no message of the batch is written."""
    user_id, session_id = session
    batch = [{"role": "user", "content": f"m{i}"} for i in range(3)] + [{"role": "user", "content": "bad \ud800"}]
    result = await data.store_chat_messages(user_id, session_id, batch)
    _assert_rejected(result, "INVALID_MESSAGE",
                     "messages[3]: Message content: invalid Unicode (lone surrogate '\\ud800' at position 4)")
    assert await _count(data, user_id, session_id) == 0


async def test_batch_over_64_mib_of_content_is_invalid_argument(data, session):
    """65 messages of 1 MiB (max_message_bytes) exceed 64 MiB of batch content: INVALID_ARGUMENT, nothing written."""
    user_id, session_id = session
    content = "x" * MB  # one shared string: the test holds 1 MiB, not 65
    result = await data.store_chat_messages(user_id, session_id, [{"role": "user", "content": content}] * 65)
    _assert_rejected(result, "INVALID_ARGUMENT",
                     "Batch content is 68157440 bytes in 65 messages, above the limit of 67108864 bytes (64 MiB) "
                     "per store_chat_messages call; split it into smaller batches")
    assert await _count(data, user_id, session_id) == 0


def test_batch_content_limit_is_inclusive_and_counts_utf8_bytes():
    """Exactly 64 MiB of content passes and one byte more fails; non-ASCII counts its UTF-8 bytes."""
    check_batch_content([{"content": "x" * (16 * MB)}] * 4)
    with pytest.raises(InvalidInput) as caught:
        check_batch_content([{"content": "x" * (16 * MB)}] * 4 + [{"content": "y"}])
    assert caught.value.code == "INVALID_ARGUMENT"
    assert str(caught.value).startswith("Batch content is 67108865 bytes in 5 messages")
    with pytest.raises(InvalidInput):
        check_batch_content([{"content": "é" * (8 * MB)}] * 4 + [{"content": "é"}])
    check_batch_content([{"content": "é" * (8 * MB)}] * 4)


async def test_one_bad_store_among_concurrent_good_ones_fails_alone(bridge, data):
    """12 concurrent good stores and 1 unstorable one on the same shard: the 12 succeed, the bad one fails alone."""
    storage, backend = data.storage, bridge.backend
    user_id = "si-concurrent"
    sessions = []
    number = 0
    while len(sessions) < 13:
        number += 1
        session_id = f"c{number}"
        if backend.session_shard(user_id, session_id) == 0:
            assert await storage.create_session(user_id, "concurrent", session_id=session_id) == session_id
            sessions.append(session_id)
    good = [data.store_chat_message(user_id, s, {"role": "user", "content": f"good {s}"}) for s in sessions[:12]]
    bad = data.store_chat_message(user_id, sessions[12], {"role": "user", "content": "x", "metadata": {"n": 2**64}})
    results = await asyncio.gather(*good[:6], bad, *good[6:])
    assert [r["success"] for r in results] == [True] * 6 + [False] + [True] * 6
    _assert_rejected(results[6], "INVALID_MESSAGE", OUT_OF_RANGE)
    assert [await _count(data, user_id, s) for s in sessions] == [1] * 12 + [0]


# ------------------------------------------------------------------ facade: sessions
async def test_create_session_with_lone_surrogate_title_is_rejected(data):
    """A title with a lone surrogate (it made the shard unopenable) is StorageError(INVALID_MESSAGE); nothing exists."""
    storage = data.storage
    with pytest.raises(StorageError) as caught:
        await storage.create_session("si-title", "bad \ud800", session_id="t1")
    _assert_storage_error(caught, "INVALID_MESSAGE", "title: invalid Unicode (lone surrogate '\\ud800' at position 4)")
    assert await storage.get_session("si-title", "t1") is None
    assert await storage.user_exists("si-title") is False


async def test_title_is_bounded_at_64_kib_of_utf8(data):
    """A 64 KiB title is stored and read back; one byte more is StorageError(MESSAGE_TOO_LARGE) naming the bound."""
    storage = data.storage
    title = "é" * (32 * 1024)
    assert await storage.create_session("si-long", title, session_id="ok") == "ok"
    assert (await storage.get_session("si-long", "ok")).title == title
    with pytest.raises(StorageError) as caught:
        await storage.create_session("si-long", title + "x", session_id="too-long")
    _assert_storage_error(caught, "MESSAGE_TOO_LARGE",
                          "title is 65537 bytes, above the limit of 65536 bytes (64 KiB UTF-8)")
    assert await storage.get_session("si-long", "too-long") is None


async def test_session_type_is_bounded_and_encodable(data):
    """session_type over 64 characters is INVALID_ARGUMENT and with a lone surrogate INVALID_MESSAGE; nothing exists."""
    storage = data.storage
    with pytest.raises(StorageError) as caught:
        await storage.create_session("si-type", session_type="t" * 65, session_id="s1")
    _assert_storage_error(caught, "INVALID_ARGUMENT", "session_type is 65 characters, above the limit of 64")
    with pytest.raises(StorageError) as caught:
        await storage.create_session("si-type", session_type="chat\udc00", session_id="s1")
    _assert_storage_error(caught, "INVALID_MESSAGE",
                          "session_type: invalid Unicode (lone surrogate '\\udc00' at position 4)")
    assert await storage.user_exists("si-type") is False


@pytest.mark.parametrize("metadata, message", [
    ({"n": 2**64}, "session metadata.n: integer 18446744073709551616 is out of range (-2**63..2**64-1)"),
    ({"v\ud800": 1}, "session metadata key 'v\\ud800': invalid Unicode (lone surrogate '\\ud800' at position 1)"),
    (_nested(900), _too_deep("session metadata"))])
async def test_unstorable_session_metadata_is_rejected_on_create(data, metadata, message):
    """Session metadata out of range, with a bad key or 900 levels deep is INVALID_MESSAGE; nothing exists."""
    storage = data.storage
    with pytest.raises(StorageError) as caught:
        await storage.create_session("si-smeta", "t", session_id="m1", metadata=metadata)
    _assert_storage_error(caught, "INVALID_MESSAGE", message)
    assert await storage.get_session("si-smeta", "m1") is None


async def test_update_session_checks_title_metadata_and_updated_at(data):
    """update_session rejects unstorable titles and metadata and a non-timestamp updated_at; nothing changes."""
    storage = data.storage
    session_id = await storage.create_session("si-update", "Before", metadata={"k": 1})
    before = await storage.get_session("si-update", session_id)
    cases = [({"title": "x\ud800"}, "INVALID_MESSAGE",
              "title: invalid Unicode (lone surrogate '\\ud800' at position 1)"),
             ({"session_name": "y\udfff"}, "INVALID_MESSAGE",
              "session_name: invalid Unicode (lone surrogate '\\udfff' at position 1)"),
             ({"title": 5}, "INVALID_ARGUMENT", "title must be a string"),
             ({"metadata": {"n": 2**64}}, "INVALID_MESSAGE", "session metadata.n: integer 18446744073709551616 is "
                                                             "out of range (-2**63..2**64-1)"),
             ({"updated_at": "yesterday"}, "INVALID_ARGUMENT", "Invalid updated_at 'yesterday': expected ISO-8601"),
             ({"updated_at": 12345}, "INVALID_ARGUMENT", "Invalid updated_at: expected an ISO-8601 string or datetime")]
    for updates, code, message in cases:
        with pytest.raises(StorageError) as caught:
            await storage.update_session("si-update", session_id, updates)
        _assert_storage_error(caught, code, message)
    assert await storage.get_session("si-update", session_id) == before


async def test_update_session_normalises_updated_at_to_utc_iso(data):
    """A naive datetime or an offset ISO string for updated_at is stored as the ISO string of the UTC time."""
    storage = data.storage
    session_id = await storage.create_session("si-updated-at", "t")
    assert await storage.update_session("si-updated-at", session_id, {"updated_at": datetime(2025, 3, 1, 12, 0)})
    assert (await storage.get_session("si-updated-at", session_id)).updated_at == "2025-03-01T12:00:00+00:00"
    assert await storage.update_session("si-updated-at", session_id, {"updated_at": "2025-03-01T14:00:00+02:00"})
    assert (await storage.get_session("si-updated-at", session_id)).updated_at == "2025-03-01T12:00:00+00:00"


# ------------------------------------------------------------------ facade: users and messages
async def test_create_user_with_unstorable_profile_is_rejected(data):
    """A profile field with a lone surrogate or an out-of-range int is StorageError(INVALID_MESSAGE); no user exists."""
    storage = data.storage
    for profile, message in [({"username": "al\ud800"},
                              "Profile.username: invalid Unicode (lone surrogate '\\ud800' at position 2)"),
                             ({"preferences": {"n": 2**64}}, "Profile.preferences.n: integer 18446744073709551616 "
                                                             "is out of range (-2**63..2**64-1)")]:
        with pytest.raises(StorageError) as caught:
            await storage.create_user("si-profile", profile)
        _assert_storage_error(caught, "INVALID_MESSAGE", message)
    assert await storage.user_exists("si-profile") is False


async def test_update_user_profile_with_unstorable_field_changes_nothing(data):
    """update_user_profile with a lone surrogate in a field is INVALID_MESSAGE; the profile is unchanged."""
    storage = data.storage
    assert await storage.create_user("si-profile-update", {"username": "al"}) is True
    before = await storage.get_user_profile("si-profile-update")
    with pytest.raises(StorageError) as caught:
        await storage.update_user_profile("si-profile-update", {"metadata": {"bio": "\udc80"}})
    _assert_storage_error(caught, "INVALID_MESSAGE",
                          "Profile.metadata.bio: invalid Unicode (lone surrogate '\\udc80' at position 0)")
    assert await storage.get_user_profile("si-profile-update") == before


async def test_facade_add_message_rejects_unstorable_message(data, session):
    """add_message with metadata 2**64 raises StorageError(INVALID_MESSAGE) naming metadata.n and writes nothing."""
    user_id, session_id = session
    with pytest.raises(StorageError) as caught:
        await data.storage.add_message(user_id, session_id, {"role": "user", "content": "x", "metadata": {"n": 2**64}})
    _assert_storage_error(caught, "INVALID_MESSAGE", OUT_OF_RANGE)
    assert await data.storage.get_all_messages(user_id, session_id) == []


# ------------------------------------------------------------------ import
def _header(**fields):
    header = {"type": "session", "format": "ffchat-session", "version": 1, "session_id": "imp", "user_id": "x",
              "title": "T", "session_type": "chat", "created_at": "2025-01-01T00:00:00+00:00",
              "updated_at": "2025-01-01T00:00:00+00:00", "metadata": {}}
    header.update(fields)
    return json.dumps(header)


def _line(content, message_id):
    return json.dumps({"type": "message", "role": "user", "content": content, "message_id": message_id})


@pytest.mark.parametrize("fields, code, message", [
    ({"title": "bad \ud800"}, "INVALID_MESSAGE",
     "line 1: title: invalid Unicode (lone surrogate '\\ud800' at position 4)"),
    ({"title": 7}, "INVALID_ARGUMENT", "line 1: title must be a string"),
    ({"session_type": "t" * 65}, "INVALID_ARGUMENT", "line 1: session_type is 65 characters, above the limit of 64"),
    ({"metadata": {"n": 2**64}}, "INVALID_MESSAGE",
     "line 1: session metadata.n: integer 18446744073709551616 is out of range (-2**63..2**64-1)"),
    ({"updated_at": "soon"}, "INVALID_ARGUMENT", "line 1: Invalid updated_at 'soon': expected ISO-8601")])
async def test_import_checks_header_fields_before_writing(data, fields, code, message):
    """An unstorable header field fails naming line 1, before the user or the session is created."""
    result = await data.import_session("si-import-header", jsonl=_header(**fields) + "\n" + _line("hi", "m1") + "\n")
    _assert_rejected(result, code, message)
    assert await data.storage.user_exists("si-import-header") is False


async def test_import_with_bad_header_on_replace_keeps_the_existing_session(data):
    """on_conflict=replace with an unstorable header fails before deleting the existing session."""
    good = _header() + "\n" + _line("kept", "m1") + "\n"
    assert (await data.import_session("si-import-replace", jsonl=good))["success"] is True
    bad = _header(title="x\ud800") + "\n" + _line("new", "m2") + "\n"
    result = await data.import_session("si-import-replace", jsonl=bad, on_conflict="replace")
    _assert_rejected(result, "INVALID_MESSAGE",
                     "line 1: title: invalid Unicode (lone surrogate '\\ud800' at position 1)")
    history = await data.get_chat_history("si-import-replace", "imp")
    assert [m["content"] for m in history["data"]["messages"]] == ["kept"]


async def test_import_rejects_unstorable_message_lines_and_deep_json(data):
    """A bad message line names its line; JSON nested past Python's recursion limit is INVALID_ARGUMENT."""
    surrogate = _header() + "\n" + _line("ok", "m1") + "\n" + _line("bad \ud800", "m2") + "\n"
    _assert_rejected(await data.import_session("si-import-lines", jsonl=surrogate), "INVALID_MESSAGE",
                     "line 3: Message content: invalid Unicode (lone surrogate '\\ud800' at position 4)")
    deep = _header() + "\n" + "[" * 100_000 + "\n"
    _assert_rejected(await data.import_session("si-import-lines", jsonl=deep), "INVALID_ARGUMENT",
                     "line 2: invalid JSON: nested too deeply")
    assert await data.storage.user_exists("si-import-lines") is False


async def test_import_of_a_file_that_is_not_utf8_is_invalid_argument(data, tmp_path):
    """A file with bytes that are not UTF-8 is INVALID_ARGUMENT naming the byte offset (it was STORAGE_ERROR)."""
    target = tmp_path / "latin1.jsonl"
    target.write_bytes(_header().encode() + b"\n\xff\n")
    result = await data.import_session("si-import-bytes", path=target)
    _assert_rejected(result, "INVALID_ARGUMENT", f"Cannot read {str(target)!r}: not valid UTF-8 (byte "
                                                 f"{len(_header()) + 1})")


async def test_export_import_round_trips_unicode_line_separators(data, session):
    """Content with U+2028, U+2029 and U+0085 survives export and import (they are not line ends in JSONL)."""
    user_id, session_id = session
    contents = ["a\u2028b", "c\u2029d", "e\x85f"]
    stored = await data.store_chat_messages(user_id, session_id, [{"role": "user", "content": c} for c in contents])
    assert stored["success"] is True, stored
    exported = await data.export_session(user_id, session_id)
    imported = await data.import_session("si-separators", jsonl=exported["data"]["jsonl"])
    assert imported["success"] is True and imported["data"]["imported"] == 3, imported
    history = await data.get_chat_history("si-separators", session_id)
    assert [m["content"] for m in history["data"]["messages"]] == contents


def test_import_batches_are_bounded_by_count_and_64_mib_of_content():
    """Import batches hold at most message_batch_size messages and 64 MiB of content, in order."""
    big = "x" * (16 * MB)  # one shared string: the test holds 16 MiB
    messages = [{"content": big, "message_id": f"m{i}"} for i in range(10)]
    batches = list(content_batches(messages, 100))
    assert [len(batch) for batch in batches] == [4, 4, 2]
    assert [m["message_id"] for batch in batches for m in batch] == [f"m{i}" for i in range(10)]
    assert all(sum(len(m["content"]) for m in batch) <= MAX_BATCH_CONTENT_BYTES for batch in batches)
    small = [{"content": "hi", "message_id": f"s{i}"} for i in range(7)]
    assert [len(batch) for batch in content_batches(small, 3)] == [3, 3, 1]
    assert list(content_batches([], 3)) == []
