"""Running stages: base generation, spatial and temporal super-resolution.

Every function takes and returns videos ``(B, 3, T, H, W)`` in [-1, 1] and is deterministic in
its ``seed`` (``cascade.seeds``: noise is drawn per frame from a generator seeded by ``(seed,
purpose, absolute frame index)``, so windows, tiles, chunked runs and story windows share exactly
the same noise). :func:`sample_stage` is the one sampling loop: every path (generate, SR, story
windows, distilled students, the nodes) builds its condition through the stage's role
(``cascade.roles``) and samples here, with the same guidance wrappers and noise rules.
``progress(done, total, preview)`` is called after every network evaluation (``preview`` is the
current x0 prediction at the end of each step); raise from it to cancel.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from .checks import check_count, check_memory
from .conditioning import check_motion_search, fit_video, resize_video, tsr_condition, tsr_output_frames
from .diffusion import augment_condition
from .guidance import ClassifierFreeGuidance, FramePrompts, GuidanceOptions, PromptBlend
from .roles import get_role, require_role
from .samplers import Sampler, check_sigmas
from .schedule import check_refine_from
from .seeds import SALT_AUG, SALT_INIT, SALT_REPLACE, SALT_STEP, frame_noise, stage_seed
from .stage import Stage
from .text import TextEmbedding
from .windows import WindowedDenoiser

__all__ = [
    "MAX_OUTPUT_PIXELS",
    "SR_THRESHOLDING",
    "SamplingOptions",
    "check_steps",
    "check_video_values",
    "frame_noise",
    "generate",
    "known_frames",
    "sample_stage",
    "spatial_output_size",
    "stage_seed",
    "transform",
    "upsample",
    "upsample_spatial",
    "upsample_temporal",
]

log = logging.getLogger(__name__)

Progress = Callable[[int, int, "torch.Tensor | None"], None]

MAX_OUTPUT_PIXELS = 8192 * 8192  # per frame

# SR stages clip statically: dynamic thresholding divides the whole video by its 99.5th percentile
# when a bright object overshoots 1, which lifts a dark background towards grey (demo SSR: -0.6 dB).
# It is meant for strongly guided base stages.
SR_THRESHOLDING = "static"


@dataclass(frozen=True)
class SamplingOptions:
    """How to sample one stage: the step count, the sampler with its own options
    (:class:`~cascade.samplers.Sampler`; a name is shorthand for its defaults), the guidance
    (:class:`~cascade.guidance.GuidanceOptions`; a number is shorthand for ``w`` with the default
    dynamic thresholding), the seed, the noise-augmentation level of the stage's input and
    ``denoise`` (ComfyUI's: the fraction of the schedule to run; SR stages only)."""

    steps: int = 32
    sampler: Sampler = Sampler()
    guidance: GuidanceOptions = GuidanceOptions()
    seed: int = 0
    aug_level: float = 0.3  # SR / continuation: noise-augmentation time in [0, 1] (0.3 ~ SNR 3.9)
    # SR stages: the fraction of the noise schedule to run (ComfyUI's `denoise`). 1 starts from pure
    # noise (the paper); below 1 starts from the stage's input video (upsampled) noised to that time.
    denoise: float = 1.0
    # a k-diffusion sigma grid (ComfyUI's SIGMAS) instead of the stage's own `steps` / `denoise`
    # grid; `steps` must be its length - 1. A grid that starts below the schedule's top starts an
    # SR stage from its input video, like `denoise` < 1.
    sigmas: tuple[float, ...] | None = None
    # SR stages: pull every denoised prediction onto what the input already determines (SSR: the
    # output resized down is the input; TSR: the input frames exactly, and what the two input frames
    # around an inserted one agree on), so the stage copies what it is given and draws the rest
    consistency: bool = False
    # SR stages: 1 = the uniform grid (the paper); below 1 the first step goes from pure noise straight
    # to this time and the other steps - 1 refine the stage's first prediction from there, at low noise
    # (CosineSchedule.sigmas; the demo SSR: 16 seed-99 probe clips at 16 steps 41.1 -> 42.8 dB)
    refine_from: float = 1.0
    # TSR stages with consistency: how far (pixels, between two input frames) the projection searches for
    # the displacement along which the two input frames agree, so that a moving object they both show is
    # copied at its place in between (conditioning.motion_compensated_pairs); 0 copies only what does not move
    motion_search: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or int(self.steps) != self.steps or self.steps < 1:
            raise ValueError(f"steps must be a positive integer; received {self.steps!r}.")
        if isinstance(self.sampler, str):
            object.__setattr__(self, "sampler", Sampler(self.sampler))
        if isinstance(self.guidance, (int, float)) and not isinstance(self.guidance, bool):
            object.__setattr__(self, "guidance", GuidanceOptions(w=float(self.guidance)))
        if not callable(getattr(self.sampler, "sample", None)) or not isinstance(self.guidance, GuidanceOptions):
            raise ValueError(
                "SamplingOptions needs a Sampler (a sampler name, or a StageSampler such as a ComfyUI SAMPLER) "
                "and GuidanceOptions (or a weight w)."
            )
        if not 0.0 < self.denoise <= 1.0:
            raise ValueError(f"denoise must be in (0, 1] (1 = start from pure noise); received {self.denoise}.")
        if self.sigmas is not None:
            grid = torch.as_tensor(self.sigmas, dtype=torch.float64).flatten()
            check_sigmas(grid)
            object.__setattr__(self, "sigmas", tuple(float(v) for v in grid))
            if self.steps != len(self.sigmas) - 1:
                raise ValueError(f"With a sigma grid, steps is its length - 1 ({len(self.sigmas) - 1}); received {self.steps}.")
            if self.denoise < 1:
                raise ValueError(
                    "denoise belongs to the stage's own schedule: with a sigma grid, set denoise in the node that makes "
                    "the sigmas (e.g. BasicScheduler or ImagenVideoScheduler) and leave it at 1 here."
                )
        check_refine_from(self.refine_from)
        if self.refine_from < 1 and self.sigmas is not None:
            raise ValueError(
                "refine_from belongs to the stage's own schedule: with a sigma grid, set it in the node that makes the "
                "sigmas (ImagenVideoScheduler) and leave it at 1 here."
            )
        if self.refine_from < 1 and self.refine_from >= self.denoise:
            raise ValueError(
                f"refine_from ({self.refine_from:g}) must be below denoise ({self.denoise:g}), where the grid starts; or 1 "
                "for the uniform grid."
            )
        if not 0.0 <= self.aug_level <= 1.0:
            raise ValueError(f"The noise-augmentation level must be in [0, 1]; received {self.aug_level}.")
        if not isinstance(self.consistency, bool):
            raise ValueError(f"consistency is True or False; received {self.consistency!r}.")
        check_motion_search(self.motion_search)

    def grid(self, stage: Stage, device=None) -> torch.Tensor:
        """The sigma grid this run samples: the given ``sigmas``, else the stage's schedule for
        ``steps`` and ``denoise``."""
        if self.sigmas is not None:
            return torch.tensor(self.sigmas, dtype=torch.float32, device=device)
        d = stage.config.distillation  # a student samples the grid it was distilled on
        refine = d.refine_from if d is not None else self.refine_from
        return stage.config.schedule.sigmas(self.steps, t_max=self.denoise, device=device, refine_from=refine)

    def starts_from_input(self, stage: Stage) -> bool:
        """Whether the run starts part-way down the schedule, from the stage's input video."""
        if self.sigmas is None:
            return self.denoise < 1
        return self.sigmas[0] < stage.config.schedule.sigma_max * (1 - 1e-5)

    def doubles_batch(self, stage: Stage) -> bool:
        """Whether classifier-free guidance runs ``stage`` on a cond + uncond batch."""
        cfg = stage.config
        return bool(self.guidance.w) and bool(cfg.text_dim) and not cfg.is_distilled

    def with_w(self, w: float) -> SamplingOptions:
        """The same options with guidance weight ``w`` (everything else about guidance kept)."""
        return replace(self, guidance=replace(self.guidance, w=float(w)))

    def for_stage(self, seed: int, role: str) -> SamplingOptions:
        """These options for the ``role`` stage of a cascade run with seed ``seed`` (:func:`stage_seed`)."""
        return replace(self, seed=stage_seed(seed, role))


class _StepNoise:
    """``noise_sampler`` for stochastic samplers: per-step, per-frame seeded noise."""

    def __init__(self, seed: int, shape, frame_offset: int, device):
        self.seed, self.shape, self.offset, self.device, self.calls = seed, shape, frame_offset, device, 0

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        self.calls += 1
        return frame_noise(self.seed, SALT_STEP * 100_000 + self.calls, self.shape, self.offset, self.device)


def check_video_values(video: torch.Tensor, what: str = "input video") -> None:
    if not bool(torch.isfinite(video).all()):
        raise ValueError(f"The {what} contains NaN or infinite values; check the node that produced it.")


def check_steps(stage: Stage, steps: int) -> None:
    """A distilled student samples only the step counts it was distilled for."""
    d = stage.config.distillation
    if d is not None and steps not in d.steps:
        raise ValueError(
            f"{stage.source or stage.config.name or 'This student'} was distilled for {'/'.join(map(str, d.steps))} steps; "
            f"received {steps}. Pick one of those step counts."
        )


def check_options(stage: Stage, opts: SamplingOptions, negative: TextEmbedding | None = None) -> None:
    """Everything about ``opts`` that can be refused before any work: the step count of a student,
    its guidance range, negative prompts and ``denoise``."""
    cfg = stage.config
    if cfg.is_distilled and opts.sigmas is not None:
        raise ValueError("A distilled student samples the step grid it was distilled on: disconnect the sigmas input.")
    check_steps(stage, opts.steps)
    if opts.denoise < 1 and not get_role(stage.role).takes_video:
        raise ValueError("denoise < 1 starts from the stage's input video: it is an option of SR stages, not of a base stage.")
    if opts.consistency and not get_role(stage.role).takes_video:
        raise ValueError("consistency projects onto a stage's input video: it is an option of SR stages, not of a base stage.")
    if opts.motion_search and stage.role != "tsr":
        raise ValueError(
            f"motion_search is how far a TSR stage's projection looks for motion between its input frames; "
            f"{cfg.describe()} has no use for it. Set it to 0."
        )
    if cfg.is_distilled:
        if opts.denoise < 1:
            raise ValueError("A distilled student samples the step grid it was distilled on: use denoise = 1.")
        if opts.refine_from < 1:
            raise ValueError(
                "A distilled student samples the step grid it was distilled on (its own refine_from): use refine_from = 1."
            )
        d = cfg.distillation
        if d.guided and negative is not None:
            raise ValueError("A guided-distilled student has guidance baked in and takes no negative prompt.")
        if d.guided and not d.w_min - 1e-6 <= opts.guidance.w <= d.w_max + 1e-6:
            raise ValueError(
                f"This student was distilled for guidance w in [{d.w_min:g}, {d.w_max:g}]; received {opts.guidance.w:g}."
            )


def _guided_denoiser(stage: Stage, text, negative, opts: SamplingOptions, sigmas, batch: int):
    """The stage's denoiser with classifier-free guidance (or a guided student's w), one per prompt
    of a :class:`FramePrompts`, blended per frame."""
    if isinstance(text, FramePrompts):
        dens = [_guided_denoiser(stage, t, negative, opts, sigmas, batch) for t in text.texts]
        return dens[0] if len(dens) == 1 else PromptBlend(dens, text.weights)
    cfg = stage.config
    stage.check_text(text)
    stage.check_text(negative)
    base = stage.denoiser()
    if cfg.is_distilled and cfg.distillation.guided:
        w = torch.full((batch,), float(opts.guidance.w))

        def den(x, sigma, **kw):
            return base(x, sigma, text=text, guidance=w.to(x.device), **kw)

        return den
    if not cfg.text_dim:
        return base
    if negative is not None and negative.batch != batch:
        raise ValueError(f"The negative prompt batch ({negative.batch}) must match the video batch ({batch}).")
    uncond = negative if negative is not None else TextEmbedding.null(batch, cfg.text_dim)
    return ClassifierFreeGuidance(base, text, uncond, opts.guidance.weight(sigmas))


def _aug_logsnr(stage: Stage, opts: SamplingOptions, batch: int) -> torch.Tensor:
    return stage.config.schedule.unshifted.logsnr(torch.full((batch,), float(opts.aug_level)))


def _condition(stage: Stage, inputs: dict, opts: SamplingOptions, frame_offset: int) -> dict:
    """The role's network keyword arguments for ``inputs``, augmented with the run's seeded noise."""
    lam = _aug_logsnr(stage, opts, next(v for v in inputs.values() if isinstance(v, torch.Tensor)).shape[0])
    aug_offset = inputs.get("aug_frame_offset", frame_offset)

    def noised(video: torch.Tensor) -> torch.Tensor:
        noise = frame_noise(opts.seed, SALT_AUG, video.shape, aug_offset, video.device)
        return augment_condition(video, lam, noise=noise)

    return get_role(stage.role).condition(stage.config, inputs, lam, noised)


class _Replacement:
    """Training-free continuation for bases without known-frame channels (VDM's replacement
    method): the known frames of the state are replaced by noised known data at every step."""

    def __init__(self, denoise, known: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor):
        self.denoise, self.known, self.noise = denoise, known, noise
        self.m = mask.reshape(mask.shape[0], 1, -1, 1, 1).to(known)

    def __call__(self, x, sigma, **cond):
        s = sigma.reshape(-1, 1, 1, 1, 1).to(x)
        known, m, noise = self.known.to(x.device), self.m.to(x.device), self.noise.to(x.device)
        x = x * (1 - m) + (known + s * noise) * m
        x0 = self.denoise(x, sigma, **cond)
        return x0 * (1 - m) + known * m


class Projected:
    """A denoiser whose every prediction is projected onto the stage's input (``consistency``)."""

    def __init__(self, denoise, project: Callable[[torch.Tensor], torch.Tensor]):
        self.denoise, self.project = denoise, project

    def __call__(self, x, sigma, **cond):
        return self.project(self.denoise(x, sigma, **cond))


def sample_stage(
    stage: Stage,
    shape,
    text,
    negative,
    opts: SamplingOptions,
    *,
    cond_kwargs: dict,
    dims: dict | None = None,
    progress: Progress | None = None,
    frame_offset: int = 0,
    init: torch.Tensor | None = None,
    wrap: Callable | None = None,
) -> torch.Tensor:
    """The sampling loop every path shares: guidance (CFG, a guided student's w, per-frame prompt
    blending), windows/tiles (``dims``), thresholding, the sampler with its options, per-frame
    seeded noise keyed by ``frame_offset``. ``init``: the video that ``denoise < 1`` starts from (an
    SR stage's upsampled input). ``wrap``: an extra denoiser wrapper under the windows (training-free
    continuation). Every tensor is created on, or moved to, the stage's device."""
    check_options(stage, opts, negative)
    if opts.denoise < 1 and init is None:
        raise ValueError("denoise < 1 starts from the stage's input video: it is an option of SR stages, not of a base stage.")
    # a partial grid starts from the input video; a base stage (no input) starts from noise at sigmas[0]
    latent = init.to(stage.device).float() if init is not None and opts.starts_from_input(stage) else None
    dims = dims or {}
    window, tile = dims.get(2, (None, 0))[0], dims.get(3, (None, 0))[0]
    guided = opts.doubles_batch(stage)
    check_memory(
        stage,
        shape,
        guided=guided,
        window=window,
        tile=tile,
        lower="window_frames or tile_size" if window else "frames (or width and height)",
    )
    device = stage.device
    sigmas = opts.grid(stage, device)
    den = _guided_denoiser(stage, text, negative, opts, sigmas, shape[0])
    counter = {"done": 0}
    windowed = WindowedDenoiser(den, dims)
    total = opts.steps * windowed.count(shape)

    def on_eval():
        counter["done"] += 1
        if progress is not None:
            progress(counter["done"], total, None)

    windowed.on_eval = on_eval
    # thresholding sees the fused prediction, so its percentile spans the whole video
    model = opts.guidance.threshold(windowed)
    if wrap is not None:  # outside the thresholding, so that known frames stay exactly what was given
        model = wrap(model)

    def callback(info):
        if progress is not None:
            progress(counter["done"], total, info["denoised"])

    noise = frame_noise(opts.seed, SALT_INIT, shape, frame_offset, device)
    steps = _StepNoise(opts.seed, shape, frame_offset, device)
    cond_kwargs = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in cond_kwargs.items()}
    with torch.no_grad():
        out = opts.sampler.sample(
            model,
            noise,
            sigmas,
            latent=latent,
            extra_args=cond_kwargs,
            callback=callback,
            noise_sampler=steps,
            seed=opts.seed,
        )
    return out.float().clamp(-1.0, 1.0)


@functools.cache
def _warn_projection_off(name: str) -> None:
    """Once per student and process (a story samples its SR stages once per chunk)."""
    log.warning(
        "%s was distilled with the projection onto its input: without it (consistency off) its video is worse. "
        "Turn consistency on.",
        name,
    )


def _sample_input_video(stage, padded, crop, text, negative, options, *, inputs, dims, progress, frame_offset, init, frames=None):
    """A video-taking stage on its (padded) input: the role's condition, the sampling core, the
    padding cropped off. ``frames``: the output frame count when it differs from the input's."""
    wrap = None
    d = stage.config.distillation
    if d is not None and d.consistency and not options.consistency:
        _warn_projection_off(str(stage.source or stage.config.name or "This student"))
    if options.consistency:
        project = get_role(stage.role).projection(stage.config, {**inputs, "motion_search": options.motion_search})
        if project is None:
            raise ValueError(
                f"consistency=True projects onto the input of an SSR or TSR stage; {stage.config.describe()} has no "
                "projection. Set it to False."
            )
        wrap = lambda den: Projected(den, project)  # noqa: E731
    cond_kwargs = _condition(stage, inputs, options, frame_offset)
    shape = (padded.shape[0], 3, frames or padded.shape[2], *padded.shape[-2:])
    out = sample_stage(
        stage,
        shape,
        text,
        negative,
        options,
        cond_kwargs=cond_kwargs,
        dims=dims,
        progress=progress,
        frame_offset=frame_offset,
        init=init,
        wrap=wrap,
    )
    return out[..., : crop[0], : crop[1]]


def _pad_to_multiple(video: torch.Tensor, m: int) -> tuple[torch.Tensor, tuple[int, int]]:
    h, w = video.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if ph == 0 and pw == 0:
        return video, (h, w)
    b, c, t = video.shape[:3]
    frames = video.transpose(1, 2).reshape(b * t, c, h, w)
    mode = "reflect" if ph < h and pw < w else "replicate"
    frames = torch.nn.functional.pad(frames, (0, pw, 0, ph), mode=mode)
    return frames.reshape(b, t, c, h + ph, w + pw).transpose(1, 2), (h, w)


def generate(
    stage: Stage,
    text: TextEmbedding | FramePrompts | None,
    *,
    frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
    options: SamplingOptions = SamplingOptions(),
    negative: TextEmbedding | None = None,
    known: torch.Tensor | None = None,
    known_mask: torch.Tensor | None = None,
    progress: Progress | None = None,
    frame_offset: int = 0,
    replacement: bool = False,
    paste_known: bool = False,
) -> torch.Tensor:
    """Base stage: text -> video ``(B, 3, T, H, W)``. ``text`` may be a :class:`FramePrompts`
    (several prompts blended per frame). ``known``/``known_mask`` ((B,3,T,H,W), (B,T)) give frames
    to continue from: through the known-frame channels of a stage trained with them, or, with
    ``replacement=True`` on a stage without them, by the training-free replacement method.
    ``paste_known``: also apply the replacement method on a stage with the channels, so the known
    frames are in the state at every step and exactly in the output (image-to-video, extension).
    ``frame_offset``: the absolute index of the first frame (noise is keyed by it)."""
    require_role(stage, "base", "Text-to-video generation")
    cfg = stage.config
    frames = cfg.frames if frames is None else check_count("frames", frames)
    height = cfg.height if height is None else check_count("height", height)
    width = cfg.width if width is None else check_count("width", width)
    m = cfg.unet.size_multiple
    if height < m or width < m or height % m or width % m:
        raise ValueError(
            f"Impossible size {frames} frames x {width}x{height}: width and height must be positive multiples of {m} "
            f"for this model (trained at {cfg.width}x{cfg.height}, {cfg.frames} frames)."
        )
    batch = text.batch if text is not None else 1
    shape = (batch, 3, frames, height, width)
    check_memory(stage, shape, guided=False, lower="frames (or width and height)")  # before the known-frame tensors
    if known is not None:
        check_video_values(known, "known frames")
        if tuple(known.shape) != shape:
            raise ValueError(f"Known frames must have shape {shape}; received {tuple(known.shape)}.")
        if known_mask is None or tuple(known_mask.shape) != (batch, frames):
            raise ValueError(f"Known frames need a known_mask of shape {(batch, frames)} (1 = known frame).")
    cond_kwargs: dict = {}
    wrap = None
    if cfg.continuation:
        given = known is not None
        if known is None:
            known, known_mask = torch.zeros(shape), torch.zeros(batch, frames)
        cond_kwargs = _condition(stage, {"known": known.float(), "known_mask": known_mask}, options, frame_offset)
        if given and paste_known:
            noise = frame_noise(options.seed, SALT_REPLACE, shape, frame_offset)

            def wrap(den, _k=known.float(), _m=known_mask.float(), _n=noise):
                return _Replacement(den, _k, _m, _n)

    elif known is not None:
        if not replacement and not paste_known:
            raise ValueError(
                "This base model has no continuation channels; it cannot take known frames "
                "(story mode falls back to the training-free replacement method: replacement=True)."
            )
        noise = frame_noise(options.seed, SALT_REPLACE, shape, frame_offset)

        def wrap(den, _k=known.float(), _m=known_mask.float(), _n=noise):
            return _Replacement(den, _k, _m, _n)

    return sample_stage(
        stage, shape, text, negative, options, cond_kwargs=cond_kwargs, progress=progress, frame_offset=frame_offset, wrap=wrap
    )


def known_frames(
    frames: int, height: int, width: int, *, start: torch.Tensor | None = None, end: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Known frames for image-to-video, video extension and first/last-frame control: ``start``
    frames (1, 3, n, h, w) at the beginning of the clip, ``end`` frames at its end, each fitted to
    ``height`` x ``width`` (centre crop, resize). Returns ``(known (1, 3, T, H, W), mask (1, T))``.
    At least one frame must be left to generate."""
    known, mask = torch.zeros(1, 3, frames, height, width), torch.zeros(1, frames)
    n_start = 0 if start is None else start.shape[2]
    n_end = 0 if end is None else end.shape[2]
    if n_start + n_end >= frames:
        raise ValueError(
            f"{n_start} start and {n_end} end frames leave nothing to generate in {frames} frames: give fewer known frames "
            "(e.g. the last 4 frames of the video to extend) or more frames."
        )
    for video, where in ((start, slice(0, n_start)), (end, slice(frames - n_end, frames))):
        if video is None:
            continue
        check_video_values(video, "known frames")
        known[:, :, where] = fit_video(video[:1].float(), (height, width))
        mask[:, where] = 1
    return known, mask


def spatial_output_size(stage: Stage, hw: tuple[int, int], scale: float | None = None, size=None) -> tuple[int, int]:
    """The output ``(H, W)`` of an SSR stage for input frames of ``hw``: ``size`` if given, else the
    input times ``scale`` (default: the stage's own factor). Refuses impossible sizes."""
    h, w = hw
    if size is None:
        scale = stage.config.spatial_factor if scale is None else scale
        if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"The scale must be a positive number; received {scale!r}.")
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
    size = (int(size[0]), int(size[1]))
    if size[0] < 1 or size[1] < 1:
        raise ValueError(f"Impossible output size {size[1]}x{size[0]}.")
    if size[0] * size[1] > MAX_OUTPUT_PIXELS:
        raise ValueError(f"The output would be {size[1]}x{size[0]} per frame: too large. Lower the scale.")
    return size


def upsample_spatial(
    stage: Stage,
    video: torch.Tensor,
    text: TextEmbedding | None,
    *,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    options: SamplingOptions = SamplingOptions(),
    negative: TextEmbedding | None = None,
    window: int = 16,
    overlap: int = 4,
    tile: int = 0,
    tile_overlap: int = 16,
    progress: Progress | None = None,
    frame_offset: int = 0,
) -> torch.Tensor:
    """SSR: ``(B, 3, T, h, w)`` -> ``(B, 3, T, H, W)`` for any frame count and size, in overlapping
    temporal windows (and spatial tiles when ``tile > 0``) fused at every step."""
    require_role(stage, "ssr", "Spatial super-resolution")
    check_video_values(video)
    size = spatial_output_size(stage, video.shape[-2:], scale, size)
    up = resize_video(video.float(), size)
    up, crop = _pad_to_multiple(up, stage.config.unet.size_multiple)
    dims = {2: (window, overlap)}
    if tile:
        m = stage.config.unet.size_multiple
        tile = max(m, tile // m * m)
        dims.update({3: (tile, min(tile_overlap, tile - m)), 4: (tile, min(tile_overlap, tile - m))})
    inputs = {"low": up, "size": tuple(up.shape[-2:]), "source": video.float(), "crop": crop}
    return _sample_input_video(
        stage, up, crop, text, negative, options, inputs=inputs, dims=dims, progress=progress, frame_offset=frame_offset, init=up
    )


def _tsr_chain(stage: Stage, multiplier: int) -> int:
    f = stage.config.temporal_factor
    k = round(math.log(multiplier, f)) if multiplier > 1 else 0
    if multiplier < 1 or f**k != multiplier:
        raise ValueError(
            f"This TSR stage was trained for x{f}; the multiplier must be a power of {f} "
            f"(it is applied repeatedly), received x{multiplier}."
        )
    return k


def upsample_temporal(
    stage: Stage,
    video: torch.Tensor,
    text: TextEmbedding | None,
    *,
    multiplier: int | None = None,
    mode: str = "imagen",
    options: SamplingOptions = SamplingOptions(),
    negative: TextEmbedding | None = None,
    window: int = 32,
    overlap: int = 8,
    progress: Progress | None = None,
    frame_offset: int = 0,
) -> torch.Tensor:
    """TSR: ``(B, 3, N, H, W)`` -> ``(B, 3, N', H, W)`` with ``N' = N*m`` (``mode="imagen"``) or
    ``(N-1)*m + 1`` (``"interpolate"``). A multiplier that is a power of the stage's factor is
    applied in repeated passes (pass ``p`` with seed ``seed + p``)."""
    require_role(stage, "tsr", "Temporal super-resolution")
    check_video_values(video)
    multiplier = stage.config.temporal_factor if multiplier is None else multiplier
    if isinstance(multiplier, bool) or int(multiplier) != multiplier:
        raise ValueError(f"The temporal multiplier must be an integer; received {multiplier!r}.")
    passes = _tsr_chain(stage, int(multiplier))
    f = stage.config.temporal_factor
    for p in range(passes):
        video = _tsr_pass(
            stage,
            video,
            text,
            f,
            mode,
            replace(options, seed=options.seed + p),
            negative,
            window,
            overlap,
            progress,
            frame_offset * f ** (p + 1),
        )
    return video


def _tsr_pass(stage, video, text, factor, mode, options, negative, window, overlap, progress, frame_offset):
    frames = tsr_output_frames(video.shape[2], factor, mode)  # validates
    video, crop = _pad_to_multiple(video.float(), stage.config.unet.size_multiple)
    inputs = {"low": video, "mode": mode, "aug_frame_offset": frame_offset // factor}
    # the repeated input frames, where the run starts from them
    init = tsr_condition(video, factor, mode)[:, :3] if options.starts_from_input(stage) else None
    return _sample_input_video(
        stage,
        video,
        crop,
        text,
        negative,
        options,
        inputs=inputs,
        dims={2: (window, overlap)},
        progress=progress,
        frame_offset=frame_offset,
        init=init,
        frames=frames,
    )


def transform(
    stage: Stage,
    video: torch.Tensor,
    text: TextEmbedding | None,
    *,
    options: SamplingOptions = SamplingOptions(),
    negative: TextEmbedding | None = None,
    window: int = 16,
    overlap: int = 4,
    progress: Progress | None = None,
    frame_offset: int = 0,
) -> torch.Tensor:
    """Any video-taking stage whose output has its input's size and frame count (a role that a
    plug-in registers, e.g. restoration): the role builds the condition from ``{"low": video}``."""
    role = get_role(stage.role)
    if not role.takes_video:
        raise ValueError(f"{stage.config.describe()} makes videos from text: use generate().")
    check_video_values(video)
    video, crop = _pad_to_multiple(video.float(), stage.config.unet.size_multiple)
    inputs = {"low": video, "size": tuple(video.shape[-2:])}
    return _sample_input_video(
        stage,
        video,
        crop,
        text,
        negative,
        options,
        inputs=inputs,
        dims={2: (window, overlap)},
        progress=progress,
        frame_offset=frame_offset,
        init=video,
    )


def upsample(
    stage: Stage,
    video: torch.Tensor,
    text: TextEmbedding | None,
    *,
    options: SamplingOptions = SamplingOptions(),
    negative: TextEmbedding | None = None,
    progress: Progress | None = None,
    frame_offset: int = 0,
    multiplier: int | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Any video-taking stage at its defaults: SSR by ``scale``, TSR by ``multiplier`` (the
    paper's ``N*m`` frames), other roles through :func:`transform`."""
    kw = dict(options=options, negative=negative, progress=progress, frame_offset=frame_offset)
    if stage.role == "ssr":
        return upsample_spatial(stage, video, text, scale=scale, **kw)
    if stage.role == "tsr":
        return upsample_temporal(stage, video, text, multiplier=multiplier, mode="imagen", **kw)
    return transform(stage, video, text, **kw)
