"""v-parameterization, the denoiser wrapper, the training loss and noise conditioning augmentation.

A *network* maps a VP latent to a v prediction: ``net(z, logsnr, **cond) -> v``.
A *denoiser* is the k-diffusion / ComfyUI contract: ``denoise(x, sigma, **cond) -> x0`` where
``x = x0 + sigma * eps`` (variance exploding) and ``sigma = exp(-logsnr / 2)``.
:class:`VDenoiser` turns the first into the second; samplers only ever see denoisers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .schedule import CosineSchedule, alpha_sigma, vesigma_to_alpha_sigma, vesigma_to_logsnr

__all__ = [
    "VDenoiser",
    "augment_condition",
    "eps_from_v",
    "sample_aug_logsnr",
    "snr_to_logsnr",
    "v_from_x_eps",
    "v_loss",
    "x_from_v",
    "x_from_eps",
    "eps_from_x",
    "ddim_step",
    "distillation_target",
]


# --- parameterization conversions (alpha, sigma are VP coefficients, broadcastable) -----------


def v_from_x_eps(x: torch.Tensor, eps: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """``v = alpha * eps - sigma * x``."""
    return alpha * eps - sigma * x


def x_from_v(z: torch.Tensor, v: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """``x = alpha * z - sigma * v``."""
    return alpha * z - sigma * v


def eps_from_v(z: torch.Tensor, v: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """``eps = sigma * z + alpha * v``."""
    return sigma * z + alpha * v


def eps_from_x(z: torch.Tensor, x: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """``eps = (z - alpha * x) / sigma`` (sigma > 0)."""
    return (z - alpha * x) / sigma


def x_from_eps(z: torch.Tensor, eps: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """``x = (z - sigma * eps) / alpha``."""
    return (z - sigma * eps) / alpha


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-sample values ``(B,)`` reshaped to broadcast against ``like`` ``(B, ...)``."""
    v = torch.as_tensor(v, device=like.device)
    if v.ndim == 0:
        v = v.expand(like.shape[0])
    return v.reshape(v.shape[0], *([1] * (like.ndim - 1)))


# --- denoiser -----------------------------------------------------------------------------------


class VDenoiser:
    """Wraps a v-prediction network as ``denoise(x, sigma, **cond) -> x0``.

    ``x`` and ``sigma`` are k-diffusion quantities (``x = x0 + sigma * eps``). The sampler's state
    stays in float32; the network runs in its own dtype, its output is returned in float32.
    """

    def __init__(self, net: Callable[..., torch.Tensor], schedule: CosineSchedule | None = None):
        self.net = net
        self.schedule = schedule or CosineSchedule()

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        if bool((sigma <= 0).any()):
            raise ValueError("VDenoiser was called with sigma <= 0; samplers must stop at the last positive sigma.")
        logsnr = vesigma_to_logsnr(sigma).clamp(self.schedule.logsnr_min, self.schedule.logsnr_max)
        a, s = vesigma_to_alpha_sigma(sigma)
        a, s = _bcast(a, x), _bcast(s, x)
        z = a * x.float()
        v = self.net(z, logsnr, **cond).float()
        return x_from_v(z, v, a, s)


# --- training loss ------------------------------------------------------------------------------


def v_loss(
    net: Callable[..., torch.Tensor],
    x: torch.Tensor,
    *,
    schedule: CosineSchedule,
    generator: torch.Generator | None = None,
    t: torch.Tensor | None = None,
    min_snr_gamma: float | None = None,
    **cond,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample v-MSE (optionally min-SNR-gamma weighted), and the log-SNR each sample used.

    ``x``: clean data ``(B, C, T, H, W)`` in [-1, 1]. ``t`` (``(B,)``, uniform in [0, 1]) is drawn
    from ``generator`` unless given. Plain v-MSE equals x-MSE weighted by ``1 + SNR`` (spec §1.3);
    ``min_snr_gamma`` rescales it by ``min(SNR, gamma) / (SNR + 1)``.
    """
    b = x.shape[0]
    if t is None:
        t = torch.rand(b, generator=generator, device=generator.device if generator else "cpu").to(x.device)
    logsnr = schedule.logsnr(t).to(x.device)
    eps = torch.randn(x.shape, generator=generator, device=generator.device if generator else "cpu").to(x)
    a, s = alpha_sigma(logsnr)
    a, s = _bcast(a, x), _bcast(s, x)
    z = a * x + s * eps
    target = v_from_x_eps(x, eps, a, s)
    pred = net(z, logsnr, **cond).float()
    per_sample = (pred - target.float()).pow(2).flatten(1).mean(1)
    if min_snr_gamma is not None:
        snr = torch.exp(logsnr.float())
        per_sample = per_sample * snr.clamp(max=min_snr_gamma) / (snr + 1.0)
    return per_sample, logsnr


# --- noise conditioning augmentation (spec §1.7) -------------------------------------------------


def snr_to_logsnr(snr: float) -> float:
    """The sampling-time augmentation level is usually given as an SNR (paper: 3 or 5)."""
    import math

    if not snr > 0:
        raise ValueError(f"An augmentation SNR must be positive; received {snr}.")
    return math.log(snr)


def sample_aug_logsnr(
    batch: int,
    schedule: CosineSchedule,
    *,
    generator: torch.Generator | None = None,
    t_max: float = 0.5,
    p_clean: float = 0.1,
) -> torch.Tensor:
    """Training-time augmentation levels: ``t ~ U[0, t_max]`` per sample, and ``t = 0`` (clean
    conditioning, log-SNR = ``logsnr_max``) with probability ``p_clean`` (spec §1.7). Levels are
    times of the *unshifted* cosine, whatever the stage's diffusion schedule."""
    dev = generator.device if generator is not None else "cpu"
    t = torch.rand(batch, generator=generator, device=dev) * t_max
    clean = torch.rand(batch, generator=generator, device=dev) < p_clean
    t = torch.where(clean, torch.zeros_like(t), t)
    return schedule.unshifted.logsnr(t.cpu())


def augment_condition(
    cond: torch.Tensor,
    logsnr_aug: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """``c_aug = alpha * c + sigma * eps`` at the given per-sample log-SNR (``(B,)`` or scalar): the
    one noise conditioning augmentation of training and sampling.

    ``eps`` is ``noise`` when given (sampling: per-frame seeded noise), else drawn from
    ``generator`` (training). The network receives ``logsnr_aug`` as conditioning, so it knows how
    corrupted its input is.
    """
    logsnr_aug = torch.as_tensor(logsnr_aug, dtype=torch.float32)
    a, s = alpha_sigma(logsnr_aug)
    a, s = _bcast(a, cond).to(cond.dtype), _bcast(s, cond).to(cond.dtype)
    if noise is None:
        dev = generator.device if generator is not None else "cpu"
        noise = torch.randn(cond.shape, generator=generator, device=dev, dtype=torch.float32)
    elif tuple(noise.shape) != tuple(cond.shape):
        raise ValueError(
            f"The augmentation noise must have the video's shape {tuple(cond.shape)}; received {tuple(noise.shape)}."
        )
    return a * cond + s * noise.to(cond)


# --- progressive distillation target (spec §1.12) -----------------------------------------------


def ddim_step(x: torch.Tensor, x0: torch.Tensor, s: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
    """Per-sample DDIM step in k-diffusion coordinates (``s_next = 0`` returns ``x0``)."""
    s, s_next = _bcast(s, x).float(), _bcast(s_next, x).float()
    ratio = torch.where(s_next > 0, s_next / s, torch.zeros_like(s))
    return x0 + ratio * (x - x0)


@torch.no_grad()
def distillation_target(
    teacher: Callable[..., torch.Tensor],
    x: torch.Tensor,
    s: torch.Tensor,
    *path: torch.Tensor,
    **cond,
) -> torch.Tensor:
    """The x0 that makes ONE DDIM step from ``(x, s)`` land where the teacher's DDIM steps along
    ``path`` land: two steps ``s -> s_mid -> s_next`` in progressive distillation (Salimans & Ho),
    more for a larger step ratio (``path = (s_1, ..., s_k)``, TRACT-style). ``x~ = (x_k - r x) / (1 - r)``,
    ``r = s_k / s``; at ``s_k = 0`` it is the teacher's last x0. ``teacher`` is a denoiser; all maths in fp32."""
    if not path:
        raise ValueError("distillation_target needs at least one teacher step after s.")
    x = x.float()
    x_next, s_cur = x, s
    for s_step in path:
        x_next = ddim_step(x_next, teacher(x_next, s_cur, **cond).float(), s_cur, s_step)
        s_cur = s_step
    s_next = path[-1]
    r = _bcast(s_next.float() / s.float(), x)
    final = _bcast(s_next, x) <= 0
    return torch.where(final, x_next, (x_next - r * x) / torch.where(final, torch.ones_like(r), 1 - r))
