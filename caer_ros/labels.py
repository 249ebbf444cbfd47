"""Emotion category sets: the one place their names and order live.

The order of each tuple is the order of the dataset's own annotation indices and of the
network's emotion-map channels, so index ``i`` means the same category everywhere.
"""

from __future__ import annotations

# EMOTIC (Kosti et al., 2019): 26 discrete categories, in the index order of Annotations.mat.
EMOTIC: tuple[str, ...] = (
    "Affection",
    "Anger",
    "Annoyance",
    "Anticipation",
    "Aversion",
    "Confidence",
    "Disapproval",
    "Disconnection",
    "Disquietment",
    "Doubt/Confusion",
    "Embarrassment",
    "Engagement",
    "Esteem",
    "Excitement",
    "Fatigue",
    "Fear",
    "Happiness",
    "Pain",
    "Peace",
    "Pleasure",
    "Sadness",
    "Sensitivity",
    "Suffering",
    "Surprise",
    "Sympathy",
    "Yearning",
)

# HECO (Yang et al., 2022): 8 discrete categories, one per person, as listed in the KA paper
# (section 3.2).
HECO: tuple[str, ...] = (
    "Anger",
    "Disgust",
    "Excitement",
    "Fear",
    "Happiness",
    "Peace",
    "Sadness",
    "Surprise",
)

# Continuous emotion dimensions (EMOTIC and HECO both annotate them on a 1..10 scale).
CONTINUOUS: tuple[str, ...] = ("valence", "arousal", "dominance")

CATEGORY_SETS: dict[str, tuple[str, ...]] = {"emotic": EMOTIC, "heco": HECO}
# Sets whose people carry exactly one category each (HECO); the others are multi-label.
SINGLE_LABEL_SETS: frozenset[str] = frozenset({"heco"})


def is_single_label(name: str) -> bool:
    """Whether each person of set ``name`` has exactly one category by the dataset's design
    (HECO). Any other set, a lab's own included, is multi-label unless its model scores it
    with a softmax (``ModelConfig.softmax_sets``)."""
    return name.lower() in SINGLE_LABEL_SETS


def category_set(name: str) -> tuple[str, ...]:
    """Return the categories of a named set (``emotic`` or ``heco``), case-insensitive."""
    try:
        return CATEGORY_SETS[name.lower()]
    except KeyError:
        known = ", ".join(sorted(CATEGORY_SETS))
        raise ValueError(f"unknown category set {name!r}; known sets: {known}") from None
