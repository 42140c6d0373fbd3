"""The SR evaluation's baselines (Lanczos, optical-flow interpolation), the object-position error
and the clip sets unlike the training data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from cascade.data.shapes import BACKGROUND, SPEEDS, Attributes, render_clip
from cascade.evaluate import SR_CLIP_SETS, EvalConfig, sr_clips
from cascade.frames import frames_to_video
from cascade.interpolation import (
    flow_interpolate,
    lanczos_resize,
    lanczos_weights,
    object_positions,
    position_error,
)
from cascade.metrics import blend_frames, inserted_indices, psnr
from cascade.report import report

A = Attributes("red", "circle", "right", "quickly")


def _clip(frames=9, size=32, speed=None, **kw) -> torch.Tensor:
    rng = np.random.default_rng(0)
    return frames_to_video(render_clip(A, frames=frames, size=size, rng=rng, speed=speed, **kw))[None]


def _u(v):
    return ((v + 1) / 2).clamp(0, 1)


def test_lanczos_rows_sum_to_one_and_same_size_is_the_identity():
    for n_in, n_out in ((8, 16), (16, 8), (7, 23)):
        w = lanczos_weights(n_in, n_out)
        assert w.shape == (n_out, n_in)
        torch.testing.assert_close(w.sum(1), torch.ones(n_out))
    torch.testing.assert_close(lanczos_weights(12, 12), torch.eye(12))
    v = torch.rand(1, 3, 2, 8, 8) * 2 - 1
    torch.testing.assert_close(lanczos_resize(v, (8, 8)), v)
    with pytest.raises(ValueError, match="sizes >= 1"):
        lanczos_weights(0, 4)


def test_lanczos_matches_pil():
    img = render_clip(A, frames=1, size=16, rng=np.random.default_rng(1), radius=0.3)[0]
    pil = np.asarray(Image.fromarray(img).resize((32, 32), Image.LANCZOS)).astype(np.float32) / 255
    v = torch.from_numpy(img.copy()).float().div(255).mul(2).sub(1).permute(2, 0, 1)[None, :, None]
    ours = _u(lanczos_resize(v, (32, 32)))[0, :, 0].permute(1, 2, 0).numpy()
    # PIL computes in 8-bit fixed point; a different filter (bicubic) is ~30 dB away
    assert 10 * math.log10(1 / float(np.mean((pil - ours) ** 2))) > 50
    bicubic = np.asarray(Image.fromarray(img).resize((32, 32), Image.BICUBIC)).astype(np.float32) / 255
    assert 10 * math.log10(1 / float(np.mean((pil - bicubic) ** 2))) < 45


def test_flow_interpolation_places_a_moving_shape_better_than_blending():
    gt = _clip(frames=9, speed=2 * SPEEDS["quickly"])  # 1.6 px per frame: 3.2 px between kept frames
    low = gt[:, :, ::2]
    odd = gt[:, :, inserted_indices(9, 2)]
    flow = flow_interpolate(low, 2)
    blend = blend_frames(low, 2)
    assert flow.shape == odd.shape
    assert psnr(_u(flow), _u(odd)) > psnr(_u(blend), _u(odd)) + 3
    # a still video stays still
    still = low[:, :, :1].repeat(1, 1, 3, 1, 1)
    torch.testing.assert_close(flow_interpolate(still, 3), still[:, :, :1].repeat(1, 1, 4, 1, 1), atol=2e-3, rtol=0)
    with pytest.raises(ValueError, match="factor >= 2"):
        flow_interpolate(low, 1)


def test_object_positions_follow_the_rendered_centre():
    size, speed = 32, SPEEDS["quickly"]
    v = _clip(frames=6, size=size, speed=speed, start=(0.25, 0.5))
    pos = object_positions(v, BACKGROUND)[0]
    want_x = (0.25 + speed * torch.arange(6)) * size - 0.5
    torch.testing.assert_close(pos[:, 0], want_x.float(), atol=0.25, rtol=0)
    torch.testing.assert_close(pos[:, 1], torch.full((6,), 0.5 * size - 0.5), atol=0.25, rtol=0)
    # wraps around the border: a shape centred on the left edge is at x ~ -0.5 (== size - 0.5)
    edge = object_positions(_clip(frames=1, size=size, start=(0.0, 0.5)), BACKGROUND)[0, 0, 0]
    assert min(abs(edge + 0.5), abs(edge - (size - 0.5))) < 0.25


def test_position_error_is_zero_on_itself_and_counts_a_ghost_as_missing():
    v = _clip(frames=5, size=32, speed=0.0, start=(0.5, 0.5))
    assert position_error(v, v, BACKGROUND) == pytest.approx(0.0, abs=1e-6)
    shifted = torch.roll(v, 2, dims=-1)
    assert position_error(shifted, v, BACKGROUND) == pytest.approx(2.0, abs=0.05)
    # two half-visible copies far apart (a blend of a fast motion) have no solid object
    a = _clip(frames=1, size=32, start=(0.25, 0.5), radius=0.1)
    b = _clip(frames=1, size=32, start=(0.75, 0.5), radius=0.1)
    ghost = (a + b) / 2
    assert torch.isnan(object_positions(ghost, BACKGROUND, contrast=torch.tensor([1.0]))).all()
    assert position_error(ghost, a, BACKGROUND) == pytest.approx(0.5 * math.hypot(32, 32))


def test_gradient_background_and_shapes_no_caption_names():
    rng = np.random.default_rng(0)
    bg = ((0.9, 0.9, 0.9), (0.1, 0.2, 0.3))
    clip = render_clip(A, frames=1, size=16, rng=rng, background=bg, shape="ring", start=(0.5, 0.5), radius=0.1)
    np.testing.assert_allclose(clip[0, 0, 0] / 255, bg[0], atol=0.01)
    np.testing.assert_allclose(clip[0, -1, 0] / 255, bg[1], atol=0.01)
    assert clip[0, 8, 8].tolist() != clip[0, 8, 6].tolist()  # the ring's hole shows the background
    v = frames_to_video(clip)[None]
    assert position_error(v, v, bg) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="Unknown shape"):
        render_clip(A, frames=1, size=16, rng=rng, shape="star")
    with pytest.raises(ValueError, match="background"):
        render_clip(A, frames=1, size=16, rng=rng, background=(0.1, 0.2))


def test_sr_clip_sets():
    attrs = [A, Attributes("blue", "square", "up", "slowly")]
    seen, _ = sr_clips("seen", attrs, 9, 16, seed=3)
    again, _ = sr_clips("seen", attrs, 9, 16, seed=3)
    torch.testing.assert_close(seen, again)  # deterministic
    rng = np.random.default_rng(3)
    torch.testing.assert_close(seen[0], frames_to_video(render_clip(A, frames=9, size=16, rng=rng)))  # = the old clips

    fast, bgs = sr_clips("fast", attrs, 9, 32, seed=3)
    x = object_positions(fast, BACKGROUND)[0, :, 0]
    assert float((x[1:] - x[:-1]).mean()) == pytest.approx(2 * SPEEDS["quickly"] * 32, abs=0.1)
    slow, _ = sr_clips("slow", attrs, 9, 32, seed=3)
    x = object_positions(slow, BACKGROUND)[0, :, 0]
    assert float((x[1:] - x[:-1]).mean()) == pytest.approx(0.5 * SPEEDS["slowly"] * 32, abs=0.05)

    unlike, bgs = sr_clips("unlike", attrs, 3, 32, seed=3)
    for v, bg in zip(unlike, bgs):
        assert np.shape(bg) == (2, 3)  # a gradient
        assert position_error(v[None], v[None], bg) == pytest.approx(0.0, abs=1e-6)
    assert set(SR_CLIP_SETS) == {"seen", "fast", "slow", "unlike"}
    with pytest.raises(ValueError, match="Unknown SR clip set"):
        sr_clips("fastest", attrs, 3, 16, seed=0)


def test_eval_config_refuses_unknown_sets_and_levels():
    with pytest.raises(ValueError, match="Unknown SR clip set"):
        EvalConfig(models="m", sr_sets=("seen", "wrong"))
    with pytest.raises(ValueError, match="sr_aug"):
        EvalConfig(models="m", sr_aug=1.5)


def test_report_lists_every_clip_set_and_baseline():
    tsr = {
        "psnr_inserted": 31.0,
        "ssim_inserted": 0.95,
        "position_error_px": 0.2,
        "blend_psnr_inserted": 32.0,
        "repeat_psnr_inserted": 27.0,
        "flow_psnr_inserted": 35.0,
        "gain_over_blend_db": -1.0,
        "gain_over_flow_db": -4.0,
        "consistency_psnr": 31.5,
        "n": 4,
        "sets": {
            "fast": {"psnr_inserted": 29.0, "blend_psnr_inserted": 27.0, "repeat_psnr_inserted": 23.0, "gain_over_blend_db": 2.0}
        },
    }
    ssr = {
        "psnr": 32.0,
        "ssim": 0.96,
        "bilinear_psnr": 30.0,
        "bilinear_ssim": 0.97,
        "bicubic_psnr": 31.0,
        "bicubic_ssim": 0.98,
        "consistency_psnr": 36.0,
        "gain_over_bicubic_db": 1.0,
        "n": 4,
    }
    text = report({"tsr": tsr, "ssr": ssr})
    assert "| training-like clips | 27.00 | 32.00 | 35.00 | **31.00 / 0.950 / 0.20 px** | -1.00 dB | -4.00 dB | 31.5 dB |" in text
    assert "| motion 2x the fastest trained | 23.00 | 27.00 | - | **29.00** | +2.00 dB | - | - |" in text
    assert "| training-like clips | 30.00 / 0.970 | 31.00 / 0.980 | - | **32.00 / 0.960** | +1.00 dB | - | 36.0 dB |" in text
