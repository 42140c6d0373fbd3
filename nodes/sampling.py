"""Custom-sampling nodes: our samplers as core ``SAMPLER`` objects and our truncated-cosine
schedule as core ``SIGMAS`` (they plug into SamplerCustom / SamplerCustomAdvanced and into the
stage nodes' optional ``sampler`` / ``sigmas`` inputs)."""

from __future__ import annotations

from ..cascade.samplers import Sampler
from ..cascade.schedule import CosineSchedule
from .core_sampling import SAMPLER_NAMES, core_sampler, cosine_sigmas
from .models import MODEL_TYPE

CATEGORY = "Imagen Video/sampling/custom_sampling"
STEPS = ("INT", {"default": 32, "min": 1, "max": 10000, "tooltip": "Number of steps."})
DENOISE = (
    "FLOAT",
    {
        "default": 1.0,
        "min": 0.01,
        "max": 1.0,
        "step": 0.01,
        "tooltip": "The top fraction of the schedule to run (1 = from pure noise; below 1 starts from the input).",
    },
)
REFINE_FROM = (
    "FLOAT",
    {
        "default": 1.0,
        "min": 0.01,
        "max": 1.0,
        "step": 0.01,
        "tooltip": "The sampling grid: 1 = uniform steps (the paper). Below 1 the first step goes from the top straight to "
        "this time and the other steps refine that prediction from there, at low noise (the demo SSR: 0.2 with "
        "consistency on: +1.9 dB at 16 steps). A stage node with a sigmas input takes it from the scheduler node.",
    },
)


class _SigmasNode:
    """What both schedule nodes share: a SIGMAS output from ``schedule``."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("SIGMAS",)
    RETURN_NAMES = ("sigmas",)
    FUNCTION = "schedule"


class ImagenVideoSamplerSelect:
    DESCRIPTION = (
        "Imagen Video's samplers as a core SAMPLER: DDIM, the paper's ancestral sampler with its gamma (log-space "
        "interpolation between posterior and forward variance), and the 2x-down/1x-up stochastic sampler of guided "
        "distillation. Use it with SamplerCustom on any model, or on the Imagen Video stage nodes."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("SAMPLER",)
    RETURN_NAMES = ("sampler",)
    FUNCTION = "select"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "sampler_name": (SAMPLER_NAMES, {"default": "ancestral", "tooltip": "Which sampler."}),
                "gamma": (
                    "FLOAT",
                    {
                        "default": 0.3,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "ancestral only: 0 = posterior variance (DDPM), 1 = forward variance.",
                    },
                ),
            }
        }

    def select(self, sampler_name, gamma):
        options = {"gamma": float(gamma)} if sampler_name == "ancestral" else {}
        return (core_sampler(Sampler(sampler_name, options)),)


class ImagenVideoScheduler(_SigmasNode):
    DESCRIPTION = (
        "The sigma grid an Imagen Video stage samples with by default (its truncated, possibly shifted, cosine "
        "schedule), as core SIGMAS: split it (SplitSigmas), edit it, or feed it to a stage node's sigmas input."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"model": (MODEL_TYPE, {"tooltip": "An Imagen Video stage."}), "steps": STEPS, "denoise": DENOISE},
            "optional": {"refine_from": REFINE_FROM},
        }

    def schedule(self, model, steps, denoise, refine_from=1.0):
        return (cosine_sigmas(model.stage.config.schedule, steps, denoise, refine_from),)


class ImagenVideoCosineScheduler(_SigmasNode):
    DESCRIPTION = (
        "Imagen Video's truncated continuous-time cosine schedule (lambda(t) = -2 log tan(a t + b), clipped to "
        "[logsnr_min, logsnr_max], optionally shifted towards more noise) as core SIGMAS for any model. "
        "sigma = exp(-logsnr / 2): for an SD-like model (sigma_max 14.6) use logsnr_min = -5.4."
    )

    @classmethod
    def INPUT_TYPES(cls):
        lam = {"min": -60.0, "max": 60.0, "step": 0.1}
        return {
            "required": {
                "steps": STEPS,
                "logsnr_min": ("FLOAT", {"default": -20.0, **lam, "tooltip": "log-SNR at pure noise (the paper: -20)."}),
                "logsnr_max": ("FLOAT", {"default": 20.0, **lam, "tooltip": "log-SNR at the last step (the paper: 20)."}),
                "logsnr_shift": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": -30.0,
                        "max": 0.0,
                        "step": 0.1,
                        "tooltip": "Shift towards more noise (simple diffusion); 0 = the plain cosine.",
                    },
                ),
                "denoise": DENOISE,
            },
            "optional": {"refine_from": REFINE_FROM},
        }

    def schedule(self, steps, logsnr_min, logsnr_max, logsnr_shift, denoise, refine_from=1.0):
        return (cosine_sigmas(CosineSchedule(logsnr_min, logsnr_max, logsnr_shift), steps, denoise, refine_from),)
