"""The requirements document's sections, run on ours and on the SQLite baseline with the same workload.

SECTIONS maps each section's name (as --sections takes it) to its coroutine, in the order they run.
"""

from .capacity import capacity
from .context import Context, WrongResult
from .memory import memory
from .operations import cache, initialization, message_operations
from .search import search_at_scale
from .throughput import scalability, throughput

# Memory runs first: its whole-system figure is the local default's (one path, nothing else pooled yet).
SECTIONS = {"memory": memory, "initialization": initialization, "operations": message_operations,
            "throughput": throughput, "cache": cache, "scalability": scalability, "search": search_at_scale,
            "capacity": capacity}

__all__ = ["Context", "SECTIONS", "WrongResult"]
