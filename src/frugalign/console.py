"""The terminal output every command shares: rich only, so a command's module can import it without
loading torch (see cli.py)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


def summary_table(title: str, rows: dict[str, object]) -> Table:
    table = Table(title=title, show_header=False)
    for key, value in rows.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table
