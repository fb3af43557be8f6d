"""Numbered steps with a rule line each, their time, and on failure what failed and what to do.

>>> steps = Steps(Console(width=60, color_system=None), total=1)
>>> with steps.step("Nothing much", "there is nothing to do"):  # doctest: +ELLIPSIS
...     pass
1/1 Nothing much ─...
✓ Nothing much (0.0s)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from demo.errors import DemoError

__all__ = ["StepFailed", "Steps", "advance", "progress_bar"]


class StepFailed(Exception):
    """A step failed; the message says which, what happened and what to do."""

    def __init__(self, number: int, title: str, error: str, hint: str) -> None:
        super().__init__(f"step {number} ({title}) failed: {error}")
        self.number = number
        self.title = title
        self.error = error
        self.hint = hint


class Steps:
    def __init__(self, console: Console, total: int) -> None:
        self.console = console
        self.total = total
        self.number = 0

    @contextmanager
    def step(self, title: str, hint: str) -> Iterator[None]:
        """Run a step; any error becomes a StepFailed carrying `hint` (or the error's own)."""
        self.number += 1
        self.console.rule(f"[bold]{self.number}/{self.total} {title}", align="left")
        began = time.monotonic()
        try:
            yield
        except DemoError as exc:
            raise StepFailed(self.number, title, str(exc), exc.hint or hint) from exc
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # any failure of a step is reported the same way, then exits 1
            raise StepFailed(self.number, title, f"{type(exc).__name__}: {exc}", hint) from exc
        self.console.print(f"[green]✓[/] {title} [dim]({time.monotonic() - began:.1f}s)[/]")


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def advance(progress: Progress, task: TaskID) -> Callable[[int], None]:
    """A callback moving `task` on by its argument."""
    return lambda n: progress.advance(task, n)
