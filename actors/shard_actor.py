"""ShardActor: a thin Ray-facing wrapper around one engine Shard (undecorated; deploy.py applies ray.remote).

Shard actors are pooled per Ray runtime so a bridge does not pay for starting processes: an idle
actor is *assigned* one shard of one path (it opens and replays that shard's log), serves it, and
is *released* (log closed, lock dropped) when the path's last bridge closes. One actor holds at
most one shard; the shard's lock file and epoch guarantee one writer per shard log.
Ray restarts a crashed actor by re-running __init__: it comes back unassigned, answers
`ShardUnassigned`, and the caller re-assigns it (replaying the log) before retrying.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from typing import Any

import psutil

from engine import operations as ops
from engine.config import EngineConfig
from engine.errors import EngineError, ShardUnassigned, ShardUnavailable, StaleEpoch, StorageFailure
from engine.shard import Shard

from . import direct_server
from .direct_server import DirectServer
from .wire import Endpoint


def _runtime_facts() -> tuple[str | None, bool]:
    try:
        import ray
        if not ray.is_initialized():
            return None, False
        context = ray.get_runtime_context()
        return context.get_node_id(), bool(context.was_current_actor_reconstructed)
    except Exception:  # outside Ray (unit tests build the class directly)
        return None, False


class ShardActor:
    """A pooled shard host. `assign(config, index)` opens a shard; `execute(ops)` serves it.

    Example (in-process, as unit tests use it):
        >>> actor = ShardActor(0); actor.assign(config, 0)
        >>> actor.execute([CreateSession("u", "s")])
    """

    def __init__(self, slot: int | str = 0, tune_gc: bool = True, exit_on_fatal: bool = True) -> None:
        if tune_gc:
            # This process holds one shard's messages as millions of small objects, and none of them
            # form reference cycles worth hunting often: rarer young-generation collections keep
            # append cost flat as the shard grows.
            gc.set_threshold(100_000, 50, 1000)
        self._slot = slot
        self._exit_on_fatal = exit_on_fatal  # False in one process without Ray: drop the shard instead
        self._shard: Shard | None = None
        self._key: tuple[str, int] | None = None
        self._recovery: dict[str, Any] = {}
        self._node_id, self._reconstructed = _runtime_facts()
        self._restarts = 0
        self._started = time.time()
        self._stop = threading.Event()
        # Ray runs one call of this (sync) actor at a time, but the upkeep thread and the health
        # group run beside it: the engine is touched by one thread at a time under this lock.
        self._engine_lock = threading.Lock()
        self._server: DirectServer | None = None
        self._server_lock = threading.Lock()

    # ------------------------------------------------------------------ assignment
    def assign(self, config: EngineConfig, index: int, compress_records: bool = False,
               fresh_open: bool = True) -> dict[str, Any]:
        """Open shard `index` of `config.storage_path` (idempotent for the same shard).

        `fresh_open` is True when a bridge opens the path, False when a caller re-assigns a shard
        whose actor restarted (that counts as a restart). Raises ShardLocked, CorruptRecord.
        """
        key = (config.storage_path, index)
        if self._shard is not None:
            if self._key == key:
                return dict(self._recovery)
            raise ShardUnavailable(f"actor slot {self._slot} already serves another shard")  # never name its path
        shard = Shard(config, index)
        self._recovery = shard.open()  # a failed open releases the shard's lock before raising
        gc.freeze()  # the replayed state is long-lived: keep it out of every later collection
        shard.set_record_compression(compress_records)
        self._shard, self._key = shard, key
        self._restarts = self._count_restart(not fresh_open and self._reconstructed)
        self._stop = threading.Event()
        threading.Thread(target=self._upkeep_loop, args=(shard, self._stop), name=f"shard-{index}-upkeep",
                         daemon=True).start()
        return dict(self._recovery)

    def release(self) -> bool:
        """Flush and close the shard, drop its lock; the actor returns to the pool (the direct
        plane's secret changes and its connections close, so no holder of the old one stays)."""
        self._stop.set()
        if self._server is not None:
            self._server.rotate()
        if self._shard is not None:
            with self._engine_lock:
                self._shard.close()
        self._shard, self._key, self._recovery, self._restarts = None, None, {}, 0
        return True

    def _count_restart(self, restarted: bool) -> int:
        assert self._shard is not None
        path = os.path.join(self._shard.directory, "RESTARTS")
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

    def _upkeep_loop(self, shard: Shard, stop: threading.Event) -> None:
        """Run the shard's upkeep: due `none`-mode flushes, the about-once-a-second fsync of flush and
        none modes, retries of failed background steps (with their backoff) and due compaction."""
        interval = min(0.25, shard.config.flush_interval_s / 4)
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

    # ------------------------------------------------------------------ serving
    def _require(self) -> Shard:
        if self._shard is None:
            raise ShardUnassigned(f"actor slot {self._slot} serves no shard (restarted or released)")
        return self._shard

    def execute(self, operations: list[ops.ShardOperation], shard_key: tuple[str, int] | None = None
                ) -> list[ops.Reply]:
        """Run a batch of typed operations with one group commit; one Reply per operation.

        `shard_key` (storage_path, index) names the shard the caller means: an actor that was
        released and now serves another shard refuses the batch (ShardUnavailable), so a caller
        holding a stale handle can never read or write another path's data."""
        shard = self._require()
        if shard_key is not None and tuple(shard_key) != self._key:
            raise ShardUnavailable(f"actor slot {self._slot} no longer serves shard {shard_key[1]} of that path")
        with self._engine_lock:
            try:
                return shard.execute(operations)
            except (StorageFailure, StaleEpoch) as exc:
                # A successor owns the log, or memory could not be rebuilt from it after a failed
                # write: exit so Ray restarts this actor; the caller re-assigns it (replay) and retries.
                self._fatal(exc)
                raise

    def _fatal(self, exc: Exception) -> None:
        """Stop serving after a fatal shard error: exit the process (Ray restarts it unassigned), or
        in-process drop the shard so the next call finds it unassigned and re-assigns it."""
        if self._exit_on_fatal:
            os._exit(1)
        self._stop.set()
        shard, self._shard, self._key = self._shard, None, None
        if shard is not None:
            shard.log.release()

    def probe(self) -> dict[str, Any]:
        """Health probe (own concurrency group): real log and directory checks, no writes."""
        shard = self._shard
        if shard is None:
            return {"log_open": False, "assigned": False, "error": "actor serves no shard", "pid": os.getpid(),
                    "node_id": self._node_id}
        facts = shard.probe()
        facts.update(node_id=self._node_id, restarts=self._restarts, pid=os.getpid(), assigned=True,
                     uptime_s=time.time() - self._started)
        return facts

    def stats(self) -> dict[str, Any]:
        shard = self._require()
        with self._engine_lock:
            facts = shard.stats()
        # The process's own RSS: the driver cannot look up a pid on another node.
        facts.update(node_id=self._node_id, restarts=self._restarts, pid=os.getpid(),
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
