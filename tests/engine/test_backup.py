"""Online backups at the engine: a shard's snapshot is one log position, its files stay put while they
are copied (compression and compaction wait), backups are incremental, retention keeps the newest N
without removing what a backup in progress needs, restore rebuilds an openable path and refuses
damage, and verify finds a damaged object."""

import json
import os
import time

import pytest

from engine import backup
from engine import backup_ops as bops
from engine.errors import CorruptRecord, InvalidInput
from engine.filesystem import FileSystem
from engine.verify import verify_backups
from tests.factories import message, open_shard

SMALL_SEGMENTS = {"segment_bytes_max": 4096, "compress_sealed_segments": True}


def _fill(shard, count, start=0, session="s1"):
    for i in range(start, start + count):
        shard.append("alice", session, [message(f"message {i} " + "x" * 200)])
        shard.commit()


def _wait(shard, backup_id):
    for _ in range(500):
        reply = shard.execute([bops.BackupStatus(backup_id)])[0].unwrap()
        if reply is not None:
            return reply
        time.sleep(0.01)
    raise AssertionError("the copy did not finish")


def _backup(shard, dest, backup_id, keep=0):
    shard.execute([bops.BackupShard(str(dest), backup_id)])[0].unwrap()
    entry = _wait(shard, backup_id)
    manifest = {"created_at": "now", "source": shard.config.storage_path, "shard_count": 1, "shards": [entry]}
    return entry, backup.commit(FileSystem(), str(dest), backup_id, manifest, keep)


def _contents(path):
    shard = open_shard(path, **SMALL_SEGMENTS)
    try:
        page, _ = shard.history("alice", "s1", 10_000)
        return [m["content"].split(" x")[0].strip("x ") for m in page["messages"]]
    finally:
        shard.close()


@pytest.fixture
def shard(tmp_path):
    shard = open_shard(tmp_path / "store", **SMALL_SEGMENTS)
    shard.create_session("alice", "s1")
    shard.commit()
    yield shard
    shard.close()


def test_the_snapshot_is_the_log_at_the_call_and_later_writes_are_not_in_it(shard, tmp_path):
    """Writes after BackupShard (same process, while the copy runs) are absent from the restore."""
    _fill(shard, 60)
    assert len(shard.log.segment_files()) > 3  # several sealed segments and an active one
    shard.execute([bops.BackupShard(str(tmp_path / "dest"), "b1")])[0].unwrap()
    _fill(shard, 40, start=60)  # acknowledged after the snapshot position
    entry = _wait(shard, "b1")
    backup.commit(FileSystem(), str(tmp_path / "dest"), "b1",
                  {"created_at": "now", "source": "x", "shard_count": 1, "shards": [entry]}, 0)
    report = backup.restore(FileSystem(), str(tmp_path / "dest"), str(tmp_path / "restored"))
    assert report["verify"]["ok"] and report["verify"]["messages"] == 60
    assert _contents(tmp_path / "restored") == [f"message {i}" for i in range(60)]
    assert entry["position"]["messages"] == 60 and entry["position"]["offset"] > 0


def test_sealed_segments_wait_to_be_compressed_and_compaction_waits_while_a_backup_reads(shard):
    """While pinned, a rolled .log stays a .log and compaction defers; afterwards both happen."""
    _fill(shard, 10)
    files = shard.log.snapshot_begin()
    _fill(shard, 40, start=10)  # rolls segments: their compression must wait
    pinned = [name for name, _ in files]
    assert all(os.path.exists(os.path.join(shard.directory, name)) for name in pinned)
    assert any(name.endswith(".log") for name in shard.log.segment_files()[:-1])
    assert "segment compression" not in shard.log.health()["pending_steps"]  # waiting is not a failure
    assert shard.compact()["deferred"] == 1
    assert not shard.probe()["degraded"]
    shard.log.snapshot_end()
    shard.maintain()
    assert all(name.endswith(".zst") for name in shard.log.segment_files()[:-1])
    assert "deferred" not in shard.compact()


def test_a_second_backup_copies_only_what_changed(shard, tmp_path):
    """Unchanged sealed segments are not written again; new bytes are."""
    _fill(shard, 60)
    first, _ = _backup(shard, tmp_path / "dest", "b1")
    again, _ = _backup(shard, tmp_path / "dest", "b2")
    assert first["bytes_copied"] == first["bytes"] > 0 and again["bytes_copied"] == 0
    _fill(shard, 30, start=60)
    third, _ = _backup(shard, tmp_path / "dest", "b3")
    assert 0 < third["bytes_copied"] < third["bytes"]


def test_keeping_the_newest_n_removes_older_manifests_and_their_objects(shard, tmp_path):
    dest = tmp_path / "dest"
    for number in range(4):
        _fill(shard, 20, start=number * 20)
        _, committed = _backup(shard, dest, f"b{number}", keep=2)
    assert backup.list_backups(FileSystem(), str(dest)) == ["b2", "b3"]
    assert committed["backups_removed"] == ["b1"]
    named = {f["sha256"] for b in ("b2", "b3")
             for s in backup.load_manifest(FileSystem(), str(dest / "backups" / f"{b}.json"))["shards"]
             for f in s["files"]}
    stored = {name for prefix in os.listdir(dest / "objects") for name in os.listdir(dest / "objects" / prefix)}
    assert stored == named
    assert verify_backups(str(dest))["ok"]


def test_garbage_collection_waits_for_a_backup_in_progress(shard, tmp_path):
    """An object only a running backup will name survives another backup's commit."""
    dest = tmp_path / "dest"
    _fill(shard, 20)
    _backup(shard, dest, "b1")
    backup.mark_pending(FileSystem(), str(dest), "running")
    orphan = backup.object_path(str(dest), "ab" * 32)
    os.makedirs(os.path.dirname(orphan), exist_ok=True)
    open(orphan, "wb").write(b"copied by the running backup")
    _backup(shard, dest, "b2", keep=1)
    assert os.path.exists(orphan)
    backup.abort(FileSystem(), str(dest), "running")
    _backup(shard, dest, "b3", keep=1)
    assert not os.path.exists(orphan)


def test_restore_refuses_a_used_path_and_a_damaged_object_leaves_nothing(shard, tmp_path):
    dest = tmp_path / "dest"
    _fill(shard, 40)
    entry, _ = _backup(shard, dest, "b1")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("x")
    with pytest.raises(InvalidInput):
        backup.restore(FileSystem(), str(dest), str(tmp_path / "used"))
    victim = backup.object_path(str(dest), entry["files"][1]["sha256"])
    data = bytearray(open(victim, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(victim, "wb").write(bytes(data))
    report = verify_backups(str(dest))
    assert not report["ok"] and any(victim in error for error in report["errors"])
    with pytest.raises(CorruptRecord, match="checksum"):
        backup.restore(FileSystem(), str(dest), str(tmp_path / "restored"))
    assert not os.path.exists(tmp_path / "restored")


def test_a_destination_inside_the_store_or_relative_is_refused(shard, tmp_path):
    for dest in (shard.config.storage_path, os.path.join(shard.config.storage_path, "b"), "relative/dest"):
        reply = shard.execute([bops.BackupShard(dest, "b1")])[0]
        assert not reply.ok and reply.value.code == "INVALID_ARGUMENT"
    assert not shard.log.snapshot_held


def test_a_shard_that_never_saw_the_backup_says_so(shard):
    reply = shard.execute([bops.BackupStatus("unknown")])[0]
    assert not reply.ok and "take the backup again" in reply.value.message


def test_a_manifest_names_its_files_in_log_order_with_checksums(shard, tmp_path):
    _fill(shard, 40)
    entry, committed = _backup(shard, tmp_path / "dest", "b1")
    manifest = json.loads(open(committed["manifest"]).read())
    names = [f["name"] for f in manifest["shards"][0]["files"]]
    assert names == sorted(names) and names[-1] == entry["position"]["segment"]
    assert manifest["format"] == backup.FORMAT and manifest["backup_id"] == "b1"
    assert not os.listdir(tmp_path / "dest" / "pending")


def test_a_backup_that_commits_last_is_kept_even_if_it_started_first(shard, tmp_path):
    """keep=1 with two backups at once: the one committing never removes its own manifest."""
    dest = tmp_path / "dest"
    _fill(shard, 20)
    shard.execute([bops.BackupShard(str(dest), "b1-started-first")])[0].unwrap()
    first = _wait(shard, "b1-started-first")
    _, later = _backup(shard, dest, "b2-started-second", keep=1)
    manifest = {"created_at": "now", "source": "x", "shard_count": 1, "shards": [first]}
    committed = backup.commit(FileSystem(), str(dest), "b1-started-first", manifest, 1)
    assert os.path.exists(committed["manifest"]) and committed["backups_removed"] == ["b2-started-second"]
    assert backup.list_backups(FileSystem(), str(dest)) == ["b1-started-first"] and later["cleanup_error"] is None


def test_restore_refuses_a_path_inside_a_backup_folder_and_clean_up_skips_folders(shard, tmp_path):
    dest = tmp_path / "dest"
    _fill(shard, 20)
    _backup(shard, dest, "b1")
    for inside in (dest / "objects" / "zz", dest / "backups" / "x", dest / "new"):
        with pytest.raises(InvalidInput, match="inside the backup folder"):
            backup.restore(FileSystem(), str(dest), str(inside))
        assert not inside.exists()
    (dest / "objects" / "zz" / "stray").mkdir(parents=True)  # someone else's folder: never removed, never fatal
    _, committed = _backup(shard, dest, "b2", keep=1)
    assert committed["cleanup_error"] is None and (dest / "objects" / "zz" / "stray").is_dir()


def test_codecs_are_safe_on_many_threads():
    """Shards, their upkeep threads, backups and verify compress and pack at once (a shared zstd
    compressor segfaulted with four threads)."""
    import random
    import threading
    from engine import codec
    failures = []

    def work(seed):
        rng = random.Random(seed)
        try:
            for number in range(150):
                data = bytes(rng.getrandbits(8) for _ in range(500)) * rng.randint(1, 20)
                assert codec.decompress_segment(codec.compress_segment(data)) == data
                codec.pack(codec.USER_PUT, {"u": "x" * rng.randint(1, 50), "p": {"n": number}})
        except Exception as exc:  # reported by the main thread
            failures.append(exc)
    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
