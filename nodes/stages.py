"""Stage nodes: base sampler, spatial and temporal super-resolution, and the distilled fast path.

Each node reads its widgets, builds :class:`SamplingOptions`, calls one library function and
converts at the boundary. Frames travel as IMAGE ``[frames, H, W, 3]`` with an ``fps`` FLOAT.
"""

from __future__ import annotations

import math
import uuid
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import torch

from ..cascade.checks import check_count, estimate_sampling_bytes
from ..cascade.demo import BASE_GUIDANCE, SR_AUG_LEVEL
from ..cascade.guidance import GuidanceOptions
from ..cascade.pipeline import (
    SR_THRESHOLDING,
    SamplingOptions,
    check_options,
    generate,
    known_frames,
    spatial_output_size,
    upsample_spatial,
    upsample_temporal,
)
from ..cascade.roles import get_role, output_fps
from ..cascade.samplers import SAMPLERS
from . import adapter
from .convert import conditioning_to_text, image_to_video, video_to_image
from .core_sampling import stage_sampler
from .models import MODEL_TYPE, ImagenVideoModel
from .sampling import REFINE_FROM

CATEGORY = "Imagen Video"
MAX_SEED = 0xFFFF_FFFF_FFFF_FFFF
FRAME_COUNT_MODES = ["imagen", "interpolate"]
THRESHOLDING = ["dynamic", "static", "none"]

# shared widget definitions (names and defaults are part of the public contract)
SEED = (
    "INT",
    {
        "default": 0,
        "min": 0,
        "max": MAX_SEED,
        "control_after_generate": True,
        "tooltip": "Same seed and inputs give the same video.",
    },
)
NOISE_AUG = (
    "FLOAT",
    {
        "default": SR_AUG_LEVEL,
        "min": 0.0,
        "max": 1.0,
        "step": 0.01,
        "tooltip": "Noise conditioning augmentation of the input video (0 = none; 0.1 ~ SNR 40, the demo's default; "
        "0.3 ~ SNR 4). More removes more artifacts of the previous stage, less keeps more of its detail.",
    },
)
POSITIVE = (
    "CONDITIONING",
    {"tooltip": "The prompt (ImagenVideoTextEncode, or core CLIPTextEncode with the T5 the stage was trained with)."},
)
NEGATIVE = (
    "CONDITIONING",
    {"tooltip": "Optional negative prompt; without it the model's learned null embedding is the unconditional branch."},
)
GUIDANCE = (
    "FLOAT",
    {
        "default": BASE_GUIDANCE,
        "min": 0.0,
        "max": 30.0,
        "step": 0.1,
        "tooltip": "Guidance weight w in Imagen Video's convention: (1+w)*cond - w*uncond. 0 = no guidance (the demo "
        "base's best: guidance distorts its small shapes); ComfyUI's cfg scale = 1 + w (the paper's w = 6 is cfg 7).",
    },
)
# SR stages: no guidance by default (the demo TSR: w = 1 costs two evaluations per step and loses 0.4 dB)
SR_GUIDANCE = ("FLOAT", {**GUIDANCE[1], "default": 0.0})
SHOW_ANIMATION = (
    "BOOLEAN",
    {"default": True, "tooltip": "Show the output as an animation in the node (off: nothing is written to the temp folder)."},
)
# core custom sampling: the optional inputs every stage node ends with (after show_animation)
CORE_SAMPLING = {
    "sampler": (
        "SAMPLER",
        {
            "tooltip": "Optional core SAMPLER (KSamplerSelect, SamplerEulerAncestral, ImagenVideoSamplerSelect...); "
            "when connected it is used instead of this node's own sampler.",
        },
    ),
    "sigmas": (
        "SIGMAS",
        {
            "tooltip": "Optional sigma grid (ImagenVideoScheduler, BasicScheduler, KarrasScheduler, SplitSigmas...); "
            "when connected it replaces steps (its length - 1 steps) and denoise belongs to the scheduler.",
        },
    ),
}
CONSISTENCY = (
    "BOOLEAN",
    {
        "default": False,
        "tooltip": "Keep what the input already shows: every prediction is pulled onto the input (SSR: the output scaled "
        "back down is the input; TSR: the input frames exactly, and what two neighbouring input frames agree on). The "
        "model draws only what the input does not determine. Off: the paper's stages, which redraw everything.",
    },
)
MOTION_SEARCH = (
    "FLOAT",
    {
        "default": 0.0,
        "min": 0.0,
        "max": 8.0,
        "step": 0.5,
        "tooltip": "TSR with consistency on: also copy a moving object that the two input frames around an inserted frame "
        "both show, searching up to this many pixels for how far it moved between them. 0 copies only what does not "
        "move (what this node did before the input existed); the demo cascade uses 3.",
    },
)
# the optional inputs both SR nodes end with (in this order: the schema snapshot holds it)
SR_TAIL = {
    "denoise": (
        "FLOAT",
        {
            "default": 1.0,
            "min": 0.01,
            "max": 1.0,
            "step": 0.01,
            "tooltip": "ComfyUI's denoise: 1 samples from pure noise (the paper); below 1 starts from the "
            "input video (upsampled) noised to that point, keeping more of it.",
        },
    ),
    "show_animation": SHOW_ANIMATION,
    **CORE_SAMPLING,
    "frames_per_video": (
        "INT",
        {
            "default": 0,
            "min": 0,
            "max": 100000,
            "tooltip": "0: the frames are one video. N: they are a batch of videos of N frames each (connect the previous "
            "stage's frames_per_video), each upsampled on its own with seed + i.",
        },
    ),
    "consistency": CONSISTENCY,
    "refine_from": REFINE_FROM,
}


# shared numeric widgets: (type, options); each node adds its own tooltip with _w()
FRAMES = ("INT", {"default": 16, "min": 1, "max": 1024})
SIZE = ("INT", {"default": 32, "min": 4, "max": 4096, "step": 4})
FPS = ("FLOAT", {"default": 4.0, "min": 0.1, "max": 240.0, "step": 0.1})
SCALE = ("FLOAT", {"default": 2.0, "min": 1.0, "max": 8.0, "step": 0.25})
MULTIPLIER = ("INT", {"default": 2, "min": 1, "max": 16})


def _w(spec: tuple, tooltip: str, **changes) -> tuple:
    return (spec[0], {**spec[1], **changes, "tooltip": tooltip})


def _preview(x0: torch.Tensor | None, size: int | None):
    """A JPEG strip of up to 4 frames of a video (the current x0 prediction, or the newest
    finished frames) in [-1, 1] (pixel space: no decoder needed); ``None`` when previews are off."""
    if x0 is None or size is None:
        return None
    from PIL import Image

    v = x0[0].detach().float().cpu()  # (3, T, H, W)
    idx = np.linspace(0, v.shape[1] - 1, min(4, v.shape[1])).round().astype(int)
    strip = torch.cat([v[:, i] for i in idx], dim=-1)
    img = ((strip.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
    return ("JPEG", Image.fromarray(img), size)


def _progress(node_id, part: tuple[int, int] = (0, 1)):
    """Progress over every evaluation, with a live preview where ComfyUI's preview setting asks for
    one. ``part``: video ``i`` of ``n`` of a batch (one bar over all of them)."""
    bar = {"p": None}
    size = adapter.preview_size()
    i, n = part

    def progress(done, total, preview):
        if bar["p"] is None or bar["p"].total != total * n:
            bar["p"] = adapter.Progress(total * n, node_id)
        bar["p"].update(i * total + done, _preview(preview, size))

    return progress


def _batch_seed(seed: int, i: int) -> int:
    """Video ``i`` of a batch uses seed + i (wrapping at the widget's maximum): the same video as a
    single run with that seed."""
    return (int(seed) + i) % (MAX_SEED + 1)


def _split_videos(video: torch.Tensor, frames_per_video: int) -> list[torch.Tensor]:
    """An IMAGE batch holding several videos of ``frames_per_video`` frames each (0: one video)."""
    n = video.shape[2]
    if isinstance(frames_per_video, bool) or int(frames_per_video) != frames_per_video or frames_per_video < 0:
        raise ValueError(f"frames_per_video must be 0 (one video) or a positive integer; received {frames_per_video!r}.")
    if frames_per_video == 0 or frames_per_video == n:
        return [video]
    if n % frames_per_video:
        raise ValueError(
            f"frames_per_video = {frames_per_video} does not divide the {n} input frames: connect the frames_per_video "
            "output of the stage that made the batch, or 0 for one video."
        )
    return list(video.split(frames_per_video, dim=2))


def _ui_animation(images: torch.Tensor, fps: float) -> dict:
    """Show the finished frames in the node as an animated WEBP in ComfyUI's temp folder."""
    from PIL import Image

    folder = adapter.temp_directory()
    folder.mkdir(parents=True, exist_ok=True)
    name = f"imagen_video_{uuid.uuid4().hex[:12]}.webp"
    frames = [Image.fromarray(np.clip(255.0 * f.cpu().numpy() + 0.5, 0, 255).astype(np.uint8)) for f in images]
    frames[0].save(
        folder / name,
        save_all=True,
        append_images=frames[1:],
        duration=max(1, int(round(1000 / fps))),
        lossless=False,
        quality=85,
        method=0,
        loop=0,
    )
    return {
        "images": [{"filename": name, "subfolder": "", "type": "temp"}],
        "animated": (True,),
        "imagen_video_info": [
            {"frames": int(images.shape[0]), "width": int(images.shape[2]), "height": int(images.shape[1]), "fps": float(fps)}
        ],
    }


def _text(model: ImagenVideoModel, positive, negative):
    text = conditioning_to_text(positive, "positive")
    neg = conditioning_to_text(negative, "negative") if negative is not None else None
    model.stage.check_text(text)  # refuses a width the stage was not trained with, before heavy work
    model.stage.check_text(neg)
    if neg is not None and model.stage.config.is_distilled:
        raise ValueError("Distilled students have guidance baked in and take no negative prompt; disconnect negative.")
    return text, neg


@contextmanager
def _running(model: ImagenVideoModel, shape, opts: SamplingOptions, window: int | None = None, tile: int | None = None):
    """The stage on its device for one node's run, with ComfyUI told the run's estimated memory
    (it unloads other models first); released afterwards by the loader's offload mode."""
    need = estimate_sampling_bytes(model.stage, shape, guided=opts.doubles_batch(model.stage), window=window, tile=tile)
    stage = model.ready(need)
    try:
        yield stage
    finally:
        model.release()


def _check_fps(fps: float) -> float:
    if not (isinstance(fps, (int, float)) and not isinstance(fps, bool) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number; received {fps!r}.")
    return float(fps)


def _result(video: torch.Tensor, fps: float | None, show_animation: bool = True, extra: tuple = ()):
    """The node's outputs (images, then fps if given, then ``extra``), and in the node an animated
    WEBP of the frames (``show_animation``) or only their size and rate (nothing written)."""
    images = video_to_image(video, adapter.intermediate_device())
    out = ((images,) if fps is None else (images, fps)) + tuple(extra)
    if not show_animation:
        info = {
            "frames": int(images.shape[0]),
            "width": int(images.shape[2]),
            "height": int(images.shape[1]),
            "fps": float(fps or 0),
        }
        return {"ui": {"imagen_video_info": [info]}, "result": out}
    return {"ui": _ui_animation(images, fps or 8.0), "result": out}


class ImagenVideoSampler:
    DESCRIPTION = (
        "The base stage of Imagen Video: text -> a short low-resolution video (the demo: 16 frames of 32x32 at 4 fps). "
        "Follow it with ImagenVideoTemporalSR / ImagenVideoSpatialSR, or any node that takes IMAGE."
    )
    CATEGORY = f"{CATEGORY}/sampling"
    RETURN_TYPES = ("IMAGE", "FLOAT", "INT")
    RETURN_NAMES = ("images", "fps", "frames_per_video")
    OUTPUT_TOOLTIPS = (
        "The frames (an IMAGE batch; with batch_size > 1 the videos one after another).",
        "Their frame rate.",
        "Frames of each video: connect it to frames_per_video of the next stage so a batch stays separate videos.",
    )
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "A base stage (ImagenVideoModelLoader)."}),
                "positive": POSITIVE,
                "frames": _w(FRAMES, "Number of frames (the demo base was trained on 16)."),
                "width": _w(SIZE, "Width in pixels (a multiple of the model's size multiple)."),
                "height": _w(SIZE, "Height in pixels."),
                "fps": _w(FPS, "Frame rate passed on with the frames."),
                "seed": SEED,
                "steps": (
                    "INT",
                    {"default": 32, "min": 1, "max": 1000, "tooltip": "Sampling steps (the paper: 256 for the base)."},
                ),
                "guidance": GUIDANCE,
                "sampler_name": (
                    list(SAMPLERS),
                    {
                        "default": "ddim",
                        "tooltip": "ddim (deterministic), ancestral (the paper's default), or distilled_stochastic.",
                    },
                ),
                "oscillating_guidance": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "The paper's oscillating guidance: guidance for the first quarter of the steps, then alternating guidance / guidance_low.",
                    },
                ),
                "guidance_low": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 30.0,
                        "step": 0.1,
                        "tooltip": "The low weight of oscillating guidance (paper: 15 / 1).",
                    },
                ),
                "thresholding": (
                    THRESHOLDING,
                    {
                        "default": "dynamic",
                        "tooltip": "dynamic: Imagen's dynamic thresholding (p = 0.995, one scale per video); static: clip to [-1, 1].",
                    },
                ),
            },
            "optional": {
                "negative": NEGATIVE,
                "start_images": (
                    "IMAGE",
                    {
                        "tooltip": "Image-to-video / extend a video: these frames become the first frames of the clip "
                        "(one image, or the last frames of a video to continue). Fitted to width x height.",
                    },
                ),
                "end_images": (
                    "IMAGE",
                    {"tooltip": "These frames become the last frames of the clip (first/last-frame control)."},
                ),
                "known_noise": (
                    "FLOAT",
                    {
                        "default": 0.2,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Noise augmentation of start/end images (0 = exact; a little noise lets the model "
                        "smooth over a picture unlike its training data).",
                    },
                ),
                "show_animation": SHOW_ANIMATION,
                **CORE_SAMPLING,
                "batch_size": (
                    "INT",
                    {
                        "default": 1,
                        "min": 1,
                        "max": 64,
                        "tooltip": "Several videos in one run, video i with seed + i (the same video as a single run with "
                        "that seed); they follow each other in the IMAGE batch (frames_per_video gives their length).",
                    },
                ),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def sample(
        self,
        model,
        positive,
        frames,
        width,
        height,
        fps,
        seed,
        steps,
        guidance,
        sampler_name,
        oscillating_guidance=False,
        guidance_low=1.0,
        thresholding="dynamic",
        negative=None,
        start_images=None,
        end_images=None,
        known_noise=0.2,
        show_animation=True,
        sampler=None,
        sigmas=None,
        batch_size=1,
        unique_id=None,
    ):
        model.require("base", "ImagenVideoSampler")
        batch_size = check_count("batch_size", batch_size)
        fps = _check_fps(fps)
        text, neg = _text(model, positive, negative)
        guide = GuidanceOptions(guidance, oscillate=oscillating_guidance, w_low=guidance_low, thresholding=thresholding)
        opts = _core(SamplingOptions(steps=steps, sampler=sampler_name, guidance=guide, seed=seed), model, sampler, sigmas)
        check_options(model.stage, opts, neg)
        known = mask = None
        if start_images is not None or end_images is not None:
            opts = replace(opts, aug_level=known_noise)  # without known frames the default stays (same video as before)
            if not model.stage.config.continuation:
                raise ValueError(
                    f"{model.name} has no known-frame channels (it was trained without continuation), so it cannot take "
                    "start_images / end_images. Use a base trained with continuation, e.g. the demo base."
                )
            known, mask = known_frames(
                check_count("frames", frames),
                check_count("height", height),
                check_count("width", width),
                start=None if start_images is None else image_to_video(start_images, "start_images"),
                end=None if end_images is None else image_to_video(end_images, "end_images"),
            )
        videos = []
        with _running(model, (1, 3, frames, height, width), opts) as stage:
            for i in range(batch_size):
                videos.append(
                    generate(
                        stage,
                        text,
                        frames=frames,
                        height=height,
                        width=width,
                        options=replace(opts, seed=_batch_seed(seed, i)),
                        negative=neg,
                        known=known,
                        known_mask=mask,
                        paste_known=True,
                        progress=_progress(unique_id, (i, batch_size)),
                    )
                )
        return _result(torch.cat(videos, dim=2), fps, show_animation, (int(frames),))


class ImagenVideoSpatialSR:
    DESCRIPTION = (
        "Spatial super-resolution (SSR): upsamples every frame of any video by the model (the demo: x2). Any frame count and size; "
        "long videos run in overlapping temporal windows and large ones in spatial tiles, fused at every step (no seams)."
    )
    CATEGORY = f"{CATEGORY}/super-resolution"
    RETURN_TYPES = ("IMAGE", "INT")
    RETURN_NAMES = ("images", "frames_per_video")
    OUTPUT_TOOLTIPS = ("The upscaled frames.", "Frames of each video of a batch (as given).")
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "An SSR stage."}),
                "images": ("IMAGE", {"tooltip": "Frames from any node (our stages, LoadVideo, an interpolator...)."}),
                "positive": POSITIVE,
                "scale": _w(SCALE, "Upscale factor (the model's own factor gives the best results)."),
                "noise_augmentation": NOISE_AUG,
                "seed": SEED,
                "steps": (
                    "INT",
                    {"default": 16, "min": 1, "max": 1000, "tooltip": "Sampling steps (the paper: 128 for SR stages)."},
                ),
                "guidance": SR_GUIDANCE,
            },
            "optional": {
                "negative": NEGATIVE,
                "window_frames": (
                    "INT",
                    {
                        "default": 16,
                        "min": 2,
                        "max": 1024,
                        "tooltip": "Frames per temporal window (overlap 4); memory is bounded by the window.",
                    },
                ),
                "tile_size": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 4096,
                        "step": 8,
                        "tooltip": "Spatial tile size in output pixels; 0 = automatic (tiles only when the frame is large).",
                    },
                ),
                **SR_TAIL,
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def upscale(
        self,
        model,
        images,
        positive,
        scale,
        noise_augmentation,
        seed,
        steps,
        guidance,
        negative=None,
        window_frames=16,
        tile_size=0,
        denoise=1.0,
        show_animation=True,
        sampler=None,
        sigmas=None,
        frames_per_video=0,
        consistency=False,
        refine_from=1.0,
        unique_id=None,
    ):
        model.require("ssr", "ImagenVideoSpatialSR")
        parts = _split_videos(image_to_video(images), frames_per_video)
        text, neg = _text(model, positive, negative)
        opts = _sr_options(steps, guidance, noise_augmentation, seed)
        opts = replace(opts, denoise=denoise, consistency=consistency, refine_from=refine_from)
        opts = _core(opts, model, sampler, sigmas)
        out = _run_ssr(model, parts, text, neg, scale, opts, window_frames, tile_size, unique_id)
        return _result(out, None, show_animation, (out.shape[2] // len(parts),))


def _core(opts: SamplingOptions, model: ImagenVideoModel, sampler, sigmas) -> SamplingOptions:
    """``opts`` with a connected core SAMPLER and/or SIGMAS grid."""
    if sampler is not None:
        opts = replace(opts, sampler=stage_sampler(sampler, model.stage))
    if sigmas is not None:
        if not isinstance(sigmas, torch.Tensor):
            raise ValueError(f"sigmas must be a SIGMAS grid (a 1-D tensor); received {type(sigmas).__name__}.")
        grid = sigmas.detach().float().cpu().flatten()
        opts = replace(opts, sigmas=tuple(grid.tolist()), steps=max(1, len(grid) - 1))
    return opts


def _sr_options(steps, guidance, noise_augmentation, seed, sampler="ddim") -> SamplingOptions:
    guide = GuidanceOptions(guidance, thresholding=SR_THRESHOLDING)
    return SamplingOptions(steps=steps, sampler=sampler, guidance=guide, aug_level=noise_augmentation, seed=seed)


def _auto_tile(h: int, w: int, device: torch.device) -> int:
    """Tile only when a frame is large: budget ~256x256 output pixels per tile on the CPU, 1024x1024 on a GPU."""
    limit = 1024 if device.type == "cuda" else 256
    return 0 if max(h, w) <= limit else limit


def _run_ssr(model, parts, text, neg, scale, opts, window_frames, tile_size, unique_id):
    """SSR of the videos ``parts`` (video i with seed + i), the stage loaded once for all of them."""
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale >= 1):
        raise ValueError(f"scale must be >= 1; received {scale!r}.")
    video = parts[0]
    out_h, out_w = spatial_output_size(model.stage, video.shape[-2:], scale)
    check_options(model.stage, opts, neg)
    tile = tile_size or _auto_tile(out_h, out_w, model.device)
    shape = (video.shape[0], 3, video.shape[2], out_h, out_w)
    with _running(model, shape, opts, window=window_frames, tile=tile) as stage:
        outs = [
            _ssr_with_retries(
                stage,
                v,
                text,
                neg,
                (out_h, out_w),
                replace(opts, seed=_batch_seed(opts.seed, i)),
                window_frames,
                tile,
                _progress(unique_id, (i, len(parts))),
            )
            for i, v in enumerate(parts)
        ]
    return torch.cat(outs, dim=2)


def _ssr_with_retries(stage, video, text, neg, size, opts, window_frames, tile, progress):
    out_h, out_w = size
    while True:
        try:
            return upsample_spatial(
                stage,
                video,
                text,
                size=(out_h, out_w),
                options=opts,
                negative=neg,
                window=window_frames,
                overlap=min(4, window_frames - 1),
                tile=tile,
                progress=progress,
            )
        except (torch.OutOfMemoryError, MemoryError):  # out of memory, or the estimate says it would be: smaller tiles
            adapter.soft_empty_cache()
            tile = (tile or max(out_h, out_w)) // 2
            if tile < 32:
                raise
            window_frames = max(4, window_frames // 2)


class ImagenVideoTemporalSR:
    DESCRIPTION = (
        "Temporal super-resolution (TSR): inserts frames between the frames of any video (the demo: x2 frame rate). "
        "frame_count_mode 'imagen' gives N*m frames (the paper), 'interpolate' gives (N-1)*m+1 like frame interpolators."
    )
    CATEGORY = f"{CATEGORY}/super-resolution"
    RETURN_TYPES = ("IMAGE", "FLOAT", "INT")
    RETURN_NAMES = ("images", "fps", "frames_per_video")
    OUTPUT_TOOLTIPS = ("The frames at the higher rate.", "fps x multiplier.", "Frames of each video of a batch, after TSR.")
    FUNCTION = "interpolate"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "A TSR stage."}),
                "images": ("IMAGE", {"tooltip": "Frames from any node."}),
                "fps": _w(FPS, "Frame rate of the input (connect the previous stage's fps)."),
                "positive": POSITIVE,
                "multiplier": _w(MULTIPLIER, "Frame-rate multiplier: a power of the model's factor (x2 model: 2, 4, 8...)."),
                "frame_count_mode": (
                    FRAME_COUNT_MODES,
                    {
                        "default": "imagen",
                        "tooltip": "imagen: N*m frames (the paper); interpolate: (N-1)*m+1 (RIFE/FILM convention).",
                    },
                ),
                "noise_augmentation": NOISE_AUG,
                "seed": SEED,
                "steps": ("INT", {"default": 16, "min": 1, "max": 1000, "tooltip": "Sampling steps."}),
                "guidance": SR_GUIDANCE,
            },
            "optional": {
                "negative": NEGATIVE,
                "window_frames": (
                    "INT",
                    {"default": 32, "min": 4, "max": 1024, "tooltip": "Output frames per temporal window (overlap 8)."},
                ),
                **SR_TAIL,
                "motion_search": MOTION_SEARCH,
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def interpolate(
        self,
        model,
        images,
        fps,
        positive,
        multiplier,
        frame_count_mode,
        noise_augmentation,
        seed,
        steps,
        guidance,
        negative=None,
        window_frames=32,
        denoise=1.0,
        show_animation=True,
        sampler=None,
        sigmas=None,
        frames_per_video=0,
        consistency=False,
        refine_from=1.0,
        motion_search=0.0,
        unique_id=None,
    ):
        model.require("tsr", "ImagenVideoTemporalSR")
        fps = _check_fps(fps)
        parts = _split_videos(image_to_video(images), frames_per_video)
        text, neg = _text(model, positive, negative)
        opts = _sr_options(steps, guidance, noise_augmentation, seed)
        opts = replace(opts, denoise=denoise, consistency=consistency, refine_from=refine_from, motion_search=motion_search)
        opts = _core(opts, model, sampler, sigmas)
        out = _run_tsr(model, parts, text, neg, multiplier, frame_count_mode, opts, window_frames, unique_id)
        return _result(out, output_fps(model.stage.config, fps, multiplier), show_animation, (out.shape[2] // len(parts),))


def _run_tsr(model, parts, text, neg, multiplier, mode, opts, window_frames, unique_id):
    """TSR of the videos ``parts`` (video i with seed + i), the stage loaded once for all of them."""
    if mode not in FRAME_COUNT_MODES:
        raise ValueError(f"frame_count_mode must be one of {FRAME_COUNT_MODES}; received {mode!r}.")
    if multiplier == 1:
        return torch.cat(parts, dim=2)
    check_options(model.stage, opts, neg)
    video = parts[0]
    shape = (video.shape[0], 3, video.shape[2] * multiplier, *video.shape[-2:])
    with _running(model, shape, opts, window=window_frames) as stage:
        outs = [
            upsample_temporal(
                stage,
                v,
                text,
                multiplier=multiplier,
                mode=mode,
                options=replace(opts, seed=_batch_seed(opts.seed, i)),
                negative=neg,
                window=window_frames,
                overlap=min(8, window_frames // 4),
                progress=_progress(unique_id, (i, len(parts))),
            )
            for i, v in enumerate(parts)
        ]
    return torch.cat(outs, dim=2)


class ImagenVideoDistilledSampler:
    DESCRIPTION = (
        "The fast path: runs a guided-distilled student of ANY stage (base, SSR or TSR) in 8 (or 4/2/1) steps with one network "
        "evaluation per step (guidance is baked in). Base students use frames/width/height/fps; SR students need images."
    )
    CATEGORY = f"{CATEGORY}/sampling"
    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("images", "fps")
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "A distilled student (…_distilled_<n>step.safetensors) of any stage."}),
                "positive": POSITIVE,
                "seed": SEED,
                "steps": (
                    "INT",
                    {
                        "default": 8,
                        "min": 1,
                        "max": 64,
                        "tooltip": "Must be a step count the student was distilled for (see its file).",
                    },
                ),
                "guidance": GUIDANCE,
                "sampler_name": (
                    ["distilled_stochastic", "ddim"],
                    {
                        "default": "distilled_stochastic",
                        "tooltip": "distilled_stochastic: Imagen Video's 2x-down/1x-up sampler; ddim: deterministic.",
                    },
                ),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "Input frames (SSR / TSR students)."}),
                "fps": _w(FPS, "Base: output frame rate. TSR: input frame rate."),
                "frames": _w(FRAMES, "Base students: number of frames."),
                "width": _w(SIZE, "Base students: width."),
                "height": _w(SIZE, "Base students: height."),
                "scale": _w(SCALE, "SSR students: upscale factor."),
                "multiplier": _w(MULTIPLIER, "TSR students: frame-rate multiplier."),
                "frame_count_mode": (
                    FRAME_COUNT_MODES,
                    {"default": "imagen", "tooltip": "TSR students: N*m or (N-1)*m+1 frames."},
                ),
                "noise_augmentation": NOISE_AUG,
                "consistency": _w(CONSISTENCY, "SSR / TSR students: " + CONSISTENCY[1]["tooltip"]),
                "motion_search": _w(MOTION_SEARCH, "TSR students: " + MOTION_SEARCH[1]["tooltip"]),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def sample(
        self,
        model,
        positive,
        seed,
        steps,
        guidance,
        sampler_name,
        images=None,
        fps=4.0,
        frames=16,
        width=32,
        height=32,
        scale=2.0,
        multiplier=2,
        frame_count_mode="imagen",
        noise_augmentation=SR_AUG_LEVEL,
        consistency=False,
        motion_search=0.0,
        unique_id=None,
    ):
        cfg = model.stage.config
        if not cfg.is_distilled:
            raise ValueError(
                f"{model.name} is not a distilled student. Use ImagenVideoSampler / ImagenVideoSpatialSR / ImagenVideoTemporalSR "
                "for undistilled stages, or load a *_distilled_*.safetensors file here."
            )
        fps = _check_fps(fps)
        text, _ = _text(model, positive, None)
        takes_video = get_role(cfg.role).takes_video
        thresholding = SR_THRESHOLDING if takes_video else "dynamic"
        opts = SamplingOptions(
            steps=steps,
            sampler=sampler_name,
            guidance=GuidanceOptions(guidance, thresholding=thresholding),
            aug_level=noise_augmentation,
            seed=seed,
            consistency=consistency,
            motion_search=motion_search,
        )
        check_options(model.stage, opts)  # the student's step counts and guidance range, before any work
        if not takes_video:
            with _running(model, (1, 3, frames, height, width), opts) as stage:
                video = generate(
                    stage, text, frames=frames, height=height, width=width, options=opts, progress=_progress(unique_id)
                )
            return _result(video, fps)
        if images is None:
            raise ValueError(f"{model.name} is a {cfg.describe()} student: connect the input frames to images.")
        video = image_to_video(images)
        if cfg.role == "ssr":
            return _result(_run_ssr(model, [video], text, None, scale, opts, 16, 0, unique_id), fps)
        out = _run_tsr(model, [video], text, None, multiplier, frame_count_mode, opts, 32, unique_id)
        return _result(out, output_fps(cfg, fps, multiplier))
