"""Phenaki nodes: load a tokenizer + transformer pair, text -> video (optionally continuing a video),
and a story. Their IMAGE + fps outputs go to the Imagen Video TSR/SSR nodes, core upscalers,
frame interpolators or CreateVideo like any base's."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..cascade.demo import PHENAKI_DEMO_FILES
from ..cascade.phenaki import Phenaki, PhenakiOptions, load_phenaki, story_frames
from ..cascade.story import parse_story
from . import adapter
from .convert import conditioning_to_text, image_to_video
from .models import TEXT_ENCODER_TYPE
from .stages import MAX_SEED, _check_fps, _result

CATEGORY = "Imagen Video/Phenaki"
PHENAKI_TYPE = "IMAGEN_VIDEO_PHENAKI"

SEED = ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": "fixed", "tooltip": "Same seed, same video."})
PHENAKI_INPUT = (PHENAKI_TYPE, {"tooltip": "From Load Phenaki."})
STEPS = ("INT", {"default": 12, "min": 1, "max": 256, "tooltip": "MaskGIT unmasking iterations (per clip)."})
GUIDANCE = (
    "FLOAT",
    {"default": 3.0, "min": 0.0, "max": 30.0, "step": 0.1, "tooltip": "w on the logits: (1 + w) cond - w uncond; 0 = unguided."},
)
CONTEXT_FRAMES = (
    "INT",
    {
        "default": 5,
        "min": 1,
        "max": 1025,
        "step": 2,
        "tooltip": "How many of the last frames to re-encode and continue (1 + n * 2).",
    },
)
SHOW_ANIMATION = (
    "BOOLEAN",
    {"default": True, "tooltip": "Show the frames in the node as an animation (written to the temp folder)."},
)


@dataclass
class PhenakiModel:
    """A loaded Phenaki pair on its offload device; :meth:`ready` moves it to the compute device
    through ComfyUI's model management for one node's run."""

    phenaki: Phenaki
    name: str
    device: torch.device

    def __post_init__(self) -> None:
        # the pair as one module: ComfyUI's model management loads and offloads them together
        self.module = torch.nn.ModuleList([self.phenaki.tokenizer, self.phenaki.transformer])
        self.patcher = adapter.make_patcher(self.module, self.device)

    def ready(self) -> Phenaki:
        adapter.load_to_device(self.patcher, self.module, self.device)
        return self.phenaki


class ImagenVideoPhenakiLoader:
    DESCRIPTION = (
        "Loads Phenaki (a causal C-ViViT video tokenizer and the MaskGIT transformer trained on its tokens) from models/phenaki. "
        "A transformer and a tokenizer that do not belong together are refused with the reason."
    )
    CATEGORY = f"{CATEGORY}"
    RETURN_TYPES = (PHENAKI_TYPE,)
    RETURN_NAMES = ("phenaki",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        names = adapter.list_models(adapter.PHENAKI_FOLDER)
        # the demo pair by default when it is there (the list holds both kinds of file)
        default = {k: {"default": f} if f in names else {} for k, f in PHENAKI_DEMO_FILES.items()}
        return {
            "required": {
                "tokenizer": (names, {**default["tokenizer"], "tooltip": "The C-ViViT tokenizer file (phenaki-cvivit)."}),
                "transformer": (
                    names,
                    {
                        **default["transformer"],
                        "tooltip": "The MaskGIT transformer file (phenaki-maskgit) trained on that tokenizer.",
                    },
                ),
                "device": (
                    ["default", "cpu"],
                    {"default": "default", "tooltip": "default: ComfyUI's main device (GPU if any); cpu: always the CPU."},
                ),
            }
        }

    def load(self, tokenizer, transformer, device="default"):
        dev = adapter.torch_device(device)
        ph = load_phenaki(
            adapter.model_path(tokenizer, adapter.PHENAKI_FOLDER), adapter.model_path(transformer, adapter.PHENAKI_FOLDER)
        )
        ph.to(adapter.offload_device())
        return (PhenakiModel(ph, transformer, dev),)


def _phenaki_progress(node_id, total: int):
    bar = adapter.Progress(total, node_id)

    def callback(i, ids):
        adapter.check_interrupt()
        bar.update(min(i + 1, total))

    return callback


class _PhenakiVideoNode:
    """What the Phenaki video nodes share: a base's outputs, frames and their rate."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("images", "fps")


class ImagenVideoPhenakiSampler(_PhenakiVideoNode):
    DESCRIPTION = (
        "Phenaki text -> video: MaskGIT unmasks the video's tokens in a few confident steps (classifier-free guidance on the "
        "logits), and the tokenizer decodes them. With context_images, the last frames of that video are re-encoded, kept, "
        "and continued (video extension). Outputs IMAGE frames + fps for TSR/SSR or any video node."
    )
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "phenaki": PHENAKI_INPUT,
                "positive": (
                    "CONDITIONING",
                    {"tooltip": "From Imagen Video Text Encode with the encoder the transformer was trained with."},
                ),
                "frames": (
                    "INT",
                    {
                        "default": 17,
                        "min": 1,
                        "max": 1025,
                        "step": 2,
                        "tooltip": "1 + n * 2 (the tokenizer's tubelets); a continuation adds a multiple of 2.",
                    },
                ),
                "steps": STEPS,
                "guidance": GUIDANCE,
                "temperature": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.05,
                        "max": 5.0,
                        "step": 0.05,
                        "tooltip": "Token sampling temperature; lower is more conservative.",
                    },
                ),
                "seed": SEED,
                "show_animation": SHOW_ANIMATION,
            },
            "optional": {
                "context_images": (
                    "IMAGE",
                    {"tooltip": "A video to continue: its last context_frames frames are kept and extended."},
                ),
                "context_frames": CONTEXT_FRAMES,
            },
            "hidden": {"node_id": "UNIQUE_ID"},
        }

    def sample(
        self,
        phenaki,
        positive,
        frames,
        steps,
        guidance,
        temperature,
        seed,
        show_animation=True,
        context_images=None,
        context_frames=5,
        node_id=None,
    ):
        ph_cfg = phenaki.phenaki.tokenizer.config
        text = conditioning_to_text(positive, "positive")
        if text.width != phenaki.phenaki.transformer.config.text_dim:
            raise ValueError(
                f"This Phenaki transformer takes {phenaki.phenaki.transformer.config.text_dim}-wide text; the conditioning is "
                f"{text.width} wide: encode with the text encoder it was trained with ({phenaki.phenaki.info.text_encoder})."
            )
        context = None
        if context_images is not None:
            video = image_to_video(context_images, "context_images")
            if tuple(video.shape[-2:]) != (ph_cfg.image_size,) * 2:
                raise ValueError(
                    f"context_images are {video.shape[-1]}x{video.shape[-2]}; this Phenaki makes {ph_cfg.image_size}x{ph_cfg.image_size} "
                    "frames: resize them first (e.g. ImageScale)."
                )
            ph_cfg.steps(context_frames)
            if video.shape[2] < context_frames:
                raise ValueError(f"context_frames is {context_frames} but context_images has only {video.shape[2]} frames.")
            context = video[:, :, -context_frames:]
            if frames % ph_cfg.temporal_patch:
                raise ValueError(f"A continuation adds a multiple of {ph_cfg.temporal_patch} frames; frames is {frames}.")
        else:
            ph_cfg.steps(frames)  # a clear error before any work
        ph = phenaki.ready()
        out = ph.generate(
            text.to(ph.device),
            frames,
            steps=steps,
            w=guidance,
            temperature=temperature,
            seed=seed,
            context=context,
            callback=_phenaki_progress(node_id, steps),
        )
        return _result(out, float(ph.info.fps), show_animation)


class ImagenVideoPhenakiStory(_PhenakiVideoNode):
    DESCRIPTION = (
        "A Phenaki story: one prompt per line (optional '| 4s' durations). The first clip comes from the first prompt; every "
        "next clip re-encodes the last frames and continues them with the next prompt, so memory does not grow with the story. "
        "Outputs the base frames (IMAGE + fps) for TSR/SSR or a video node."
    )
    FUNCTION = "story"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "phenaki": PHENAKI_INPUT,
                "text_encoder": (
                    TEXT_ENCODER_TYPE,
                    {"tooltip": "The text encoder the transformer was trained with (the embedded MiniLM for the demo)."},
                ),
                "story": (
                    "STRING",
                    {
                        "multiline": True,
                        "default": "a red circle moving right | 4s\na blue square moving up | 4s",
                        "tooltip": "One prompt per line, optionally '| 4s' for its duration.",
                    },
                ),
                "seconds": (
                    "FLOAT",
                    {"default": 4.0, "min": 0.25, "max": 600.0, "step": 0.25, "tooltip": "Duration of a line without one."},
                ),
                "steps": STEPS,
                "guidance": GUIDANCE,
                "context_frames": CONTEXT_FRAMES,
                "seed": SEED,
                "show_animation": SHOW_ANIMATION,
            },
            "hidden": {"node_id": "UNIQUE_ID"},
        }

    def story(
        self, phenaki, text_encoder, story, seconds, steps, guidance, context_frames, seed, show_animation=True, node_id=None
    ):
        ph = phenaki.phenaki
        fps = _check_fps(ph.info.fps)
        scenes = parse_story(story, fps=fps, default_seconds=seconds)
        opts = PhenakiOptions(steps=steps, w=guidance, context=context_frames, seed=seed)
        ph.check_frames(context_frames)
        total = sum(s.frames for s in scenes)
        bar = adapter.Progress(total, node_id)
        ph = phenaki.ready()
        chunks = []

        def progress(done, _total):
            adapter.check_interrupt()
            bar.update(done)

        for frames, _ in story_frames(ph, scenes, lambda prompts: text_encoder.encode(prompts).to(ph.device), opts, progress):
            chunks.append(frames)
        return _result(torch.cat(chunks, dim=2), fps, show_animation)
