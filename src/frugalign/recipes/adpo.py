"""Active-query DPO (ADPO, docs/algorithms.md, section 2) on a pool of unlabelled pairs.

Per step, for each pair of the micro-batch, in the forward pass that also gives the loss:
  m = beta * (u(a) - u(b)), detached: the policy's confidence that `a` wins;
  a label already in the ledger (paid for earlier) is used as it is;
  otherwise the query rule (`active/query_rule.py`) decides: ask (|m| <= gamma), pseudo-label sign(m),
  skip, or audit (ask a confident pair anyway, to learn whether its confidence can be trusted; audits
  and their outcomes are kept in the ledger, so trust survives a restart);
  a question is asked once ever (the ledger records it before it is sent), and the pair waits, with
  weight 0, until its label arrives: it is then trained on in a later step.
Then the pairwise loss on the pairs oriented by their labels, weighted (ties, skipped and waiting
pairs have weight 0). `dpo` asks about every pair; `random-onepass` asks a uniform subset of `max_queries`
pairs fixed before training and skips the rest (ADPO's like-for-like baseline: the same pass, only the
choice of pairs differs).

`apl` (APL, docs/algorithms.md, section 2) buys its labels in rounds instead: each round scores the pool with
the current policy, buys the `acquisition_batch_size` pairs `active/acquisition.py` chooses, then trains
DPO (a new optimizer and schedule, continuing from the current policy) on every pair labelled so far, for
`apl_epochs_per_round` epochs, or `num_epochs` after the last purchase. `random` runs the same rounds with
uniformly random purchases: APL's like-for-like baseline, the same labels count and training schedule, only
the choice of pairs differs, and no forward pass over pairs it will never train on. The pairs are asked, and
their labels stored, by the same steps as in the other modes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from frugalign import losses, models
from frugalign.active.acquisition import apl_acquire, prompt_entropies
from frugalign.active.annotators import Annotator, HumanQueue, JudgeError, LLMJudge, RewardModelJudge, StoredLabels
from frugalign.active.ledger import LabelLedger, fingerprint, orientation, pair_id
from frugalign.active.query_rule import AUDIT, PSEUDO, SKIP, QueryRule, Trust, pseudo_label, uniform_subset
from frugalign.console import print_summary
from frugalign.data import UnlabelledPair, load_rows, tokenize_unlabelled, unlabelled_pairs
from frugalign.engine import Engine, TrainResult
from frugalign.errors import UserError
from frugalign.logprobs import SequenceLogps
from frugalign.options import ADPOConfig
from frugalign.training.common import load_policy
from frugalign.training.dpo import PairScorer, Reference, pair_losses


@dataclass
class QueryStats:
    """What this process did with the pairs it saw (the ledger holds the global counts)."""

    asked: int = 0
    labelled: int = 0
    pseudo: int = 0
    pseudo_agree: int = 0
    pseudo_checked: int = 0
    skipped_confident: int = 0
    audited: int = 0
    audit_agree: int = 0
    audit_record: list[tuple[float, bool]] = field(default_factory=list)  # (|m|, agreed) per answered audit
    skipped_budget: int = 0
    deferred: int = 0
    ties: int = 0
    sent: int = 0  # questions this process sent to the annotator
    answers: int = 0  # labels the annotator gave this process
    unanswered: int = 0  # at the end: pairs this run asked that have no label in the ledger


@dataclass
class ActiveState:
    """Memory between steps: labels known, pairs asked, pairs waiting for their label."""

    known: dict[str, int] = field(default_factory=dict)  # in the ledger's canonical order: a pool can hold a pair both ways
    asked: dict[str, UnlabelledPair] = field(default_factory=dict)
    waiting: dict[str, dict] = field(default_factory=dict)
    ready: list[dict] = field(default_factory=list)
    answered: int = 0  # labels this run has (from the ledger at each step: survives a restart)
    trust: Trust | None = None  # the audits' verdict on the policy's confidence (from the ledger at each step)
    audits_asked: int = 0
    round: int = 0  # apl, random: the purchase round under way


def unlabelled_rows(pairs: list[UnlabelledPair], tokenizer, config: ADPOConfig, source: str) -> list[dict]:
    length = config.length
    rows, report = tokenize_unlabelled(pairs, tokenizer, length.max_prompt_length, length.max_response_length, source,
                                       length.overlong)
    for row in rows:
        pair = pairs[row["index"]]
        row["pair"] = pair
        row["pair_id"] = pair_id(pair.prompt, pair.response_a, pair.response_b)
    return rows


def orient(signs: torch.Tensor, a: SequenceLogps, b: SequenceLogps) -> tuple[SequenceLogps, SequenceLogps]:
    """(winner, loser) log-probs: a wins where sign >= 0 (sign 0 rows get weight 0 anyway)."""
    a_wins = signs >= 0
    return (SequenceLogps(torch.where(a_wins, a.sum, b.sum), torch.where(a_wins, a.count, b.count)),
            SequenceLogps(torch.where(a_wins, b.sum, a.sum), torch.where(a_wins, b.count, a.count)))


def merge_results(results: list[TrainResult]) -> TrainResult:
    """One summary of training runs made one after another (apl's and random's rounds)."""
    totals: dict[str, float] = {}
    for result in results:
        for key, value in result.total_metrics.items():
            totals[key] = totals.get(key, 0.0) + value
    steps = sum(r.steps for r in results)
    return TrainResult(steps=steps, seconds=sum(r.seconds for r in results), last_metrics=results[-1].last_metrics,
                       eval_metrics=results[-1].eval_metrics, mean_metrics={k: v / steps for k, v in totals.items()},
                       total_metrics=totals)


def train_adpo(
    config: ADPOConfig,
    policy,
    tokenizer,
    rows: list[dict],
    annotator: Annotator,
    engine: Engine | None = None,
    truth: Callable[[UnlabelledPair], int] | None = None,
    eval_fn=None,
    ledger: LabelLedger | None = None,
    eval_steps: int = 0,
) -> tuple[object, TrainResult, QueryStats]:
    """Train on unlabelled pair rows (from `unlabelled_rows`), asking `annotator` as ADPO says.

    `truth` (simulations only) gives the true label of a pair without asking, to measure how often
    pseudo-labels agree with it; it is never used for training. Labels that arrive after a pair's
    last appearance are trained on in the next step if the run is still going. At the end (or on an
    error), the annotator is closed: requests under way are waited for and their labels written to
    the ledger (for `frugalign labels export` and later runs), never lost; questions not yet sent stay
    asked-but-unanswered in the ledger, and a later run sharing it asks them again."""
    engine = engine or Engine(config)
    policy = policy.to(engine.device)
    ledger = ledger or LabelLedger(config.labels.ledger or Path(config.train.output_dir) / "labels.sqlite",
                                   fingerprint(r["pair"] for r in rows), allow_other_datasets=config.labels.ledger_shared)
    # stable across --resume, so the budget and the counts continue
    run_id = hashlib.sha256(str(Path(config.train.output_dir).resolve()).encode()).hexdigest()[:16]
    scorer = PairScorer(config, policy, tokenizer.pad_token_id)
    reference = Reference(engine, policy, scorer, precomputed=False, lora=config.lora.lora_r > 0)
    stats = QueryStats()
    state = ActiveState()
    bought_so_far: set[str] = set()  # apl, random: the pairs bought by this run's rounds
    budget = config.active.max_queries if config.active.max_queries >= 0 else None
    active = config.active
    subset = (uniform_subset((r["pair_id"] for r in rows), config.train.seed, active.max_queries)
              if active.mode == "random-onepass" else frozenset())
    rule = QueryRule(active.mode, active.gamma, active.audit_rate, config.train.seed, active.audit_window, active.query_warmup,
                     subset)
    session_start = time.time()

    def store(answers: dict[str, int]) -> None:
        stats.answers += len(answers)
        for pid, label in answers.items():
            pair = state.asked[pid]
            # written before it is used; people's answers are there already (and may since have been undone)
            if not annotator.records_in_ledger and ledger.label(pair) is None:
                ledger.record(pair, label, annotator.name)
            state.known[pid] = label * orientation(pair)
            row = state.waiting.pop(pid, None)
            if row is not None:
                state.ready.append(row)

    def collect() -> None:
        try:
            answers = annotator.collect()
        except JudgeError as e:
            store(e.labels)  # what did arrive is kept
            raise
        store(answers)

    def keep_last_answers() -> None:
        """After the annotator is closed: store whatever arrived, without raising over late failures."""
        try:
            store(annotator.collect())
        except JudgeError as e:
            store(e.labels)

    def known_label(row: dict) -> int | None:
        """The pair's label relative to this row's order of its responses, if there is one."""
        pid = row["pair_id"]
        if pid not in state.known:
            stored = ledger.label(row["pair"])  # paid for earlier: by this run, an earlier one, another process
            if stored is not None:
                state.known[pid] = stored * orientation(row["pair"])
        return state.known[pid] * orientation(row["pair"]) if pid in state.known else None

    def label_batch(batch: list[dict], confidence: list[float]) -> list[float]:
        """The orientation of each pair: +1 (a wins), -1 (b wins), 0 (not trained on in this step)."""
        signs = [0.0] * len(batch)
        to_ask: list[int] = []
        audits: set[int] = set()
        for i, (row, conf) in enumerate(zip(batch, confidence)):
            label = known_label(row)
            if label is not None:
                state.waiting.pop(row["pair_id"], None)  # answered through another process or run
                stats.labelled += 1
                stats.ties += label == 0
                signs[i] = float(label)
            elif row["pair_id"] in state.waiting:
                continue
            else:
                decision = rule.decide(row["pair_id"], conf, answered=state.answered, trust=state.trust,
                                       audits_asked=state.audits_asked)
                if decision == PSEUDO:
                    signs[i] = float(pseudo_label(conf))
                    stats.pseudo += 1
                    if truth is not None:
                        stats.pseudo_checked += 1
                        stats.pseudo_agree += truth(row["pair"]) == signs[i]
                elif decision == SKIP and active.mode == "random-onepass":
                    stats.skipped_budget += 1  # not drawn: the budget went to other pairs
                elif decision == SKIP:
                    stats.skipped_confident += 1
                else:
                    to_ask.append(i)
                    if decision == AUDIT:
                        audits.add(i)
                        state.audits_asked += 1  # an early audit counts at once, so a batch asks no more than needed
        fresh, priorities = [], []
        for i in to_ask:
            outcome = ledger.ask(batch[i]["pair"], annotator.name, run_id, budget)
            if outcome == "over-budget":
                stats.skipped_budget += 1
                continue
            resubmit = (outcome == "known" and batch[i]["pair_id"] not in state.asked
                        and ledger.unanswered_before(batch[i]["pair"], run_id, session_start))
            if outcome == "asked" or resubmit or batch[i]["pair_id"] not in state.asked:
                state.asked[batch[i]["pair_id"]] = batch[i]["pair"]  # the pair as the annotator is sent it
            if i in audits and outcome == "asked":  # the guess, for comparison with the label when it comes
                ledger.record_audit(batch[i]["pair"], run_id, pseudo_label(confidence[i]), confidence[i])
            state.waiting[batch[i]["pair_id"]] = batch[i]
            if outcome == "asked" or resubmit:  # resubmit: this run asked before a crash, the answer was lost
                fresh.append(batch[i]["pair"])
                priorities.append(-abs(confidence[i]))  # the least confident first
        stats.asked += len(fresh)
        stats.sent += len(fresh)
        if fresh:
            annotator.submit(fresh, priorities)
        collect()  # a synchronous annotator has answered already: train on its labels in this very step
        for i in to_ask:
            pid = batch[i]["pair_id"]
            if pid in state.known and pid not in state.waiting:
                state.ready = [r for r in state.ready if r["pair_id"] != pid]
                label = known_label(batch[i])
                stats.labelled += 1
                stats.ties += label == 0
                signs[i] = float(label)
            elif pid in state.waiting:
                stats.deferred += 1
        return signs

    def step(model, batch: list[dict]):
        collect()
        state.answered = ledger.counts(run_id)["answered"]
        outcomes, levels, state.audits_asked = ledger.audit_outcomes(run_id)
        state.trust = Trust(outcomes, active.audit_window, active.min_agreement, levels, active.trust_by_confidence)
        batch, state.ready = batch + state.ready, []  # pairs whose labels arrived since they were seen
        tensors = scorer.tensors([r["prompt_ids"] for r in batch], [r["a_ids"] for r in batch],
                                 [r["b_ids"] for r in batch], engine.device)
        a, b = scorer(model, tensors)
        ref_a, ref_b = reference.live(model, tensors)
        confidence = config.loss.beta * losses.pair_margin(a.sum, b.sum, ref_a.sum, ref_b.sum).detach()
        signs = torch.tensor(label_batch(batch, confidence.tolist()), device=engine.device)
        chosen, rejected = orient(signs, a, b)
        ref_chosen, ref_rejected = orient(signs, ref_a, ref_b)
        per_pair, _ = pair_losses(config, chosen, rejected, ref_chosen, ref_rejected)
        weights = signs.abs() * torch.tensor([r.get("weight", 1.0) for r in batch], device=engine.device)
        loss = losses.weighted_mean(per_pair, weights)
        counts = ledger.counts(run_id)
        metrics = {"loss": loss.item(), "trained_pairs": float((weights > 0).sum()),
                   "queries": float(counts["queried"]), "labels_pending": float(counts["pending"]),
                   "pseudo_labelled": float(stats.pseudo), "skipped": float(stats.skipped_confident + stats.skipped_budget)}
        if stats.pseudo_checked:
            metrics["pseudo_label_agreement"] = stats.pseudo_agree / stats.pseudo_checked
        if state.trust.agreement is not None:
            metrics["audit_agreement"] = state.trust.agreement
            metrics["audit_agreement_lower_bound"] = state.trust.lower_bound
        if active.trust_by_confidence and state.trust.trusted():
            metrics["trusted_confidence"] = state.trust.threshold
        if isinstance(annotator, LLMJudge):
            metrics.update(judge_metrics(annotator))
        if config.active.mode in ("apl", "random"):
            metrics["round"] = float(state.round)
        return loss, metrics

    # per row of the pool (a pair may stand in it twice, each way round): the frozen reference scores it once a run
    pool_reference: list[tuple[float, float]] = []

    @torch.no_grad()
    def score_pool(model) -> tuple[list[float], list[float]]:
        """Per row: APL's entropy estimate for its prompt and its margin m, by the current policy."""
        model.eval()
        responses, margins = [], []
        for start in range(0, len(rows), config.train.batch_size):
            batch = rows[start:start + config.train.batch_size]
            tensors = scorer.tensors([r["prompt_ids"] for r in batch], [r["a_ids"] for r in batch],
                                     [r["b_ids"] for r in batch], engine.device)
            a, b = scorer(model, tensors)
            if len(pool_reference) < start + len(batch):
                ref_a, ref_b = reference.live(model, tensors)
                pool_reference.extend(zip(ref_a.sum.tolist(), ref_b.sum.tolist()))
            ref_a_sum, ref_b_sum = (torch.tensor([pool_reference[start + i][k] for i in range(len(batch))],
                                                 device=a.sum.device) for k in (0, 1))
            margins += (config.loss.beta * losses.pair_margin(a.sum, b.sum, ref_a_sum, ref_b_sum)).tolist()
            for row, mean_a, mean_b in zip(batch, a.mean.tolist(), b.mean.tolist()):
                pair = row["pair"]
                responses += [(pair.prompt, pair.response_a, mean_a), (pair.prompt, pair.response_b, mean_b)]
        model.train()
        entropy = prompt_entropies(responses)
        return [entropy[r["pair"].prompt] for r in rows], margins

    uniform = random.Random(config.train.seed)

    def acquire(model, ids: list[str], taken: set[str], size: int) -> list[str]:
        """This round's purchase: APL's rule on the current policy's scores, or a uniform draw (random)."""
        if size <= 0:
            return []
        if config.active.mode == "apl":
            entropy, margins = score_pool(model)
            return apl_acquire(ids, entropy, margins, taken, size, config.active.apl_oversample)
        return uniform.sample(sorted(set(ids) - taken), size)

    def rounds():
        """Buy a batch of labels, train on all labels so far; again until the budget or the pool is spent."""
        model, results, last = policy, [], False
        ids = [r["pair_id"] for r in rows]
        while not last:
            # labelled or asked already (by this run before a restart, or by another run sharing the ledger)
            taken = bought_so_far | set(ledger.pending()) | {r["pair_id"] for r in rows if known_label(r) is not None}
            left = min(config.active.max_queries - ledger.counts(run_id)["queried"], len(set(ids) - taken))
            bought = acquire(model, ids, taken, min(config.active.acquisition_batch_size, left))
            bought_so_far.update(bought)
            last = len(bought) >= left
            state.round += 1
            labelled = [r for r in rows if r["pair_id"] in bought_so_far or r["pair_id"] in taken]
            model, result = engine.fit(engine.unwrap(model), labelled, step, eval_fn,
                                       description=f"adpo ({config.active.mode}) round {state.round}: {len(bought)} "
                                                   "pairs to buy",
                                       epochs=config.epochs.num_epochs if last else config.active.apl_epochs_per_round,
                                       eval_steps=eval_steps)
            results.append(result)
        return model, merge_results(results)

    try:
        if config.active.mode in ("apl", "random"):
            model, result = rounds()
        else:
            model, result = engine.fit(policy, rows, step, eval_fn, description=f"adpo ({config.active.mode})",
                                       eval_steps=eval_steps)
    finally:
        annotator.close()  # waits for the requests under way
        keep_last_answers()  # late answers go to the ledger, also when training stopped on an error
    counts = ledger.counts(run_id)
    stats.asked, stats.unanswered = counts["queried"], counts["pending"]
    outcomes, levels, _ = ledger.audit_outcomes(run_id)
    stats.audited, stats.audit_agree, stats.audit_record = len(outcomes), sum(outcomes), list(zip(levels, outcomes))
    return model, result, stats


def judge_metrics(judge: LLMJudge) -> dict[str, float]:
    s = judge.stats
    return {"judge_requests": float(s.requests), "judge_failures": float(s.failures),
            "judge_no_verdict": float(s.garbage)}


def make_annotator(config: ADPOConfig, pairs: list[UnlabelledPair], labels: list[int] | None, ledger: LabelLedger,
                   source: str) -> Annotator:
    if config.labels.annotator == "stored":
        if labels is None:
            raise UserError(f"{source}: --annotator stored needs labelled rows (chosen/rejected); these are unlabelled: "
                            "use --annotator reward-model, llm-judge or human")
        return StoredLabels(pairs, labels)
    if config.labels.annotator == "reward-model":
        return RewardModelJudge(models.load_reward_model(config.labels.reward_model),
                                models.load_tokenizer(config.labels.reward_model or models.MINILM))
    if config.labels.annotator == "llm-judge":
        return LLMJudge(config.labels.judge_url, config.labels.judge_model, concurrency=config.labels.judge_concurrency,
                        max_retries=config.labels.judge_max_retries, timeout=config.labels.judge_timeout,
                        verdict_from=config.labels.judge_verdict)
    return HumanQueue(ledger)


def run(config: ADPOConfig) -> TrainResult:
    """`frugalign adpo`: validate, open the ledger, train while querying, save, summarise."""
    if not config.data.dataset:
        raise UserError("no dataset: pass --dataset (unlabelled prompt/response_a/response_b rows, or chosen/rejected)")
    tokenizer = models.load_tokenizer(config.model.model)
    pairs, labels = unlabelled_pairs(load_rows(config.data.dataset, config.data.dataset_split), config.data.dataset, tokenizer,
                                     config.train.seed)
    rows = unlabelled_rows(pairs, tokenizer, config, config.data.dataset)
    ledger = LabelLedger(config.labels.ledger or Path(config.train.output_dir) / "labels.sqlite", fingerprint(pairs),
                         allow_other_datasets=config.labels.ledger_shared)
    annotator = make_annotator(config, pairs, labels, ledger, config.data.dataset)
    truth = None
    if labels is not None:
        hidden = {pair_id(p.prompt, p.response_a, p.response_b): (p, lab) for p, lab in zip(pairs, labels)}
        truth = lambda pair: hidden[pair_id(pair.prompt, pair.response_a, pair.response_b)][1]  # noqa: E731
    instructions = ""
    if config.labels.serve:
        from frugalign.annotate.commands import read_instructions, serve_in_thread

        instructions = read_instructions(config.labels.serve_instructions)  # a bad file fails before the model loads
    # apl and random resume from the ledger, not from a checkpoint: from the initial policy, the labels bought are
    # reused (none bought twice) and their rounds buy the rest of the budget
    engine = Engine(dataclasses.replace(config, train=dataclasses.replace(config.train, resume=False))
                    if config.active.mode in ("apl", "random") else config)
    policy = load_policy(config, engine)
    app = None
    if config.labels.serve and engine.is_main:
        host, port = config.labels.serve.rsplit(":", 1)
        app = serve_in_thread(ledger.location, host, int(port), instructions=instructions)
        engine.print(f"annotation app: http://{config.labels.serve}/ (add people with `frugalign annotate add-annotator "
                     f"NAME --db {ledger.where}`)")
    try:
        model, result, stats = train_adpo(config, policy, tokenizer, rows, annotator, engine, truth, ledger=ledger)
    finally:
        if app is not None:
            app.should_exit = True
    # a judge that was asked and never answered trained nothing: an error, not a model (issue 19)
    judge = annotator if isinstance(annotator, LLMJudge) else None
    silent_judge = judge is not None and stats.sent > 0 and stats.answers == 0
    path = None if silent_judge else engine.save_model(model, tokenizer)
    engine.end()
    # queries, labels_pending, pseudo_labelled and skipped are running counters: their totals are above
    summary = {"pairs": len(rows), "queries (this run)": stats.asked, "labels received": stats.answers,
               "unanswered (this run)": stats.unanswered, "pseudo-labelled": stats.pseudo,
               "skipped (confident / budget)": f"{stats.skipped_confident} / {stats.skipped_budget}",
               "trained pairs (total)": int(result.total_metrics.get("trained_pairs", 0)),
               **result.summary(skip=("queries", "labels_pending", "pseudo_labelled", "skipped", "trained_pairs", "round")),
               "ledger": ledger.where, "model": str(path) if path else "not saved"}
    if judge is not None:
        s = judge.stats
        summary.update({"judge requests (retries)": f"{s.requests} ({s.retries})",
                        "judge questions failed": s.failures, "judge answers without a verdict": s.garbage})
        if s.errors:
            summary["judge errors"] = "; ".join(s.errors[-3:])
    if stats.pseudo_checked:
        summary["pseudo-label agreement"] = stats.pseudo_agree / stats.pseudo_checked
    if stats.audited:
        summary["audits (agreeing)"] = f"{stats.audited} ({stats.audit_agree})"
    print_summary(f"frugalign adpo ({config.active.mode})", summary)
    ledger.close()
    if silent_judge:
        s = judge.stats
        raise UserError(f"no label arrived from the judge {judge.url}: {stats.sent} questions sent, {s.requests} "
                        f"requests, {s.failures} questions failed, {s.garbage} answers without a verdict"
                        + (f" (last error: {s.errors[-1]})" if s.errors else "") + "; the model was not saved")
    return result
