"""`frugalign spin`: SPIN (docs/algorithms.md, section 1), iterations of DPO of the demonstrations against
the previous iterate's own samples, that iterate being the reference: AIHF's self-play form without
preferences (`training/aihf.py`)."""

from __future__ import annotations

from frugalign.options import SPINConfig
from frugalign.training.aihf import run_iterations


def run(config: SPINConfig) -> list[dict]:
    """`frugalign spin`: SPIN iterations on demonstrations alone."""
    return run_iterations(config, "spin", need_preferences=False)
