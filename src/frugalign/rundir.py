"""Run folders: each training command writes into its own folder, `runs/<command>-<timestamp>` unless
--output-dir names one, and never into a folder that holds another run unless told to (--overwrite
clears it, --resume continues it). Every run folder keeps the resolved config and the command line."""

from __future__ import annotations

import os
import shlex
import shutil
import time
from pathlib import Path

import yaml

from frugalign.config import to_dict
from frugalign.errors import UserError, redact

# what a run that trained leaves behind; config.yaml and command.txt alone are a run that stopped before it
# produced anything (a refused dataset, say), and the same command may be run again there
RUN_MARKERS = ("metrics.jsonl", "checkpoints", "model")
# a label ledger may be created before the run (`annotate add-annotator`) and holds paid labels: never cleared
LEDGER_FILES = ("labels.sqlite", "labels.sqlite-wal", "labels.sqlite-shm")


def fresh_run_dir(command: str) -> Path:
    """`runs/<command>-<timestamp>`, with a suffix when a run started in the same second."""
    base = Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def holds_a_run(path: Path) -> bool:
    if not path.is_dir():
        return False
    return any((path / name).exists() for name in RUN_MARKERS)


def prepare_run_dir(config, command: str, argv: list[str]) -> None:
    """Before anything loads: choose or check config.train.output_dir, clear it on --overwrite, and save
    config.yaml and command.txt in it. Under several processes only the first one does this (the
    others would find the folder the first had just written)."""
    if config.train.overwrite and config.train.resume:
        raise UserError("options resume and overwrite contradict each other: pass one of them")
    if config.train.output_dir is None:
        if config.train.resume:
            raise UserError("--resume needs --output-dir: the folder of the run to continue")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UserError("under several processes pass --output-dir (each process would pick its own timestamp)")
        config.train.output_dir = str(fresh_run_dir(command))
    if int(os.environ.get("RANK", "0")) != 0:
        return
    path = Path(config.train.output_dir)
    try:
        _prepare(path, config, argv)
    except OSError as e:  # a name too long, no permission, a file on the way
        raise UserError(f"--output-dir {path}: cannot be created or written ({e.strerror})") from None


def _prepare(path: Path, config, argv: list[str]) -> None:
    if path.exists() and not path.is_dir():
        raise UserError(f"--output-dir {path}: is a file, not a folder")
    if holds_a_run(path) and not config.train.resume:
        if not config.train.overwrite:
            raise UserError(f"--output-dir {path} holds another run: pass --overwrite to replace it, --resume to "
                            "continue it, or choose another folder")
        for entry in path.iterdir():
            if entry.name not in LEDGER_FILES:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    path.mkdir(parents=True, exist_ok=True)
    # a ledger URL's password stays out of the run's files
    (path / "config.yaml").write_text(redact(yaml.safe_dump(to_dict(config), sort_keys=False)))
    (path / "command.txt").write_text(redact(shlex.join(["frugalign", *argv])) + "\n")
