"""How the operator commands look in a terminal: tables and progress bars drawn with `rich`.

`rich` is imported inside these functions only, so `import api` never pays for it (about 30 ms).
On a terminal a table has borders and a bold header and shrinks its wide columns to the window;
piped or redirected, it is plain aligned columns with no colour, no borders and nothing cut but
cells over 80 characters. A progress bar goes to stderr, only when stderr is a terminal.
"""

from __future__ import annotations

import contextlib
import io
import sys
from typing import Any, Callable, Iterator, TextIO

CELL_CHARS_MAX = 80  # off a terminal a cell is cut here, as the plain table always did
# Columns that may shrink (with an ellipsis) to fit a terminal; every other column keeps its width.
_WIDE_COLUMNS = ("title", "content", "error")
_STATUS_STYLES = {"healthy": "green", "degraded": "yellow", "ok": "green"}


def is_terminal(stream: TextIO) -> bool:
    """True if `stream` is an interactive terminal (False for a closed or replaced stream)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def table(rows: list[dict[str, Any]], columns: tuple[str, ...], stream: TextIO | None = None) -> str:
    """`rows` as a table for `stream` (stdout): bordered on a terminal, plain aligned columns elsewhere."""
    if not rows:
        return "(none)"
    from rich import box
    from rich.table import Table
    terminal = is_terminal(stream or sys.stdout)
    cells = [[_cell(row.get(column, ""), terminal) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    grid = Table(box=box.ROUNDED if terminal else None, show_edge=terminal, pad_edge=terminal,
                 header_style="bold" if terminal else "", highlight=False)
    for index, (column, width) in enumerate(zip(columns, widths)):
        wide = column in _WIDE_COLUMNS
        numeric = all(_is_number(line[index]) for line in cells)
        grid.add_column(column, no_wrap=True, overflow="ellipsis" if wide else "fold",
                        min_width=None if wide else width, justify="right" if numeric else "left")
    for line in cells:
        grid.add_row(*(_styled(value, terminal) for value in line))
    return _render(grid, terminal, sum(widths) + 3 * len(widths) + 4)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _cell(value: Any, terminal: bool) -> str:
    text = str(value).replace("\n", " ")
    return text if terminal else text[:CELL_CHARS_MAX]


def _styled(value: str, terminal: bool) -> Any:
    from rich.text import Text
    style = _STATUS_STYLES.get(value, "red" if value in ("error", "unavailable") else "") if terminal else ""
    return Text(value, style=style)


def _render(renderable: Any, terminal: bool, natural_width: int) -> str:
    """The renderable as text: at the window's width (with colour) on a terminal, else at its own width."""
    from rich.console import Console
    if terminal:
        console = Console(file=sys.stdout, highlight=False)
    else:  # wide enough that nothing is squeezed; no colour codes in a pipe or a file
        console = Console(file=io.StringIO(), width=natural_width, color_system=None, force_terminal=False,
                          highlight=False)
    with console.capture() as captured:
        console.print(renderable)
    return "\n".join(line.rstrip() for line in captured.get().rstrip("\n").split("\n"))


class Tracker:
    """Counts work done on a progress bar; this base draws nothing (not a terminal, or --json)."""

    def advance(self, amount: int) -> None:
        """`amount` more units are done."""

    def total(self, amount: int) -> None:
        """The work is `amount` units in all (when it is known only after starting)."""


class _Bar(Tracker):
    def __init__(self, bar: Any, task: Any) -> None:
        self._bar, self._task = bar, task

    def advance(self, amount: int) -> None:
        self._bar.advance(self._task, amount)

    def total(self, amount: int) -> None:
        self._bar.update(self._task, total=amount)


@contextlib.contextmanager
def progress(description: str, total: int | None, enabled: bool, unit: str = "") -> Iterator[Tracker]:
    """A progress bar on stderr while the block runs; yields its Tracker.

    Drawn only if `enabled` and stderr is a terminal; otherwise the Tracker does nothing. The bar
    never touches stdout (rich would redirect it by default), so data written there stays pure.
    """
    if not (enabled and is_terminal(sys.stderr)):
        yield Tracker()
        return
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    counter = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
    bar = Progress(TextColumn("{task.description}"), BarColumn(), counter, TimeElapsedColumn(),
                   TimeRemainingColumn(), console=Console(file=sys.stderr), redirect_stdout=False,
                   redirect_stderr=False)
    with bar:
        yield _Bar(bar, bar.add_task(description, total=total))


def byte_progress(description: str, enabled: bool) -> Callable[[], Any]:
    """For `chat-bridge verify` (engine.verify.main's `progress`): a factory of a context that
    yields `update(done_bytes, total_bytes)`, so the engine draws nothing and imports no rich."""
    @contextlib.contextmanager
    def opened() -> Iterator[Callable[[int, int], None]]:
        with progress(description, None, enabled, unit="bytes") as tracker:
            yield counting(tracker)
    return opened


def counting(tracker: Tracker) -> Callable[[int, int], None]:
    """`update(done, total)` for callers that report running totals, on a tracker that advances by steps."""
    seen = [0]

    def update(done: int, total: int) -> None:
        tracker.total(total)
        tracker.advance(done - seen[0])
        seen[0] = done
    return update
