"""Captions in many phrasings for the moving-shapes data, with a held-out set of wordings.

People type free text, not a training template. The generator writes a caption for an
:class:`~cascade.data.shapes.Attributes` from a phrasebook: several words for every colour, shape,
direction and speed, and sentence templates with the slots in different orders and with extra
words. A fixed part of the phrasebook (one or two synonyms per attribute value, and a set of
templates) is *held out*: training captions never use it, and the evaluation's
``held_out_phrasing`` split words every prompt with at least one held-out element, so it measures
generalisation to wording the model never saw, not recall.

``phrase(attrs, rng, split="train")``: a training caption; ``split="held_out"``: a caption with at
least one held-out template or word (a held-out template, and each slot a held-out synonym with
probability 1/2). Both are deterministic in ``rng``.
"""

from __future__ import annotations

import itertools

import numpy as np

from .shapes import Attributes

__all__ = ["PHRASEBOOK", "TEMPLATES", "HELD_OUT_TEMPLATES", "HELD_OUT_WORDS", "phrase", "all_phrasings", "words"]

# attribute value -> synonyms; the first one is the canonical training word
PHRASEBOOK: dict[str, dict[str, tuple[str, ...]]] = {
    "colour": {
        "red": ("red", "crimson", "bright red", "cherry red", "scarlet"),
        "green": ("green", "lime green", "bright green", "leaf green", "emerald"),
        "blue": ("blue", "bright blue", "royal blue", "cobalt", "azure"),
        "yellow": ("yellow", "lemon yellow", "golden", "bright yellow", "amber"),
        "white": ("white", "snow white", "pale", "bright white", "ivory"),
    },
    "shape": {
        "circle": ("circle", "disc", "round dot", "ball", "disk"),
        "square": ("square", "box", "block", "square tile", "cube"),
        "triangle": ("triangle", "triangular shape", "pyramid shape", "three-sided shape", "wedge"),
    },
    # a direction phrase reads after a verb of motion: "... moving {d}"
    "direction": {
        "left": ("left", "to the left", "leftward", "towards the left edge", "westward"),
        "right": ("right", "to the right", "rightward", "towards the right edge", "eastward"),
        "up": ("up", "upward", "to the top", "towards the top edge", "upwards"),
        "down": ("down", "downward", "to the bottom", "towards the bottom edge", "downwards"),
    },
    "speed": {
        "slowly": ("slowly", "slow", "gently", "at a slow pace", "leisurely"),
        "quickly": ("quickly", "fast", "rapidly", "at a fast pace", "swiftly"),
    },
}
# the last synonym of every value is never used in training
HELD_OUT_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    kind: {value: syns[-1:] for value, syns in table.items()} for kind, table in PHRASEBOOK.items()
}

TEMPLATES: tuple[str, ...] = (
    "a {c} {s} moving {d} {v}",
    "a {c} {s} moves {d} {v}",
    "a {c} {s} moving {v} {d}",
    "{c} {s} sliding {d} {v}",
    "a {c} {s} drifting {v} {d}",
    "the {c} {s} travels {d} {v}",
    "a {c} {s} that moves {v} {d}",
    "{v}, a {c} {s} goes {d}",
    "a {s}, {c}, heading {d} {v}",
    "watch the {c} {s} glide {d} {v}",
    "video of a {c} {s} moving {d} {v} on a dark background",
    "there is a {c} {s} and it moves {d} {v}",
    "one {c} {s} going {d}, {v}",
    "{c} {s}, moving {d}, {v}",
    "a {c} {s} slides {v} {d} across the frame",
    "animation: {c} {s} travelling {d} {v}",
)
HELD_OUT_TEMPLATES: tuple[str, ...] = (
    "a {s} in {c} that keeps moving {d} {v}",
    "{v} moving {d}: a {c} {s}",
    "please show a {c} {s} gliding {d} {v}",
    "a small {c} {s} floats {d} {v} over a black screen",
)


def words(kind: str, value: str, split: str = "train") -> tuple[str, ...]:
    """The synonyms of ``value`` for ``split`` (``train``: all but the held-out; ``held_out``)."""
    syns = PHRASEBOOK[kind][value]
    held = HELD_OUT_WORDS[kind][value]
    if split == "train":
        return tuple(w for w in syns if w not in held)
    if split == "held_out":
        return held
    raise ValueError(f"split must be 'train' or 'held_out'; received {split!r}.")


def _fill(template: str, attrs: Attributes, pick) -> str:
    return template.format(
        c=pick("colour", attrs.colour),
        s=pick("shape", attrs.shape),
        d=pick("direction", attrs.direction),
        v=pick("speed", attrs.speed),
    )


def phrase(attrs: Attributes, rng: np.random.Generator, split: str = "train") -> str:
    """A caption of ``attrs`` in the phrasings of ``split`` (``train`` or ``held_out``)."""
    if split == "train":
        t = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
        return _fill(t, attrs, lambda k, v: (ws := words(k, v))[int(rng.integers(len(ws)))])
    if split != "held_out":
        raise ValueError(f"split must be 'train' or 'held_out'; received {split!r}.")
    t = HELD_OUT_TEMPLATES[int(rng.integers(len(HELD_OUT_TEMPLATES)))]

    def pick(kind: str, value: str) -> str:
        if rng.random() < 0.5:
            return words(kind, value, "held_out")[0]
        ws = words(kind, value)
        return ws[int(rng.integers(len(ws)))]

    return _fill(t, attrs, pick)


def all_phrasings(attrs: Attributes, split: str = "train") -> set[str]:
    """Every caption ``phrase(attrs, ..., split)`` can return (for tests and audits)."""
    out = set()
    temps = TEMPLATES if split == "train" else HELD_OUT_TEMPLATES
    table = {k: words(k, getattr(attrs, k)) for k in PHRASEBOOK}
    if split == "held_out":
        table = {k: words(k, getattr(attrs, k)) + words(k, getattr(attrs, k), "held_out") for k in PHRASEBOOK}
    for t in temps:
        for c, s, d, v in itertools.product(table["colour"], table["shape"], table["direction"], table["speed"]):
            out.add(t.format(c=c, s=s, d=d, v=v))
    return out
