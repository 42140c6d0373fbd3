"""The moving-shapes renderer's paths: shapes that cross the frame in their direction."""

import numpy as np
import pytest

from cascade import binding
from cascade.data.detector import detect
from cascade.data.shapes import DIRECTIONS, SPEEDS, Attributes, all_attributes, crossing_start, render_clip
from cascade.data.sources import ShapesSource, _rng


def _centroid(frame: np.ndarray) -> tuple[float, float]:
    """The shape's centre on the torus (a circular mean: a shape over an edge shows on both sides)."""
    w = frame.astype(np.float64).sum(axis=2)
    w = w - w.min()
    out = []
    for axis in (0, 1):  # x: mass per column; y: mass per row
        m = w.sum(axis=axis)
        ang = 2 * np.pi * (np.arange(len(m)) + 0.5) / len(m)
        out.append(float(np.angle((m * np.exp(1j * ang)).sum()) / (2 * np.pi) % 1.0))
    return out[0], out[1]


@pytest.mark.parametrize("frames,step", [(16, 2), (32, 1)])
def test_a_crossing_path_stays_inside_the_frame_and_is_centred(frames, step):
    for a in all_attributes("all"):
        for seed in range(20):
            x0, y0 = crossing_start(a, frames=(frames - 1) * step + 1, rng=np.random.default_rng(seed))
            vx, vy = DIRECTIONS[a.direction]
            travel = SPEEDS[a.speed] * step * (frames - 1)
            along, d = (x0, vx) if vx else (y0, vy)
            end = along + d * travel
            assert 0.05 < along < 0.95 and 0.05 < end < 0.95, (a, seed, along, end)  # no wrap-around
            assert abs((along + end) / 2 - 0.5) <= max(0.0, (1 - travel) / 2 - 0.1) + 1e-9


def test_crossing_clips_enter_on_the_side_they_move_away_from():
    src = ShapesSource(crossing=1.0, seed=5)
    for i in range(24):
        video, _ = src.clip(i, frames=16, size=32, frame_step=2)
        a = src._attrs[int(_rng(5, i).integers(len(src._attrs)))]
        (x0, y0), (x1, y1) = _centroid(video[0]), _centroid(video[-1])
        vx, vy = DIRECTIONS[a.direction]
        start, end = (x0, x1) if vx else (y0, y1)
        sign = vx or vy
        assert sign * (end - start) > 0.2  # it crossed, without jumping over an edge
        if a.speed == "quickly":  # a long path: it starts on the side it moves away from
            assert (start < 0.35) == (sign > 0) and (start > 0.65) == (sign < 0)
        det = detect(video, frame_step=2)
        assert (det.direction, det.speed, det.shape) == (a.direction, a.speed, a.shape)


def test_no_crossing_renders_the_clips_it_always_did():
    src = ShapesSource(crossing=0.0, seed=2)
    for i in range(4):
        video, _ = src.clip(i, frames=8, size=16, frame_step=2)
        rng = _rng(2, i)
        a = src._attrs[int(rng.integers(len(src._attrs)))]
        rng.integers(1000)  # the caption variant's draw
        np.testing.assert_array_equal(video, render_clip(a, frames=8, size=16, rng=rng, frame_step=2))


def test_the_crossing_fraction_is_about_what_was_asked():
    src = ShapesSource(crossing=0.75)
    hits = sum(_rng(0, i, 2).random() < 0.75 for i in range(2000))
    assert 0.72 < hits / 2000 < 0.78
    with pytest.raises(ValueError, match="crossing"):
        ShapesSource(crossing=1.5)
    assert src.clip(0, frames=4, size=8)[0].shape == (4, 8, 8, 3)


def test_the_diagnostic_clips_follow_the_path_asked_for():
    cross, attrs = binding.fixed_clips(4, frames=8, size=16, frame_step=2, seed=0, path="crossing")
    torus, attrs2 = binding.fixed_clips(4, frames=8, size=16, frame_step=2, seed=0, path="torus")
    assert attrs == attrs2 and not np.allclose(cross.numpy(), torus.numpy())
    with pytest.raises(ValueError, match="path"):
        binding.fixed_clips(4, frames=8, size=16, frame_step=2, path="zigzag")
    assert isinstance(attrs[0], Attributes)


def test_random_looks_keep_the_clips_and_caption_the_nearest_colour():
    from cascade.data.shapes import BACKGROUND, COLOURS
    from cascade.data.sources import LOOK_MIN_CONTRAST, make_source, nearest_colour

    plain, none, every = ShapesSource(seed=3), ShapesSource(seed=3, looks=0.0), ShapesSource(seed=3, looks=1.0)
    for i in range(6):
        a, ta = plain.clip(i, frames=2, size=16)
        b, tb = none.clip(i, frames=2, size=16)
        np.testing.assert_array_equal(a, b)
        assert ta == tb
        c, _ = every.clip(i, frames=2, size=16)
        assert (
            np.abs(c[0, 0, 0] / 255 - np.array(BACKGROUND)).max() > 0.01
            or np.abs(c[0, -1, -1] / 255 - np.array(BACKGROUND)).max() > 0.01
        )
    rng = np.random.default_rng(0)
    from cascade.data.sources import random_look

    kinds = set()
    for _ in range(50):
        look = random_look(rng)
        corners = np.array(look["background"]).reshape(-1, 3)
        kinds.add(len(corners))
        assert np.linalg.norm(corners - np.array(look["colour"]), axis=-1).min() >= LOOK_MIN_CONTRAST
        assert 0.06 <= look["radius"] <= 0.26
        clip = render_clip(Attributes("red", "circle", "left", "slowly"), frames=1, size=16, rng=rng, **look)
        assert clip.shape == (1, 16, 16, 3)
    assert kinds == {1, 4}  # flat backgrounds and four-corner fields
    assert nearest_colour(COLOURS["green"]) == "green" and nearest_colour((0.95, 0.2, 0.1)) == "red"
    with pytest.raises(ValueError, match="looks"):
        ShapesSource(looks=1.5)
    with pytest.raises(ValueError, match="shapes data only"):
        make_source("/no/such/folder", looks=0.5)


def test_random_looks_never_caption_a_held_out_combination():
    """A look's caption names the nearest palette colour that keeps the item in its split: without
    that, a training clip whose random colour is nearest to red could be captioned as a held-out
    (colour, shape, direction) triple."""
    source = ShapesSource(seed=5, looks=1.0)
    items = [source.item(i) for i in range(600)]
    assert all(look for _, _, look in items)
    assert not [a for a, _, _ in items if a.held_out]
    held = ShapesSource(seed=5, split="held_out", looks=1.0)
    assert all(held.item(i)[0].held_out for i in range(100))


def test_four_corner_background_is_bilinear_between_the_corners():
    corners = ((0.0, 0.0, 0.0), (1.0, 0.0, 0.0)), ((0.0, 0.0, 1.0), (1.0, 1.0, 1.0))
    a = Attributes("red", "circle", "left", "slowly")
    img = (
        render_clip(
            a,
            frames=1,
            size=32,
            rng=np.random.default_rng(0),
            start=(0.5, 0.5),
            radius=0.05,
            colour=(0, 1, 0),
            background=corners,
        )[0]
        / 255
    )
    np.testing.assert_allclose(img[0, 0], corners[0][0], atol=0.01)
    np.testing.assert_allclose(img[0, -1], corners[0][1], atol=0.01)
    np.testing.assert_allclose(img[-1, 0], corners[1][0], atol=0.01)
    np.testing.assert_allclose(img[-1, -1], corners[1][1], atol=0.01)
    np.testing.assert_allclose(img[0, 16], (16 / 31, 0, 0), atol=0.01)  # halfway along the top edge
    with pytest.raises(ValueError, match="four corners"):
        render_clip(a, frames=1, size=8, rng=np.random.default_rng(0), background=np.zeros((3, 3)))


def test_shape_mix_weights_the_shapes_and_keeps_the_split():
    """``shape_mix`` draws each shape as often as its weight says (spread over that shape's
    combinations, never a held-out one) and leaves the rest of each item, and the default stream,
    as they were."""
    from collections import Counter

    from cascade.data.sources import make_source

    plain, mixed = ShapesSource(seed=4), ShapesSource(seed=4, shape_mix=(1, 2, 1))
    n = 3000
    items = [mixed.item(i) for i in range(n)]
    shapes = Counter(a.shape for a, _, _ in items)
    assert abs(shapes["square"] / n - 0.5) < 0.03 and abs(shapes["circle"] / n - 0.25) < 0.03
    assert not any(a.held_out for a, _, _ in items)
    combos = Counter(a for a, _, _ in items if a.shape == "square")
    assert len(combos) == sum(a.shape == "square" for a in all_attributes("train"))  # every square combination comes
    assert all(mixed.item(i)[1:] == plain.item(i)[1:] for i in range(50))  # phrasing variant and look: as before
    only = ShapesSource(seed=4, shape_mix=(0, 1, 0))
    assert {only.item(i)[0].shape for i in range(200)} == {"square"}
    assert ShapesSource(seed=4, shape_mix=()).item(7) == plain.item(7)
    held = ShapesSource(split="held_out", shape_mix=(0, 1, 0))
    assert {held.item(i)[0] for i in range(100)} == {a for a in all_attributes("held_out") if a.shape == "square"}
    for bad in ((1, 2), (1, -1, 1), (0, 0, 0), (1, float("nan"), 1)):
        with pytest.raises(ValueError, match="shape_mix"):
            ShapesSource(shape_mix=bad)
    with pytest.raises(ValueError, match="shapes data only"):
        make_source("/no/such/folder", shape_mix=(1, 2, 1))


def test_shape_mix_is_a_training_flag_that_survives_a_resume():
    from cascade.demo import demo_train_config
    from cascade.train import TrainConfig

    cfg = demo_train_config("base", shape_mix=(1.0, 2.0, 1.0))
    back = TrainConfig.from_json(cfg.to_json())
    assert back.shape_mix == (1.0, 2.0, 1.0)
    old = cfg.to_json().replace('"shape_mix": [1.0, 2.0, 1.0], ', "")  # a state written before the field
    assert "shape_mix" not in old and TrainConfig.from_json(old).shape_mix == ()
