"""Token ids of examples, with the length rule every recipe shares.

- As TRL's DPOTrainer does, the prompt is tokenized alone and followed by each response, and the
  response's ids are those after the longest prefix the prompt's ids share with every one of them: a
  prompt that ends in a space, or a response that starts with one, is split where the tokenizer
  splits the joined text (`"The answer is " + "yes"` gives `' yes'`, not `' '` then `'yes'`), so the
  model is trained on the tokens it sees at inference. The prompt keeps the tokenizer's own special
  tokens (e.g. BOS) unless a chat template rendered it (the template already holds them).
- A response gets the EOS token appended, unless a chat template rendered it (it already ends the
  turn) or its text already ends with the EOS text (never two EOS).
- A plain-text example marked `chat` (the `--chat-template` rule, in `formats`) is rendered here, as one
  user turn and the assistant's answer, so the text people and the ledger see stays plain.
- Over-long rows, by `overlong`:
  `truncate` keeps the LAST `max_prompt_length` prompt tokens (the end of a prompt is what the
  response answers) and the FIRST `max_response_length` response tokens (EOS included in the count;
  a cut response loses its EOS, so the model is not taught to stop there);
  `drop` leaves the row out; `error` stops with the row, the field and the lengths.
The counts go into a TruncationReport, which recipes print.
"""

from __future__ import annotations

from dataclasses import dataclass

from frugalign.data.formats import Demonstration, LabelledCompletion, PreferenceExample, UnlabelledPair, chat_turn
from frugalign.errors import DataError, UserError

OVERLONG = ("truncate", "drop", "error")


@dataclass
class TruncationReport:
    total: int = 0
    prompts_truncated: int = 0
    responses_truncated: int = 0
    dropped: int = 0

    def summary(self) -> str:
        return (f"{self.total - self.dropped} of {self.total} rows kept; prompts truncated: {self.prompts_truncated}, "
                f"responses truncated: {self.responses_truncated}, dropped as over-long: {self.dropped}")


class _Lengths:
    """Applies the over-long rule to one row's fields."""

    def __init__(self, tokenizer, max_prompt: int, max_response: int, source: str, overlong: str, report):
        if overlong not in OVERLONG:
            raise UserError(f"overlong must be one of {OVERLONG}, got {overlong!r}")
        if tokenizer.eos_token_id is None:
            raise UserError("the tokenizer has no EOS token")
        self.tok, self.max_prompt, self.max_response = tokenizer, max_prompt, max_response
        self.source, self.overlong, self.report = source, overlong, report

    def split(self, prompt: str, responses: list[str], templated: bool) -> tuple[list[int], list[list[int]]]:
        """The prompt's ids and each response's, split where the joined texts' ids leave the prompt's."""
        special = not templated
        eos, eos_id = self.tok.eos_token or "", self.tok.eos_token_id
        if not templated and eos:  # the EOS id is appended below: not twice
            responses = [r.rstrip()[: -len(eos)] if r.rstrip().endswith(eos) else r for r in responses]
        prompt_ids = self.tok(prompt, add_special_tokens=special)["input_ids"]
        joined = [self.tok(prompt + r, add_special_tokens=special)["input_ids"] for r in responses]
        cut = min(_shared_prefix(prompt_ids, ids) for ids in joined)
        # one EOS: appended unless the template ended the turn or the tokenizer added one (add_eos_token)
        return prompt_ids[:cut], [ids[cut:] + ([] if templated or ids[-1:] == [eos_id] else [eos_id]) for ids in joined]

    def prompt(self, ids: list[int], row: int) -> list[int] | None:
        if len(ids) <= self.max_prompt:
            return ids
        if self.overlong == "error":
            raise DataError(self.source, f"{len(ids)} tokens, over max_prompt_length={self.max_prompt}", row, "prompt")
        if self.overlong == "drop":
            return None
        self.report.prompts_truncated += 1
        return ids[-self.max_prompt:]

    def response(self, ids: list[int], row: int, field: str) -> list[int] | None:
        if len(ids) <= self.max_response:
            return ids
        if self.overlong == "error":
            raise DataError(self.source, f"{len(ids)} tokens, over max_response_length={self.max_response}", row, field)
        if self.overlong == "drop":
            return None
        self.report.responses_truncated += 1
        return ids[: self.max_response]


def _shared_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _tokenize(examples, fields: list[tuple[str, str]], tokenizer, max_prompt_length, max_response_length, source,
              overlong) -> tuple[list[dict], TruncationReport]:
    report = TruncationReport(total=len(examples))
    lengths = _Lengths(tokenizer, max_prompt_length, max_response_length, source, overlong, report)
    rows = []
    for i, ex in enumerate(examples):
        prompt, responses, templated = ex.prompt, [getattr(ex, attr) for attr, _ in fields], ex.templated
        if ex.chat:  # a plain-text row, rendered as a chat turn (--chat-template)
            try:
                turns = [chat_turn(tokenizer, prompt, r) for r in responses]
            except ValueError as e:
                raise DataError(source, str(e), i + 1, "prompt") from None
            prompt, responses, templated = turns[0][0], [r for _, r in turns], True
        prompt_ids, response_ids = lengths.split(prompt, responses, templated)
        row = {"index": i, "prompt_ids": lengths.prompt(prompt_ids, i + 1)}
        for (attr, key), ids in zip(fields, response_ids):
            row[key] = lengths.response(ids, i + 1, attr)
        if any(v is None for v in row.values()):
            report.dropped += 1
            continue
        if isinstance(ex, PreferenceExample):
            row["weight"] = ex.weight
        if isinstance(ex, LabelledCompletion):
            row["desirable"] = ex.desirable
        rows.append(row)
    if not rows:
        raise DataError(source, f"no rows left after the over-long rule ({report.summary()})")
    return rows, report


def tokenize_preferences(examples: list[PreferenceExample], tokenizer, max_prompt_length: int, max_response_length: int,
                         source: str, overlong: str = "truncate") -> tuple[list[dict], TruncationReport]:
    """Rows {index, prompt_ids, chosen_ids, rejected_ids, weight}; index points into `examples`."""
    return _tokenize(examples, [("chosen", "chosen_ids"), ("rejected", "rejected_ids")], tokenizer,
                     max_prompt_length, max_response_length, source, overlong)


def tokenize_demonstrations(examples: list[Demonstration], tokenizer, max_prompt_length: int, max_response_length: int,
                            source: str, overlong: str = "truncate") -> tuple[list[dict], TruncationReport]:
    """Rows {index, prompt_ids, completion_ids}."""
    return _tokenize(examples, [("completion", "completion_ids")], tokenizer, max_prompt_length, max_response_length,
                     source, overlong)


def tokenize_labelled(examples: list[LabelledCompletion], tokenizer, max_prompt_length: int, max_response_length: int,
                      source: str, overlong: str = "truncate") -> tuple[list[dict], TruncationReport]:
    """Rows {index, prompt_ids, completion_ids, desirable}."""
    return _tokenize(examples, [("completion", "completion_ids")], tokenizer, max_prompt_length, max_response_length,
                     source, overlong)


def tokenize_unlabelled(pairs: list[UnlabelledPair], tokenizer, max_prompt_length: int, max_response_length: int,
                        source: str, overlong: str = "truncate") -> tuple[list[dict], TruncationReport]:
    """Rows {index, prompt_ids, a_ids, b_ids}."""
    return _tokenize(pairs, [("response_a", "a_ids"), ("response_b", "b_ids")], tokenizer, max_prompt_length,
                     max_response_length, source, overlong)
