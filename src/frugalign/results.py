"""Result files of the benches and evaluations (docs/benchmarks.md schema): written atomically, with the machine
they were measured on."""

from __future__ import annotations

import json
import os
from pathlib import Path


def machine_info() -> dict:
    import torch  # here, not above: a command's module loads without torch (see cli.py)

    return {
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
    }


def write_results(path: str | Path, result: dict) -> Path:
    """Write the result JSON atomically (a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)
    return path
