"""`sentiment`: continue a movie review positively, in the language of a small grammar.

Sentences are `the NOUN was ADJ .`, `the NOUN was very|really|quite ADJ .` and `i VERB the NOUN .`;
adjectives and verbs are positive, negative or neutral. A prompt is one whole sentence and the first
words of the next. The base policy is pre-trained on reviews of mixed sentiment with some garbled
words. Gold reward of a continuation: the prompt's unfinished sentence and the continuation are split
into sentences; a sentence the grammar can produce scores its sentiment (+1, 0, -1), one it cannot
(garbled, unfinished, or a repeat of an earlier one) scores -1; the reward is the mean over sentences
(-1 when there is none). So the best reviews are positive, well formed and not repetitive.
"""

from __future__ import annotations

import random

from frugalign.tasks.base import TaskSpec, split_prompts
from frugalign.tasks.tokenizers import word_tokenizer

NOUNS = ["movie", "film", "plot", "acting", "story", "music", "ending", "cast"]
ADJECTIVES = {"great": 1, "wonderful": 1, "excellent": 1, "brilliant": 1, "fun": 1,
              "awful": -1, "boring": -1, "terrible": -1, "dull": -1, "bad": -1,
              "long": 0, "new": 0, "short": 0, "loud": 0}
VERBS = {"loved": 1, "enjoyed": 1, "hated": -1, "disliked": -1, "watched": 0, "saw": 0}
ADVERBS = ["very", "really", "quite"]
WORDS = ["the", "was", "i", "."] + NOUNS + list(ADJECTIVES) + list(VERBS) + ADVERBS


def sentence_score(words: list[str]) -> int | None:
    """The sentiment of a sentence the grammar produces, or None if it cannot produce it."""
    if len(words) == 4 and words[0] == "the" and words[1] in NOUNS and words[2] == "was" and words[3] in ADJECTIVES:
        return ADJECTIVES[words[3]]
    if (len(words) == 5 and words[0] == "the" and words[1] in NOUNS and words[2] == "was" and words[3] in ADVERBS
            and words[4] in ADJECTIVES):
        return ADJECTIVES[words[4]]
    if len(words) == 4 and words[0] == "i" and words[1] in VERBS and words[2] == "the" and words[3] in NOUNS:
        return VERBS[words[1]]
    return None


def gold_reward(prompt: str, response: str) -> float:
    head = prompt.split(" . ")[-1] if " . " in prompt else prompt  # the unfinished sentence of the prompt
    words = (head + " " + response).split()
    scores, seen, current = [], set(), []
    for w in words:
        if w != ".":
            current.append(w)
            continue
        sentence = " ".join(current)
        score = sentence_score(current)
        scores.append(-1 if score is None or sentence in seen else score)
        seen.add(sentence)
        current = []
    if current:  # an unfinished sentence
        scores.append(-1)
    return float(sum(scores) / len(scores)) if scores else -1.0


def sentence(rng: random.Random, polarity: int | None) -> str:
    """A grammatical sentence of the given sentiment (None: any)."""
    pol = rng.choice([1, -1, 0]) if polarity is None else polarity
    if rng.random() < 0.35:
        verb = rng.choice([v for v, s in VERBS.items() if s == pol])
        return f"i {verb} the {rng.choice(NOUNS)} ."
    adj = rng.choice([a for a, s in ADJECTIVES.items() if s == pol])
    adverb = f"{rng.choice(ADVERBS)} " if rng.random() < 0.3 else ""
    return f"the {rng.choice(NOUNS)} was {adverb}{adj} ."


def split_opening(s: str, rng: random.Random) -> tuple[str, str]:
    words = s.split()
    k = rng.randint(1, len(words) - 2)
    return " ".join(words[:k]), " ".join(words[k:])


def garble(text: str, rng: random.Random) -> str:
    words = text.split()
    i = rng.randrange(len(words))
    words[i] = rng.choice(WORDS)
    return " ".join(words)


def review_continuation(opening_rest: str, rng: random.Random, positive: bool = False) -> str:
    """The rest of the open sentence and one or two more sentences."""
    more = [sentence(rng, 1 if positive else None) for _ in range(rng.randint(1, 2))]
    text = " ".join([opening_rest] + more)
    if not positive and rng.random() < 0.2:
        text = garble(text, rng)
    return text


def spec(seed: int, quick: bool) -> TaskSpec:
    rng = random.Random(seed)
    prompts, corpus = [], []
    for _ in range(4000):
        first = sentence(rng, None)
        opening, rest = split_opening(sentence(rng, None), rng)
        prompt = f"{first} {opening}"
        prompts.append(prompt)
        corpus.append({"prompt": prompt, "completion": review_continuation(rest, rng)})
    prompts = list(dict.fromkeys(prompts))
    n_train, n_eval = (128, 64) if quick else (512, 128)
    train, held = split_prompts(prompts, n_train, n_eval, seed)
    demos = []
    for p in train:
        # complete the open sentence the way the grammar allows, positively
        head = p.split(" . ")[-1].split()
        for attempt in range(100_000):
            # positive if the opening allows it ("i hated" does not), else any grammatical ending
            candidate = sentence(rng, 1 if attempt < 2000 else None)
            if candidate.split()[: len(head)] == head:
                break
        rest = " ".join(candidate.split()[len(head):])
        demos.append({"prompt": p, "completion": f"{rest} {sentence(rng, 1)}"})
    return TaskSpec("sentiment", word_tokenizer(WORDS), corpus, train, held, demos, gold_reward,
                    max_new_tokens=14, steps=400 if quick else 1200, hidden_size=96, num_layers=2,
                    # lr far above the paper's 5e-7: these models are small and trained from scratch
                    settings={"learning_rate": 2e-4, "beta": 0.1, "batch_size": 16, "num_epochs": 4})
