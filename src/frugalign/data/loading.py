"""Reading rows from a local file or directory, or from a Hugging Face hub dataset.

Rows are numbered from 1 in every message (for JSONL files, the row number is the line number).
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

from frugalign.errors import DataError, UserError

LOCAL_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv")


def _text(path: Path, lines_are_rows: bool = False) -> str:
    """The file decoded as UTF-8; bytes that are not UTF-8 are named by line (the row, in JSON lines) and column."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - data.rfind(b"\n", 0, e.start)
        where = f"column {column}" if lines_are_rows else f"line {line}, column {column}"
        raise DataError(str(path), f"not valid UTF-8: byte 0x{data[e.start]:02x} at {where} (save the file as UTF-8)",
                        row=line if lines_are_rows else None) from None


def _parse_int(digits: str) -> int | float:
    # Python refuses integers of more than 4300 digits; as a float (inf) the field's own check refuses it by name
    limit = sys.get_int_max_str_digits()
    return float(digits) if limit and len(digits.lstrip("-")) > limit else int(digits)


def _loads(text: str, source: str, row: int | None = None):
    try:
        return json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as e:
        where = f"column {e.colno}" if row is not None else f"line {e.lineno}, column {e.colno}"
        raise DataError(source, f"malformed JSON: {e.msg} ({where})", row=row) from None
    except RecursionError:
        raise DataError(source, "JSON nested too deeply to read", row=row) from None


def _jsonl(path: Path) -> list[dict]:
    rows = []
    for line_no, line in enumerate(_text(path, lines_are_rows=True).split("\n"), start=1):
        if not line.strip():
            continue
        row = _loads(line, str(path), line_no)
        if not isinstance(row, dict):
            raise DataError(str(path), f"expected a JSON object, got {type(row).__name__}", row=line_no)
        rows.append(row)
    return rows


def _json(path: Path) -> list[dict]:
    text = _text(path)
    if not text.lstrip().startswith("["):
        return _jsonl(path)  # a .json file holding JSON lines
    rows = _loads(text, str(path))
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise DataError(str(path), f"expected a JSON object, got {type(row).__name__}", row=i)
    return rows


def load_rows(source: str, split: str = "train") -> list[dict]:
    """Rows of a dataset: a local .json/.jsonl/.parquet/.csv file, a directory written by
    `datasets.Dataset.save_to_disk`, or a hub dataset name (its `split`)."""
    path = Path(source).expanduser()
    if path.suffix in LOCAL_SUFFIXES or path.exists():
        if not path.exists():
            raise UserError(f"{source}: file not found")
        if path.is_dir():
            rows = _saved_dataset(path, split)
        elif path.suffix == ".jsonl":
            rows = _jsonl(path)
        elif path.suffix == ".json":
            rows = _json(path)
        else:
            rows = _tabular(path)
    else:
        rows = _hub(source, split)
    if not rows:
        raise DataError(source, "the dataset has no rows")
    return rows


def _tabular(path: Path) -> list[dict]:
    import datasets

    kind = "parquet" if path.suffix == ".parquet" else "csv"
    # CSV cells are text: only an empty cell is missing (pandas would also read "nan", "NA" or "null" as
    # missing, so a weight of nan became the default 1.0 and a prompt "NA" vanished)
    options = {"keep_default_na": False, "na_values": [""]} if kind == "csv" else {}
    if kind == "csv":
        _text(path)  # bytes that are not UTF-8, named by line, before pandas' own error
    try:
        ds = datasets.load_dataset(kind, data_files=str(path), split="train", **options)
    except Exception as e:  # pyarrow and csv parsers raise many types; all mean "unreadable file"
        raise DataError(str(path), f"cannot read the {kind} file: {e}") from None
    rows = ds.to_list()
    if kind == "csv":
        # one cell that is not a number makes its whole column text: read the numeric fields' numbers
        # back, so the cell at fault is the one reported
        for row in rows:
            for field in ("weight", "margin"):
                if isinstance(row.get(field), str):
                    with contextlib.suppress(ValueError):
                        row[field] = float(row[field])
    return rows


def _saved_dataset(path: Path, split: str) -> list[dict]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:
        raise UserError(f"{path}: not a dataset saved with save_to_disk ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise UserError(f"{path}: no split '{split}' (splits: {', '.join(ds)})")
        ds = ds[split]
    return ds.to_list()


def _hub(name: str, split: str) -> list[dict]:
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:
        raise UserError(
            f"dataset '{name}' (split '{split}') could not be loaded: not a local file, and the hub is unreachable "
            f"or does not have it (offline? pass a local JSON/JSONL/Parquet/CSV file): {e}"
        ) from None
    return ds.to_list()
