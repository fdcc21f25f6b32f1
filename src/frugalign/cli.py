"""The `frugalign` command. Each subcommand parses its typed config (YAML + flags) and calls the
recipe's `run`; a user's mistake is printed as one clear line and exits with status 2."""

from __future__ import annotations

import argparse
import sys

from frugalign.config import add_config_arguments, load_config
from frugalign.errors import UserError
from frugalign.rundir import prepare_run_dir


def _train_command(sub, name: str, help: str, config_cls, run) -> None:
    parser = sub.add_parser(name, help=help, description=config_cls.__doc__)
    add_config_arguments(parser, config_cls)

    def handler(args: argparse.Namespace):
        config = load_config(config_cls, args)
        prepare_run_dir(config, name, args.argv)  # before anything loads: a refused folder costs nothing
        return run(config)

    parser.set_defaults(handler=handler)


def _command_group(sub, name: str, help: str, commands) -> None:
    """`frugalign NAME COMMAND`: each command's module gives `add_arguments(parser)` and `run(args)`."""
    group = sub.add_parser(name, help=help).add_subparsers(dest=name, required=True, metavar=name.upper())
    for command, module, command_help in commands:
        p = group.add_parser(command, help=command_help)
        module.add_arguments(p)
        p.set_defaults(handler=module.run)


def build_parser() -> argparse.ArgumentParser:
    from frugalign import demo, serve
    from frugalign.annotate import commands as annotate_commands
    from frugalign.bench import adpo as adpo_bench
    from frugalign.bench import aihf as aihf_bench
    from frugalign.bench import annotate as annotate_bench
    from frugalign.bench import appo as appo_bench
    from frugalign.bench import dpo as dpo_bench
    from frugalign.bench import generation as generation_bench
    from frugalign.bench import optune as optune_bench
    from frugalign.bench import throughput as throughput_bench
    from frugalign.evaluate import generate as eval_generate
    from frugalign.evaluate import gold as eval_gold
    from frugalign.evaluate import harness as eval_harness
    from frugalign.evaluate import reward as eval_reward
    from frugalign.evaluate import winscore as eval_winscore
    from frugalign.recipes import adpo, aihf, dpo, online, reward, rlhf, sft

    parser = argparse.ArgumentParser(prog="frugalign", description="Data-efficient preference alignment.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _train_command(sub, "sft", "supervised fine-tuning on demonstrations", sft.SFTConfig, sft.run)
    _train_command(sub, "dpo", "DPO / IPO on preference pairs, with per-pair weights", dpo.DPOConfig, dpo.run)
    _train_command(sub, "reward", "a Bradley-Terry reward model (default: the embedded MiniLM encoder)",
                   reward.RewardConfig, reward.run)
    _train_command(sub, "online", "online DPO with OPTune's selective regeneration and wDPO", online.OnlineConfig,
                   online.run)
    _train_command(sub, "adpo", "active-query DPO: ask the annotator only about uncertain pairs", adpo.ADPOConfig,
                   adpo.run)
    _train_command(sub, "spin", "SPIN: iterations of DPO of demonstrations against the previous iterate's samples",
                   aihf.AIHFConfig, aihf.run_spin)
    _train_command(sub, "rlhf", "RLHF's policy stage: RLOO with a per-token KL penalty against a reward model",
                   rlhf.RLHFConfig, rlhf.run)
    _train_command(sub, "aihf", "AIHF: demonstrations and preferences together (--variant explicit|dpo|self-play)",
                   aihf.AIHFConfig, aihf.run)

    labels = sub.add_parser("labels", help="the label ledger").add_subparsers(dest="labels", required=True,
                                                                             metavar="ACTION")
    export = labels.add_parser("export", help="write the ledger's labels in TRL's preference format")
    export.add_argument("--ledger", required=True, help="the ledger file (OUTPUT_DIR/labels.sqlite of a run)")
    export.add_argument("--out", required=True, help="a .jsonl file, or a directory for --format hf")
    export.add_argument("--format", choices=["jsonl", "hf"], default="jsonl", help="JSONL or a save_to_disk dataset")
    export.set_defaults(handler=export_labels)

    annotate = sub.add_parser("annotate", help="the annotation web app and pairwise human studies").add_subparsers(
        dest="annotate", required=True, metavar="ACTION"
    )
    annotate_commands.add_arguments(annotate)

    _command_group(sub, "eval", "answers, win score, reward-model accuracy, gold reward, lm-eval", (
        ("generate", eval_generate, "a checkpoint's answers to a prompt set (AlpacaEval / MT-Bench files)"),
        ("winscore", eval_winscore, "win score of one answers file against another, judged in both orders"),
        ("reward", eval_reward, "a reward model's accuracy on held-out preference pairs"),
        ("gold", eval_gold, "gold reward and KL to the base policy on a task's held-out prompts"),
        ("lm-eval", eval_harness, "EleutherAI's lm-evaluation-harness on a checkpoint (the papers' benchmarks)"),
    ))

    p = sub.add_parser("serve", help="a local model behind an OpenAI-compatible chat endpoint (a local judge)")
    serve.add_arguments(p)
    p.set_defaults(handler=serve.run)

    p = sub.add_parser("demo", help="a few-minute end-to-end run on the embedded defaults")
    demo.add_arguments(p)
    p.set_defaults(handler=demo.run)

    _command_group(sub, "bench", "benchmarks on gold-oracle tasks", (
        ("dpo", dpo_bench, "base policy vs DPO on the whole labelled pool"),
        ("throughput", throughput_bench, "seconds per DPO step: frugalign vs TRL vs the floor"),
        ("adpo", adpo_bench, "queries needed: DPO vs ADPO vs ADPO without pseudo-labels vs random subset"),
        ("optune", optune_bench, "online DPO: regenerate a fraction rho of the prompts (OPTune) vs all, wDPO vs DPO"),
        ("appo", appo_bench, "APPO in a linear contextual dueling bandit: queries and regret against T, d, gap"),
        ("generation", generation_bench, "generation tokens per second against batch size"),
        ("annotate", annotate_bench, "load test of the annotation app: labels/s, latency, lost labels"),
        ("aihf", aihf_bench, "SFT, DPO, IPO, SPIN, RLHF and AIHF on the same data, balanced and scarce regimes"),
    ))
    return parser


def export_labels(args: argparse.Namespace) -> int:
    from frugalign.active.ledger import LabelLedger

    ledger = LabelLedger(args.ledger, read_only=True)  # a read command: it never writes to the file
    counts = ledger.export(args.out, args.format)
    queried = ledger.counts()["queried"]
    ledger.close()
    if queried == 0:
        print(f"frugalign: warning: {args.ledger} is a ledger with no pairs in it: nothing was ever asked, or "
              "this is not the file that holds your labels", file=sys.stderr)
    print(f"{args.out}: {counts['written']} labelled pairs written ({counts['ties_skipped']} ties skipped)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv  # saved in each run folder's command.txt
    try:
        result = args.handler(args)
    except UserError as e:
        print(f"frugalign: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("frugalign: interrupted; rerun with --resume to continue from the last checkpoint", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0
