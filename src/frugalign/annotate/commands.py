"""`frugalign annotate serve | add-annotator | revoke | import-study | report`."""

from __future__ import annotations

import argparse
import itertools
import socket
import threading
import time
from pathlib import Path

import numpy as np

from frugalign.active.ledger import LabelLedger, is_postgres, shown
from frugalign.console import console, print_summary
from frugalign.errors import UserError
from frugalign.results import write_results


def add_arguments(sub) -> None:
    """The `annotate` subcommands, on the `annotate` parser's subparsers."""
    p = sub.add_parser("serve", help="the annotation web app on a ledger")
    p.add_argument("--db", required=True, help="the label ledger (a run's OUTPUT_DIR/labels.sqlite, a study's, or a "
                                                "postgresql:// URL)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on")
    p.add_argument("--labels-per-pair", type=positive(int), default=1,
                   help="people asked per pair (more: agreement studies)")
    p.add_argument("--instructions", default=None, metavar="FILE",
                   help="guidelines for the annotators, a Markdown file shown at the top of the page")
    p.set_defaults(handler=serve)
    p = sub.add_parser("add-annotator", help="create an annotator; prints their token as the last line")
    p.add_argument("name", help="the annotator's name (unique in this ledger)")
    p.add_argument("--db", required=True, help="the label ledger (created if missing)")
    p.add_argument("--admin", action="store_true", help="may also export every annotator's labels (/api/export)")
    p.add_argument("--expires-in-days", type=positive(float), default=None, metavar="DAYS",
                   help="the token stops working after this many days (default: never; `revoke` ends it at once)")
    p.set_defaults(handler=add_annotator)
    p = sub.add_parser("revoke", help="end an annotator's token at once (their labels stay)")
    p.add_argument("name", help="the annotator's name")
    p.add_argument("--db", required=True, help="the label ledger")
    p.set_defaults(handler=revoke)
    p = sub.add_parser("import-study", help="queue a pairwise study: two models' answers to the same prompts")
    p.add_argument("--db", required=True, help="the ledger that collects the study's labels (created if missing)")
    p.add_argument("--model-a", required=True, help="model A's answers (an `eval generate` file, AlpacaEval format)")
    p.add_argument("--model-b", required=True, help="model B's answers, to the same prompts")
    p.add_argument("--study", default="study", help="the study's name (several can share a ledger)")
    p.set_defaults(handler=import_study)
    p = sub.add_parser("report", help="a study's win score (model A against B) and the annotators' agreement")
    p.add_argument("--db", required=True, help="the study's ledger")
    p.add_argument("--study", default=None, help="the study's name (default: the ledger's only study)")
    p.add_argument("--out", default=None, help="result JSON")
    p.set_defaults(handler=report)


def positive(cast):
    """An argparse type: a number > 0 (else argparse's one-line error and exit 2)."""
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r} is not a number above 0")
        return value
    parse.__name__ = cast.__name__  # argparse names the type in its messages
    return parse


def open_ledger(path: str, create: bool = False, read_only: bool = False) -> LabelLedger:
    if not create and not is_postgres(path) and not Path(path).is_file():
        raise UserError(f"{path}: no such ledger file")
    return LabelLedger(path, read_only=read_only)


def check_port_free(host: str, port: int) -> None:
    """Refuse an address another program listens on before saying where the app is (uvicorn would print our URL,
    then fail with its own error)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a closed socket's wait is fine
        try:
            probe.bind((host, port))
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port} ({e.strerror}): another program may be using the port; "
                            "choose another with --port") from None


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from frugalign.annotate.app import create_app

    open_ledger(args.db).close()  # a missing or corrupt ledger is a clear error before the server starts
    instructions = read_instructions(args.instructions)
    check_port_free(args.host, args.port)
    console.print(f"annotation app on http://{args.host}:{args.port}/ (API schema at /docs), ledger {shown(args.db)}")
    uvicorn.run(create_app(args.db, args.labels_per_pair, instructions), host=args.host, port=args.port,
                log_level="warning")
    return 0


def read_instructions(path: str | None) -> str:
    """The guidelines file's text ("" for none); a missing or unreadable file is one clear line."""
    if not path:
        return ""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"--instructions {path}: no such file") from None
    except UnicodeDecodeError as e:
        raise UserError(f"--instructions {path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise UserError(f"--instructions {path}: cannot be read ({e.strerror})") from None


def serve_in_thread(ledger_path: str | Path, host: str, port: int, labels_per_pair: int = 1, instructions: str = ""):
    """The app in a background thread of this process (`frugalign adpo --serve`); `.should_exit = True` stops it."""
    import uvicorn

    from frugalign.annotate.app import create_app

    check_port_free(host, port)
    server = uvicorn.Server(uvicorn.Config(create_app(ledger_path, labels_per_pair, instructions), host=host, port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline:
            raise UserError(f"the annotation app did not start on {host}:{port} (is the port in use?)")
        time.sleep(0.05)
    return server


def add_annotator(args: argparse.Namespace) -> int:
    ledger = open_ledger(args.db, create=True)
    token = ledger.add_annotator(args.name, admin=args.admin, expires_in_days=args.expires_in_days)
    ledger.close()
    role = "admin" if args.admin else "annotator"
    expiry = f", valid for {args.expires_in_days:g} days" if args.expires_in_days is not None else ""
    print(f"{role} '{args.name}' added to {shown(args.db)}{expiry}; their token (shown once, keep it secret):")
    print(token)
    return 0


def revoke(args: argparse.Namespace) -> int:
    ledger = open_ledger(args.db)
    ledger.revoke(args.name)
    ledger.close()
    print(f"annotator '{args.name}' revoked in {shown(args.db)}: their token gets 401 from now on")
    return 0


def import_study(args: argparse.Namespace) -> int:
    from frugalign.evaluate.generate import generator_name, read_answers

    a, b = read_answers(args.model_a), read_answers(args.model_b)
    prompts = [p for p in a if p in b]
    if not prompts:
        raise UserError(f"{args.model_a} and {args.model_b} share no prompt")
    ledger = open_ledger(args.db, create=True)
    same = 0
    for prompt in prompts:
        if a[prompt] == b[prompt]:
            same += 1  # nothing to compare: left out, and said so
            continue
        ledger.add_study_pair(args.study, prompt, a[prompt], b[prompt])
    ledger.set_study_models(args.study, generator_name(args.model_a), generator_name(args.model_b))
    ledger.close()
    print(f"study '{args.study}': {len(prompts) - same} pairs queued in {shown(args.db)} "
          f"({same} prompts with identical answers left out)")
    return 0


def fleiss_kappa(votes: list[list[int]]) -> float | None:
    """Fleiss' kappa over pairs with the same number (>= 2) of votes in {-1, 0, 1}; None if undefined."""
    counts = np.array([[v.count(c) for c in (-1, 0, 1)] for v in votes], dtype=float)
    if len(counts) == 0:
        return None
    n = counts.sum(1)[0]
    agreement = ((counts * (counts - 1)).sum(1) / (n * (n - 1))).mean()
    shares = counts.sum(0) / counts.sum()
    chance = (shares ** 2).sum()
    return None if chance == 1 else float((agreement - chance) / (1 - chance))


def report(args: argparse.Namespace) -> int:
    from frugalign.evaluate.winscore import bootstrap_interval, win_score

    ledger = open_ledger(args.db, read_only=True)
    studies = ledger.studies()
    listed = ", ".join(f"'{name}' ({n['labelled']} of {n['pairs']} pairs labelled)" for name, n in studies.items())
    study = args.study
    if study is None:
        if len(studies) != 1:
            ledger.close()
            raise UserError(f"{shown(args.db)}: " + (f"several studies, choose one with --study: {listed}" if studies else
                                              "no study in this ledger (queue one with `annotate import-study`)"))
        study = next(iter(studies))
    by_pair = ledger.study_votes(study)
    model_a, model_b = ledger.study_models(study)
    ledger.close()
    if study not in studies:
        raise UserError(f"{shown(args.db)}: no study '{study}'; " + (f"its studies: {listed}" if studies else "it has none"))
    if not by_pair:
        raise UserError(f"{shown(args.db)}: study '{study}' has no labels yet (0 of {studies[study]['pairs']} pairs labelled)")
    outcomes = [int(np.sign(sum(v))) for v in by_pair.values()]  # each pair: the majority of its votes
    low, high = bootstrap_interval(outcomes)
    multi = [v for v in by_pair.values() if len(v) >= 2]
    agree = [x == y for v in multi for x, y in itertools.combinations(v, 2)]
    k = min((len(v) for v in multi), default=0)
    kappa = fleiss_kappa([v[:k] for v in multi]) if multi else None
    result = {"study": study, "model_a": model_a, "model_b": model_b, "pairs": len(outcomes),
              "win_score": win_score(outcomes), "ci95": [low, high],
              "wins": outcomes.count(1), "ties": outcomes.count(0), "losses": outcomes.count(-1),
              "pairs_with_several_labels": len(multi), "raw_agreement": float(np.mean(agree)) if agree else None,
              "fleiss_kappa": kappa}
    if args.out:
        write_results(args.out, result)
    print_summary(f"study '{study}': {model_a} (A) against {model_b} (B)", {
        f"win score of {model_a}": f"{result['win_score']:.1f} (95% interval {low:.1f} to {high:.1f})",
        "wins / ties / losses": f"{result['wins']} / {result['ties']} / {result['losses']}",
        "pairs labelled": len(outcomes),
        "agreement": (f"{result['raw_agreement']:.2f} raw, Fleiss' kappa {kappa:.2f} over {len(multi)} pairs"
                      if agree and kappa is not None else "needs pairs with 2+ labels (--labels-per-pair)")})
    return 0
