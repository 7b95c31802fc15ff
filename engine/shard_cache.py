"""Result cache of one shard: LRU bounded in bytes, with tags so a write invalidates exactly its entries."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Hashable, Iterable


class ShardCache:
    """LRU of request -> result, bounded by the callers' size estimates.

    Each entry carries tags (e.g. ("s", user, session), ("u", user)); `invalidate(tag)` drops every
    entry carrying it. Hits and misses count real lookups only.

    Example:
        >>> cache = ShardCache(1024)
        >>> cache.put(("h", 1), "page", 10, [("s", "u1", "s1")])
        >>> cache.get(("h", 1))
        'page'
    """

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._entries: OrderedDict[Hashable, tuple[Any, int, tuple[Hashable, ...]]] = OrderedDict()
        self._tags: dict[Hashable, set[Hashable]] = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.invalidations = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> Any | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[0]

    def put(self, key: Hashable, value: Any, size_bytes: int, tags: Iterable[Hashable] = ()) -> bool:
        """Store `value`; returns False when it cannot fit at all."""
        if size_bytes > self.capacity_bytes:
            return False
        self._remove(key)
        tag_tuple = tuple(tags)
        self._entries[key] = (value, size_bytes, tag_tuple)
        self.bytes += size_bytes
        for tag in tag_tuple:
            self._tags.setdefault(tag, set()).add(key)
        while self.bytes > self.capacity_bytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)
            self.evictions += 1
        return True

    def _remove(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self.bytes -= entry[1]
        for tag in entry[2]:
            keys = self._tags.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._tags[tag]

    def invalidate(self, tag: Hashable) -> int:
        keys = self._tags.pop(tag, None)
        if not keys:
            return 0
        for key in list(keys):
            self._remove(key)
        self.invalidations += len(keys)
        return len(keys)

    def clear(self) -> None:
        self._entries.clear()
        self._tags.clear()
        self.bytes = 0

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._entries), "bytes": self.bytes, "capacity_bytes": self.capacity_bytes,
                "hits": self.hits, "misses": self.misses, "evictions": self.evictions}
