"""A training command offers only the options it reads. Each command runs end to end on tiny data while the parts
of its config record which of their options are read: outside `validate` (checking an option is not using it), the
copying of a part (dataclasses' `replace` and `asdict`: a part with a few values changed, config.yaml); a read of a
part the command hands to a trainer it runs (AIHF's DPO step, online DPO's passes) counts, and so does a read of a
copy of one of its parts (`dataclasses.replace`) when the value came from the command's part. The runs cover the
branches that read options; every flag of `frugalign COMMAND --help` must have been read by one of them."""

import argparse
import contextlib
import dataclasses
import io
import json
import sys
from pathlib import Path

import pytest

from frugalign import cli
from frugalign.config import Config, Options
from tests.conftest import preference_rows

# read only where a person answers (the annotation app a run serves): checked in the recipe's source instead
NEEDS_A_PERSON = {"adpo": {"labels.serve", "labels.serve_instructions"}}


class Reads:
    """The options of the command's config read during a run."""

    def __init__(self, monkeypatch):
        self.root = {}  # id(part) -> part, of the command's config as the CLI hands it to prepare_run_dir
        self.derived = {}  # id(copy of a part) -> (the part it came from, it, the options whose values it took)
        self.names: set[str] = set()
        self.fields: dict[type, set[str]] = {}
        reads = self

        def getattribute(obj, name):
            value = object.__getattribute__(obj, name)
            if name in reads.fields_of(type(obj)) and not quiet():
                reads.record(obj, name)
            return value

        replace = dataclasses.replace

        def tracked_replace(obj, /, **changes):
            made = replace(obj, **changes)
            if isinstance(obj, Options):
                reads.derived[id(made)] = (obj, made, reads.fields_of(type(obj)) - changes.keys())
            return made

        prepare = cli.prepare_run_dir

        def tracked_prepare(config, command, argv):
            parts = [getattr(config, f.name) for f in dataclasses.fields(config)]
            reads.root = {id(part): part for part in parts}
            return prepare(config, command, argv)

        monkeypatch.setattr(Options, "__getattribute__", getattribute)
        monkeypatch.setattr(dataclasses, "replace", tracked_replace)
        monkeypatch.setattr(cli, "prepare_run_dir", tracked_prepare)

    def fields_of(self, cls) -> set[str]:
        if cls not in self.fields:
            self.fields[cls] = {f.name for f in dataclasses.fields(cls)}
        return self.fields[cls]

    def record(self, obj, name: str) -> None:
        node = obj
        while id(node) not in self.root:
            link = self.derived.get(id(node))
            if link is None or name not in link[2]:
                return  # a part of its own (a bench's, a default the command did not give)
            node = link[0]
        self.names.add(name)


def quiet() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        code = frame.f_code
        if code.co_filename == dataclasses.__file__:
            return True
        if code.co_name == "validate" and isinstance(frame.f_locals.get("self"), (Config, Options)):
            return True
        frame = frame.f_back
    return False


def offered(command: str) -> set[str]:
    """The options of `frugalign COMMAND --help` (the YAML file aside), as config field names."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        sub.parse_known_args(["--help"])  # the flags are added when the command is chosen
    return {a.dest for a in sub._actions if a.option_strings and a.dest not in ("help", "config")}


def training_commands() -> set[str]:
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    return {name for name, sub in commands.items() if sub._setup is not None
            and sub._setup.__qualname__.startswith("_train_command")}


def write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory, tokenizer):
    import torch
    from transformers import LlamaForSequenceClassification

    from frugalign import models

    d = tmp_path_factory.mktemp("reads")
    rm = d / "rm"
    torch.manual_seed(0)
    LlamaForSequenceClassification(models.tiny_llama_config(len(tokenizer), num_labels=1,
                                                             pad_token_id=tokenizer.pad_token_id)).save_pretrained(rm)
    tokenizer.save_pretrained(rm)
    pairs = preference_rows(8)
    return {
        "pairs": write(d / "pairs.jsonl", pairs),
        "held": write(d / "held.jsonl", preference_rows(4, seed=1)),
        "demos": write(d / "demos.jsonl", [{"prompt": r["prompt"], "completion": r["chosen"]} for r in pairs]),
        "prompts": write(d / "prompts.jsonl", [{"prompt": r["prompt"]} for r in pairs]),
        "labelled": write(d / "labelled.jsonl", [{"prompt": r["prompt"], "completion": r[side], "label": side == "chosen"}
                                                 for r in pairs for side in ("chosen", "rejected")]),
        "rm": str(rm),
    }


def runs(f: dict, model: str, judge_url: str) -> dict[str, list[list[str]]]:
    """Per command, the runs that between them take every branch that reads an option."""
    small = ["--model", model, "--batch-size", "2", "--max-prompt-length", "16", "--max-response-length", "8"]
    one_step = [*small, "--max-steps", "1"]
    epochs = [*small, "--num-epochs", "1", "--save-steps", "2"]  # num_epochs counts without max_steps; checkpoints
    sampling = ["--max-new-tokens", "3"]
    rlhf = ["--model", model, "--dataset", f["prompts"], "--reward-model", f["rm"], "--batch-size", "2",
            "--samples-per-prompt", "2", *sampling]
    return {
        "sft": [["--dataset", f["demos"], "--eval-fraction", "0.25", *epochs],
                ["--dataset", f["demos"], "--eval-dataset", f["demos"], "--lora-r", "2", *one_step]],
        "dpo": [["--dataset", f["pairs"], "--eval-fraction", "0.25", *epochs],
                ["--dataset", f["pairs"], "--eval-dataset", f["held"], "--loss", "simpo", "--lora-r", "2", *one_step]],
        "kto": [["--dataset", f["labelled"], "--eval-fraction", "0.25", "--beta", "0.2", "--desirable-weight", "1.5",
                 "--undesirable-weight", "0.5", *epochs],
                ["--dataset", f["pairs"], "--eval-dataset", f["labelled"], "--lora-r", "2", *one_step]],
        "reward": [["--model", f["rm"], "--dataset", f["pairs"], "--eval-fraction", "0.25", "--num-epochs", "1",
                    "--batch-size", "2", "--save-steps", "2"],
                   ["--model", f["rm"], "--dataset", f["pairs"], "--eval-dataset", f["held"], "--max-steps", "1"]],
        "rlhf": [[*rlhf, "--num-epochs", "1", "--save-steps", "2"], [*rlhf, "--max-steps", "1", "--lora-r", "2"]],
        "online": [["--dataset", f["prompts"], "--reward-model", f["rm"], "--iterations", "2", "--rho", "0.5",
                    "--selection", "mixed", "--loss", "wdpo", "--save-steps", "2", *small, *sampling]],
        "adpo": [["--dataset", f["pairs"], *epochs],
                 ["--dataset", f["pairs"], "--mode", "apl", "--max-queries", "4", "--acquisition-batch-size", "2",
                  "--lora-r", "2", *small],
                 ["--dataset", f["pairs"], "--annotator", "reward-model", "--reward-model", f["rm"], *one_step],
                 ["--dataset", f["pairs"], "--annotator", "llm-judge", "--judge-url", judge_url, *one_step]],
        "spin": [["--demonstrations", f["demos"], "--iterations", "1", "--save-steps", "2", *small, *sampling]],
        "aihf": [["--demonstrations", f["demos"], "--dataset", f["pairs"], "--iterations", "1", "--save-steps", "2",
                  *small, *sampling],
                 ["--demonstrations", f["demos"], "--dataset", f["pairs"], "--iterations", "1", "--variant", "explicit",
                  "--reward-model", f["rm"], "--samples-per-prompt", "2", *one_step, *sampling]],
    }


def test_the_runs_cover_every_training_command(tiny_model_dir):
    files = {k: "" for k in ("pairs", "held", "demos", "prompts", "labelled", "rm")}
    assert set(runs(files, "", "")) == training_commands()


@pytest.mark.parametrize("command", ["sft", "dpo", "kto", "reward", "rlhf", "online", "adpo", "spin", "aihf"])
def test_every_option_a_command_offers_is_read_by_a_run_of_it(command, tmp_path, files, tiny_model_dir, vllm_like,
                                                            monkeypatch):
    reads = Reads(monkeypatch)
    for n, argv in enumerate(runs(files, str(tiny_model_dir), vllm_like.url)[command]):
        assert cli.main([command, *argv, "--output-dir", str(tmp_path / f"run{n}")]) == 0, argv
    source = Path(sys.modules[f"frugalign.recipes.{command}"].__file__).read_text()
    elsewhere = {path.split(".")[-1] for path in NEEDS_A_PERSON.get(command, ()) if f"config.{path}" in source}
    assert offered(command) - reads.names - elsewhere == set()


@pytest.mark.parametrize("command, flag", [("reward", ["--lora-r", "16"]), ("spin", ["--variant", "dpo"]),
                                           ("spin", ["--kl-coef", "0.1"]), ("rlhf", ["--eval-fraction", "0.1"]),
                                           ("adpo", ["--simpo-gamma", "1"]), ("online", ["--num-epochs", "2"]),
                                           ("kto", ["--reference", "precomputed"])])
def test_an_option_the_command_never_read_is_unrecognized(command, flag, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main([command, *flag])
    assert exit.value.code == 2 and f"unrecognized arguments: {' '.join(flag)}" in capsys.readouterr().err
