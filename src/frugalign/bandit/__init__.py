"""APPO (docs/algorithms.md, section 3): active queries in a linear contextual dueling bandit, simulated."""

from frugalign.bandit.env import DuelingBandit, make_bandit
from frugalign.bandit.learners import Learner, RunResult, simulate

__all__ = ["DuelingBandit", "Learner", "RunResult", "make_bandit", "simulate"]
