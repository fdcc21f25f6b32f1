"""AIHF: reward and policy learned together from demonstrations and preferences (docs/algorithms.md,
section 5), in three forms, and SPIN (section 1), the demonstrations-only case of the self-play form.

Each iteration k starts from the current policy pi_k and samples one response y ~ pi_k for every
demonstration prompt (a demonstration y_E "beats" the policy's own attempt). Then, by variant:
  explicit:  the reward model takes a weighted Bradley-Terry step on (y_E > y) pairs (weight w_D) and on
             the preference pairs (w_P); the policy takes KL-regularised policy-gradient steps (RLOO,
             `training/rlhf.py`) against that reward, the reference being the initial (SFT) policy;
  dpo:       lambda * DPO(preferences) + DPO({(y_E, y)}), both with the initial policy as reference;
  self-play: lambda * DPO(preferences) [reference: the initial policy] + SPIN({(y_E, y)}) [reference: pi_k].
SPIN is self-play without preferences. Each iteration's policy is saved; `--resume` continues at the
first iteration not finished. Costs are counted: responses generated, preference pairs used, time.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

from accelerate import PartialState

from frugalign import models
from frugalign.console import console, format_duration, is_main_process, print_summary
from frugalign.data import Demonstration, PreferenceExample, demonstrations, load_rows, preference_examples, tokenize_preferences
from frugalign.engine import Engine
from frugalign.errors import UserError
from frugalign.generation import open_generator
from frugalign.options import (
    AIHFConfig,
    DPOConfig,
    DPOLossOptions,
    ReferenceOptions,
    RewardConfig,
    RLHFConfig,
    SPINConfig,
    TrainOptions,
)
from frugalign.training.dpo import attach_reference_logps, train_dpo
from frugalign.training.reward import score, train_reward
from frugalign.training.rlhf import train_rlhf

Step = Callable[[int, object, list[PreferenceExample]], tuple[object, int]]  # -> (policy, responses it generated)


def sample_opponents(generator, demos: list[Demonstration], config: AIHFConfig | SPINConfig,
                     k: int) -> list[PreferenceExample]:
    """(prompt, demonstration, the policy's own response) for each demonstration; identical ones are dropped
    (nothing to learn from them). `generator` holds the current policy's weights."""
    sampling = config.sampling
    gens = generator.generate([d.prompt for d in demos], 1, sampling.max_new_tokens, sampling.temperature, sampling.top_p,
                              config.generation.generation_batch_size, seed=config.train.seed + k,
                              description=f"iteration {k}: sampling")
    return [PreferenceExample(d.prompt, d.completion, texts[0], weight=config.demos.demonstration_weight)
            for d, texts in zip(demos, gens.texts) if texts[0].strip() != d.completion.strip()]


def iterate(config: AIHFConfig | SPINConfig, policy, tokenizer, demos: list[Demonstration], step: Step, generator,
            on_iteration: Callable[[int, object], dict] | None = None) -> tuple[object, list[dict]]:
    """The outer loop: sample opponents with pi_k, `step(k, policy, opponents) -> (policy, generated)`, save,
    record (responses generated: the opponents, and apart what the step sampled itself). `generator` gets
    pi_k's weights before each iteration samples."""
    out = Path(config.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_path, records, start = out / "aihf_state.json", [], 0
    if config.train.resume and state_path.exists():
        state = json.loads(state_path.read_text())
        start, records = state["iteration"], state["records"]
        if state["policy"]:
            policy = type(policy).from_pretrained(state["policy"])
        console.print(f"resuming at iteration {start}")
    for k in range(start, config.demos.iterations):
        began = time.perf_counter()
        generator.sync(policy)  # pi_k: the policy the last iteration trained, or the one resumed from disk
        opponents = sample_opponents(generator, demos, config, k) if demos else []
        sampled = time.perf_counter()
        policy, step_generated = step(k, policy, opponents)
        record = {"iteration": k, "generated": len(demos), "policy_step_generated": step_generated,
                  "opponent_pairs": len(opponents),
                  "time_s": {"generation": sampled - began, "training": time.perf_counter() - sampled}}
        if on_iteration is not None:
            record.update(on_iteration(k, policy))
        records.append(record)
        path = out / f"policy-iter{k}"
        if is_main_process():  # every process holds the same weights; one writes them
            policy.save_pretrained(path)
            tokenizer.save_pretrained(path)
            tmp = state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"iteration": k + 1, "records": records, "policy": str(path)}))
            tmp.replace(state_path)
        PartialState().wait_for_everyone()  # no process reads or overwrites the folder before it is written
    return policy, records


def sub_run(config: AIHFConfig | SPINConfig, folder: str, **changes) -> TrainOptions:
    """The training options of a trainer an iteration runs: the command's, in a folder of its own inside the run's,
    never resumed (a resumed run restarts its unfinished iteration)."""
    return dataclasses.replace(config.train, output_dir=str(Path(config.train.output_dir) / folder), resume=False,
                               **changes)


def dpo_rows(config: AIHFConfig | SPINConfig, tokenizer, examples: list[PreferenceExample], source: str) -> list[dict]:
    length = config.length
    rows, _ = tokenize_preferences(examples, tokenizer, length.max_prompt_length, length.max_response_length, source,
                                   length.overlong)
    return rows


def dpo_step(config: AIHFConfig | SPINConfig, tokenizer, initial, preferences: list[PreferenceExample]) -> Step:
    """dpo and self-play (and SPIN): one DPO pass over preference pairs (weight lambda, reference: the
    initial policy) and opponent pairs (reference: the initial policy, or pi_k for self-play)."""
    pref_rows = attach_reference_logps(initial, dpo_rows(config, tokenizer, [
        PreferenceExample(p.prompt, p.chosen, p.rejected, weight=p.weight * config.aihf.preference_weight) for p in preferences
    ], "preferences"), tokenizer.pad_token_id, config.train.batch_size) if preferences else []

    def step(k: int, policy, opponents: list[PreferenceExample]):
        opp_rows = dpo_rows(config, tokenizer, opponents, f"iteration {k} opponents") if opponents else []
        if opp_rows:
            attach_reference_logps(policy if config.variant == "self-play" else initial, opp_rows,
                                   tokenizer.pad_token_id, config.train.batch_size)
        rows = pref_rows + opp_rows
        if not rows:
            console.print(f"iteration {k}: no pair differs, nothing to train on")
            return policy, 0
        loss = config.loss
        dpo = DPOConfig(train=sub_run(config, f"train-iter{k}"), epochs=config.epochs, model=config.model,
                        length=config.length, chat=config.chat, reference=ReferenceOptions(reference="precomputed"),
                        loss=DPOLossOptions(loss=loss.loss, beta=loss.beta, label_smoothing=loss.label_smoothing,
                                            shared_prefix=loss.shared_prefix))
        engine = Engine(dpo)
        policy, _ = train_dpo(dpo, policy, tokenizer, [dict(r) for r in rows], engine=engine)
        return engine.unwrap(policy), 0  # the model itself, not its multi-process wrapper: it is saved and sampled
    return step


def explicit_step(config: AIHFConfig, tokenizer, initial, preferences: list[PreferenceExample], reward_model,
                  reward_tokenizer, prompts: list[str], generator) -> Step:
    """explicit: a reward step on both kinds of pairs, then RLOO policy steps against the learned reward."""
    pref = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected, "margin": 0.0,
             "weight": p.weight * config.aihf.preference_weight} for p in preferences]

    def step(k: int, policy, opponents: list[PreferenceExample]):
        nonlocal reward_model
        rows = pref + [{"prompt": o.prompt, "chosen": o.chosen, "rejected": o.rejected, "margin": 0.0, "weight": o.weight}
                       for o in opponents]
        rc = RewardConfig(train=sub_run(config, f"reward-iter{k}", learning_rate=config.aihf.reward_learning_rate),
                          epochs=config.epochs)
        reward_engine = Engine(rc)
        reward_model, _ = train_reward(rc, reward_model, reward_tokenizer, rows, engine=reward_engine)
        reward_model = reward_engine.unwrap(reward_model)
        pc = RLHFConfig(train=sub_run(config, f"policy-step-iter{k}"), epochs=config.epochs, model=config.model,
                        data=config.data, chat=config.chat, sampling=config.sampling, backend=config.backend,
                        rloo=config.rloo)
        policy_engine = Engine(pc)
        policy, result = train_rlhf(pc, policy, tokenizer, prompts,
                                    lambda p, r: score(reward_model, reward_tokenizer, p, r), reference=initial,
                                    engine=policy_engine, generator=generator)
        return policy_engine.unwrap(policy), int(result.last_metrics["generations"])
    return step


def train_aihf(config: AIHFConfig | SPINConfig, policy, tokenizer, demos: list[Demonstration],
               preferences: list[PreferenceExample], reward_model=None, reward_tokenizer=None,
               on_iteration=None) -> tuple[object, list[dict]]:
    """The Python API behind `frugalign aihf` and `frugalign spin` (no preferences, variant self-play)."""
    initial = copy.deepcopy(policy).eval().requires_grad_(False)
    # one sampling engine for the whole run (vLLM starts once), given each policy's weights before it samples
    generator = open_generator(config.backend.generation_backend, policy, tokenizer, Path(config.train.output_dir),
                               config.backend.vllm_gpu_memory_utilization, config.train.seed)
    try:
        if config.variant == "explicit":
            if reward_model is None:
                reward_model, reward_tokenizer = models.load_reward_model(config.aihf.reward_model), models.load_tokenizer(
                    config.aihf.reward_model or models.MINILM)
            prompts = sorted({d.prompt for d in demos} | {p.prompt for p in preferences})
            step = explicit_step(config, tokenizer, initial, preferences, reward_model, reward_tokenizer, prompts,
                                 generator)
        else:
            step = dpo_step(config, tokenizer, initial, preferences)
        return iterate(config, policy, tokenizer, demos, step, generator, on_iteration)
    finally:
        generator.close()


def load_data(config: AIHFConfig | SPINConfig, need_preferences: bool):
    """The tokenizer and both datasets, read and validated before any model is loaded."""
    if not config.demos.demonstrations:
        raise UserError("no demonstrations: pass --demonstrations (prompt/completion or messages rows)")
    if need_preferences and not config.data.dataset:
        raise UserError("no preferences: pass --dataset (prompt/chosen/rejected rows)")
    tokenizer = models.load_tokenizer(config.model.model)
    path = config.demos.demonstrations
    demos = demonstrations(load_rows(path, config.data.dataset_split), path, tokenizer, config.chat.chat_template)
    preferences = []
    if need_preferences:
        preferences = preference_examples(load_rows(config.data.dataset, config.data.dataset_split), config.data.dataset,
                                          tokenizer, config.chat.chat_template)
    return tokenizer, demos, preferences


def report(config: AIHFConfig | SPINConfig, name: str, records: list[dict], n_pref: int, model_path: Path) -> None:
    generated = sum(r["generated"] + r["policy_step_generated"] for r in records)
    seconds = {p: sum(r["time_s"][p] for r in records) for p in ("generation", "training")}
    print_summary(f"frugalign {name}", {
        "iterations": len(records), "responses generated": generated, "preference pairs used": n_pref,
        "time (generation / training)": f"{format_duration(seconds['generation'])} / "
                                        f"{format_duration(seconds['training'])}",
        "model": str(model_path)})


def run_iterations(config: AIHFConfig | SPINConfig, name: str, need_preferences: bool) -> list[dict]:
    """`frugalign aihf` and `frugalign spin`: validate the datasets, iterate, save, summarise."""
    tokenizer, demos, preferences = load_data(config, need_preferences)
    policy = models.load_causal_lm(config.model.model)
    policy, records = train_aihf(config, policy, tokenizer, demos, preferences)
    path = Path(config.train.output_dir) / "model"
    if is_main_process():  # every process holds the same final policy; one writes it
        policy.save_pretrained(path)
        tokenizer.save_pretrained(path)
        (Path(config.train.output_dir) / "iterations.json").write_text(json.dumps(records, indent=2))
        report(config, name, records, len(preferences), path)
    PartialState().wait_for_everyone()
    return records
