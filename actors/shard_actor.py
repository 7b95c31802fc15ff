"""ShardActor: a thin Ray-facing wrapper around one engine Shard (undecorated; deploy.py applies ray.remote).

Shard actors are pooled per Ray runtime so a bridge does not pay for starting processes: an idle
actor is *assigned* shards of one path (it opens and replays each shard's log), serves them, and is
*released* (logs closed, locks dropped) when the path's last bridge closes. An actor hosts one shard,
or several of one path when the path has more shards than the runtime has CPUs (each process costs
~55 MB; more processes than cores buy no parallelism). Calls name their shard by key (storage_path,
index); each shard's lock file and epoch guarantee one writer per shard log.
Ray restarts a crashed actor by re-running __init__: it comes back unassigned, answers
`ShardUnassigned`, and each shard's next caller re-assigns it (replaying the log) before retrying.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from engine import operations as ops
from engine.config import EngineConfig
from engine.errors import EngineError, ShardUnassigned, ShardUnavailable, StaleEpoch, StorageFailure
from engine.metrics import path_tag
from engine.shard import Shard

from . import direct_server
from .direct_server import DirectServer
from .exporter import EXPORTER, FLUSH_INTERVAL_S
from .wire import Endpoint


logger = logging.getLogger(__name__)


def _count_restart(shard: Shard, restarted: bool) -> int:
    """Record in the shard's RESTARTS file how often its actor restarted while serving it (0: opened
    by a bridge); each hosted shard has its own file and count."""
    path = os.path.join(shard.directory, "RESTARTS")
    count = 0
    if restarted:
        try:
            with open(path) as handle:
                count = int(handle.read().strip() or 0) + 1
        except (OSError, ValueError):
            count = 1
    with open(path, "w") as handle:
        handle.write(str(count))
    return count


def _runtime_facts() -> tuple[str | None, bool, bool]:
    """(node id, restarted by Ray, running as a Ray actor); outside Ray (None, False, False)."""
    try:
        import ray
        if not ray.is_initialized():
            return None, False, False
        context = ray.get_runtime_context()
        return context.get_node_id(), bool(context.was_current_actor_reconstructed), context.get_actor_id() is not None
    except Exception:  # outside Ray (unit tests build the class directly)
        return None, False, False


ShardKey = tuple[str, int]  # (storage_path, shard index)
RELEASE_SLACK_BYTES = 32 * 1024 * 1024  # a released actor holding more than this above its idle size is replaced


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def _tune_malloc() -> None:
    """Search allocates a few arrays of 8 bytes per document of the user each time (100k messages:
    ~800 KB each). glibc serves those with mmap and unmaps them on free, so every search paid the page
    faults of fresh memory again: 3.1 ms instead of 0.95 ms for an all-matching search over 100k
    messages. Keep blocks up to 32 MB in the heap and up to 64 MB of free heap before trimming."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 64 * 1024 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc: its allocator decides


def _trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc's malloc_trim; elsewhere nothing to do)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@dataclass
class _Hosted:
    """One shard this actor serves: the engine shard, its replay facts, restarts and upkeep stop."""

    shard: Shard
    recovery: dict[str, Any]
    restarts: int
    stop: threading.Event = field(default_factory=threading.Event)


class ShardActor:
    """A pooled shard host. `assign(config, index)` opens a shard; `execute(ops, key)` serves it.

    Example (in-process, as unit tests use it):
        >>> actor = ShardActor(0); actor.assign(config, 0)
        >>> actor.execute([CreateSession("u", "s")], (config.storage_path, 0))
    """

    def __init__(self, slot: int | str = 0, tune_gc: bool = True, exit_on_fatal: bool = True) -> None:
        if tune_gc:
            # This process holds its shards' messages as millions of small objects, and none of them
            # form reference cycles worth hunting often: rarer young-generation collections keep
            # append cost flat as the shard grows.
            gc.set_threshold(100_000, 50, 1000)
            _tune_malloc()
        self._slot = slot
        self._exit_on_fatal = exit_on_fatal  # False in one process without Ray: drop the shards instead
        self._hosted: dict[ShardKey, _Hosted] = {}  # in assignment order (probe(None) reports the first)
        self._node_id, self._reconstructed, in_actor = _runtime_facts()
        # Only a real Ray actor publishes metrics: the same class run in-process (tests, tools) does not.
        self._exporting = in_actor and EXPORTER.start()
        self._started = time.time()
        # Ray runs one call of this (sync) actor at a time, but the upkeep threads and the health
        # group run beside it: the engine is touched by one thread at a time under this lock. One
        # lock for all hosted shards: they share the process's one core anyway.
        self._engine_lock = threading.Lock()
        self._server: DirectServer | None = None
        self._server_lock = threading.Lock()
        self._idle_rss: int | None = None

    # ------------------------------------------------------------------ assignment
    def assign(self, config: EngineConfig, index: int, compress_records: bool = False,
               fresh_open: bool = True) -> dict[str, Any]:
        """Open shard `index` of `config.storage_path` beside the shards of that path it already
        serves (idempotent for the same shard). A path with more shards than the runtime has CPUs
        has several per actor; shards of two paths never share one (ShardUnavailable).

        `fresh_open` is True when a bridge opens the path, False when a caller re-assigns a shard
        whose actor restarted (that counts as a restart). Raises ShardLocked, CorruptRecord.
        """
        key = (config.storage_path, index)
        if key in self._hosted:
            return dict(self._hosted[key].recovery)
        if any(path != config.storage_path for path, _ in self._hosted):
            raise ShardUnavailable(f"actor slot {self._slot} already serves another path")  # never name it
        if not self._hosted:
            self._idle_rss = _rss()  # what this process holds serving nothing: release() comes back to it
        shard = Shard(config, index)
        recovery = shard.open()  # a failed open releases the shard's lock before raising
        shard.defer_checkpoints = True  # upkeep writes them outside the engine lock
        gc.freeze()  # the replayed state is long-lived: keep it out of every later collection
        _trim_heap()  # the checkpoint's and the log's read buffers are freed: give their pages back
        shard.set_record_compression(compress_records)
        hosted = _Hosted(shard, recovery, _count_restart(shard, not fresh_open and self._reconstructed))
        self._hosted[key] = hosted
        threading.Thread(target=self._upkeep_loop, args=(hosted, path_tag(config.storage_path)),
                         name=f"shard-{index}-upkeep", daemon=True).start()
        return dict(recovery)

    def release(self) -> bool:
        """Flush and close every shard, drop their locks; the actor returns to the pool (the direct
        plane's secret changes and its connections close, so no holder of the old one stays).

        Returns whether it gave its memory back: the shards' state is freed and the heap trimmed, and
        False (the pool then replaces this process) if it still holds more than RELEASE_SLACK_BYTES
        above what it held before its first shard, as a process keeps freed memory it cannot return."""
        for hosted in self._hosted.values():
            hosted.stop.set()
        if self._server is not None:
            self._server.rotate()
        with self._engine_lock:
            hosted_all, self._hosted = list(self._hosted.values()), {}
            for hosted in hosted_all:
                hosted.shard.close()
            del hosted_all
            return self._give_memory_back()

    def _give_memory_back(self) -> bool:
        gc.unfreeze()  # assign() froze the replayed state: let a collection see it again
        gc.collect()
        _trim_heap()
        return self._idle_rss is None or _rss() <= self._idle_rss + RELEASE_SLACK_BYTES

    def _upkeep_loop(self, hosted: _Hosted, path: str) -> None:
        """Run the shard's upkeep: due `none`-mode flushes, the about-once-a-second fsync of flush and
        none modes, retries of failed background steps (with their backoff), due compaction and
        checkpoints (snapshot under the engine lock, written beside serving); and, under Ray, hand
        the shard's figures to the metrics exporter about once a second."""
        shard, stop = hosted.shard, hosted.stop
        interval = min(0.25, shard.config.flush_interval_s / 4)
        published: float | None = None
        while not stop.wait(interval):
            with self._engine_lock:
                if stop.is_set():
                    return
                try:
                    shard.maintain()
                except StaleEpoch as exc:
                    self._fatal(exc)  # a newer incarnation owns the log: this instance must not write again
                    return
                except EngineError:
                    pass  # recorded by the shard (degraded in health) and retried on a later tick
                except Exception:  # a bug must not end the upkeep (its fsyncs and flushes) for good
                    logger.exception("shard %s upkeep step failed; retried on the next tick", shard.index)
            try:
                shard.run_deferred()  # a checkpoint's encoding and writing, beside serving
            except EngineError:
                pass  # counted by the shard; the next one is tried after its interval
            except Exception:
                logger.exception("shard %s checkpoint failed; retried after its interval", shard.index)
            if self._exporting and (published is None or time.monotonic() - published >= FLUSH_INTERVAL_S):
                with self._engine_lock:
                    EXPORTER.record_shard(path, shard.index, shard.counters(), hosted.restarts, published is None)
                published = time.monotonic()

    # ------------------------------------------------------------------ serving
    def _hosted_for(self, shard_key: tuple[str, int] | list[Any] | None) -> _Hosted:
        """The shard `shard_key` names (None: the only one, for callers that predate hosting).

        Raises ShardUnassigned when this actor serves no shard, or not this one of the path it serves
        (a restarted host gets its shards back one by one, each from its first caller), and
        ShardUnavailable when it serves another path (a stale handle must never reach that data)."""
        # A snapshot: the direct plane's thread calls this while Ray's thread may assign a shard.
        held = dict(self._hosted)
        if not held:
            raise ShardUnassigned(f"actor slot {self._slot} serves no shard (restarted or released)")
        if shard_key is None:
            if len(held) > 1:
                raise ShardUnavailable(f"actor slot {self._slot} serves several shards: name one")
            return next(iter(held.values()))
        key = (shard_key[0], shard_key[1])
        hosted = held.get(key)
        if hosted is not None:
            return hosted
        if any(path == key[0] for path, _ in held):
            raise ShardUnassigned(f"actor slot {self._slot} does not serve shard {key[1]} of that path (yet)")
        raise ShardUnavailable(f"actor slot {self._slot} no longer serves shard {key[1]} of that path")

    def execute(self, operations: list[ops.ShardOperation], shard_key: tuple[str, int] | None = None
                ) -> list[ops.Reply]:
        """Run a batch of typed operations with one group commit; one Reply per operation.

        `shard_key` (storage_path, index) names the shard the caller means (see `_hosted_for`)."""
        shard = self._hosted_for(shard_key).shard
        with self._engine_lock:
            try:
                return shard.execute(operations)
            except (StorageFailure, StaleEpoch) as exc:
                # A successor owns the log, or memory could not be rebuilt from it after a failed
                # write: exit so Ray restarts this actor; the callers re-assign its shards and retry.
                self._fatal(exc)
                raise

    def _fatal(self, exc: Exception) -> None:
        """Stop serving after a fatal shard error: exit the process (Ray restarts it unassigned), or
        in-process drop every shard, as an exit would, so the next calls re-assign them."""
        if self._exit_on_fatal:
            os._exit(1)
        hosted_all, self._hosted = list(self._hosted.values()), {}
        for hosted in hosted_all:
            hosted.stop.set()
            hosted.shard.log.release()

    def probe(self, shard_key: tuple[str, int] | None = None) -> dict[str, Any]:
        """Health probe (own concurrency group) of the shard `shard_key` names (None: the first one
        assigned): real log and directory checks, no writes."""
        held = dict(self._hosted)  # a snapshot, as in `_hosted_for` (this runs in the health group's thread)
        hosted = held.get((shard_key[0], shard_key[1])) if shard_key is not None else next(iter(held.values()), None)
        if hosted is None:
            return {"log_open": False, "assigned": False, "error": "actor serves no such shard", "pid": os.getpid(),
                    "node_id": self._node_id}
        facts = hosted.shard.probe()
        facts.update(node_id=self._node_id, restarts=hosted.restarts, pid=os.getpid(), assigned=True,
                     hosted=len(self._hosted), uptime_s=time.time() - self._started)
        return facts

    def stats(self, shard_key: tuple[str, int] | None = None) -> dict[str, Any]:
        hosted = self._hosted_for(shard_key)
        with self._engine_lock:
            facts = hosted.shard.stats()
        # The process's own RSS: the driver cannot look up a pid on another node.
        facts.update(node_id=self._node_id, restarts=hosted.restarts, pid=os.getpid(), hosted=len(self._hosted),
                     rss_bytes=psutil.Process().memory_info().rss)
        return facts

    def endpoint(self) -> Endpoint:
        """Where and with which secret to reach this actor's direct data plane (started on first
        use). Handed out only through Ray, so only holders of Ray access can connect."""
        with self._server_lock:
            if self._server is None:
                server = DirectServer(self.execute)
                server.start(direct_server.node_address(), self._node_id)
                self._server = server
            return self._server.endpoint()

    def ping(self) -> dict[str, Any]:
        return {"slot": self._slot, "node_id": self._node_id}
