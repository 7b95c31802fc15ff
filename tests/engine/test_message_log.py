"""Message log: framing, durability modes, torn tails, corruption, compression, locking, fencing."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from engine import codec
from engine.errors import CorruptRecord, ShardLocked, StaleEpoch
from engine.message_log import MessageLog

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _records(n, start=0):
    return [record for i in range(start, start + n) for record in codec.pack(codec.USER_PUT, {"u": f"user{i}", "p": {"i": i}})]


def _flip_byte(path, offset):
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def _replay(directory, **kwargs):
    log = MessageLog(directory, **kwargs)
    bodies = [body for _, body in log.open()]
    return log, bodies


@pytest.mark.parametrize("durability", ["fsync", "flush", "none"])
def test_append_then_reopen_keeps_every_record_in_order(tmp_path, durability):
    """Every appended batch is read back in order after close, in every durability mode."""
    log, bodies = _replay(str(tmp_path), durability=durability)
    assert bodies == []
    log.append_batch(_records(3))
    log.append_batch(_records(2, start=3))
    log.close()
    log, bodies = _replay(str(tmp_path), durability=durability)
    assert [b["u"] for b in bodies] == [f"user{i}" for i in range(5)]
    log.close()


def test_group_commit_uses_one_fsync_per_batch(tmp_path):
    """A batch of 200 records costs one write and one fsync in fsync mode."""
    log, _ = _replay(str(tmp_path), durability="fsync")
    log.append_batch(_records(200))
    assert log.commits == 1 and log.fsyncs == 1
    log.close()


def test_none_mode_buffers_until_interval_or_flush(tmp_path):
    """In `none` mode records stay in memory until flush_interval_s passes or flush() is called."""
    now = [0.0]
    log = MessageLog(str(tmp_path), durability="none", flush_interval_s=1.0, clock=lambda: now[0])
    list(log.open())
    log.append_batch(_records(2))
    assert log.pending_bytes > 0 and log.commits == 0
    now[0] = 1.5
    log.flush_if_due()
    assert log.pending_bytes == 0 and log.commits == 1
    log.close()


def test_torn_tail_is_truncated_and_complete_records_kept(tmp_path):
    """Bytes cut mid-record at the end of the active segment are truncated and reported."""
    log, _ = _replay(str(tmp_path))
    log.append_batch(_records(10))
    log.close()
    segment = os.path.join(tmp_path, log.segment_files()[-1])
    size = os.path.getsize(segment)
    with open(segment, "ab") as handle:
        handle.write(codec.frame(_records(1, start=10)[0], log._active.salt)[:-7])
    log, bodies = _replay(str(tmp_path))
    assert len(bodies) == 10
    assert log.report.torn_tail and log.report.truncated_at_offset == size
    assert os.path.getsize(segment) == size
    log.append_batch(_records(1, start=11))
    log.close()
    log, bodies = _replay(str(tmp_path))
    assert [b["u"] for b in bodies][-1] == "user11"
    log.close()


def test_corruption_in_the_middle_refuses_to_open(tmp_path):
    """A flipped byte in a record that was on disk (fsync'd before later records were written) is
    corruption: open fails naming file and offset."""
    log, _ = _replay(str(tmp_path))
    log.append_batch(_records(10))
    log.close()  # fsync: the first batch is on disk, and records written next say so
    log, _ = _replay(str(tmp_path))
    log.append_batch(_records(5, start=10))
    log.close()
    segment = os.path.join(tmp_path, log.segment_files()[-1])
    _flip_byte(segment, 40)
    with pytest.raises(CorruptRecord) as caught:
        _replay(str(tmp_path))
    assert segment in str(caught.value) and "offset" in str(caught.value)


def test_damage_in_a_write_nothing_says_was_on_disk_is_cut_as_a_torn_tail(tmp_path):
    """The same flip in records no later record says were on disk (one unsynced write, whose pages
    may reach the disk in any order at a power loss) is cut off as a torn tail: the shard opens."""
    log, _ = _replay(str(tmp_path))
    log.append_batch(_records(10))
    segment = os.path.join(tmp_path, log.segment_files()[-1])
    _flip_byte(segment, 40)
    os.close(log._fence.lock_handle)  # the process dies without closing
    log._fence.lock_handle = None
    log, bodies = _replay(str(tmp_path))
    assert bodies == [] and log.report.torn_tail
    log.close()


def test_sealed_segments_are_compressed_and_read_back_identically(tmp_path):
    """Rolling segments zstd-compresses the sealed ones; replay returns the same records."""
    log, _ = _replay(str(tmp_path), segment_bytes_max=4096)
    expected = []
    for batch in range(20):
        frames = _records(10, start=batch * 10)
        expected += [f"user{i}" for i in range(batch * 10, batch * 10 + 10)]
        log.append_batch(frames)
    files = log.segment_files()
    log.close()
    assert any(name.endswith(".zst") for name in files)
    log, bodies = _replay(str(tmp_path), segment_bytes_max=4096)
    assert [b["u"] for b in bodies] == expected
    log.close()


def test_second_open_of_a_locked_shard_is_refused(tmp_path):
    """The lock file stops a second writer opening the same shard directory."""
    first, _ = _replay(str(tmp_path))
    with pytest.raises(ShardLocked):
        _replay(str(tmp_path))
    first.close()
    second, _ = _replay(str(tmp_path))
    second.close()


def test_stale_incarnation_cannot_append_after_successor_opened(tmp_path):
    """Epoch fencing: once a successor bumps the epoch, the old writer's commit is refused."""
    old, _ = _replay(str(tmp_path))
    old.append_batch(_records(1))
    # Simulate the successor on another node: the flock is node-local, the epoch in FENCE is shared.
    with open(os.path.join(tmp_path, "FENCE"), "r+b") as handle:
        handle.write(f"{old.epoch + 1:020d}".encode())
    with pytest.raises(StaleEpoch):
        old.append_batch(_records(1, start=1))
    old.close()


_WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    from engine.config import EngineConfig
    from engine.shard import Shard
    shard = Shard(EngineConfig(storage_path={path!r}, shard_count=1, durability={mode!r}), 0)
    shard.open()
    shard.create_session("u", "s")
    shard.commit()
    i = 0
    while True:
        result = shard.append("u", "s", [{{"role": "user", "content": "m%d" % i, "message_id": "id%d" % i}}])
        shard.commit()
        sys.stdout.write("id%d\\n" % i)
        sys.stdout.flush()
        i += 1
""")


@pytest.mark.parametrize("mode", ["flush", "fsync"])
def test_sigkill_mid_stream_loses_no_acknowledged_message(tmp_path, mode):
    """A writer killed with SIGKILL mid-stream: every acknowledged message is present on reopen."""
    script = _WRITER.format(repo=REPO, path=str(tmp_path), mode=mode)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    acknowledged = []
    try:
        deadline = time.monotonic() + 30
        while len(acknowledged) < 300 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            acknowledged.append(line.strip())
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert len(acknowledged) >= 100
    from tests.factories import open_shard
    shard = open_shard(tmp_path, durability=mode)
    stored = [m["message_id"] for m in shard.read_range("u", "s", 0, 10**6)["messages"]]
    assert stored[:len(acknowledged)] == acknowledged
    shard.close()
