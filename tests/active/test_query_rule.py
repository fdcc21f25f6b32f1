"""ADPO's query rule: each decision, the pseudo-label's sign, and when confidence is trusted."""

import pytest

from frugalign.active.query_rule import (
    ASK,
    AUDIT,
    PSEUDO,
    SKIP,
    QueryRule,
    Trust,
    in_audit_share,
    pseudo_label,
    uniform_subset,
    wilson_lower_bound,
)

UNTRUSTED = Trust([], window=30, min_agreement=0.75)
TRUSTED = Trust([True] * 20, window=30, min_agreement=0.75)


def pair_ids(seed, rate, inside):
    """Pair ids that are (or are not) in the fixed audited share."""
    ids = (f"pair-{i}" for i in range(10_000))
    return [p for p in ids if in_audit_share(p, seed, rate) == inside][:5]


def test_the_pseudo_label_follows_the_sign_of_the_confidence():
    assert pseudo_label(0.7) == 1 and pseudo_label(-0.7) == -1


def test_wilson_bound_needs_more_evidence_than_the_raw_share():
    assert wilson_lower_bound(0, 0) == 0.0
    assert wilson_lower_bound(3, 3) < 0.6 < 0.75 < wilson_lower_bound(11, 11)
    assert 0.75 <= wilson_lower_bound(11, 11) < wilson_lower_bound(30, 30) < 1.0
    assert wilson_lower_bound(5, 10) < 0.5
    assert wilson_lower_bound(27, 30) == pytest.approx(0.7745, abs=1e-3)  # the score interval, one-sided 95%


def test_trust_needs_enough_agreeing_audits_and_is_withdrawn_when_they_stop_agreeing():
    assert not Trust([True] * 3, 30, 0.75).trusted()  # agreeing, but too few to tell
    assert Trust([True] * 11, 30, 0.75).trusted()
    assert not Trust([True] * 11 + [False] * 4, 30, 0.75).trusted()  # 11 of 15
    # judged on the latest `window` audits: an old good record does not cover recent mistakes
    drifted = Trust([True] * 100 + [False] * 6 + [True] * 4, window=10, min_agreement=0.75)
    assert drifted.agreement == 0.4 and not drifted.trusted()


def test_trust_by_confidence_trusts_the_lowest_level_whose_audits_and_those_above_agree_enough():
    # right when very sure (|m| 2.0-3.0), as often wrong as right when a little sure (0.2-0.8)
    levels = [3.0 - 0.1 * i for i in range(11)] + [0.8 - 0.05 * i for i in range(13)]
    outcomes = [True] * 11 + [i % 2 == 1 for i in range(13)]
    overall = Trust(outcomes, window=30, min_agreement=0.75)
    assert not overall.trusted() and overall.threshold == float("inf")  # 17 of 24 overall: not enough
    by_level = Trust(outcomes, window=30, min_agreement=0.75, confidences=levels, by_confidence=True)
    assert by_level.trusted() and by_level.threshold == pytest.approx(2.0)
    assert by_level.trusts(-2.5) and by_level.trusts(2.0) and not by_level.trusts(1.9)
    # wrong when very sure, right when a little sure: the high levels earn no trust
    upside_down = Trust(outcomes, window=30, min_agreement=0.75, confidences=levels[::-1], by_confidence=True)
    assert not upside_down.trusted() and not upside_down.trusts(3.0)
    # only the latest `window` audits count, level for level
    stale = Trust(outcomes + [False] * 11, window=11, min_agreement=0.75, confidences=levels + [3.0] * 11,
                  by_confidence=True)
    assert not stale.trusted()
    assert Trust([True] * 11, 30, 0.75).trusts(0.01)  # trusted overall: every confident level


def test_trust_by_confidence_pseudo_labels_above_the_trusted_level_and_skips_below_it():
    rule = QueryRule("adpo", gamma=0.5, audit_rate=0.1, seed=0, audit_window=30)
    trust = Trust([True] * 11 + [False] * 11, window=30, min_agreement=0.75, by_confidence=True,
                  confidences=[2.0] * 11 + [0.7] * 11)
    for pid in pair_ids(0, 0.1, inside=False):
        assert rule.decide(pid, -2.2, answered=50, trust=trust, audits_asked=30) == PSEUDO
        assert rule.decide(pid, 0.9, answered=50, trust=trust, audits_asked=30) == SKIP
        assert rule.decide(pid, 0.4, answered=50, trust=trust, audits_asked=30) == ASK  # not confident: asked


def test_uncertain_pairs_are_asked_and_confident_ones_skipped_without_pseudo_labels():
    for mode in ("adpo", "adpo-nopl"):
        rule = QueryRule(mode, gamma=0.5, audit_rate=0.1, seed=0, audit_window=30)
        assert rule.decide("p", 0.4, answered=50, trust=TRUSTED, audits_asked=30) == ASK
        assert rule.decide("p", -0.5, answered=50, trust=TRUSTED, audits_asked=30) == ASK
    nopl = QueryRule("adpo-nopl", gamma=0.5, audit_rate=0.1, seed=0, audit_window=30)
    assert nopl.decide("p", 0.9, answered=50, trust=TRUSTED, audits_asked=30) == SKIP


def test_the_papers_rule_pseudo_labels_every_confident_pair():
    rule = QueryRule("adpo", gamma=0.5, audit_rate=0.0, seed=0, audit_window=30)
    assert rule.decide("p", -0.9, answered=0, trust=UNTRUSTED, audits_asked=0) == PSEUDO


def test_confident_pairs_are_audited_early_then_skipped_until_trusted_then_pseudo_labelled():
    rule = QueryRule("adpo", gamma=0.5, audit_rate=0.1, seed=0, audit_window=30)
    for pid in pair_ids(0, 0.1, inside=False):
        assert rule.decide(pid, 0.9, answered=5, trust=UNTRUSTED, audits_asked=29) == AUDIT  # early audits
        assert rule.decide(pid, 0.9, answered=5, trust=UNTRUSTED, audits_asked=30) == SKIP  # early audits spent
        assert rule.decide(pid, 0.9, answered=5, trust=TRUSTED, audits_asked=0) == PSEUDO
    for pid in pair_ids(0, 0.1, inside=True):  # the fixed share keeps being asked, trusted or not
        assert rule.decide(pid, 0.9, answered=5, trust=TRUSTED, audits_asked=30) == AUDIT
        assert rule.decide(pid, 0.9, answered=5, trust=UNTRUSTED, audits_asked=30) == AUDIT


def test_warm_up_dpo_random_and_apl_modes():
    warm = QueryRule("adpo", gamma=0.5, audit_rate=0.1, seed=0, audit_window=30, query_warmup=10)
    assert warm.decide("p", 0.9, answered=9, trust=TRUSTED, audits_asked=0) == ASK  # a question, not an audit
    assert warm.decide("p", 0.9, answered=10, trust=TRUSTED, audits_asked=0) in (PSEUDO, AUDIT)
    assert QueryRule("dpo", 0.5, 0.1, 0, 30).decide("p", 5.0, answered=0, trust=TRUSTED, audits_asked=0) == ASK
    # apl trains only on the pairs it bought: a confident one is asked, never pseudo-labelled or skipped
    assert QueryRule("apl", 0.5, 0.1, 0, 30).decide("p", 5.0, answered=0, trust=TRUSTED, audits_asked=0) == ASK
    assert QueryRule("random", 0.5, 0.1, 0, 30).decide("p", 5.0, answered=0, trust=TRUSTED, audits_asked=0) == ASK


def test_the_audited_share_is_fixed_by_content_and_seed_and_near_its_rate():
    ids = [f"pair-{i}" for i in range(4000)]
    share = [in_audit_share(p, 3, 0.1) for p in ids]
    assert share == [in_audit_share(p, 3, 0.1) for p in ids]
    assert 0.08 < sum(share) / len(ids) < 0.12
    assert share != [in_audit_share(p, 4, 0.1) for p in ids]


def test_random_onepass_asks_its_uniform_subset_and_skips_the_rest_whatever_the_confidence():
    ids = [f"pair-{i}" for i in range(400)]
    subset = uniform_subset(ids, seed=0, size=100)
    assert len(subset) == 100 and subset <= set(ids)
    # fixed by the seed and the ids alone: any order, repeats, a restart
    assert uniform_subset([*reversed(ids), *ids[:50]], seed=0, size=100) == subset
    assert uniform_subset(ids, seed=1, size=100) != subset
    assert 35 < len(subset & set(ids[:200])) < 65  # uniform: about half from each half of the pool
    rule = QueryRule("random-onepass", 0.5, 0.1, 0, 30, subset=subset)
    for pid in ids[:40]:
        expected = ASK if pid in subset else SKIP
        for confidence in (0.0, 0.3, -5.0, 5.0):  # the draw decides, not the policy's confidence
            assert rule.decide(pid, confidence, answered=0, trust=TRUSTED, audits_asked=0) == expected
