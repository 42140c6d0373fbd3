"""Command line: ``python -m cascade <command> ...``.

Commands: ``generate`` (text -> video through the demo cascade), ``train``, ``distill``,
``evaluate``, ``story``, ``export``, ``info``, ``convert``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("cascade")


def _setup(verbose: bool) -> None:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no "Loading weights" bar around our own messages
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    from .train import configure_threads

    configure_threads()


# --- train ----------------------------------------------------------------------------------------


def add_config_args(p: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> list[str]:
    """One flag per field of the configuration dataclass ``cls`` (``--snake-case`` from the field
    name, its type, help and choices from the field's metadata), defaulting to None so that only
    what the user gives overrides the recipe. Returns the field names."""
    import typing

    hints = typing.get_type_hints(cls)
    names = []
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.metadata.get("cli", True):
            continue
        kind = hints[f.name]
        args = [t for t in typing.get_args(kind) if t is not type(None)]
        if typing.get_origin(kind) in (typing.Union, __import__("types").UnionType):
            kind = args[0]
        kw: dict = {"default": None, "help": f.metadata.get("help", "")}
        if f.default is not dataclasses.MISSING and f.default not in (None, "", ()) and f.metadata.get("show_default", True):
            shown = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
            kw["help"] += f" (library default {shown})"
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0]
            kw["type"] = lambda text, _t=item: tuple(_t(x) for x in text.split(","))
            kw["metavar"] = "A,B,..."
        elif kind in (int, float, str):
            kw["type"] = kind
        else:
            continue
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        if f.metadata.get("cli_required"):
            kw["required"] = True
        p.add_argument("--" + f.name.replace("_", "-"), **kw)
        names.append(f.name)
    return names


def given(a: argparse.Namespace, names: list[str]) -> dict:
    return {k: getattr(a, k) for k in names if getattr(a, k) is not None}


def cmd_train_phenaki(a: argparse.Namespace) -> int:
    from .phenaki_train import PhenakiTrainConfig, PhenakiTrainer

    flags = given(a, a.config_fields + a.phenaki_fields)
    allowed = {f.name for f in dataclasses.fields(PhenakiTrainConfig)}
    other = sorted(set(flags) - allowed)
    if other or a.config or a.schedule_shift is not None or a.overfit_one_batch:
        other += [
            x
            for x, v in (("config", a.config), ("schedule_shift", a.schedule_shift), ("overfit_one_batch", a.overfit_one_batch))
            if v
        ]
        raise SystemExit(
            f"--stage {a.stage} is a Phenaki model; these settings are for diffusion stages: {', '.join('--' + o.replace('_', '-') for o in other)}."
        )
    flags.setdefault("out", f"runs/phenaki_{a.stage}")
    cfg = PhenakiTrainConfig(model=a.stage, **flags)
    tr = PhenakiTrainer(cfg)
    if tr.acc.is_main_process:
        n = sum(p.numel() for p in tr.net.parameters())
        print(f"training Phenaki {a.stage} ({n / 1e6:.2f} M parameters) from step {tr.step} to {cfg.steps}, writing {cfg.out}")
    tr.run()
    if tr.acc.is_main_process:
        print(f"done at step {tr.step}: {tr.model_path}")
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from .config import StageConfig
    from .demo import demo_train_config
    from .phenaki_train import PHENAKI_MODELS
    from .train import TrainConfig, Trainer, overfit_one_batch

    if a.stage in PHENAKI_MODELS:
        return cmd_train_phenaki(a)
    extra = sorted(given(a, a.phenaki_fields))
    if extra:
        raise SystemExit(
            f"{', '.join('--' + o.replace('_', '-') for o in extra)}: settings of the Phenaki models (--stage cvivit / maskgit)."
        )
    overrides = given(a, a.config_fields)
    if a.config:  # your own stage: the library's defaults and your flags (the demo recipe is for the demo stages)
        stage = StageConfig.from_dict(json.loads(Path(a.config).read_text()))
        if stage.role != a.stage:
            raise SystemExit(f"--config describes a {stage.role} stage but --stage is {a.stage}.")
        if a.schedule_shift is not None:
            stage = stage.replace(
                schedule=stage.schedule.__class__(stage.schedule.logsnr_min, stage.schedule.logsnr_max, a.schedule_shift)
            )
        cfg = TrainConfig(stage=stage, **overrides)
    else:  # the demo stage of --stage with its recipe (cascade.demo), your flags on top
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
    from .phenaki_train import PHENAKI_MODELS, PhenakiTrainConfig
    from .roles import role_names
    from .train import TrainConfig

    p = sub.add_parser(
        "train",
        help="train a stage (base, ssr, tsr) or a Phenaki model (cvivit, maskgit); resumes from --out if it holds a state",
    )
    p.add_argument("--stage", required=True, choices=[*role_names(), *PHENAKI_MODELS])
    p.add_argument(
        "--config",
        help="stage configuration JSON; trains with the library's defaults and your flags "
        "(without it: the demo configuration of --stage and its recipe)",
    )
    p.add_argument(
        "--schedule-shift",
        type=float,
        help="log-SNR shift of the noise schedule (<= 0; more noise for videos, e.g. -5 for the demo base; default: the stage's)",
    )
    p.add_argument("--overfit-one-batch", action="store_true", help="sanity mode: show within a minute that the stage can learn")
    p.add_argument("--overfit-steps", type=int, default=120)
    names = add_config_args(p, TrainConfig, skip=("stage",))
    shared = tuple(f.name for f in dataclasses.fields(TrainConfig))
    p.set_defaults(fn=cmd_train, config_fields=names, phenaki_fields=add_config_args(p, PhenakiTrainConfig, skip=shared))


# --- generate -------------------------------------------------------------------------------------


def cmd_generate(a: argparse.Namespace) -> int:
    from dataclasses import replace

    from tqdm import tqdm

    from .checks import check_count, check_output_path
    from .run import load_demo_cascade
    from .video_io import write_video

    check_output_path(a.output)  # before any model is loaded: a bad -o costs nothing
    for flag, steps in (("--steps", a.steps), ("--sr-steps", a.sr_steps)):
        if steps is not None:
            check_count(flag, steps, 1, 10_000)
    if not a.prompt.strip():
        raise ValueError("The prompt is empty: write what the video should show, e.g. 'a red circle moving right'.")
    if a.base == "phenaki" and a.fast:
        raise ValueError("--fast picks the distilled diffusion students; the Phenaki base has no students (use --steps).")
    device, dtype = _device_and_dtype(a)
    cascade = load_demo_cascade(a.models, fast=a.fast, base=a.base, phenaki_dir=a.phenaki_dir, device=device, dtype=dtype)
    if a.base_only:
        cascade.tsr = cascade.ssr = None
    _sr_consistency(cascade, a)
    for role, steps in (("base", a.steps), ("tsr", a.sr_steps), ("ssr", a.sr_steps)):
        if steps is not None:
            cascade.options[role] = replace(cascade.options[role], steps=steps)
    if a.guidance is not None:
        cascade.options["base"] = cascade.options["base"].with_w(a.guidance)
    if cascade.phenaki is not None:
        cascade.phenaki_options = replace(
            cascade.phenaki_options,
            **{k: v for k, v in (("steps", a.steps), ("w", a.guidance)) if v is not None},
        )
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
    p.add_argument(
        "--fast",
        action="store_true",
        help="use the guided-distilled students: base 2 steps, TSR 1, SSR 1 (one evaluation per step)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--negative", help="negative prompt (replaces the unconditional branch; teachers only)")
    p.add_argument("--steps", type=int, help="base sampling steps")
    p.add_argument("--sr-steps", type=int, help="sampling steps of the TSR and SSR stages")
    p.add_argument("--guidance", type=float, help="base guidance weight w (the paper's convention; ComfyUI cfg = 1 + w)")
    p.add_argument("--models", help="folder with the stage files (default: the pack's models/imagen_video)")
    _add_base_args(p)
    p.add_argument("--base-only", action="store_true", help="write the base's video only (no TSR / SSR)")
    _add_sr_consistency(p)
    _add_device_args(p)
    p.set_defaults(fn=cmd_generate)


_SR_CONSISTENCY_HELP = (
    "TSR / SSR: pull every prediction onto the input (default on; off: the stages redraw everything, and may "
    "redraw a shape the base drew badly from the prompt)"
)


def _add_sr_consistency(p: argparse.ArgumentParser, help: str = _SR_CONSISTENCY_HELP) -> None:
    p.add_argument("--sr-consistency", choices=("on", "off"), help=help)


def _on_off(value: str | None) -> bool | None:
    return None if value is None else value == "on"


def _sr_consistency(cascade, a: argparse.Namespace) -> None:
    if a.sr_consistency is not None:
        for role in ("tsr", "ssr"):
            cascade.options[role] = dataclasses.replace(cascade.options[role], consistency=_on_off(a.sr_consistency))


def _add_device_args(p: argparse.ArgumentParser, precision: str = "auto", default_help: str = "") -> None:
    p.add_argument("--device", default="cpu", help="where the models run: cpu (default), cuda, cuda:1 or mps")
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "fp16", "bf16"),
        default=precision,
        help="weight precision of the diffusion stages: "
        + (default_help or "auto (default) is bf16 (fp16) on a GPU and fp32 on the CPU")
        + "; on the CPU, bf16 is faster where it has AVX-512-BF16 / AMX and slower elsewhere, and fp16 is slow",
    )


def _device_and_dtype(a: argparse.Namespace):
    """``--device`` checked against this machine and the dtype ``--precision`` means there, before any model loads."""
    from .checks import check_device, resolve_precision

    device = check_device(a.device)
    return device, resolve_precision(a.precision, device)


def _add_base_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--base",
        choices=["imagen", "phenaki"],
        default="imagen",
        help="the base: Imagen Video's diffusion base (default) or Phenaki (C-ViViT tokens by MaskGIT); TSR and SSR follow either",
    )
    p.add_argument(
        "--phenaki-dir", help="folder with the Phenaki tokenizer and transformer files (default: the pack's models/phenaki)"
    )


# --- distill / evaluate ------------------------------------------------------------------------------


def cmd_distill(a: argparse.Namespace) -> int:
    from .distill import DistillConfig, distill

    for path in distill(DistillConfig(**given(a, a.config_fields))):
        print(f"wrote {path}")
    return 0


def add_distill(sub) -> None:
    from .distill import DistillConfig

    p = sub.add_parser("distill", help="guided + progressive distillation of a stage (stage 1: absorb CFG; stage 2: halve steps)")
    p.set_defaults(fn=cmd_distill, config_fields=add_config_args(p, DistillConfig))


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
        sr_sets=tuple(a.sr_sets.split(",")) if a.sr_sets else EvalConfig.sr_sets,
        sr_aug=a.sr_aug,
        sr_consistency=_on_off(a.sr_consistency),
        phenaki=a.phenaki_dir,
        device=a.device,
        precision=a.precision,
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
        help="comma list of: detector,base,ssr,tsr,cascade,distilled,story,phenaki (cascade = cascade_default + cascade_fast, each also alone; story likewise)",
    )
    p.add_argument("--w", help="comma list of guidance weights for the base sweep (default 0,2,4,6)")
    p.add_argument("--extra-students", help="folder with student_4step / student_2step files of the base")
    p.add_argument("--cache", help="folder where base videos are stored, so that runs split over processes compute them once")
    p.add_argument(
        "--sr-sets",
        help="comma list of the SR parts' clip sets: seen,fast,slow,unlike (default all; the SSR skips fast and slow)",
    )
    p.add_argument(
        "--sr-aug",
        type=float,
        help="SR parts: noise-augmentation level at sampling (default: the stages' default, cascade.demo.SR_AUG_LEVEL)",
    )
    _add_sr_consistency(
        p, "SR parts: project every prediction onto the input (default: the cascade's default, on; off: the stages alone)"
    )
    p.add_argument(
        "--phenaki-dir", help="part phenaki: the Phenaki tokenizer and transformer folder (default: the pack's models/phenaki)"
    )
    _add_device_args(p, "fp32", "fp32 (default: the precision of the README's figures)")
    p.set_defaults(fn=cmd_evaluate)


# --- story ----------------------------------------------------------------------------------------


def cmd_story(a: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm

    from .checkpoint import read_stage_config
    from .checks import check_output_path
    from .demo import DEMO_DIR, DEMO_FILES
    from .frames import video_to_frames
    from .roles import output_fps
    from .run import load_demo_cascade
    from .seeds import stage_seed
    from .story import StoryOptions, parse_story, run_story
    from .video_io import VideoWriter

    text = story_text(a.story)
    check_output_path(a.output)
    if not (a.seconds > 0):
        raise ValueError(f"--seconds (the default scene duration) must be more than 0; received {a.seconds}.")
    change = {None: StoryOptions.change_context, -1: None}.get(a.change_context, a.change_context)  # -1: --context
    opts = StoryOptions(  # checked before any model loads
        context=a.context, transition=a.transition, transition_frames=a.transition_frames, change_context=change
    )
    device, dtype = _device_and_dtype(a)
    if a.base == "phenaki":
        if a.fast:
            raise ValueError("--fast picks the distilled diffusion students; the Phenaki base has no students.")
        from .phenaki import PhenakiOptions, story_frames

        cascade = load_demo_cascade(a.models, base="phenaki", phenaki_dir=a.phenaki_dir, device=device, dtype=dtype)
        scenes = parse_story(text, fps=cascade.base_fps, default_seconds=a.seconds)
        phenaki_opts = PhenakiOptions(context=a.phenaki_context, seed=stage_seed(a.seed, "base"))
    else:
        base_file = Path(a.models or DEMO_DIR) / DEMO_FILES["base_distilled" if a.fast else "base"]
        scenes = parse_story(text, fps=read_stage_config(base_file).fps, default_seconds=a.seconds)  # before any model loads
        cascade = load_demo_cascade(a.models, fast=a.fast, device=device, dtype=dtype)
    _sr_consistency(cascade, a)
    base_fps = cascade.base_fps
    out_fps = base_fps if a.base_only else output_fps(cascade.tsr.config, base_fps)
    total = sum(s.frames for s in scenes)
    print(f"{len(scenes)} scenes, {total} base frames = {total / base_fps:.1f} s at {out_fps:g} fps")
    bar = tqdm(total=round(total * out_fps / base_fps), unit="frame", desc="story")
    t0 = time.time()
    with VideoWriter(a.output, out_fps) as writer:

        def sink(frames, scene):
            check_stop()
            writer.write(video_to_frames(frames))
            bar.update(frames.shape[2])

        r = run_story(
            scenes,
            base_frames=None
            if cascade.phenaki is None
            else story_frames(cascade.phenaki, scenes, cascade.encoder.encode, phenaki_opts),
            base=cascade.base,
            encode=cascade.encoder.encode,
            tsr=None if a.base_only else cascade.tsr,
            ssr=None if a.base_only else cascade.ssr,
            options=cascade.options,
            story=opts,
            sink=sink,
            seed=a.seed,
        )
        check_stop()  # never finish (and replace an existing file) after Ctrl-C
    bar.close()
    print(f"wrote {a.output}: {writer.frames_written} frames in {time.time() - t0:.0f}s")
    if a.report:
        Path(a.report).write_text(json.dumps({**r, "scenes": [s.prompt for s in scenes], "seconds": time.time() - t0}, indent=1))
    return 0


_STORY_SUFFIXES = (".txt", ".story", ".md", ".json", ".csv", ".text")


def story_text(arg: str) -> str:
    """The story: the text of the file ``arg`` names, or ``arg`` itself. Something that looks like a
    path (a story-file extension, or a path separator without spaces) but names no file is an
    error, not a one-scene story about a file name."""
    p = Path(arg)
    if p.is_dir():
        raise IsADirectoryError(f"{arg} is a folder; give a story file (one prompt per line) or the story text in quotes.")
    if p.is_file():
        try:
            return p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{arg} is not a UTF-8 text file (byte {e.start}: {e.reason}); a story is plain text, one prompt per line."
            ) from None
    looks_like_path = p.suffix.lower() in _STORY_SUFFIXES or (("/" in arg or os.sep in arg) and not any(c.isspace() for c in arg))
    if looks_like_path:
        raise FileNotFoundError(f"No story file {arg}. Give an existing file, or the story text itself in quotes.")
    return arg


def add_story(sub) -> None:
    p = sub.add_parser("story", help="a sequence of prompts -> one long video through the demo cascade, streamed to the file")
    p.add_argument("story", help="a story file or text: one prompt per line (optional '| 4s'), keyframes, or a paragraph")
    p.add_argument("-o", "--output", default="story.mp4")
    p.add_argument("--fast", action="store_true", help="use the distilled students (base 2 steps, TSR 1, SSR 1)")
    p.add_argument("--seconds", type=float, default=4.0, help="default scene duration")
    p.add_argument("--context", type=int, default=4, help="finished frames each new window is conditioned on")
    p.add_argument(
        "--change-context",
        type=int,
        help="finished frames the first window of a new scene is conditioned on (default: the library's, "
        "StoryOptions.change_context; -1: --context); fewer let the new prompt change the object's shape and motion",
    )
    p.add_argument("--transition", choices=["cut", "blend"], default="cut")
    p.add_argument("--transition-frames", type=int, default=4)
    p.add_argument("--base-only", action="store_true", help="write the base frames only (no TSR / SSR)")
    p.add_argument("--seed", type=int, default=0, help="the story's seed: the same seed and story give the same video")
    p.add_argument("--models", help="folder with the stage files (default: the pack's models/imagen_video)")
    p.add_argument("--report", help="write timing per scene as JSON")
    _add_sr_consistency(p)
    _add_base_args(p)
    p.add_argument(
        "--phenaki-context",
        type=int,
        default=5,  # PhenakiOptions.context and the story node's context_frames (tested)
        help="Phenaki base: frames each new clip re-encodes and continues (1 + n * 2; default 5, as the story node)",
    )
    _add_device_args(p)
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
    if a.steps:
        d = stage.config.distillation
        if d is None:
            raise SystemExit(f"--steps lists a student's step counts; {a.src} is not a distilled student.")
        try:
            steps = tuple(int(s) for s in a.steps.split(","))
        except ValueError:
            raise SystemExit(f"--steps is a comma-separated list of step counts (e.g. 2,4); received {a.steps!r}.") from None
        if not set(d.steps) <= set(steps):
            raise SystemExit(f"--steps must keep the step counts {a.src} was distilled for ({d.steps}); received {steps}.")
        stage.config = stage.config.replace(distillation=dataclasses.replace(d, steps=tuple(sorted(set(steps)))))
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
    import pickle

    if Path(a.src).is_dir():
        raise IsADirectoryError(f"{a.src} is a folder; give the checkpoint file to convert.")
    import warnings

    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols: the outcome is what counts
            warnings.simplefilter("ignore")
            sd = torch.load(a.src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(
            f"{a.src} holds Python objects besides tensors, and unpickling them could run code, so it is refused. "
            "Save only its state_dict (a dict of tensors) with torch.save and convert that."
        ) from None
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
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
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
    p.add_argument(
        "--steps",
        help="a student: the step counts it supports, e.g. 2,4 (its own plus those you measured it at; it refuses the others)",
    )
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
    previous = _install_stop_handler()
    try:
        return a.fn(a)
    except KeyboardInterrupt:
        if a.debug:
            raise
        print("interrupted: stopped at your request (what was finished is kept)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - one clear line per error; --debug shows the traceback
        if a.debug:
            raise
        code, kind = classify_error(e)
        print(f"{kind}: {first_line(e)}", file=sys.stderr)
        if code == EXIT_INTERNAL:
            print("(this looks like a bug: rerun with --debug for the traceback and report it)", file=sys.stderr)
        return code
    finally:
        if previous is not None:
            import signal

            signal.signal(signal.SIGINT, previous)


_EXTRA_COMMANDS: list = []

# Ctrl-C is sticky: Python raises KeyboardInterrupt wherever the main thread is, and when that is a
# finalizer (a tensor or a PyAV frame being freed) the exception is printed and dropped. The flag
# makes the next check (every story window, and before a file is finished) stop the run anyway.
_STOP = {"requested": False}


def _on_sigint(signum, frame):
    _STOP["requested"] = True
    raise KeyboardInterrupt


def _install_stop_handler():
    """Install the sticky Ctrl-C handler; returns the previous handler (None off the main thread)."""
    import signal
    import threading

    _STOP["requested"] = False
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, _on_sigint)


def check_stop() -> None:
    if _STOP["requested"]:
        raise KeyboardInterrupt


EXIT_USER, EXIT_RESOURCES, EXIT_INTERNAL, EXIT_INTERRUPTED = 2, 3, 1, 130


def classify_error(e: BaseException) -> tuple[int, str]:
    """``(exit code, label)``: 2 for a user error (bad value, missing or wrong file), 3 for a lack of
    memory or disk, 1 for anything else (a bug)."""
    import errno
    import pickle

    import torch

    if isinstance(e, (MemoryError, torch.OutOfMemoryError)) or (isinstance(e, OSError) and e.errno == errno.ENOSPC):
        return EXIT_RESOURCES, "not enough resources"
    if isinstance(
        e, (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, pickle.UnpicklingError)
    ):
        return EXIT_USER, "error"
    if type(e) is OSError and e.errno is None:  # the disk-space check of cascade.checks
        return EXIT_RESOURCES, "not enough resources"
    if isinstance(e, OSError):
        return EXIT_USER, "error"
    return EXIT_INTERNAL, f"internal error ({type(e).__name__})"


def first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]
