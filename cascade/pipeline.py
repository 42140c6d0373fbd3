"""Running stages: base generation, spatial and temporal super-resolution.

Every function takes and returns videos ``(B, 3, T, H, W)`` in [-1, 1] and is deterministic in
its ``seed``: noise is drawn per frame from a generator seeded by ``(seed, purpose, absolute frame
index)``, so windows, tiles and chunked (streamed) runs share exactly the same noise.
``progress(done, total, preview)`` is called after every network evaluation (``preview`` is the
current x0 prediction at the end of each step); raise from it to cancel.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from .conditioning import known_frames_condition, resize_video, tsr_condition, tsr_output_frames
from .guidance import ClassifierFreeGuidance, Thresholding, oscillating_guidance
from .samplers import get_sampler
from .stage import Stage
from .text import TextEmbedding
from .windows import WindowedDenoiser

__all__ = [
    "SR_THRESHOLDING",
    "SamplingOptions",
    "check_video_values",
    "frame_noise",
    "generate",
    "upsample_spatial",
    "upsample_temporal",
]

Progress = Callable[[int, int, "torch.Tensor | None"], None]

_SALT_INIT, _SALT_AUG, _SALT_STEP = 0, 1, 2

# SR stages clip statically: dynamic thresholding divides the whole video by its 99.5th percentile
# when a bright object overshoots 1, which lifts a dark background towards grey (demo SSR: -0.6 dB).
# It is meant for strongly guided base stages.
SR_THRESHOLDING = "static"


@dataclass(frozen=True)
class SamplingOptions:
    """How to sample one stage. ``guidance`` is the paper's w (ComfyUI cfg = 1 + w)."""

    steps: int = 32
    sampler: str = "ddim"
    guidance: float = 3.0
    oscillate: bool = False
    guidance_low: float = 1.0
    const_steps: int | None = None
    thresholding: str = "dynamic"
    percentile: float = 0.995
    gamma: float = 0.3
    seed: int = 0
    aug_level: float = 0.3  # SR / continuation: noise-augmentation time in [0, 1] (0.3 ~ SNR 3.9)
    # SR stages: the fraction of the noise schedule to run (ComfyUI's `denoise`). 1 starts from pure
    # noise (the paper); below 1 starts from the stage's input video (upsampled) noised to that time.
    denoise: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or int(self.steps) != self.steps or self.steps < 1:
            raise ValueError(f"steps must be a positive integer; received {self.steps!r}.")
        if not math.isfinite(self.guidance) or self.guidance < 0:
            raise ValueError(f"The guidance weight w must be >= 0 (0 = unguided; ComfyUI cfg = 1 + w); received {self.guidance}.")
        if not math.isfinite(self.guidance_low) or self.guidance_low < 0:
            raise ValueError(f"The low guidance weight must be >= 0; received {self.guidance_low}.")
        if not 0.0 < self.denoise <= 1.0:
            raise ValueError(f"denoise must be in (0, 1] (1 = start from pure noise); received {self.denoise}.")
        if not 0.0 <= self.aug_level <= 1.0:
            raise ValueError(f"The noise-augmentation level must be in [0, 1]; received {self.aug_level}.")
        get_sampler(self.sampler)
        if self.thresholding not in Thresholding.MODES:
            raise ValueError(f"thresholding must be one of {Thresholding.MODES}; received {self.thresholding!r}.")


def _seed_for(seed: int, salt: int, frame: int) -> int:
    h = hashlib.blake2b(f"{int(seed)}:{salt}:{frame}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & 0x7FFF_FFFF_FFFF_FFFF


def frame_noise(seed: int, salt: int, shape, frame_offset: int = 0, device="cpu") -> torch.Tensor:
    """Standard normal noise ``(B, C, T, H, W)`` whose frame ``t`` depends only on
    ``(seed, salt, frame_offset + t)`` (drawn on the CPU, so identical on every device)."""
    b, c, t, h, w = shape
    out = torch.empty(b, c, t, h, w)
    g = torch.Generator()
    for i in range(t):
        g.manual_seed(_seed_for(seed, salt, frame_offset + i))
        out[:, :, i] = torch.randn(b, c, h, w, generator=g)
    return out.to(device)


class _StepNoise:
    """``noise_sampler`` for stochastic samplers: per-step, per-frame seeded noise."""

    def __init__(self, seed: int, shape, frame_offset: int, device):
        self.seed, self.shape, self.offset, self.device, self.calls = seed, shape, frame_offset, device, 0

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        self.calls += 1
        return frame_noise(self.seed, _SALT_STEP * 100_000 + self.calls, self.shape, self.offset, self.device)


def check_video_values(video: torch.Tensor, what: str = "input video") -> None:
    if not bool(torch.isfinite(video).all()):
        raise ValueError(f"The {what} contains NaN or infinite values; check the node that produced it.")


def _guided_denoiser(stage: Stage, text, negative, opts: SamplingOptions, sigmas, batch: int):
    cfg = stage.config
    stage.check_text(text)
    stage.check_text(negative)
    base = stage.denoiser()
    if cfg.is_distilled and cfg.distillation.guided:
        if negative is not None:
            raise ValueError("A guided-distilled student has guidance baked in and takes no negative prompt.")
        d = cfg.distillation
        if not d.w_min - 1e-6 <= opts.guidance <= d.w_max + 1e-6:
            raise ValueError(
                f"This student was distilled for guidance w in [{d.w_min:g}, {d.w_max:g}]; received {opts.guidance:g}."
            )
        w = torch.full((batch,), float(opts.guidance))

        def den(x, sigma, **kw):
            return base(x, sigma, text=text, guidance=w.to(x.device), **kw)
    else:
        uncond = negative if negative is not None else (TextEmbedding.null(batch, cfg.text_dim) if cfg.text_dim else None)
        if opts.oscillate:
            w = oscillating_guidance(sigmas, opts.guidance, opts.guidance_low, opts.const_steps)
        else:
            w = opts.guidance
        den = ClassifierFreeGuidance(base, text, uncond, w) if cfg.text_dim else base
        if negative is not None and negative.batch != batch:
            raise ValueError(f"The negative prompt batch ({negative.batch}) must match the video batch ({batch}).")
    return den


def _check_steps_for(stage: Stage, opts: SamplingOptions) -> None:
    d = stage.config.distillation
    if d is not None and opts.steps not in d.steps:
        raise ValueError(
            f"This student was distilled for {'/'.join(map(str, d.steps))} steps; received {opts.steps}. "
            "Pick one of those step counts."
        )


def _sample(
    stage: Stage,
    shape,
    text,
    negative,
    opts: SamplingOptions,
    *,
    cond_kwargs: dict,
    dims: dict,
    progress: Progress | None,
    frame_offset: int = 0,
    init: torch.Tensor | None = None,
) -> torch.Tensor:
    """``init``: the video that ``denoise < 1`` starts from (an SR stage's upsampled input)."""
    _check_steps_for(stage, opts)
    if opts.denoise < 1:
        if init is None:
            raise ValueError(
                "denoise < 1 starts from the stage's input video: it is an option of SR stages, not of a base stage."
            )
        if stage.config.is_distilled:
            raise ValueError("A distilled student samples the step grid it was distilled on: use denoise = 1.")
    device = stage.device
    sigmas = stage.config.schedule.sigmas(opts.steps, t_max=opts.denoise, device=device)
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
    model = Thresholding(windowed, opts.thresholding, opts.percentile) if opts.thresholding != "none" else windowed

    def callback(info):
        if progress is not None:
            progress(counter["done"], total, info["denoised"])

    x = frame_noise(opts.seed, _SALT_INIT, shape, frame_offset, device) * sigmas[0]
    if opts.denoise < 1:
        x = x + init.to(device).float()
    noise = _StepNoise(opts.seed, shape, frame_offset, device)
    cond_kwargs = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in cond_kwargs.items()}
    sampler = get_sampler(opts.sampler)
    with torch.no_grad():
        out = sampler(model, x, sigmas, extra_args=cond_kwargs, callback=callback, gamma=opts.gamma, noise_sampler=noise)
    return out.clamp(-1.0, 1.0)


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


def _aug_logsnr(stage: Stage, opts: SamplingOptions, batch: int) -> torch.Tensor:
    return stage.config.schedule.unshifted.logsnr(torch.full((batch,), float(opts.aug_level)))


def _augment(stage, video, opts, frame_offset):
    lam = _aug_logsnr(stage, opts, video.shape[0])
    noise = frame_noise(opts.seed, _SALT_AUG, video.shape, frame_offset, video.device)
    from .schedule import alpha_sigma

    a, s = alpha_sigma(lam)
    shape = (-1, 1, 1, 1, 1)
    return (a.reshape(shape).to(video) * video + s.reshape(shape).to(video) * noise), lam


def _require_role(stage: Stage, role: str, what: str) -> None:
    if stage.role != role:
        raise ValueError(f"{what} needs a {role} stage, but {stage.source or 'the model'} is a {stage.config.describe()}.")


def generate(
    stage: Stage,
    text: TextEmbedding | None,
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
) -> torch.Tensor:
    """Base stage: text -> video ``(B, 3, T, H, W)``. ``known``/``known_mask`` ((B,3,T,H,W), (B,T))
    give frames to continue from (stages trained with continuation channels)."""
    _require_role(stage, "base", "Text-to-video generation")
    cfg = stage.config
    frames, height, width = frames or cfg.frames, height or cfg.height, width or cfg.width
    m = cfg.unet.size_multiple
    if frames < 1 or height < m or width < m or height % m or width % m:
        raise ValueError(
            f"Impossible size {frames} frames x {width}x{height}: width and height must be positive multiples of {m} "
            f"for this model (trained at {cfg.width}x{cfg.height}, {cfg.frames} frames)."
        )
    batch = text.batch if text is not None else 1
    shape = (batch, 3, frames, height, width)
    cond_kwargs: dict = {}
    if cfg.continuation:
        if known is None:
            known = torch.zeros(shape)
            known_mask = torch.zeros(batch, frames)
        check_video_values(known, "known frames")
        if tuple(known.shape) != shape:
            raise ValueError(f"Known frames must have shape {shape}; received {tuple(known.shape)}.")
        aug, lam = _augment(stage, known, options, frame_offset)
        cond_kwargs = {"cond": known_frames_condition(aug, known_mask), "aug_logsnr": lam}
    elif known is not None:
        raise ValueError("This base model has no continuation channels; it cannot take known frames.")
    return _sample(
        stage, shape, text, negative, options, cond_kwargs=cond_kwargs, dims={}, progress=progress, frame_offset=frame_offset
    )


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
    _require_role(stage, "ssr", "Spatial super-resolution")
    check_video_values(video)
    b, _, t, h, w = video.shape
    if size is None:
        scale = stage.config.spatial_factor if scale is None else scale
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"The scale must be a positive number; received {scale!r}.")
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if size[0] < 1 or size[1] < 1 or size[0] * size[1] > 8192 * 8192:
        raise ValueError(f"Impossible output size {size[1]}x{size[0]}.")
    up = resize_video(video.float(), size)
    up, (oh, ow) = _pad_to_multiple(up, stage.config.unet.size_multiple)
    cond, lam = _augment(stage, up, options, frame_offset)
    dims = {2: (window, overlap)}
    if tile:
        m = stage.config.unet.size_multiple
        tile = max(m, tile // m * m)
        dims.update({3: (tile, min(tile_overlap, tile - m)), 4: (tile, min(tile_overlap, tile - m))})
    out = _sample(
        stage,
        up.shape,
        text,
        negative,
        options,
        cond_kwargs={"cond": cond, "aug_logsnr": lam},
        dims=dims,
        progress=progress,
        frame_offset=frame_offset,
        init=up,
    )
    return out[..., :oh, :ow]


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
    applied in repeated passes."""
    _require_role(stage, "tsr", "Temporal super-resolution")
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
    n = video.shape[2]
    tsr_output_frames(n, factor, mode)  # validates
    video, (oh, ow) = _pad_to_multiple(video.float(), stage.config.unet.size_multiple)
    aug, lam = _augment(stage, video, options, frame_offset // factor)
    cond = tsr_condition(aug, factor, mode)
    shape = (video.shape[0], 3, cond.shape[2], *video.shape[-2:])
    init = tsr_condition(video, factor, mode)[:, :3] if options.denoise < 1 else None  # repeated frames
    out = _sample(
        stage,
        shape,
        text,
        negative,
        options,
        cond_kwargs={"cond": cond, "aug_logsnr": lam},
        dims={2: (window, overlap)},
        progress=progress,
        frame_offset=frame_offset,
        init=init,
    )
    return out[..., :oh, :ow]
