"""`smol`: instructions with verifiable constraints, in the style of IFEval, for a pretrained model.

Each prompt asks for a short text on a topic and states two or three rules, one per line, drawn from:
a word limit (at most or at least N words), a word that must appear, a word that must not, all lowercase,
a given first word, a given final punctuation mark, no commas, exactly N bullet points, at most N
sentences. The rules are written in fixed sentences, so the gold reward reads them back from the prompt
and needs nothing else. Gold reward: the share of rules the answer meets, in [0, 1]; an empty answer
scores -1 and a degenerately repetitive one loses 1.
"""

from __future__ import annotations

import random
import re

from frugalign.tasks.lm import SETTINGS, LMTaskSpec, is_degenerate, seeded_split

TOPICS = ["the ocean", "a rainy day", "your favourite food", "a city at night", "learning to cook", "a long train ride",
          "the first day of school", "a garden in spring", "an old library", "winter mornings", "a busy market",
          "a mountain hike", "a small village", "music at a wedding", "a lost umbrella", "the moon", "a bicycle",
          "a cup of tea", "a football match", "a summer holiday", "a thunderstorm", "an empty beach", "a birthday cake",
          "a new neighbour", "a museum visit", "autumn leaves", "a bakery", "the night sky", "a fishing trip",
          "a snowy forest"]
INCLUDE = ["blue", "happy", "light", "quiet", "green", "morning", "warm", "friend", "simple", "bright"]
EXCLUDE = ["the", "and", "is", "very", "it"]
FIRST = ["today", "yes", "imagine", "honestly", "once"]
ENDINGS = {"a question mark": "?", "an exclamation mark": "!", "a period": "."}

RULES = {  # kind: (how it is written, the pattern that reads it back)
    "max_words": ("Use at most {} words.", r"Use at most (\d+) words\."),
    "min_words": ("Use at least {} words.", r"Use at least (\d+) words\."),
    "include": ('Include the word "{}".', r'Include the word "([^"]+)"\.'),
    "exclude": ('Do not use the word "{}".', r'Do not use the word "([^"]+)"\.'),
    "lowercase": ("Write everything in lowercase letters.", r"Write everything in (lowercase) letters\."),
    "first_word": ('Start your answer with the word "{}".', r'Start your answer with the word "([^"]+)"\.'),
    "ending": ("End your answer with {}.", r"End your answer with (a question mark|an exclamation mark|a period)\."),
    "no_commas": ("Do not use any commas.", r"Do not use any (commas)\."),
    "bullets": ('Answer with exactly {} bullet points, each on its own line starting with "- ".',
                r"Answer with exactly (\d+) bullet points"),
    "max_sentences": ("Use at most {} sentences.", r"Use at most (\d+) sentences\."),
}
# rules that cannot hold together, or that make one another trivial
CLASHES = {frozenset(p) for p in [("max_words", "min_words"), ("include", "exclude"), ("bullets", "max_sentences"),
                                  ("bullets", "first_word"), ("bullets", "ending"), ("lowercase", "first_word")]}


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9']+", text)


def meets(kind: str, value: str, response: str) -> bool:
    """Whether `response` meets one rule."""
    text = response.strip()
    words = [w.lower() for w in _words(text)]
    if kind == "max_words":
        return len(words) <= int(value)
    if kind == "min_words":
        return len(words) >= int(value)
    if kind == "include":
        return value.lower() in words
    if kind == "exclude":
        return value.lower() not in words
    if kind == "lowercase":
        return any(c.isalpha() for c in text) and text == text.lower()
    if kind == "first_word":
        return bool(words) and words[0] == value.lower()
    if kind == "ending":
        return text.endswith(ENDINGS[value])
    if kind == "no_commas":
        return "," not in text
    if kind == "bullets":
        return sum(1 for line in text.splitlines() if line.strip().startswith("- ")) == int(value)
    if kind == "max_sentences":
        return 0 < len([s for s in re.split(r"[.!?]+", text) if s.strip()]) <= int(value)
    raise ValueError(kind)


def rules_of(prompt) -> list[tuple[str, str]]:
    """The (kind, value) rules a prompt states, read back from its text."""
    text = prompt if isinstance(prompt, str) else " ".join(m["content"] for m in prompt)
    found = []
    for kind, (_, pattern) in RULES.items():
        found += [(kind, m.group(1)) for m in re.finditer(pattern, text)]
    return found


def gold_reward(prompt, response: str) -> float:
    """The share of the prompt's rules that the answer meets; -1 when empty; 1 less when degenerate."""
    rules = rules_of(prompt)
    if not rules:
        raise ValueError("the prompt states no rule of the smol task")
    if not response.strip():
        return -1.0
    share = sum(meets(kind, value, response) for kind, value in rules) / len(rules)
    return share - 1.0 if is_degenerate(response) else share


def _rule(kind: str, rng: random.Random) -> str:
    text = RULES[kind][0]
    value = {"max_words": lambda: rng.choice([15, 20, 25]), "min_words": lambda: rng.choice([10, 15]),
             "include": lambda: rng.choice(INCLUDE), "exclude": lambda: rng.choice(EXCLUDE),
             "first_word": lambda: rng.choice(FIRST).capitalize(), "ending": lambda: rng.choice(list(ENDINGS)),
             "bullets": lambda: rng.choice([2, 3]), "max_sentences": lambda: rng.choice([1, 2])}.get(kind)
    return text.format(value()) if value else text


def make_prompt(rng: random.Random) -> str:
    while True:
        kinds = rng.sample(sorted(RULES), rng.choice([2, 3]))
        if not any(frozenset((a, b)) in CLASHES for a in kinds for b in kinds if a != b):
            break
    rules = "\n".join(f"- {_rule(k, rng)}" for k in kinds)
    return f"Write a short text about {rng.choice(TOPICS)}. Follow these rules:\n{rules}"


def prompts(n: int = 2000) -> list[str]:
    """The task's prompt set, the same on every machine (distinct prompts, fixed order)."""
    rng = random.Random(1234)
    return list(dict.fromkeys(make_prompt(rng) for _ in range(n)))


def spec(seed: int, quick: bool, model: str | None = None) -> LMTaskSpec:
    train, held = seeded_split(prompts(), seed, quick)
    return LMTaskSpec("smol", model, train, held, gold_reward, max_new_tokens=48, settings=SETTINGS)
