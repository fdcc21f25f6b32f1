"""The terminal output every command shares: rich only, so a command's module can import it without
loading torch (see cli.py)."""

from __future__ import annotations

import os

from rich.console import Console
from rich.table import Table

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


def summary_table(title: str, rows: dict[str, object]) -> Table:
    table = Table(title=title, show_header=False)
    for key, value in rows.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table


def print_summary(title: str, rows: dict[str, object]) -> None:
    """The end-of-run summary, on stdout (progress and messages go to stderr), by the first process only."""
    if is_main_process():
        Console().print(summary_table(title, rows))
