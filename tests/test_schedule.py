import math

import pytest
import torch

from cascade.diffusion import (
    VDenoiser,
    augment_condition,
    eps_from_v,
    eps_from_x,
    sample_aug_logsnr,
    v_from_x_eps,
    v_loss,
    x_from_eps,
    x_from_v,
)
from cascade.schedule import (
    CosineSchedule,
    alpha_sigma,
    logsnr_to_vesigma,
    vesigma_to_alpha_sigma,
    vesigma_to_logsnr,
)

S = CosineSchedule()


def test_schedule_endpoints_and_monotone():
    t = torch.linspace(0, 1, 10001, dtype=torch.float64)
    lam = S.logsnr(t)
    assert torch.isfinite(lam).all()
    assert lam[0].item() == pytest.approx(20.0, abs=1e-9)
    assert lam[-1].item() == pytest.approx(-20.0, abs=1e-9)
    assert (lam[1:] < lam[:-1]).all()


def test_alpha_sigma_unit_norm_and_finite_at_ends():
    lam = S.logsnr(torch.linspace(0, 1, 101))
    a, s = alpha_sigma(lam)
    assert torch.allclose(a**2 + s**2, torch.ones_like(a), atol=1e-6)
    assert torch.isfinite(a).all() and torch.isfinite(s).all()
    assert (a > 0).all() and (s > 0).all()


def test_time_logsnr_and_sigma_round_trips():
    t = torch.linspace(0, 1, 257, dtype=torch.float64)
    assert torch.allclose(S.t_from_logsnr(S.logsnr(t)), t, atol=1e-9)
    lam = torch.linspace(-20, 20, 101, dtype=torch.float64)
    assert torch.allclose(vesigma_to_logsnr(logsnr_to_vesigma(lam)), lam, atol=1e-9)
    a, s = vesigma_to_alpha_sigma(logsnr_to_vesigma(lam))
    a2, s2 = alpha_sigma(lam)
    assert torch.allclose(a, a2, atol=1e-9) and torch.allclose(s, s2, atol=1e-9)


def test_sigma_grid():
    g = S.sigmas(8)
    assert g.shape == (9,)
    assert g[-1] == 0 and (g[1:] < g[:-1]).all()
    assert g[0].item() == pytest.approx(math.exp(10), rel=1e-4)


def test_cosine_matches_untruncated_in_the_middle():
    # truncation barely moves the middle of the schedule: lambda(0.5) ~ -2 log tan(pi/4) = 0
    assert abs(S.logsnr(0.5).item()) < 1e-3


@pytest.mark.parametrize("bad", [(20, -20), (float("nan"), 1), (0, 0)])
def test_schedule_rejects_bad_range(bad):
    with pytest.raises(ValueError, match="logsnr_min"):
        CosineSchedule(*bad)


@pytest.mark.parametrize("steps", [0, -3, 1.5, True])
def test_zero_steps_is_a_clear_error(steps):
    with pytest.raises(ValueError, match="positive integer"):
        S.sigmas(steps)


def test_parameterization_round_trips():
    g = torch.Generator().manual_seed(1)
    x, eps = torch.randn(4, 3, 2, 4, 4, generator=g), torch.randn(4, 3, 2, 4, 4, generator=g)
    lam = torch.tensor([-8.0, -1.0, 2.0, 9.0]).reshape(4, 1, 1, 1, 1)
    a, s = alpha_sigma(lam)
    z = a * x + s * eps
    v = v_from_x_eps(x, eps, a, s)
    assert torch.allclose(x_from_v(z, v, a, s), x, atol=1e-5)
    assert torch.allclose(eps_from_v(z, v, a, s), eps, atol=1e-5)
    assert torch.allclose(eps_from_x(z, x, a, s), eps, atol=1e-4)
    assert torch.allclose(x_from_eps(z, eps, a, s), x, atol=1e-3)


def oracle_net(x_true, eps_true=None):
    """A network that predicts the exact v for known data (recovers eps from z)."""

    def net(z, logsnr, **_):
        a, s = alpha_sigma(logsnr)
        a, s = a.reshape(-1, 1, 1, 1, 1), s.reshape(-1, 1, 1, 1, 1)
        eps = (z - a * x_true) / s
        return v_from_x_eps(x_true, eps, a, s)

    return net


def test_vdenoiser_with_oracle_returns_data():
    x = torch.rand(2, 3, 4, 8, 8) * 2 - 1
    den = VDenoiser(oracle_net(x))
    for sig in [0.01, 1.0, 50.0]:
        xt = x + sig * torch.randn_like(x)
        assert torch.allclose(den(xt, torch.full((2,), sig)), x, atol=1e-3)


def test_v_loss_is_zero_for_oracle_and_min_snr_weighting():
    x = torch.rand(3, 3, 2, 4, 4) * 2 - 1
    loss, lam = v_loss(oracle_net(x), x, schedule=S, generator=torch.Generator().manual_seed(0))
    assert loss.shape == (3,) and lam.shape == (3,)
    assert loss.max() < 1e-8

    def zero_net(z, logsnr, **_):
        return torch.zeros_like(z)

    t = torch.tensor([0.1, 0.5, 0.9])
    plain, lam = v_loss(zero_net, x, schedule=S, generator=torch.Generator().manual_seed(0), t=t)
    weighted, _ = v_loss(zero_net, x, schedule=S, generator=torch.Generator().manual_seed(0), t=t, min_snr_gamma=5.0)
    snr = lam.exp()
    assert torch.allclose(weighted, plain * snr.clamp(max=5) / (snr + 1), rtol=1e-5)


def test_noise_augmentation_level_zero_passes_condition_through():
    c = torch.rand(2, 3, 4, 8, 8) * 2 - 1
    out = augment_condition(c, torch.full((2,), S.logsnr_max), generator=torch.Generator().manual_seed(0))
    assert (out - c).abs().max() < 1e-3


def test_noise_augmentation_has_the_requested_snr():
    c = torch.zeros(1, 3, 16, 64, 64)
    lam = torch.tensor([math.log(4.0)])
    out = augment_condition(c, lam, generator=torch.Generator().manual_seed(0))
    # alpha * 0 + sigma * eps: variance sigma^2 = 1 / (1 + SNR) = 0.2
    assert out.var().item() == pytest.approx(0.2, rel=0.03)


def test_training_aug_levels_distribution():
    lam = sample_aug_logsnr(4000, S, generator=torch.Generator().manual_seed(0), t_max=0.5, p_clean=0.1)
    clean = (lam == S.logsnr_max).float().mean().item()
    assert 0.07 < clean < 0.13
    assert lam.min() >= S.logsnr(0.5).item() - 1e-4


# --- the shifted schedule (simple diffusion's interpolated shift) ---------------------------------

SHIFTED = CosineSchedule(logsnr_shift=-5.0)


def test_shifted_schedule_keeps_its_ends_and_is_strictly_decreasing():
    t = torch.linspace(0, 1, 10001, dtype=torch.float64)
    lam = SHIFTED.logsnr(t)
    assert lam[0].item() == pytest.approx(20.0, abs=1e-9) and lam[-1].item() == pytest.approx(-20.0, abs=1e-9)
    assert (lam[1:] < lam[:-1]).all()


def test_shift_moves_high_noise_and_spares_low_noise():
    # lambda(t) = lambda_cos(t) + shift * t: at t = 0.5 it is shift / 2 below the plain cosine
    # (up to the small change of truncation); near t = 0 almost unchanged
    assert SHIFTED.logsnr(0.5).item() == pytest.approx(-2.5, abs=0.05)
    assert abs(SHIFTED.logsnr(0.02).item() - S.logsnr(0.02).item()) < 0.15
    # the fraction of training times below log-SNR -4 (where a video base decides its motion) triples or more
    t = torch.linspace(0, 1, 100001, dtype=torch.float64)
    assert (SHIFTED.logsnr(t) < -4).double().mean() > 3 * (S.logsnr(t) < -4).double().mean()


def test_shifted_time_logsnr_round_trip_and_grid():
    t = torch.linspace(0, 1, 257, dtype=torch.float64)
    assert torch.allclose(SHIFTED.t_from_logsnr(SHIFTED.logsnr(t)), t, atol=1e-9)
    g = SHIFTED.sigmas(16)
    assert g[-1] == 0 and (g[1:] < g[:-1]).all()
    assert (g[1:-1] > S.sigmas(16)[1:-1]).all()  # every inner step is noisier


def test_shifted_schedule_serialises_as_its_own_kind():
    assert S.to_dict() == {"kind": "cosine_truncated", "logsnr_min": -20.0, "logsnr_max": 20.0}  # unchanged for old files
    d = SHIFTED.to_dict()
    assert d["kind"] == "cosine_shifted" and d["logsnr_shift"] == -5.0
    assert CosineSchedule.from_dict(d) == SHIFTED and CosineSchedule.from_dict(S.to_dict()) == S
    assert SHIFTED.unshifted == S and S.unshifted is S


@pytest.mark.parametrize("shift", [0.5, -25.0, float("nan")])
def test_schedule_rejects_bad_shift(shift):
    with pytest.raises(ValueError, match="logsnr_shift"):
        CosineSchedule(logsnr_shift=shift)


def test_augmentation_levels_ignore_the_shift():
    # aug_level 0.3 means SNR ~3.9 for every stage: augmentation lives on the unshifted cosine
    a = sample_aug_logsnr(64, SHIFTED, generator=torch.Generator().manual_seed(3))
    b = sample_aug_logsnr(64, S, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_refine_grid_jumps_once_then_refines_uniformly():
    t_of = lambda g: S.t_from_logsnr(vesigma_to_logsnr(g[:-1].double())).double()  # noqa: E731
    g = S.sigmas(4, refine_from=0.3)
    assert g.shape == (5,) and g[-1] == 0 and (g[1:] < g[:-1]).all()
    assert torch.allclose(t_of(g), torch.tensor([1.0, 0.3, 0.2, 0.1], dtype=torch.float64), atol=1e-4)
    # the uniform grid is the case refine_from = t_max * (steps - 1) / steps
    assert torch.allclose(S.sigmas(8, refine_from=7 / 8), S.sigmas(8), rtol=1e-5)
    assert torch.allclose(S.sigmas(6, t_max=0.6, refine_from=0.5), S.sigmas(6, t_max=0.6), rtol=1e-5)
    assert torch.equal(S.sigmas(1, refine_from=0.2), S.sigmas(1))  # one step: nothing to refine
    g = S.sigmas(2, refine_from=0.12)
    assert torch.allclose(t_of(g), torch.tensor([1.0, 0.12], dtype=torch.float64), atol=1e-4)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan"), True, "0.2"])
def test_refine_from_outside_the_schedule_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="refine_from must be a time in"):
        S.sigmas(4, refine_from=bad)


def test_refine_from_must_be_below_the_start_of_the_grid():
    with pytest.raises(ValueError, match="below the grid's start"):
        S.sigmas(4, t_max=0.3, refine_from=0.5)
