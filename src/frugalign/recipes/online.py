"""Iterative online DPO with OPTune's selective regeneration and weighted DPO (docs/algorithms.md, section 4).

Every prompt keeps a pair (its best and worst sampled response) and the reward of the best. Per
iteration t:
  1. choose the prompts to regenerate: all of them at t = 0 (so every method starts equal); then
     ceil(rho * |P|) prompts by the `--selection` rule (`select_prompts`): OPTune's lowest chosen reward
     (`optune`), the smallest reward gap (`gap`), the oldest pairs (`stale`), lowest reward with a random
     share (`mixed`), uniformly at random (`random`), or all (`all`);
  2. sample `samples_per_prompt` responses for each chosen prompt from the current policy;
  3. score them; the best becomes the chosen response and the worst the rejected one;
  4. train one pass of DPO over every prompt's pair, the reference reset to the current policy; with
     `--loss wdpo` each pair is weighted by R = sigma(beta2 * (r_w - r_l)).
Generation and scoring go a batch of prompts at a time, each batch's responses and rewards appended to
the iteration's journal (`samples-iter{t}.jsonl`, flushed to disk) before the next; the pool is written
after every phase. A resumed run (after `kill -9` too) generates and scores only what no journal holds:
a kill loses at most the batch in flight. Time is counted per phase (generation, scoring, training).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.progress import TextColumn

from frugalign import losses
from frugalign.console import console, format_duration, print_summary, progress_bar, progress_line
from frugalign.data import PreferenceExample, tokenize_preferences
from frugalign.engine import Engine
from frugalign.errors import UserError
from frugalign.generation import open_generator
from frugalign.options import DPOConfig, DPOLossOptions, EpochOptions, OnlineConfig
from frugalign.training.common import load_prompts
from frugalign.training.dpo import train_dpo

Scorer = Callable[[list[str], list[str]], np.ndarray]


@dataclass
class PromptPool:
    """Every prompt's current pair and rewards; saved as JSON after each phase."""

    prompts: list[str]
    chosen: list[str | None] = field(default_factory=list)
    rejected: list[str | None] = field(default_factory=list)
    chosen_reward: list[float] = field(default_factory=list)
    rejected_reward: list[float] = field(default_factory=list)
    sampled_at: list[int] = field(default_factory=list)  # the iteration whose policy sampled each prompt's pair

    def __post_init__(self):
        n = len(self.prompts)
        self.chosen = self.chosen or [None] * n
        self.rejected = self.rejected or [None] * n
        self.chosen_reward = self.chosen_reward or [float("nan")] * n
        self.rejected_reward = self.rejected_reward or [float("nan")] * n
        self.sampled_at = self.sampled_at or [-1] * n

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> PromptPool:
        return cls(**json.loads(path.read_text()))


def select_prompts(pool: PromptPool, iteration: int, config: OnlineConfig, rng: random.Random) -> list[int]:
    """The prompts regenerated at `iteration`: all at the first (every rule starts from the same pool), then
    ceil(rho * n) of them, ties broken by prompt order:
      optune: the lowest chosen reward first (OPTune: the prompts the policy answers worst gain most);
      gap: the smallest chosen-minus-rejected reward gap first (a near-tie teaches little, and wDPO gives it
        almost no weight: a fresh pair may be worth more);
      stale: the pairs sampled longest ago first, the lowest reward first among those (every prompt in turn,
        so no pair lags the policy by more than 1/rho iterations);
      mixed: a share `random_share` uniformly at random, the rest by lowest reward (OPTune's focus, with some
        coverage of the prompts it would never revisit);
      random: uniformly at random; all: every prompt."""
    n = len(pool.prompts)
    if iteration == 0 or config.online.selection == "all":
        return list(range(n))
    k = math.ceil(config.online.rho * n)
    if config.online.selection == "random":
        return sorted(rng.sample(range(n), k))
    lowest_reward = sorted(range(n), key=lambda i: pool.chosen_reward[i])
    if config.online.selection == "optune":
        return sorted(lowest_reward[:k])
    if config.online.selection == "gap":
        return sorted(sorted(range(n), key=lambda i: pool.chosen_reward[i] - pool.rejected_reward[i])[:k])
    if config.online.selection == "stale":
        return sorted(sorted(range(n), key=lambda i: (pool.sampled_at[i], pool.chosen_reward[i]))[:k])
    focused = lowest_reward[:k - round(config.online.random_share * k)]  # mixed
    chosen = set(focused)
    return sorted(focused + rng.sample([i for i in range(n) if i not in chosen], k - len(focused)))


def run_online(config: OnlineConfig, policy, tokenizer, prompts: list[str], scorer: Scorer,
               on_iteration: Callable[[int, object], dict] | None = None) -> tuple[object, list[dict]]:
    """The online loop. `scorer(prompts, responses)` returns rewards (a reward model, a gold oracle);
    `on_iteration(t, policy)` may return extra metrics for the iteration's record (benches: gold reward)."""
    refuse_several_processes()
    out = Path(config.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(config.train.seed)
    records: list[dict] = []
    state_path = out / "online_state.json"
    start, phase, selected = 0, "generate", None
    pool = PromptPool(prompts)
    policy_dir: str | None = None  # the policy the current iteration starts from, once one was saved
    if config.train.resume and state_path.exists():
        state = json.loads(state_path.read_text())
        start, phase, records, policy_dir = state["iteration"], state["phase"], state["records"], state["policy"]
        selected = state.get("selected")
        pool = PromptPool.load(out / "pool.json")
        rng.setstate((state["rng"][0], tuple(state["rng"][1]), state["rng"][2]))
        if policy_dir:
            policy = type(policy).from_pretrained(policy_dir)
        console.print(f"resuming at iteration {start}, {phase} phase: nothing already generated is generated again")
    check_prompt_lengths(prompts, tokenizer, policy, config.sampling.max_new_tokens)
    generator = open_generator(config.backend.generation_backend, policy, tokenizer, out,
                               config.backend.vllm_gpu_memory_utilization, config.train.seed)
    try:
        for t in range(start, config.online.iterations):
            record = {"iteration": t, "generated": 0, "generation_backend": generator.name,
                      "time_s": {"generation": 0.0, "scoring": 0.0, "training": 0.0}}
            if phase == "train":  # resumed after this iteration's responses were generated and scored
                record = records.pop()
            else:
                if phase != "sample":  # a resumed iteration keeps the prompts it had chosen
                    selected = select_prompts(pool, t, config, rng)
                    phase = "sample"
                    pool.save(out / "pool.json")
                    save_state(state_path, t, phase, records, rng, policy_dir, selected)
                samples = sample_and_score(config, generator, pool.prompts, selected, t, scorer, record)
                before = list(pool.chosen_reward)
                for i in selected:
                    texts, group = samples[i]["texts"], np.asarray(samples[i]["scores"])
                    best, worst = int(np.argmax(group)), int(np.argmin(group))
                    pool.chosen[i], pool.rejected[i] = texts[best], texts[worst]
                    pool.chosen_reward[i], pool.rejected_reward[i] = float(group[best]), float(group[worst])
                    pool.sampled_at[i] = t
                record.update(gain_split(before, pool.chosen_reward))
                pool.save(out / "pool.json")
                phase = "train"
                save_state(state_path, t, phase, records + [record], rng, policy_dir, selected)
            began = time.perf_counter()
            policy = train_iteration(config, policy, tokenizer, pool, t, selected)
            generator.sync(policy)
            record["time_s"]["training"] = time.perf_counter() - began  # the weight sync counts as training
            record["mean_chosen_reward"] = float(np.nanmean(pool.chosen_reward))
            if on_iteration is not None:
                record.update(on_iteration(t, policy))
            records.append(record)
            # the last iterate is the final model: saved once, as model/
            policy_dir = str(out / ("model" if t == config.online.iterations - 1 else f"policy-iter{t}"))
            policy.save_pretrained(policy_dir)
            tokenizer.save_pretrained(policy_dir)
            phase = "generate"
            save_state(state_path, t + 1, phase, records, rng, policy_dir)
            console.print(f"iteration {t}: generated {record['generated']}, chosen reward {record['mean_chosen_reward']:.3f}, "
                          f"time gen/score/train {record['time_s']['generation']:.1f}/{record['time_s']['scoring']:.1f}/"
                          f"{record['time_s']['training']:.1f} s")
    finally:
        generator.close()
    return policy, records


def save_state(path: Path, iteration: int, phase: str, records: list[dict], rng: random.Random, policy: str | None,
               selected: list[int] | None = None):
    state = rng.getstate()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"iteration": iteration, "phase": phase, "records": records, "policy": policy,
                               "selected": selected, "rng": [state[0], list(state[1]), state[2]]}))
    tmp.replace(path)


def append_journal(path: Path, entries: list[dict]) -> None:
    """Appends and flushes to disk before returning: what a batch cost is never paid twice."""
    with path.open("a") as f:
        f.write("".join(json.dumps(e) + "\n" for e in entries))
        f.flush()
        os.fsync(f.fileno())


def read_journal(path: Path) -> dict[int, dict]:
    """Prompt index -> its entry. A last line cut short by a kill is ignored (its batch is redone)."""
    out: dict[int, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            out[entry["index"]] = {**out.get(entry["index"], {}), **entry}
    return out


def sample_and_score(config: OnlineConfig, generator, prompts: list[str], selected: list[int], t: int,
                     scorer: Scorer, record: dict) -> dict[int, dict]:
    """The iteration's samples ({"texts", "scores"} per selected prompt), generated then scored a batch
    of prompts at a time through the journal; `record` gets the counts, tokens/s and phase times."""
    journal = Path(config.train.output_dir) / f"samples-iter{t}.jsonl"
    done = read_journal(journal)
    batch, sampling = config.generation.generation_batch_size, config.sampling
    todo = [i for i in selected if "texts" not in done.get(i, {})]
    tokens, began = 0, time.perf_counter()
    with progress_bar(TextColumn("{task.fields[rate]}")) as bar:
        task = bar.add_task(f"iteration {t}: generating", total=len(selected), completed=len(selected) - len(todo),
                            start=len(selected) - len(todo), rate="")
        for start in range(0, len(todo), batch):
            chunk = todo[start:start + batch]
            gens = generator.generate([prompts[i] for i in chunk], config.online.samples_per_prompt, sampling.max_new_tokens,
                                      sampling.temperature, sampling.top_p, batch,
                                      seed=config.train.seed + 1_000_003 * t + chunk[0], progress=False)
            entries = [{"index": i, "texts": texts} for i, texts in zip(chunk, gens.texts)]
            append_journal(journal, entries)
            done.update((e["index"], e) for e in entries)
            tokens += gens.num_tokens
            rate = f"{tokens / (time.perf_counter() - began):,.0f} tok/s"
            bar.update(task, advance=len(chunk), rate=rate)
            progress_line(f"iteration {t}: generating", len(selected) - len(todo) + start + len(chunk), len(selected),
                          time.perf_counter() - began, len(selected) - len(todo), rate)
    record["time_s"]["generation"] = time.perf_counter() - began
    record["tokens_per_second"] = tokens / record["time_s"]["generation"] if tokens else None
    record["generated"] = len(selected) * config.online.samples_per_prompt  # what the iteration cost, resumed or not
    record["generated_after_resume"] = len(todo) * config.online.samples_per_prompt
    # An empty response (EOS at once) is a response like any other: scored, and trained on as EOS alone.
    record["empty_responses"] = sum(1 for i in selected for text in done[i]["texts"] if not text.strip())
    if record["empty_responses"]:
        console.print(f"iteration {t}: {record['empty_responses']} of {record['generated']} responses are empty "
                      "(EOS at once); they are scored and trained on like the others")
    todo = [i for i in selected if "scores" not in done[i]]
    began = time.perf_counter()
    for start in range(0, len(todo), batch):
        chunk = todo[start:start + batch]
        flat_prompts = [prompts[i] for i in chunk for _ in range(config.online.samples_per_prompt)]
        scores = np.asarray(scorer(flat_prompts, [x for i in chunk for x in done[i]["texts"]]), dtype=float)
        if scores.shape != (len(flat_prompts),) or not np.isfinite(scores).all():
            bad = int(np.flatnonzero(~np.isfinite(scores))[0]) if scores.shape == (len(flat_prompts),) else 0
            raise UserError(f"the scorer returned {scores.ravel()[bad] if scores.size else 'nothing'} for prompt "
                            f"{flat_prompts[bad]!r}: refusing to train on it (a NaN is never read as a reward)")
        k = config.online.samples_per_prompt
        entries = [{"index": i, "scores": scores[n * k:(n + 1) * k].tolist()} for n, i in enumerate(chunk)]
        append_journal(journal, entries)
        for e in entries:
            done[e["index"]]["scores"] = e["scores"]
    record["time_s"]["scoring"] = time.perf_counter() - began
    return done


def check_prompt_lengths(prompts: list[str], tokenizer, policy, max_new_tokens: int) -> None:
    """Refuses, before anything is generated, a prompt that leaves no room for `max_new_tokens` in the
    model's context (Hugging Face would run past its trained positions, vLLM would stop the run later)."""
    context = policy.config.max_position_embeddings
    for number, prompt in enumerate(prompts, start=1):
        n = len(tokenizer(prompt)["input_ids"])
        if n + max_new_tokens > context:
            raise UserError(f"prompt {number} has {n} tokens: with max_new_tokens={max_new_tokens} it does not fit the "
                            f"model's context of {context} tokens; shorten it or lower max_new_tokens")


def gain_split(before: list[float], after: list[float]) -> dict:
    """OPTune's Fig. 2 diagnostic: the share of the reward gain that comes from the bottom-50% prompts
    (by their previous reward) versus the top-50%."""
    prev = np.asarray(before, dtype=float)
    if not np.isfinite(prev).all():
        return {}
    gain = np.asarray(after, dtype=float) - prev
    order = np.argsort(prev)
    bottom, top = gain[order[: len(order) // 2]].sum(), gain[order[len(order) // 2:]].sum()
    total = abs(bottom) + abs(top)
    return {"gain_bottom_half": float(bottom), "gain_top_half": float(top),
            "share_bottom_half": float(abs(bottom) / total) if total > 0 else None}


def train_iteration(config: OnlineConfig, policy, tokenizer, pool: PromptPool, t: int, regenerated: list[int]):
    """One DPO pass over the pool's pairs (`--train-pairs regenerated`: only those of the `regenerated`
    prompts) with the reference reset to the current policy."""
    examples = [PreferenceExample(p, c, r, weight=1.0)
                for p, c, r in zip(pool.prompts, pool.chosen, pool.rejected)]
    gaps = np.asarray(pool.chosen_reward) - np.asarray(pool.rejected_reward)
    candidates = regenerated if config.online.train_pairs == "regenerated" else range(len(examples))
    keep = [i for i in candidates if gaps[i] > 0 and examples[i].chosen != examples[i].rejected]
    if not keep:
        console.print(f"iteration {t}: every pair is a tie, nothing to train on")
        return policy
    rows, _ = tokenize_preferences([examples[i] for i in keep], tokenizer, config.length.max_prompt_length,
                                   config.length.max_response_length, f"iteration {t} pairs", config.length.overlong)
    if config.loss.loss == "wdpo":
        weights = losses.wdpo_weights(torch.tensor(gaps[keep]), torch.zeros(len(keep)), config.loss.beta2)
        for row in rows:
            row["weight"] = float(weights[row["index"]])
    loss = config.loss  # wDPO is DPO on the weighted rows
    dpo = DPOConfig(
        train=dataclasses.replace(config.train, output_dir=str(Path(config.train.output_dir) / f"train-iter{t}"),
                                  resume=False),
        epochs=EpochOptions(num_epochs=1), model=config.model, data=config.data, length=config.length, chat=config.chat,
        reference=config.reference,
        loss=DPOLossOptions(loss="ipo" if loss.loss == "ipo" else "dpo", beta=loss.beta,
                            label_smoothing=loss.label_smoothing, shared_prefix=loss.shared_prefix))
    engine = Engine(dpo)
    policy, _ = train_dpo(dpo, policy, tokenizer, rows, engine=engine)
    return engine.unwrap(policy)  # the model itself: it is sampled from and saved


def refuse_several_processes() -> None:
    """Online DPO runs in one process: every process would sample the same prompts and write the same pool,
    journal and iterates (its sampling and pool are not shared out between processes)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("frugalign online runs in one process (its sampling, pool and journal are not shared between "
                        "processes): launch it without a multi-process accelerate config")


def run(config: OnlineConfig) -> list[dict]:
    """`frugalign online`: prompts, a reward model as the scorer, the loop, the final policy."""
    from frugalign import models
    from frugalign.training.reward import score

    if not config.online.reward_model:
        raise UserError("frugalign online needs --reward-model (a checkpoint from `frugalign reward`)")
    refuse_several_processes()  # before any model loads
    tokenizer = models.load_tokenizer(config.model.model)
    prompts = load_prompts(config, tokenizer)
    rm, rm_tokenizer = models.load_reward_model(config.online.reward_model), models.load_tokenizer(config.online.reward_model)
    policy = models.load_causal_lm(config.model.model)
    policy, records = run_online(config, policy, tokenizer, prompts,
                                 lambda p, r: score(rm, rm_tokenizer, p, r))
    (Path(config.train.output_dir) / "iterations.json").write_text(json.dumps(records, indent=2))
    phases = {p: format_duration(sum(r["time_s"][p] for r in records)) for p in ("generation", "scoring", "training")}
    print_summary(f"frugalign online ({config.online.selection}, rho {config.online.rho}, {config.loss.loss})", {
        "prompts": len(prompts), "iterations": len(records),
        "responses generated": sum(r["generated"] for r in records),
        "mean chosen reward (first / last iteration)": f"{records[0]['mean_chosen_reward']:.4f} / "
                                                       f"{records[-1]['mean_chosen_reward']:.4f}",
        "time (generation / scoring / training)": " / ".join(phases.values()),
        "model": str(Path(config.train.output_dir) / "model")})
    return records
