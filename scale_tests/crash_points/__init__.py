"""Durability proved by enumeration on the simulated file system: a crash and a fault at every I/O
step of every workload (enumeration, faults), a seeded randomised run on top (randomised), the
command in cli. workloads holds what runs; harness runs it and states what a shard holds."""

from .cli import main
from .enumeration import enumerate_crashes
from .faults import faulty_run, inject_faults
from .harness import WALL_CLOCK, Reference, Tally, reference_run
from .randomised import randomised
from .workloads import Workload, message, workloads

__all__ = ["Reference", "Tally", "WALL_CLOCK", "Workload", "enumerate_crashes", "faulty_run", "inject_faults",
           "main", "message", "randomised", "reference_run", "workloads"]
