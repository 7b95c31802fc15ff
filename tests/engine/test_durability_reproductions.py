"""Each reproduction of issue 8 at the engine level, as a test that failed before the fix."""

from __future__ import annotations

import errno
import os
import threading
import time

import pytest

from engine import operations as ops
from engine import codec
from engine.config import MB
from engine.errors import CorruptRecord, InvalidInput, ShardLocked, StaleEpoch, StorageFailure
from engine.filesystem import FileSystem
from engine.manifest import PathManifest
from engine.message_log import MessageLog
from engine.simulated_filesystem import SimulatedFileSystem
from tests.factories import engine_config, message, open_shard
from engine.shard import Shard


def _ids(shard, user="u", session="s"):
    return [m["message_id"] for m in shard.read_range(user, session, 0, 10**6)["messages"]]


# ---------------------------------------------------------------------- encode before apply
@pytest.mark.parametrize("bad", [
    {"role": "user", "content": "x", "message_id": "bad", "metadata": {"n": 2**64}},
    {"role": "user", "content": "bad \ud800", "message_id": "bad"},
    {"role": "user", "content": "x", "message_id": "bad", "metadata": {"\udc00": 1}},
    {"role": "user", "content": "x", "message_id": "bad", "metadata": {"s": {1, 2}}},
    {"role": "user", "content": "x", "message_id": "bad", "attachments": ["ok", "\ud800"]},
], ids=["int-2**64", "surrogate-content", "surrogate-key", "set", "surrogate-attachment"])
def test_an_unencodable_message_fails_alone_inside_a_batch_and_changes_nothing(tmp_path, bad):
    """One bad store among 12 good ones on the same shard: the 12 are acknowledged, the bad one gets
    INVALID_MESSAGE, memory never shows it, and a reopen holds exactly the 12."""
    shard = open_shard(tmp_path)
    shard.execute([ops.CreateSession(f"user{i}", "s") for i in range(13)])
    operations = [ops.Append(f"user{i}", "s", [message(f"good {i}", message_id=f"g{i}")]) for i in range(12)]
    operations.insert(6, ops.Append("user12", "s", [bad]))
    results = shard.execute(operations)
    assert [ok for ok, _ in results] == [True] * 6 + [False] + [True] * 6
    assert isinstance(results[6][1], InvalidInput) and results[6][1].code == "INVALID_MESSAGE"
    assert _ids(shard, "user12") == []
    shard.close()
    reopened = open_shard(tmp_path)
    assert [_ids(reopened, f"user{i}") for i in range(13)] == [[f"g{i}"] for i in range(12)] + [[]]
    reopened.close()


def test_a_session_title_that_cannot_be_encoded_never_reaches_memory_and_the_shard_reopens(tmp_path):
    """A title with a lone surrogate used to be applied, fail to encode, and leave later messages of
    that session in the log without their session: the shard then never opened again."""
    shard = open_shard(tmp_path)
    results = shard.execute([ops.CreateSession("u", "s", "bad \ud800"),
                             ops.Append("u", "s", [message("m", message_id="m1")])])
    assert results[0][0] is False and results[0][1].code == "INVALID_MESSAGE"
    assert results[1][0] is False and results[1][1].code == "SESSION_NOT_FOUND"
    shard.close()
    reopened = open_shard(tmp_path)
    assert reopened.get_session("u", "s") is None
    reopened.close()


def test_metadata_nested_deeper_than_32_levels_is_refused_before_memory(tmp_path):
    """900-level metadata used to fail in pickling, and 500-990 levels made every read of the session
    raise RecursionError; now the shard refuses it with INVALID_MESSAGE and reads keep working."""
    shard = open_shard(tmp_path)
    shard.create_session("u", "s")
    deep: dict = {}
    cursor = deep
    for _ in range(900):
        cursor["a"] = {}
        cursor = cursor["a"]
    result = shard.execute([ops.Append("u", "s", [message("deep", message_id="d", metadata=deep)])])
    assert result[0][0] is False and result[0][1].code == "INVALID_MESSAGE" and "32 levels" in str(result[0][1])
    assert shard.history("u", "s", 10)[0]["total_count"] == 0
    shard.close()


def test_a_logged_message_of_a_session_the_log_never_created_is_kept_not_fatal(tmp_path):
    """Logs written by the old code can hold messages whose session record is missing: the shard
    opens, keeps them under a recovered session and says so in the recovery report."""
    shard = open_shard(tmp_path)
    shard.log.append_batch(codec.pack(codec.MESSAGES, {"u": "u", "s": "lost", "t": "2026-01-01T00:00:00+00:00",
                                                       "m": [["m1", "user", "kept", "2026-01-01T00:00:00+00:00",
                                                              None, None, "2026-01-01T00:00:00+00:00"]]}))
    shard.close()
    reopened = Shard(engine_config(tmp_path), 0)
    report = reopened.open()
    assert _ids(reopened, "u", "lost") == ["m1"] and "Recovered session" in " ".join(report["notes"])
    reopened.close()


# ---------------------------------------------------------------------- every record written is readable
def test_a_batch_larger_than_the_record_bound_is_split_and_reads_back_after_reopen(tmp_path):
    """Three 16 MiB messages in one batch (48 MiB, above the 32 MiB record bound that writer and
    reader share) are written as one group of parts and read back after a reopen."""
    shard = open_shard(tmp_path, max_message_bytes=16 * MB)
    shard.create_session("u", "s")
    big = [message(chr(ord("a") + i) * (16 * MB), message_id=f"big{i}") for i in range(3)]
    assert shard.execute([ops.Append("u", "s", big)])[0][0] is True
    shard.close()
    reopened = open_shard(tmp_path, max_message_bytes=16 * MB)
    messages = reopened.read_range("u", "s", 0, 10)["messages"]
    assert [m["message_id"] for m in messages] == ["big0", "big1", "big2"]
    assert [len(m["content"]) for m in messages] == [16 * MB] * 3
    reopened.close()


def test_compaction_of_large_messages_writes_records_the_reader_accepts(tmp_path):
    """Compaction used to pack 1,000 messages per record whatever their size, so 270 messages of
    1 MB opened fine until the first compaction and never after. Records are now cut by bytes."""
    PathManifest(str(tmp_path)).open(1, explicit=False)
    shard = open_shard(tmp_path, max_message_bytes=2 * MB)
    shard.create_session("u", "s")
    shard.create_session("u", "gone")
    for batch in range(5):
        shard.append("u", "s", [message(str(batch) * MB, message_id=f"m{batch}-{i}") for i in range(10)])
    shard.append("u", "gone", [message("x", message_id="x")])
    shard.delete_session("u", "gone")
    shard.commit()
    shard.compact()
    shard.close()
    reopened = open_shard(tmp_path, max_message_bytes=2 * MB)
    assert len(_ids(reopened)) == 50 and reopened.stats()["compactions"] == 0
    reopened.close()
    from engine.verify import verify_store
    report = verify_store(str(tmp_path))
    assert report["ok"] and 0 < report["largest_record_bytes"] <= codec.MAX_RECORD_BYTES


def test_a_record_above_the_bound_is_refused_by_the_writer(tmp_path):
    """A profile is never split: one above the record bound is refused before memory changes."""
    with pytest.raises(InvalidInput) as caught:
        codec.pack(codec.USER_PUT, {"u": "u", "p": {"x": "y" * (codec.MAX_RECORD_BYTES + 1)}})
    assert caught.value.code == "MESSAGE_TOO_LARGE"


# ---------------------------------------------------------------------- recovery content cannot fool
def _ascii_frame(salt: int) -> str:
    """A frame of this format whose bytes are all ASCII, so message text can carry it verbatim."""
    for attempt in range(10_000):
        data = codec.frame((codec.USER_PUT, f"forged record {attempt}".encode()), salt)
        if all(byte < 0x80 for byte in data):
            return data.decode("ascii")
    raise AssertionError("no ASCII frame found")


def test_message_text_shaped_like_a_frame_cannot_turn_a_torn_tail_into_corruption(tmp_path):
    """A user stores text that is a well-formed frame; the write carrying it is torn after that
    text. Recovery must truncate the torn tail (the forged frame lacks the segment's secret salt),
    not refuse to open. The forged frame would pass with the real salt, so the salt is what decides."""
    shard = open_shard(tmp_path)
    shard.create_session("u", "s")
    shard.append("u", "s", [message("before", message_id="m0")])
    shard.commit()
    forged_salt = 0x3132333435363738  # ASCII bytes: a guess, as an attacker must guess
    shard.append("u", "s", [message("attack " + _ascii_frame(forged_salt) + " tail", message_id="m1")])
    shard.commit()
    shard.close()
    segment = os.path.join(tmp_path, "shard-0000", sorted(os.listdir(os.path.join(tmp_path, "shard-0000")))[-1])
    data = open(segment, "rb").read()
    forged_at = data.rindex(b"FC", 0, data.rindex(b" tail"))
    with open(segment, "r+b") as handle:
        handle.truncate(forged_at + 80)  # the last write is torn just after the forged frame
    reopened = open_shard(tmp_path)
    assert _ids(reopened) == ["m0"] and reopened.log.report.torn_tail
    reopened.close()
    assert codec.check_frame(data, forged_at, forged_salt) is not None  # with that salt it would be valid


# ---------------------------------------------------------------------- failures keep the log serving
def test_a_failed_write_is_cut_back_memory_rebuilt_and_a_retry_is_not_a_false_duplicate(tmp_path):
    """EIO on the write of a store: the store fails, memory drops it (no 'duplicate' on retry),
    the next store is accepted, and a reopen holds exactly the acknowledged messages."""
    failing = {"on": False}
    fs = SimulatedFileSystem(fail=lambda step: errno.EIO if failing["on"] and step.operation == "write" else None,
                             partial_write_on_fail=11)
    config = engine_config("/store", durability="fsync")
    clock = [0.0]
    shard = Shard(config, 0, fs=fs, monotonic=lambda: clock[0])
    shard.open()
    shard.execute([ops.CreateSession("u", "s"), ops.Append("u", "s", [message("a", message_id="a")])])
    failing["on"] = True
    failed = shard.execute([ops.Append("u", "s", [message("b", message_id="b")])])
    assert failed[0][0] is False and failed[0][1].code == "STORAGE_ERROR"
    assert _ids(shard) == ["a"] and shard.probe()["degraded"]
    failing["on"] = False
    clock[0] += 10
    retry = shard.execute([ops.Append("u", "s", [message("b", message_id="b")])])
    assert retry[0][0] is True and retry[0][1].duplicates == 0
    shard.close()
    reopened = Shard(config, 0, fs=fs.after_process_crash())
    reopened.open()
    assert _ids(reopened) == ["a", "b"]
    reopened.close()


def test_none_mode_keeps_its_buffer_when_a_background_flush_fails_and_writes_it_later(tmp_path):
    """A failed none-mode flush used to empty the buffer and leave half a frame on disk (the next
    open refused). Now the partial bytes are cut off, the buffer is kept and written on a retry."""
    failing = {"on": False}
    fs = SimulatedFileSystem(fail=lambda step: errno.ENOSPC if failing["on"] and step.operation == "write" else None,
                             partial_write_on_fail=9)
    clock = [0.0]
    config = engine_config("/store", durability="none")
    shard = Shard(config, 0, fs=fs, monotonic=lambda: clock[0])
    shard.open()
    shard.execute([ops.CreateSession("u", "s"), ops.Append("u", "s", [message("a", message_id="a")])])
    failing["on"] = True
    clock[0] += 2
    shard.maintain()
    assert shard.log.pending_bytes > 0 and shard.probe()["degraded"]
    crashed = Shard(config, 0, fs=fs.after_process_crash())
    crashed.open()  # the half frame was cut off: the shard opens
    crashed.log.release()
    failing["on"] = False
    clock[0] += 10
    shard.maintain()
    assert shard.log.pending_bytes == 0 and not shard.probe()["degraded"]
    reopened = Shard(config, 0, fs=fs.after_process_crash())
    reopened.open()
    assert _ids(reopened) == ["a"]


# ---------------------------------------------------------------------- fencing and locks
def test_a_failed_open_releases_the_shard_lock(tmp_path):
    """Opening a shard with mid-log corruption fails with the file and offset, and leaves no lock
    behind: a second attempt in the same process gets the same error, not ShardLocked."""
    shard = open_shard(tmp_path, durability="fsync")  # every write on disk before the next
    shard.create_session("u", "s")
    for i in range(5):
        shard.append("u", "s", [message(f"m{i}", message_id=f"m{i}")])
        shard.commit()
    shard.close()
    segment = os.path.join(tmp_path, "shard-0000", "seg-000000000001.log")
    data = bytearray(open(segment, "rb").read())
    data[60] ^= 0xFF
    open(segment, "wb").write(bytes(data))
    for _ in range(2):
        with pytest.raises(CorruptRecord) as caught:
            open_shard(tmp_path, durability="fsync")
        assert segment in str(caught.value) and "offset" in str(caught.value)


class _SlowWrites(FileSystem):
    """The real file system, with a pause inside every write (to interleave two writers)."""

    def __init__(self, started: threading.Event) -> None:
        self.started = started

    def write(self, handle, data):
        self.started.set()
        time.sleep(0.3)
        return super().write(handle, data)


def test_a_successor_cannot_open_between_the_epoch_check_and_the_write(tmp_path):
    """Fencing is atomic: while the old instance writes (after its epoch check), a successor's open
    waits; once it opens, it replays that write, and the old instance's next commit is refused."""
    directory = str(tmp_path / "shard-0000")
    started = threading.Event()
    old = MessageLog(directory, durability="fsync", fs=_SlowWrites(started))
    list(old.open())
    started.clear()  # the segment header was written during open: wait for the batch's write
    writer = threading.Thread(target=old.append_batch, args=(codec.pack(codec.USER_PUT, {"u": "old", "p": {}}),))
    writer.start()
    started.wait(5)
    os.close(old._fence.lock_handle)  # the old node's lock lease is gone (as across NFS clients)
    old._fence.lock_handle = None
    successor = MessageLog(directory, durability="fsync")
    bodies = [body["u"] for _, body in successor.open()]
    writer.join()
    assert bodies == ["old"]
    with pytest.raises(StaleEpoch):
        old.append_batch(codec.pack(codec.USER_PUT, {"u": "stale", "p": {}}))
    successor.close()


def test_a_superseded_none_mode_instance_cannot_acknowledge(tmp_path):
    """In none mode an append used to be acknowledged from memory without any check; a superseded
    instance is now refused (StaleEpoch) even though nothing is written yet."""
    directory = str(tmp_path / "shard-0000")
    old = MessageLog(directory, durability="none")
    list(old.open())
    os.close(old._fence.lock_handle)
    old._fence.lock_handle = None
    successor = MessageLog(directory, durability="none")
    list(successor.open())
    with pytest.raises(StaleEpoch):
        old.append_batch(codec.pack(codec.USER_PUT, {"u": "stale", "p": {}}))
    successor.close()


def test_a_second_open_of_the_same_shard_is_refused_while_the_first_holds_it(tmp_path):
    """The LOCK file still keeps a second writer out on one machine."""
    first = open_shard(tmp_path)
    with pytest.raises(ShardLocked):
        open_shard(tmp_path)
    first.close()


# ---------------------------------------------------------------------- directories and manifest
def test_a_lost_manifest_is_rebuilt_from_the_shard_directories(tmp_path):
    """With manifest.json gone, the next open keeps the stored shard count (from SHARD.json) instead
    of silently re-initialising with the requested one."""
    first = PathManifest(str(tmp_path))
    assert first.open(4, explicit=False) == 4
    first.close()
    for index in range(4):
        shard = Shard(engine_config(tmp_path, shard_count=4), index)
        shard.open()
        shard.close()
    os.remove(tmp_path / "manifest.json")
    manifest = PathManifest(str(tmp_path))
    assert manifest.open(2, explicit=False) == 4 and manifest.rebuilt
    manifest.close()


def test_shard_directories_without_any_record_of_the_count_are_refused(tmp_path):
    """Shard directories with neither manifest nor SHARD.json: the count cannot be known: refuse."""
    os.makedirs(tmp_path / "shard-0000")
    os.makedirs(tmp_path / "shard-0001")
    with pytest.raises(CorruptRecord) as caught:
        PathManifest(str(tmp_path)).open(2, explicit=False)
    assert "refusing" in str(caught.value)


def test_a_shard_directory_of_another_layout_is_refused(tmp_path):
    """A shard directory copied from a store with another shard count is refused on open."""
    shard = Shard(engine_config(tmp_path, shard_count=2), 1)
    shard.open()
    shard.close()
    with pytest.raises(CorruptRecord):
        Shard(engine_config(tmp_path, shard_count=3), 1).open()


def test_creating_the_store_fsyncs_every_new_directory_entry():
    """Manifest, storage root and shard directory entries are durable once open returns (power loss
    right after open keeps them)."""
    fs = SimulatedFileSystem()
    PathManifest("/data/store", fs).open(2, explicit=False)
    Shard(engine_config("/data/store", shard_count=2), 0, fs=fs).open()
    survivor = fs.after_power_loss()
    names = {path for path, _ in survivor.files("/")}
    assert {"/data/store/manifest.json", "/data/store/shard-0000/SHARD.json", "/data/store/shard-0000/FENCE",
            "/data/store/shard-0000/seg-000000000001.log"} <= names
    assert PathManifest("/data/store", survivor).open(5, explicit=False) == 2


def test_an_old_format_store_is_refused_with_a_clear_message(tmp_path):
    """Format 1 stores (before salted frames) are refused by name, never misread."""
    (tmp_path / "manifest.json").write_text('{"format_version": 1, "shard_count": 2}')
    with pytest.raises(CorruptRecord) as caught:
        PathManifest(str(tmp_path)).open(2, explicit=False)
    assert "format 1" in str(caught.value)


def test_checksums_cover_the_salt(tmp_path):
    """A frame moved to another segment (another salt) does not validate there."""
    record = codec.pack(codec.USER_PUT, {"u": "x", "p": {}})[0]
    data = codec.segment_header(1) + codec.frame(record, 1)
    assert codec.check_frame(data, codec.SEGMENT_HEADER_SIZE, 1) is not None
    assert codec.check_frame(data, codec.SEGMENT_HEADER_SIZE, 2) is None


def test_verify_reads_every_record_and_names_damage_without_changing_anything(tmp_path):
    """`python -m engine.verify` counts records and messages, reports a torn tail as what the next
    open truncates, and mid-log corruption as damage (exit 1), writing nothing."""
    from engine.verify import main, verify_store
    PathManifest(str(tmp_path)).open(1, explicit=False)
    shard = open_shard(tmp_path, durability="fsync")
    shard.create_session("u", "s")
    for i in range(4):
        shard.append("u", "s", [message(f"m{i}", message_id=f"m{i}")])
        shard.commit()
    shard.close()
    clean = verify_store(str(tmp_path))
    assert clean["ok"] and clean["records"] == 5 and clean["messages"] == 4
    segment = os.path.join(tmp_path, "shard-0000", "seg-000000000001.log")
    data = open(segment, "rb").read()
    open(segment, "ab").write(b"FC\x05torn")
    torn = verify_store(str(tmp_path))
    assert torn["ok"] and torn["shards"][0]["torn_tail"]["bytes"] == 7
    assert open(segment, "rb").read() == data + b"FC\x05torn"  # read-only
    damaged = bytearray(data)
    damaged[60] ^= 0xFF
    open(segment, "wb").write(bytes(damaged))
    assert main([str(tmp_path)]) == 1 and not verify_store(str(tmp_path))["ok"]
