"""bench throughput: the runner, its result schema, the layout ablation, the interleaved rounds and their
arithmetic, each leg's peak memory in a process of its own, the TRL leg and the TRL check."""

import resource
import statistics
import sys

import pytest
import torch

from frugalign.bench import throughput
from frugalign.data import tokenize_preferences
from frugalign.errors import UserError
from frugalign.models import tiny_causal_lm


def tiny(name, tokenizer):
    """The bench's `load` for the tests: module-level, so that each leg's process can import it."""
    return tiny_causal_lm(len(tokenizer), pad_token_id=tokenizer.pad_token_id)


def test_every_layout_scores_the_same(tokenizer):
    rows, _ = tokenize_preferences(throughput.make_pairs(tokenizer, 3, 9, 5), tokenizer, 64, 64, "t", "error")
    rows[1]["chosen_ids"] = rows[1]["chosen_ids"][2:]  # unequal lengths: padding in every layout
    model = tiny_causal_lm(len(tokenizer)).to(throughput.device())
    scores = {layout: throughput.layout_scorer(layout, rows, tokenizer.pad_token_id)(model) for layout in throughput.LAYOUTS}
    for layout, (chosen, rejected) in scores.items():
        assert torch.allclose(chosen, scores["padded"][0], atol=1e-4), layout
        assert torch.allclose(rejected, scores["padded"][1], atol=1e-4), layout


@pytest.mark.skipif(torch.cuda.is_available(), reason="what the CPU offers")
def test_flex_layouts_score_the_same_but_are_not_offered_on_the_cpu(tokenizer):
    rows, _ = tokenize_preferences(throughput.make_pairs(tokenizer, 3, 9, 5), tokenizer, 64, 64, "t", "error")
    rows[1]["chosen_ids"] = rows[1]["chosen_ids"][2:]
    model = tiny_causal_lm(len(tokenizer), attn_implementation="flex_attention").eval()
    with torch.no_grad():  # FlexAttention has no backward on the CPU: scoring only
        padded = throughput.layout_scorer("padded", rows, tokenizer.pad_token_id)(model)
        for layout in throughput.FLEX_LAYOUTS:
            for got, want in zip(throughput.layout_scorer(layout, rows, tokenizer.pad_token_id)(model), padded):
                assert torch.allclose(got, want, atol=1e-4), layout
    assert throughput.ablation_layouts() == throughput.LAYOUTS
    assert not any(leg.layout in throughput.FLEX_LAYOUTS for leg in throughput.legs("tiny-llama", False, ablation=True))


def test_bench_without_trl_writes_the_schema(tokenizer, tmp_path):
    result = throughput.bench(["tiny-llama"], tokenizer, pairs=2, prompt_tokens=10, response_tokens=6, steps=2,
                              warmup=1, trl=False, ablation=True, mode="quick", load=tiny, rounds=1)
    assert result["bench"] == "throughput" and result["config"]["tokens_per_step"] == 2 * (10 + 6 + 6)
    assert result["config"]["padded_tokens_per_step"] == 4 * 16
    main = [r for r in result["runs"] if r["method"] != "frugalign-layout"]
    assert sorted((r["method"], r["params"]["reference"]) for r in main) == sorted(
        (m, ref) for m in ("frugalign", "floor") for ref in ("live", "precomputed"))
    assert all(r["step_s"] > 0 and [len(t) for t in r["step_times_s"]] == [2] and r["params"]["model"] == "tiny-llama"
               for r in result["runs"])
    # each leg's process holds at least the libraries and the model; no CUDA peak on a CPU
    assert all(r["peak_rss_mb"] > 100 and (r["peak_cuda_mb"] is None) == (not torch.cuda.is_available())
               for r in result["runs"])
    layouts = [r["params"]["layout"] for r in result["runs"] if r["method"] == "frugalign-layout"]
    assert layouts == list(throughput.LAYOUTS)
    assert set(result["summary"]) == {"tiny-llama/live", "tiny-llama/precomputed", "tiny-llama/layouts"}
    assert result["summary"]["tiny-llama/live"]["floor_over_frugalign"] > 0
    assert len(throughput.tables(result)) == 3
    throughput.plot(result, tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 10_000


def test_missing_trl_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "trl", None)  # import trl now raises ImportError
    with pytest.raises(UserError, match="trl-bench"):
        throughput.require_trl()


def test_trainable_layers_adds_its_own_timed_runs(tokenizer):
    result = throughput.bench(["tiny-llama"], tokenizer, pairs=2, prompt_tokens=10, response_tokens=6, steps=2,
                              warmup=1, trl=False, ablation=False, mode="quick", load=tiny, trainable_layers=1, rounds=1)
    assert {r["method"] for r in result["runs"]} == {"frugalign", "floor", "frugalign-top1"}
    assert result["summary"]["tiny-llama/live"]["frugalign_over_frugalign-top1"] > 0


def test_legs_run_interleaved_and_report_medians_of_all_rounds(tokenizer, monkeypatch):
    """Every leg once per round, A B C A B C; a leg's median and quartiles are over all its rounds' steps, and
    the ratios are of those medians. Fake legs: leg k of round r takes k + 1 + r/10 s a step (TRL's step
    10 s in round 0, 1 s after, so its mean and its median differ), and peaks at 100 MB times r + 1."""
    legs = throughput.legs("tiny-llama", trl=True, ablation=False)
    assert [leg.method for leg in legs[:3]] == ["frugalign", "floor", "trl"]
    calls = []

    def fake(fn, leg, *args):
        r, k = calls.count(leg), legs.index(leg)
        calls.append(leg)
        times = ([10.0, 1.0] if r == 0 else [1.0, 1.0]) if leg.method == "trl" else [k + 1 + r / 10] * 2
        return {"times": times, "parameters": 7, "peak_rss_mb": 100.0 * (r + 1), "peak_cuda_mb": None}

    monkeypatch.setattr(throughput, "in_child", fake)
    monkeypatch.setattr(throughput, "trl_version", lambda: "x")
    result = throughput.bench(["tiny-llama"], tokenizer, pairs=2, prompt_tokens=4, response_tokens=3, steps=2,
                              warmup=0, trl=True, ablation=False, mode="quick", load=tiny, rounds=3)
    assert calls == legs * 3
    runs = {(r["method"], r["params"]["reference"]): r for r in result["runs"]}
    floor = runs["floor", "live"]  # k = 1: 2.0, 2.1, 2.2 s, twice each
    assert floor["round_step_s"] == pytest.approx([2.0, 2.1, 2.2]) and floor["step_s"] == pytest.approx(2.1)
    assert floor["step_iqr_s"] == pytest.approx([2.025, 2.175]) and floor["peak_rss_mb"] == 300.0
    trl = runs["trl", "live"]
    assert trl["step_s"] == 1.0 and statistics.mean(t for ts in trl["step_times_s"] for t in ts) == 2.5
    live = result["summary"]["tiny-llama/live"]
    assert live["trl_over_frugalign"] == pytest.approx(1.0 / 1.1)  # medians: TRL 1.0 s, frugalign 1.1 s
    assert live["floor_over_frugalign"] == pytest.approx(2.1 / 1.1)
    assert result["config"]["rounds"] == 3 and len(throughput.tables(result)) == 2


def peak_rss_after(megabytes: int) -> float:
    """This process's peak RSS in MB after touching `megabytes` more."""
    block = bytearray(megabytes * 2**20)
    block[::4096] = b"x" * len(block[::4096])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_leg_peak_is_its_own(tokenizer):
    """A leg that follows a hungry one does not report the hungry one's peak (as it would in one process)."""
    hungry = throughput.in_child(peak_rss_after, 400)
    frugal = throughput.in_child(peak_rss_after, 0)
    assert hungry - frugal > 300


def test_trl_runs_at_its_best_settings_for_the_same_work(tmp_path):
    for precomputed in (False, True):
        args = throughput.trl_config(str(tmp_path), 2, 3, precomputed)
        assert args.precompute_ref_log_probs is precomputed  # as frugalign's reference of the same leg
        assert args.gradient_checkpointing is False and args.padding_free is False and args.max_length >= 4096
        assert args.per_device_train_batch_size == 2 and args.max_steps == 3 and args.beta == throughput.BETA


@pytest.mark.parametrize("precomputed", [False, True])
def test_trl_leg_trains_and_times_every_step(tokenizer, precomputed):
    examples = throughput.make_pairs(tokenizer, 2, 10, 6)
    model = tiny(None, tokenizer)
    before = [p.detach().clone() for p in model.parameters()]
    times = throughput.time_trl(model, tokenizer, examples, precomputed, steps=2, warmup=1, lr=1e-3)
    assert len(times) == 2 and min(times) > 0
    # the timed steps trained the model given (an optimizer step moved every weight with a gradient)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_results_of_the_bench_before_interleaving_are_still_redrawn(tmp_path):
    import json
    from pathlib import Path

    from frugalign.bench.throughput import plot

    older = json.loads((Path(__file__).parent.parent / "benchmarks/results/throughput-smollm2-top6.json").read_text())
    assert "rounds" not in older["config"]  # written before the legs were interleaved
    plot(older, tmp_path / "old.png")
    assert (tmp_path / "old.png").stat().st_size > 10_000
