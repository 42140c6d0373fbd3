"""Evaluation of a cascade on the moving-shapes task (``python -m cascade evaluate``).

Writes ``results.json``, ``report.md`` and picture grids. Measures (spec §5.5):

* the hand-written detector on ground-truth clips (its own accuracy);
* base prompt adherence per attribute and all-attributes-correct, seen vs held-out combinations,
  as a function of the guidance weight w;
* SSR PSNR/SSIM on ground-truth low-res inputs vs bicubic/bilinear/Lanczos, and consistency;
* TSR PSNR/SSIM and object-position error on the inserted frames vs frame repetition, linear
  blending and optical-flow interpolation, and consistency;
* both SR stages also on clips unlike their training data (:data:`SR_CLIP_SETS`: motion twice as
  fast as the fastest trained, slow motion, other backgrounds, colours and sizes);
* the full cascade's adherence vs the base alone;
* story mode: two-scene stories through the cascade, each scene's adherence vs the same prompt
  generated alone, and whether colour and shape carry across a boundary whose prompt keeps them;
* distilled students vs their teachers: adherence, paired PSNR, network evaluations per video.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .checks import check_device, check_precision, resolve_precision
from .conditioning import resize_video
from .data.captions import phrase
from .data.detector import detect
from .data.shapes import BACKGROUND, EXTRA_SHAPES, SPEEDS, Attributes, all_attributes, caption, render_clip
from .frames import frames_to_video, video_to_frames
from .interpolation import flow_interpolate, lanczos_resize, position_error
from .metrics import (
    adherence,
    bicubic_upscale,
    blend_frames,
    inserted_indices,
    merge_adherence,
    psnr,
    repeat_frames,
    score_detections,
    ssim,
)
from .pipeline import SamplingOptions, generate, upsample_spatial, upsample_temporal
from .report import merge, report
from .run import DEFAULT_OPTIONS, FAST_FILES, FAST_OPTIONS, STUDENT_OPTIONS
from .stage import Stage, load_stage
from .text import load_text_encoder
from .video_io import to_uint8

__all__ = ["EvalConfig", "evaluate", "merge", "psnr", "report", "ssim"]

log = logging.getLogger(__name__)
# seen / held_out: training / held-out (colour, shape, direction) combinations, worded with the
# canonical caption; train_phrasing / held_out_phrasing: training combinations worded with random
# training phrasings / with held-out templates and words never used in training (data.captions)
SPLITS = ("seen", "held_out", "train_phrasing", "held_out_phrasing")
PHRASING_SPLITS = ("train_phrasing", "held_out_phrasing")


# what --parts takes: cascade = cascade_default + cascade_fast, story = story_default + story_fast
PARTS = (
    "detector",
    "base",
    "ssr",
    "tsr",
    "cascade",
    "cascade_default",
    "cascade_fast",
    "distilled",
    "story",
    "story_default",
    "story_fast",
    "phenaki",
)


def captions_for(attrs: list[Attributes], split: str, seed: int) -> list[str]:
    """The evaluation prompt of each item of ``split`` (deterministic in ``seed`` and the index)."""
    if split in ("seen", "held_out"):
        return [caption(a, 0) for a in attrs]
    which = "held_out" if split == "held_out_phrasing" else "train"
    return [phrase(a, np.random.default_rng([seed, i, 31]), which) for i, a in enumerate(attrs)]


@dataclass
class EvalConfig:
    models: str
    out: str = "eval"
    samples: int = 64  # per split
    w_values: tuple[float, ...] = (0.0, 2.0, 4.0, 6.0)
    seed: int = 1234
    batch: int = 16
    parts: tuple[str, ...] = ("detector", "base", "ssr", "tsr", "cascade", "distilled", "story")
    extra_students: str | None = None  # folder with 4-/2-step students of the base (optional)
    cache: str | None = None  # folder shared by runs split over processes: base videos computed once
    # clip sets of the SR parts (SR_CLIP_SETS); the SSR skips the motion-only ones
    sr_sets: tuple[str, ...] = ("seen", "fast", "slow", "unlike")
    sr_aug: float | None = None  # SR parts: noise-augmentation level at sampling (default: the stage default)
    # SR parts: projection onto the input (SamplingOptions.consistency; default: the cascade's)
    sr_consistency: bool | None = None
    phenaki: str | None = None  # folder with the Phenaki tokenizer + transformer (part "phenaki"; default: the pack's)
    device: str = "cpu"  # where the models run ("cuda" on a GPU); clips and metrics stay on the CPU
    # the diffusion stages' weight precision (auto, fp32, fp16, bf16; checks.resolve_precision): fp32 by default,
    # the precision every figure of the README was measured in
    precision: str = "fp32"

    def __post_init__(self) -> None:
        unknown = [p for p in self.parts if p not in PARTS]
        if unknown or not self.parts:
            raise ValueError(f"Unknown evaluation part(s) {unknown or '(none given)'}; choose from {', '.join(PARTS)}.")
        bad = [s for s in self.sr_sets if s not in SR_CLIP_SETS]
        if bad or not self.sr_sets:
            raise ValueError(f"Unknown SR clip set(s) {bad or '(none given)'}; choose from {', '.join(SR_CLIP_SETS)}.")
        if self.sr_aug is not None and not 0.0 <= self.sr_aug <= 1.0:
            raise ValueError(f"sr_aug is a noise-augmentation level in [0, 1]; received {self.sr_aug}.")
        check_device(self.device)
        check_precision(self.precision)


# Ground-truth clips for the SR parts. seen: the training distribution; fast: twice the fastest
# trained speed; slow: half the slowest; unlike: what no training clip shows at once: shapes no
# caption names (diamond, ring), sizes below and above the trained range, a background that is a
# gradient between two colours unlike the dataset's near-black, and colours outside the palette,
# at speeds within the trained range.
SR_CLIP_SETS = ("seen", "fast", "slow", "unlike")
MOTION_SETS = ("fast", "slow")
UNLIKE_BACKGROUNDS = ((0.46, 0.48, 0.52), (0.86, 0.83, 0.75), (0.10, 0.20, 0.34), (0.30, 0.42, 0.22))
UNLIKE_COLOURS = ((0.96, 0.55, 0.10), (0.58, 0.22, 0.80), (0.10, 0.80, 0.85), (0.95, 0.45, 0.70), (0.05, 0.05, 0.05))


def sr_clips(name: str, attrs: list[Attributes], frames: int, size: int, seed: int) -> tuple[torch.Tensor, list]:
    """``(B, 3, frames, size, size)`` ground-truth clips of the SR clip set ``name`` and the
    background of each (for the object-position error)."""
    if name not in SR_CLIP_SETS:
        raise ValueError(f"Unknown SR clip set {name!r}; expected one of {SR_CLIP_SETS}.")
    rng = np.random.default_rng(seed)
    vids, bgs = [], []
    for a in attrs:
        kw: dict = {}
        if name == "fast":
            kw["speed"] = 2 * max(SPEEDS.values())
        elif name == "slow":
            kw["speed"] = 0.5 * min(SPEEDS.values())
        elif name == "unlike":
            i, j = rng.choice(len(UNLIKE_BACKGROUNDS), size=2, replace=False)
            bg = (UNLIKE_BACKGROUNDS[i], UNLIKE_BACKGROUNDS[j])
            far = [c for c in UNLIKE_COLOURS if min(np.linalg.norm(np.subtract(c, b)) for b in bg) > 0.4]
            kw["background"] = bg
            kw["colour"] = far[int(rng.integers(len(far)))]
            kw["shape"] = EXTRA_SHAPES[int(rng.integers(len(EXTRA_SHAPES)))]
            kw["radius"] = float(rng.uniform(0.07, 0.09) if rng.random() < 0.5 else rng.uniform(0.20, 0.24))
            kw["speed"] = float(rng.uniform(min(SPEEDS.values()), max(SPEEDS.values())))
        vids.append(frames_to_video(render_clip(a, frames=frames, size=size, rng=rng, **kw)))
        bgs.append(kw.get("background", BACKGROUND))
    return torch.stack(vids), bgs


def _position_error(pred: torch.Tensor, gt: torch.Tensor, backgrounds: list[tuple]) -> float:
    return float(np.mean([position_error(pred[i : i + 1], gt[i : i + 1], bg) for i, bg in enumerate(backgrounds)]))


def _flow_available() -> bool:
    try:
        import cv2  # noqa: F401, PLC0415
    except ImportError:
        log.warning("OpenCV is not installed (pip install -r requirements-eval.txt): the TSR's optical-flow baseline is skipped")
        return False
    return True


def _prompts(split: str, n: int, seed: int) -> list[Attributes]:
    """``n`` attribute combinations of ``split``, spread over the whole pool: consecutive random
    permutations of it, cut at ``n`` (so ``n < len(pool)`` is a uniform sample without repeats,
    not the first colours of the pool)."""
    if split not in SPLITS:
        raise ValueError(f"Unknown evaluation split {split!r}; expected one of {SPLITS}.")
    pool = all_attributes("held_out" if split == "held_out" else "train")
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(pool)) for _ in range(-(-n // len(pool)))])[:n]
    return [pool[i] for i in order]


# story part: base frames per scene (one base window: 4 s at the base's 4 fps)
STORY_SCENE_FRAMES = 16


def _story_pairs(n: int, seed: int) -> list[tuple[Attributes, Attributes]]:
    """``n`` two-scene stories over the training combinations: the first scene's prompt is spread
    over the pool like :func:`_prompts`; the second keeps its colour and shape and moves another way
    (another direction of a training combination; a random speed)."""
    pool = all_attributes("train")
    rng = np.random.default_rng([seed, 17])
    out = []
    for a in _prompts("seen", n, seed):
        others = [b for b in pool if (b.colour, b.shape) == (a.colour, a.shape) and b.direction != a.direction]
        out.append((a, others[int(rng.integers(len(others)))]))
    return out


def continuity(first: list[tuple], second: list[tuple], attrs: list[Attributes]) -> dict:
    """At boundaries whose two prompts share the colour and shape of ``attrs``, given the detector's
    reading of the scene before (``first``) and after (``second``): the fraction where both read the
    prompts' colour and shape, and the looser fraction where both read the same colour and shape."""
    right = lambda d, a: tuple(d[:2]) == (a.colour, a.shape)  # noqa: E731
    return {
        "boundaries": len(attrs),
        "right_both_sides": float(np.mean([right(d, a) and right(e, a) for d, e, a in zip(first, second, attrs, strict=True)])),
        "same_both_sides": float(np.mean([tuple(d[:2]) == tuple(e[:2]) for d, e in zip(first, second, strict=True)])),
    }


class _Evaluator:
    def __init__(self, cfg: EvalConfig):
        from .demo import DEMO_FILES

        self.cfg = cfg
        self.root = Path(cfg.models)
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.files = dict(DEMO_FILES)  # plus the SR students found next to them (distilled part)
        self.stages: dict[str, Stage] = {}
        self.dtype = resolve_precision(cfg.precision, cfg.device)
        self.encoder = None
        self.results: dict = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()}}
        self.nfe: dict = {}
        self._base_cache: dict = {}  # (stage key, options, split) -> (videos, seconds): the cascade reuses the sweep's videos
        self._sr_cache: dict = {}  # (stage key, options) -> (results, outputs): the students' teachers are the SR parts

    def stage(self, key: str) -> Stage | None:
        if key not in self.stages:
            path = self.root / self.files[key]
            if not path.exists():
                log.warning("missing %s: skipping what needs it", path)
                return None
            self.stages[key] = load_stage(path, device=self.cfg.device, dtype=self.dtype)
        return self.stages[key]

    def frame_step(self, key: str) -> int:
        """Reference frames per frame of the stage's output (the base at 4 fps shows every 2nd)."""
        from .train import default_frame_skip

        stage = self.stage(key)
        return default_frame_skip(stage.config, "shapes") if stage is not None else 1

    def text(self, attrs, captions: list[str] | None = None):
        """Text embeddings of ``captions`` (default: the canonical caption of each of ``attrs``)."""
        if self.encoder is None:
            self.encoder = load_text_encoder(device=self.cfg.device)
        return self.encoder.encode(captions if captions is not None else [caption(a, 0) for a in attrs])

    def batches(self, attrs):
        b = self.cfg.batch
        for i in range(0, len(attrs), b):
            yield i, attrs[i : i + b]

    # -- parts --------------------------------------------------------------------------------------

    def detector(self) -> dict:
        out = {}
        for name, size, frames, step in (("base 32px 16f", 32, 16, 2), ("final 64px 32f", 64, 32, 1)):
            per = []
            for split in ("seen", "held_out"):
                attrs = _prompts(split, self.cfg.samples, self.cfg.seed)
                rng = np.random.default_rng(self.cfg.seed + 1)
                vids = torch.stack(
                    [frames_to_video(render_clip(a, frames=frames, size=size, rng=rng, frame_step=step)) for a in attrs]
                )
                per.append(adherence(vids, attrs, step))
            out[name] = merge_adherence(per)
        return out

    def phenaki(self) -> dict:
        """Phenaki as a base, measured like the diffusion base: its tokenizer's reconstruction of
        ground-truth clips (and its tokens per clip against a per-frame tokenizer with the same
        patch), and the detector's adherence on every split at the default settings, with its
        network evaluations and seconds per video."""
        from .demo import PHENAKI_DEMO_DIR, PHENAKI_DEMO_FILES
        from .phenaki import PhenakiOptions, load_phenaki
        from .train import frame_skip_for

        root = Path(self.cfg.phenaki) if self.cfg.phenaki else PHENAKI_DEMO_DIR
        paths = [root / PHENAKI_DEMO_FILES[k] for k in ("tokenizer", "transformer")]
        if not all(p.exists() for p in paths):
            log.warning("no Phenaki files in %s: skipping the phenaki part", root)
            return {}
        ph = load_phenaki(*paths, device=self.cfg.device)
        tc, opts = ph.tokenizer.config, PhenakiOptions()
        frames, step = tc.frames(ph.info.steps), frame_skip_for(ph.info.fps, "shapes")
        attrs = _prompts("seen", self.cfg.samples, self.cfg.seed + 7)
        rng = np.random.default_rng(self.cfg.seed + 9)
        gt = torch.stack(
            [frames_to_video(render_clip(a, frames=frames, size=tc.image_size, rng=rng, frame_step=step)) for a in attrs]
        )
        with torch.no_grad():
            dev = ph.device
            recon = torch.cat(
                [ph.tokenizer.detokenize(ph.tokenizer.tokenize(gt[i : i + 8].to(dev))).cpu() for i in range(0, len(gt), 8)]
            )
        u = lambda v: ((v + 1) / 2).clamp(0, 1)  # noqa: E731
        res: dict = {
            "tokenizer": {
                "psnr": psnr(u(recon), u(gt)),
                "ssim": ssim(u(recon), u(gt)),
                "frames": frames,
                "tokens_per_clip": tc.tokens(frames),
                "tokens_per_clip_per_frame_tokenizer": frames * tc.grid**2,
                "codebook_size": tc.codebook_size,
                "n": len(gt),
            },
            "steps": opts.steps,
            "guidance": opts.w,
            "nfe_per_video": opts.steps * (2 if opts.w else 1),
        }
        for split in SPLITS:
            attrs = _prompts(split, self.cfg.samples, self.cfg.seed)
            caps = captions_for(attrs, split, self.cfg.seed)
            t0 = time.time()
            vids = torch.cat(
                [
                    ph.generate(
                        self.text(chunk, caps[i : i + len(chunk)]), frames, steps=opts.steps, w=opts.w, seed=self.cfg.seed + i
                    ).cpu()
                    for i, chunk in self.batches(attrs)
                ]
            )
            res[split] = {**adherence(vids, attrs, step), "seconds_per_video": round((time.time() - t0) / len(attrs), 3)}
            if split == "seen":
                self._save_grid(vids[:8], attrs[:8], "phenaki_seen.png")
            log.info("phenaki %s: %s", split, res[split])
        return res

    def base_videos(self, stage: Stage, attrs, options: SamplingOptions, seed0: int, captions=None) -> torch.Tensor:
        vids = []
        for i, chunk in self.batches(attrs):
            caps = None if captions is None else captions[i : i + len(chunk)]
            vids.append(generate(stage, self.text(chunk, caps), options=replace(options, seed=seed0 + i)).cpu())
        return torch.cat(vids)

    def split_videos(self, key: str, options: SamplingOptions, split: str) -> tuple[torch.Tensor, list[Attributes], float]:
        """Base videos of the evaluation prompts of ``split`` (seeds as in :meth:`base_videos`),
        computed once per run, with the seconds they took."""
        attrs = _prompts(split, self.cfg.samples, self.cfg.seed)
        if (key, options, split) not in self._base_cache:
            disk = self._disk_cache_path(key, options, split)
            if disk is not None and disk.exists():
                from safetensors.torch import load_file

                data = load_file(disk)
                vids, seconds = data["videos"], float(data["seconds"])
                log.info("base videos from the cache %s", disk)
            else:
                t0 = time.time()
                caps = captions_for(attrs, split, self.cfg.seed)
                vids = self.base_videos(self.stage(key), attrs, options, self.cfg.seed, caps)
                seconds = time.time() - t0
                if disk is not None:
                    from safetensors.torch import save_file

                    tmp = disk.with_suffix(".tmp")
                    save_file({"videos": vids.contiguous(), "seconds": torch.tensor(seconds)}, tmp)
                    tmp.replace(disk)
            self._base_cache[(key, options, split)] = (vids, seconds)
        vids, seconds = self._base_cache[(key, options, split)]
        return vids, attrs, seconds

    def _disk_cache_path(self, key: str, options: SamplingOptions, split: str) -> Path | None:
        """Where base videos are shared between processes (``cache``); the name hashes everything
        they depend on: the model file's size and modification time, options, prompts and seeds."""
        if not self.cfg.cache:
            return None
        import hashlib

        path = self.root / self.files[key]
        st = path.stat()
        precision = () if self.dtype == torch.float32 else (str(self.dtype),)  # fp32 keeps the cache names of before
        ident = repr(
            (str(path.resolve()), st.st_size, st.st_mtime_ns, options, split, self.cfg.samples, self.cfg.seed, self.cfg.batch)
            + precision
        )
        folder = Path(self.cfg.cache)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{key}_{split}_{hashlib.sha256(ident.encode()).hexdigest()[:16]}.safetensors"

    def base(self) -> dict:
        stage = self.stage("base")
        if stage is None:
            return {}
        res = {}
        for w in self.cfg.w_values:
            res[f"w={w:g}"] = {}
            for split in ("seen", "held_out"):
                vids, attrs, seconds = self.split_videos("base", DEFAULT_OPTIONS["base"].with_w(w), split)
                res[f"w={w:g}"][split] = {**adherence(vids, attrs, self.frame_step("base")), "seconds": round(seconds, 1)}
                if w == DEFAULT_OPTIONS["base"].guidance.w:
                    self._save_grid(vids[:8], attrs[:8], f"base_{split}.png")
                log.info("base w=%g %s: %s", w, split, res[f"w={w:g}"][split])
            if w == DEFAULT_OPTIONS["base"].guidance.w:  # wording the model never saw, at the default guidance
                for split in PHRASING_SPLITS:
                    vids, attrs, seconds = self.split_videos("base", DEFAULT_OPTIONS["base"].with_w(w), split)
                    res[f"w={w:g}"][split] = {**adherence(vids, attrs, self.frame_step("base")), "seconds": round(seconds, 1)}
                    log.info("base w=%g %s: %s", w, split, res[f"w={w:g}"][split])
        self.nfe["base teacher"] = DEFAULT_OPTIONS["base"].steps * 2
        return res

    def ssr(self, key: str = "ssr", options: SamplingOptions | None = None) -> dict:
        return self._ssr(key, options)[0]

    def _sr_options(self, role: str, options: SamplingOptions | None) -> SamplingOptions:
        options = options or DEFAULT_OPTIONS[role]
        if self.cfg.sr_consistency is not None:
            options = replace(options, consistency=self.cfg.sr_consistency)
        return options if self.cfg.sr_aug is None else replace(options, aug_level=self.cfg.sr_aug)

    def _sr_sets(self, motion: bool) -> list[str]:
        sets = [s for s in self.cfg.sr_sets if motion or s not in MOTION_SETS]
        return ["seen"] + [s for s in sets if s != "seen"]

    def _ssr(self, key: str, options: SamplingOptions | None):
        return self._sr_part("ssr", key, options)

    def _sr_part(self, role: str, key: str, options: SamplingOptions | None):
        """An SR part over its clip sets: the seen clips' figures at the top level (with the
        outputs, which the students' comparison reuses), the other sets under ``sets``."""
        stage = self.stage(key)
        if stage is None:
            return {}, None
        options = self._sr_options(role, options)
        if (key, options) in self._sr_cache:
            return self._sr_cache[(key, options)]
        run = self._ssr_set if role == "ssr" else self._tsr_set
        res, out = None, None
        sets = {}
        for name in self._sr_sets(motion=role == "tsr"):
            r, o = run(stage, key, options, name)
            if name == "seen":
                res, out = r, o
            else:
                sets[name] = r
        if sets:
            res["sets"] = sets
        self._sr_cache[(key, options)] = (res, out)
        return res, out

    def _ssr_set(self, stage: Stage, key: str, options: SamplingOptions, name: str):
        f = stage.config.spatial_factor
        attrs = _prompts("seen", self.cfg.samples, self.cfg.seed + 7)
        gt, _ = sr_clips(name, attrs, 16, stage.config.width, self.cfg.seed + 8)
        low = resize_video(gt, (round(gt.shape[-2] / f), round(gt.shape[-1] / f)))
        outs = []
        for i, chunk in self.batches(attrs):
            outs.append(
                upsample_spatial(
                    stage,
                    low[i : i + len(chunk)],
                    self.text(chunk),
                    size=tuple(gt.shape[-2:]),
                    options=replace(options, seed=self.cfg.seed + i),
                )
            )
        out = torch.cat(outs).cpu()
        u = lambda v: ((v + 1) / 2).clamp(0, 1)  # noqa: E731
        baselines = {
            "bicubic": bicubic_upscale(low, gt.shape[-2:]),
            "bilinear": resize_video(low, gt.shape[-2:]),
            "lanczos": lanczos_resize(low, gt.shape[-2:]),
        }
        res = {"psnr": psnr(u(out), u(gt)), "ssim": ssim(u(out), u(gt))}
        for b, v in baselines.items():
            res[f"{b}_psnr"] = psnr(u(v), u(gt))
            res[f"{b}_ssim"] = ssim(u(v), u(gt))
        res["consistency_psnr"] = psnr(u(resize_video(out, low.shape[-2:])), u(low))
        res["n"] = len(attrs)
        res["aug_level"] = options.aug_level
        res["consistency"] = options.consistency
        res["gain_over_bicubic_db"] = res["psnr"] - res["bicubic_psnr"]
        res["gain_over_lanczos_db"] = res["psnr"] - res["lanczos_psnr"]
        suffix = "" if name == "seen" else f"_{name}"
        self._save_grid(torch.cat([baselines["bicubic"][:4], out[:4], gt[:4]]), None, f"{key}{suffix}_bicubic_ours_gt.png")
        return res, out

    def tsr(self, key: str = "tsr", options: SamplingOptions | None = None) -> dict:
        return self._tsr(key, options)[0]

    def _tsr(self, key: str, options: SamplingOptions | None):
        return self._sr_part("tsr", key, options)

    def _tsr_set(self, stage: Stage, key: str, options: SamplingOptions, name: str):
        f = stage.config.temporal_factor
        attrs = _prompts("seen", self.cfg.samples, self.cfg.seed + 7)
        gt, bgs = sr_clips(name, attrs, 15 * f + 1, stage.config.width, self.cfg.seed + 8)
        low = gt[:, :, ::f]  # 16 frames; the 15 * (f - 1) frames between them are to be inserted
        outs = []
        for i, chunk in self.batches(attrs):
            outs.append(
                upsample_temporal(
                    stage,
                    low[i : i + len(chunk)],
                    self.text(chunk),
                    mode="interpolate",
                    options=replace(options, seed=self.cfg.seed + i),
                )
            )
        out = torch.cat(outs).cpu()
        u = lambda v: ((v + 1) / 2).clamp(0, 1)  # noqa: E731
        odd = inserted_indices(gt.shape[2], f)
        target = gt[:, :, odd]
        methods = {"ours": out[:, :, odd], "repeat": repeat_frames(low, f), "blend": blend_frames(low, f)}
        if _flow_available():
            methods["flow"] = flow_interpolate(low, f)
        res: dict = {}
        for m, v in methods.items():
            p = "" if m == "ours" else f"{m}_"
            res[f"{p}psnr_inserted"] = psnr(u(v), u(target))
            res[f"{p}ssim_inserted"] = ssim(u(v), u(target))
            res[f"{p}position_error_px"] = _position_error(v, target, bgs)
        res["psnr_all"] = psnr(u(out), u(gt))
        res["consistency_psnr"] = psnr(u(out[:, :, ::f]), u(low))  # the output's own input-rate frames vs the input
        res["n"] = len(attrs)
        res["aug_level"] = options.aug_level
        res["consistency"] = options.consistency
        res["gain_over_blend_db"] = res["psnr_inserted"] - res["blend_psnr_inserted"]
        if "flow" in methods:
            res["gain_over_flow_db"] = res["psnr_inserted"] - res["flow_psnr_inserted"]
        return res, out

    def cascade(self, fast: bool = False) -> dict:
        keys = ("base", "tsr", "ssr") if not fast else tuple(FAST_FILES[r] for r in ("base", "tsr", "ssr"))
        return self.cascade_with(keys, FAST_OPTIONS if fast else DEFAULT_OPTIONS, "_fast" if fast else "")

    def cascade_with(
        self, keys: tuple[str, str, str], opts: dict[str, SamplingOptions], tag: str = "", splits=("seen", "held_out")
    ) -> dict:
        """The cascade base -> TSR -> SSR of the stage ``keys`` (entries of ``files``) sampled with
        ``opts`` (per role), on the evaluation prompts of ``splits``; a grid of the first seen videos is
        saved as ``cascade<tag>_seen.png``."""
        stages = [self.stage(k) for k in keys]
        if any(s is None for s in stages):
            return {}
        res = {}
        for split in splits:
            base, attrs, seconds = self.split_videos(keys[0], opts["base"], split)
            t0 = time.time()
            final = self._upsample(stages, opts, base, attrs, self.cfg.seed)
            seconds += time.time() - t0
            res[split] = {
                "cascade": adherence(final, attrs, 1),
                "base": adherence(base, attrs, self.frame_step(keys[0])),
                "seconds_per_video": round(seconds / len(attrs), 2),
            }
            if split == "seen":
                self._save_grid(final[:8], attrs[:8], f"cascade{tag}_{split}.png")
        return res

    def _upsample(self, stages: list[Stage], opts: dict[str, SamplingOptions], base: torch.Tensor, attrs, seed0: int):
        """``base`` videos through the TSR and SSR of ``stages`` (their seeds from ``seed0`` per batch)."""
        finals = []
        for i, chunk in self.batches(attrs):
            text = self.text(chunk)
            v = upsample_temporal(stages[1], base[i : i + len(chunk)], text, options=opts["tsr"].for_stage(seed0 + i, "tsr"))
            finals.append(upsample_spatial(stages[2], v, text, options=opts["ssr"].for_stage(seed0 + i, "ssr")))
        return torch.cat(finals).cpu()

    def story(self, fast: bool = False) -> dict:
        """Story mode through the cascade (the fast path's students when ``fast``): ``samples``
        two-scene stories (:func:`_story_pairs`, :data:`STORY_SCENE_FRAMES` base frames per scene,
        :func:`cascade.story.run_story` at its defaults, one seed per story), read by the detector
        scene by scene on the final 64 px frames. Against it, each scene's prompt generated alone
        (the same cascade and options). Continuity: at each boundary (every second prompt keeps the
        first's colour and shape), both scenes read with the prompts' colour and shape; and, looser,
        the same colour and shape read on both sides, whatever they are."""
        from .story import Scene, run_story

        keys = ("base", "tsr", "ssr") if not fast else tuple(FAST_FILES[r] for r in ("base", "tsr", "ssr"))
        opts = FAST_OPTIONS if fast else DEFAULT_OPTIONS
        stages = [self.stage(k) for k in keys]
        if any(s is None for s in stages):
            return {}
        pairs = _story_pairs(self.cfg.samples, self.cfg.seed + 11)
        attrs = [a for a, _ in pairs] + [b for _, b in pairs]  # first scenes, then second scenes
        scenes_read: list = [None] * len(attrs)
        t0 = time.time()
        grid = []
        for i, (a, b) in enumerate(pairs):
            chunks: list[torch.Tensor] = []
            scenes = [Scene(caption(a, 0), STORY_SCENE_FRAMES), Scene(caption(b, 0), STORY_SCENE_FRAMES)]
            r = run_story(
                scenes,
                base=stages[0],
                encode=lambda captions: self.text(None, captions),
                tsr=stages[1],
                ssr=stages[2],
                options=opts,
                sink=lambda frames, scene, out=chunks: out.append(frames.cpu()),
                seed=self.cfg.seed + 7919 * i,
            )
            video = torch.cat(chunks, dim=2)[0]  # (3, T, H, W); the scenes are equally long
            cut = r["frames"] // 2
            for j, part in ((i, video[:, :cut]), (len(pairs) + i, video[:, cut:])):
                scenes_read[j] = detect(video_to_frames(part).numpy(), frame_step=1).as_tuple()
            if i < 4:
                grid.append(video)
        story_seconds = time.time() - t0
        t0 = time.time()
        alone = self._upsample(
            stages, opts, self.base_videos(stages[0], attrs, opts["base"], self.cfg.seed + 3), attrs, self.cfg.seed + 3
        )
        alone_seconds = time.time() - t0
        n = len(pairs)
        first, second = scenes_read[:n], scenes_read[n:]
        res = {
            "scene_base_frames": STORY_SCENE_FRAMES,
            "stories": n,
            "story": score_detections(scenes_read, attrs),
            "story_first_scenes": score_detections(first, attrs[:n]),
            "story_second_scenes": score_detections(second, attrs[n:]),
            "alone": adherence(alone, attrs, 1),
            "continuity": continuity(first, second, [a for a, _ in pairs]),
            # what the detector read on each side of each boundary, with the prompts: where continuity fails
            "boundaries": [
                {"first_prompt": list(a.as_tuple()), "second_prompt": list(b.as_tuple()), "first": list(d), "second": list(e)}
                for (a, b), d, e in zip(pairs, first, second, strict=True)
            ],
            "seconds_per_story": round(story_seconds / n, 2),
            "seconds_per_video_alone": round(alone_seconds / len(attrs), 2),
        }
        if grid:
            self._save_grid(torch.stack(grid), None, f"story{'_fast' if fast else ''}.png", frames=12)
        return res

    def distilled(self) -> dict:
        """Students vs their teachers, both at their default settings (``STUDENT_OPTIONS`` and
        ``DEFAULT_OPTIONS``: what a user gets from each). The teachers' videos are those of the
        ``base``/``ssr``/``tsr`` parts (same prompts, clips and seeds, computed once); the base
        teacher also samples the students' step counts. Students: one evaluation per step; a
        guided teacher: 2."""
        res: dict = {}
        teacher, student = self.stage("base"), self.stage("base_distilled")
        if teacher is not None and student is not None:
            res.update(self._distilled_base(teacher, student))
        for role in ("tsr", "ssr"):
            students = self._sr_students(role)
            if not students or self.stage(role) is None:
                continue
            run = self._tsr if role == "tsr" else self._ssr
            t_opts = DEFAULT_OPTIONS[role]
            t_res, t_out = run(role, t_opts)
            per_step = _evaluations_per_step(t_opts)
            res[f"{role} teacher"] = {
                **t_res,
                "steps": t_opts.steps,
                "guidance": t_opts.guidance.w,
                "nfe_per_video": per_step * t_opts.steps,
            }
            for n, key in students.items():
                # each student with the sampler it was distilled for (its file records it)
                sampler = self.stage(key).config.distillation.sampler
                s_res, s_out = run(key, replace(STUDENT_OPTIONS[role], steps=n, sampler=sampler))
                # what a user has without a student: the teacher itself at the student's step count
                f_res, f_out = run(role, replace(t_opts, steps=n))
                res[f"{role} student {n}-step"] = {
                    **s_res,
                    "nfe_per_video": n,  # one evaluation per step
                    "sampler": sampler,
                    "paired_psnr_vs_teacher": psnr((s_out + 1) / 2, (t_out + 1) / 2),
                    "teacher_same_steps": {
                        **{k: v for k, v in f_res.items() if not isinstance(v, dict)},
                        "nfe_per_video": per_step * n,
                        "paired_psnr_vs_teacher": psnr((f_out + 1) / 2, (t_out + 1) / 2),
                    },
                }
        return res

    def _sr_students(self, role: str) -> dict[int, str]:
        """``{steps: stage key}`` of the SR role's students: the demo's student file and every
        ``<teacher>_distilled_<n>step.safetensors`` beside it, at every step count each supports (most steps first)."""
        found = {}
        stem = Path(self.files[role]).stem
        for path in sorted(self.root.glob(f"{stem}_distilled_*step.safetensors")):
            key = f"{role}_distilled" if path.name == self.files[f"{role}_distilled"] else f"{role}_student_{path.stem}"
            self.files[key] = path.name
            st = self.stage(key)
            if st is not None and st.config.is_distilled:
                found.update(dict.fromkeys(st.config.distillation.steps, key))
        return dict(sorted(found.items(), reverse=True))

    def _distilled_base(self, teacher: Stage, student: Stage) -> dict:
        res: dict = {}
        t_opts = DEFAULT_OPTIONS["base"]
        t_seen, attrs, _ = self.split_videos("base", t_opts, "seen")
        t_held, held, _ = self.split_videos("base", t_opts, "held_out")
        res["base teacher"] = {
            "steps": t_opts.steps,
            "sampler": t_opts.sampler.name,
            "nfe_per_video": _evaluations_per_step(t_opts) * t_opts.steps,
            "seen": adherence(t_seen, attrs, self.frame_step("base")),
            "held_out": adherence(t_held, held, self.frame_step("base")),
        }
        students = dict.fromkeys(student.config.distillation.steps, student)  # every step count it supports
        extra = Path(self.cfg.extra_students) if self.cfg.extra_students else None
        for n in (8, 4, 2, 1):
            p = extra / f"student_{n}step.safetensors" if extra else None
            if n not in students and p is not None and p.exists():
                students[n] = load_stage(p, device=self.cfg.device, dtype=self.dtype)
        for n, st in sorted(students.items(), reverse=True):
            if n not in st.config.distillation.steps:
                continue
            row: dict = {"steps": n, "nfe_per_video": n}
            for sampler in ("distilled_stochastic", "ddim"):
                o = replace(STUDENT_OPTIONS["base"], steps=n, sampler=sampler)
                vids = self.base_videos(st, attrs, o, self.cfg.seed)
                row[sampler] = {"seen": adherence(vids, attrs, self.frame_step("base"))}
                if sampler == "ddim":  # the deterministic student learned the teacher's DDIM map
                    row["paired_psnr_vs_teacher"] = psnr((vids + 1) / 2, (t_seen + 1) / 2)
                else:
                    row[sampler]["held_out"] = adherence(
                        self.base_videos(st, held, o, self.cfg.seed), held, self.frame_step("base")
                    )
            teacher_few = self.base_videos(teacher, attrs, replace(t_opts, steps=n), self.cfg.seed)
            row["teacher_ddim_same_steps"] = {
                "seen": adherence(teacher_few, attrs, self.frame_step("base")),
                "nfe_per_video": _evaluations_per_step(t_opts) * n,
                "paired_psnr_vs_teacher": psnr((teacher_few + 1) / 2, (t_seen + 1) / 2),
            }
            res[f"base student {n}-step"] = row
        return res

    # -- output -----------------------------------------------------------------------------------

    def _save_grid(self, videos: torch.Tensor, attrs, name: str, frames: int = 8) -> None:
        from PIL import Image

        t = videos.shape[2]
        idx = np.linspace(0, t - 1, min(frames, t)).round().astype(int)
        rows = []
        for v in videos:
            strip = to_uint8(video_to_frames(v[:, idx]))  # (F, H, W, 3)
            rows.append(np.concatenate(list(strip), axis=1))
        img = np.concatenate(rows, axis=0)
        scale = max(1, 256 // videos.shape[-2])
        Image.fromarray(img).resize((img.shape[1] * scale, img.shape[0] * scale), Image.NEAREST).save(self.out / name)
        if attrs is not None:
            (self.out / (name + ".txt")).write_text("\n".join(caption(a, 0) for a in attrs) + "\n")


def _evaluations_per_step(options: SamplingOptions) -> int:
    """Network evaluations per sampling step of an undistilled stage: two for a guided step, one otherwise."""
    return 2 if options.guidance.w else 1


def evaluate(cfg: EvalConfig) -> dict:
    ev = _Evaluator(cfg)
    t0 = time.time()
    for part in cfg.parts:
        t1 = time.time()
        for name in ("cascade", "story"):  # cascade = cascade_default + cascade_fast; story likewise
            if part in (name, f"{name}_default"):
                ev.results[name] = getattr(ev, name)()
            if part in (name, f"{name}_fast"):
                ev.results[f"{name}_fast"] = getattr(ev, name)(fast=True)
        if not part.startswith(("cascade", "story")):
            ev.results[part] = getattr(ev, part)()
        log.info("%s done in %.0fs", part, time.time() - t1)
        (ev.out / "results.json").write_text(json.dumps(ev.results, indent=2))
    ev.results["seconds"] = round(time.time() - t0, 1)
    (ev.out / "results.json").write_text(json.dumps(ev.results, indent=2))
    (ev.out / "report.md").write_text(report(ev.results))
    return ev.results
