"""The `frugalign` command. Each subcommand parses its typed config (YAML + flags) and calls the
recipe's `run`; a user's mistake is printed as one clear line and exits with status 2."""

from __future__ import annotations

import argparse
import sys

from frugalign.config import add_config_arguments, load_config
from frugalign.errors import UserError


def _train_command(sub, name: str, help: str, config_cls, run) -> None:
    parser = sub.add_parser(name, help=help, description=config_cls.__doc__)
    add_config_arguments(parser, config_cls)
    parser.set_defaults(handler=lambda args: run(load_config(config_cls, args)))


def build_parser() -> argparse.ArgumentParser:
    from frugalign import demo
    from frugalign.bench import dpo as dpo_bench
    from frugalign.bench import throughput as throughput_bench
    from frugalign.recipes import dpo, sft

    parser = argparse.ArgumentParser(prog="frugalign", description="Data-efficient preference alignment.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _train_command(sub, "sft", "supervised fine-tuning on demonstrations", sft.SFTConfig, sft.run)
    _train_command(sub, "dpo", "DPO / IPO on preference pairs, with per-pair weights", dpo.DPOConfig, dpo.run)

    p = sub.add_parser("demo", help="a few-minute end-to-end run on the embedded defaults")
    demo.add_arguments(p)
    p.set_defaults(handler=demo.run)

    bench = sub.add_parser("bench", help="benchmarks on gold-oracle tasks").add_subparsers(
        dest="bench", required=True, metavar="BENCH"
    )
    for name, module, help in (
        ("dpo", dpo_bench, "base policy vs DPO on the whole labelled pool"),
        ("throughput", throughput_bench, "seconds per DPO step: frugalign vs TRL vs the floor"),
    ):
        p = bench.add_parser(name, help=help)
        module.add_arguments(p)
        p.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.handler(args)
    except UserError as e:
        print(f"frugalign: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("frugalign: interrupted; rerun with --resume to continue from the last checkpoint", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0
