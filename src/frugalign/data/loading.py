"""Reading rows from a local file or directory, or from a Hugging Face hub dataset.

Rows are numbered from 1 in every message (for JSONL files, the row number is the line number).
"""

from __future__ import annotations

import json
from pathlib import Path

from frugalign.errors import DataError, UserError

LOCAL_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv")


def _jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(str(path), f"malformed JSON: {e.msg} (column {e.colno})", row=line_no) from None
            if not isinstance(row, dict):
                raise DataError(str(path), f"expected a JSON object, got {type(row).__name__}", row=line_no)
            rows.append(row)
    return rows


def _json(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if not text.lstrip().startswith("["):
        return _jsonl(path)  # a .json file holding JSON lines
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(str(path), f"malformed JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
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
    try:
        ds = datasets.load_dataset(kind, data_files=str(path), split="train")
    except Exception as e:  # pyarrow and csv parsers raise many types; all mean "unreadable file"
        raise DataError(str(path), f"cannot read the {kind} file: {e}") from None
    return ds.to_list()


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
