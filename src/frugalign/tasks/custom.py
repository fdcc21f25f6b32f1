"""`custom`: the user's own verifiable task. Prompts from a file (a `prompt` column: text or chat
messages, in any format `--dataset` reads), a gold reward `FUNCTION(prompt, response) -> float` named as
`MODULE:FUNCTION` (an importable module, or a path to a .py file), and any causal LM as the base policy.
So a team can measure what ADPO or OPTune would save on its task before paying for a single label.

Everything is checked before a model loads: the file, every row's prompt, the function's import, and
one call of the function on the first prompt."""

from __future__ import annotations

import importlib
import importlib.util
import random
import sys
from collections.abc import Callable
from pathlib import Path

from frugalign.errors import DataError, UserError
from frugalign.tasks.lm import SETTINGS, LMTaskSpec, gold_value

MAX_NEW_TOKENS = 48


def import_function(target: str) -> Callable:
    """`package.module:function` or `path/to/file.py:function`, checked to be callable."""
    module_name, sep, attribute = target.rpartition(":")
    if not sep or not module_name or not attribute:
        raise UserError(f"--gold-reward {target!r}: expected MODULE:FUNCTION, e.g. my_rewards:score or rewards.py:score")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise UserError(f"--gold-reward {target!r}: {module_name}: file not found")
            spec = importlib.util.spec_from_file_location(f"frugalign_gold_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))  # a module beside the user, as `python -m` would find it
            module = importlib.import_module(module_name)
    except UserError:
        raise
    except Exception as e:  # the user's module: any error while importing it is theirs to see, in one line
        raise UserError(f"--gold-reward {target!r}: the module {module_name} does not import: "
                        f"{type(e).__name__}: {e}") from None
    function = getattr(module, attribute, None)
    if function is None:
        raise UserError(f"--gold-reward {target!r}: {module_name} has no attribute {attribute!r}")
    if not callable(function):
        raise UserError(f"--gold-reward {target!r}: {attribute} is a {type(function).__name__}, not a function")
    return function


def read_prompts(source: str) -> list:
    """The `prompt` of every row: non-empty text, or a non-empty list of {"role", "content"} messages."""
    from frugalign.data import load_rows

    prompts = []
    for number, row in enumerate(load_rows(source), start=1):
        if "prompt" not in row:
            raise DataError(source, f"no 'prompt' column (columns: {', '.join(sorted(row))})", number)
        prompt = row["prompt"]
        if isinstance(prompt, list) and prompt and all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in prompt):
            prompts.append(prompt)
        elif isinstance(prompt, str) and prompt.strip():
            prompts.append(prompt)
        else:
            raise DataError(source, "expected non-empty text or a list of {role, content} messages", number, "prompt")
    return prompts


def spec(prompts_file: str, gold_target: str, seed: int, quick: bool, model: str | None = None,
         eval_fraction: float = 0.2) -> LMTaskSpec:
    """The user's task, split into train and held-out prompts by the seed."""
    if not prompts_file or not gold_target:
        raise UserError("--task custom needs --prompts FILE and --gold-reward MODULE:FUNCTION")
    prompts = read_prompts(prompts_file)
    gold = import_function(gold_target)
    gold_value(gold, prompts[0], "")  # one call before any model loads: a function that fails, fails here
    if len(prompts) < 4:
        raise UserError(f"{prompts_file}: {len(prompts)} prompt(s); --task custom needs at least 4 (train and held out)")
    order = list(prompts)
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(eval_fraction * len(order)))
    train, held = order[n_eval:], order[:n_eval]
    if quick:
        train, held = train[:32], held[:16]
    return LMTaskSpec("custom", model, train, held, gold, max_new_tokens=MAX_NEW_TOKENS, settings=SETTINGS)
