"""Envelope building and per-operation metrics of one bridge (contract §1, §4.7)."""

from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable

from engine.errors import EngineError
from engine.metrics import LatencyRecorder

from actors.exporter import EXPORTER

from .errors import ChatIntegrationError, ErrorCode

logger = logging.getLogger(__name__)
SLOW_OPERATION_MS = 1000.0


class Outcome:
    """What an operation body returns: payload, records affected, cache hit, warnings."""

    __slots__ = ("data", "records", "cache_hit")

    def __init__(self, data: Any, records: int = 0, cache_hit: bool = False) -> None:
        self.data = data
        self.records = records
        self.cache_hit = cache_hit


def envelope(operation: str, elapsed_ms: float, outcome: Outcome | None, error: str | None, code: str | None,
             warnings: list[str]) -> dict[str, Any]:
    ok = outcome is not None
    cache_hit = bool(ok and outcome.cache_hit)  # type: ignore[union-attr]
    return {
        "success": ok, "data": outcome.data if ok else None,  # type: ignore[union-attr]
        "metadata": {"operation": operation, "operation_time_ms": elapsed_ms,
                     "records_affected": outcome.records if ok else 0,  # type: ignore[union-attr]
                     "performance_metrics": {"response_time_ms": elapsed_ms, "cache_hit": cache_hit,
                                             "optimization_applied": ok},
                     "cache_hit": cache_hit, "optimization_applied": ok, "error_code": None if ok else code},
        "error": None if ok else error, "warnings": warnings,
    }


class OperationMetrics:
    """Latency per operation, cache hits/misses of cacheable reads, errors: bounded memory."""

    def __init__(self) -> None:
        self.operations: dict[str, LatencyRecorder] = {}
        self.cache_hits = 0
        self.cache_misses = 0
        self._exported: tuple[str, str] | None = None  # (path tag, transport) once exported

    def export(self, path: str, transport: str) -> None:
        """Also publish every call to Ray's metrics (a bridge on a Ray runtime; see actors/exporter.py)."""
        self._exported = (path, transport)

    def record(self, operation: str, elapsed_ms: float, ok: bool, cacheable: bool, cache_hit: bool,
               code: str | None = None) -> None:
        recorder = self.operations.get(operation)
        if recorder is None:
            recorder = self.operations[operation] = LatencyRecorder()
        recorder.record(elapsed_ms, error=not ok)
        if self._exported is not None:
            path, transport = self._exported
            EXPORTER.record_operation(path, operation, transport, elapsed_ms, None if ok else str(code))
        if ok and cacheable:
            if cache_hit:
                self.cache_hits += 1
            else:
                self.cache_misses += 1

    def reset(self) -> None:
        """Zero this bridge's figures (exported counters keep counting: Prometheus counters never go back)."""
        exported = self._exported
        self.__init__()
        self._exported = exported

    def summary(self) -> dict[str, Any]:
        total = sum(r.count for r in self.operations.values())
        errors = sum(r.errors for r in self.operations.values())
        lookups = self.cache_hits + self.cache_misses
        return {"operation_metrics": {name: r.snapshot() for name, r in self.operations.items()},
                "total_operations": total, "error_count": errors, "error_rate": errors / total if total else 0.0,
                "cache_hits": self.cache_hits, "cache_misses": self.cache_misses,
                "cache_hit_rate": self.cache_hits / lookups if lookups else 0.0}


async def run_operation(metrics: OperationMetrics, operation: str, body: Callable[[list[str]], Awaitable[Outcome]],
                        cacheable: bool = False) -> dict[str, Any]:
    """Run `body`, map every failure to an envelope with an error code, record metrics. Never raises
    (cancellation and interpreter exits are BaseExceptions and pass through)."""
    started = time.perf_counter()
    warnings: list[str] = []
    outcome: Outcome | None = None
    error: str | None = None
    code: str | None = None
    try:
        outcome = await body(warnings)
    except EngineError as exc:
        error, code = exc.message, exc.code
    except ChatIntegrationError as exc:
        error, code = exc.message, exc.error_code or ErrorCode.STORAGE_ERROR
    except Exception as exc:  # the api boundary: log it, never leak raw exception text
        logger.exception("unexpected failure in %s", operation)
        error = f"Unexpected internal failure in {operation} ({type(exc).__name__}); see logs"
        code = ErrorCode.SEARCH_ERROR if operation == "search_conversations" else ErrorCode.STORAGE_ERROR
    elapsed_ms = (time.perf_counter() - started) * 1000
    if elapsed_ms > SLOW_OPERATION_MS:
        warnings.append(f"Operation {operation} took {elapsed_ms:.2f}ms - consider optimization")
    metrics.record(operation, elapsed_ms, outcome is not None, cacheable, bool(outcome and outcome.cache_hit), code)
    return envelope(operation, elapsed_ms, outcome, error, code, warnings)
