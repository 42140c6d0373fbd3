"""The caption generator: many phrasings for training, a held-out set never used in training."""

import re

import numpy as np
import pytest

from cascade.data.captions import HELD_OUT_TEMPLATES, HELD_OUT_WORDS, PHRASEBOOK, TEMPLATES, all_phrasings, phrase
from cascade.data.shapes import Attributes, all_attributes
from cascade.data.sources import ShapesSource


def _held_out_words():
    return {w for table in HELD_OUT_WORDS.values() for ws in table.values() for w in ws}


def test_held_out_phrasings_never_appear_among_training_captions():
    for a in all_attributes("all"):
        train, held = all_phrasings(a, "train"), all_phrasings(a, "held_out")
        assert len(train) > 1000 and len(held) > 500
        assert not train & held


def test_training_captions_use_no_held_out_word_or_template():
    held_words = _held_out_words()
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in sorted(held_words, key=len, reverse=True)) + r")\b")
    source = ShapesSource(seed=3)
    caps = [source.clip(i, frames=1, size=8)[1] for i in range(400)]
    assert len(set(caps)) > 300  # many phrasings, not a handful of templates
    for c in caps:
        assert not pattern.search(c), c
        assert any(c in all_phrasings(a, "train") for a in all_attributes("train")), c


def test_held_out_captions_name_their_attributes_and_use_a_held_out_template():
    rng = np.random.default_rng(0)
    a = Attributes("blue", "triangle", "down", "slowly")
    skeletons = [
        re.escape(t).replace(r"\{c\}", ".+").replace(r"\{s\}", ".+").replace(r"\{d\}", ".+").replace(r"\{v\}", ".+")
        for t in HELD_OUT_TEMPLATES
    ]
    for _ in range(50):
        c = phrase(a, rng, "held_out")
        assert c in all_phrasings(a, "held_out")
        assert any(re.fullmatch(s, c) for s in skeletons)
        for kind in PHRASEBOOK:
            assert any(w in c for w in PHRASEBOOK[kind][getattr(a, kind)]), (kind, c)


def test_every_template_has_every_slot_and_phrase_is_deterministic():
    for t in TEMPLATES + HELD_OUT_TEMPLATES:
        assert all(slot in t for slot in ("{c}", "{s}", "{d}", "{v}")), t
    a = Attributes("red", "circle", "left", "quickly")
    assert phrase(a, np.random.default_rng(5)) == phrase(a, np.random.default_rng(5))
    with pytest.raises(ValueError, match="split"):
        phrase(a, np.random.default_rng(0), "test")


def test_template_phrasing_keeps_the_original_captions_and_the_same_videos():
    varied, fixed = ShapesSource(seed=1), ShapesSource(seed=1, phrasing="template")
    v1, c1 = varied.clip(7, frames=3, size=16)
    v2, c2 = fixed.clip(7, frames=3, size=16)
    assert np.array_equal(v1, v2)  # the caption has its own random stream: the video is unchanged
    assert c2.startswith(("a ", "the ", "red", "green", "blue", "yellow", "white"))
    with pytest.raises(ValueError, match="phrasing"):
        ShapesSource(phrasing="free")


def test_evaluation_phrasing_splits_word_training_combinations_in_their_own_phrasings():
    from cascade.data.shapes import caption
    from cascade.evaluate import _prompts, captions_for

    attrs = _prompts("held_out_phrasing", 12, seed=3)
    assert all(not a.held_out for a in attrs)
    held = captions_for(attrs, "held_out_phrasing", seed=3)
    train = captions_for(attrs, "train_phrasing", seed=3)
    assert held == captions_for(attrs, "held_out_phrasing", seed=3)  # deterministic
    for a, h, t in zip(attrs, held, train):
        assert h in all_phrasings(a, "held_out") and t in all_phrasings(a, "train")
    assert captions_for(attrs, "seen", seed=3) == [caption(a, 0) for a in attrs]
    with pytest.raises(ValueError, match="Unknown evaluation split"):
        _prompts("unseen", 4, seed=0)
