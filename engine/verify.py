"""Read-only check of a store: every record of every segment of every shard, by the recovery rule.

    python -m engine.verify /path/to/chat_data [--json]
    python -m engine.verify /path/to/backups [--json]   (every backup there: checksums and records)

Takes no lock and writes nothing, so it can run beside a live store (a write in progress may then
show as a torn tail). Exit status 0 when every shard would open, 1 when one would refuse.
Whoever runs `main` may pass a `progress` hook (`chat-bridge verify` draws a bar with it), so this
module draws nothing itself and stays stdlib-only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import Any, Callable, ContextManager

# (bytes read so far, bytes to read in all), called after each segment file is read.
Progress = Callable[[int, int], None]

from . import backup, codec, compaction, segment
from .errors import CorruptRecord
from .filesystem import FileSystem
from .manifest import IDENTITY_FILE, SHARD_PREFIX, identity_mismatch, read_identity


def verify_store(storage_path: str, fs: FileSystem | None = None, progress: Progress | None = None
                 ) -> dict[str, Any]:
    """Scan the store; returns {ok, shard_count, records, messages, largest_record_bytes, errors, shards}.
    `progress(done, total)` hears the segment bytes read so far after each segment file."""
    fs = fs or FileSystem()
    report: dict[str, Any] = {"path": storage_path, "ok": True, "shard_count": None, "records": 0, "messages": 0,
                              "largest_record_bytes": 0, "errors": [], "shards": []}
    report["notes"] = []
    try:
        manifest = json.loads(fs.read(os.path.join(storage_path, "manifest.json")))
        report["shard_count"] = int(manifest["shard_count"])
        report["format_version"] = manifest.get("format_version")
    except FileNotFoundError:
        report["notes"].append("manifest.json is missing: the next open rebuilds it from the shards' SHARD.json")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        report["errors"].append(f"manifest.json unreadable: {exc}")
    names = sorted(name for name in fs.listdir(storage_path) if name.startswith(SHARD_PREFIX))
    read = _byte_counter(fs, [os.path.join(storage_path, name) for name in names], progress)
    for name in names:
        shard = _verify_shard(fs, os.path.join(storage_path, name), read)
        _check_identity(fs, storage_path, name, report["shard_count"], shard)
        report["shards"].append(shard)
        report["errors"].extend(f"{name}: {error}" for error in shard["errors"])
        for key in ("records", "messages"):
            report[key] += shard[key]
        report["largest_record_bytes"] = max(report["largest_record_bytes"], shard["largest_record_bytes"])
    if report["shard_count"] is not None and len(names) != report["shard_count"]:
        report["errors"].append(f"{len(names)} shard directories for {report['shard_count']} shards")
    report["ok"] = not report["errors"]
    return report


def _byte_counter(fs: FileSystem, directories: list[str], progress: Progress | None) -> Callable[[int], None]:
    """A callback for each segment read (its size in bytes) that tells `progress` the running total."""
    if progress is None:
        return lambda size: None
    total = 0
    for directory in directories:
        try:
            ordered, _ = segment.live_segments(fs.listdir(directory), compaction.read_base(fs, directory))
            total += sum(fs.size(os.path.join(directory, segment.file_name(*live))) for live in ordered)
        except (CorruptRecord, OSError):
            continue  # the scan reports it; the bar only needs an estimate
    done = [0]
    progress(0, total)

    def read(size: int) -> None:
        done[0] += size
        progress(done[0], max(total, done[0]))
    return read


def _check_identity(fs: FileSystem, storage_path: str, name: str, shard_count: int | None,
                    shard: dict[str, Any]) -> None:
    """The shard would refuse to open if its SHARD.json named another index or shard count."""
    directory = os.path.join(storage_path, name)
    found = read_identity(fs, directory)
    index = int(name[len(SHARD_PREFIX):]) if name[len(SHARD_PREFIX):].isdigit() else None
    if found is None and not fs.exists(os.path.join(directory, IDENTITY_FILE)):
        return  # written by the next open
    if index is None or shard_count is None:
        return
    if identity_mismatch(found, {"index": index, "shard_count": shard_count}):
        shard["errors"].append(f"{IDENTITY_FILE} says {found}, not index {index} of {shard_count} shards")


def _verify_shard(fs: FileSystem, directory: str, read: Callable[[int], None]) -> dict[str, Any]:
    found: dict[str, Any] = {"directory": directory, "segments": 0, "records": 0, "messages": 0, "bytes": 0,
                             "largest_record_bytes": 0, "torn_tail": None, "errors": [], "notes": []}
    entries = fs.listdir(directory)
    if compaction.READY in entries:
        found["notes"].append("a committed compaction is not finished (the next open finishes it)")
    if compaction.STAGING in entries:
        found["notes"].append("an uncommitted compaction is left over (the next open discards it)")
    try:
        ordered, _ = segment.live_segments(entries, compaction.read_base(fs, directory))
    except CorruptRecord as exc:
        found["errors"].append(str(exc))
        return found
    found["segments"] = len(ordered)
    for position, (number, compressed) in enumerate(ordered):
        path = os.path.join(directory, segment.file_name(number, compressed))
        try:
            data = fs.read(path)
            read(len(data))
        except OSError as exc:
            found["errors"].append(str(exc))
            continue
        _scan_file(found, data, path, compressed, position == len(ordered) - 1)
    return found


def _scan_file(found: dict[str, Any], data: bytes, path: str, compressed: bool, is_last: bool) -> None:
    """Scan one segment's bytes by the recovery rule into `found` (records, messages, torn tail, errors)."""
    try:
        found["bytes"] += len(data)
        if compressed:
            data = segment.decompress(data, path)
        if is_last and not compressed and segment.is_unborn(data):
            found["notes"].append(f"{path}: unborn segment of {len(data)} bytes (removed on open)")
            return
        scanner = segment.scan(data, path, sealed=compressed or not is_last)
        while True:
            record_type, body = next(scanner)
            if record_type == codec.MESSAGES:
                found["messages"] += len(body["m"])
    except StopIteration as stop:
        end: segment.SegmentEnd = stop.value
        found["records"] += end.records
        found["largest_record_bytes"] = max(found["largest_record_bytes"], end.largest_frame)
        if end.cut is not None:
            found["torn_tail"] = {"file": path, "offset": end.cut, "bytes": end.size - end.cut}
    except (CorruptRecord, OSError) as exc:
        found["errors"].append(str(exc))


def verify_backups(source: str, fs: FileSystem | None = None) -> dict[str, Any]:
    """Check every backup of a destination (or the one manifest named): each object against its
    checksum, and each shard's files by the recovery rule, as a restore would open them."""
    fs = fs or FileSystem()
    report: dict[str, Any] = {"path": source, "ok": True, "backups": [], "errors": [], "records": 0, "messages": 0}
    if source.endswith(".json"):
        dest, manifests = backup.resolve(fs, source)[0], [source]
    else:
        dest = source
        manifests = [os.path.join(source, backup.BACKUPS, f"{b}.json") for b in backup.list_backups(fs, source)]
    for manifest_path in manifests:
        try:
            manifest = backup.load_manifest(fs, manifest_path)
        except (CorruptRecord, OSError) as exc:
            report["errors"].append(str(exc))
            continue
        for shard in manifest["shards"]:
            found = _verify_backup_shard(fs, dest, shard)
            report["records"] += found["records"]
            report["messages"] += found["messages"]
            report["errors"].extend(f"{manifest['backup_id']} shard {shard['index']}: {e}" for e in found["errors"])
        report["backups"].append({"backup_id": manifest["backup_id"], "created_at": manifest.get("created_at"),
                                  "shards": len(manifest["shards"])})
    report["ok"] = not report["errors"] and bool(manifests)
    if not manifests:
        report["errors"].append(f"no backup manifests under {source}")
    return report


def _verify_backup_shard(fs: FileSystem, dest: str, shard: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {"records": 0, "messages": 0, "bytes": 0, "largest_record_bytes": 0, "torn_tail": None,
                             "errors": [], "notes": []}
    for position, entry in enumerate(shard["files"]):
        path = backup.object_path(dest, entry["sha256"])
        try:
            data = backup.read_object(fs, dest, entry)
        except CorruptRecord as exc:
            found["errors"].append(str(exc))
            if fs.exists(path):  # say where the damage is, if the records show it
                _scan_file(found, fs.read(path), f"{path} ({entry['name']})", entry["name"].endswith(".zst"),
                           position == len(shard["files"]) - 1)
            continue
        _scan_file(found, data, f"{path} ({entry['name']})", entry["name"].endswith(".zst"),
                   position == len(shard["files"]) - 1)
    return found


def _is_store(path: str) -> bool:
    return os.path.isdir(path) and any(name == "manifest.json" or name.startswith(SHARD_PREFIX)
                                       for name in os.listdir(path))


def main(argv: list[str] | None = None,
         progress: Callable[[], ContextManager[Progress | None]] | None = None) -> int:
    """The command; `progress`, if given, opens a context around the scan that yields the hook."""
    parser = argparse.ArgumentParser(prog="python -m engine.verify", description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    args = parser.parse_args(argv)
    if backup.is_backup(FileSystem(), args.path):
        return _main_backups(args.path, args.json)
    if not _is_store(args.path):  # a typo must not read as "0 shards, OK"
        print(f"no chat store at {args.path} (no such directory, or no manifest.json and no shard directories; "
              f"nor a backup folder)", file=sys.stderr)
        return 2
    with (progress or contextlib.nullcontext)() as hook:
        report = verify_store(args.path, progress=hook)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['path']}: {len(report['shards'])} shards, {report['records']} records, "
              f"{report['messages']} messages, largest record {report['largest_record_bytes']} bytes")
        for shard in report["shards"]:
            torn = shard["torn_tail"]
            extra = f", torn tail of {torn['bytes']} bytes at {torn['offset']} (truncated on open)" if torn else ""
            print(f"  {os.path.basename(shard['directory'])}: {shard['segments']} segments, {shard['records']} "
                  f"records, {shard['messages']} messages{extra}")
            for note in shard["notes"]:
                print(f"    note: {note}")
        for note in report["notes"]:
            print(f"  note: {note}")
        return _verdict(report, "a shard would refuse to open")
    return 0 if report["ok"] else 1


def _main_backups(path: str, as_json: bool) -> int:
    report = verify_backups(path)
    if as_json:
        print(json.dumps(report, indent=2))
        return 0 if report["ok"] else 1
    print(f"{path}: {len(report['backups'])} backups, {report['records']} records, {report['messages']} messages")
    for found in report["backups"]:
        print(f"  {found['backup_id']}: {found['shards']} shards, taken {found['created_at']}")
    return _verdict(report, "a restore from it would fail or lose data")


def _verdict(report: dict[str, Any], damage: str) -> int:
    """Print the errors and the verdict; the exit status (0 ok, 1 damaged)."""
    for error in report["errors"]:
        print(f"  ERROR {error}")
    print("OK" if report["ok"] else f"DAMAGED: {damage}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
