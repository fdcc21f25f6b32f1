"""`frugalign bench annotate`: a load test of the annotation app on loopback. The app runs as its own
process (`frugalign annotate serve`) on a fresh ledger with queued pairs; many annotators (threads)
ask for their next pair and answer it as fast as they can, until the pairs or the time run out. Then
every acknowledged label is looked up in the ledger: a lost label is a failure."""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from frugalign.active.ledger import LabelLedger
from frugalign.console import console, summary_table
from frugalign.data import UnlabelledPair
from frugalign.errors import UserError
from frugalign.results import machine_info, write_results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotators", type=int, default=20, help="annotators submitting at once")
    parser.add_argument("--labels", type=int, default=2000, help="pairs queued (each gets one label)")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop submitting after this long")
    parser.add_argument("--quick", action="store_true", help="4 annotators, 80 labels: a smoke test")
    parser.add_argument("--out", default="bench-annotate.json", help="result JSON (a PNG is written beside it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, token: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=30) as r:
        return json.loads(r.read())


def start_app(db: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "frugalign", "annotate", "serve", "--db", str(db), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json", timeout=1)
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise UserError("the annotation app did not start")


def load_test(db: Path, tokens: list[str], port: int, max_seconds: float) -> dict:
    """Annotator threads against the running app: per-request latencies, acknowledged pair ids, errors."""
    base = f"http://127.0.0.1:{port}"
    next_ms, label_ms, acknowledged, errors = [], [], [], []
    lock = threading.Lock()
    deadline = time.time() + max_seconds

    def annotator(token: str) -> None:
        while time.time() < deadline:
            try:
                began = time.perf_counter()
                pair = request(base + "/api/next", token)["pair"]
                asked = time.perf_counter()
                if pair is None:
                    return
                request(base + "/api/label", token, {"pair_id": pair["pair_id"], "choice": "A"})
                done = time.perf_counter()
            except OSError as e:
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                return
            with lock:
                next_ms.append(1000 * (asked - began))
                label_ms.append(1000 * (done - asked))
                acknowledged.append(pair["pair_id"])

    began = time.perf_counter()
    threads = [threading.Thread(target=annotator, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - began
    stored = {pid for (pid,) in LabelLedger(db).db.execute("SELECT pair_id FROM votes")}
    return {"seconds": seconds, "next_ms": next_ms, "label_ms": label_ms, "acknowledged": acknowledged,
            "lost": len(set(acknowledged) - stored), "duplicates": len(acknowledged) - len(set(acknowledged)),
            "errors": errors}


def percentiles(values: list[float]) -> dict[str, float]:
    return {f"p{q}": float(np.percentile(values, q)) for q in (50, 95, 99)} | {"max": max(values)}


def run(args: argparse.Namespace) -> int:
    n_annotators, n_labels = (4, 80) if args.quick else (args.annotators, args.labels)
    with tempfile.TemporaryDirectory(prefix="frugalign-bench-annotate-") as tmp:
        db = Path(tmp) / "labels.sqlite"
        ledger = LabelLedger(db)
        for i in range(n_labels):
            pair = UnlabelledPair(f"prompt {i}", f"response {i} (a)", f"response {i} (b)")
            ledger.ask(pair, "human", "bench")
            ledger.enqueue(pair, 0.0)
        tokens = [ledger.add_annotator(f"annotator-{k}") for k in range(n_annotators)]
        ledger.close()
        port = free_port()
        app = start_app(db, port)
        try:
            measured = load_test(db, tokens, port, args.max_seconds)
        finally:
            app.kill()
            app.wait()
    labels = len(measured["acknowledged"])
    if labels == 0:
        raise UserError(f"no label was stored: {measured['errors'][:3]}")
    summary = {"labels": labels, "labels_per_second": labels / measured["seconds"], "seconds": measured["seconds"],
               "label_latency_ms": percentiles(measured["label_ms"]), "next_latency_ms": percentiles(measured["next_ms"]),
               "lost_labels": measured["lost"], "duplicate_labels": measured["duplicates"], "errors": len(measured["errors"])}
    result = {"bench": "annotate", "task": "loopback-load", "mode": "quick" if args.quick else "full", "seeds": [0],
              "config": {"annotators": n_annotators, "pairs": n_labels, "max_seconds": args.max_seconds,
                         "server": "frugalign annotate serve (uvicorn, one process)", "ledger": "SQLite WAL, synchronous=FULL"},
              "machine": machine_info(),
              "runs": [{"method": "annotate-app", "seed": 0, "params": {"annotators": n_annotators}, **summary,
                        "label_ms": measured["label_ms"], "next_ms": measured["next_ms"]}],
              "summary": summary}
    out = write_results(args.out, result)
    plot(result, out.with_suffix(".png"))
    lat = summary["label_latency_ms"]
    console.print(summary_table(f"bench annotate · {n_annotators} annotators", {
        "labels stored": f"{labels} in {measured['seconds']:.1f} s ({summary['labels_per_second']:.1f} labels/s)",
        "submit latency": f"p50 {lat['p50']:.1f} ms · p95 {lat['p95']:.1f} ms · p99 {lat['p99']:.1f} ms",
        "next-pair latency": f"p50 {summary['next_latency_ms']['p50']:.1f} ms · p95 {summary['next_latency_ms']['p95']:.1f} ms",
        "lost / duplicate labels": f"{measured['lost']} / {measured['duplicates']}",
        "errors": len(measured["errors"]), "results": str(out)}))
    return 0 if measured["lost"] == 0 else 1


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = result["runs"][0]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist([run["label_ms"], run["next_ms"]], bins=40, label=["submit a label", "get the next pair"])
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("requests")
    ax.set_title(f"{result['config']['annotators']} annotators: {result['summary']['labels_per_second']:.0f} labels/s, "
                 f"median submit {statistics.median(run['label_ms']):.0f} ms")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
