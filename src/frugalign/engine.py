"""The one training loop, on `accelerate`, that every recipe uses.

A recipe hands the engine a model, a list of tokenized rows and a `step_fn(model, rows) -> (loss, metrics)`
that says what one micro-batch does; the engine owns everything else: devices and processes, mixed
precision, the optimizer and schedule, gradient accumulation and clipping, checkpoints and exact
resumption, evaluation, and metrics to the console, a JSONL file and trackers.

Data order is a pure function of (seed, step): epoch e visits the rows in `randperm(n, seed + e)`,
and optimizer step s takes the s-th global batch of that order. Process r takes its slice of the
global batch and splits it into micro-batches. So a resumed run sees exactly the batches an
uninterrupted run would, without replaying a data loader. When the row count is not a multiple of
the global batch, the last batch of an epoch is filled from the start of the same permutation (as
torch's DistributedSampler does), so every process always has a full share and DDP never waits.
Rows fewer than one global batch make a smaller batch instead (each row once, as a DataLoader would give).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from rich.progress import Progress, TextColumn

from frugalign.config import Config, to_dict
from frugalign.console import console, format_duration, progress_bar, progress_line
from frugalign.errors import UserError, redact

# step_fn(model, rows) and eval_fn(model) get the prepared model (DDP-wrapped under several processes)
StepFn = Callable[[object, list[dict]], tuple[torch.Tensor, dict[str, float | torch.Tensor]]]
EvalFn = Callable[[object], dict[str, float]]


@dataclass
class TrainResult:
    steps: int
    seconds: float
    last_metrics: dict[str, float]
    eval_metrics: dict[str, float]
    mean_metrics: dict[str, float]  # each training metric's mean over the steps this run took
    total_metrics: dict[str, float]  # and its sum (counts such as trained pairs)

    def summary(self, skip: tuple[str, ...] = ()) -> dict[str, object]:
        """Steps, times and the run's means of the training metrics (not `skip`: running counters whose
        mean means nothing), then the final evaluation."""
        out: dict[str, object] = {"steps": self.steps, "time": format_duration(self.seconds)}
        if "step_seconds" in self.mean_metrics:
            out["time per step"] = format_duration(self.mean_metrics["step_seconds"])
        for key, value in self.mean_metrics.items():
            if key not in ("lr", "step_seconds", *skip):
                out[f"{key} (mean)"] = value
        return {**out, **self.eval_metrics}


def ensure_output_dir(config: Config) -> Path:
    """config.train.output_dir, set to a fresh `runs/<name>-<timestamp>` when the Python API left it unset
    (the CLI sets it before, with the command's name)."""
    if config.train.output_dir is None:
        from frugalign.rundir import fresh_run_dir

        config.train.output_dir = str(fresh_run_dir(type(config).__name__.removesuffix("Config").lower()))
    return Path(config.train.output_dir)


def resolve_mixed_precision(choice: str) -> str:
    if choice == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    if choice in ("bf16", "fp16") and not torch.cuda.is_available():
        raise UserError(f"mixed_precision={choice} needs a GPU; use 'no' (fp32) on a CPU")
    return choice


def lr_lambda(kind: str, warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if kind == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def micro_batch_size(train, n_rows: int, num_processes: int = 1) -> int:
    """`train.batch_size`, or less when all the rows fit in one optimizer step: a batch never holds a row twice
    just to reach its size (that repeats the same gradient at twice the compute, and samples twice as many
    responses in RLHF's steps). `train` is a config's TrainOptions."""
    return min(train.batch_size, math.ceil(n_rows / (train.gradient_accumulation_steps * num_processes)))


class Engine:
    """Holds the accelerator and runs `fit`. Create it before the models, so that they are placed
    on the right device and the seed is set for everything that follows."""

    def __init__(self, config: Config):
        """`config`: a command's config; the engine reads its `train` part, and its `epochs` part for the length
        of a run without max_steps."""
        self.config = config
        self.output_dir = ensure_output_dir(config)
        trackers = list(config.train.report_to)
        # accelerate keeps one process-wide state and refuses a second Accelerator with another precision;
        # each Engine is one training run, so a run in the same process (a bench, a notebook) starts afresh.
        # The process group (PartialState) is kept.
        AcceleratorState._reset_state()
        self.accelerator = Accelerator(
            # without a GPU, several processes (torchrun / `accelerate launch --multi_gpu`) talk over gloo
            cpu=not torch.cuda.is_available(),
            # our schedule counts optimizer steps of the global batch: one scheduler step each
            step_scheduler_with_optimizer=False,
            mixed_precision=resolve_mixed_precision(config.train.mixed_precision),
            log_with=trackers or None,
            project_dir=str(self.output_dir),
        )
        if trackers:
            self.accelerator.init_trackers("frugalign", config={k: redact(str(v)) for k, v in to_dict(config).items()})
        set_seed(config.train.seed)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def print(self, *args) -> None:
        if self.is_main:
            console.print(*args)

    def unwrap(self, model):
        return self.accelerator.unwrap_model(model)

    def shard(self, rows: list) -> list:
        """This process's share of rows that are not trained on (evaluation, precomputation)."""
        return rows[self.accelerator.process_index :: self.accelerator.num_processes]

    # ---- data order -------------------------------------------------------------------------
    def micro_batch_size(self, n_rows: int) -> int:
        return micro_batch_size(self.config.train, n_rows, self.accelerator.num_processes)

    def global_batch_size(self, n_rows: int) -> int:
        c = self.config.train
        return self.micro_batch_size(n_rows) * c.gradient_accumulation_steps * self.accelerator.num_processes

    def steps_per_epoch(self, n_rows: int) -> int:
        return max(1, math.ceil(n_rows / self.global_batch_size(n_rows)))

    def total_steps(self, n_rows: int) -> int:
        c = self.config.train
        return c.max_steps if c.max_steps > 0 else self.steps_per_epoch(n_rows) * self.config.epochs.num_epochs

    def micro_batches(self, n_rows: int, step: int) -> list[list[int]]:
        """Row indices of this process's micro-batches for optimizer step `step`."""
        c = self.config.train
        per_epoch = self.steps_per_epoch(n_rows)
        epoch, within = divmod(step, per_epoch)
        order = torch.randperm(n_rows, generator=torch.Generator().manual_seed(c.seed + epoch)).tolist()
        g, b = self.global_batch_size(n_rows), self.micro_batch_size(n_rows)
        need = (within + 1) * g
        while len(order) < need:  # fill the epoch's last batch from its own start
            order = order + order
        batch = order[within * g : need]
        share = b * c.gradient_accumulation_steps
        mine = batch[self.accelerator.process_index * share : (self.accelerator.process_index + 1) * share]
        return [mine[i : i + b] for i in range(0, share, b)]

    # ---- training -----------------------------------------------------------------------------
    def make_optimizer(self, model) -> torch.optim.Optimizer:
        c = self.config.train
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise UserError("the model has no trainable parameters")
        if c.optimizer == "rmsprop":
            return torch.optim.RMSprop(params, lr=c.learning_rate, weight_decay=c.weight_decay)
        return torch.optim.AdamW(params, lr=c.learning_rate, weight_decay=c.weight_decay)

    def fit(
        self,
        model,
        rows: list[dict],
        step_fn: StepFn,
        eval_fn: EvalFn | None = None,
        description: str = "training",
        epochs: int | None = None,
        eval_steps: int = 0,
    ) -> tuple[object, TrainResult]:
        """Train `model` on `rows` with `step_fn`; returns the prepared model and a summary. `epochs`: passes over
        `rows` in place of the config's num_epochs or max_steps (a run that trains in rounds: adpo's apl mode).
        `eval_fn` runs every `eval_steps` steps (0: never) and at the end; the commands that hold rows out pass
        their eval_steps option, the benches the spacing of their curve's points.

        `step_fn` gets the prepared model and the rows of one micro-batch and returns the micro-batch loss and metrics;
        metrics are averaged over micro-batches and processes before they are logged."""
        c = self.config.train
        if not rows:
            raise UserError("no training rows")
        if c.gradient_checkpointing:
            # transformers 5.24 renamed it (the old name warns); older releases, which we support, lack the new one
            if hasattr(model, "activation_checkpointing_enable"):
                model.activation_checkpointing_enable()
            else:
                model.gradient_checkpointing_enable()
            model.config.use_cache = False
        if c.trainable_layers > 0:
            train_only_top_blocks(model, c.trainable_layers)
        if c.disable_dropout:
            disable_dropout(model)
        total = self.total_steps(len(rows)) if epochs is None else self.steps_per_epoch(len(rows)) * epochs
        optimizer = self.make_optimizer(model)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(c.lr_scheduler, int(c.warmup_ratio * total), total)
        )
        model, optimizer, scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        start = self._maybe_resume()
        model.train()

        metrics_file = self.output_dir / "metrics.jsonl"
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        self.print(
            f"[bold]{description}[/]: {len(rows)} rows, {total} steps of {self.global_batch_size(len(rows))} rows"
            f" ({self.accelerator.num_processes} process(es), device {self.device},"
            f" precision {self.accelerator.mixed_precision})" + (f", resuming at step {start}" if start else "")
        )
        began = time.perf_counter()
        last: dict[str, float] = {}
        totals: dict[str, float] = {}
        eval_metrics: dict[str, float] = {}
        with self._progress() as progress:
            task = progress.add_task(description, total=total, completed=start, start=start, info="")
            for step in range(start, total):
                step_began = time.perf_counter()
                try:
                    last = self._optimizer_step(model, optimizer, scheduler, rows, step, step_fn)
                except UserError:
                    # e.g. an annotator that keeps failing: keep the progress so far, then report
                    optimizer.zero_grad(set_to_none=True)
                    if step > start:
                        self.save_checkpoint(step)
                    raise
                last["lr"] = scheduler.get_last_lr()[0]
                last["step_seconds"] = time.perf_counter() - step_began
                for key, value in last.items():
                    totals[key] = totals.get(key, 0.0) + value
                done = step + 1
                if eval_fn is not None and eval_steps > 0 and done % eval_steps == 0 and done < total:
                    eval_metrics = self._evaluate(model, eval_fn)
                    last.update(eval_metrics)
                if done % c.logging_steps == 0 or done == total:
                    self._log(metrics_file, done, last)
                    if self.is_main:
                        progress_line(description, done, total, time.perf_counter() - began, start, _short(last))
                progress.update(task, advance=1, info=_short(last))
                if c.save_steps > 0 and done % c.save_steps == 0 and done < total:
                    self.save_checkpoint(done)
        if eval_fn is not None:
            eval_metrics = self._evaluate(model, eval_fn)
            self._log(metrics_file, total, eval_metrics)
        if c.save_final_checkpoint:
            self.save_checkpoint(total)
        seconds = time.perf_counter() - began
        means = {k: v / max(1, total - start) for k, v in totals.items()}
        return model, TrainResult(steps=total, seconds=seconds, last_metrics=last, eval_metrics=eval_metrics,
                                  mean_metrics=means, total_metrics=totals)

    def _optimizer_step(self, model, optimizer, scheduler, rows, step, step_fn) -> dict[str, float]:
        c = self.config.train
        micro = self.micro_batches(len(rows), step)
        sums: dict[str, float] = {}
        for i, indices in enumerate(micro):
            last_micro = i == len(micro) - 1
            # gradients are all-reduced once per optimizer step, on the last micro-batch
            sync = contextlib.nullcontext() if last_micro else self.accelerator.no_sync(model)
            with sync:
                loss, metrics = step_fn(model, [rows[j] for j in indices])
                self.accelerator.backward(loss / len(micro))
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + float(value)
        means = {k: v / len(micro) for k, v in sums.items()}
        if c.max_grad_norm > 0:
            # the norm of the all-reduced gradient, so the same on every process
            means["grad_norm"] = float(self.accelerator.clip_grad_norm_(model.parameters(), c.max_grad_norm))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return self._mean_over_processes(means)

    def _mean_over_processes(self, metrics: dict[str, float]) -> dict[str, float]:
        if self.accelerator.num_processes == 1 or not metrics:
            return metrics
        keys = sorted(metrics)
        values = torch.tensor([metrics[k] for k in keys], device=self.device, dtype=torch.float64)
        values = self.accelerator.reduce(values, reduction="mean")
        return dict(zip(keys, values.tolist()))

    def _evaluate(self, model, eval_fn: EvalFn) -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            metrics = eval_fn(model)
        model.train()
        return {f"eval/{k}": v for k, v in self._mean_over_processes(metrics).items()}

    def _log(self, path: Path, step: int, metrics: dict[str, float]) -> None:
        if self.config.train.report_to:
            self.accelerator.log(metrics, step=step)
        if self.is_main:
            with path.open("a") as f:
                f.write(json.dumps({"step": step, **metrics}) + "\n")

    def _progress(self) -> Progress:
        return progress_bar(TextColumn("{task.fields[info]}"), disable=not self.is_main)

    # ---- checkpoints ------------------------------------------------------------------------------
    def checkpoint_dir(self, step: int) -> Path:
        return self.output_dir / "checkpoints" / f"step-{step:08d}"

    def save_checkpoint(self, step: int) -> None:
        """Model, optimizer, scheduler and every RNG state (accelerate), plus the step counter;
        the step file is written last, so a checkpoint without it is incomplete and ignored."""
        path = self.checkpoint_dir(step)
        self.accelerator.save_state(str(path))
        self.accelerator.wait_for_everyone()
        if self.is_main:
            (path / "frugalign_state.json").write_text(json.dumps({"step": step}))
            # Keep this checkpoint and the newest earlier ones. One with a later step cannot be this run's
            # (steps only grow): it would pass for its latest on --resume, so it goes too.
            earlier = [p for p in self.checkpoints() if checkpoint_step(p) < step]
            keep = set(earlier[max(0, len(earlier) - self.config.train.save_total_limit + 1):]) | {path}
            for old in self.checkpoints():
                if old not in keep:
                    shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, by step number."""
        root = self.output_dir / "checkpoints"
        if not root.is_dir():
            return []
        return sorted((p for p in root.iterdir() if (p / "frugalign_state.json").exists()), key=checkpoint_step)

    def latest_checkpoint(self) -> Path | None:
        complete = self.checkpoints()
        return complete[-1] if complete else None

    def _maybe_resume(self) -> int:
        if not self.config.train.resume:
            return 0
        path = self.latest_checkpoint()
        if path is None:
            self.print(f"[yellow]--resume: no checkpoint in {self.output_dir}, starting from step 0[/]")
            return 0
        self.accelerator.load_state(str(path))
        return json.loads((path / "frugalign_state.json").read_text())["step"]

    def save_model(self, model, tokenizer, path: str | Path | None = None) -> Path:
        """The final model (or LoRA adapter) and tokenizer, loadable with `from_pretrained`."""
        path = Path(path or self.output_dir / "model")
        self.accelerator.wait_for_everyone()
        if self.is_main:
            self.unwrap(model).save_pretrained(path, safe_serialization=True)
            tokenizer.save_pretrained(path)
        self.accelerator.wait_for_everyone()
        return path

    def end(self) -> None:
        if self.config.train.report_to:
            self.accelerator.end_training()


def transformer_blocks(model) -> torch.nn.ModuleList:
    """The model's stack of transformer blocks: the module list with one entry per hidden layer."""
    count = model.config.num_hidden_layers
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    raise UserError(f"{type(model).__name__}: no list of {count} transformer blocks found; use trainable_layers 0")


DROPOUT_NUMBERS = ("attention_dropout", "dropout", "activation_dropout")  # applied as numbers, not as modules


def disable_dropout(model) -> None:
    """Every dropout probability of `model` set to 0: its `nn.Dropout` modules, and the dropouts that
    transformers' modules apply as numbers (Llama's `attention_dropout`, BART's `dropout`, ...)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name in DROPOUT_NUMBERS:
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)


def train_only_top_blocks(model, n: int) -> None:
    """Freeze every parameter outside the last `n` transformer blocks. It only ever freezes: under LoRA the
    top blocks' adapters keep training and their base weights stay frozen."""
    blocks = transformer_blocks(model)
    if n > len(blocks):
        raise UserError(f"trainable_layers={n}, but the model has {len(blocks)} transformer blocks")
    keep = {id(p) for block in list(blocks)[len(blocks) - n:] for p in block.parameters()}
    for p in model.parameters():
        if id(p) not in keep:
            p.requires_grad_(False)


def checkpoint_step(path: Path) -> int:
    return json.loads((path / "frugalign_state.json").read_text())["step"]


def _short(metrics: dict[str, float]) -> str:
    keys = [k for k in ("loss", "rewards/accuracies", "eval/loss") if k in metrics]
    return " ".join(f"{k}={metrics[k]:.4f}" for k in keys)

