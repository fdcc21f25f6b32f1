"""Sampling responses from a policy: Hugging Face `generate`, batched, left-padded, with a KV cache,
stopping at EOS; a progress bar shows tokens per second."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from frugalign.engine import console


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


def progress_bar(disable: bool = False) -> Progress:
    """The bar of a generation phase: responses done of total, elapsed time, tokens per second (`rate`)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[rate]}"), console=console, disable=disable)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], num_samples: int = 1, max_new_tokens: int = 64,
             temperature: float = 1.0, top_p: float = 1.0, batch_size: int = 64, seed: int | None = None,
             progress: bool = True, description: str = "generating", prompt_ids: list[list[int]] | None = None
             ) -> Generations:
    """`num_samples` responses per prompt. `temperature == 0` is greedy decoding. Prompts are
    tokenized with the tokenizer's special tokens, as in training, unless `prompt_ids` are given."""
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
    with progress_bar(disable=not progress) as bar:
        task = bar.add_task(description, total=len(jobs), rate="")
        for start in range(0, len(jobs), batch_size):
            ids, mask = _left_pad(jobs[start:start + batch_size], pad)
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                                 eos_token_id=eos, pad_token_id=pad, use_cache=True, top_k=0, **sampling)
            for row in out[:, ids.shape[1]:].tolist():
                cut = row.index(eos) + 1 if eos in row else len(row)
                outputs.append(row[:cut])
                n_tokens += cut
            rate = n_tokens / (time.perf_counter() - began)
            bar.update(task, advance=min(batch_size, len(jobs) - start), rate=f"{rate:,.0f} tok/s")
    if was_training:
        model.train()
    seconds = time.perf_counter() - began
    texts = [tokenizer.decode(o, skip_special_tokens=True) for o in outputs]
    grouped = [texts[i * num_samples:(i + 1) * num_samples] for i in range(len(prompt_ids))]
    grouped_ids = [outputs[i * num_samples:(i + 1) * num_samples] for i in range(len(prompt_ids))]
    return Generations(grouped, grouped_ids, n_tokens, seconds)
