"""Rich progress bars for every long loop.

Under DVC stdout is not a terminal; rich then prints a final bar only, which keeps logs readable.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with _progress() as p:
        task = p.add_task(description, total=total, info="")
        for item in items:
            yield item
            p.advance(task)


@contextmanager
def bar(description: str, total: int, start: int = 0) -> Iterator["Bar"]:
    """A bar for training loops: `b.update(loss=0.12)` advances one step and shows the fields."""
    with _progress() as p:
        task = p.add_task(description, total=total, completed=start, info="")
        yield Bar(p, task)


class Bar:
    def __init__(self, progress: Progress, task) -> None:
        self._p, self._task = progress, task

    def update(self, advance: int = 1, **fields: float) -> None:
        info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
        self._p.update(self._task, advance=advance, info=info)
