import pytest
import torch

from cascade.diffusion import VDenoiser, v_from_x_eps
from cascade.guidance import ClassifierFreeGuidance, Thresholding, dynamic_threshold, oscillating_guidance
from cascade.schedule import CosineSchedule, vesigma_to_alpha_sigma
from cascade.text import TextEmbedding


def text(batch, value):
    return TextEmbedding(
        torch.full((batch, 2, 4), float(value)), torch.ones(batch, 2, dtype=torch.bool), torch.full((batch, 4), float(value))
    )


class CountingDenoiser:
    """x0 depends on the text value, so cond and uncond branches differ."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x, sigma, *, text, **_):
        self.calls += 1
        return 0.5 * x + text.pooled[:, :1].reshape(-1, 1, 1, 1, 1)


def test_cfg_w0_equals_conditional():
    den = CountingDenoiser()
    x = torch.randn(2, 3, 2, 4, 4)
    cfg = ClassifierFreeGuidance(den, text(2, 1.0), text(2, -1.0), 0.0)
    assert torch.equal(cfg(x, torch.ones(2)), den(x, torch.ones(2), text=text(2, 1.0)))


def test_cfg_paper_convention_in_one_batched_call():
    den = CountingDenoiser()
    x = torch.randn(2, 3, 2, 4, 4)
    w = 3.0
    out = ClassifierFreeGuidance(den, text(2, 1.0), text(2, -1.0), w)(x, torch.ones(2))
    assert den.calls == 1
    c, u = 0.5 * x + 1.0, 0.5 * x - 1.0
    assert torch.allclose(out, (1 + w) * c - w * u)


def test_guided_v_equals_guided_x_converted_to_v():
    # guidance is affine in the prediction, so guiding x0 and guiding v give the same update
    def net(z, logsnr, *, text, **_):
        return torch.sin(z) * text.pooled[:, :1].reshape(-1, 1, 1, 1, 1)

    x = torch.randn(2, 3, 2, 4, 4)
    sigma = torch.full((2,), 0.7)
    w = 2.5
    guided_x = ClassifierFreeGuidance(VDenoiser(net, CosineSchedule()), text(2, 1.0), text(2, 0.3), w)(x, sigma)
    a, s = vesigma_to_alpha_sigma(sigma[0])
    z = a * x
    v = (1 + w) * net(z, None, text=text(2, 1.0)) - w * net(z, None, text=text(2, 0.3))
    x_from_guided_v = a * z - s * v
    assert torch.allclose(guided_x, x_from_guided_v, atol=1e-5)
    eps = (z - a * guided_x) / s
    assert torch.allclose(v_from_x_eps(guided_x, eps, a, s), v, atol=1e-4)


def test_negative_guidance_is_refused():
    with pytest.raises(ValueError, match="cfg scale s, use w = s - 1"):
        ClassifierFreeGuidance(CountingDenoiser(), text(1, 1), text(1, 0), -1.0)


def test_oscillating_guidance_schedule():
    sig = CosineSchedule().sigmas(12)
    w_at = oscillating_guidance(sig, 15.0, 1.0, const_steps=4)
    ws = [w_at(s) for s in sig[:-1]]
    assert ws[:4] == [15.0] * 4
    assert ws[4:] == [1.0, 15.0] * 4


def test_dynamic_threshold_noop_inside_unit_range():
    x = torch.rand(2, 3, 4, 8, 8) * 2 - 1
    assert torch.equal(dynamic_threshold(x, 0.995), x)


def test_dynamic_threshold_uses_one_scale_per_video():
    x = torch.zeros(2, 3, 4, 8, 8)
    x[0, :, 0] = 4.0  # frame 0 of video 0 is far out of range
    x[0, :, 1:] = 0.5
    x[1] = 0.5  # video 1 is in range
    out = dynamic_threshold(x, 0.9)
    s = 4.0  # > 10 % of video 0's values are 4.0, so its 90th percentile is 4
    assert torch.allclose(out[0, :, 0], torch.full_like(out[0, :, 0], 1.0))
    assert torch.allclose(out[0, :, 1:], torch.full_like(out[0, :, 1:], 0.5 / s))  # same scale on every frame
    assert torch.equal(out[1], x[1])


def test_static_clipping_and_unknown_mode():
    den = lambda x, sigma, **_: x * 3  # noqa: E731
    x = torch.linspace(-1, 1, 48).reshape(1, 3, 1, 4, 4)
    assert Thresholding(den, "static")(x, torch.ones(1)).abs().max() == 1.0
    with pytest.raises(ValueError, match="Unknown thresholding"):
        Thresholding(den, "soft")
