"""SIGTERM (`kill`, a scheduler's time limit) stops a command as Ctrl-C does: the run unwinds, so its temporary
folders are removed and it exits with the interrupted message, instead of dying where it stands and leaving
gigabytes behind (a bench keeps each seed's checkpoints in a temporary folder)."""

import argparse
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

# The command line's own main, with a command whose handler holds a temporary folder and is killed inside it.
# The signal is sent to itself, so it arrives at a known point: nothing polls or races.
KILLED_INSIDE_A_TEMPORARY_FOLDER = textwrap.dedent("""
    import argparse, os, signal, sys, tempfile, time
    import frugalign.cli as cli

    def handler(args):
        with tempfile.TemporaryDirectory(prefix="frugalign-test-") as folder:
            print(folder, flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(60)
        return 0

    def build_parser():
        parser = argparse.ArgumentParser()
        parser.set_defaults(handler=handler)
        return parser

    cli.build_parser = build_parser
    sys.exit(cli.main([]))
""")


def test_sigterm_unwinds_the_run_like_ctrl_c_and_removes_its_temporary_folder():
    done = subprocess.run([sys.executable, "-c", KILLED_INSIDE_A_TEMPORARY_FOLDER], capture_output=True, text=True,
                          timeout=50)
    assert done.returncode == 130, (done.returncode, done.stderr[-2000:])  # not -SIGTERM: it did not die where it stood
    assert "interrupted; rerun with --resume" in done.stderr
    folder = Path(done.stdout.strip())
    assert folder.name.startswith("frugalign-test-") and not folder.exists()


def test_main_gives_the_caller_its_own_sigterm_handler_back(monkeypatch):
    import frugalign.cli as cli

    seen = []
    parser = argparse.ArgumentParser()
    parser.set_defaults(handler=lambda args: seen.append(signal.getsignal(signal.SIGTERM)) or 0)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)

    def callers_handler(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, callers_handler)
    try:
        assert cli.main([]) == 0
        assert seen and seen[0] is not callers_handler  # the command ran under frugalign's handler
        assert signal.getsignal(signal.SIGTERM) is callers_handler
    finally:
        signal.signal(signal.SIGTERM, previous)
