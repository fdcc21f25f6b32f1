"""The options of every training command, apart from the code that trains: `frugalign COMMAND --help`
builds its flags from these dataclasses without loading torch or transformers (see cli.py).

A command's config is composed of the parts it reads and nothing else (tests/test_config_reads.py runs
every command and checks that each option it offers is read): `DPOConfig(train=TrainOptions(learning_rate=5e-7),
loss=DPOLossOptions(beta=0.1))`, read as `config.train.learning_rate`. A command's own options are a part of its
own. The options stay flat for users: one YAML key and one flag per option, `learning_rate:` and
`--learning-rate` whichever part holds it (frugalign.config)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Literal

from frugalign.config import Config, Options, option, part
from frugalign.errors import UserError

GenerationBackend = Literal["auto", "hf", "vllm"]


# ---- the parts ----


@dataclass
class TrainOptions(Options):
    """Options of the training engine, shared by every training command."""

    output_dir: str | None = option(None, "the run's folder: checkpoints, metrics.jsonl, config.yaml and the final "
                                          "model (default: runs/<command>-<timestamp>)")
    overwrite: bool = option(False, "clear output_dir first when it holds another run (a label ledger is kept)")
    learning_rate: float = option(1e-6, "peak learning rate")
    optimizer: Literal["adamw", "rmsprop"] = option("adamw", "optimizer (OPTune used RMSprop)")
    weight_decay: float = option(0.0, "decoupled weight decay (AdamW) / L2 (RMSprop)")
    lr_scheduler: Literal["constant", "linear", "cosine"] = option("linear", "decay after warm-up")
    warmup_ratio: float = option(0.1, "fraction of the optimizer steps spent warming up linearly from 0")
    max_steps: int = option(-1, "optimizer steps to run; -1 means num_epochs passes")
    batch_size: int = option(8, "rows per micro-batch on each process")
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step")
    max_grad_norm: float = option(1.0, "clip the gradient norm to this (0 disables clipping)")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = option(
        "auto", "auto: bf16 on a GPU that supports it, fp32 otherwise (never bf16 on a CPU by default)"
    )
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass to save memory")
    trainable_layers: int = option(0, "train only the parameters inside the last N transformer blocks (embeddings, "
                                      "output layer and lower blocks frozen; with LoRA, only their adapters); the "
                                      "backward pass stops at the first of them, about 2x faster per step on a CPU "
                                      "for a quarter of the blocks; 0 trains everything")
    disable_dropout: bool = option(True, "set every dropout of the model to 0 before training, attention dropout "
                                         "included (TRL's DPO default: the implicit reward is the same function of the "
                                         "weights at every step, not a noisy one); false keeps the model's own")
    save_steps: int = option(0, "write a resumable checkpoint every N optimizer steps (0: none)")
    save_final_checkpoint: bool = option(False, "also write a resumable checkpoint at the end (optimizer state "
                                                "included: about 3x the model; the final model is always saved)")
    save_total_limit: int = option(2, "checkpoints to keep (the newest ones)")
    logging_steps: int = option(1, "log metrics every N steps")
    seed: int = option(0, "seed of the data order, initialisation of new layers and sampling")
    resume: bool = option(False, "continue from the newest checkpoint in output_dir")
    report_to: list[str] = option([], "extra trackers: tensorboard, wandb (metrics.jsonl is always written)")

    def validate(self) -> None:
        super().validate()
        if self.trainable_layers < 0:
            raise UserError(f"option trainable_layers must be 0 (all) or a number of blocks, got {self.trainable_layers}")
        for name in ("batch_size", "gradient_accumulation_steps", "logging_steps", "save_total_limit"):
            if getattr(self, name) < 1:
                raise UserError(f"option {name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise UserError(f"option warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.learning_rate <= 0:
            raise UserError(f"option learning_rate must be positive, got {self.learning_rate}")
        for tracker in self.report_to:
            if tracker not in ("tensorboard", "wandb"):
                raise UserError(f"option report_to: unknown tracker '{tracker}' (tensorboard, wandb)")


@dataclass
class EpochOptions(Options):
    """The engine's length of a run without max_steps; of every command but online DPO, whose passes are one
    epoch each (OPTune's Algorithm 1)."""

    num_epochs: int = option(1, "passes over the training rows (ignored when max_steps > 0)")

    def validate(self) -> None:
        super().validate()
        if self.num_epochs < 1:
            raise UserError(f"option num_epochs must be at least 1, got {self.num_epochs}")


@dataclass
class ModelOptions(Options):
    model: str | None = option(None, "hub id or local checkpoint; default: the embedded SmolLM2-135M-Instruct")


@dataclass
class SplitOptions(Options):
    dataset_split: str = option("train", "split of a hub dataset")


@dataclass
class DatasetOptions(SplitOptions):
    dataset: str | None = option(None, "hub dataset name or local JSON/JSONL/Parquet/CSV file")


@dataclass
class HeldOutOptions(Options):
    """The rows a command evaluates on during training."""

    eval_dataset: str | None = option(None, "held-out rows (same format); default: eval_fraction of dataset")
    eval_fraction: float = option(0.0, "fraction of the dataset held out for evaluation when eval_dataset is unset")
    eval_steps: int = option(0, "evaluate on the held-out rows every N steps (0: only at the end)")

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.eval_fraction < 1.0:
            raise UserError(f"option eval_fraction must be in [0, 1), got {self.eval_fraction}")


@dataclass
class LengthOptions(Options):
    """Truncation of the prompts and responses a command tokenizes itself."""

    max_prompt_length: int = option(512, "prompt tokens kept (the end of a longer prompt is kept)")
    max_response_length: int = option(512, "response tokens kept, EOS included (the start is kept)")
    overlong: Literal["truncate", "drop", "error"] = option("truncate", "what to do with rows over the limits")

    def validate(self) -> None:
        super().validate()
        if self.max_prompt_length < 1 or self.max_response_length < 1:
            raise UserError("options max_prompt_length and max_response_length must be at least 1")


@dataclass
class LoRAOptions(Options):
    """LoRA on the policy (`training.common.load_policy`)."""

    lora_r: int = option(0, "LoRA rank; 0 trains all weights")
    lora_alpha: int = option(16, "LoRA scaling numerator")
    lora_dropout: float = option(0.0, "dropout on the LoRA branch (kept only with --disable-dropout false)")
    lora_target_modules: list[str] = option(["q_proj", "k_proj", "v_proj", "o_proj"], "modules LoRA adapts")


@dataclass
class ChatTemplateOptions(Options):
    """Of every command that reads plain-string rows or prompts (the rule: frugalign.data.formats)."""

    chat_template: Literal["auto", "on", "off"] = option(
        "auto", "plain-string rows and prompts: auto: rendered as a user turn and the assistant's answer with the "
                "tokenizer's chat template when it has one (as eval generate and the benches prompt); on: always; "
                "off: raw text (as TRL treats strings)")


@dataclass
class PairLossOptions(Options):
    """The pairwise loss of the commands that train with `training.dpo` (its pair scoring too)."""

    loss: Literal["dpo", "ipo"] = option("dpo", "pairwise loss: dpo (sigmoid) or ipo (squared, length-normalised)")
    beta: float = option(0.1, "strength of the KL regularisation to the reference")
    label_smoothing: float = option(0.0, "conservative DPO: probability that a label is flipped (dpo loss only)")
    shared_prefix: Literal["auto", "on", "off", "flex", "packed"] = option(
        "auto", "on: one row per pair, its prompt computed once (chosen and rejected attend to one copy; a dense "
                "4-D mask); off: padded rows; flex: the rows of on, masked by a FlexAttention BlockMask (the policy is "
                "switched to attn_implementation flex_attention); packed: as flex, with every pair of the micro-batch "
                "back to back in one row (no padding). flex and packed need a GPU: PyTorch has no FlexAttention "
                "backward on the CPU, and they fail at the start there. auto: on, except under bf16/fp16 on a GPU, "
                "where padded rows keep the fused attention kernel and are faster; auto never picks flex or packed, "
                "as they have not been timed on a GPU yet. Either way the output layer runs on response tokens only. "
                "Models that fail the layout's probe (soft-capped logits) always get padded rows with full logits"
    )

    # the losses label smoothing applies to: DPO's, and wDPO's, which weights DPO's per pair
    SMOOTHED: ClassVar[tuple[str, ...]] = ("dpo", "wdpo")

    def validate(self) -> None:
        super().validate()
        if self.beta <= 0:
            raise UserError(f"option beta must be positive, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise UserError(f"option label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if self.label_smoothing and self.loss not in self.SMOOTHED:
            raise UserError("label_smoothing applies to the dpo loss only")


@dataclass
class ReferenceOptions(Options):
    reference: Literal["copy", "precomputed"] = option(
        "copy",
        "copy: a frozen copy of the initial policy (with LoRA: the base model, adapter disabled, no copy); "
        "precomputed: reference log-probs computed in one pass before training and cached to disk",
    )


@dataclass
class SamplingOptions(Options):
    """How the commands that sample from the policy sample."""

    max_new_tokens: int = option(64, "tokens sampled per response")
    temperature: float = option(1.0, "sampling temperature")
    top_p: float = option(1.0, "nucleus sampling")


@dataclass
class GenerationBatchOptions(Options):
    generation_batch_size: int = option(64, "prompts per generate call")


@dataclass
class GenerationBackendOptions(Options):
    """Which engine samples from the policy (`frugalign.generation.open_generator`)."""

    generation_backend: GenerationBackend = option(
        "auto", "hf: Hugging Face generate on the policy; vllm: vLLM in this process, the policy's weights copied in "
        "after every training phase; auto: vllm when it is installed and a GPU is present")
    vllm_gpu_memory_utilization: float = option(0.3, "vLLM: share of the GPU's memory it may take beside training")


@dataclass
class RLOOOptions(Options):
    """RLOO's policy step (`training.rlhf`)."""

    kl_coef: float = option(0.05, "beta: weight of the KL penalty to the reference, per token log-ratio")
    samples_per_prompt: int = option(4, "k: samples per prompt (RLOO's baseline is the mean of the other k-1)")

    def validate(self) -> None:
        super().validate()
        if self.samples_per_prompt < 2:
            raise UserError("option samples_per_prompt must be at least 2 (RLOO's baseline needs another sample)")
        if self.kl_coef < 0:
            raise UserError(f"option kl_coef must be non-negative, got {self.kl_coef}")


@dataclass
class DemonstrationOptions(Options):
    """The iterations of SPIN and AIHF over demonstrations (`training.aihf`)."""

    demonstrations: str | None = option(None, "demonstrations (TRL SFT format: prompt/completion or messages)")
    demonstration_weight: float = option(1.0, "w_D: weight of the (demonstration > sample) pairs")
    iterations: int = option(3, "sample-then-train iterations")

    def validate(self) -> None:
        super().validate()
        if self.iterations < 1:
            raise UserError(f"option iterations must be at least 1, got {self.iterations}")
        if self.demonstration_weight < 0:
            raise UserError("option demonstration_weight must be non-negative")


# ---- the parts of one command ----


@dataclass
class DPOLossOptions(PairLossOptions):
    """`frugalign dpo`'s loss: the pairwise losses, and those that need no reference model."""

    loss: Literal["dpo", "ipo", "simpo", "orpo"] = option(
        "dpo", "pairwise loss: dpo (sigmoid), ipo (squared, length-normalised); without a reference model: simpo "
               "(length-normalised, target margin --simpo-gamma), orpo (NLL of the chosen response + odds ratio)")
    beta: float = option(0.1, "dpo, ipo: strength of the KL regularisation to the reference; simpo: the reward "
                              "scale (its paper: 2 to 2.5); orpo: lambda, the weight of the odds-ratio term (0.1)")
    simpo_gamma: float = option(0.5, "simpo: the target reward margin gamma (its paper: about half of beta)")


@dataclass
class KTOLossOptions(Options):
    """KTO's loss (`recipes.kto`)."""

    beta: float = option(0.1, "strength of the KL regularisation to the reference")
    desirable_weight: float = option(1.0, "w_D: weight of the desirable rows' losses (TRL's desirable_weight)")
    undesirable_weight: float = option(1.0, "w_U: weight of the undesirable rows' losses (TRL's undesirable_weight)")

    def validate(self) -> None:
        super().validate()
        if self.beta <= 0:
            raise UserError(f"option beta must be positive, got {self.beta}")
        if self.desirable_weight < 0 or self.undesirable_weight < 0:
            raise UserError("options desirable_weight and undesirable_weight must be non-negative")


@dataclass
class RewardOptions(Options):
    """The reward model's own options (`training.reward`)."""

    max_length: int = option(512, "tokens of prompt + response seen by the reward model (longer: truncated)")
    centering: float = option(0.0, "coefficient c of the centring penalty c * (r_w + r_l)^2 (about 1e-2 keeps "
                                   "rewards near zero)")


@dataclass
class RLHFOptions(Options):
    """`frugalign rlhf`'s own option: the reward it maximises."""

    reward_model: str | None = option(None, "the reward model scoring samples (a `frugalign reward` checkpoint)")


@dataclass
class OnlineLossOptions(PairLossOptions):
    """Online DPO's loss (beta is wDPO's beta1)."""

    loss: Literal["dpo", "ipo", "wdpo"] = option("dpo", "pairwise loss; wdpo: DPO weighted by sigma(beta2 * reward gap)")
    beta2: float = option(1.0, "wDPO: scale of the reward gap in the pair weight")


@dataclass
class OnlineOptions(Options):
    """Online DPO's iterations: which prompts are regenerated, how, and which pairs are trained on."""

    iterations: int = option(3, "generate-score-train iterations")
    rho: float = option(1.0, "fraction of prompts regenerated per iteration after the first")
    selection: Literal["optune", "gap", "stale", "mixed", "random", "all"] = option(
        "optune", "which prompts are regenerated after the first iteration: optune (lowest chosen reward, the "
        "paper's rule), gap (smallest chosen-rejected reward gap), stale (oldest pairs first), mixed (lowest reward "
        "plus a --random-share drawn at random), random, all")
    random_share: float = option(0.5, "selection mixed: share of the regenerated prompts drawn at random")
    samples_per_prompt: int = option(2, "responses sampled per regenerated prompt (best vs worst)")
    train_pairs: Literal["all", "regenerated"] = option(
        "all", "pairs trained on per iteration: all (every prompt's current pair, OPTune's Algorithm 1) or "
        "regenerated (only this iteration's new pairs: no retraining on stale pairs, training time falls with rho)")
    reward_model: str | None = option(None, "reward model that scores the samples (a `frugalign reward` output)")

    def validate(self) -> None:
        super().validate()
        if self.iterations < 1:
            raise UserError(f"option iterations must be at least 1, got {self.iterations}")
        if not 0.0 < self.rho <= 1.0:
            raise UserError(f"option rho must be in (0, 1], got {self.rho}")
        if not 0.0 <= self.random_share <= 1.0:
            raise UserError(f"option random_share must be in [0, 1], got {self.random_share}")
        if self.samples_per_prompt < 2:
            raise UserError("option samples_per_prompt must be at least 2 (a pair)")


@dataclass
class ActiveOptions(Options):
    """Which pairs ADPO asks about and which it pseudo-labels (`recipes.adpo`). Its confidence is the implicit
    reward margin against the reference (computed live): the losses that have one."""

    mode: Literal["adpo", "adpo-nopl", "dpo", "random-onepass", "random", "apl"] = option(
        "adpo", "adpo: pseudo-label confident pairs; adpo-nopl: skip them; dpo: ask every pair; random-onepass: ask "
                "a uniformly random subset of max_queries pairs, skip the rest, in the same pass over the pool "
                "(ADPO's like-for-like baseline); "
                "apl: buy max_queries labels in rounds, the pairs of the prompts the policy is least sure of whose "
                "preference it is most sure of (APL), DPO on all labels so far after each round; random: the same "
                "rounds, buying uniformly random pairs (APL's like-for-like baseline)"
    )
    gamma: float = option(1.3, "confidence threshold on |beta * (u(a) - u(b))| above which no query is made")
    max_queries: int = option(-1, "query budget of this run (-1: unlimited); once spent, uncertain pairs are skipped")
    acquisition_batch_size: int = option(32, "apl, random: labels bought per round")
    apl_oversample: float = option(
        2.0, "apl: the candidates of a round are the acquisition_batch_size * this unlabelled pairs of the "
             "highest-entropy prompts; it buys the most certain of them (1: entropy alone decides)")
    apl_epochs_per_round: int = option(
        1, "apl, random: epochs of DPO on every label bought so far after each round's purchase, continuing from the current "
           "policy; after the last purchase, num_epochs")
    audit_rate: float = option(
        0.1, "adpo: once the confidence is trusted, the share of confident pairs still asked, to notice when it stops "
             "deserving trust (0: no audits; every confident pair is pseudo-labelled, as in the paper)"
    )
    audit_window: int = option(
        30, "adpo: the latest answered audits that decide trust; until the confidence is trusted, every confident pair "
            "is audited, up to this many audits")
    min_agreement: float = option(
        0.75, "adpo: pseudo-label only while the lower end of the one-sided 95% Wilson interval of the audits' "
              "agreement with the policy reaches this (11 agreements of 11 give 0.80): a policy can be confidently wrong"
    )
    trust_by_confidence: bool = option(
        False, "adpo: judge trust per level of confidence: pseudo-label only the pairs at or above the lowest |m| "
               "whose audits reach min_agreement, skip the confident ones below it (a policy can be right when very "
               "sure and wrong when a little sure)"
    )
    query_warmup: int = option(
        0, "labels this run must have before its confidence is trusted: until then every pair is asked (a policy "
           "a few steps from its reference can be confidently wrong)"
    )

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.audit_rate <= 1.0 or not 0.0 <= self.min_agreement <= 1.0:
            raise UserError("options audit_rate and min_agreement must lie in [0, 1]")
        if self.audit_window < 1:
            raise UserError(f"option audit_window must be at least 1, got {self.audit_window}")
        if self.gamma < 0:
            raise UserError(f"option gamma must be non-negative, got {self.gamma}")
        budgeted = self.mode in ("apl", "random", "random-onepass")  # modes that buy exactly max_queries labels
        if budgeted and self.max_queries == 0:
            raise UserError(f"mode {self.mode} with max_queries 0 buys no label and has nothing to train on")
        if budgeted and self.max_queries < 0:
            raise UserError(f"mode {self.mode} needs a budget: set max_queries (e.g. the number an adpo run used)")
        if self.acquisition_batch_size < 1 or self.apl_epochs_per_round < 1 or self.apl_oversample < 1:
            raise UserError("options acquisition_batch_size and apl_epochs_per_round must be at least 1, "
                            "apl_oversample at least 1.0")


@dataclass
class AnnotatorOptions(Options):
    """Who answers ADPO's queries, and the ledger that keeps the answers."""

    ledger: str | None = option(None, "label ledger: an SQLite file (default: OUTPUT_DIR/labels.sqlite), or a "
                                      "postgresql://user:password@host/db URL shared by several machines")
    ledger_shared: bool = option(False, "allow a ledger that already holds labels of another dataset")
    annotator: Literal["stored", "reward-model", "llm-judge", "human"] = option(
        "stored", "stored: the dataset's own labels, hidden until asked (needs chosen/rejected rows); "
                  "reward-model: --reward-model scores; llm-judge: --judge-url/--judge-model; human: the annotation app"
    )
    reward_model: str | None = option(None, "reward model for --annotator reward-model (default: embedded MiniLM)")
    serve: str | None = option(None, "with --annotator human: serve the annotation app at HOST:PORT during the run, on "
                                     "its ledger (or run `frugalign annotate serve --db LEDGER` yourself)")
    serve_instructions: str | None = option(None, "with --serve: the annotators' guidelines, a Markdown file shown "
                                                  "at the top of the annotation page")
    judge_url: str | None = option(None, "OpenAI-compatible base URL for --annotator llm-judge")
    judge_model: str | None = option(
        None, "model name sent to the judge endpoint (default: the server's model, when it serves exactly one)")
    judge_verdict: Literal["text", "logprobs"] = option(
        "text", "text: the judge writes a reason and 'Answer: A|B|tie', parsed; logprobs: one token, the "
                "probability of A against B among its top log-probabilities (needs a server that returns them)")
    judge_concurrency: int = option(4, "judge requests in flight at once")
    judge_max_retries: int = option(4, "retries of a failed or unparsable judge request (exponential backoff)")
    judge_timeout: float = option(30.0, "seconds before a judge request times out")


    def validate(self) -> None:
        super().validate()
        if self.serve is not None and (self.annotator != "human" or not re.fullmatch(r"[\w.\-]+:\d+", self.serve)):
            raise UserError(f"--serve {self.serve!r}: needs --annotator human and the form HOST:PORT")
        if self.serve_instructions is not None and self.serve is None:
            raise UserError("--serve-instructions needs --serve (the page it is shown on)")
        if self.annotator == "llm-judge" and not self.judge_url:
            raise UserError("--annotator llm-judge needs --judge-url (an OpenAI-compatible endpoint)")


@dataclass
class AIHFOptions(Options):
    """`frugalign aihf`'s own options: its variant, and the weight and reward model of its preferences."""

    variant: Literal["explicit", "dpo", "self-play"] = option(
        "dpo", "explicit: a reward model and RLOO policy steps; dpo: lambda*DPO(P) + DPO(y_E vs samples); "
               "self-play: lambda*DPO(P) + SPIN(demonstrations)")
    preference_weight: float = option(1.0, "lambda (dpo, self-play) or w_P (explicit): weight of preference pairs")
    reward_model: str | None = option(None, "explicit: the reward model to start from (default: the embedded MiniLM)")
    reward_learning_rate: float = option(5e-5, "explicit: reward model learning rate")

    def validate(self) -> None:
        super().validate()
        if self.preference_weight < 0:
            raise UserError("option preference_weight must be non-negative")


# ---- the commands ----
# The parts are listed in the order `--help` lists their options.


@dataclass
class SFTConfig(Config):
    """`frugalign sft`: fine-tune on (prompt, completion) or `messages` rows."""

    chat: ChatTemplateOptions = part(ChatTemplateOptions)
    lora: LoRAOptions = part(LoRAOptions)
    length: LengthOptions = part(LengthOptions)
    eval: HeldOutOptions = part(HeldOutOptions)
    data: DatasetOptions = part(DatasetOptions)
    model: ModelOptions = part(ModelOptions)
    epochs: EpochOptions = part(EpochOptions)
    train: TrainOptions = part(TrainOptions)


@dataclass
class DPOConfig(Config):
    """`frugalign dpo`: preference optimisation on (prompt, chosen, rejected[, weight]) rows."""

    reference: ReferenceOptions = part(ReferenceOptions)
    loss: DPOLossOptions = part(DPOLossOptions)
    chat: ChatTemplateOptions = part(ChatTemplateOptions)
    lora: LoRAOptions = part(LoRAOptions)
    length: LengthOptions = part(LengthOptions)
    eval: HeldOutOptions = part(HeldOutOptions)
    data: DatasetOptions = part(DatasetOptions)
    model: ModelOptions = part(ModelOptions)
    epochs: EpochOptions = part(EpochOptions)
    train: TrainOptions = part(TrainOptions)

    def validate(self) -> None:
        super().validate()
        if self.loss.loss in ("simpo", "orpo") and self.reference.reference == "precomputed":
            raise UserError(f"loss {self.loss.loss} uses no reference model: --reference precomputed does not apply")


@dataclass
class KTOConfig(Config):
    """`frugalign kto`: KTO on unpaired (prompt, completion, label) rows; (prompt, chosen, rejected) rows are
    split into a desirable and an undesirable row. The reference is a frozen copy of the initial policy (with
    LoRA: the base model, adapter disabled)."""

    chat: ChatTemplateOptions = part(ChatTemplateOptions)
    lora: LoRAOptions = part(LoRAOptions)
    length: LengthOptions = part(LengthOptions)
    eval: HeldOutOptions = part(HeldOutOptions)
    data: DatasetOptions = part(DatasetOptions)
    model: ModelOptions = part(ModelOptions)
    epochs: EpochOptions = part(EpochOptions)
    train: TrainOptions = part(TrainOptions)
    loss: KTOLossOptions = part(KTOLossOptions)

    def validate(self) -> None:
        super().validate()
        if self.train.batch_size < 2:
            raise UserError("kto needs batch_size >= 2: its KL estimate pairs each prompt with another row's "
                            "completion of the micro-batch")


@dataclass
class RewardConfig(Config):
    """`frugalign reward`: a reward model from (prompt, chosen, rejected[, margin, weight]) rows. With no
    --model, the embedded all-MiniLM-L6-v2 encoder with a new scalar head."""

    eval: HeldOutOptions = part(HeldOutOptions)
    data: DatasetOptions = part(DatasetOptions)
    model: ModelOptions = part(ModelOptions)
    epochs: EpochOptions = part(EpochOptions)
    train: TrainOptions = part(TrainOptions, learning_rate=2e-5)
    reward: RewardOptions = part(RewardOptions)


@dataclass
class RLHFConfig(Config):
    """`frugalign rlhf`: RLOO with a per-token KL penalty against a reward model, on `prompt` rows."""

    rloo: RLOOOptions = part(RLOOOptions)
    backend: GenerationBackendOptions = part(GenerationBackendOptions)
    sampling: SamplingOptions = part(SamplingOptions, help={
        "top_p": "nucleus sampling (1: the policy's own distribution, as the gradient assumes)"})
    chat: ChatTemplateOptions = part(ChatTemplateOptions)
    lora: LoRAOptions = part(LoRAOptions)
    data: DatasetOptions = part(DatasetOptions)
    model: ModelOptions = part(ModelOptions)
    epochs: EpochOptions = part(EpochOptions)
    train: TrainOptions = part(TrainOptions)
    rlhf: RLHFOptions = part(RLHFOptions)


@dataclass
class OnlineConfig(Config):
    """`frugalign online`: iterative online DPO on `prompt` rows (beta is wDPO's beta1)."""

    backend: GenerationBackendOptions = part(GenerationBackendOptions)
    generation: GenerationBatchOptions = part(GenerationBatchOptions, help={
        "generation_batch_size": "prompts per generate call (and per journal entry)"})
    sampling: SamplingOptions = part(SamplingOptions, top_p=0.9, help={"temperature": "sampling temperature (0: greedy)"})
    reference: ReferenceOptions = part(ReferenceOptions)
    loss: OnlineLossOptions = part(OnlineLossOptions)
    chat: ChatTemplateOptions = part(ChatTemplateOptions)
    length: LengthOptions = part(LengthOptions)
    data: DatasetOptions = part(DatasetOptions)
    model: ModelOptions = part(ModelOptions)
    train: TrainOptions = part(TrainOptions)
    online: OnlineOptions = part(OnlineOptions)


@dataclass
class ADPOConfig(Config):
    """`frugalign adpo`: DPO that asks the annotator only about the pairs the policy is unsure of."""

    loss: PairLossOptions = part(PairLossOptions)
    lora: LoRAOptions = part(LoRAOptions)
    length: LengthOptions = part(LengthOptions)
    data: DatasetOptions = part(DatasetOptions)
    model: ModelOptions = part(ModelOptions)
    epochs: EpochOptions = part(EpochOptions)
    train: TrainOptions = part(TrainOptions)
    active: ActiveOptions = part(ActiveOptions)
    labels: AnnotatorOptions = part(AnnotatorOptions)

    def validate(self) -> None:
        super().validate()
        t = self.train
        if self.active.mode in ("apl", "random") and (t.max_steps > 0 or t.save_steps > 0 or t.save_final_checkpoint):
            raise UserError(f"mode {self.active.mode} trains in rounds of epochs and keeps no checkpoints: --max-steps, "
                            "--save-steps and --save-final-checkpoint do not apply (--resume buys nothing twice: it "
                            "reuses the ledger)")


@dataclass
class AIHFConfig(Config):
    """`frugalign aihf`: demonstrations (--demonstrations) and preferences (--dataset) together."""

    rloo: RLOOOptions = part(RLOOOptions, help={
        "kl_coef": "explicit: KL penalty of the policy step (per-token log-ratio to the reference)",
        "samples_per_prompt": "explicit: RLOO samples per prompt in the policy step"})
    demos: DemonstrationOptions = part(DemonstrationOptions)
    backend: GenerationBackendOptions = part(GenerationBackendOptions)
    generation: GenerationBatchOptions = part(GenerationBatchOptions)
    sampling: SamplingOptions = part(SamplingOptions)
    loss: PairLossOptions = part(PairLossOptions)
    chat: ChatTemplateOptions = part(ChatTemplateOptions)
    length: LengthOptions = part(LengthOptions)
    data: DatasetOptions = part(DatasetOptions)
    model: ModelOptions = part(ModelOptions)
    epochs: EpochOptions = part(EpochOptions)
    train: TrainOptions = part(TrainOptions)
    aihf: AIHFOptions = part(AIHFOptions)

    @property
    def variant(self) -> str:
        return self.aihf.variant


@dataclass
class SPINConfig(Config):
    """`frugalign spin`: iterations of DPO of demonstrations (--demonstrations) against the previous iterate's
    samples, that iterate being the reference."""

    demos: DemonstrationOptions = part(DemonstrationOptions)
    backend: GenerationBackendOptions = part(GenerationBackendOptions)
    generation: GenerationBatchOptions = part(GenerationBatchOptions)
    sampling: SamplingOptions = part(SamplingOptions)
    loss: PairLossOptions = part(PairLossOptions)
    chat: ChatTemplateOptions = part(ChatTemplateOptions)
    length: LengthOptions = part(LengthOptions)
    data: SplitOptions = part(SplitOptions)
    model: ModelOptions = part(ModelOptions)
    epochs: EpochOptions = part(EpochOptions)
    train: TrainOptions = part(TrainOptions)

    variant: ClassVar[str] = "self-play"  # SPIN is AIHF's self-play form without preferences (training.aihf)
