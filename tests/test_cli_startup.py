"""`frugalign --help`, every subcommand's `--help` and `annotate serve` must not import torch, transformers
or the other heavy libraries: importing torch alone takes seconds (issue 16). Checked in a fresh interpreter,
since this test process has loaded them already."""

import json
import subprocess
import sys
import textwrap

HEAVY = ("torch", "transformers", "accelerate", "datasets", "peft", "vllm", "trl")

WALK = textwrap.dedent("""
    import argparse, contextlib, io, json, sys
    from frugalign.cli import build_parser

    def walk(parser, path):
        with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
            parser.parse_known_args(["--help"])  # what `frugalign PATH --help` does; a subcommand adds its flags here
        assert "usage: frugalign" in out.getvalue(), path
        yield " ".join(path)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, path + [name])

    commands = list(walk(build_parser(), []))
    if sys.argv[1:] == ["serve"]:  # what `frugalign annotate serve` imports before it answers
        args = build_parser().parse_args(["annotate", "serve", "--db", "x.sqlite"])
        import uvicorn
        from frugalign.annotate.app import create_app
    print(json.dumps({"commands": commands, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
""")


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", WALK, *args], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    result["heavy"] = [m for m in HEAVY if m in result["modules"]]
    return result


def test_help_of_every_command_imports_no_heavy_library():
    result = run_child()
    assert {"", "dpo", "adpo", "eval winscore", "bench throughput", "annotate serve", "labels export"} <= set(
        result["commands"])
    assert len(result["commands"]) >= 30
    assert result["heavy"] == []


def test_annotate_serve_imports_no_heavy_library():
    assert run_child("serve")["heavy"] == []
