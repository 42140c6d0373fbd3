"""Story nodes: a sequence of prompts becomes one long video (Phenaki's ability, on the cascade)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

import torch

from ..cascade.checks import estimate_sampling_bytes
from ..cascade.frames import video_to_frames
from ..cascade.guidance import GuidanceOptions
from ..cascade.pipeline import SR_THRESHOLDING, SamplingOptions, check_options
from ..cascade.roles import output_fps
from ..cascade.samplers import SAMPLERS
from ..cascade.story import StoryOptions, parse_story, run_story, story_base_frames
from ..cascade.video_io import VideoWriter
from . import adapter
from .models import MODEL_TYPE, TEXT_ENCODER_TYPE, ready_together
from .stages import (
    CONSISTENCY,
    FPS,
    GUIDANCE,
    MOTION_SEARCH,
    NOISE_AUG,
    REFINE_FROM,
    SEED,
    _check_fps,
    _preview,
    _result,
    _running,
    _w,
)

CATEGORY = "Imagen Video/story"
STORY_DEFAULT = (
    "a red circle moving right quickly | 4s\nthe red circle moving up slowly | 4s\na blue square moving left quickly | 4s"
)
STORY = (
    "STRING",
    {
        "multiline": True,
        "default": STORY_DEFAULT,
        "tooltip": "One scene per line with an optional duration ('| 4s', '| 48f'); or keyframes like "
        '"0": "...", "48": "..." (frames of this node\'s output); or a paragraph: one scene per sentence.',
    },
)
COMMON = {
    "fps": _w(FPS, "Frame rate of the base frames (durations in seconds use it)."),
    "seconds_per_scene": (
        "FLOAT",
        {"default": 4.0, "min": 0.25, "max": 600.0, "step": 0.25, "tooltip": "Duration of scenes that give none."},
    ),
    "seed": SEED,
    "steps": ("INT", {"default": 32, "min": 1, "max": 1000, "tooltip": "Base sampling steps per window."}),
    "guidance": GUIDANCE,
    "sampler_name": (list(SAMPLERS), {"default": "ddim", "tooltip": "Sampler of the base windows."}),
    "context_frames": (
        "INT",
        {"default": 4, "min": 0, "max": 15, "tooltip": "Each new window is conditioned on this many finished frames."},
    ),
    "transition": (
        ["cut", "blend"],
        {"default": "cut", "tooltip": "Scene changes: cut, or blend the two prompts per frame over transition_frames."},
    ),
    "transition_frames": ("INT", {"default": 4, "min": 1, "max": 64, "tooltip": "Frames over which a blend transition ramps."}),
}
# added after the node shipped: -1 keeps what saved workflows did (context_frames at a scene change too)
SCENE_CHANGE_FRAMES = (
    "INT",
    {
        "default": -1,
        "min": -1,
        "max": 15,
        "tooltip": "Finished frames the first window of a new scene is conditioned on (-1: context_frames, what this node "
        "did before the input existed). The demo cascade uses 1: the new scene starts where the last one ended, and its "
        "prompt can change the shape and the motion, which 4 frames carry over from the old scene.",
    },
)


@contextmanager
def _released(*models):
    try:
        yield
    finally:
        for m in models:
            if m is not None:
                m.release()


def _scenes(story: str, fps: float, seconds: float):
    return parse_story(story, fps=_check_fps(fps), default_seconds=seconds)


def _story_options(
    context_frames: int, transition: str, transition_frames: int, window: int, scene_change_frames: int = -1
) -> StoryOptions:
    if context_frames >= window:
        raise ValueError(f"context_frames ({context_frames}) must be smaller than the base window ({window} frames).")
    if scene_change_frames >= window:
        raise ValueError(f"scene_change_frames ({scene_change_frames}) must be smaller than the base window ({window} frames).")
    if scene_change_frames < -1:
        raise ValueError(f"scene_change_frames must be -1 (the same as context_frames) or >= 0; received {scene_change_frames}.")
    return StoryOptions(
        window=window,
        context=context_frames,
        transition=transition,
        transition_frames=transition_frames,
        change_context=None if scene_change_frames < 0 else scene_change_frames,
    )


class ImagenVideoStory:
    DESCRIPTION = (
        "Story mode (Phenaki's ability): a list of prompts becomes one long base video. Windows continue from the last finished "
        "frames; scene changes cut or blend. Chain TemporalSR / SpatialSR after it, or use ImagenVideoStoryToVideo to stream "
        "a story of minutes through the whole cascade into a file."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("images", "fps")
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "A base stage (with known-frame channels for the best continuity)."}),
                "text_encoder": (
                    TEXT_ENCODER_TYPE,
                    {"tooltip": "The encoder the base was trained with (each scene's prompt is encoded)."},
                ),
                "story": STORY,
                **COMMON,
            },
            "optional": {"scene_change_frames": SCENE_CHANGE_FRAMES},
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def generate(
        self,
        model,
        text_encoder,
        story,
        fps,
        seconds_per_scene,
        seed,
        steps,
        guidance,
        sampler_name,
        context_frames,
        transition,
        transition_frames,
        scene_change_frames=-1,
        unique_id=None,
    ):
        model.require("base", "ImagenVideoStory")
        scenes = _scenes(story, fps, seconds_per_scene)
        cfg = model.stage.config
        opts = SamplingOptions(steps=steps, sampler=sampler_name, guidance=guidance, seed=seed)
        story_opts = _story_options(context_frames, transition, transition_frames, cfg.frames, scene_change_frames)
        check_options(model.stage, opts)
        total = sum(s.frames for s in scenes)
        bar = adapter.Progress(total, unique_id)
        size = adapter.preview_size()
        frames, done = [], 0
        with _running(model, (1, 3, cfg.frames, cfg.height, cfg.width), opts) as stage:
            for new, _ in story_base_frames(
                stage,
                scenes,
                text_encoder.encode,
                options=opts,
                story=story_opts,
                progress=lambda *_: adapter.check_interrupt(),
            ):
                frames.append(new.cpu())
                done += new.shape[2]
                bar.update(done, _preview(new, size))  # the newest frames
        return _result(torch.cat(frames, dim=2), float(fps))


class ImagenVideoStoryToVideo:
    DESCRIPTION = (
        "Runs a whole story through the cascade (base -> optional TSR -> optional SSR) and writes the video to the output folder "
        "while it is made: memory stays bounded however long the story is, and a cancelled run keeps a playable file of the "
        "frames finished so far."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("VIDEO", "FLOAT")
    RETURN_NAMES = ("video", "fps")
    OUTPUT_NODE = True
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "The base stage."}),
                "text_encoder": (TEXT_ENCODER_TYPE, {"tooltip": "The encoder the stages were trained with."}),
                "story": STORY,
                **COMMON,
                "sr_steps": ("INT", {"default": 16, "min": 1, "max": 1000, "tooltip": "Sampling steps of the TSR / SSR stages."}),
                "sr_guidance": (
                    "FLOAT",
                    {
                        **GUIDANCE[1],
                        "default": 0.0,
                        "tooltip": "Guidance weight w of the TSR / SSR stages (0: one evaluation per step).",
                    },
                ),
                "filename_prefix": (
                    "STRING",
                    {"default": "imagen_video/story", "tooltip": "Output file prefix (in ComfyUI's output folder)."},
                ),
            },
            "optional": {
                "tsr_model": (MODEL_TYPE, {"tooltip": "Optional TSR stage (frame rate x its factor)."}),
                "ssr_model": (MODEL_TYPE, {"tooltip": "Optional SSR stage (size x its factor)."}),
                "sr_noise_augmentation": (
                    "FLOAT",
                    {
                        **NOISE_AUG[1],
                        "default": 0.3,
                        "tooltip": "Noise augmentation of the TSR / SSR stages' input (the demo cascade: 0.1; 0.3 keeps "
                        "what this node did before the input existed).",
                    },
                ),
                "sr_consistency": _w(CONSISTENCY, "TSR / SSR stages: " + CONSISTENCY[1]["tooltip"]),
                "scene_change_frames": SCENE_CHANGE_FRAMES,
                "ssr_refine_from": _w(REFINE_FROM, "SSR stage: " + REFINE_FROM[1]["tooltip"]),
                "tsr_motion_search": _w(MOTION_SEARCH, "TSR stage: " + MOTION_SEARCH[1]["tooltip"]),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def generate(
        self,
        model,
        text_encoder,
        story,
        fps,
        seconds_per_scene,
        seed,
        steps,
        guidance,
        sampler_name,
        context_frames,
        transition,
        transition_frames,
        sr_steps,
        sr_guidance,
        filename_prefix,
        tsr_model=None,
        ssr_model=None,
        sr_noise_augmentation=0.3,
        sr_consistency=False,
        scene_change_frames=-1,
        ssr_refine_from=1.0,
        tsr_motion_search=0.0,
        unique_id=None,
    ):
        model.require("base", "ImagenVideoStoryToVideo")
        if tsr_model is not None:
            tsr_model.require("tsr", "ImagenVideoStoryToVideo (tsr_model)")
        if ssr_model is not None:
            ssr_model.require("ssr", "ImagenVideoStoryToVideo (ssr_model)")
        scenes = _scenes(story, fps, seconds_per_scene)
        base_opts = SamplingOptions(steps=steps, sampler=sampler_name, guidance=guidance)
        sr_opts = SamplingOptions(
            steps=sr_steps,
            sampler=sampler_name,
            guidance=GuidanceOptions(sr_guidance, thresholding=SR_THRESHOLDING),
            aug_level=sr_noise_augmentation,
            consistency=sr_consistency,
        )
        options = {
            "base": base_opts,
            "tsr": replace(sr_opts, motion_search=tsr_motion_search),
            "ssr": replace(sr_opts, refine_from=ssr_refine_from),
        }
        for m, key in ((model, "base"), (tsr_model, "tsr"), (ssr_model, "ssr")):  # refuse before any work
            if m is not None:
                check_options(m.stage, options[key])
        story_opts = _story_options(context_frames, transition, transition_frames, model.stage.config.frames, scene_change_frames)
        out_fps = output_fps(tsr_model.stage.config, fps) if tsr_model is not None else float(fps)
        factor = round(out_fps / float(fps))
        path = adapter.output_video_path(filename_prefix)
        total = sum(s.frames for s in scenes) * factor
        bar = adapter.Progress(total, unique_id)
        size = adapter.preview_size()
        cfg = model.stage.config
        need = estimate_sampling_bytes(model.stage, (1, 3, cfg.frames, cfg.height, cfg.width), guided=bool(guidance))
        stages = ready_together([model, tsr_model, ssr_model], need)
        last = {"frames": None}
        with _released(model, tsr_model, ssr_model), VideoWriter(path, out_fps) as writer:

            def sink(frames, scene):
                images = video_to_frames(frames)
                writer.write(images)
                last["frames"] = images[-1:].cpu()
                bar.update(writer.frames_written, _preview(frames, size))  # the frames just written

            run_story(
                scenes,
                base=stages[0],
                encode=text_encoder.encode,
                tsr=stages[1],
                ssr=stages[2],
                options=options,
                story=story_opts,
                sink=sink,
                progress=lambda *_: adapter.check_interrupt(),
                seed=seed,
            )
        h, w = last["frames"].shape[1:3]
        subfolder = str(path.parent.relative_to(adapter.output_directory()))
        ui = {
            "images": [{"filename": path.name, "subfolder": "" if subfolder == "." else subfolder, "type": "output"}],
            "animated": (True,),
            "imagen_video_info": [{"frames": writer.frames_written, "width": int(w), "height": int(h), "fps": out_fps}],
        }
        return {"ui": ui, "result": (adapter.video_from_file(path), out_fps)}
