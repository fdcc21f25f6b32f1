"""APPO simulation: the environment's gap, the MLE, and that active queries stop growing."""

import argparse
import json

import numpy as np
import pytest

from frugalign.bandit import make_bandit, simulate
from frugalign.bandit.learners import _mle
from frugalign.bench import appo as appo_bench


def test_environment_has_the_requested_smallest_gap():
    env = make_bandit(d=8, gap=0.15, seed=3)
    gaps = env.gaps
    positive = gaps[gaps > 1e-12]
    assert positive.min() == pytest.approx(0.15)
    assert (gaps.min(axis=1) == 0).all()  # every context has a best action
    assert np.allclose(np.linalg.norm(env.theta_star), 1.0)


def test_regularised_mle_recovers_theta():
    rng = np.random.default_rng(0)
    theta = np.array([1.0, -2.0, 0.5])
    z = rng.normal(size=(20000, 3))
    o = (rng.random(20000) < 1 / (1 + np.exp(-z @ theta))).astype(float)
    est = _mle(np.zeros(3), z, o, lam=1.0)
    assert np.allclose(est, theta, atol=0.1)


def test_the_estimate_is_the_regularised_mle_of_every_answer_so_far():
    """theta_hat solves lam*theta + sum (sigma(<theta,z>) - o) z = 0 over all the queried duels at the end of a
    run, the last answers included (one online step per answer between refits would not)."""
    env = make_bandit(d=8, gap=0.2, seed=0)
    run = simulate(env, "informative", 3000, eta=0.002, seed=0)
    z, o = run.asked_duels, run.answers
    assert len(z) == run.queries[-1] > 100 and set(np.unique(o)) == {0.0, 1.0}
    gradient = 1.0 * run.theta_hat + z.T @ (1 / (1 + np.exp(-z @ run.theta_hat)) - o)
    assert np.abs(gradient).max() < 1e-6


def test_appo_queries_stop_growing_with_regret_close_to_always_query():
    env = make_bandit(d=4, gap=0.4, seed=0)
    appo = simulate(env, "appo", 20000, gamma=0.2 * 0.4 / 2, eta=0.002, seed=0)
    always = simulate(env, "always", 20000, eta=0.002, seed=0)
    assert always.queries[-1] == 20000
    assert appo.queries[-1] < 0.2 * always.queries[-1]
    # the second half of the run asks almost nothing: queries have stopped growing
    assert appo.queries[-1] - appo.queries[9999] < 0.05 * appo.queries[9999]
    # and so has regret: a good policy was found
    assert appo.regret[-1] - appo.regret[9999] < 0.1 * appo.regret[9999]
    assert appo.regret[-1] < 2 * always.regret[-1]
    assert np.all(np.diff(appo.queries) >= 0) and np.all(np.diff(appo.regret) >= 0)


def test_informative_asks_every_duel_of_two_actions_and_the_gamma_rule_asks_fewer():
    """Informative pays for every duel of two different actions; APPO's rule skips those it is already sure
    of, and asks nothing about duels of an action with itself. Without the Gamma rule APPO would be informative."""
    env = make_bandit(d=8, gap=0.2, seed=0)
    always = simulate(env, "always", 20000, eta=0.002, seed=0)
    informative = simulate(env, "informative", 20000, eta=0.002, seed=0)
    appo = simulate(env, "appo", 20000, gamma=2.0 * 0.2 / np.sqrt(8), eta=0.002, seed=0)
    assert informative.queries[-1] < 0.5 * always.queries[-1]  # most rounds end as self-duels
    assert appo.queries[-1] < 0.5 * informative.queries[-1]
    # a vanishing Gamma asks exactly the informative duels: the same run
    tiny = simulate(env, "appo", 20000, gamma=1e-12, eta=0.002, seed=0)
    assert tiny.queries[-1] == informative.queries[-1] and tiny.regret[-1] == informative.regret[-1]


def test_forced_exploration_asks_skipped_duels_of_two_actions_at_its_share():
    """explore = 1 asks every duel of two different actions the rule would skip: exactly informative's run;
    a small share adds some of them, never a duel of an action with itself."""
    env = make_bandit(d=8, gap=0.2, seed=0)
    informative = simulate(env, "informative", 20000, eta=0.002, seed=0)
    never = 1e9  # a Gamma no comparison exceeds: every query comes from the forced share
    everything = simulate(env, "appo", 20000, gamma=never, eta=0.002, seed=0, explore=1.0)
    assert everything.queries[-1] == informative.queries[-1] and everything.regret[-1] == informative.regret[-1]
    assert simulate(env, "appo", 20000, gamma=never, eta=0.002, seed=0).queries[-1] == 0
    some = simulate(env, "appo", 20000, gamma=never, eta=0.002, seed=0, explore=0.1)
    assert 0 < some.queries[-1] < 0.3 * informative.queries[-1]


def test_shrinking_gamma_asks_more_than_the_fixed_one():
    """Gamma / sqrt(1 + log(1 + n/(d lambda))) falls as queries n accumulate, so more comparisons stay uncertain."""
    env = make_bandit(d=8, gap=0.2, seed=0)
    gamma = 2.0 * 0.2 / np.sqrt(8)
    fixed = simulate(env, "appo", 20000, gamma=gamma, eta=0.002, seed=0)
    shrinking = simulate(env, "appo", 20000, gamma=gamma, eta=0.002, seed=0, gamma_shrinks=True)
    assert shrinking.queries[-1] > 1.5 * fixed.queries[-1]


def test_fit_power_gives_exponent_intercept_and_r2():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    fit = appo_bench.fit_power(x, 3.0 * x ** -0.5)
    assert fit["exponent"] == pytest.approx(-0.5) and fit["intercept"] == pytest.approx(np.log(3.0))
    assert fit["r2"] == pytest.approx(1.0)
    assert appo_bench.fit_power(x, [1.0, 4.0, 1.0, 4.0])["r2"] < 0.5


def test_random_learner_queries_at_the_given_rate():
    env = make_bandit(d=4, gap=0.3, seed=1)
    run = simulate(env, "random", 4000, query_rate=0.1, eta=0.002, seed=1)
    assert 0.08 * 4000 < run.queries[-1] < 0.12 * 4000


def test_quick_bench_writes_schema_and_plots(tmp_path):
    parser = argparse.ArgumentParser()
    appo_bench.add_arguments(parser)
    args = parser.parse_args(["--quick", "--horizon", "1500", "--sweep-horizon", "600", "--out", str(tmp_path / "a.json")])
    assert appo_bench.run(args) == 0
    result = json.loads((tmp_path / "a.json").read_text())
    assert result["bench"] == "appo" and {r["method"] for r in result["runs"]} == {"appo", "always", "informative", "random"}
    assert all({"T", "d", "gap"} <= set(r["params"]) for r in result["runs"])
    assert (tmp_path / "a.png").exists() and (tmp_path / "a-scaling.png").exists() and (tmp_path / "a-gamma.png").exists()
    sweep = result["summary"]["gamma_sweep"]
    assert set(sweep["scales"]) == {"0.2", "2.0"} and sweep["informative"]["queries"]["mean"] > 0
    assert [(v["gamma_scale"], v["explore"], v["gamma_shrinks"]) for v in sweep["variants"]] == [(2.0, 0.05, False),
                                                                                                 (2.0, 0.0, True)]
    # the d and Delta sweeps at --gamma-scale and again at the binding scale, each point beside informative's
    scaling = result["summary"]["scaling"]
    assert set(scaling) == {"0.2", "1.0"}
    for fits in scaling.values():
        assert [(p["d"], p["gap"]) for p in fits["points"]] == [(4, 0.2), (8, 0.2), (8, 0.4)]
        assert {"exponent", "intercept", "r2"} <= set(fits["queries_vs_d2_over_gap2"])
    # at scale 0.2 the rule skips no informative duel; at the binding scale it does
    assert all(p["query_share_of_informative"] == 1.0 for p in scaling["0.2"]["points"])
    assert all(p["query_share_of_informative"] < 1.0 for p in scaling["1.0"]["points"])
