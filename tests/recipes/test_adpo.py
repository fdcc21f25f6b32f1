"""`frugalign adpo` end to end on a tiny model, with the ledger proving no pair is bought twice."""

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys

import pytest

from frugalign.active.ledger import LabelLedger
from frugalign.cli import main
from frugalign.config import load_config
from frugalign.errors import UserError
from tests.conftest import preference_rows

TRAIN = ["--learning-rate", "2e-3", "--batch-size", "8", "--warmup-ratio", "0"]
UNIQUE = len({tuple(sorted(r.items())) for r in preference_rows(48)})  # the pool repeats some pairs


def votes_per_pair(ledger):
    with contextlib.closing(LabelLedger(ledger, read_only=True)) as opened:
        return [n for (n,) in opened.db.execute("SELECT COUNT(*) FROM votes GROUP BY pair_id ORDER BY pair_id")]


def queried(ledger):
    """Pairs asked so far, 0 while there is no ledger yet: read-only, a poller never creates one or writes."""
    try:
        opened = LabelLedger(ledger, read_only=True)
    except UserError:
        return 0
    with contextlib.closing(opened):
        return opened.counts()["queried"]


def test_dpo_mode_asks_each_pair_once_over_epochs_and_runs_share_the_ledger(tmp_path, tiny_model_dir, preference_file,
                                                                             ledger_at):
    ledger = ledger_at
    common = ["--model", str(tiny_model_dir), "--dataset", str(preference_file), "--ledger", ledger, *TRAIN]
    assert main(["adpo", "--mode", "dpo", "--num-epochs", "3", "--output-dir", str(tmp_path / "a"), *common]) == 0
    assert queried(ledger) == UNIQUE and votes_per_pair(ledger) == [1] * UNIQUE
    # a second run on the same pool buys nothing: every label is reused
    assert main(["adpo", "--mode", "dpo", "--output-dir", str(tmp_path / "b"), *common]) == 0
    assert queried(ledger) == UNIQUE and votes_per_pair(ledger) == [1] * UNIQUE
    last = json.loads((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["queries"] == 0.0  # this run's own queries


def test_adpo_pseudo_labels_confident_pairs_and_respects_the_budget(tmp_path, tiny_model_dir, preference_file):
    out = tmp_path / "adpo"
    assert main(["adpo", "--model", str(tiny_model_dir), "--dataset", str(preference_file), "--output-dir", str(out),
                 "--gamma", "0.05", "--num-epochs", "4", "--max-queries", "20", "--audit-rate", "0", *TRAIN]) == 0
    ledger = out / "labels.sqlite"
    assert 0 < queried(ledger) <= 20
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["pseudo_labelled"] > 0
    assert "pseudo_label_agreement" in metrics[-1]
    export = tmp_path / "labels.jsonl"
    assert main(["labels", "export", "--ledger", str(ledger), "--out", str(export)]) == 0
    rows = [json.loads(x) for x in export.read_text().splitlines()]
    assert len(rows) == queried(ledger) and set(rows[0]) == {"prompt", "chosen", "rejected"}
    # the exported labels are the dataset's own (the stored annotator revealed them)
    truth = {(r["prompt"], r["chosen"], r["rejected"]) for r in preference_rows(48)}
    assert all((r["prompt"], r["chosen"], r["rejected"]) in truth for r in rows)


def test_unlabelled_rows_need_a_real_annotator(tmp_path, tiny_model_dir, capsys):
    path = tmp_path / "u.jsonl"
    path.write_text(json.dumps({"prompt": "q", "response_a": "x", "response_b": "y"}) + "\n")
    assert main(["adpo", "--model", str(tiny_model_dir), "--dataset", str(path), "--output-dir", str(tmp_path / "o")]) == 2
    assert "--annotator stored needs labelled rows" in capsys.readouterr().err


def test_ledger_of_another_dataset_is_refused(tmp_path, tiny_model_dir, preference_file, capsys):
    ledger = tmp_path / "l.sqlite"
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(r) + "\n" for r in preference_rows(10, seed=9)))
    common = ["--model", str(tiny_model_dir), "--ledger", str(ledger), "--max-steps", "1"]
    assert main(["adpo", "--dataset", str(preference_file), "--output-dir", str(tmp_path / "a"), *common]) == 0
    assert main(["adpo", "--dataset", str(other), "--output-dir", str(tmp_path / "b"), *common]) == 2
    assert "another dataset" in capsys.readouterr().err


SIGKILL_AFTER_CHECKPOINT = """
import os, signal, sys
from frugalign import engine
save = engine.Engine.save_checkpoint
def save_then_die(self, step):
    save(self, step)
    if step == {step}:
        os.kill(os.getpid(), signal.SIGKILL)
engine.Engine.save_checkpoint = save_then_die
from frugalign.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_kill_9_then_resume_buys_no_label_twice(tmp_path, tiny_model_dir, preference_file, ledger_at):
    out = tmp_path / "run"
    ledger = ledger_at
    args = ["adpo", "--mode", "dpo", "--model", str(tiny_model_dir), "--dataset", str(preference_file), "--output-dir",
            str(out), "--batch-size", "2", "--num-epochs", "2", "--save-steps", "2", "--learning-rate", "1e-3",
            "--ledger", ledger]
    # the process kills itself (SIGKILL) right after its step-4 checkpoint: the same point on any machine, where a
    # kill sent by a polling test landed wherever the load put it (on a busy machine, after every label was bought)
    killed = subprocess.run([sys.executable, "-c", SIGKILL_AFTER_CHECKPOINT.format(step=4), *args],
                            capture_output=True, text=True, env=dict(os.environ, COLUMNS="200"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    before = queried(ledger)
    assert 8 <= before < UNIQUE  # 4 steps of 2 pairs asked, the rest not yet
    resumed = subprocess.run([sys.executable, "-m", "frugalign", *args, "--resume"], capture_output=True, text=True,
                             env=dict(os.environ, COLUMNS="200"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert queried(ledger) == UNIQUE and votes_per_pair(ledger) == [1] * UNIQUE


def test_failing_judge_stops_with_a_checkpoint_and_keeps_labels(tmp_path, tiny_model_dir, preference_file, capsys):
    """A judge endpoint that refuses: a clear error, a checkpoint to resume from, no label invented."""
    out = tmp_path / "judge"
    code = main(["adpo", "--model", str(tiny_model_dir), "--dataset", str(preference_file), "--output-dir", str(out),
                 "--annotator", "llm-judge", "--judge-url", "http://127.0.0.1:9/v1", "--judge-max-retries", "0",
                 "--max-steps", "6", "--batch-size", "4"])
    assert code == 2
    err = capsys.readouterr().err
    assert "judge http://127.0.0.1:9/v1/chat/completions failed" in err and "Traceback" not in err
    ledger = out / "labels.sqlite"
    assert sqlite3.connect(ledger).execute("SELECT COUNT(label) FROM pairs").fetchone()[0] == 0
    assert queried(ledger) > 0  # the queries were recorded: a resumed run will ask them again, not new ones


def test_query_warmup_asks_everything_until_enough_labels(tmp_path, tiny_model_dir, preference_file):
    out = tmp_path / "warm"
    # gamma 0: any non-zero confidence would pseudo-label; the warm-up keeps asking instead
    assert main(["adpo", "--model", str(tiny_model_dir), "--dataset", str(preference_file), "--output-dir", str(out),
                 "--gamma", "0", "--query-warmup", "1000", "--num-epochs", "2", *TRAIN]) == 0
    assert queried(out / "labels.sqlite") == UNIQUE
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["pseudo_labelled"] == 0.0



def run_adpo_on(tmp_path, tokenizer, make_annotator, audit_rate: float, name: str, trust_by_confidence: bool = False):
    """ADPO (paper's rule when audit_rate is 0) on the learnable pool, with `make_annotator(pairs, labels, ledger)`:
    its query stats and training result."""
    from frugalign.active.ledger import LabelLedger, fingerprint
    from frugalign.data import unlabelled_pairs
    from frugalign.models import tiny_causal_lm
    from frugalign.recipes.adpo import ADPOConfig, train_adpo, unlabelled_rows

    pairs, labels = unlabelled_pairs(preference_rows(300), "pool", tokenizer, 0)
    config = load_config(ADPOConfig, output_dir=str(tmp_path / name), learning_rate=5e-3, batch_size=8, num_epochs=3,
                         warmup_ratio=0.0, gamma=0.05, audit_rate=audit_rate, audit_window=20, logging_steps=1000,
                         trust_by_confidence=trust_by_confidence)
    ledger = LabelLedger(tmp_path / name / "labels.sqlite", fingerprint(pairs))
    _, result, stats = train_adpo(config, tiny_causal_lm(len(tokenizer), seed=0), tokenizer,
                                  unlabelled_rows(pairs, tokenizer, config, "pool"), make_annotator(pairs, labels, ledger),
                                  ledger=ledger)
    return stats, result


def coin_flips(pairs, labels, ledger):
    import random

    from frugalign.active.annotators import StoredLabels

    return StoredLabels(pairs, [random.Random(i).choice([-1, 1]) for i in range(len(pairs))])


class AgreesWithAudits:
    """Answers every audit with the policy's own guess (read back from the ledger), other pairs truthfully."""

    name = "agreeing"
    records_in_ledger = False

    def __init__(self, pairs, labels, ledger):
        from frugalign.active.annotators import StoredLabels

        self.ledger, self.truthful, self.answers = ledger, StoredLabels(pairs, labels), {}

    def submit(self, pairs, priorities=None):
        from frugalign.active.ledger import pair_id

        true = self.truthful.answer(pairs)
        for pair, label in zip(pairs, true):
            pid = pair_id(pair.prompt, pair.response_a, pair.response_b)
            audit = self.ledger.db.execute("SELECT guess, confidence FROM audits WHERE pair_id = ?", (pid,)).fetchone()
            # the ledger keeps the guess in its canonical order (response_a first when it sorts first)
            orientation = 1 if pair.response_a <= pair.response_b else -1
            self.answers[pid] = self.answer_audit(audit[0] * orientation, audit[1]) if audit else label

    def answer_audit(self, guess: int, confidence: float) -> int:
        return guess

    def collect(self):
        answers, self.answers = self.answers, {}
        return answers

    def close(self):
        pass


def test_confidence_earns_trust_when_the_audits_agree(tmp_path, tokenizer):
    stats, _ = run_adpo_on(tmp_path, tokenizer, AgreesWithAudits, 0.1, "agreeing")
    assert stats.audited >= 11 and stats.audit_agree == stats.audited
    assert stats.pseudo > 0
    assert stats.audited < 20 + 0.2 * stats.pseudo  # early audits stop at trust; then only the share is audited


class AgreesWhenSure(AgreesWithAudits):
    """Answers an audit with the policy's guess when it was made at |m| >= 0.1, with the other response below."""

    name = "agrees-when-sure"
    audits: list[tuple[float, bool]] = []

    def answer_audit(self, guess: int, confidence: float) -> int:
        self.audits.append((confidence, confidence >= 0.1))
        return guess if confidence >= 0.1 else -guess


def test_trust_by_confidence_pseudo_labels_where_the_policy_is_right_when_overall_trust_would_not(tmp_path, tokenizer):
    AgreesWhenSure.audits = []
    overall, _ = run_adpo_on(tmp_path, tokenizer, AgreesWhenSure, 0.1, "overall")
    assert sum(not agree for _, agree in AgreesWhenSure.audits) >= 5  # wrong below 0.1, often enough to matter
    assert overall.pseudo == 0 and overall.skipped_confident > 0
    AgreesWhenSure.audits = []
    by_level, result = run_adpo_on(tmp_path, tokenizer, AgreesWhenSure, 0.1, "by-level", trust_by_confidence=True)
    assert by_level.pseudo > 0 and by_level.skipped_confident > 0  # trusted above a level, skipping below it
    level = result.last_metrics["trusted_confidence"]  # the level found from the audits: above the lowest ones
    above = [agree for confidence, agree in AgreesWhenSure.audits if confidence >= level]
    assert level > min(confidence for confidence, _ in AgreesWhenSure.audits) and sum(above) / len(above) >= 0.75
    # each answered audit's |m| (a confident pair's: above gamma) and outcome, as the annotator saw them
    assert len(by_level.audit_record) == by_level.audited and all(m > 0.05 for m, _ in by_level.audit_record)
    assert sorted(by_level.audit_record) == sorted(AgreesWhenSure.audits)


def test_audits_that_disagree_keep_pseudo_labels_off(tmp_path, tokenizer):
    """An annotator whose answers are coin flips: no confidence can earn trust, so nothing is pseudo-labelled
    and confident pairs are skipped; the paper's rule (no audits) pseudo-labels them regardless."""
    audited, _ = run_adpo_on(tmp_path, tokenizer, coin_flips, 0.1, "audited")
    assert audited.audited >= 10 and audited.pseudo == 0 and audited.skipped_confident > 0
    paper, _ = run_adpo_on(tmp_path, tokenizer, coin_flips, 0.0, "paper")
    assert paper.audited == 0 and paper.pseudo > 0


def test_judge_that_never_gives_a_verdict_fails_the_run_and_reports_its_counts(tmp_path, tiny_model_dir,
                                                                               preference_file, vllm_like, capsys):
    """The judge answers slower than the one training step, and never with a verdict: the run used to end
    with exit 0, 0 pairs trained, and nothing said. Now its summary counts the judge's requests and
    failures, and the run fails."""
    vllm_like.answer = staticmethod(lambda prompt: "Both responses have merits.")
    vllm_like.delay = 2.0
    out = tmp_path / "silent"
    code = main(["adpo", "--model", str(tiny_model_dir), "--dataset", str(preference_file), "--output-dir", str(out),
                 "--annotator", "llm-judge", "--judge-url", vllm_like.url, "--judge-max-retries", "0",
                 "--max-steps", "1", "--batch-size", "4"])
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, err[-2000:]
    assert "no label arrived from the judge" in err and "answers without a verdict" in err and "Traceback" not in err
    assert "judge requests" in captured.out  # the summary table, on stdout like every summary
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"judge_requests", "judge_failures", "judge_no_verdict"} <= set(last)
    assert not (out / "model").exists()


def test_apl_buys_its_budget_in_rounds_of_the_batch_size_and_a_rerun_buys_nothing_twice(tmp_path, tiny_model_dir,
                                                                                         preference_file, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM

    from frugalign.training.dpo import Reference

    scored_in_eval = []  # rows the frozen reference scored while the pool was scored (the policy in eval mode)
    live = Reference.live

    def counting_live(self, policy, tensors):
        if not policy.training:
            scored_in_eval.append(len(tensors["input_ids"]))
        return live(self, policy, tensors)

    monkeypatch.setattr(Reference, "live", counting_live)

    out = tmp_path / "apl"
    ledger = out / "labels.sqlite"
    command = ["adpo", "--mode", "apl", "--model", str(tiny_model_dir), "--dataset", str(preference_file),
               "--output-dir", str(out), "--max-queries", "20", "--acquisition-batch-size", "8", "--logging-steps", "1",
               *TRAIN]
    assert main(command) == 0
    assert queried(ledger) == 20 and votes_per_pair(ledger) == [1] * 20
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    bought_by_round = {int(m["round"]): m["queries"] for m in metrics}  # the last line of each round
    assert bought_by_round == {1: 8.0, 2: 16.0, 3: 20.0}
    # three rounds score the 48-row pool, the frozen reference only in the first: one pass of batches of 8
    assert len(scored_in_eval) == 48 // 8
    trained = AutoModelForCausalLM.from_pretrained(out / "model")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert any(not torch.equal(a, b) for a, b in zip(trained.parameters(), base.parameters()))
    # resumed: its budget is spent, it trains on the labels it has and buys nothing
    assert main([*command, "--resume"]) == 0
    assert queried(ledger) == 20 and votes_per_pair(ledger) == [1] * 20
    # another run on the ledger buys only pairs nobody bought
    other = [str(tmp_path / "other") if arg == str(out) else arg for arg in command]
    assert main([*other, "--ledger", str(ledger)]) == 0
    assert queried(ledger) == min(40, UNIQUE) and votes_per_pair(ledger) == [1] * min(40, UNIQUE)


def test_apl_scores_a_pair_that_stands_twice_each_way_round_with_its_own_reference(tmp_path, tiny_model_dir,
                                                                                  monkeypatch):
    import frugalign.recipes.adpo as adpo_recipe

    rows = preference_rows(8)
    data = tmp_path / "twice.jsonl"  # each pair twice: the pool shows some of them once a-b, once b-a
    data.write_text("".join(json.dumps(r) + "\n" for r in rows + rows))
    seen = []
    acquire = adpo_recipe.apl_acquire

    def spy(ids, entropy, margins, taken, size, oversample):
        seen.append((list(ids), list(margins)))
        return acquire(ids, entropy, margins, taken, size, oversample)

    monkeypatch.setattr(adpo_recipe, "apl_acquire", spy)
    assert main(["adpo", "--mode", "apl", "--model", str(tiny_model_dir), "--dataset", str(data), "--output-dir",
                 str(tmp_path / "apl"), "--max-queries", "6", "--acquisition-batch-size", "2", *TRAIN]) == 0
    assert len(seen) == 3  # rounds 2 and 3 use the reference's scores of round 1
    flipped = 0
    for ids, margins in seen:
        by_pair = {}
        for pid, m in zip(ids, margins):
            by_pair.setdefault(pid, []).append(m)
        for first, second in (ms for ms in by_pair.values() if len(ms) == 2):
            assert abs(abs(first) - abs(second)) < 1e-4  # the same pair, the same confidence, whichever way round
            flipped += first * second < 0
    assert flipped  # some pair stood both ways round after training moved the margins


def test_random_buys_uniform_pairs_in_apls_rounds_the_same_for_a_seed(tmp_path, tiny_model_dir, preference_file):
    def bought(out):
        with contextlib.closing(LabelLedger(out / "labels.sqlite", read_only=True)) as opened:
            return sorted(pid for (pid,) in opened.db.execute("SELECT pair_id FROM votes"))

    runs = []
    for name in ("first", "second"):
        out = tmp_path / name
        assert main(["adpo", "--mode", "random", "--model", str(tiny_model_dir), "--dataset", str(preference_file),
                     "--output-dir", str(out), "--max-queries", "20", "--acquisition-batch-size", "8",
                     "--logging-steps", "1", *TRAIN]) == 0
        metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert {int(m["round"]): m["queries"] for m in metrics} == {1: 8.0, 2: 16.0, 3: 20.0}  # APL's schedule
        assert max(m["trained_pairs"] for m in metrics) <= 8  # only bought pairs are in its batches
        runs.append(bought(out))
    assert len(runs[0]) == 20 and runs[0] == runs[1]  # one vote per pair; a seed draws the same pairs


def test_random_onepass_asks_a_uniform_subset_of_its_budget_in_one_pass(tmp_path, tiny_model_dir, preference_file):
    from frugalign import models
    from frugalign.active.ledger import pair_id
    from frugalign.active.query_rule import uniform_subset
    from frugalign.data import load_rows, unlabelled_pairs
    from frugalign.options import ADPOConfig

    out = tmp_path / "run"
    assert main(["adpo", "--mode", "random-onepass", "--model", str(tiny_model_dir), "--dataset", str(preference_file),
                 "--output-dir", str(out), "--max-queries", "10", "--logging-steps", "1", *TRAIN]) == 0
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert "round" not in metrics[-1] and metrics[-1]["queries"] == 10.0  # one pass, no rounds
    with contextlib.closing(LabelLedger(out / "labels.sqlite", read_only=True)) as opened:
        asked = {pid for (pid,) in opened.db.execute("SELECT pair_id FROM votes")}
    pairs, _ = unlabelled_pairs(load_rows(str(preference_file), "train"), str(preference_file),
                                models.load_tokenizer(str(tiny_model_dir)), 0)
    ids = [pair_id(p.prompt, p.response_a, p.response_b) for p in pairs]
    assert asked == uniform_subset(ids, seed=0, size=10)  # exactly the draw: the budget, no pair outside it
    with pytest.raises(UserError, match="mode random-onepass needs a budget"):
        load_config(ADPOConfig, mode="random-onepass")


def test_apl_needs_a_budget_and_refuses_step_and_checkpoint_options():
    from frugalign.options import ADPOConfig

    with pytest.raises(UserError, match="mode apl needs a budget"):
        load_config(ADPOConfig, mode="apl")
    with pytest.raises(UserError, match="mode random trains in rounds"):
        load_config(ADPOConfig, mode="random", max_queries=8, max_steps=5)
    with pytest.raises(UserError, match="buys no label"):
        load_config(ADPOConfig, mode="apl", max_queries=0)
    for bad in ({"max_steps": 5}, {"save_steps": 2}, {"save_final_checkpoint": True}):
        with pytest.raises(UserError, match="rounds of epochs"):
            load_config(ADPOConfig, mode="apl", max_queries=8, **bad)
    with pytest.raises(UserError, match="acquisition_batch_size"):
        load_config(ADPOConfig, mode="apl", max_queries=8, acquisition_batch_size=0)
    load_config(ADPOConfig, mode="apl", max_queries=8, resume=True)  # resuming reuses the ledger
