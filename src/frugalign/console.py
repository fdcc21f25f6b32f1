"""The terminal output every command shares: rich only, so a command's module can import it without
loading torch (see cli.py)."""

from __future__ import annotations

import os

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

console = Console(stderr=True)  # progress and messages; the end-of-run summary goes to stdout


def is_main_process() -> bool:
    """Whether this is the first of the launched processes, before an Engine exists (while the data is
    validated): torchrun and accelerate launch set RANK."""
    return int(os.environ.get("RANK", "0")) == 0


def format_duration(seconds: float) -> str:
    """`0.42 s`, `12.3 s`, `2 min 18 s`, `1 h 05 min`."""
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class MeanPaceRemaining(ProgressColumn):
    """Time left at the mean pace since the bar started. rich's own estimate averages the last 30 s only,
    and shows -:--:-- whenever one step takes longer than that (a training step on a CPU often does)."""

    def render(self, task: Task) -> Text:
        return Text(time_left(task.completed - task.fields.get("start", 0), task.total, task.completed, task.elapsed),
                    style="progress.remaining")


def time_left(done: float, total: float | None, completed: float, elapsed: float | None) -> str:
    if total is None or not elapsed or done <= 0:
        return "time left unknown"
    return f"{format_duration((total - completed) * elapsed / done)} left"


def progress_bar(*columns: ProgressColumn, disable: bool = False) -> Progress:
    """A bar of description, progress, done of total, elapsed time, time left at the mean pace, then
    `columns`. Off when stderr is not a terminal (nohup, Slurm, CI logs): `progress_line` prints there."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    MeanPaceRemaining(), *columns, console=console,
                    disable=disable or not console.is_terminal)


def progress_line(description: str, done: int, total: int, elapsed: float, start: int = 0, info: str = "") -> None:
    """Where no bar is drawn (output to a file), one plain line: `dpo: 10/16, 2 min 18 s, 1 min 22 s left, loss=0.6`."""
    if not console.is_terminal and is_main_process():
        parts = [f"{description}: {done}/{total}", format_duration(elapsed), time_left(done - start, total, done, elapsed)]
        console.print(", ".join(parts + ([info] if info else [])), highlight=False, markup=False)


def summary_table(title: str, rows: dict[str, object]) -> Table:
    table = Table(title=title, show_header=False)
    for key, value in rows.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table


def print_summary(title: str, rows: dict[str, object]) -> None:
    """The end-of-run summary, on stdout (progress and messages go to stderr), by the first process only."""
    if is_main_process():
        Console().print(summary_table(title, rows))
