"""ADPO's query rule: for one pair and the policy's confidence in it, ask the annotator, audit, pseudo-label
or skip; and when the policy's confidence has earned trust.

The confidence of a pair is `m = beta * (u(a) - u(b))`, the implicit reward margin. A pair with `|m| <=
gamma` is asked. A confident pair (`|m| > gamma`) is pseudo-labelled `sign(m)` in `adpo` and skipped in
`adpo-nopl`. With audits (`audit_rate > 0`) `adpo` pseudo-labels only once its confidence is trusted:
some confident pairs are asked anyway (audits), and trust needs the lower end of a one-sided 95% Wilson
interval on the audited agreement to reach `min_agreement`. Audits come early, when they decide most:
while the confidence is not yet trusted, every confident pair is audited until `audit_window` audits
have been asked; after that only a fixed share (`audit_rate`, chosen by each pair's content and the
seed) is. Trust is judged on the latest `audit_window` answered audits, so it is withdrawn when the
policy drifts into confident mistakes. `audit_rate = 0` is the paper's rule: every confident pair is
pseudo-labelled, no audits.

With `by_confidence`, trust is judged per level of confidence rather than for all confident pairs at once: a
policy can be right when very sure and wrong when a little sure. The audits are ranked by the confidence they
were asked at, and the level trusted is the lowest one whose audits at or above it have a Wilson lower bound
reaching `min_agreement`; confident pairs below it are skipped, as in `adpo-nopl`. Scanning the levels
chooses the best slice of the audits, so this bound is an optimistic one: the fixed audit share goes on
checking it.

`random-onepass`, ADPO's like-for-like baseline, asks the pairs of a uniform subset of the pool fixed
before training (`uniform_subset`: as many pairs as its budget) and skips the others, whatever the
policy's confidence: the same pass over the pool as ADPO, only the choice of pairs differs.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from functools import cached_property

from frugalign.stats import wilson_interval

ASK, AUDIT, PSEUDO, SKIP = "ask", "audit", "pseudo", "skip"
Z_ONE_SIDED_95 = 1.6449


def wilson_lower_bound(successes: int, n: int, z: float = Z_ONE_SIDED_95) -> float:
    """Lower end of the Wilson score interval of a proportion: 0 without observations; it rises with n,
    so that 3 agreements of 3 count for less than 30 of 30."""
    return wilson_interval(successes, n, z)[0]


def pseudo_label(confidence: float) -> int:
    """The label the policy's confidence gives: +1 (a wins) when m > 0, -1 otherwise."""
    return 1 if confidence > 0 else -1


def in_audit_share(pid: str, seed: int, rate: float) -> bool:
    """Whether a pair is among the fixed audited share: chosen by its content and the seed, so the same
    pairs on every visit, in every process and after a restart."""
    digest = hashlib.sha256(f"{seed}:{pid}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < rate * 2**64


def uniform_subset(pids, seed: int, size: int) -> frozenset[str]:
    """`size` of the distinct pair ids, uniformly at random: those that come first when ranked by a hash of
    the seed and the pair's content, so the same subset in every process, after a restart, in any order."""
    ranked = sorted(set(pids), key=lambda pid: hashlib.sha256(f"{seed}:subset:{pid}".encode()).digest())
    return frozenset(ranked[:max(0, size)])


@dataclass
class Trust:
    """The audited agreement between the policy's confident guesses and the annotator's labels."""

    outcomes: list[bool]  # answered audits, oldest first: whether the label agreed with the guess
    window: int
    min_agreement: float
    confidences: list[float] = field(default_factory=list)  # |m| each of them was asked at (by_confidence)
    by_confidence: bool = False

    @property
    def recent(self) -> list[bool]:
        return self.outcomes[-self.window:]

    @property
    def agreement(self) -> float | None:
        return sum(self.recent) / len(self.recent) if self.recent else None

    @property
    def lower_bound(self) -> float:
        return wilson_lower_bound(sum(self.recent), len(self.recent))

    @cached_property  # a Trust is made afresh each step from the ledger, and asked for every confident pair
    def threshold(self) -> float:
        """The lowest confidence |m| the audits trust (0: every confident pair; inf: none)."""
        if not self.by_confidence:
            return 0.0 if self.lower_bound >= self.min_agreement else math.inf
        # most confident first; a stable sort, so equal levels keep the order of their answers
        ranked = sorted(zip(self.confidences[-self.window:], self.recent), key=lambda audit: -audit[0])
        threshold, agreed = math.inf, 0
        for n, (level, agree) in enumerate(ranked, 1):
            agreed += agree
            if wilson_lower_bound(agreed, n) >= self.min_agreement:
                threshold = level
        return threshold

    def trusted(self) -> bool:
        """Whether some confidence is trusted."""
        return self.threshold < math.inf

    def trusts(self, confidence: float) -> bool:
        return abs(confidence) >= self.threshold


@dataclass
class QueryRule:
    """The decision for one pair not labelled yet. `mode`: adpo, adpo-nopl, dpo, random-onepass, random or apl
    (apl and random train only on the pairs their acquisition bought, so each is asked: the acquisition
    decides, not this rule). `subset`: random-onepass's pairs (`uniform_subset`)."""

    mode: str
    gamma: float
    audit_rate: float
    seed: int
    audit_window: int
    query_warmup: int = 0
    subset: frozenset[str] = frozenset()

    def decide(self, pid: str, confidence: float, *, answered: int, trust: Trust, audits_asked: int) -> str:
        """ASK, AUDIT, PSEUDO or SKIP. `answered`: labels this run has; `audits_asked`: audits this run
        has asked, answered or not."""
        if self.mode == "random-onepass":
            return ASK if pid in self.subset else SKIP
        if self.mode in ("dpo", "apl", "random") or answered < self.query_warmup:
            return ASK
        if abs(confidence) <= self.gamma:
            return ASK
        if self.mode == "adpo-nopl":
            return SKIP
        if self.audit_rate == 0.0:  # the paper's rule
            return PSEUDO
        trusted = trust.trusted()
        early = not trusted and audits_asked < self.audit_window
        if early or in_audit_share(pid, self.seed, self.audit_rate):
            return AUDIT
        return PSEUDO if trust.trusts(confidence) else SKIP
