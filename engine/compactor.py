"""Compaction while the log is live: staging and committing a snapshot (the files and their
protocol are `engine.compaction`'s) and what each outcome means for where appends go next.
"""

from __future__ import annotations

import os
import random
from typing import Iterable

from . import codec, compaction
from .active_segment import ActiveSegment
from .errors import EngineError, StorageFailure
from .filesystem import FileSystem, remove_tree
from .recovery import Recovery
from .upkeep import Upkeep


class Compactor:
    """Runs the compactions of one log (callers hold its write lock and fence).

    Before the commit point a failure leaves the old log serving. After it the compaction counts
    as done: appends go to its last segment, and finishing it is retried while `finish_due`. A
    commit call that failed without telling whether the rename happened leaves `unknown_commit`,
    settled by `resolve` before the next write.

    Example:
        >>> compactor.finish_previous(); compactor.run(snapshot_records)
    """

    def __init__(self, fs: FileSystem, directory: str, active: ActiveSegment, upkeep: Upkeep, recovery: Recovery,
                 rng: random.Random) -> None:
        self.fs = fs
        self.directory = directory
        self._active = active
        self._upkeep = upkeep
        self._recovery = recovery
        self._rng = rng
        self.finish_due = False  # a committed compaction is not finished yet (retried)
        self.unknown_commit: tuple[int, int, int] | None = None  # a commit call failed: did it happen?

    def finish_previous(self) -> None:
        """Before a new compaction: finish the last one; raises StorageFailure if it still cannot be."""
        if self.finish_due:
            self.finish()
            if self.finish_due:
                raise StorageFailure(f"Previous compaction of {self.directory} is not finished: "
                                     f"{self._upkeep.failure}")

    def run(self, records: Iterable[codec.Record]) -> None:
        """Stage `records` as the new log after the active segment and commit it (the log is flushed
        and repaired first). Raises StorageFailure."""
        try:
            last, last_salt, last_size = compaction.stage(
                self.fs, self.directory, self._active.number + 1, records, self._upkeep.segment_bytes_max,
                self._upkeep.compress_sealed, self._rng)
        except (OSError, EngineError) as exc:  # I/O, or a record the snapshot could not encode
            self._abandon(exc)
            raise self._failure(exc) from None
        try:
            compaction.commit(self.fs, self.directory)
        except OSError as exc:
            # The rename is the commit point: whether it happened decides where appends go next.
            self.unknown_commit = (last, last_salt, last_size)
            if not self.resolve(exc):
                raise self._failure(exc) from None
            return
        self._after_commit(last, last_salt, last_size)

    def _abandon(self, exc: BaseException) -> None:
        """The compaction did not commit: discard its staging and record the failure (it is retried)."""
        try:
            remove_tree(self.fs, os.path.join(self.directory, compaction.STAGING))
        except OSError:
            pass  # discarded by the next open or compaction
        self._upkeep.failed("compaction", exc)

    def _failure(self, exc: BaseException) -> StorageFailure:
        return StorageFailure(f"Compaction of {self.directory} failed before its commit point: {exc}")

    def outcome_known(self) -> None:
        """Whether the last compaction committed is known again (told by compact.ready, or settled by
        a replay, which finishes or discards any compaction): writes may go on."""
        self.unknown_commit = None
        if self._active.broken is not None and self._active.broken.startswith("compaction outcome"):
            self._active.broken = None

    def resolve(self, exc: BaseException | None = None) -> bool:
        """After a failed commit call: committed (True) if compact.ready exists, else abandoned
        (False); if even that cannot be told, writes stay refused (broken), the next write asks
        again, and StorageFailure is raised. Abandoning does not fail the caller: a write that
        settles the outcome goes on."""
        assert self.unknown_commit is not None
        try:
            committed = self.fs.exists(os.path.join(self.directory, compaction.READY))
        except OSError as second:
            self._active.broken = f"compaction outcome unknown: {second}"
            raise StorageFailure(f"Compaction of {self.directory}: cannot tell whether it committed: "
                                 f"{second}") from None
        last, last_salt, last_size = self.unknown_commit
        self.outcome_known()
        if committed:
            self._after_commit(last, last_salt, last_size)
        else:
            self._abandon(exc or StorageFailure("commit did not happen"))
        return committed

    def _after_commit(self, last: int, last_salt: int, last_size: int) -> None:
        """The compaction committed: stop appending to the old log; finish (or retry finishing)."""
        self._active.adopt(last, last_salt, last_size)
        self._upkeep.forget_segments()
        self.finish_due = True
        self.finish()

    def finish(self) -> None:
        """Finish a committed compaction and append to its last segment; on failure append to a fresh
        segment after it (finishing is retried and keeps segments above the plan's first)."""
        try:
            self._recovery.finish_compaction()
            if self._active.handle is None:
                self._active.open()
        except OSError as exc:
            self._upkeep.failed("compaction", exc)
            if self._active.handle is None:
                try:
                    self._active.start(self._active.number + 1)
                except OSError as second:
                    self._active.broken = f"no segment to append to after a compaction: {second}"
            return
        self.finish_due = False
        self._upkeep.succeeded("compaction")
