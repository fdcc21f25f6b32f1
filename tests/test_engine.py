"""The training engine: data order, schedules, accumulation, checkpoints and exact resumption."""

import json

import pytest
import torch

from frugalign.config import load_config
from frugalign.engine import Engine, lr_lambda
from frugalign.models import tiny_causal_lm
from frugalign.options import DPOConfig, SFTConfig, TrainOptions
from frugalign.training.dpo import train_dpo
from tests.conftest import preference_rows


def tokenized(tokenizer, n, seed=0):
    eos = tokenizer.eos_token_id
    return [
        {"index": i, "prompt_ids": tokenizer(r["prompt"])["input_ids"],
         "chosen_ids": tokenizer(r["chosen"], add_special_tokens=False)["input_ids"] + [eos],
         "rejected_ids": tokenizer(r["rejected"], add_special_tokens=False)["input_ids"] + [eos], "weight": 1.0}
        for i, r in enumerate(preference_rows(n, seed))
    ]


def flat_params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()]).cpu()


def test_micro_batches_cover_each_epoch_once_and_are_seeded(tmp_path):
    engine = Engine(SFTConfig(train=TrainOptions(output_dir=str(tmp_path), batch_size=2, gradient_accumulation_steps=2, seed=3)))
    epoch0 = [i for step in range(3) for mb in engine.micro_batches(12, step) for i in mb]
    assert sorted(epoch0) == list(range(12))
    assert [len(mb) for mb in engine.micro_batches(12, 0)] == [2, 2]
    assert engine.micro_batches(12, 3) != engine.micro_batches(12, 0)  # a new epoch, a new order
    again = Engine(SFTConfig(train=TrainOptions(output_dir=str(tmp_path), batch_size=2, gradient_accumulation_steps=2, seed=3)))
    assert again.micro_batches(12, 4) == engine.micro_batches(12, 4)
    # 10 rows, global batch 4: the last batch of the epoch is filled from the epoch's start
    assert engine.steps_per_epoch(10) == 3
    assert sum(len(mb) for mb in engine.micro_batches(10, 2)) == 4


def test_rows_fewer_than_a_batch_make_one_smaller_batch_with_each_row_once(tmp_path):
    engine = Engine(SFTConfig(train=TrainOptions(output_dir=str(tmp_path), batch_size=16, seed=3)))
    assert engine.steps_per_epoch(8) == 1
    assert [sorted(mb) for mb in engine.micro_batches(8, 0)] == [list(range(8))]  # not 16 rows, each twice
    accumulating = Engine(SFTConfig(train=TrainOptions(output_dir=str(tmp_path), batch_size=4,
                                                       gradient_accumulation_steps=2, seed=3)))
    micro = accumulating.micro_batches(6, 0)
    assert [len(mb) for mb in micro] == [3, 3] and sorted(i for mb in micro for i in mb) == list(range(6))


@pytest.mark.parametrize("kind", ["constant", "linear", "cosine"])
def test_schedules_warm_up_then_decay(kind):
    f = lr_lambda(kind, warmup=4, total=20)
    assert f(0) < f(1) < f(3) <= 1.0
    assert f(4) == pytest.approx(1.0)
    if kind == "constant":
        assert f(19) == 1.0
    else:
        assert f(12) < 1.0 and f(19) < f(12)
        assert f(20) == pytest.approx(0.0, abs=1e-9)


def dpo_config(tmp_path, **kw):
    # fp32 everywhere (bf16 on a GPU would differ in rounding between the runs these tests compare)
    defaults = dict(output_dir=str(tmp_path), learning_rate=1e-3, batch_size=4, max_steps=6, warmup_ratio=0.0,
                    seed=0, logging_steps=1, mixed_precision="no")
    return load_config(DPOConfig, **{**defaults, **kw})


def test_gradient_accumulation_matches_a_bigger_batch(tmp_path, tokenizer):
    rows = tokenized(tokenizer, 16)
    a, _ = train_dpo(dpo_config(tmp_path / "a", batch_size=4, max_steps=3), tiny_causal_lm(len(tokenizer)), tokenizer, rows)
    b, _ = train_dpo(dpo_config(tmp_path / "b", batch_size=2, gradient_accumulation_steps=2, max_steps=3),
                     tiny_causal_lm(len(tokenizer)), tokenizer, rows)
    assert torch.allclose(flat_params(a), flat_params(b), atol=1e-5)


def test_resume_continues_exactly(tmp_path, tokenizer):
    """Interrupted after step 4 (checkpoint at 3), resumed: the final weights equal an uninterrupted run's."""
    rows = tokenized(tokenizer, 20)
    # dropout on, so that the RNG state must be restored too
    make = lambda: tiny_causal_lm(len(tokenizer), attention_dropout=0.1)  # noqa: E731
    full, _ = train_dpo(dpo_config(tmp_path / "full", max_steps=7, save_steps=3), make(), tokenizer, rows)

    class Interrupt(Exception):
        pass

    calls = {"n": 0}
    import frugalign.training.dpo as dpo_module

    original = dpo_module.pair_losses

    def failing(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 5:
            raise Interrupt
        return original(*args, **kw)

    dpo_module.pair_losses = failing
    try:
        with pytest.raises(Interrupt):
            train_dpo(dpo_config(tmp_path / "cut", max_steps=7, save_steps=3), make(), tokenizer, rows)
    finally:
        dpo_module.pair_losses = original
    assert (tmp_path / "cut" / "checkpoints" / "step-00000003" / "frugalign_state.json").exists()
    resumed, result = train_dpo(dpo_config(tmp_path / "cut", max_steps=7, save_steps=3, resume=True), make(),
                                tokenizer, rows)
    assert result.steps == 7
    assert torch.equal(flat_params(full), flat_params(resumed))
    logged = [json.loads(line)["step"] for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1] == 7 and 4 in logged


def test_rmsprop_and_clipping_run_and_change_parameters(tmp_path, tokenizer):
    rows = tokenized(tokenizer, 8)
    model = tiny_causal_lm(len(tokenizer))
    before = flat_params(model).clone()
    trained, result = train_dpo(dpo_config(tmp_path, optimizer="rmsprop", max_grad_norm=0.5, max_steps=2,
                                           lr_scheduler="cosine"), model, tokenizer, rows)
    assert not torch.equal(before, flat_params(trained))
    assert result.last_metrics["grad_norm"] > 0


def test_pruning_keeps_this_runs_latest_checkpoint(tmp_path, tokenizer):
    """A checkpoint left by another run at a later step is not taken for this run's newest: pruning
    keeps what this run wrote, and --resume continues it."""
    foreign = tmp_path / "checkpoints" / "step-00000100"
    foreign.mkdir(parents=True)
    (foreign / "frugalign_state.json").write_text(json.dumps({"step": 100}))
    rows = tokenized(tokenizer, 8)
    train_dpo(dpo_config(tmp_path, max_steps=5, save_steps=2, save_total_limit=1), tiny_causal_lm(len(tokenizer)),
              tokenizer, rows)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000004"]
    assert Engine(dpo_config(tmp_path, resume=True)).latest_checkpoint().name == "step-00000004"


def test_final_resumable_checkpoint_is_opt_in(tmp_path, tokenizer):
    rows = tokenized(tokenizer, 8)
    train_dpo(dpo_config(tmp_path / "plain", max_steps=2), tiny_causal_lm(len(tokenizer)), tokenizer, rows)
    assert not (tmp_path / "plain" / "checkpoints").exists()
    train_dpo(dpo_config(tmp_path / "kept", max_steps=2, save_final_checkpoint=True), tiny_causal_lm(len(tokenizer)),
              tokenizer, rows)
    assert (tmp_path / "kept" / "checkpoints" / "step-00000002" / "frugalign_state.json").exists()


def test_result_summarises_the_whole_run_not_its_last_step(tmp_path, tokenizer):
    from frugalign.console import format_duration

    _, result = train_dpo(dpo_config(tmp_path, max_steps=3), tiny_causal_lm(len(tokenizer)), tokenizer,
                          tokenized(tokenizer, 8))
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert result.mean_metrics["loss"] == pytest.approx(sum(x["loss"] for x in logged) / 3)
    summary = result.summary()
    assert summary["steps"] == 3 and summary["loss (mean)"] == result.mean_metrics["loss"]
    assert "lr (mean)" not in summary and summary["time per step"].endswith(" s")
    assert [format_duration(s) for s in (0.4213, 12.34, 138, 3900)] == ["0.42 s", "12.3 s", "2 min 18 s", "1 h 05 min"]


def test_trainable_layers_trains_only_the_top_blocks(tmp_path, tokenizer):
    rows = tokenized(tokenizer, 8)
    model = tiny_causal_lm(len(tokenizer), num_layers=3)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trained, _ = train_dpo(dpo_config(tmp_path, trainable_layers=1, max_steps=2), model, tokenizer, rows)
    changed = {name for name, p in trained.named_parameters() if not torch.equal(before[name], p.detach())}
    assert changed and all(name.startswith("model.layers.2.") for name in changed)
    assert {name for name in before if name.startswith("model.layers.2.")} == changed


def test_trainable_layers_beyond_the_model_is_refused(tmp_path, tokenizer):
    from frugalign.errors import UserError

    with pytest.raises(UserError, match="has 2 transformer blocks"):
        train_dpo(dpo_config(tmp_path, trainable_layers=3, max_steps=1), tiny_causal_lm(len(tokenizer)), tokenizer,
                  tokenized(tokenizer, 4))


def test_output_to_a_file_gets_plain_progress_lines_with_time_left(tmp_path, tokenizer, capsys):
    """Under nohup, Slurm or CI no bar is drawn: one line per logging step, with the time left at the mean pace."""
    train_dpo(dpo_config(tmp_path, max_steps=4, logging_steps=2), tiny_causal_lm(len(tokenizer)), tokenizer,
              tokenized(tokenizer, 8))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("dpo: ") and "/4," in line]
    assert [line.split(",")[0] for line in lines] == ["dpo: 2/4", "dpo: 4/4"]
    assert " left" in lines[0] and "━" not in "".join(lines)


def test_time_left_is_the_mean_pace_over_the_steps_this_run_took():
    from frugalign.console import time_left

    assert time_left(done=2, total=10, completed=2, elapsed=60.0) == "4 min 0 s left"
    # resumed at step 6: 2 steps took 60 s here, 2 remain
    assert time_left(done=2, total=10, completed=8, elapsed=60.0) == "1 min 0 s left"
    assert time_left(done=0, total=10, completed=0, elapsed=0.0) == "time left unknown"


@pytest.mark.parametrize("disable", [True, False])
def test_dropout_is_off_in_training_by_default_so_the_first_step_is_exactly_log_2(tmp_path, tokenizer, disable):
    """At the first step the policy is its reference: without dropout every implicit reward is 0 and the
    DPO loss is log 2 exactly; with the model's attention dropout on, it is a noisy number."""
    model = tiny_causal_lm(len(tokenizer), attention_dropout=0.5)
    train_dpo(dpo_config(tmp_path, max_steps=1, disable_dropout=disable), model, tokenizer, tokenized(tokenizer, 4))
    first = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert (abs(first["loss"] - torch.log(torch.tensor(2.0)).item()) < 1e-6) == disable
    assert all(m.attention_dropout == (0.0 if disable else 0.5) for m in model.modules() if hasattr(m, "attention_dropout"))
