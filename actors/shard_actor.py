"""ShardActor: a thin Ray-facing wrapper around one engine Shard (undecorated; deploy.py applies ray.remote)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from engine.config import EngineConfig
from engine.errors import EngineError, ShardClosed, StaleEpoch, StorageFailure
from engine.shard import Shard


def _runtime_facts() -> tuple[str | None, bool]:
    try:
        import ray
        context = ray.get_runtime_context()
        return context.get_node_id(), bool(context.was_current_actor_reconstructed)
    except Exception:  # outside Ray (unit tests build the class directly)
        return None, False


class ShardActor:
    """Owns shard `index` of a path: opens (replays) its log in __init__, then serves batches.

    Ray restarts it after a crash; __init__ runs again and replays the log before serving.
    """

    def __init__(self, config: EngineConfig, index: int, compress_records: bool = False) -> None:
        self._shard = Shard(config, index)
        self._open_error: EngineError | None = None
        try:
            self._recovery = self._shard.open()
        except EngineError as exc:  # reported by ready(): an actor whose __init__ raises cannot say why
            self._open_error, self._recovery = exc, {}
        self._shard.set_record_compression(compress_records)
        self._node_id, reconstructed = _runtime_facts()
        self._restarts = self._count_restart(reconstructed)
        self._started = time.time()
        self._stop = threading.Event()
        if config.durability == "none" and self._open_error is None:
            threading.Thread(target=self._flush_loop, name=f"shard-{index}-flusher", daemon=True).start()

    def _count_restart(self, reconstructed: bool) -> int:
        path = os.path.join(self._shard.directory, "RESTARTS")
        count = 0
        if reconstructed:
            try:
                with open(path) as handle:
                    count = int(handle.read().strip() or 0) + 1
            except (OSError, ValueError):
                count = 1
        with open(path, "w") as handle:
            handle.write(str(count))
        return count

    def _flush_loop(self) -> None:
        interval = self._shard.config.flush_interval_s / 4
        while not self._stop.wait(interval):
            try:
                self._shard.log.flush_if_due()
            except StaleEpoch:
                os._exit(1)
            except Exception:
                pass

    def ready(self) -> dict[str, Any]:
        """Raises the open error, if any; else the recovery report (the log is replayed)."""
        if self._open_error is not None:
            raise self._open_error
        return dict(self._recovery)

    def execute(self, operations: list[tuple[str, tuple, dict]]) -> list[tuple[bool, Any]]:
        """Run a batch of operations with one group commit."""
        if self._open_error is not None:
            raise ShardClosed(f"Shard did not open: {self._open_error}")
        try:
            return self._shard.execute(operations)
        except (StorageFailure, StaleEpoch):
            # Memory is ahead of the log (or a successor owns it): exit so Ray restarts this shard
            # and replay makes memory match the log again. Callers see the actor die and retry.
            os._exit(1)

    def probe(self) -> dict[str, Any]:
        """Health probe (own concurrency group): real log and directory checks, no writes."""
        if self._open_error is not None:
            return {"shard": self._shard.index, "log_open": False, "error": str(self._open_error)}
        facts = self._shard.probe()
        facts.update(node_id=self._node_id, restarts=self._restarts, pid=os.getpid(), uptime_s=time.time() - self._started)
        return facts

    def stats(self) -> dict[str, Any]:
        facts = self._shard.stats()
        facts.update(node_id=self._node_id, restarts=self._restarts, pid=os.getpid())
        return facts

    def close(self) -> bool:
        """Flush, release the log lock and stop the flusher; the actor is then killed by its owner."""
        self._stop.set()
        if self._open_error is None:
            self._shard.close()
        return True
