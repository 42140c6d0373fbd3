import pytest
import torch

from cascade.diffusion import ddim_step, distillation_target
from cascade.samplers import SAMPLERS, get_sampler, sample_ancestral, sample_ddim, sample_distilled
from cascade.schedule import CosineSchedule

S = CosineSchedule()
C = 0.5  # std of the Gaussian toy data


def gaussian_denoiser(x, sigma, **_):
    """Ideal denoiser for x0 ~ N(0, C^2): E[x0 | x] = C^2 / (C^2 + s^2) x."""
    s = sigma.reshape(-1, *[1] * (x.ndim - 1))
    return C * C / (C * C + s * s) * x


def oracle(x_true):
    calls = []

    def den(x, sigma, **_):
        calls.append(sigma.clone())
        return x_true.clone()

    den.calls = calls
    return den


@pytest.mark.parametrize("steps", [1, 2, 7, 32])
def test_ddim_with_oracle_returns_data_and_keeps_the_noise(steps):
    g = torch.Generator().manual_seed(steps)
    data = torch.rand(2, 3, 4, 8, 8, generator=g) * 2 - 1
    eps = torch.randn(2, 3, 4, 8, 8, generator=g)
    sig = S.sigmas(steps)
    states = []
    out = sample_ddim(oracle(data), data + sig[0] * eps, sig, callback=lambda d: states.append(d["x"]))
    assert torch.allclose(out, data, atol=1e-5)
    for i, x in enumerate(states):  # every intermediate state is data + sigma_i * (the same eps)
        assert torch.allclose((x - data) / sig[i], eps, atol=1e-3)


def test_ddim_error_halves_when_steps_double():
    noise = torch.randn(2000, 1, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    errors = []
    for n in (16, 32, 64, 128):
        sig = S.sigmas(n)
        exact = noise * sig[0] * C / torch.sqrt(C * C + sig[0] ** 2)  # probability-flow ODE solution
        errors.append((sample_ddim(gaussian_denoiser, noise * sig[0], sig) - exact).abs().mean().item())
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    assert all(1.8 < r < 2.2 for r in ratios), ratios


@pytest.mark.parametrize("sampler,kw", [(sample_ancestral, {"gamma": 0.0}), (sample_distilled, {})])
def test_stochastic_samplers_reach_the_data_distribution(sampler, kw):
    sig = S.sigmas(256)
    x = torch.randn(20000, 1, 1, 1, 1, generator=torch.Generator().manual_seed(3)) * sig[0]
    out = sampler(gaussian_denoiser, x, sig, generator=torch.Generator().manual_seed(4), **kw)
    assert out.std().item() == pytest.approx(C, rel=0.03)
    assert abs(out.mean().item()) < 0.02


def test_ancestral_gamma_interpolates_variance():
    sig = S.sigmas(16)
    x = torch.randn(20000, 1, 1, 1, 1, generator=torch.Generator().manual_seed(3)) * sig[0]
    stds = [
        sample_ancestral(gaussian_denoiser, x, sig, gamma=g, generator=torch.Generator().manual_seed(5)).std().item()
        for g in (0.0, 0.5, 1.0)
    ]
    assert stds[0] < stds[1] < stds[2]


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_same_seed_same_output_and_ksampler_signature(name):
    fn = get_sampler(name)
    sig = S.sigmas(6)
    x = torch.randn(1, 3, 2, 4, 4, generator=torch.Generator().manual_seed(0)) * sig[0]
    seen = []
    a = fn(
        gaussian_denoiser, x, sig, extra_args={}, callback=seen.append, disable=True, generator=torch.Generator().manual_seed(9)
    )
    b = fn(gaussian_denoiser, x, sig, extra_args={}, callback=None, disable=True, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    assert len(seen) == 6 and set(seen[0]) == {"x", "i", "sigma", "sigma_hat", "denoised"}


def test_distilled_sampler_evaluates_once_per_step_and_noise_sampler_hook():
    data = torch.zeros(1, 3, 2, 4, 4)
    den = oracle(data)
    sig = S.sigmas(8)
    drawn = []

    def noise_sampler(s, s_next):
        drawn.append((float(s), float(s_next)))
        return torch.zeros_like(data)

    out = sample_distilled(den, torch.randn(1, 3, 2, 4, 4) * sig[0], sig, noise_sampler=noise_sampler)
    assert len(den.calls) == 8 and torch.allclose(out, data)
    # each stochastic step re-noises from sigma[i+2] back up to sigma[i+1]
    assert drawn[0] == pytest.approx((float(sig[2]), float(sig[1])))


def test_unknown_sampler_and_bad_grid():
    with pytest.raises(ValueError, match="Unknown sampler"):
        get_sampler("euler_magic")
    with pytest.raises(ValueError, match="non-increasing"):
        sample_ddim(gaussian_denoiser, torch.zeros(1, 1, 1, 1, 1), torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="at least 2"):
        sample_ddim(gaussian_denoiser, torch.zeros(1, 1, 1, 1, 1), torch.tensor([1.0]))


def test_distillation_target_reproduces_two_teacher_steps():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 2, 4, 4, generator=g) * 5

    def teacher(z, sigma, **_):  # a deterministic, non-trivial denoiser
        s = sigma.reshape(-1, 1, 1, 1, 1)
        return torch.tanh(z / (1 + s)) + 0.1 * z.roll(1, dims=-1) / (1 + s * s)

    s = torch.tensor([5.0, 1.0, 0.3])
    s_mid = torch.tensor([2.0, 0.5, 0.1])
    s_next = torch.tensor([1.0, 0.2, 0.0])
    target = distillation_target(teacher, x, s, s_mid, s_next)
    two = ddim_step(x, teacher(x, s), s, s_mid)
    two = ddim_step(two, teacher(two, s_mid), s_mid, s_next)
    one = ddim_step(x, target, s, s_next)
    assert torch.allclose(one, two, atol=1e-5)


def test_distillation_target_reproduces_k_teacher_steps():
    """A longer path (a step ratio above 2): one DDIM step with the target lands where the
    teacher's four DDIM steps land, down to 0 for the last sample."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 2, 4, 4, generator=g) * 4

    def teacher(z, sigma, **_):
        s = sigma.reshape(-1, 1, 1, 1, 1)
        return torch.tanh(z / (1 + s)) - 0.2 * z.roll(1, dims=-2) / (1 + s * s)

    path = [torch.tensor([3.0, 0.6]), torch.tensor([2.0, 0.4]), torch.tensor([1.2, 0.2]), torch.tensor([0.5, 0.0])]
    s = torch.tensor([4.0, 0.8])
    target = distillation_target(teacher, x, s, *path)
    z, s_cur = x, s
    for s_step in path:
        z = ddim_step(z, teacher(z, s_cur), s_cur, s_step)
        s_cur = s_step
    assert torch.allclose(ddim_step(x, target, s, path[-1]), z, atol=1e-5)
    assert torch.allclose(target[1], z[1], atol=1e-6)  # a path to 0: the teacher's last x0
    with pytest.raises(ValueError, match="at least one teacher step"):
        distillation_target(teacher, x, s)


def test_distillation_target_with_oracle_teacher_is_the_data():
    data = torch.rand(2, 3, 2, 4, 4) * 2 - 1
    s, s_mid, s_next = torch.tensor([3.0, 1.0]), torch.tensor([1.0, 0.4]), torch.tensor([0.5, 0.1])
    x = data + s.reshape(-1, 1, 1, 1, 1) * torch.randn_like(data)
    assert torch.allclose(distillation_target(oracle(data), x, s, s_mid, s_next), data, atol=1e-4)
