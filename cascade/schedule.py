"""Continuous-time variance-preserving noise schedule (truncated cosine in log-SNR).

Conventions (spec §1.1-1.2):

* time ``t`` in [0, 1]; ``t = 0`` is clean data, ``t = 1`` is (almost) pure noise;
* ``logsnr = lambda(t) = -2 log tan(a t + b)``, truncated to ``[logsnr_min, logsnr_max]``;
* VP marginals ``z_t = alpha x + sigma eps`` with ``alpha^2 = sigmoid(lambda)``,
  ``sigma^2 = sigmoid(-lambda)``;
* the k-diffusion / ComfyUI "sigma" of the equivalent variance-exploding process
  ``x_t = x + s eps`` is ``s = sigma / alpha = exp(-lambda / 2)``.

All schedule arithmetic runs in float64 or float32, never in half precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "CosineSchedule",
    "alpha_sigma",
    "check_refine_from",
    "grid_times",
    "logsnr_to_vesigma",
    "vesigma_to_logsnr",
    "vesigma_to_alpha_sigma",
]


def alpha_sigma(logsnr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """VP coefficients ``(alpha, sigma)`` for a log-SNR tensor (computed in fp32 at least)."""
    logsnr = _at_least_fp32(logsnr)
    return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()


def logsnr_to_vesigma(logsnr: torch.Tensor) -> torch.Tensor:
    """k-diffusion sigma ``exp(-logsnr / 2)``."""
    return torch.exp(-0.5 * _at_least_fp32(logsnr))


def vesigma_to_logsnr(sigma: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`logsnr_to_vesigma` (``sigma > 0``)."""
    return -2.0 * torch.log(_at_least_fp32(sigma))


def vesigma_to_alpha_sigma(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """VP ``(alpha, sigma)`` from a k-diffusion sigma, exact at ``s = 0`` (alpha 1, sigma 0)."""
    s = _at_least_fp32(s)
    alpha = torch.rsqrt(1.0 + s * s)
    return alpha, s * alpha


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x)
    if not x.is_floating_point() or x.dtype in (torch.float16, torch.bfloat16):
        return x.float()
    return x


@dataclass(frozen=True)
class CosineSchedule:
    """Truncated continuous-time cosine schedule, ``lambda(t) = -2 log tan(a t + b)``, optionally
    shifted towards more noise.

    ``b = atan(exp(-logsnr_max / 2))`` and ``a = atan(exp(-logsnr_min / 2)) - b`` so that
    ``lambda(0) = logsnr_max`` and ``lambda(1) = logsnr_min`` (Google's diffusion code; spec §1.2).

    ``logsnr_shift`` (<= 0) is simple diffusion's *interpolated shifted* cosine (Hoogeboom et al.
    2023): ``lambda(t) = lambda_cos(t) + logsnr_shift * t``, where ``lambda_cos`` is truncated to
    ``[logsnr_min - logsnr_shift, logsnr_max]`` so the ends stay exactly ``logsnr_max`` and
    ``logsnr_min``. Low noise is unchanged; high noise gets more of the training and of the
    sampling steps. Redundant data (16 frames of one scene, or high resolution) keeps its coarse
    structure visible at log-SNRs where a single small image is pure noise, so a video base stage
    decides its motion there and needs the shift to learn and sample that decision.
    """

    logsnr_min: float = -20.0
    logsnr_max: float = 20.0
    logsnr_shift: float = 0.0

    def __post_init__(self) -> None:
        lo, hi = self.logsnr_min, self.logsnr_max
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
            raise ValueError(
                "CosineSchedule needs finite logsnr_min < logsnr_max; "
                f"received logsnr_min={lo}, logsnr_max={hi}. The paper's setting is (-20, 20)."
            )
        if not (math.isfinite(self.logsnr_shift) and -(hi - lo) / 2 <= self.logsnr_shift <= 0):
            raise ValueError(
                f"logsnr_shift must be between {-(hi - lo) / 2:g} and 0 (negative = more noise, for videos and large "
                f"images); received {self.logsnr_shift}."
            )

    @property
    def shifted(self) -> bool:
        return self.logsnr_shift != 0.0

    @property
    def unshifted(self) -> CosineSchedule:
        """The plain truncated cosine over the same range: noise-augmentation levels are given on
        it (``aug_level = 0.3`` is SNR 3.9 for every stage, shifted or not)."""
        return CosineSchedule(self.logsnr_min, self.logsnr_max) if self.shifted else self

    @property
    def _b(self) -> float:
        return math.atan(math.exp(-0.5 * self.logsnr_max))

    @property
    def _a(self) -> float:
        return math.atan(math.exp(-0.5 * (self.logsnr_min - self.logsnr_shift))) - self._b

    def logsnr(self, t: torch.Tensor | float) -> torch.Tensor:
        """log-SNR at time ``t`` (float64 internally, returned as float32 unless given float64)."""
        t_in = torch.as_tensor(t)
        t64 = t_in.double().clamp(0.0, 1.0)
        out = -2.0 * torch.log(torch.tan(self._a * t64 + self._b)) + self.logsnr_shift * t64
        return out if t_in.dtype == torch.float64 else out.float()

    def t_from_logsnr(self, logsnr: torch.Tensor | float) -> torch.Tensor:
        """Inverse of :meth:`logsnr` (clamped to the schedule's range)."""
        lam_in = torch.as_tensor(logsnr)
        lam = lam_in.double().clamp(self.logsnr_min, self.logsnr_max)
        if not self.shifted:
            out = (torch.atan(torch.exp(-0.5 * lam)) - self._b) / self._a
        else:  # lambda(t) is strictly decreasing: bisection to float64 precision
            lo, hi = torch.zeros_like(lam), torch.ones_like(lam)
            for _ in range(64):
                mid = (lo + hi) / 2
                above = self.logsnr(mid) > lam
                lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
            out = (lo + hi) / 2
        out = out.clamp(0.0, 1.0)
        return out if lam_in.dtype == torch.float64 else out.float()

    def alpha_sigma(self, t: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        return alpha_sigma(self.logsnr(t))

    def vesigma(self, t: torch.Tensor | float) -> torch.Tensor:
        return logsnr_to_vesigma(self.logsnr(t))

    @property
    def sigma_min(self) -> float:
        return math.exp(-0.5 * self.logsnr_max)

    @property
    def sigma_max(self) -> float:
        return math.exp(-0.5 * self.logsnr_min)

    def sigmas(
        self, steps: int, t_max: float = 1.0, device: torch.device | str | None = None, refine_from: float = 1.0
    ) -> torch.Tensor:
        """A k-diffusion sigma grid of ``steps + 1`` entries: uniform in ``t`` from ``t_max``
        down to ``1 / steps`` of it, then a final 0 (the last step returns the denoised data).

        ``refine_from < 1``: the first step goes from ``t_max`` straight to ``refine_from`` and the
        other ``steps - 1`` are uniform from there (``refine_from``, ... ``refine_from / (steps - 1)``,
        0): one prediction from the top, then refinements at low noise (the SR stages' grid). The
        uniform grid is the case ``refine_from = t_max * (steps - 1) / steps``.
        """
        t = grid_times(steps, t_max, refine_from)
        s = logsnr_to_vesigma(self.logsnr(t))
        return torch.cat([s, s.new_zeros(1)]).float().to(device)

    def to_dict(self) -> dict:
        d = {"kind": "cosine_truncated", "logsnr_min": self.logsnr_min, "logsnr_max": self.logsnr_max}
        if self.shifted:  # a new kind, so that a version without shifts refuses the file instead of misreading it
            d.update(kind="cosine_shifted", logsnr_shift=self.logsnr_shift)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CosineSchedule:
        kind = d.get("kind", "cosine_truncated")
        if kind not in ("cosine_truncated", "cosine_shifted"):
            raise ValueError(f"Unknown schedule kind {kind!r}; this version knows 'cosine_truncated' and 'cosine_shifted'.")
        shift = float(d.get("logsnr_shift", 0.0)) if kind == "cosine_shifted" else 0.0
        return cls(logsnr_min=float(d["logsnr_min"]), logsnr_max=float(d["logsnr_max"]), logsnr_shift=shift)


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"The number of sampling steps must be a positive integer; received {steps!r}.")
    return int(steps)


def grid_times(steps: int, t_max: float = 1.0, refine_from: float = 1.0) -> torch.Tensor:
    """The ``steps`` times (float64, decreasing, without the final 0) of :meth:`CosineSchedule.sigmas`."""
    steps = _check_steps(steps)
    if not 0.0 < t_max <= 1.0:
        raise ValueError(f"t_max must be in (0, 1]; received {t_max}.")
    check_refine_from(refine_from)
    if refine_from >= 1.0:
        return torch.linspace(t_max, 0.0, steps + 1, dtype=torch.float64)[:-1]
    if refine_from >= t_max:
        raise ValueError(f"refine_from ({refine_from:g}) must be below the grid's start ({t_max:g}); or 1 for the uniform grid.")
    rest = torch.linspace(refine_from, 0.0, steps, dtype=torch.float64)[:-1]
    return torch.cat([torch.tensor([t_max], dtype=torch.float64), rest])


def check_refine_from(refine_from: float) -> None:
    """``refine_from`` is a time in (0, 1] (1: the uniform grid)."""
    if isinstance(refine_from, bool) or not isinstance(refine_from, (int, float)) or not 0.0 < refine_from <= 1.0:
        raise ValueError(
            f"refine_from must be a time in (0, 1] (1 = the uniform grid; below 1, the first step jumps there and the "
            f"others refine from it); received {refine_from!r}."
        )
