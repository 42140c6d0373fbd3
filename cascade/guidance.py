"""Guidance as denoiser wrappers: classifier-free guidance, oscillating guidance, thresholding.

Each wrapper takes a denoiser ``denoise(x, sigma, **cond) -> x0`` and returns a new one, so the
samplers never know about guidance (spec §1.9-1.10).

Convention: Imagen Video's guidance weight ``w`` gives ``x = (1 + w) * x_cond - w * x_uncond``.
``w = 0`` is plain conditional sampling. The "guidance scale" / "cfg" of diffusers, imagen-pytorch
and ComfyUI (``x_uncond + s * (x_cond - x_uncond)``) is ``s = 1 + w``; the paper's constant
``w = 6`` is ``cfg = 7``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "ClassifierFreeGuidance",
    "FramePrompts",
    "GuidanceOptions",
    "PromptBlend",
    "Thresholding",
    "cfg_scale_to_w",
    "constant_guidance",
    "dynamic_threshold",
    "oscillating_guidance",
    "w_to_cfg_scale",
]

GuidanceSchedule = Callable[[torch.Tensor], float]


def w_to_cfg_scale(w: float) -> float:
    return 1.0 + w


def cfg_scale_to_w(scale: float) -> float:
    return scale - 1.0


def _check_w(w: float, what: str = "guidance weight w") -> float:
    if not math.isfinite(w) or w < 0:
        raise ValueError(
            f"The {what} must be a finite number >= 0 (0 = no guidance, the paper uses 6); received {w}. "
            "If you have a ComfyUI-style cfg scale s, use w = s - 1."
        )
    return float(w)


def constant_guidance(w: float) -> GuidanceSchedule:
    w = _check_w(w)
    return lambda sigma: w


def oscillating_guidance(
    sigmas: Sequence[float] | torch.Tensor, w_high: float = 15.0, w_low: float = 1.0, const_steps: int | None = None
) -> GuidanceSchedule:
    """The paper's oscillating guidance: ``w_high`` for the first ``const_steps`` steps, then
    alternating ``w_high`` / ``w_low`` on successive steps. The step is found from ``sigma`` by the
    nearest entry of the sampling grid (in log space), so the schedule needs no state.
    ``const_steps`` defaults to a quarter of the steps (the paper does not publish it)."""
    _check_w(w_high, "high guidance weight")
    _check_w(w_low, "low guidance weight")
    grid = torch.as_tensor(sigmas, dtype=torch.float64)
    grid = grid[grid > 0].log()
    n = len(grid)
    if n == 0:
        raise ValueError("oscillating_guidance needs a sampling grid with at least one positive sigma.")
    const = max(1, n // 4) if const_steps is None else int(const_steps)
    if const < 0:
        raise ValueError(f"const_steps must be >= 0; received {const_steps}.")

    def w_at(sigma: torch.Tensor) -> float:
        s = float(torch.as_tensor(sigma).flatten()[0])
        if s <= 0:
            return w_low
        i = int((grid - math.log(s)).abs().argmin())
        if i < const:
            return w_high
        return w_high if (i - const) % 2 == 1 else w_low

    return w_at


def _repeat_cond(value, batch: int):
    """Duplicate a per-sample conditioning value for the batched (cond, uncond) pass."""
    if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == batch:
        return torch.cat([value, value])
    if hasattr(value, "repeat_batch"):
        return value.repeat_batch(2)
    return value


class ClassifierFreeGuidance:
    """``x = (1 + w) * denoise(x, sigma, text=cond) - w * denoise(x, sigma, text=uncond)``.

    ``cond_text`` / ``uncond_text`` are the values passed as the ``text=`` argument (any object
    with a ``cat`` classmethod-like :func:`concat` for batching: see ``cascade.text``).
    ``w`` is a float, a schedule ``w(sigma) -> float``, or a tensor ``(B,)`` of one weight per
    sample (guided distillation trains on a range of w). With ``w == 0`` at a step only the
    conditional branch runs. Both branches go through the network as one batch.
    """

    def __init__(self, denoise: Callable, cond_text, uncond_text, w: float | GuidanceSchedule | torch.Tensor):
        self.denoise = denoise
        self.cond_text = cond_text
        self.uncond_text = uncond_text
        if isinstance(w, torch.Tensor):
            per_sample = w.float()
            self.w_at = lambda sigma: per_sample
        else:
            self.w_at = constant_guidance(w) if not callable(w) else w

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond) -> torch.Tensor:
        w = self.w_at(sigma)
        if isinstance(w, torch.Tensor):
            w = w.to(x.device).reshape(-1, *([1] * (x.ndim - 1)))
        if self.uncond_text is None or (not isinstance(w, torch.Tensor) and w == 0.0):
            return self.denoise(x, sigma, text=self.cond_text, **cond)
        b = x.shape[0]
        both = type(self.cond_text).concat([self.cond_text, self.uncond_text])
        extra = {k: _repeat_cond(v, b) for k, v in cond.items()}
        sigma2 = torch.cat([sigma, sigma]) if isinstance(sigma, torch.Tensor) and sigma.ndim else sigma
        x0 = self.denoise(torch.cat([x, x]), sigma2, text=both, **extra)
        x_c, x_u = x0[:b], x0[b:]
        return x_c + w * (x_c - x_u)


def dynamic_threshold(x0: torch.Tensor, percentile: float = 0.995) -> torch.Tensor:
    """Imagen's dynamic thresholding with one scale per *video*: ``s = max(1, q_p(|x0|))`` over all
    channels, frames and pixels of each sample, then ``clip(x0, -s, s) / s``.
    A no-op when every value is already in [-1, 1]."""
    if not 0.0 < percentile <= 1.0:
        raise ValueError(f"The dynamic-thresholding percentile must be in (0, 1]; received {percentile}.")
    flat = x0.detach().abs().flatten(1).float()
    k = max(1, min(flat.shape[1], math.ceil(percentile * flat.shape[1])))
    s = flat.kthvalue(k, dim=1).values.clamp(min=1.0)
    s = s.reshape(-1, *([1] * (x0.ndim - 1))).to(x0)
    return torch.maximum(torch.minimum(x0, s), -s) / s


class Thresholding:
    """Applies static clipping (``"static"``: clip to [-1, 1]) or dynamic thresholding
    (``"dynamic"``) to a denoiser's x0 prediction. The samplers recompute eps from the result."""

    MODES = ("none", "static", "dynamic")

    def __init__(self, denoise: Callable, mode: str = "dynamic", percentile: float = 0.995):
        if mode not in self.MODES:
            raise ValueError(f"Unknown thresholding mode {mode!r}; choose one of {self.MODES}.")
        if mode == "dynamic" and not 0.0 < percentile <= 1.0:
            raise ValueError(f"The dynamic-thresholding percentile must be in (0, 1]; received {percentile}.")
        self.denoise, self.mode, self.percentile = denoise, mode, percentile

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond) -> torch.Tensor:
        x0 = self.denoise(x, sigma, **cond)
        if self.mode == "static":
            return x0.clamp(-1.0, 1.0)
        if self.mode == "dynamic":
            return dynamic_threshold(x0, self.percentile)
        return x0


@dataclass(frozen=True)
class FramePrompts:
    """Several prompts over the frames of one video: ``weights`` ``(K, T)`` gives, per frame, the
    weight of each of the K prompts (each column sums to 1). Story mode's blended scene changes."""

    texts: tuple
    weights: torch.Tensor

    def __post_init__(self) -> None:
        object.__setattr__(self, "texts", tuple(self.texts))
        w = torch.as_tensor(self.weights, dtype=torch.float32)
        if w.ndim != 2 or w.shape[0] != len(self.texts) or not self.texts:
            raise ValueError(f"FramePrompts needs weights (K, T) for K = {len(self.texts)} prompts; received {tuple(w.shape)}.")
        if not torch.allclose(w.sum(0), torch.ones(w.shape[1]), atol=1e-5) or bool((w < 0).any()):
            raise ValueError("FramePrompts weights must be >= 0 and sum to 1 over the prompts at every frame.")
        object.__setattr__(self, "weights", w)

    @property
    def batch(self) -> int:
        return self.texts[0].batch

    @property
    def width(self) -> int:
        return self.texts[0].width


class PromptBlend:
    """Blends the predictions of one (guided) denoiser per prompt with per-frame weights:
    ``x0[f] = sum_k weights[k, f] * denoise_k(x)[f]``. Guidance is linear, so blending the guided
    predictions equals guiding the blended conditional prediction against the shared unconditional
    one: ``(1 + w) sum_k beta_k x(c_k) - w x(null)`` when the weights sum to 1."""

    def __init__(self, denoisers: Sequence[Callable], weights: torch.Tensor):
        if len(denoisers) != weights.shape[0]:
            raise ValueError(f"PromptBlend needs one weight row per denoiser; received {len(denoisers)} and {weights.shape[0]}.")
        self.denoisers, self.weights = list(denoisers), weights

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond) -> torch.Tensor:
        if x.shape[2] != self.weights.shape[1]:
            raise ValueError(f"PromptBlend has weights for {self.weights.shape[1]} frames; the video has {x.shape[2]}.")
        out = None
        for den, beta in zip(self.denoisers, self.weights.to(x.device)):
            if not bool((beta > 0).any()):
                continue
            part = den(x, sigma, **cond) * beta.reshape(1, 1, -1, 1, 1)
            out = part if out is None else out + part
        return out


@dataclass(frozen=True)
class GuidanceOptions:
    """How the denoiser is guided: the weight ``w`` (paper convention; ComfyUI cfg = 1 + w),
    the paper's oscillating guidance (``oscillate``: ``w`` for the first ``const_steps`` steps, then
    alternating ``w`` / ``w_low``) and thresholding of the x0 prediction (``"dynamic"``: Imagen's,
    at ``percentile``; ``"static"``: clip to [-1, 1]; ``"none"``)."""

    w: float = 3.0
    oscillate: bool = False
    w_low: float = 1.0
    const_steps: int | None = None
    thresholding: str = "dynamic"
    percentile: float = 0.995

    def __post_init__(self) -> None:
        if isinstance(self.w, bool) or not math.isfinite(self.w) or self.w < 0:
            raise ValueError(f"The guidance weight w must be >= 0 (0 = unguided; ComfyUI cfg = 1 + w); received {self.w}.")
        if isinstance(self.w_low, bool) or not math.isfinite(self.w_low) or self.w_low < 0:
            raise ValueError(f"The low guidance weight must be >= 0; received {self.w_low}.")
        if self.const_steps is not None and self.const_steps < 0:
            raise ValueError(f"const_steps must be >= 0; received {self.const_steps}.")
        if self.thresholding not in Thresholding.MODES:
            raise ValueError(f"thresholding must be one of {Thresholding.MODES}; received {self.thresholding!r}.")
        if self.thresholding == "dynamic" and not 0.0 < self.percentile <= 1.0:
            raise ValueError(f"The dynamic-thresholding percentile must be in (0, 1]; received {self.percentile}.")

    def weight(self, sigmas) -> float | GuidanceSchedule:
        """The constant weight, or the oscillating schedule over the sampling grid ``sigmas``."""
        return oscillating_guidance(sigmas, self.w, self.w_low, self.const_steps) if self.oscillate else self.w

    def threshold(self, denoise: Callable) -> Callable:
        return Thresholding(denoise, self.thresholding, self.percentile) if self.thresholding != "none" else denoise
