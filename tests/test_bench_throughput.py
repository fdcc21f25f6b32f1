"""bench throughput without TRL: the runner, its result schema, the layout ablation, the TRL check."""

import sys

import pytest
import torch

from frugalign.bench import throughput
from frugalign.data import tokenize_preferences
from frugalign.errors import UserError
from frugalign.models import tiny_causal_lm


def test_every_layout_scores_the_same(tokenizer):
    rows, _ = tokenize_preferences(throughput.make_pairs(tokenizer, 3, 9, 5), tokenizer, 64, 64, "t", "error")
    rows[1]["chosen_ids"] = rows[1]["chosen_ids"][2:]  # unequal lengths: padding in every layout
    model = tiny_causal_lm(len(tokenizer)).to(throughput.device())
    scores = {layout: throughput.layout_scorer(layout, rows, tokenizer.pad_token_id)(model) for layout in throughput.LAYOUTS}
    for layout, (chosen, rejected) in scores.items():
        assert torch.allclose(chosen, scores["padded"][0], atol=1e-4), layout
        assert torch.allclose(rejected, scores["padded"][1], atol=1e-4), layout


def test_bench_without_trl_writes_the_schema(tokenizer, tmp_path):
    load = lambda name, tok: tiny_causal_lm(len(tok), pad_token_id=tok.pad_token_id)  # noqa: E731
    result = throughput.bench(["tiny-llama"], tokenizer, pairs=2, prompt_tokens=10, response_tokens=6, steps=2,
                              warmup=1, trl=False, ablation=True, mode="quick", load=load)
    assert result["bench"] == "throughput" and result["config"]["tokens_per_step"] == 2 * (10 + 6 + 6)
    assert result["config"]["padded_tokens_per_step"] == 4 * 16
    main = [r for r in result["runs"] if r["method"] != "frugalign-layout"]
    assert sorted((r["method"], r["params"]["reference"]) for r in main) == sorted(
        (m, ref) for m in ("frugalign", "floor") for ref in ("live", "precomputed"))
    assert all(r["step_s"] > 0 and len(r["step_times_s"]) == 2 and r["params"]["model"] == "tiny-llama" for r in result["runs"])
    layouts = [r["params"]["layout"] for r in result["runs"] if r["method"] == "frugalign-layout"]
    assert layouts == list(throughput.LAYOUTS)
    assert set(result["summary"]) == {"tiny-llama/live", "tiny-llama/precomputed", "tiny-llama/layouts"}
    assert result["summary"]["tiny-llama/live"]["floor_over_frugalign"] > 0
    assert len(throughput.tables(result)) == 2
    throughput.plot(result, tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 10_000


def test_missing_trl_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "trl", None)  # import trl now raises ImportError
    with pytest.raises(UserError, match="trl-bench"):
        throughput.require_trl()


def test_trainable_layers_adds_its_own_timed_runs(tokenizer):
    load = lambda name, tok: tiny_causal_lm(len(tok), pad_token_id=tok.pad_token_id)  # noqa: E731
    result = throughput.bench(["tiny-llama"], tokenizer, pairs=2, prompt_tokens=10, response_tokens=6, steps=2,
                              warmup=1, trl=False, ablation=False, mode="quick", load=load, trainable_layers=1)
    assert {r["method"] for r in result["runs"]} == {"frugalign", "floor", "frugalign-top1"}
    assert result["summary"]["tiny-llama/live"]["frugalign_over_frugalign-top1"] > 0
