"""Bench runners on tiny settings: they produce the docs/benchmarks.md schema and sensible timings."""

import argparse
import json
import types
from pathlib import Path

import pytest
import torch
import transformers

from frugalign.bench import dpo as dpo_bench
from frugalign.bench import throughput
from frugalign.data import tokenize_preferences
from frugalign.errors import UserError
from frugalign.models import tiny_causal_lm
from frugalign.stats import ci95


def test_throughput_timers_measure_each_step(tokenizer):
    examples = throughput.make_pairs(tokenizer, 2, 12, 6)
    rows, _ = tokenize_preferences(examples, tokenizer, 64, 64, "t", "error")
    assert [len(r["prompt_ids"]) for r in rows] == [12, 12] and [len(r["chosen_ids"]) for r in rows] == [6, 6]
    for precomputed in (False, True):  # each timer trains the model it is given: one each
        ours = throughput.time_frugalign(tiny_causal_lm(len(tokenizer)), tokenizer, rows, precomputed, steps=2, warmup=1,
                                         lr=1e-4)
        floor = throughput.time_floor(tiny_causal_lm(len(tokenizer)), rows, tokenizer.pad_token_id, precomputed, steps=2,
                                      warmup=1, lr=1e-4)
        assert len(ours) == 2 and len(floor) == 2 and min(ours + floor) > 0


def test_bench_dpo_quick_writes_the_schema(tmp_path, monkeypatch):
    monkeypatch.setenv("FRUGALIGN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "dpo.json"
    parser = argparse.ArgumentParser()
    dpo_bench.add_arguments(parser)
    assert dpo_bench.run(parser.parse_args(["--task", "arith", "--quick", "--curve-points", "2", "--out", str(out)])) == 0
    result = json.loads(out.read_text())
    assert result["bench"] == "dpo" and result["mode"] == "quick"
    assert result["machine"]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    methods = [r["method"] for r in result["runs"]]
    assert methods == ["base", "dpo"]
    dpo_run = result["runs"][1]
    assert dpo_run["queries"] > 0 and dpo_run["curve"] and dpo_run["kl"] > 0
    assert set(dpo_run["time_s"]) == {"total", "generation", "scoring", "training"}
    assert out.with_suffix(".png").stat().st_size > 10_000


def test_bench_dpo_trains_each_loss_asked_from_the_base_on_the_same_pool(tmp_path, monkeypatch):
    monkeypatch.setenv("FRUGALIGN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "losses.json"
    parser = argparse.ArgumentParser()
    dpo_bench.add_arguments(parser)
    args = parser.parse_args(["--task", "arith", "--quick", "--curve-points", "1", "--loss", "ipo", "simpo", "orpo", "kto",
                              "--simpo-beta", "2.5", "--orpo-lambda", "0.2", "--out", str(out)])
    assert dpo_bench.run(args) == 0
    result = json.loads(out.read_text())
    by = {r["method"]: r for r in result["runs"]}
    assert list(by) == ["base", "ipo", "simpo", "orpo", "kto"]
    assert len({r["queries"] for r in result["runs"][1:]}) == 1  # every loss saw the same labelled pool
    assert by["simpo"]["params"]["beta"] == 2.5 and by["orpo"]["params"]["beta"] == 0.2
    assert by["ipo"]["params"]["beta"] == by["kto"]["params"]["beta"] == 0.1  # the task's beta
    # KTO has twice the rows (each pair split in two) at twice the rows per step: the same steps, and pairs counted
    assert by["kto"]["curve"][-1]["pairs_seen"] == by["ipo"]["curve"][-1]["pairs_seen"] > 0
    for method in ("ipo", "simpo", "orpo", "kto"):
        row = result["summary"][method]
        assert by[method]["kl"] > 0 and by[method]["gold_reward"] != by["base"]["gold_reward"]
        assert row["minus_base"]["mean"] == pytest.approx(by[method]["gold_reward"] - by["base"]["gold_reward"])


def test_bench_dpo_plot_redraws_a_result_written_before_several_losses(tmp_path):
    run = {"seed": 0, "gold_reward": 0.2, "kl": 0.0, "curve": []}
    trained = {**run, "method": "dpo", "gold_reward": 0.3, "kl": 1.0,
               "curve": [{"pairs_seen": 16, "gold_reward": 0.3, "kl": 1.0}]}
    result = {"task": "arith", "seeds": [0], "runs": [{**run, "method": "base"}, trained],
              "summary": {"base": {"gold_reward": 0.2, "gold_reward_ci95": 0.0, "kl": 0.0},
                          "dpo": {"gold_reward": 0.3, "gold_reward_ci95": 0.0, "kl": 1.0},
                          "improvement": 0.1}}  # the float such results hold beside the methods
    dpo_bench.plot(result, tmp_path / "old.png")
    assert (tmp_path / "old.png").stat().st_size > 10_000


def test_bench_dpo_refuses_beta_when_no_loss_reads_it(tmp_path):
    parser = argparse.ArgumentParser()
    dpo_bench.add_arguments(parser)
    args = parser.parse_args(["--loss", "simpo", "orpo", "--beta", "2", "--out", str(tmp_path / "x.json")])
    with pytest.raises(UserError, match="--simpo-beta"):
        dpo_bench.run(args)
    assert not list(tmp_path.iterdir())  # refused before any work


def test_kto_rows_of_the_pool_make_the_chosen_completion_desirable_and_the_rejected_not(tokenizer):
    task = types.SimpleNamespace(tokenizer=tokenizer, name="t")
    rows = dpo_bench.tokenize_unpaired(task, [{"prompt": "2+2=", "chosen": "4", "rejected": "5"}])
    assert [(tokenizer.decode(r["completion_ids"], skip_special_tokens=True).strip(), r["desirable"]) for r in rows] == [
        ("4", True), ("5", False)]


def test_bench_adpo_quick_compares_six_modes_with_equal_random_and_apl_budgets(tmp_path, monkeypatch):
    from frugalign.bench import adpo as adpo_bench

    monkeypatch.setenv("FRUGALIGN_CACHE", str(tmp_path / "cache"))
    parser = argparse.ArgumentParser()
    adpo_bench.add_arguments(parser)
    assert parser.parse_args([]).modes == ["dpo", "adpo", "adpo-nopl", "random-onepass"]  # the one-pass modes
    out = tmp_path / "adpo.json"
    args = ["--task", "arith", "--quick", "--gamma", "0.1", "--audit-rate", "0", "--acquisition-batch-size", "16",
            "--modes", "dpo", "adpo", "adpo-nopl", "random-onepass", "random", "apl", "--out", str(out)]
    assert adpo_bench.run(parser.parse_args(args)) == 0
    result = json.loads(out.read_text())
    by = {r["method"]: r for r in result["runs"]}
    assert set(by) == {"dpo", "adpo", "adpo-nopl", "random-onepass", "random", "apl"}
    assert 0 < by["dpo"]["queries"] <= by["dpo"]["pool"]  # every unique pair at most once
    # the same budget; random-onepass in ADPO's one pass, evaluated where DPO is
    assert by["random-onepass"]["queries"] == by["random"]["queries"] == by["apl"]["queries"] == by["adpo"]["queries"]
    assert len(by["random-onepass"]["curve"]) == len(by["dpo"]["curve"]) and by["random-onepass"]["pseudo_labelled"] == 0
    # and the same rounds: random is apl with uniform purchases
    assert [p["queries"] for p in by["random"]["curve"]] == [p["queries"] for p in by["apl"]["curve"]]
    # apl: one gold evaluation after each round of 16 labels, the last round buying the rest
    assert [p["queries"] for p in by["apl"]["curve"]] == [min(16 * (i + 1), by["adpo"]["queries"])
                                                          for i in range(-(-by["adpo"]["queries"] // 16))]
    assert by["adpo"]["pseudo_labelled"] > 0 and by["adpo"]["pseudo_label_agreement"] is not None
    assert all(r["curve"] and r["curve"][-1]["queries"] == r["queries"] for r in result["runs"])
    # a noiseless annotator: every label bought names the response of higher gold reward
    assert all(r["label_agreement"] == 1.0 and r["label_gold_gap"] > 0 for r in result["runs"])
    summary = result["summary"]
    assert "adpo_query_fraction" in summary and summary["apl"]["minus_random"]["seeds"] == 1
    # each mode against the uniform rival trained as it is: ADPO's one pass, APL's rounds
    assert summary["adpo"]["minus_random"]["mean"] == pytest.approx(by["adpo"]["gold_reward"]
                                                                    - by["random-onepass"]["gold_reward"])
    assert summary["apl"]["minus_random"]["mean"] == pytest.approx(by["apl"]["gold_reward"] - by["random"]["gold_reward"])
    assert summary["apl"]["minus_adpo"]["mean"] == pytest.approx(by["apl"]["gold_reward"] - by["adpo"]["gold_reward"])
    assert "curve" in result["summary"]["apl"] and out.with_suffix(".png").exists()


def test_label_quality_compares_each_bought_label_with_the_gold_reward():
    from frugalign.bench.adpo import label_quality

    labels = [1, -1, 1, None, 0]  # the annotator's: +1 response_a won, 0 a tie, None not bought
    gold = [(0.9, 0.1), (0.2, 0.6), (0.3, 0.5), (1.0, 0.0), (0.4, 0.4)]  # (gold of response_a, of response_b)
    quality = label_quality(labels, gold)
    assert quality["label_agreement"] == pytest.approx(2 / 3)  # the third is wrong; the gold tie decides nothing
    assert quality["label_gold_gap"] == pytest.approx((0.8 + 0.4 + 0.2 + 0.0) / 4)  # the unbought pair left out
    assert label_quality([None, None], gold[:2]) == {"label_agreement": None, "label_gold_gap": None}


def test_paired_curves_subtract_the_rival_at_each_number_of_labels_seed_by_seed():
    from frugalign.bench.common import paired_curves

    def run(seed, golds):
        return {"seed": seed, "curve": [{"queries": 32 * (i + 1), "gold_reward": g} for i, g in enumerate(golds)]}

    apl = [run(0, [0.2, 0.5]), run(1, [0.3, 0.4]), run(2, [0.1, 0.9])]
    rnd = [run(0, [0.1, 0.2]), run(1, [0.1, 0.3])]  # seed 2 has no rival: left out
    points = paired_curves(apl, rnd)
    assert [p["queries"] for p in points] == [32, 64] and [p["seeds"] for p in points] == [2, 2]
    assert points[0]["mean"] == pytest.approx(0.15) and points[1]["mean"] == pytest.approx(0.2)  # mode minus rival
    assert points[1]["ci95"] == pytest.approx(ci95([0.3, 0.1]))
    # ADPO's curve stays at its final count for its last evaluations: one seed is one pair there, its last
    adpo = [{"seed": 0, "curve": [{"queries": q, "gold_reward": g} for q, g in [(16, 0.1), (32, 0.2), (32, 0.3)]]}]
    rnd = [{"seed": 0, "curve": [{"queries": 32, "gold_reward": 0.25}]}]
    assert paired_curves(adpo, rnd) == [{"queries": 32, "mean": pytest.approx(0.05), "ci95": None, "seeds": 1}]


def test_bench_adpo_runs_the_modes_asked_and_apl_beside_random_at_each_budget(tmp_path, monkeypatch):
    from frugalign.bench import adpo as adpo_bench
    from frugalign.errors import UserError

    monkeypatch.setenv("FRUGALIGN_CACHE", str(tmp_path / "cache"))
    parser = argparse.ArgumentParser()
    adpo_bench.add_arguments(parser)
    out = tmp_path / "adpo.json"
    with pytest.raises(UserError, match="adpo must run too"):
        adpo_bench.run(parser.parse_args(["--quick", "--modes", "dpo", "random", "--out", str(out)]))
    args = ["--task", "arith", "--quick", "--modes", "dpo", "--apl-budgets", "0.25", "--acquisition-batch-size", "8",
            "--out", str(out)]
    assert adpo_bench.run(parser.parse_args(args)) == 0
    result = json.loads(out.read_text())
    by = {r["method"]: r for r in result["runs"]}
    assert list(by) == ["dpo", "random@0.25", "apl@0.25"]
    budget = round(0.25 * by["dpo"]["queries"])
    assert by["random@0.25"]["queries"] == by["apl@0.25"]["queries"] == budget
    summary = result["summary"]
    assert summary["apl@0.25"]["minus_random"]["mean"] == by["apl@0.25"]["gold_reward"] - by["random@0.25"]["gold_reward"]
    assert "minus_random" not in summary["random@0.25"] and isinstance(summary["target"], list)


def test_paired_difference_pairs_runs_by_seed():
    from frugalign.bench.common import paired_difference

    mine = [{"seed": s, "gold_reward": g} for s, g in ((0, 0.5), (1, 0.7), (2, 0.6), (3, 0.9))]
    theirs = [{"seed": s, "gold_reward": g} for s, g in ((2, 0.3), (0, 0.4), (1, 0.7))]  # another order; no seed 3
    paired = paired_difference(mine, theirs)
    assert paired["seeds"] == 3 and abs(paired["mean"] - 0.4 / 3) < 1e-12
    assert abs(paired["ci95"] - ci95([0.1, 0.0, 0.3])) < 1e-12  # the spread of the differences, not of the rewards
    assert paired_difference(mine[:1], theirs[:1]) is None  # no seed in common


def test_audit_agreement_is_split_by_confidence_most_confident_first(tmp_path):
    from frugalign.bench import adpo as adpo_bench

    # right on its 4 surest audits of 8, wrong on the rest; another run with 4 audits, right on its surest one
    sure = {"audit_record": [[0.1 * i, i >= 5] for i in range(1, 9)]}
    other = {"audit_record": [[0.5, True], [0.2, False], [0.3, False], [0.1, False]]}
    assert adpo_bench.agreement_by_confidence([sure, other]) == [(3, 3), (2, 3), (0, 3), (0, 3)]
    assert adpo_bench.agreement_by_confidence([{"audit_record": []}, {}]) == [(0, 0)] * 4
    # a result whose runs record their audits is drawn with the third panel
    result = json.loads((Path(__file__).parents[1] / "benchmarks/results/review-adpo-trust-by-confidence.json").read_text())
    adpo_bench.plot(result, tmp_path / "audits.png")
    assert (tmp_path / "audits.png").stat().st_size > 10_000


def test_adpo_target_needs_dpos_interval_at_30_percent_of_its_labels_above_randoms_interval():
    from frugalign.bench.adpo import meets_target

    def row(queries, gold, ci=0.02):
        return {"queries": queries, "gold_reward": gold, "gold_reward_ci95": ci}

    summary = {"dpo": row(100, 0.50, 0.05), "dpo_interval_low": 0.45, "adpo_query_fraction": 0.8,
               "random@0.3": row(30, 0.40), "apl@0.3": row(30, 0.46),  # reaches 0.45, above random's 0.42: met
               "random@0.2": row(20, 0.44), "apl@0.2": row(20, 0.46),  # above 0.45 but not above random's 0.46
               "random@0.5": row(50, 0.30), "apl@0.5": row(50, 0.49),  # over 30% of the labels
               "random@0.25": row(25, 0.30), "apl@0.25": row(25, 0.44),  # short of DPO's interval
               "random": row(80, 0.2), "adpo": row(80, 0.6)}  # 80% of the labels
    assert meets_target(summary) == ["apl@0.3"]


def test_bench_optune_quick_counts_generations_per_setting(tmp_path, monkeypatch):
    from frugalign.bench import optune as optune_bench

    monkeypatch.setenv("FRUGALIGN_CACHE", str(tmp_path / "cache"))
    parser = argparse.ArgumentParser()
    optune_bench.add_arguments(parser)
    out = tmp_path / "optune.json"
    args = ["--quick", "--iterations", "2", "--samples-per-prompt", "3", "--generation-batch-size", "8", "--out", str(out),
            "--selections", "optune", "gap", "random", "--optimizer", "rmsprop", "--learning-rate", "3e-5"]
    assert optune_bench.run(parser.parse_args(args)) == 0
    result = json.loads(out.read_text())
    by = {optune_bench.key(r["params"]): r for r in result["runs"]}
    assert set(by) == {"optune/rho=0.5/wdpo", "gap/rho=0.5/wdpo", "random/rho=0.5/wdpo", "all/rho=1.0/wdpo"}
    # the settings the runs really used are recorded: one epoch per iteration, the optimizer asked for
    assert result["config"]["epochs_per_iteration"] == 1 and "num_epochs" not in result["config"]
    assert result["config"]["optimizer"] == "rmsprop" and result["config"]["learning_rate"] == 3e-5
    assert result["config"]["train_prompts"] == 16  # quick's prompts: one optimizer step an iteration
    summary = result["summary"]
    gap, rnd = by["gap/rho=0.5/wdpo"]["gold_reward"], by["random/rho=0.5/wdpo"]["gold_reward"]
    assert summary["gap/rho=0.5/wdpo"]["minus_random"] == gap - rnd
    assert "minus_random" not in summary["random/rho=0.5/wdpo"] and "minus_random" not in summary["all/rho=1.0/wdpo"]
    assert summary["all/rho=1.0/wdpo"]["share_of_gain_from_bottom_half"] is not None  # Fig. 2's comparable figure
    full, half = by["all/rho=1.0/wdpo"], by["optune/rho=0.5/wdpo"]
    # iteration 0 regenerates everything for every method; then half the prompts
    assert half["curve"][0]["generations"] == full["curve"][0]["generations"]
    assert half["generations"] == full["curve"][0]["generations"] * 1.5
    assert result["config"]["samples_per_prompt"] == 3 and full["curve"][0]["generations"] % 3 == 0
    assert set(half["time_s"]) >= {"total", "generation", "scoring", "training"}
    assert out.with_suffix(".png").exists()


def online_run(selection, rho, seed, golds, times):
    """A `bench optune` run record with the given gold reward and seconds after each iteration."""
    return {"seed": seed, "params": {"selection": selection, "rho": rho, "loss": "wdpo"}, "gold_reward": golds[-1],
            "gold_reward_ci95": 0.0, "kl": 0.1, "generations": 10, "time_s": {"total": times[-1], "generation": 1.0},
            "curve": [{"time_s": t, "generations": 1, "gold_reward": g} for g, t in zip(golds, times)]}


def test_optune_plot_draws_every_selection_rule(tmp_path):
    from frugalign.bench.optune import SELECTIONS, plot

    runs = [online_run(sel, 1.0 if sel == "all" else 0.5, s, [0.1, 0.2 + 0.1 * s], [10, 20]) for sel in SELECTIONS + ("all",)
            for s in range(2)]
    plot({"task": "arith", "seeds": [0, 1], "runs": runs}, tmp_path / "optune.png")
    assert (tmp_path / "optune.png").stat().st_size > 10_000


def test_optune_summary_times_each_setting_to_rho_1s_interval():
    from frugalign.bench.optune import summarise

    runs = [online_run("all", 1.0, s, [0.1, 0.5, 0.6 + 0.01 * s], [10, 20, 30]) for s in range(3)]
    runs += [online_run("optune", 0.5, s, [0.1, 0.6, 0.7], [10, 15, 20]) for s in range(3)]
    runs += [online_run("random", 0.5, s, [0.1, 0.3, 0.4 + 0.1 * s], [10, 15, 20]) for s in range(3)]
    summary = summarise(runs)
    full, optune, rnd = summary["all/rho=1.0/wdpo"], summary["optune/rho=0.5/wdpo"], summary["random/rho=0.5/wdpo"]
    assert full["gold_reward_ci95"] > 0 and full["seconds_to_reach_rho1_interval"] == 30
    assert optune["seconds_to_reach_rho1_interval"] == 15 and optune["speedup_to_reach_rho1_interval"] == 2.0
    assert rnd["seconds_to_reach_rho1_interval"] is None  # never reaches 0.61 - its interval
    assert abs(optune["minus_random"] - 0.2) < 1e-9 and optune["minus_random_ci95"] > 0


def test_bench_generation_quick_reports_tokens_per_second_per_batch_size(tmp_path):
    from frugalign.bench import generation as generation_bench

    parser = argparse.ArgumentParser()
    generation_bench.add_arguments(parser)
    out = tmp_path / "generation.json"
    assert generation_bench.run(parser.parse_args(["--quick", "--out", str(out)])) == 0
    result = json.loads(out.read_text())
    assert result["bench"] == "generation" and [r["params"]["batch_size"] for r in result["runs"]] == [1, 4]
    assert all(r["tokens"] > 0 and r["tokens_per_second"] > 0 for r in result["runs"])
    assert set(result["summary"]["tiny-llama/hf"]) == {"1", "4"}
    assert out.with_suffix(".png").stat().st_size > 10_000


def test_bench_aihf_runs_self_play_only_where_it_differs_from_the_dpo_form():
    from frugalign.bench.aihf import METHODS, methods_to_run

    assert "aihf-self-play" not in methods_to_run(list(METHODS), iterations=1)
    assert methods_to_run(list(METHODS), iterations=2) == list(METHODS)
    assert methods_to_run(["spin", "aihf-self-play"], iterations=1) == ["spin", "aihf-self-play"]  # no DPO form to stand in


def test_bench_aihf_scarce_regimes_are_subsets_of_the_balanced_one_whatever_else_is_asked():
    from frugalign.bench.aihf import REGIMES, regime_data

    demos, prefs = [f"demo {i}" for i in range(100)], [f"pair {i}" for i in range(300)]
    every = regime_data(demos, prefs, 32, list(REGIMES), seed=3)
    balanced_demos, balanced_prefs = every["balanced"]
    assert len(balanced_demos) == len(balanced_prefs) == 32 and len(set(balanced_prefs)) == 32
    assert every["scarce-preferences"] == (balanced_demos, balanced_prefs[:4])
    assert every["scarce-demonstrations"] == (balanced_demos[:4], balanced_prefs)
    for regime in REGIMES:  # asked alone, or in another order, a regime sees the same data
        assert regime_data(demos, prefs, 32, [regime], seed=3)[regime] == every[regime]
        assert regime_data(demos, prefs, 32, list(reversed(REGIMES)), seed=3)[regime] == every[regime]
    assert regime_data(demos, prefs, 32, ["balanced"], seed=4)["balanced"] != every["balanced"]
    assert sorted(regime_data(demos[:10], prefs, 32, ["balanced"], seed=3)["balanced"][0]) == sorted(demos[:10])


def test_bench_aihf_quick_runs_each_distinct_method_on_the_same_data(tmp_path, monkeypatch):
    from frugalign.bench import aihf as aihf_bench

    monkeypatch.setenv("FRUGALIGN_CACHE", str(tmp_path / "cache"))
    parser = argparse.ArgumentParser()
    aihf_bench.add_arguments(parser)
    out = tmp_path / "aihf.json"
    checkpointed = []  # the models every training run set up to recompute activations
    name = ("activation_checkpointing_enable" if hasattr(transformers.PreTrainedModel, "activation_checkpointing_enable")
            else "gradient_checkpointing_enable")  # the engine calls the new name where the installed release has it
    enable = getattr(transformers.PreTrainedModel, name)
    monkeypatch.setattr(transformers.PreTrainedModel, name,
                        lambda model, *a, **k: (checkpointed.append(type(model).__name__), enable(model, *a, **k))[1])
    args = ["--quick", "--task", "arith", "--gradient-checkpointing", "--out", str(out)]
    assert aihf_bench.run(parser.parse_args(args)) == 0
    result = json.loads(out.read_text())
    trained = [r for r in result["runs"] if r["method"] != "base"]
    assert result["config"]["gradient_checkpointing"] and len(checkpointed) >= len(trained)
    assert [r["method"] for r in trained] == [m for m in aihf_bench.METHODS if m != "aihf-self-play"]  # 1 iteration
    assert result["methods"] == [r["method"] for r in trained]
    assert {(r["params"]["demonstrations"], r["params"]["preferences"]) for r in trained} == {(8, 8)}  # quick's N
    assert result["config"]["rloo_samples"] == 2 and result["config"]["iterations"] == 1
    by = {r["method"]: r for r in trained}
    assert by["sft"]["queries"] == 0 and by["dpo"]["queries"] == 8 and by["spin"]["generations"] == 8
    assert by["rlhf"]["generations"] == 8 * 2  # each of the 8 prompts once, 2 samples: the batch of 16 is not filled
    assert by["aihf-explicit"]["generations"] > by["aihf-dpo"]["generations"] > 0
    assert result["summary"]["balanced"]["best"] in aihf_bench.METHODS and out.with_suffix(".png").exists()


@pytest.mark.parametrize("option, words", [(["--rloo-samples", "1"], "--rloo-samples 1: at least 2"),
                                           (["--n", "0"], "--n 0, --iterations 1: each at least 1")])
def test_bench_aihf_refuses_bad_sizes_before_any_task_loads(monkeypatch, option, words):
    from frugalign.bench import aihf as aihf_bench

    monkeypatch.setattr(aihf_bench, "bench_task", lambda *a: pytest.fail("a task loaded before the options were checked"))
    parser = argparse.ArgumentParser()
    aihf_bench.add_arguments(parser)
    with pytest.raises(UserError, match=words):
        aihf_bench.run(parser.parse_args(["--quick", *option]))


def test_label_efficiency_summary_reads_the_curves_the_right_way_round():
    """Labels to reach DPO's interval is where the mean curve first crosses it (interpolated), and the area
    under the curve is the mean gold reward over the budget: a mode that gets there on fewer labels has the
    larger area."""
    from frugalign.bench.adpo import area_under, labels_to_reach, mean_curve

    def run(mode, seed, points, agreement=None):
        return {"method": mode, "seed": seed, "curve": [{"queries": q, "gold_reward": g, "gold_reward_ci95": 0.1,
                                                         "label_agreement": agreement} for q, g in points]}

    runs = [run("fast", 0, [(50, 0.4), (100, 0.6)], 0.7), run("fast", 1, [(50, 0.6), (100, 0.6)], 0.9),
            run("slow", 0, [(100, 0.2), (200, 0.6)], 0.8), run("slow", 1, [(100, 0.2), (200, 0.6)])]
    fast, slow = mean_curve(runs, "fast"), mean_curve(runs, "slow")
    assert fast[0] == {"queries": 50.0, "gold_reward": 0.5, "gold_reward_ci95": pytest.approx(1.2706, rel=1e-3),
                       "label_agreement": pytest.approx(0.8)}
    assert slow[0]["label_agreement"] is None  # a seed without the measure: no mean over the others
    assert labels_to_reach(fast, 0.55) == pytest.approx(75.0) and labels_to_reach(slow, 0.55) == pytest.approx(187.5)
    assert labels_to_reach(slow, 0.7) is None
    assert area_under(fast, 200) > area_under(slow, 200)
    assert area_under([{"queries": 100.0, "gold_reward": 0.3}], 200) == pytest.approx(0.3)



def test_an_interrupted_bench_keeps_its_runs_and_resumes_where_it_stopped(tmp_path, monkeypatch, capsys):
    from frugalign.bench import adpo as adpo_bench
    from frugalign.cli import main

    calls = []

    def fake_run(task, mode, seed, args, settings, workdir, budget):
        if len(calls) == 6:
            raise KeyboardInterrupt  # the machine goes away during seed 1's third mode
        calls.append((seed, mode, budget))
        queries = {"dpo": 100, "adpo": 40 + seed, "adpo-nopl": 30, "random-onepass": budget}[mode]
        return {"method": mode, "seed": seed, "params": {}, "gold_reward": 0.1 * len(calls), "gold_reward_ci95": 0.0,
                "kl": 0.1, "queries": queries, "pseudo_labelled": 0, "curve": [{"queries": queries, "gold_reward": 0.1}]}

    monkeypatch.setattr(adpo_bench, "run_mode", fake_run)
    pool = [{"prompt": f"p{i}", "response_a": "a", "response_b": "b"} for i in range(100)]  # DPO buys 100 labels
    monkeypatch.setattr(adpo_bench, "bench_task", lambda args, seed: types.SimpleNamespace(pair_pool=pool))
    monkeypatch.setattr(adpo_bench, "task_settings", lambda task, args, quick_epochs: {"learning_rate": 1e-5})
    out = tmp_path / "adpo.json"
    command = ["bench", "adpo", "--task", "arith", "--seeds", "0", "1", "--out", str(out)]
    out.write_text('{"bench": "adpo", "an earlier": "result"}')  # a finished result stays until the new one replaces it
    assert main(command) == 130  # Ctrl-C: "rerun with --resume"
    assert json.loads(out.read_text()) == {"bench": "adpo", "an earlier": "result"}
    partial = json.loads((tmp_path / "adpo.partial.json").read_text())
    assert partial["partial"] and [(r["seed"], r["method"]) for r in partial["runs"]] == [
        (0, "dpo"), (0, "adpo"), (0, "adpo-nopl"), (0, "random-onepass"), (1, "dpo"), (1, "adpo")]
    assert main(command + ["--gamma", "0.2", "--resume"]) == 2  # other options: refused, the file untouched
    assert "other options (gamma)" in capsys.readouterr().err
    assert json.loads((tmp_path / "adpo.partial.json").read_text()) == partial
    calls.clear()
    assert main(command + ["--resume"]) == 0
    # random-onepass: the resumed seed's budget (its adpo run, read back from the partial result)
    assert calls == [(1, "adpo-nopl", -1), (1, "random-onepass", 41)]
    result = json.loads(out.read_text())
    assert "partial" not in result and len(result["runs"]) == 8 and result["summary"]["dpo"]["seeds"] == 2
    assert not (tmp_path / "adpo.partial.json").exists()
    # a finished bench grows by the seeds it lacks: seed 2 runs, seeds 0 and 1 are kept
    calls.clear()
    assert main([*command[:-2], "2", "--out", str(out), "--resume"]) == 0
    assert [seed for seed, _, _ in calls] == [2] * 4
    grown = json.loads(out.read_text())
    assert len(grown["runs"]) == 12 and grown["summary"]["dpo"]["seeds"] == 3 and grown["seeds"] == [0, 1, 2]
    assert [r for r in grown["runs"] if r["seed"] < 2] == result["runs"]
    # an option added to the bench since the file was written matches it when left off, and only then
    before_flag = tmp_path / "before-flag.json"
    before_flag.write_text(json.dumps({**grown, "options": {k: v for k, v in grown["options"].items()
                                                            if k != "trust_by_confidence"}}))
    calls.clear()
    assert main([*command[:-2], "2", "--out", str(before_flag), "--resume"]) == 0 and calls == []
    assert main([*command[:-2], "2", "--out", str(before_flag), "--resume", "--trust-by-confidence"]) == 2
    assert "other options (trust_by_confidence)" in capsys.readouterr().err
    older = tmp_path / "older.json"  # written before results kept their options
    older.write_text(json.dumps({k: v for k, v in result.items() if k != "options"}))
    assert main([*command[:-1], str(older), "--resume"]) == 2
    assert "without the options it was run with" in capsys.readouterr().err


def test_random_budgets_run_random_at_fractions_of_dpos_labels(tmp_path, monkeypatch):
    from frugalign.bench import adpo as adpo_bench
    from frugalign.cli import main

    calls = []

    def fake_run(task, mode, seed, args, settings, workdir, budget):
        calls.append((mode, budget, workdir.name))
        queries = {"dpo": 100, "adpo": 40, "adpo-nopl": 30}.get(mode, budget)
        gold = queries / 200
        point = {"queries": queries, "gold_reward": gold, "gold_reward_ci95": 0.01}
        return {"method": mode, "seed": seed, "params": {"tau": 0.0}, "gold_reward": gold, "gold_reward_ci95": 0.01,
                "kl": 0.1, "queries": queries, "pseudo_labelled": 0, "curve": [point]}

    monkeypatch.setattr(adpo_bench, "run_mode", fake_run)
    pool = [{"prompt": f"p{i}", "response_a": "a", "response_b": "b"} for i in range(100)]  # DPO buys 100 labels
    monkeypatch.setattr(adpo_bench, "bench_task", lambda args, seed: types.SimpleNamespace(pair_pool=pool))
    monkeypatch.setattr(adpo_bench, "task_settings", lambda task, args, quick_epochs: {"learning_rate": 1e-5})
    out = tmp_path / "adpo.json"
    assert main(["bench", "adpo", "--task", "arith", "--seeds", "0", "--random-budgets", "0.25", "0.5",
                 "--out", str(out)]) == 0
    # each budget: mode random, a fraction of DPO's 100 labels, its own folder (its own ledger)
    assert calls[-2:] == [("random", 25, "random@0.25"), ("random", 50, "random@0.5")]
    result = json.loads(out.read_text())
    by = {r["method"]: r for r in result["runs"]}
    assert by["random@0.25"]["queries"] == 25 and by["random@0.25"]["params"]["budget_fraction"] == 0.25
    assert result["summary"]["random@0.5"]["gold_reward"] == 0.25 and out.with_suffix(".png").exists()
    assert main(["bench", "adpo", "--task", "arith", "--random-budgets", "1.5", "--out", str(out)]) == 2


@pytest.mark.parametrize("dims, scaling_figure", [([8], False), ([4, 8, 16], True)])
def test_bench_appo_sweeps_gamma_and_draws_the_scaling_figure_only_where_a_slope_fits(tmp_path, dims, scaling_figure):
    from frugalign.bench import appo as appo_bench

    out = tmp_path / "appo.json"
    parser = argparse.ArgumentParser()
    appo_bench.add_arguments(parser)
    args = parser.parse_args(["--seeds", "0", "1", "--horizon", "400", "--sweep-horizon", "200", "--dims", *map(str, dims),
                              "--gaps", "0.2", "--gamma-scales", "0.2", "3", "--scaling-scales", "3",
                              "--explore-shares", "0.05", "--explore-scales", "3", "--shrink-scales", "3", "--out", str(out)])
    assert appo_bench.run(args) == 0
    result = json.loads(out.read_text())
    sweep = result["summary"]["gamma_sweep"]
    assert set(sweep["scales"]) == {"0.2", "3.0"} and len(sweep["variants"]) == 2
    # a larger Gamma skips more duels: never more queries than at the small one, and at 0.2 APPO is informative
    assert sweep["scales"]["3.0"]["appo_queries"]["mean"] <= sweep["scales"]["0.2"]["appo_queries"]["mean"]
    assert sweep["scales"]["0.2"]["appo_queries"]["mean"] == sweep["informative"]["queries"]["mean"]
    # a slope needs three (d, Delta) points
    assert ("queries_vs_d2_over_gap2" in result["summary"]["scaling"]["3.0"]) == scaling_figure
    figures = {"appo.png", "appo-gamma.png"} | ({"appo-scaling.png"} if scaling_figure else set())
    assert {p.name for p in tmp_path.glob("*.png")} == figures


def test_bench_aihf_summary_pairs_the_best_aihf_form_with_each_baseline_by_seed():
    from frugalign.bench.aihf import summarise

    def run(method, seed, gold):
        return {"method": method, "seed": seed, "params": {"regime": "balanced"}, "gold_reward": gold, "kl": 0.1}

    # the seeds differ a lot, AIHF beats DPO by 0.05 on every seed: unpaired intervals overlap, the paired one does not
    runs = [{"method": "base", "seed": s, "gold_reward": 0.1} for s in range(3)]
    runs += [run("dpo", s, 0.1 * s) for s in range(3)] + [run("aihf-dpo", s, 0.1 * s + 0.05) for s in range(3)]
    runs += [run("sft", s, 0.1 * s + (0.1 if s == 0 else -0.02)) for s in range(3)]
    summary = summarise(runs, ["balanced"], ["sft", "dpo", "aihf-dpo"])["balanced"]
    assert summary["best_aihf"] == "aihf-dpo" and not summary["best_aihf_above_baselines_intervals"]
    minus = summary["best_aihf_minus"]
    assert set(minus) == {"sft", "dpo"} and minus["dpo"]["seeds"] == 3
    assert abs(minus["dpo"]["mean"] - 0.05) < 1e-9 and minus["dpo"]["ci95"] < 1e-9  # AIHF minus DPO, not DPO minus AIHF
    assert minus["sft"]["mean"] - minus["sft"]["ci95"] < 0  # SFT's seed 0 is above: no paired win over SFT
    assert summary["best_aihf_above_every_baseline_paired"] is False
    without_sft = summarise([r for r in runs if r["method"] != "sft"], ["balanced"], ["dpo", "aihf-dpo"])["balanced"]
    assert without_sft["best_aihf_above_every_baseline_paired"] is True


def test_plot_frontier_colours_each_method_as_the_caller_says():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    from frugalign.bench.common import plot_frontier

    runs = [{"method": m, "seed": s, "gold_reward": g + s / 10, "kl": 0.5 + s}
            for m, g in (("dpo", 0.2), ("apl@0.25", 0.3)) for s in (0, 1)]
    fig, ax = plt.subplots()
    palette = {"dpo": "#d62728", "apl": "#9467bd"}
    plot_frontier(ax, runs, lambda r: r["method"], colour=lambda name: palette[name.split("@")[0]])
    marks = {c.get_label(): to_hex(c.lines[0].get_color()) for c in ax.containers}
    plt.close(fig)
    assert marks == {"dpo": "#d62728", "apl@0.25": "#9467bd"}
