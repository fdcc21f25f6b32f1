"""`frugalign dpo`: offline preference optimisation (DPO, IPO, SimPO, ORPO) on a pairs file; the trainer is
`training/dpo.py`, shared with the commands that build their pairs in memory."""

from __future__ import annotations

from frugalign import models
from frugalign.console import print_summary
from frugalign.engine import Engine, TrainResult
from frugalign.options import DPOConfig
from frugalign.training.common import load_policy
from frugalign.training.dpo import load_preference_rows, train_dpo


def run(config: DPOConfig) -> TrainResult:
    """`frugalign dpo`: load, validate, train, save, summarise."""
    tokenizer = models.load_tokenizer(config.model.model)
    train_rows, eval_rows = load_preference_rows(config, tokenizer)
    engine = Engine(config)
    policy = load_policy(config, engine)
    model, result = train_dpo(config, policy, tokenizer, train_rows, eval_rows, engine)
    path = engine.save_model(model, tokenizer)
    engine.end()
    print_summary(f"frugalign {config.loss.loss}", {"pairs": len(train_rows), "held-out pairs": len(eval_rows),
                                               **result.summary(), "model": str(path)})
    return result
