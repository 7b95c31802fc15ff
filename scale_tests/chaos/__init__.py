"""Process-level chaos: SIGKILL shard worker processes under concurrent writers, then verify through
a fresh bridge. writers, killer and verify play the run's three parts, run ties them together per
durability mode, result holds what a run saw and its verdict; cli is the command and documents it."""

from .cli import main
from .result import KillRecord, ModeResult, problems
from .run import run_mode

__all__ = ["KillRecord", "ModeResult", "main", "problems", "run_mode"]
