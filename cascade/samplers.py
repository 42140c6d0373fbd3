"""Samplers: pure functions over a denoiser ``model(x, sigma, **extra_args) -> x0``.

The signature is ComfyUI's ``KSAMPLER`` / k-diffusion one,
``fn(model, x, sigmas, extra_args=None, callback=None, disable=None, **options)``, so these
functions can be wrapped as ComfyUI ``SAMPLER`` objects and ComfyUI's samplers can drive our
denoisers. ``x`` starts as ``noise * sigmas[0]``; ``sigmas`` is a decreasing grid ending in 0.
Randomness comes only from ``generator`` (a ``torch.Generator``) or ``noise_sampler``
(``noise_sampler(sigma, sigma_next) -> noise``, the k-diffusion hook); noise is drawn on the
generator's device and moved, so the same seed gives the same video on every device.

The callback receives ``{"x", "i", "sigma", "sigma_hat", "denoised"}`` after every model call;
it is where progress, previews and Cancel reach the loop (raise from it to stop).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from .diffusion import ddim_step
from .schedule import vesigma_to_alpha_sigma

__all__ = [
    "SAMPLERS",
    "Sampler",
    "StageSampler",
    "check_sigmas",
    "sample_ancestral",
    "sample_ddim",
    "sample_distilled",
    "get_sampler",
]


def _noise(x, sigma, sigma_next, generator, noise_sampler) -> torch.Tensor:
    if noise_sampler is not None:
        return noise_sampler(sigma, sigma_next)
    dev = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(x.shape, generator=generator, device=dev, dtype=torch.float32).to(x.device)


def check_sigmas(sigmas: torch.Tensor) -> None:
    """Refuses anything but a k-diffusion grid: 1-D, finite, non-increasing, ending >= 0."""
    if sigmas.ndim != 1 or len(sigmas) < 2:
        raise ValueError(f"sigmas must be a 1-D grid with at least 2 entries (1 step); received shape {tuple(sigmas.shape)}.")
    if not bool(torch.isfinite(sigmas).all()) or bool((sigmas[1:] > sigmas[:-1]).any()) or float(sigmas[-1]) < 0:
        raise ValueError("sigmas must be finite, non-negative and non-increasing (a k-diffusion grid ending in 0).")


def _denoise(model, x, sigma, extra_args, callback, i, sigma_hat=None):
    s_in = x.new_ones([x.shape[0]])
    x0 = model(x, sigma * s_in, **extra_args)
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma if sigma_hat is None else sigma_hat, "denoised": x0})
    return x0


@torch.no_grad()
def sample_ddim(model, x, sigmas, extra_args=None, callback=None, disable=None, *, generator=None, noise_sampler=None):
    """DDIM (eta = 0): ``z_s = alpha_s x0 + sigma_s eps``; exact for an oracle denoiser.
    Deterministic: it accepts the randomness every sampler is handed and draws none."""
    check_sigmas(sigmas)
    extra_args = extra_args or {}
    x = x.float()
    for i in range(len(sigmas) - 1):
        x0 = _denoise(model, x, sigmas[i], extra_args, callback, i)
        x = ddim_step(x, x0, sigmas[i], sigmas[i + 1])
    return x


@torch.no_grad()
def sample_ancestral(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    *,
    gamma: float = 0.3,
    generator: torch.Generator | None = None,
    noise_sampler=None,
):
    """Imagen Video's ancestral sampler (spec §1.1): posterior mean plus noise whose variance
    interpolates in log space between the posterior variance (``gamma = 0``) and the forward
    variance (``gamma = 1``): ``var = var_post^(1-gamma) * var_fwd^gamma``."""
    check_sigmas(sigmas)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1]; received {gamma}.")
    extra_args = extra_args or {}
    x = x.float()
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = _denoise(model, x, s, extra_args, callback, i)
        if float(s_next) == 0.0:
            x = x0
            continue
        r = (s_next / s) ** 2  # exp(lambda_t - lambda_s)
        _, sig_t = vesigma_to_alpha_sigma(s)
        a_s, sig_s = vesigma_to_alpha_sigma(s_next)
        var_post, var_fwd = (1 - r) * sig_s**2, (1 - r) * sig_t**2
        std = (var_post ** (1 - gamma) * var_fwd**gamma).sqrt() / a_s  # VP std -> k-diffusion units
        x = x0 + r * (x - x0) + std * _noise(x, s, s_next, generator, noise_sampler)
    return x


@torch.no_grad()
def sample_distilled(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    *,
    generator: torch.Generator | None = None,
    noise_sampler=None,
):
    """The N-step stochastic sampler of guided distillation (Meng et al.; spec §1.13): from
    ``sigmas[i]`` take one DDIM step of twice the nominal length (to ``sigmas[i + 2]``), then
    re-noise forward to ``sigmas[i + 1]``. The last step is plain DDIM to 0."""
    check_sigmas(sigmas)
    extra_args = extra_args or {}
    n = len(sigmas) - 1
    x = x.float()
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = _denoise(model, x, s, extra_args, callback, i)
        if i == n - 1 or float(s_next) == 0.0:
            x = ddim_step(x, x0, s, s_next)
            continue
        s_far = sigmas[i + 2]
        x = ddim_step(x, x0, s, s_far)
        x = x + (s_next**2 - s_far**2).sqrt() * _noise(x, s_far, s_next, generator, noise_sampler)
    return x


SAMPLERS: dict[str, Callable] = {
    "ddim": sample_ddim,
    "ancestral": sample_ancestral,
    "distilled_stochastic": sample_distilled,
}


def get_sampler(name: str) -> Callable:
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"Unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}.") from None


_RANDOMNESS = ("generator", "noise_sampler")  # supplied by the caller, not options


def _own_options(fn: Callable) -> dict[str, inspect.Parameter]:
    return {n: p for n, p in inspect.signature(fn).parameters.items() if p.kind is p.KEYWORD_ONLY and n not in _RANDOMNESS}


@dataclass(frozen=True)
class Sampler:
    """A sampler function and its own options, as ComfyUI's ``KSAMPLER(fn, options)`` carries them:
    ``Sampler("ancestral", {"gamma": 0.5})``. Only the options the function declares are accepted,
    and only that function receives them. Calling it runs the function with the options, the
    caller's randomness (``noise_sampler``, for the stochastic samplers) and the usual k-diffusion
    arguments."""

    name: str = "ddim"
    options: Any = ()  # a dict or (name, value) pairs; stored as sorted pairs, so it is hashable

    def __post_init__(self) -> None:
        fn = get_sampler(self.name)
        opts = dict(self.options.items() if isinstance(self.options, dict) else self.options)
        own = _own_options(fn)
        unknown = sorted(set(opts) - set(own))
        if unknown:
            raise ValueError(
                f"The {self.name} sampler has no option {', '.join(unknown)}; its options are: {', '.join(own) or 'none'}."
            )
        if "gamma" in opts and not 0.0 <= float(opts["gamma"]) <= 1.0:
            raise ValueError(f"gamma must be in [0, 1]; received {opts['gamma']}.")
        object.__setattr__(self, "options", tuple(sorted(opts.items())))

    @property
    def fn(self) -> Callable:
        return get_sampler(self.name)

    def __call__(self, model, x, sigmas, *, extra_args=None, callback=None, noise_sampler=None) -> torch.Tensor:
        return self.fn(
            model, x, sigmas, extra_args=extra_args, callback=callback, noise_sampler=noise_sampler, **dict(self.options)
        )

    def sample(
        self, model, noise, sigmas, *, latent=None, extra_args=None, callback=None, noise_sampler=None, seed: int = 0
    ) -> torch.Tensor:
        """The :class:`StageSampler` protocol: start from ``noise * sigmas[0]`` (plus ``latent``,
        the video a partial schedule starts from) and run the function."""
        x = noise * sigmas[0]
        if latent is not None:
            x = x + latent
        return self(model, x, sigmas, extra_args=extra_args, callback=callback, noise_sampler=noise_sampler)


class StageSampler(Protocol):
    """What :func:`cascade.pipeline.sample_stage` needs from a sampler: a ``name`` and
    ``sample(model, noise, sigmas, *, latent, extra_args, callback, noise_sampler, seed)``, where
    ``noise`` is unit Gaussian noise (seeded per frame), ``latent`` the video a partial schedule
    starts from (``None`` from pure noise), ``model(x, sigma, **extra_args) -> x0`` and
    ``noise_sampler(sigma, sigma_next)`` the run's seeded step noise. :class:`Sampler` is one;
    the ComfyUI adapter (``nodes/core_sampling.py``) wraps any core ``SAMPLER`` as another."""

    name: str

    def sample(self, model, noise, sigmas, *, latent, extra_args, callback, noise_sampler, seed) -> torch.Tensor: ...
