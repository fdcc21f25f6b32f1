"""TRL's dataset formats, validated row by row and turned into plain-text examples.

Accepted (each row is one of):
- preferences: `prompt`, `chosen`, `rejected` (explicit prompt) or only `chosen`, `rejected`
  (implicit prompt), optional `weight` (a finite number >= 0) and `margin` (a finite number, for reward
  models);
- demonstrations: `prompt`, `completion`, or `messages` (the last message, the assistant's, is the
  completion);
- unlabelled pairs (active querying): `prompt`, `response_a`, `response_b`;
- labelled completions (KTO, unpaired): `prompt`, `completion`, `label` (true: desirable, false:
  undesirable); preference rows are accepted too, each split into its chosen (desirable) and its
  rejected (undesirable) completion.
Each field is either a string (standard format) or a list of `{"role", "content"}` messages
(conversational format), rendered with the tokenizer's chat template: the prompt with the generation
prompt appended, a completion as the rendered full conversation minus the rendered prompt.

Plain strings follow one rule in every command (`--chat-template`, `chat_template` here): `auto` (the
default) renders them as one user turn and the assistant's answer with the tokenizer's chat template
when it has one (an instruct model is trained in the format it is prompted in, as `eval generate` and
the benches prompt it), `on` always (an error without a template), `off` never (raw text, as TRL treats
strings). The examples keep the plain text (what the ledger, annotators and judges see) and are marked
`chat`; the rendering happens when they are tokenized. A string prompt that already starts as the
template starts a user turn is not rendered twice.

Implicit prompts: for strings, the prompt is the longest common prefix of chosen and rejected, cut
back to its last whitespace so that no word is split between prompt and response; for messages, the
prompt is the leading messages both conversations share.

Every row is checked before anything is returned; the first problem raises a DataError that names
the file, the row (counted from 1) and the field.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from frugalign.errors import DataError, UserError

ROLES = ("system", "user", "assistant", "tool")
CHAT_TEMPLATE = ("auto", "on", "off")


@dataclass
class PreferenceExample:
    prompt: str
    chosen: str
    rejected: str
    weight: float = 1.0
    templated: bool = False  # rendered by a chat template, which already holds the special tokens
    margin: float = 0.0  # how much better chosen is (reward models: Bradley-Terry with margin)
    chat: bool = False  # plain text, rendered as a user turn and the assistant's answer when tokenized


@dataclass
class Demonstration:
    prompt: str
    completion: str
    templated: bool = False
    chat: bool = False


@dataclass
class LabelledCompletion:
    prompt: str
    completion: str
    desirable: bool
    templated: bool = False
    chat: bool = False


@dataclass
class UnlabelledPair:
    prompt: str
    response_a: str
    response_b: str
    templated: bool = False
    chat: bool = False  # the ledger and annotators see the plain text; the model, its chat rendering


class _Row:
    """Field access for one row, with errors that say where."""

    def __init__(self, row: dict, source: str, number: int):
        self.row, self.source, self.number = row, source, number

    def error(self, message: str, field: str | None = None) -> DataError:
        return DataError(self.source, message, row=self.number, field=field)

    def require(self, *fields: str) -> None:
        missing = [f for f in fields if f not in self.row]
        if missing:
            found = ", ".join(sorted(self.row)) or "none"
            raise self.error(f"missing column(s) {', '.join(missing)} (columns found: {found})", missing[0])

    def text(self, field: str) -> str:
        value = self.row.get(field)
        if value is None:
            raise self.error("is empty (null)", field)
        if not isinstance(value, str):
            raise self.error(f"expected a string or a list of messages, got {type(value).__name__}", field)
        if not value.strip():
            raise self.error("is an empty string", field)
        return value

    def messages(self, field: str) -> list[dict]:
        value = self.row.get(field)
        if not isinstance(value, list) or not value:
            raise self.error("expected a non-empty list of messages", field)
        for k, m in enumerate(value):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise self.error(f"message {k + 1} must be an object with 'role' and 'content'", field)
            if m["role"] not in ROLES:
                raise self.error(f"message {k + 1} has unknown role {m['role']!r} (expected one of {ROLES})", field)
            if not isinstance(m["content"], str) or not m["content"].strip():
                raise self.error(f"message {k + 1} has empty or non-string content", field)
        return value

    def is_conversational(self, *fields: str) -> bool:
        return any(isinstance(self.row.get(f), list) for f in fields)

    def numeric(self, field: str) -> float | None:
        """The field as a float, None when it is not a number; an integer beyond a float's range is inf."""
        value = self.row[field]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        try:
            return float(value)
        except OverflowError:
            return math.inf

    def weight(self) -> float:
        if "weight" not in self.row or self.row["weight"] is None:
            return 1.0
        w = self.numeric("weight")
        if w is None:
            raise self.error(f"expected a number, got {self.row['weight']!r}", "weight")
        if not math.isfinite(w) or w < 0:
            raise self.error(f"must be a finite number >= 0, got {w!r}", "weight")
        return w

    def margin(self) -> float:
        if self.row.get("margin") is None:
            return 0.0
        m = self.numeric("margin")
        if m is None or not math.isfinite(m):
            raise self.error(f"expected a finite number, got {self.row['margin'] if m is None else m!r}", "margin")
        return m


def chat_turn(tokenizer, prompt: str, response: str) -> tuple[str, str]:
    """A plain prompt and response rendered with the tokenizer's chat template: the prompt as one user turn
    with the generation prompt, the response as the rest of the rendered conversation. ValueError when
    the template renders the conversation so that it does not start with the rendered prompt."""
    turn = [{"role": "user", "content": prompt}]
    head = tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(turn + [{"role": "assistant", "content": response}], tokenize=False)
    if not full.startswith(head):
        raise ValueError("the chat template renders the conversation so that it does not start with the rendered "
                         "prompt; use --chat-template off")
    return head, full[len(head):]


def _turn_head(tokenizer) -> str:
    """How the chat template starts a user turn (what precedes its content)."""
    return tokenizer.apply_chat_template([{"role": "user", "content": "\x00"}], tokenize=False,
                                         add_generation_prompt=True).split("\x00")[0]


def render_prompt(tokenizer, prompt: str) -> str:
    """A plain prompt as one user turn with the generation prompt, unless it already starts as the template
    starts a user turn (then it is returned as it is)."""
    head = _turn_head(tokenizer)
    if head and prompt.startswith(head):
        return prompt
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)


def renders_strings(chat_template: str, tokenizer, source: str) -> bool:
    """Whether plain-string rows get the tokenizer's chat template (see the module's docstring)."""
    if chat_template not in CHAT_TEMPLATE:
        raise UserError(f"chat_template must be one of {', '.join(CHAT_TEMPLATE)}, got {chat_template!r}")
    has = tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))
    if chat_template == "on" and not has:
        raise UserError(f"{source}: --chat-template on, but the tokenizer has no chat template")
    return has and chat_template != "off"


class _Template:
    """Chat-template rendering of conversational rows, and of string rows as one user turn."""

    def __init__(self, tokenizer, source: str):
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise UserError(f"{source}: conversational rows need a tokenizer with a chat template")
        self.tokenizer = tokenizer
        self.head = _turn_head(tokenizer)  # a string prompt that starts so is rendered already

    def prompt(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def rendered(self, text: str) -> bool:
        return bool(self.head) and text.startswith(self.head)

    def completion(self, row: _Row, field: str, prompt: list[dict], completion: list[dict]) -> str:
        head = self.prompt(prompt)
        full = self.tokenizer.apply_chat_template(prompt + completion, tokenize=False)
        if not full.startswith(head):
            raise row.error("the chat template renders the conversation so that it does not start with the "
                            "rendered prompt; use the standard (string) format instead", field)
        rest = full[len(head):]
        if not rest.strip():
            raise row.error("renders to an empty completion", field)
        return rest


def _common_prefix_prompt(row: _Row, chosen: str, rejected: str) -> tuple[str, str, str]:
    n = 0
    for x, y in zip(chosen, rejected):
        if x != y:
            break
        n += 1
    # cut after the last whitespace of the shared prefix, so no word is split
    cut = max(chosen.rfind(" ", 0, n), chosen.rfind("\n", 0, n)) + 1
    if cut <= 0:
        raise row.error("no prompt column and chosen and rejected share no prefix to use as the prompt", "prompt")
    return chosen[:cut], chosen[cut:], rejected[cut:]


def _shared_messages(row: _Row, chosen: list[dict], rejected: list[dict]) -> int:
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    if n == 0:
        raise row.error("no prompt column and chosen and rejected share no leading messages", "prompt")
    if n == len(chosen) or n == len(rejected):
        raise row.error("one conversation is a prefix of the other: nothing left to compare", "chosen")
    return n


def preference_examples(rows: list[dict], source: str, tokenizer=None, chat_template: str = "auto"
                        ) -> list[PreferenceExample]:
    """(prompt, chosen, rejected, weight) from rows in any of TRL's preference formats."""
    out = []
    template = None  # for conversational rows, made on the first
    wrap = _Template(tokenizer, source) if renders_strings(chat_template, tokenizer, source) else None  # strings
    for number, raw in enumerate(rows, start=1):
        row = _Row(raw, source, number)
        row.require("chosen", "rejected")
        weight = row.weight()
        if row.is_conversational("prompt", "chosen", "rejected"):
            template = template or _Template(tokenizer, source)
            chosen, rejected = row.messages("chosen"), row.messages("rejected")
            if "prompt" in raw:
                prompt = row.messages("prompt")
            else:
                n = _shared_messages(row, chosen, rejected)
                prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
            example = PreferenceExample(template.prompt(prompt), template.completion(row, "chosen", prompt, chosen),
                                        template.completion(row, "rejected", prompt, rejected), weight, True)
        else:
            chosen, rejected = row.text("chosen"), row.text("rejected")
            if "prompt" in raw:
                example = PreferenceExample(row.text("prompt"), chosen, rejected, weight)
            else:
                prompt, chosen, rejected = _common_prefix_prompt(row, chosen, rejected)
                if not chosen.strip() or not rejected.strip():
                    raise row.error("is empty once the shared prompt is removed", "chosen" if not chosen.strip() else "rejected")
                example = PreferenceExample(prompt, chosen, rejected, weight)
            example.chat = wrap is not None and not wrap.rendered(example.prompt)
        if example.chosen == example.rejected:
            raise row.error("chosen and rejected are identical: a pair must differ", "rejected")
        example.margin = row.margin()
        out.append(example)
    return out


def demonstrations(rows: list[dict], source: str, tokenizer=None, chat_template: str = "auto") -> list[Demonstration]:
    """(prompt, completion) from `prompt`/`completion` or `messages` rows."""
    out = []
    template = None  # for conversational rows, made on the first
    wrap = _Template(tokenizer, source) if renders_strings(chat_template, tokenizer, source) else None  # strings
    for number, raw in enumerate(rows, start=1):
        row = _Row(raw, source, number)
        if "messages" in raw:
            template = template or _Template(tokenizer, source)
            messages = row.messages("messages")
            if messages[-1]["role"] != "assistant" or len(messages) < 2:
                raise row.error("the last message must be the assistant's, after at least one other", "messages")
            prompt = messages[:-1]
            out.append(Demonstration(template.prompt(prompt),
                                     template.completion(row, "messages", prompt, messages[-1:]), True))
            continue
        row.require("prompt", "completion")
        if row.is_conversational("prompt", "completion"):
            template = template or _Template(tokenizer, source)
            prompt = row.messages("prompt")
            out.append(Demonstration(template.prompt(prompt),
                                     template.completion(row, "completion", prompt, row.messages("completion")), True))
        else:
            prompt = row.text("prompt")
            out.append(Demonstration(prompt, row.text("completion"), chat=wrap is not None and not wrap.rendered(prompt)))
    return out


def unlabelled_pairs(rows: list[dict], source: str, tokenizer=None, seed: int = 0, chat_template: str = "auto"
                     ) -> tuple[list[UnlabelledPair], list[int] | None]:
    """Pairs to be labelled by an annotator, and their hidden labels when the rows are labelled.

    Rows with `response_a`/`response_b` are unlabelled (labels: None). A labelled preference dataset
    (`chosen`/`rejected`) is accepted for simulation: which response becomes `a` is drawn with a
    seeded coin, so position carries no signal, and labels[i] is +1 when `a` is the chosen one."""
    if rows and "response_a" not in rows[0] and "chosen" in rows[0]:
        rng = random.Random(seed)
        pairs, labels = [], []
        for ex in preference_examples(rows, source, tokenizer, chat_template):
            if rng.random() < 0.5:
                pairs.append(UnlabelledPair(ex.prompt, ex.chosen, ex.rejected, ex.templated, ex.chat))
                labels.append(1)
            else:
                pairs.append(UnlabelledPair(ex.prompt, ex.rejected, ex.chosen, ex.templated, ex.chat))
                labels.append(-1)
        return pairs, labels
    out = []
    template = None  # for conversational rows, made on the first
    wrap = _Template(tokenizer, source) if renders_strings(chat_template, tokenizer, source) else None  # strings
    for number, raw in enumerate(rows, start=1):
        row = _Row(raw, source, number)
        row.require("prompt", "response_a", "response_b")
        if row.is_conversational("prompt", "response_a", "response_b"):
            template = template or _Template(tokenizer, source)
            prompt = row.messages("prompt")
            pair = UnlabelledPair(template.prompt(prompt),
                                  template.completion(row, "response_a", prompt, row.messages("response_a")),
                                  template.completion(row, "response_b", prompt, row.messages("response_b")), True)
        else:
            pair = UnlabelledPair(row.text("prompt"), row.text("response_a"), row.text("response_b"))
            pair.chat = wrap is not None and not wrap.rendered(pair.prompt)
        if pair.response_a == pair.response_b:
            raise row.error("response_a and response_b are identical: a pair must differ", "response_b")
        out.append(pair)
    return out, None


def labelled_completions(rows: list[dict], source: str, tokenizer=None, chat_template: str = "auto"
                         ) -> list[LabelledCompletion]:
    """(prompt, completion, desirable) from TRL's unpaired preference rows (`prompt`, `completion`, `label`),
    standard or conversational; preference rows (`chosen`, `rejected`, no `label`) give two each, the chosen
    completion desirable and the rejected one not."""
    if rows and "label" not in rows[0] and "chosen" in rows[0]:
        return [LabelledCompletion(ex.prompt, completion, desirable, ex.templated, ex.chat)
                for ex in preference_examples(rows, source, tokenizer, chat_template)
                for completion, desirable in ((ex.chosen, True), (ex.rejected, False))]
    labels = []
    for number, raw in enumerate(rows, start=1):
        row = _Row(raw, source, number)
        row.require("prompt", "completion", "label")
        if not isinstance(raw["label"], bool):  # 0/1 or "yes" would be guesses: TRL's label is a boolean
            raise row.error(f"expected true or false, got {raw['label']!r}", "label")
        labels.append(raw["label"])
    return [LabelledCompletion(d.prompt, d.completion, label, d.templated, d.chat)
            for d, label in zip(demonstrations(rows, source, tokenizer, chat_template), labels)]
