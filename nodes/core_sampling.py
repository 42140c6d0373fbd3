"""ComfyUI's custom sampling on our stages, and our samplers and schedule as ComfyUI objects.

* :func:`stage_sampler` turns any core ``SAMPLER`` (``KSamplerSelect``, ``SamplerEulerAncestral``,
  ``SamplerDPMPP_2M_SDE``, ...) into the library's :class:`~cascade.samplers.StageSampler`, so it
  drives a stage through the one sampling core (guidance, windows, tiles, thresholding, known
  frames all stay ours). The core sampler sees what it sees on a core model: a ``model_wrap``
  whose ``model_sampling`` is ComfyUI's own continuous-v-prediction class with the stage's sigma
  range (``sigma_data = 1``: our VP v-parameterisation), ``x`` in k-diffusion units, and the run's
  seeded per-frame step noise as its ``noise_sampler`` (so a seed gives the same video on every
  device and in every window, as with our own samplers).
* :func:`core_sampler` offers our samplers (DDIM, Imagen Video's ancestral sampler with gamma,
  the distilled stochastic sampler) as ``SAMPLER`` objects for core models; plugged into our own
  stage nodes they run natively (the same video as the node's ``sampler_name`` widget).
* :func:`cosine_sigmas` is the truncated-cosine schedule as ``SIGMAS``.

Samplers that need ComfyUI's CFG internals (the ``*_cfg_pp`` family reads the unconditional
prediction through a post-CFG hook) are refused with a clear error: our guidance runs inside the
stage's denoiser.
"""

from __future__ import annotations

import copy
import inspect
import math
from types import SimpleNamespace

import torch

from ..cascade.samplers import SAMPLERS, Sampler
from ..cascade.schedule import CosineSchedule
from . import adapter

MAX_SEED = 0xFFFF_FFFF_FFFF_FFFF


class _ContinuousV:
    """Stand-in for ComfyUI's ``ModelSamplingContinuousV`` + ``V_PREDICTION`` outside ComfyUI
    (standalone tests): the parts a KSAMPLER uses."""

    def __init__(self, sigma_min: float, sigma_max: float):
        self.sigmas = torch.linspace(math.log(sigma_min), math.log(sigma_max), 1000).exp()
        self.sigma_data = 1.0

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        sigma = sigma.reshape(-1, *([1] * (noise.ndim - 1)))
        scaled = noise * torch.sqrt(1.0 + sigma**2) if max_denoise else noise * sigma
        return scaled + latent_image

    def inverse_noise_scaling(self, sigma, latent):
        return latent


def model_sampling(schedule: CosineSchedule):
    """ComfyUI's continuous-v model sampling with the schedule's sigma range (sigma_data 1)."""
    lo, hi = schedule.sigma_min, schedule.sigma_max
    if not adapter.IN_COMFYUI:
        return _ContinuousV(lo, hi)
    import comfy.model_sampling as ms

    class ImagenVideoModelSampling(ms.ModelSamplingContinuousV, ms.V_PREDICTION):
        pass

    sampling = ImagenVideoModelSampling()
    sampling.set_parameters(lo, hi, 1.0)
    return sampling


class _LocalKSampler:
    """Outside ComfyUI, the ``KSAMPLER`` protocol our nodes rely on (for tests): scale the noise by
    the model sampling, run ``sampler_function`` on the wrapped model, report ``(i, x0, x, n)``."""

    def __init__(self, sampler_function, extra_options=None, inpaint_options=None):
        self.sampler_function = sampler_function
        self.extra_options = dict(extra_options or {})
        self.inpaint_options = dict(inpaint_options or {})

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None, disable_pbar=False):
        ms = model_wrap.inner_model.model_sampling
        top = float(sigmas[0]) >= float(ms.sigma_max) * (1 - 1e-5)
        x = ms.noise_scaling(sigmas[0], noise, latent_image, top)
        n = len(sigmas) - 1
        k_callback = None if callback is None else (lambda d: callback(d["i"], d["denoised"], d["x"], n))

        def model_k(x, sigma, **kw):
            kw.pop("denoise_mask", None)
            return model_wrap(x, sigma, **kw)

        out = self.sampler_function(
            model_k, x, sigmas, extra_args=dict(extra_args), callback=k_callback, disable=disable_pbar, **self.extra_options
        )
        return ms.inverse_noise_scaling(sigmas[-1], out)


def make_ksampler(fn, options: dict | None = None):
    """A core ``KSAMPLER`` (``comfy.samplers.KSAMPLER``; the local stand-in outside ComfyUI)."""
    if adapter.IN_COMFYUI:
        import comfy.samplers

        return comfy.samplers.KSAMPLER(fn, dict(options or {}))
    return _LocalKSampler(fn, options)


class _StageModelWrap:
    """What a core sampler expects as ``model_wrap`` (ComfyUI's guider): called with
    ``(x, sigma, model_options=, seed=)`` it returns our stage's guided x0 prediction; it
    carries the model sampling where k-diffusion samplers look for it."""

    def __init__(self, denoise, cond: dict, sampling, sampler_name: str):
        self.denoise, self.cond, self.sampler_name = denoise, cond, sampler_name
        self.inner_model = SimpleNamespace(model_sampling=sampling, scale_latent_inpaint=self._no_inpaint)
        self.model_patcher = SimpleNamespace(get_model_object=self._get_object, model_options={}, load_device=None)
        self.model_options: dict = {}

    def _get_object(self, name: str):
        if name == "model_sampling":
            return self.inner_model.model_sampling
        raise AttributeError(f"The Imagen Video stage has no model object {name!r} for the sampler {self.sampler_name}.")

    def _no_inpaint(self, *args, **kwargs):
        raise ValueError("Core inpainting masks are not used on Imagen Video stages: use start_images / end_images.")

    def __call__(self, x, sigma, model_options=None, seed=None, **kwargs):
        opts = model_options or {}
        if opts.get("sampler_post_cfg_function") or opts.get("sampler_cfg_function") or opts.get("sampler_pre_cfg_function"):
            raise ValueError(
                f"The sampler {self.sampler_name} needs ComfyUI's CFG internals (a *_cfg_pp sampler); Imagen Video stages "
                "guide inside the stage (the guidance input). Use its plain version, e.g. euler instead of euler_cfg_pp."
            )
        return self.denoise(x, sigma, **self.cond)


def _describe(sampler) -> str:
    fn = getattr(sampler, "sampler_function", None)
    name = getattr(fn, "__name__", type(sampler).__name__)
    return name.removeprefix("sample_")


def _takes_noise_sampler(fn) -> bool:
    try:
        return "noise_sampler" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class CoreSampler:
    """A ComfyUI ``SAMPLER`` as the library's :class:`~cascade.samplers.StageSampler`."""

    def __init__(self, sampler, schedule: CosineSchedule):
        if not callable(getattr(sampler, "sample", None)):
            raise ValueError(f"sampler must be a ComfyUI SAMPLER (e.g. from KSamplerSelect); received {type(sampler).__name__}.")
        self.sampler, self.schedule = sampler, schedule
        self.name = f"comfy:{_describe(sampler)}"

    def _with_noise(self, noise_sampler):
        """The core sampler with the run's seeded step noise, where its function takes a
        ``noise_sampler`` and the user's options do not set one."""
        fn = getattr(self.sampler, "sampler_function", None)
        options = getattr(self.sampler, "extra_options", None)
        if fn is None or not isinstance(options, dict) or "noise_sampler" in options or not _takes_noise_sampler(fn):
            return self.sampler
        sampler = copy.copy(self.sampler)
        sampler.extra_options = {**options, "noise_sampler": noise_sampler}
        return sampler

    def _float64_grid(self, device: torch.device) -> bool:
        fn = getattr(self.sampler, "sampler_function", None)
        module = getattr(fn, "__module__", "") or ""
        # UniPC mixes its coefficients with the model's float32 outputs in one einsum: it needs float32
        return device.type != "mps" and not module.endswith("uni_pc")

    def sample(self, model, noise, sigmas, *, latent=None, extra_args=None, callback=None, noise_sampler=None, seed=0):
        wrap = _StageModelWrap(model, dict(extra_args or {}), model_sampling(self.schedule), self.name)
        sampler = self._with_noise(noise_sampler) if noise_sampler is not None else self.sampler
        latent = torch.zeros_like(noise) if latent is None else latent.to(noise)

        def k_callback(i, denoised, x, total):
            if callback is not None:
                callback({"i": i, "denoised": denoised, "x": x, "sigma": sigmas[min(i, len(sigmas) - 1)]})

        args = {"model_options": {}, "seed": int(seed) & MAX_SEED}
        # float64 grid: at our sigma_max (e^10) k-diffusion's float32 step arithmetic loses the
        # first step (euler_ancestral's sigma_up rounds to sigma_to, so no noise is added) and
        # uni_pc's log-SNR near sigma 0.001. A copy, too: uni_pc writes into the grid it is given.
        grid = sigmas.to(torch.float64 if self._float64_grid(noise.device) else torch.float32).clone()
        return sampler.sample(wrap, grid, args, k_callback, noise, latent, None, True).float()


def stage_sampler(sampler, stage):
    """The sampler to run ``stage`` with: ours natively when it is one of ours, else the core
    sampler through :class:`CoreSampler`."""
    own = getattr(sampler, "imagen_video_sampler", None)
    if isinstance(own, Sampler):
        return own
    return CoreSampler(sampler, stage.config.schedule)


class _SeededNoise:
    """Step noise for our stochastic samplers on core models: drawn on the CPU from the run's seed
    (ComfyUI passes it in ``extra_args``), so the same seed gives the same noise on every device."""

    def __init__(self, x: torch.Tensor, seed):
        self.x = x
        self.gen = torch.Generator().manual_seed(int(seed or 0) & MAX_SEED)

    def __call__(self, sigma, sigma_next):
        return torch.randn(self.x.shape, generator=self.gen, dtype=torch.float32).to(self.x)


def core_sampler(sampler: Sampler):
    """One of our samplers as a core ``SAMPLER`` object (for SamplerCustom / SamplerCustomAdvanced
    on any model, and for our stage nodes, where it runs natively)."""
    fn = sampler.fn

    def imagen_video_sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, **options):
        extra_args = dict(extra_args or {})
        if noise_sampler is None:
            noise_sampler = _SeededNoise(x, extra_args.get("seed"))
        return fn(model, x, sigmas, extra_args=extra_args, callback=callback, noise_sampler=noise_sampler, **options)

    imagen_video_sampler.__name__ = f"sample_imagen_video_{sampler.name}"
    ks = make_ksampler(imagen_video_sampler, dict(sampler.options))
    ks.imagen_video_sampler = sampler
    return ks


def cosine_sigmas(schedule: CosineSchedule, steps: int, denoise: float = 1.0, refine_from: float = 1.0) -> torch.Tensor:
    """The schedule's k-diffusion grid for ``steps`` steps over the top ``denoise`` of it, on the grid
    ``refine_from`` (:meth:`~cascade.schedule.CosineSchedule.sigmas`; float32, CPU)."""
    return schedule.sigmas(steps, t_max=denoise, refine_from=refine_from).cpu()


SAMPLER_NAMES = list(SAMPLERS)
