"""How long the CLI takes to answer, against importing torch alone, in interleaved rounds.

    .venv/bin/python scripts/startup_time.py [--rounds 5]

Times, in fresh processes: `python -c "import torch"`, `frugalign --help`, two subcommands' `--help`,
and `frugalign annotate serve` from launch until its page answers. Prints the median, min and max of each.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from frugalign.active.ledger import LabelLedger
from frugalign.bench.annotate import free_port

BIN = os.path.dirname(sys.executable)


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def serve_seconds() -> float:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        LabelLedger(f"{tmp}/labels.sqlite").close()  # serve opens an existing ledger
        start = time.perf_counter()
        server = subprocess.Popen([f"{BIN}/frugalign", "annotate", "serve", "--db", f"{tmp}/labels.sqlite",
                                   "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                if server.poll() is not None:
                    raise SystemExit(f"annotate serve exited with code {server.returncode}")
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
                    return time.perf_counter() - start
                except OSError:
                    time.sleep(0.02)
        finally:
            server.terminate()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="each leg runs once per round, the legs interleaved")
    rounds = parser.parse_args().rounds
    legs = {'python -c "import torch"': lambda: seconds([sys.executable, "-c", "import torch"]),
            "frugalign --help": lambda: seconds([f"{BIN}/frugalign", "--help"]),
            "frugalign dpo --help": lambda: seconds([f"{BIN}/frugalign", "dpo", "--help"]),
            "frugalign bench adpo --help": lambda: seconds([f"{BIN}/frugalign", "bench", "adpo", "--help"]),
            "frugalign annotate serve, until its page answers": serve_seconds}
    times = {name: [] for name in legs}
    for _ in range(rounds):
        for name, leg in legs.items():
            times[name].append(leg())
    for name, took in times.items():
        print(f"{name}: median {statistics.median(took):.2f} s (min {min(took):.2f}, max {max(took):.2f}, "
              f"{rounds} rounds)")


if __name__ == "__main__":
    main()
