"""The demo cascade: stage configurations and training recipes (trained on moving shapes).

Base (16 frames, 32x32, 4 fps) -> TSR x2 (32 frames, 8 fps) -> SSR x2 (64x64), each conditioned on
the embedded MiniLM text encoder; plus guided-distilled students (base 2 steps, TSR and SSR 1). The trained files live in
``models/imagen_video/`` of the pack (see the README for the commands that made them).
"""

from __future__ import annotations

from pathlib import Path

from .config import StageConfig, UNetConfig
from .schedule import CosineSchedule
from .text import DEFAULT_ENCODER

__all__ = [
    "BASE_GUIDANCE",
    "DEMO_DIR",
    "DEMO_FILES",
    "PHENAKI_DEMO_DIR",
    "PHENAKI_DEMO_FILES",
    "RETIRED_FILES",
    "SR_AUG_LEVEL",
    "SR_CONSISTENCY",
    "SSR_REFINE_FROM",
    "demo_stage_config",
    "demo_train_config",
]

DEMO_DIR = Path(__file__).resolve().parent.parent / "models" / "imagen_video"
DEMO_FILES = {
    "base": "demo_base_16f_32px.safetensors",
    "tsr": "demo_tsr_x2_32px.safetensors",
    "ssr": "demo_ssr_x2_64px.safetensors",
    "base_distilled": "demo_base_16f_32px_distilled_2step.safetensors",
    "tsr_distilled": "demo_tsr_x2_32px_distilled_1step.safetensors",
    "ssr_distilled": "demo_ssr_x2_64px_distilled_1step.safetensors",
}
# demo files that a later file replaced (retired name -> its successor, which samples the retired file's step
# counts too): saved workflows that name a retired file load its successor. The SSR's 4-step student gave way
# to a 2-step one when the 30 MB of shipped files had no room for both; on 2026-12-06 the 8-step base student
# and the 2-step TSR and SSR students gave way to a 2-step base student and 1-step SR students, distilled one
# halving round further (the fast path: 4 network evaluations per video). At the retired files' step counts the
# successors run, but draw worse videos than the files they replace (docs/measurements.md, Students; CHANGELOG).
RETIRED_FILES = {
    "demo_ssr_x2_64px_distilled_4step.safetensors": "demo_ssr_x2_64px_distilled_1step.safetensors",
    "demo_ssr_x2_64px_distilled_2step.safetensors": "demo_ssr_x2_64px_distilled_1step.safetensors",
    "demo_tsr_x2_32px_distilled_2step.safetensors": "demo_tsr_x2_32px_distilled_1step.safetensors",
    "demo_base_16f_32px_distilled_8step.safetensors": "demo_base_16f_32px_distilled_2step.safetensors",
}
# the 8-step SR students of the earlier SR stages, still shipped so that saved workflows naming them load
LEGACY_FILES = ("demo_tsr_x2_32px_distilled_8step.safetensors", "demo_ssr_x2_64px_distilled_8step.safetensors")
# the demo Phenaki (a second base: tokenizer + transformer), 17 frames of 32x32 at 4 fps
PHENAKI_DEMO_DIR = DEMO_DIR.parent / "phenaki"
PHENAKI_DEMO_FILES = {
    "tokenizer": "demo_cvivit_17f_32px.safetensors",
    "transformer": "demo_maskgit_17f_32px.safetensors",
}
TEXT_DIM = 384  # all-MiniLM-L6-v2
# The demo base's recipe (issue 12, "a base that learns motion from text"): a log-SNR shift of -5
# (simple diffusion's interpolated shift) for training and sampling puts 18 % of training and 6 of
# 32 DDIM steps in [-8, -5], the band where the text can still decide the direction (later the
# noisy clip reveals it); space-to-depth patching (patch 2) makes the 32 px output cost like a
# 16 px net, so a batch of 16 costs half the old batch of 8; text cross-attention at two levels.
BASE_LOGSNR_SHIFT = -5.0
# The demo's sampling defaults (cascade.run's DEFAULT_OPTIONS and the nodes' widget defaults).
# Base guidance w = 0 (the conditional prediction alone). Measured on the shipped base (n = 64 per
# split), all four attributes right at w = 0 / 2 / 4 / 6: seen 84 / 67 / 50 / 42 %, held-out
# 81 / 61 / 39 / 33 %; guidance distorts the small shapes (squares pinch, circles flatten).
BASE_GUIDANCE = 0.0
# Noise augmentation of the SR stages' input at sampling: 0.1 (SNR 40). Measured on the SR stages
# trained on random looks (n = 64, ground-truth input), PSNR rises as the level falls: SSR vs bicubic
# +1.5 / +2.6 / +3.3 dB and TSR vs blending -0.5 / +0.5 / +1.3 dB at 0.3 / 0.2 / 0.1 (docs/measurements.md).
SR_AUG_LEVEL = 0.1
# The SR stages' predictions are projected onto their input at every step (SamplingOptions.consistency):
# on clips the evaluation does not use (n = 8 per set), the TSR's inserted frames went from 34.0 to
# 36.6 dB (seen motion; blending 31.3) and from 34.2 to 43.9 dB (slow motion; blending 44.1), the
# SSR from 34.1 to 40.5 dB (bicubic 31.3). The evaluation's own figures are in the README.
SR_CONSISTENCY = True
# The SSR's sampling grid (SamplingOptions.refine_from): one step from pure noise to t = 0.2 (log-SNR
# 2.8), the other steps refine that prediction from there. On 16 clips the evaluation does not use
# (seed 99), 16 steps: uniform 41.08 dB (unlike clips 37.56), refine_from 0.3 / 0.2 / 0.15 gave
# 42.50 / 42.79 / - dB (unlike - / 39.08); 8 steps at 0.1 / 0.15 / 0.2: 41.79 / 42.67 / 42.74 (unlike
# 0.2: 38.78); the uniform grid spends its steps at mid noise, where every step moves the edges the
# input leaves open. The TSR keeps the uniform grid (16 steps at 0.2 / 0.3: -0.5 / -0.3 dB, seen).
SSR_REFINE_FROM = 0.2
# The TSR's projection also copies a moving object where the two input frames around an inserted frame
# agree along some displacement (SamplingOptions.motion_search, pixels between two input frames). On 16
# clips per set the evaluation does not use (seed 99; 16 steps; inserted frames, dB), search 0 / 2 / 3 px:
# seen 36.45 / 37.09 / -, motion 2x the fastest trained 29.01 / - / 32.21, slow 42.82 / 42.64 / 42.64,
# unlike 39.39 / 39.64 / 39.62. 3 px covers the fastest of those (3.2 px between input frames at 32 px).
# (Before the clear-match rule, conditioning.TSR_CLEAR_MOTION: with it, 3 px gave 37.40 / 33.40 / 42.60 / 39.70.)
TSR_MOTION_SEARCH = 3.0


def demo_stage_config(role: str) -> StageConfig:
    common = dict(text_encoder=DEFAULT_ENCODER, text_dim=TEXT_DIM, max_tokens=32)
    if role == "base":
        unet = UNetConfig(
            channels=(32, 64, 96),
            num_res_blocks=(1, 1, 2),
            spatial_attn=(False, False, True),
            cross_attn=(False, True, True),
            temporal_attn=(False, True, True),
            cond_channels=4,
            aug_cond=True,
            text_dim=TEXT_DIM,
            head_dim=32,
            norm_groups=8,
            patch_size=2,
            frame_phase=True,
            text_attn_pool=4,
        )
        return StageConfig(
            role="base",
            unet=unet,
            frames=16,
            height=32,
            width=32,
            fps=4.0,
            continuation=True,
            schedule=CosineSchedule(logsnr_shift=BASE_LOGSNR_SHIFT),
            name="demo-base",
            **common,
        )
    if role == "tsr":
        unet = UNetConfig(
            channels=(32, 64),
            num_res_blocks=(1, 1),
            spatial_attn=(False, False),
            cross_attn=(False, True),
            temporal_attn=(False, False),
            cond_channels=4,
            aug_cond=True,
            text_dim=TEXT_DIM,
            head_dim=32,
            norm_groups=8,
            cond_skip=True,
        )
        return StageConfig(
            role="tsr", unet=unet, frames=32, height=32, width=32, fps=8.0, temporal_factor=2, name="demo-tsr-x2", **common
        )
    if role == "ssr":
        unet = UNetConfig(
            channels=(32, 48, 64),
            num_res_blocks=(1, 1, 1),
            spatial_attn=(False, False, False),
            cross_attn=(False, False, True),
            temporal_attn=(False, False, False),
            cond_channels=3,
            aug_cond=True,
            text_dim=TEXT_DIM,
            head_dim=32,
            norm_groups=8,
            cond_skip=True,
        )
        return StageConfig(
            role="ssr", unet=unet, frames=32, height=64, width=64, fps=8.0, spatial_factor=2.0, name="demo-ssr-x2", **common
        )
    raise ValueError(f"Unknown demo role {role!r}; expected base, tsr or ssr.")


def demo_train_config(role: str, **overrides):
    """The recipe the demo stage was trained with (CLI flags override fields)."""
    from .train import TrainConfig

    recipes = {
        # no packed stills (they carry no motion) and few known-frame items (known frames already
        # show the motion, so the text would not have to): most items must take it from the words
        "base": dict(
            batch=16,
            lr=4e-4,
            warmup=200,
            frame_skip=2,
            image_fraction=0.0,
            ema_decay=0.999,
            continuation_mix=(0.85, 0.09, 0.03, 0.03),
            max_known=4,
            binding_every=200,
        ),
        # SR stages: half the clips in a random look (background and object colour), so that they
        # upsample what their input shows rather than the dataset's near-black background
        "tsr": dict(batch=6, lr=4e-4, warmup=100, frame_skip=1, clip_frames=16, ema_decay=0.999, looks=0.5),
        "ssr": dict(batch=4, lr=4e-4, warmup=100, frame_skip=1, clip_frames=8, image_fraction=0.25, ema_decay=0.999, looks=0.5),
    }
    kw = {"stage": demo_stage_config(role), "data": "shapes", "out": f"runs/demo_{role}", **recipes[role]}
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**kw)
