"""The result file of every bench (docs/benchmarks.md schema): machine description, intervals, JSON output."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np


def machine_info() -> dict:
    import torch  # here, not above: a command's module loads without torch (see cli.py)

    return {
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
    }


def ci95(values) -> float:
    """Half-width of the 95% interval of the mean from the t distribution with n-1 degrees of freedom
    (at 3 seeds 4.30 standard errors, not the normal 1.96); 0 for fewer than two values."""
    from scipy.stats import t

    values = np.asarray(list(values), dtype=float)
    if values.size < 2:
        return 0.0
    return float(t.ppf(0.975, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size))


def write_results(path: str | Path, result: dict) -> Path:
    """Write the result JSON atomically (a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)
    return path
