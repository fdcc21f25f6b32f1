"""`review`: a pretrained model writes a short movie review; the gold reward is its positive sentiment.

The controlled-sentiment setting of the DPO paper and of AIHF's IMDb experiment, on a real language
model: a built-in, seeded prompt set names a film, the aspect to discuss and a tone (several of which
invite criticism, so the base policy is far from the best reward). Gold reward: the VADER compound
sentiment score of the review, in [-1, 1] (the lexicon ships inside the `vaderSentiment` package); an
empty or degenerately repetitive review scores -1, so repeating "great" does not pay. Every gold
reward is reported with the policy's KL to the base model beside it.
"""

from __future__ import annotations

import itertools
from functools import cache

from frugalign.tasks.lm import SETTINGS, LMTaskSpec, is_degenerate, seeded_split

FILMS = ["Casablanca", "The Godfather", "Jaws", "Alien", "Titanic", "Inception", "Amelie", "Spirited Away",
         "The Matrix", "Toy Story", "Vertigo", "Psycho", "Rocky", "Up", "Heat", "Fargo", "Gravity", "Frozen",
         "Memento", "Arrival", "Parasite", "Whiplash", "Moonlight", "Coco", "Rear Window", "Metropolis",
         "Star Wars", "Goodfellas", "The Shining", "Jurassic Park", "Ratatouille", "Her", "Drive", "Zodiac",
         "Chinatown", "Amadeus", "Gladiator", "Interstellar", "Paddington", "Skyfall"]
ASPECTS = ["acting", "plot", "music", "camera work", "ending", "dialogue", "pacing", "characters", "special effects",
           "costumes"]
TONES = ["Write it in a casual tone.", "Write it like a newspaper critic.", "Keep it plain and factual.",
         "Mention one strength and one weakness.", "Be honest about what did not work.", "Write it for a friend.",
         "Sound like a tired critic.", "Be brief and blunt."]
TEMPLATE = "Write a two-sentence review of the film {film}, about its {aspect}. {tone}"


@cache
def _analyzer():
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        from frugalign.errors import UserError

        raise UserError("task review needs vaderSentiment: pip install vaderSentiment") from None
    return SentimentIntensityAnalyzer()


def gold_reward(prompt, response: str) -> float:
    """VADER compound sentiment of the review; -1 for an empty or degenerate one."""
    if not response.strip() or is_degenerate(response):
        return -1.0
    return float(_analyzer().polarity_scores(response)["compound"])


def prompts() -> list[str]:
    """Every prompt of the task, in a fixed order (seeds split them)."""
    return [TEMPLATE.format(film=f, aspect=a, tone=t) for f, a, t in itertools.product(FILMS, ASPECTS, TONES)]


def spec(seed: int, quick: bool, model: str | None = None) -> LMTaskSpec:
    train, held = seeded_split(prompts(), seed, quick)
    return LMTaskSpec("review", model, train, held, gold_reward, max_new_tokens=40, settings=SETTINGS)
