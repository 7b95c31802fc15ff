"""What every section shares: the run's context (sizes, seed, figures, details) and the wrong-result check."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..measure import Figure


class WrongResult(AssertionError):
    """A benchmark found a wrong answer (lost message, missing search hit): the run fails."""


def check(condition: bool, what: str) -> None:
    if not condition:
        raise WrongResult(what)


@dataclass
class Context:
    root: str
    quick: bool
    seed: int
    factors: list[int]
    options: dict[str, Any] = field(default_factory=lambda: {"performance_mode": "speed"})
    capacity_messages: int | None = None  # --capacity-messages (None: 1,000,000, quick 50,000)
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, *figures: Figure) -> None:
        self.figures.extend(figures)

    def scale(self, full: int, quick: int) -> int:
        return quick if self.quick else full
