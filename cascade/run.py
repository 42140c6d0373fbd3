"""Running a whole cascade (base -> TSR -> SSR) from a prompt: what ``python -m cascade generate`` does."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from .checks import check_stage_text
from .demo import (
    BASE_GUIDANCE,
    DEMO_DIR,
    DEMO_FILES,
    PHENAKI_DEMO_DIR,
    PHENAKI_DEMO_FILES,
    SR_AUG_LEVEL,
    SR_CONSISTENCY,
    SSR_REFINE_FROM,
    TSR_MOTION_SEARCH,
)
from .frames import video_to_frames
from .guidance import GuidanceOptions
from .phenaki import Phenaki, PhenakiOptions, load_phenaki
from .pipeline import SR_THRESHOLDING, SamplingOptions, check_options, generate, upsample_spatial, upsample_temporal
from .roles import output_fps
from .seeds import stage_seed
from .stage import Stage, load_stage
from .text import TextEncoder, load_text_encoder

__all__ = ["Cascade", "DEFAULT_OPTIONS", "FAST_FILES", "FAST_OPTIONS", "STUDENT_OPTIONS", "load_demo_cascade"]

log = logging.getLogger(__name__)

# default sampling settings of the demo cascade (the evaluation measures exactly these)
# the SR stages project every prediction onto their input (SamplingOptions.consistency; README, issue 13)
_SR = SamplingOptions(
    steps=16,
    sampler="ddim",
    guidance=GuidanceOptions(0.0, thresholding=SR_THRESHOLDING),
    aug_level=SR_AUG_LEVEL,
    consistency=SR_CONSISTENCY,
)
# the SR students sample unguided, like their teachers (guidance costs the demo TSR 1 dB at w = 2, 2.8 at w = 4)
_SR_FAST = replace(_SR, steps=8, sampler="distilled_stochastic")
DEFAULT_OPTIONS = {
    "base": SamplingOptions(steps=32, sampler="ddim", guidance=GuidanceOptions(BASE_GUIDANCE, thresholding="dynamic")),
    "tsr": replace(_SR, motion_search=TSR_MOTION_SEARCH),
    "ssr": replace(_SR, refine_from=SSR_REFINE_FROM),
}
# how the demo's students sample (base 2 steps, TSR 1, SSR 1: 4 network evaluations per video against the
# default's 64; their figures against the teachers: docs/measurements.md, *Students*)
STUDENT_OPTIONS = {
    "base": SamplingOptions(
        steps=2, sampler="distilled_stochastic", guidance=GuidanceOptions(BASE_GUIDANCE, thresholding="dynamic")
    ),
    "tsr": replace(_SR_FAST, steps=1, motion_search=TSR_MOTION_SEARCH),
    "ssr": replace(_SR_FAST, steps=1, sampler="ddim"),
}
# the fast path (`--fast`): the three students
FAST_OPTIONS = dict(STUDENT_OPTIONS)
# the demo file (a key of DEMO_FILES) each role of the fast path loads
FAST_FILES = {"base": "base_distilled", "tsr": "tsr_distilled", "ssr": "ssr_distilled"}


@dataclass
class Cascade:
    """The demo cascade: a base (the diffusion ``base``, or ``phenaki`` when it is set) -> TSR -> SSR."""

    encoder: TextEncoder
    base: Stage | None
    tsr: Stage | None = None
    ssr: Stage | None = None
    options: dict[str, SamplingOptions] = field(default_factory=lambda: dict(DEFAULT_OPTIONS))
    phenaki: Phenaki | None = None
    phenaki_options: PhenakiOptions = field(default_factory=PhenakiOptions)

    @property
    def base_fps(self) -> float:
        return self.phenaki.info.fps if self.phenaki is not None else self.base.config.fps

    @torch.no_grad()
    def __call__(
        self, prompt: str, *, seed: int = 0, negative: str | None = None, progress: Callable[[str, int, int], None] | None = None
    ) -> tuple[torch.Tensor, float]:
        """Prompt -> frames ``(T, H, W, 3)`` in [0, 1] and their frame rate."""
        stages = {"base": None if self.phenaki is not None else self.base, "tsr": self.tsr, "ssr": self.ssr}
        check_stage_text(
            [st for st in stages.values() if st is not None], self.encoder.width, getattr(self.encoder, "encoder_id", "")
        )
        for role, stage in stages.items():  # every stage's settings, before the first one runs
            if stage is not None:
                check_options(stage, self.options[role])
        if self.phenaki is not None and negative:
            raise ValueError("A negative prompt is for the diffusion base; the Phenaki base guides against the empty text.")
        text = self.encoder.encode([prompt])
        neg = self.encoder.encode([negative]) if negative else None

        def report(stage_name):
            return None if progress is None else (lambda d, t, p: progress(stage_name, d, t))

        o = self.options
        if self.phenaki is not None:
            po = self.phenaki_options
            steps = po.steps
            video = self.phenaki.generate(
                text,
                steps=steps,
                w=po.w,
                temperature=po.temperature,
                seed=stage_seed(seed, "base"),
                callback=None if progress is None else (lambda i, ids: progress("base", i + 1, steps)),
            )
        else:
            video = generate(self.base, text, options=o["base"].for_stage(seed, "base"), negative=neg, progress=report("base"))
        fps = self.base_fps
        if self.tsr is not None:
            video = upsample_temporal(
                self.tsr, video, text, options=o["tsr"].for_stage(seed, "tsr"), negative=neg, progress=report("tsr")
            )
            fps = output_fps(self.tsr.config, fps)
        if self.ssr is not None:
            video = upsample_spatial(
                self.ssr, video, text, options=o["ssr"].for_stage(seed, "ssr"), negative=neg, progress=report("ssr")
            )
        return video_to_frames(video).cpu(), fps


def load_demo_cascade(
    models_dir: str | Path | None = None,
    *,
    fast: bool = False,
    device="cpu",
    dtype: torch.dtype | None = None,
    base: str = "imagen",
    phenaki_dir: str | Path | None = None,
) -> Cascade:
    """The committed demo cascade (or its fast path with ``fast=True``: ``FAST_FILES``, ``FAST_OPTIONS``); with
    ``base="phenaki"``, the demo Phenaki (tokenizer + transformer from ``phenaki_dir``, default the
    pack's ``models/phenaki``) replaces the diffusion base."""
    if base not in ("imagen", "phenaki"):
        raise ValueError(f"base must be 'imagen' or 'phenaki'; received {base!r}.")
    root = Path(models_dir) if models_dir else DEMO_DIR
    ph = None
    if base == "phenaki":
        pdir = Path(phenaki_dir) if phenaki_dir else PHENAKI_DEMO_DIR
        paths = [pdir / PHENAKI_DEMO_FILES[k] for k in ("tokenizer", "transformer")]
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise FileNotFoundError(
                f"Phenaki demo file missing: {missing[0]}. Train the tokenizer and the transformer with "
                "`python -m cascade train --stage cvivit` and `--stage maskgit --tokenizer ...` (see the README) "
                "and put their files there, or give --phenaki-dir."
            )
        ph = load_phenaki(*paths, device=device)
    stages = {}
    for role in ("tsr", "ssr") if ph is not None else ("base", "tsr", "ssr"):
        path = root / DEMO_FILES[FAST_FILES[role] if fast else role]
        if not path.exists():
            raise FileNotFoundError(
                f"Demo stage file missing: {path}. It ships with the pack (models/imagen_video/); "
                "reinstall the pack or train it with `python -m cascade train` (see the README)."
            )
        stages[role] = load_stage(path, device=device, dtype=dtype, role=role)
    if ph is not None:
        enc = load_text_encoder(ph.info.text_encoder, device=device)
        return Cascade(
            enc, None, stages["tsr"], stages["ssr"], options=dict(FAST_OPTIONS if fast else DEFAULT_OPTIONS), phenaki=ph
        )
    enc = load_text_encoder(stages["base"].config.text_encoder, device=device)
    return Cascade(enc, stages["base"], stages["tsr"], stages["ssr"], options=dict(FAST_OPTIONS if fast else DEFAULT_OPTIONS))
