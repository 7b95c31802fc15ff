"""The files of a compaction: a snapshot staged as segments with a PLAN, and finishing a committed one.

Protocol (the commit point is one directory rename; every later step is driven by the PLAN and is
idempotent, so it can be repeated after a crash or a failure at any point):
    1. `stage`: segments `first..last` and PLAN {first, last, segments} written and fsync'd in
       compact.tmp/ (the last segment stays uncompressed: the log appends to it afterwards);
    2. `commit`: compact.tmp/ renamed compact.ready/, the shard directory fsync'd;
    3. `finish`: the planned files moved in, BASE := first (atomic), older segments deleted, the
       PLAN removed, then the folder. A compact.tmp/ found at any time was never committed: discarded.
"""

from __future__ import annotations

import json
import os
import random
from typing import Iterable

from . import codec, segment
from .errors import CorruptRecord
from .filesystem import FileSystem, atomic_write, remove_tree, write_all

STAGING = "compact.tmp"
READY = "compact.ready"


def stage(fs: FileSystem, directory: str, first: int, records: Iterable[codec.Record], segment_bytes_max: int,
          compress_sealed: bool, rng: random.Random) -> tuple[int, int, int]:
    """Write the snapshot into compact.tmp/; returns (last segment number, its salt, its size)."""
    staging = os.path.join(directory, STAGING)
    remove_tree(fs, staging)
    fs.makedirs(staging)
    number = first
    names: list[str] = []
    chunk: list[codec.Record] = []
    size = 0
    for record in records:
        chunk.append(record)
        size += len(record[1]) + codec.FRAME_HEADER_SIZE
        # A group's parts stay in one segment: cut only after a record that ends a group.
        if size >= segment_bytes_max and not record[0] & codec.CONTINUED:
            names.append(_write(fs, staging, number, chunk, compress_sealed, rng)[0])
            number, chunk, size = number + 1, [], 0
    name, salt, last_size = _write(fs, staging, number, chunk, False, rng)
    names.append(name)
    atomic_write(fs, os.path.join(staging, "PLAN"),
                 json.dumps({"first": first, "last": number, "segments": names}).encode())
    return number, salt, last_size


def _write(fs: FileSystem, staging: str, number: int, records: list[codec.Record], compressed: bool,
           rng: random.Random) -> tuple[str, int, int]:
    salt = rng.getrandbits(64)
    data = codec.segment_header(salt) + (codec.frames(records, salt, 1, 0) if records else b"")
    name = segment.file_name(number, compressed)
    handle = fs.open(os.path.join(staging, name), "create")
    try:
        write_all(fs, handle, codec.compress_segment(data) if compressed else data)
        fs.fsync(handle)
    finally:
        fs.close(handle)
    return name, salt, len(data)


def read_base(fs: FileSystem, directory: str) -> int:
    """The first live segment number (0 before any compaction); raises CorruptRecord if unreadable."""
    try:
        text = fs.read(os.path.join(directory, "BASE")).strip()
    except FileNotFoundError:
        return 0
    if not text.isdigit():
        raise CorruptRecord(f"Unreadable BASE file in {directory}: {text[:40]!r}")
    return int(text)


def commit(fs: FileSystem, directory: str) -> None:
    """The commit point: rename the staged folder, fsync the shard directory."""
    fs.replace(os.path.join(directory, STAGING), os.path.join(directory, READY))
    fs.fsync_dir(directory)


def finish(fs: FileSystem, directory: str) -> bool:
    """Complete a committed compaction from its PLAN; discard an uncommitted one. Idempotent.
    Returns True if a committed compaction was finished now."""
    ready = os.path.join(directory, READY)
    finished = False
    if fs.exists(ready):
        names = fs.listdir(ready)
        if "PLAN" in names:
            plan = json.loads(fs.read(os.path.join(ready, "PLAN")))
            for name in plan["segments"]:
                if name in names:
                    fs.replace(os.path.join(ready, name), os.path.join(directory, name))
            fs.fsync_dir(directory)
            atomic_write(fs, os.path.join(directory, "BASE"), str(plan["first"]).encode())
            for name in fs.listdir(directory):
                number = segment.number_of(name)
                if number is not None and number < plan["first"]:
                    fs.unlink(os.path.join(directory, name))
            fs.fsync_dir(directory)
            fs.unlink(os.path.join(ready, "PLAN"))
            finished = True
        remove_tree(fs, ready)
        fs.fsync_dir(directory)
    staging = os.path.join(directory, STAGING)
    if fs.exists(staging):
        remove_tree(fs, staging)
        fs.fsync_dir(directory)
    return finished
