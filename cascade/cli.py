"""Command line: ``python -m cascade <command> ...``.

Commands: ``generate`` (text -> video through the demo cascade), ``train``, ``distill``,
``evaluate``, ``story``, ``export``, ``info``, ``convert``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("cascade")


def _setup(verbose: bool) -> None:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    from .train import configure_threads

    configure_threads()


# --- train ----------------------------------------------------------------------------------------


def cmd_train(a: argparse.Namespace) -> int:
    from .config import StageConfig
    from .demo import demo_train_config
    from .train import Trainer, overfit_one_batch

    overrides = {
        k: getattr(a, k)
        for k in (
            "data",
            "images",
            "out",
            "steps",
            "batch",
            "lr",
            "warmup",
            "seed",
            "mixed_precision",
            "checkpoint_every",
            "sample_every",
            "binding_every",
            "log_every",
            "image_fraction",
            "clip_frames",
            "crop",
            "frame_skip",
            "text_encoder",
            "min_snr_gamma",
            "init_from",
            "lr_decay",
        )
    }
    overrides["grad_checkpointing"] = a.grad_checkpointing or None
    if a.continuation_mix:
        overrides["continuation_mix"] = tuple(float(x) for x in a.continuation_mix.split(","))
    if a.config:
        stage = StageConfig.from_dict(json.loads(Path(a.config).read_text()))
        if stage.role != a.stage:
            raise SystemExit(f"--config describes a {stage.role} stage but --stage is {a.stage}.")
        overrides["stage"] = stage
    cfg = demo_train_config(a.stage, **overrides)
    if a.schedule_shift is not None:
        sched = cfg.stage.schedule.__class__(cfg.stage.schedule.logsnr_min, cfg.stage.schedule.logsnr_max, a.schedule_shift)
        cfg = dataclasses.replace(cfg, stage=cfg.stage.replace(schedule=sched))
    if a.overfit_one_batch:
        r = overfit_one_batch(cfg, steps=a.overfit_steps)
        verdict = "the stage learns" if r["ratio"] > 1.5 else "the loss barely moved: check data, lr and config"
        print(
            f"overfit-one-batch: probe loss {r['probe_loss_before']:.4f} -> {r['probe_loss_after']:.4f} "
            f"({r['ratio']:.1f}x lower in {r['steps']} steps, {r['seconds']:.0f}s): {verdict}"
        )
        return 0
    tr = Trainer(cfg)
    if tr.acc.is_main_process:
        print(
            f"training {cfg.stage.describe()} ({tr.net.num_parameters() / 1e6:.2f} M parameters) from step {tr.step} "
            f"to {cfg.steps}, writing {cfg.out}"
        )
    tr.run()
    if tr.acc.is_main_process:
        print(f"done at step {tr.step}: {Path(cfg.out) / 'stage.safetensors'}")
    return 0


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a stage (base, ssr or tsr); resumes from --out if it holds a state")
    p.add_argument("--stage", required=True, choices=["base", "ssr", "tsr"])
    p.add_argument("--config", help="stage configuration JSON (default: the demo configuration of --stage)")
    p.add_argument("--data", help="'shapes' (procedural, default) or a folder of captioned videos")
    p.add_argument("--images", help="a folder of captioned images for joint image-video training")
    p.add_argument("--out", help="output folder (state.safetensors, stage.safetensors, log.jsonl, samples/)")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--warmup", type=int)
    p.add_argument(
        "--lr-decay", choices=["constant", "cosine"], help="after warm-up: constant (default) or cosine to 0 at --steps"
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"])
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument(
        "--binding-every",
        type=int,
        help="base: log the fast text-binding diagnostic (z of each word, log-SNR -8..-5) every N steps",
    )
    p.add_argument("--sample-every", type=int)
    p.add_argument("--log-every", type=int)
    p.add_argument("--image-fraction", type=float)
    p.add_argument("--clip-frames", type=int)
    p.add_argument("--crop", type=int)
    p.add_argument("--frame-skip", type=int)
    p.add_argument("--text-encoder", help="'minilm' (default), a HF folder or a T5 .safetensors (with a tokenizer next to it)")
    p.add_argument("--min-snr-gamma", type=float)
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--init-from", help="start a new run from the weights of this stage file (same role and network)")
    p.add_argument(
        "--schedule-shift",
        type=float,
        help="log-SNR shift of the noise schedule (<= 0; more noise for videos, e.g. -5 for the demo base; default: the stage recipe's, 0)",
    )
    p.add_argument(
        "--continuation-mix", help="base with continuation: fractions none,prefix,first+last,sparse (e.g. 0.75,0.15,0.05,0.05)"
    )
    p.add_argument("--overfit-one-batch", action="store_true", help="sanity mode: show within a minute that the stage can learn")
    p.add_argument("--overfit-steps", type=int, default=120)
    p.set_defaults(fn=cmd_train)


# --- generate -------------------------------------------------------------------------------------


def cmd_generate(a: argparse.Namespace) -> int:
    from dataclasses import replace

    from tqdm import tqdm

    from .run import load_demo_cascade
    from .video_io import write_video

    cascade = load_demo_cascade(a.models, fast=a.fast)
    for role, steps in (("base", a.steps), ("tsr", a.sr_steps), ("ssr", a.sr_steps)):
        if steps:
            cascade.options[role] = replace(cascade.options[role], steps=steps)
    if a.guidance is not None:
        cascade.options["base"] = replace(cascade.options["base"], guidance=a.guidance)
    bars: dict = {}

    def progress(stage, done, total):
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=f"{stage:>4}", unit="eval", leave=True)
        bar.update(done - bar.n)

    frames, fps = cascade(a.prompt, seed=a.seed, negative=a.negative, progress=progress)
    for bar in bars.values():
        bar.close()
    out = write_video(a.output, frames, fps)
    print(f"wrote {out}: {frames.shape[0]} frames {frames.shape[2]}x{frames.shape[1]} @ {fps:g} fps")
    return 0


def add_generate(sub) -> None:
    p = sub.add_parser("generate", help="text -> video through the demo cascade (base -> TSR x2 -> SSR x2)")
    p.add_argument("prompt")
    p.add_argument("-o", "--output", default="out.mp4", help="output file (.mp4, .webm, .gif)")
    p.add_argument("--fast", action="store_true", help="use the 8-step guided-distilled students (one evaluation per step)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--negative", help="negative prompt (replaces the unconditional branch; teachers only)")
    p.add_argument("--steps", type=int, help="base sampling steps")
    p.add_argument("--sr-steps", type=int, help="sampling steps of the TSR and SSR stages")
    p.add_argument("--guidance", type=float, help="base guidance weight w (the paper's convention; ComfyUI cfg = 1 + w)")
    p.add_argument("--models", help="folder with the stage files (default: the pack's models/imagen_video)")
    p.set_defaults(fn=cmd_generate)


# --- distill / evaluate ------------------------------------------------------------------------------


def cmd_distill(a: argparse.Namespace) -> int:
    from .distill import DistillConfig, distill

    kw = {
        k: getattr(a, k)
        for k in (
            "teacher",
            "out",
            "data",
            "w_min",
            "w_max",
            "teacher_steps",
            "target_steps",
            "guided_steps",
            "steps_per_round",
            "batch",
            "lr",
            "frame_skip",
            "clip_frames",
            "crop",
            "image_fraction",
            "seed",
            "mixed_precision",
            "text_encoder",
        )
        if getattr(a, k) is not None
    }
    for path in distill(DistillConfig(**kw)):
        print(f"wrote {path}")
    return 0


def add_distill(sub) -> None:
    p = sub.add_parser("distill", help="guided + progressive distillation of a stage (stage 1: absorb CFG; stage 2: halve steps)")
    p.add_argument("--teacher", required=True, help="the undistilled stage file")
    p.add_argument("--out", required=True)
    p.add_argument("--data")
    p.add_argument("--w-min", type=float)
    p.add_argument("--w-max", type=float)
    p.add_argument("--teacher-steps", type=int, help="the sampling grid progressive distillation starts from (e.g. 64)")
    p.add_argument("--target-steps", type=int, help="halve down to this many steps (8; or 4, 2, 1)")
    p.add_argument("--guided-steps", type=int, help="optimiser steps of stage 1 (guidance distillation)")
    p.add_argument("--steps-per-round", type=int, help="optimiser steps per halving round")
    p.add_argument("--batch", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--frame-skip", type=int, help="frame skip of the training clips (default: the demo recipe's, base 2, SR 1)")
    p.add_argument("--clip-frames", type=int)
    p.add_argument("--crop", type=int)
    p.add_argument("--image-fraction", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"])
    p.add_argument("--text-encoder")
    p.set_defaults(fn=cmd_distill)


def cmd_evaluate(a: argparse.Namespace) -> int:
    from .evaluate import EvalConfig, evaluate, merge

    if a.merge:
        merge(a.out, a.merge)
        print((Path(a.out) / "report.md").read_text())
        return 0
    cfg = EvalConfig(
        models=a.models,
        out=a.out,
        samples=a.samples,
        seed=a.seed,
        batch=a.batch,
        parts=tuple(a.parts.split(",")) if a.parts else EvalConfig.parts,
        w_values=tuple(float(w) for w in a.w.split(",")) if a.w else EvalConfig.w_values,
        extra_students=a.extra_students,
        cache=a.cache,
    )
    evaluate(cfg)
    print((Path(a.out) / "report.md").read_text())
    return 0


def add_evaluate(sub) -> None:
    from .demo import DEMO_DIR

    p = sub.add_parser("evaluate", help="measure a cascade on the moving-shapes task (JSON + markdown report + picture grids)")
    p.add_argument("--models", default=str(DEMO_DIR))
    p.add_argument("--out", default="eval")
    p.add_argument("--samples", type=int, default=64, help="samples per split (seen / held-out combinations)")
    p.add_argument("--merge", nargs="+", metavar="RUN", help="merge earlier --parts runs (their --out folders) into --out")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument(
        "--parts",
        help="comma list of: detector,base,ssr,tsr,cascade,distilled (cascade = cascade_default + cascade_fast, each also alone)",
    )
    p.add_argument("--w", help="comma list of guidance weights for the base sweep (default 0,2,4,6)")
    p.add_argument("--extra-students", help="folder with student_4step / student_2step files of the base")
    p.add_argument("--cache", help="folder where base videos are stored, so that runs split over processes compute them once")
    p.set_defaults(fn=cmd_evaluate)


# --- story ----------------------------------------------------------------------------------------


def cmd_story(a: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm

    from .run import load_demo_cascade
    from .story import StoryOptions, parse_story, run_story
    from .video_io import VideoWriter

    text = Path(a.story).read_text() if Path(a.story).is_file() else a.story
    cascade = load_demo_cascade(a.models, fast=a.fast)
    base_fps = cascade.base.config.fps
    out_fps = base_fps * (1 if a.base_only else cascade.tsr.config.temporal_factor)
    scenes = parse_story(text, fps=base_fps, default_seconds=a.seconds)
    total = sum(s.frames for s in scenes)
    print(f"{len(scenes)} scenes, {total} base frames = {total / base_fps:.1f} s at {out_fps:g} fps")
    opts = StoryOptions(context=a.context, transition=a.transition, transition_frames=a.transition_frames)
    bar = tqdm(total=total * (1 if a.base_only else cascade.tsr.config.temporal_factor), unit="frame", desc="story")
    t0 = time.time()
    with VideoWriter(a.output, out_fps) as writer:

        def sink(frames, scene):
            writer.write(((frames[0].permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1))
            bar.update(frames.shape[2])

        r = run_story(
            scenes,
            base=cascade.base,
            encode=cascade.encoder.encode,
            tsr=None if a.base_only else cascade.tsr,
            ssr=None if a.base_only else cascade.ssr,
            options=cascade.options,
            story=opts,
            sink=sink,
        )
    bar.close()
    print(f"wrote {a.output}: {writer.frames_written} frames in {time.time() - t0:.0f}s")
    if a.report:
        Path(a.report).write_text(json.dumps({**r, "scenes": [s.prompt for s in scenes], "seconds": time.time() - t0}, indent=1))
    return 0


def add_story(sub) -> None:
    p = sub.add_parser("story", help="a sequence of prompts -> one long video through the demo cascade, streamed to the file")
    p.add_argument("story", help="a story file or text: one prompt per line (optional '| 4s'), keyframes, or a paragraph")
    p.add_argument("-o", "--output", default="story.mp4")
    p.add_argument("--fast", action="store_true", help="use the 8-step distilled students")
    p.add_argument("--seconds", type=float, default=4.0, help="default scene duration")
    p.add_argument("--context", type=int, default=4, help="finished frames each new window is conditioned on")
    p.add_argument("--transition", choices=["cut", "blend"], default="cut")
    p.add_argument("--transition-frames", type=int, default=4)
    p.add_argument("--base-only", action="store_true", help="write the base frames only (no TSR / SSR)")
    p.add_argument("--models", help="folder with the stage files (default: the pack's models/imagen_video)")
    p.add_argument("--report", help="write timing per scene as JSON")
    p.set_defaults(fn=cmd_story)


# --- info / export / convert ------------------------------------------------------------------------


def cmd_info(a: argparse.Namespace) -> int:
    from .checkpoint import read_stage_config

    for path in a.files:
        cfg = read_stage_config(path)
        print(f"{path}: {cfg.describe()}\n  text encoder {cfg.text_encoder or '-'} (width {cfg.text_dim})")
        if a.json:
            print(json.dumps(cfg.to_dict(), indent=2))
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    """Export the EMA weights of a training state as a stage file (optionally fp16)."""
    import torch

    from .stage import load_stage

    stage = load_stage(a.src)
    stage.save(a.dst, dtype=torch.float16 if a.fp16 else None)
    print(f"wrote {a.dst}: {stage.config.describe()}")
    return 0


def cmd_convert(a: argparse.Namespace) -> int:
    """Convert a PyTorch pickle of a state dict into a stage file. Uses ``weights_only=True``, which
    refuses arbitrary objects: only plain tensors and containers are read."""
    import torch

    from .config import StageConfig
    from .stage import Stage

    cfg = StageConfig.from_dict(json.loads(Path(a.config).read_text()))
    sd = torch.load(a.src, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    stage = Stage(cfg)
    missing, unexpected = stage.net.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise SystemExit(f"{a.src} does not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    stage.save(a.dst)
    print(f"wrote {a.dst}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cascade", description="Imagen Video cascade: generate, train, distill, evaluate."
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    add_generate(sub)
    add_train(sub)
    add_distill(sub)
    add_evaluate(sub)
    add_story(sub)
    p = sub.add_parser("info", help="show the configuration stored in stage files")
    p.add_argument("files", nargs="+")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_info)
    p = sub.add_parser("export", help="re-save a stage file (e.g. as fp16)")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--fp16", action="store_true")
    p.set_defaults(fn=cmd_export)
    p = sub.add_parser("convert", help="convert a pickled state dict (.pt/.ckpt) to a safetensors stage file")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--config", required=True, help="stage configuration JSON")
    p.set_defaults(fn=cmd_convert)
    for extra in _EXTRA_COMMANDS:
        extra(sub)
    a = parser.parse_args(argv)
    _setup(a.verbose or a.command in ("train", "distill"))
    try:
        return a.fn(a)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


_EXTRA_COMMANDS: list = []
