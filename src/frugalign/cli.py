"""The `frugalign` command. Each subcommand parses its typed config (YAML + flags) and calls the
recipe's `run`; a user's mistake is printed as one clear line and exits with status 2."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from frugalign import options  # dataclasses only: the commands' flags, no torch
from frugalign.allocator import keep_freed_memory
from frugalign.errors import UserError
from frugalign.rundir import prepare_run_dir


class _Command(argparse.ArgumentParser):
    """A subcommand's parser that gets its arguments only when it is chosen, so that `frugalign --help` imports
    no command's module and `frugalign COMMAND --help` imports that command's only (torch and transformers take
    seconds to import; the command modules load them inside the functions that use them)."""

    def __init__(self, *args, setup=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup = setup

    def parse_known_args(self, args=None, namespace=None):
        if self._setup is not None:
            setup, self._setup = self._setup, None
            setup(self)
        return super().parse_known_args(args, namespace)


def _subcommands(parser: argparse.ArgumentParser, dest: str, metavar: str):
    return parser.add_subparsers(dest=dest, required=True, metavar=metavar, parser_class=_Command)


def _train_command(sub, name: str, help: str, config_cls: type, module: str) -> None:
    """`frugalign NAME`: flags from its config class (frugalign.options, which loads no torch); the recipe
    module (torch) is imported when the command runs."""

    def setup(parser: argparse.ArgumentParser) -> None:
        from frugalign.config import add_config_arguments, load_config

        parser.description = config_cls.__doc__
        add_config_arguments(parser, config_cls)

        def handler(args: argparse.Namespace):
            config = load_config(config_cls, args)
            prepare_run_dir(config, name, args.argv)  # before anything loads: a refused folder costs nothing
            return importlib.import_module(module).run(config)

        parser.set_defaults(handler=handler)

    sub.add_parser(name, help=help, setup=setup)


def _module_command(sub, name: str, help: str, module: str) -> None:
    """`frugalign ... NAME`: the module gives `add_arguments(parser)` and `run(args)`."""

    def setup(parser: argparse.ArgumentParser) -> None:
        loaded = importlib.import_module(module)
        loaded.add_arguments(parser)
        parser.set_defaults(handler=loaded.run)

    sub.add_parser(name, help=help, setup=setup)


def _command_group(sub, name: str, help: str, commands) -> None:
    """`frugalign NAME COMMAND`, one `_module_command` per (command, module, help)."""

    def setup(parser: argparse.ArgumentParser) -> None:
        group = _subcommands(parser, name, name.upper())
        for command, module, command_help in commands:
            _module_command(group, command, command_help, module)

    sub.add_parser(name, help=help, setup=setup)


def _labels(parser: argparse.ArgumentParser) -> None:
    labels = _subcommands(parser, "labels", "ACTION")
    export = labels.add_parser("export", help="write the ledger's labels in TRL's preference format")
    export.add_argument("--ledger", required=True, help="the ledger (OUTPUT_DIR/labels.sqlite of a run, or a postgresql:// URL)")
    export.add_argument("--out", required=True, help="a .jsonl file, or a directory for --format hf")
    export.add_argument("--format", choices=["jsonl", "hf"], default="jsonl", help="JSONL or a save_to_disk dataset")
    export.set_defaults(handler=export_labels)


def _annotate(parser: argparse.ArgumentParser) -> None:
    from frugalign.annotate import commands

    commands.add_arguments(_subcommands(parser, "annotate", "ACTION"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="frugalign", description="Data-efficient preference alignment.")
    sub = _subcommands(parser, "command", "COMMAND")
    R = "frugalign.recipes."
    _train_command(sub, "sft", "supervised fine-tuning on demonstrations", options.SFTConfig, R + "sft")
    _train_command(sub, "dpo", "DPO, IPO, SimPO or ORPO on preference pairs, with per-pair weights", options.DPOConfig,
                   R + "dpo")
    _train_command(sub, "kto", "KTO on completions labelled desirable or undesirable (unpaired feedback)", options.KTOConfig,
                   R + "kto")
    _train_command(sub, "reward", "a Bradley-Terry reward model (default: the embedded MiniLM encoder)",
                   options.RewardConfig, R + "reward")
    _train_command(sub, "online", "online DPO with OPTune's selective regeneration and wDPO", options.OnlineConfig,
                   R + "online")
    _train_command(sub, "adpo", "active-query DPO: ask the annotator only about uncertain pairs (APL: --mode apl)",
                   options.ADPOConfig, R + "adpo")
    _train_command(sub, "spin", "SPIN: iterations of DPO of demonstrations against the previous iterate's samples",
                   options.SPINConfig, R + "spin")
    _train_command(sub, "rlhf", "RLHF's policy stage: RLOO with a per-token KL penalty against a reward model",
                   options.RLHFConfig, R + "rlhf")
    _train_command(sub, "aihf", "AIHF: demonstrations and preferences together (--variant explicit|dpo|self-play)",
                   options.AIHFConfig, R + "aihf")

    sub.add_parser("labels", help="the label ledger", setup=_labels)
    sub.add_parser("annotate", help="the annotation web app and pairwise human studies", setup=_annotate)

    E = "frugalign.evaluate."
    _command_group(sub, "eval", "answers, win score, reward-model accuracy, gold reward, lm-eval", (
        ("generate", E + "generate", "a checkpoint's answers to a prompt set (AlpacaEval / MT-Bench files)"),
        ("winscore", E + "winscore", "win score of one answers file against another, judged in both orders"),
        ("reward", E + "reward", "a reward model's accuracy on held-out preference pairs"),
        ("gold", E + "gold", "gold reward and KL to the base policy on a task's held-out prompts"),
        ("lm-eval", E + "harness", "EleutherAI's lm-evaluation-harness on a checkpoint (the papers' benchmarks)"),
    ))
    _module_command(sub, "serve", "a local model behind OpenAI-compatible chat and completions endpoints (a local judge)",
                    "frugalign.serve")
    _module_command(sub, "demo", "a few-minute end-to-end run on the embedded defaults", "frugalign.demo")
    _module_command(sub, "plot", "training curves of one or more runs on one figure (from their metrics.jsonl)",
                    "frugalign.plot")

    B = "frugalign.bench."
    _command_group(sub, "bench", "benchmarks on gold-oracle tasks", (
        ("dpo", B + "dpo", "base policy vs DPO on the whole labelled pool"),
        ("throughput", B + "throughput", "seconds per DPO step: frugalign vs TRL vs the floor"),
        ("adpo", B + "adpo", "queries needed: DPO vs ADPO vs ADPO without pseudo-labels vs random subset"),
        ("optune", B + "optune", "online DPO: regenerate a fraction rho of the prompts (OPTune) vs all, wDPO vs DPO"),
        ("appo", B + "appo", "APPO in a linear contextual dueling bandit: queries and regret against T, d, gap"),
        ("generation", B + "generation", "generation tokens per second against batch size"),
        ("annotate", B + "annotate", "load test of the annotation app: labels/s, latency, lost labels"),
        ("aihf", B + "aihf", "SFT, DPO, IPO, SPIN, RLHF and AIHF on the same data, balanced and scarce regimes"),
        ("judge", B + "judge", "an LLM judge's agreement with a task's gold preference: text against logprob verdicts"),
        ("replot", B + "replot", "draw a bench's plot again from its result JSON (nothing is run)"),
    ))
    return parser


def export_labels(args: argparse.Namespace) -> int:
    from frugalign.active.ledger import LabelLedger, shown

    ledger = LabelLedger(args.ledger, read_only=True)  # a read command: it never writes to the file
    counts = ledger.export(args.out, args.format)
    queried = ledger.counts()["queried"]
    ledger.close()
    if queried == 0:
        print(f"frugalign: warning: {shown(args.ledger)} is a ledger with no pairs in it: nothing was ever asked, or "
              "this is not the file that holds your labels", file=sys.stderr)
    print(f"{args.out}: {counts['written']} labelled pairs written ({counts['ties_skipped']} ties skipped)")
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv  # saved in each run folder's command.txt
    if not sys.stderr.isatty():
        # in a log file, transformers' "Loading weights" bars are carriage-return noise; frugalign's own progress
        # lines say what is happening. Read when transformers is first imported, which is after this.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    keep_freed_memory()  # before any tensor exists: steps then reuse freed memory instead of faulting it in anew
    # `kill` or a scheduler's time limit (SIGTERM) stops a run as Ctrl-C does: the run unwinds, so its temporary
    # folders (gigabytes in a bench) are removed; the caller's own handler comes back when main returns
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = args.handler(args)
    except UserError as e:
        print(f"frugalign: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("frugalign: interrupted; rerun with --resume to continue from the last checkpoint", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return result if isinstance(result, int) else 0
