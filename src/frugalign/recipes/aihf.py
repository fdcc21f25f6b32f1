"""`frugalign aihf`: reward and policy learned together from demonstrations and preferences, in three
variants (docs/algorithms.md, section 5); the iterations are `training/aihf.py`'s, shared with SPIN."""

from __future__ import annotations

from frugalign.options import AIHFConfig
from frugalign.training.aihf import run_iterations


def run(config: AIHFConfig) -> list[dict]:
    """`frugalign aihf`: validate both datasets, iterate, save, summarise."""
    return run_iterations(config, f"aihf ({config.variant})", need_preferences=True)
