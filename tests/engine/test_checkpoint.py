"""Checkpoints: an open loads the last one and replays only the log after it, answers exactly as the
whole log would, and never uses one the log no longer holds (damaged, compacted away, another log's)."""

import errno
import os
import random
import shutil

import pytest

from engine import checkpoint as checkpoint_module
from engine import operations as ops
from engine.checkpoint import Checkpoint
from engine.errors import CorruptRecord
from engine.shard import Shard
from engine.simulated_filesystem import SimulatedFileSystem
from engine.verify import verify_store
from scale_tests.crash_points.harness import Clock, canon
from tests.factories import engine_config, message, open_shard


def _fill(shard, prefix, count, session="s1"):
    if shard.get_session("alice", session) is None:
        shard.create_session("alice", session)
    for start in range(0, count, 50):
        shard.append("alice", session, [message(f"{prefix} {i} tram", message_id=f"{prefix}{i}")
                                        for i in range(start, min(count, start + 50))])
        shard.commit()


def _notes(shard):
    return " | ".join(shard.log.report.notes)


def _flip(path, offset):
    """Damage one byte of a file (as a bad sector or a torn page would)."""
    data = bytearray(open(path, "rb").read())
    data[offset] ^= 0xFF
    open(path, "wb").write(bytes(data))


def _whole_log(path):
    """The state the whole log gives (the checkpoint moved aside)."""
    directory = os.path.join(path, "shard-0000")
    saved = os.path.join(path, "saved.ffc")
    os.replace(os.path.join(directory, "checkpoint.ffc"), saved)
    shard = open_shard(path)
    state = canon(shard.state)
    shard.log.release()
    os.replace(saved, os.path.join(directory, "checkpoint.ffc"))
    return state


def test_an_open_resumes_after_the_checkpoint_a_close_wrote_and_answers_as_the_whole_log(tmp_path):
    shard = open_shard(tmp_path, segment_bytes_max=8192)
    _fill(shard, "a", 300)
    shard.create_user("alice", {"name": "Alice"})
    shard.close()
    reopened = open_shard(tmp_path, segment_bytes_max=8192)
    assert "resumed after a checkpoint" in _notes(reopened)
    assert reopened.log.report.records == 0  # nothing after it to replay
    state = canon(reopened.state)
    reopened.log.release()
    assert state == _whole_log(tmp_path)
    again = open_shard(tmp_path, segment_bytes_max=8192)
    assert [m["message_id"] for m in again.history("alice", "s1", 3, latest=True)[0]["messages"]] == \
        ["a297", "a298", "a299"]
    found = again.search("alice", ["tram"], again.search_stats("alice", ["tram"]), 5).value
    assert found.total == 300
    again.close()


def test_writes_after_the_checkpoint_are_replayed_after_a_crash(tmp_path):
    shard = open_shard(tmp_path)
    _fill(shard, "a", 120)
    assert shard.execute([Checkpoint()])[0].value["written"] is True
    assert shard.execute([Checkpoint()])[0].value["written"] is False  # nothing changed since
    _fill(shard, "b", 70, session="s2")
    shard.delete_session("alice", "s1")
    shard.commit()
    expected = canon(shard.state)
    shard.log.release()  # the process dies: no close, no checkpoint of the last writes
    reopened = open_shard(tmp_path)
    assert "resumed after a checkpoint" in _notes(reopened) and reopened.log.report.records > 0
    assert canon(reopened.state) == expected
    reopened.close()


def test_a_damaged_checkpoint_is_not_used_and_nothing_is_lost(tmp_path):
    shard = open_shard(tmp_path)
    _fill(shard, "a", 100)
    shard.close()
    path = os.path.join(tmp_path, "shard-0000", "checkpoint.ffc")
    data = bytearray(open(path, "rb").read())
    for damage in (lambda d: d.__setitem__(len(d) // 2, d[len(d) // 2] ^ 0x40), lambda d: d.__delitem__(slice(-10, None))):
        broken = bytearray(data)
        damage(broken)
        open(path, "wb").write(bytes(broken))
        reopened = open_shard(tmp_path)
        assert "checkpoint not used: damaged" in _notes(reopened)
        assert reopened.state.message_count == 100
        reopened.log.release()


def test_a_checkpoint_the_log_no_longer_holds_is_not_used_and_is_removed(tmp_path):
    """After a compaction the old checkpoint names a segment that is gone; a checkpoint copied from
    another store names a segment with another salt. Both: the whole log, and the file removed."""
    shard = open_shard(tmp_path / "a", segment_bytes_max=4096)
    _fill(shard, "a", 200)
    shard.close()
    stale = open(tmp_path / "a" / "shard-0000" / "checkpoint.ffc", "rb").read()
    shard = open_shard(tmp_path / "a", segment_bytes_max=4096)
    shard.delete_session("alice", "s1")
    _fill(shard, "b", 20, session="s2")
    shard.execute([ops.Compact()])  # retires the checkpoint: the batch's upkeep writes a new one
    assert open(tmp_path / "a" / "shard-0000" / "checkpoint.ffc", "rb").read() != stale
    shard.log.release()
    open(tmp_path / "a" / "shard-0000" / "checkpoint.ffc", "wb").write(stale)  # as if it crashed before that
    reopened = open_shard(tmp_path / "a", segment_bytes_max=4096)
    assert "no longer holds" in _notes(reopened) and reopened.state.message_count == 20
    assert not os.path.exists(tmp_path / "a" / "shard-0000" / "checkpoint.ffc")
    reopened.close()
    other = open_shard(tmp_path / "b", segment_bytes_max=4096)
    _fill(other, "c", 200)
    other.close()
    shutil.copy(tmp_path / "a" / "shard-0000" / "checkpoint.ffc", tmp_path / "b" / "shard-0000" / "checkpoint.ffc")
    reopened = open_shard(tmp_path / "b", segment_bytes_max=4096)
    assert "no longer holds" in _notes(reopened) and reopened.state.message_count == 200
    reopened.close()


def test_upkeep_writes_one_once_enough_changed_and_the_interval_passed(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint_module, "CHECKPOINT_EVERY", 100)
    now = [0.0]
    shard = Shard(engine_config(tmp_path), 0, monotonic=lambda: now[0])
    shard.open()
    _fill(shard, "a", 90)
    shard.maintain()
    assert shard.checkpoints.written == 0
    _fill(shard, "b", 20)
    shard.maintain()
    assert shard.checkpoints.written == 1
    _fill(shard, "c", 150)
    shard.maintain()
    assert shard.checkpoints.written == 1  # the interval has not passed
    now[0] += checkpoint_module.CHECKPOINT_INTERVAL_S
    shard.maintain()
    assert shard.checkpoints.written == 2
    shard.log.release()


def test_damage_in_the_segment_the_checkpoint_ends_in_refuses_the_open(tmp_path):
    """The frames of the segment a checkpoint ends in are checked up to it (checksums only): damage
    there is corruption, refused with the file and offset as without a checkpoint."""
    shard = open_shard(tmp_path)
    _fill(shard, "a", 120)
    shard.close()
    active = os.path.join(tmp_path, "shard-0000", "seg-000000000001.log")
    _flip(active, 60)
    with pytest.raises(CorruptRecord) as caught:
        open_shard(tmp_path)
    assert active in str(caught.value) and "offset 20" in str(caught.value)


def test_damage_to_a_sealed_segment_before_the_checkpoint_is_found_by_verify_not_by_the_open(tmp_path):
    """An open reads sealed segments only after its checkpoint, so damage to one before it is found
    by verify (the checkpoint holds that data, checksummed), and the shard opens with everything."""
    shard = open_shard(tmp_path, segment_bytes_max=4096, compress_sealed_segments=False)
    _fill(shard, "a", 200)
    shard.close()
    _flip(os.path.join(tmp_path, "shard-0000", "seg-000000000001.log"), 200)
    reopened = open_shard(tmp_path, segment_bytes_max=4096, compress_sealed_segments=False)
    assert reopened.state.message_count == 200
    reopened.close()
    report = verify_store(str(tmp_path))
    assert not report["ok"] and "seg-000000000001.log" in " ".join(report["errors"])


def test_no_checkpoint_with_an_embedder(tmp_path):
    """The vector index is rebuilt by replay, so a shard with an embedder writes none."""
    shard = open_shard(tmp_path, embedder="engine.embedders:hashing")
    _fill(shard, "a", 10)
    shard.close()
    assert not os.path.exists(os.path.join(tmp_path, "shard-0000", "checkpoint.ffc"))


def test_a_deferred_checkpoint_holds_the_state_of_its_snapshot_and_an_older_one_is_not_written(tmp_path, monkeypatch):
    """A shard actor writes upkeep's checkpoints outside its engine lock: the snapshot is taken in
    maintain(), writes after it are not in it (the log after it is replayed), and a snapshot older
    than one already written (or than a compaction) is dropped instead of replacing it."""
    monkeypatch.setattr(checkpoint_module, "CHECKPOINT_EVERY", 10)
    now = [0.0]
    shard = Shard(engine_config(tmp_path), 0, monotonic=lambda: now[0])
    shard.open()
    shard.defer_checkpoints = True
    _fill(shard, "a", 50)
    shard.maintain()
    assert shard.deferred is not None and shard.checkpoints.written == 0
    _fill(shard, "b", 30)  # after the snapshot
    expected = canon(shard.state)
    shard.run_deferred()
    assert shard.checkpoints.written == 1 and shard.deferred is None
    now[0] += 10.0
    _fill(shard, "c", 20)
    shard.maintain()
    stale = shard.deferred
    shard.execute([Checkpoint()])  # a newer one written first
    assert shard.checkpoints.written == 2 and stale() == {"written": False, "bytes": 0, "messages": 100, "ms": 0.0}
    now[0] += 10.0
    _fill(shard, "d", 20)
    shard.maintain()
    before_compaction = shard.deferred
    shard.execute([ops.Compact()])
    assert before_compaction()["written"] is False
    shard.log.release()
    reopened = open_shard(tmp_path)
    assert reopened.state.message_count == 120 and canon(reopened.state)[1][0][2][:80] == expected[1][0][2]
    reopened.close()


def test_a_damaged_last_record_the_checkpoint_covers_is_a_torn_tail_not_a_refusal(tmp_path):
    """Damage to the last record of the segment a checkpoint ends in, with no valid record after it,
    is what a torn write looks like: the checkpoint is not used and the whole log is replayed by the
    torn-tail rule (the shard opens; the contract refuses only damage a valid record follows)."""
    shard = open_shard(tmp_path, durability="fsync")
    shard.execute([ops.CreateSession("u", "s")])
    for i in range(3):
        shard.execute([ops.Append("u", "s", [message(f"hello {i}", message_id=f"m{i}")])])
    shard.close()
    _flip(os.path.join(tmp_path, "shard-0000", "seg-000000000001.log"), -3)
    assert verify_store(str(tmp_path))["ok"]
    reopened = open_shard(tmp_path, durability="fsync")
    assert "no valid record after it" in _notes(reopened) and "truncated torn tail" in _notes(reopened)
    assert [m.message_id for m in reopened.state.sessions[("u", "s")].messages] == ["m0", "m1"]
    reopened.close()


def _simulated_shard(fs):
    config = engine_config("/store", durability="fsync")
    return Shard(config, 0, fs=fs, monotonic=Clock(), rng=random.Random(1))


def test_an_unreadable_checkpoint_falls_back_to_the_whole_log():
    """An I/O error reading the checkpoint (derived data) never stops an open: the log is replayed."""
    fs = SimulatedFileSystem()
    shard = _simulated_shard(fs)
    shard.open()
    shard.execute([ops.CreateSession("u", "s"), ops.Append("u", "s", [message("hi", message_id="m1")])])
    shard.close()
    fs.fail = lambda step: errno.EIO if step.operation == "read" and step.path.endswith("checkpoint.ffc") else None
    reopened = _simulated_shard(fs)
    reopened.open()
    assert [m.message_id for m in reopened.state.sessions[("u", "s")].messages] == ["m1"]
    assert "cannot read it" in _notes(reopened)
    reopened.log.release()


def test_a_checkpoint_that_fails_for_a_full_disk_leaves_no_partial_file_behind():
    """ENOSPC while writing a checkpoint: it fails alone (counted), its temporary file is removed so
    the space comes back, and appends go on."""
    fs = SimulatedFileSystem()
    shard = _simulated_shard(fs)
    shard.open()
    shard.execute([ops.CreateSession("u", "s"), ops.Append("u", "s", [message("hi", message_id="m1")])])
    fs.fail = lambda step: errno.ENOSPC if step.operation == "write" and ".tmp" in step.path else None
    reply = shard.execute([Checkpoint()])[0]
    assert not reply.ok and reply.value.code == "STORAGE_ERROR"
    assert shard.stats()["checkpoints"]["failures"] == 1 and "ENOSPC" in shard.stats()["checkpoints"]["last_failure"]
    assert [name for name in fs.listdir("/store/shard-0000") if "checkpoint" in name] == []
    fs.fail = None
    assert shard.execute([ops.Append("u", "s", [message("more", message_id="m2")])])[0].ok
    shard.close()


def test_a_deferred_checkpoint_is_used_after_seals_and_appends_that_followed_its_snapshot(tmp_path, monkeypatch):
    """The snapshot must not share what later seals change: maintain() takes it, then seals a quiet
    session's tail in the same call, and appends fill a chunk before it is written; the next open
    still resumes from it (review: the live chunk list was shared, so it was never usable)."""
    monkeypatch.setattr(checkpoint_module, "CHECKPOINT_EVERY", 10)
    now = [0.0]
    shard = Shard(engine_config(tmp_path), 0, monotonic=lambda: now[0])
    shard.open()
    shard.defer_checkpoints = True
    _fill(shard, "a", 5)
    shard.maintain()  # not due; the seal pass that makes s1 quiet by the next one
    now[0] += 10.0
    _fill(shard, "b", 70, session="s2")
    shard.maintain()  # due: the snapshot, then s1's quiet tail is sealed
    assert shard.deferred is not None
    _fill(shard, "c", 70, session="s2")  # seals more chunks of s2 before the write
    shard.run_deferred()
    expected = canon(shard.state)
    shard.log.release()
    reopened = open_shard(tmp_path)
    assert "resumed after a checkpoint" in _notes(reopened) and canon(reopened.state) == expected
    reopened.close()
