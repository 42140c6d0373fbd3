"""Training any stage (base, SSR, TSR) under Hugging Face ``accelerate``: CPU, one GPU, or many.

``python -m cascade train --stage base|ssr|tsr ...`` (see ``cascade.cli``). The same code runs
single-process or under ``accelerate launch`` / ``torchrun`` (DDP; gloo on CPUs).

* data: each stage derives its pairs from the same source clips by antialiased resizing (space)
  and frame skipping (time); packed images share batches with videos (temporal layers masked);
* v-MSE (optionally min-SNR weighted), classifier-free-guidance text dropout, noise conditioning
  augmentation, EMA, gradient clipping, learning-rate warm-up, a log of loss by noise level,
  sample videos at intervals;
* resumable: ``state.safetensors`` (weights, EMA, optimizer, step) is written atomically; the
  random streams are functions of ``(seed, rank, step)``, so a resumed run continues exactly as an
  uninterrupted one would. ``stage.safetensors`` is the exported (EMA) stage file.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from .checkpoint import atomic_save_safetensors, check_safetensors_file, read_stage_config, remove_stale_temporaries
from .config import StageConfig
from .diffusion import augment_condition, sample_aug_logsnr, v_loss
from .frames import frames_to_video, video_to_frames
from .roles import get_role
from .stage import Stage
from .text import TextEmbedding, load_text_encoder
from .unet import VideoUNet

__all__ = ["TrainConfig", "Trainer", "build_batch", "conditioning_for", "flatten_captions"]

log = logging.getLogger(__name__)
STATE_FORMAT = "imagen-video-train-state"
_LOSS_BINS = np.linspace(-20, 20, 9)


def setting(default, help: str, **meta):
    """A configuration field with its command-line help (the CLI flags are generated from these)."""
    if isinstance(default, (list, dict, tuple)) and not isinstance(default, tuple):
        return field(default_factory=lambda: default, metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@dataclass(kw_only=True)
class RunConfig:
    """What training and distillation share: the data, the batch and the optimiser with its schedule."""

    data: str = setting("shapes", "'shapes' (procedural, default) or a folder of captioned videos")
    images: str | None = setting(None, "a folder of captioned images for joint image-video training")
    batch: int = setting(8, "items per batch (per process)")
    lr: float = setting(3e-4, "learning rate after warm-up")
    warmup: int = setting(200, "linear warm-up steps")
    lr_decay: str = setting(
        "constant",
        "after warm-up: constant, cosine (to 0 at the last step) or linear (to 0 at the last step)",
        choices=("constant", "cosine", "linear"),
    )
    weight_decay: float = setting(0.0, "AdamW weight decay")
    adam_beta2: float = setting(0.99, "AdamW beta2")
    grad_clip: float = setting(1.0, "gradient-norm clipping (0: off)")
    frame_skip: int | None = setting(
        None, "source frames per training frame (default: the data's frame rate over the stage's, shapes: base 2, SR 1)"
    )
    clip_frames: int = setting(0, "frames per training item (0: the stage's native frame count)")
    crop: int = setting(0, "SR stages: train on random spatial crops of this output size (0: whole frames)")
    image_fraction: float = setting(0.0, "fraction of each batch that is packed still images")
    looks: float = setting(0.0, "shapes data: fraction of clips with a random background and object colour")
    shape_mix: tuple[float, ...] = setting(
        (), "shapes data: relative frequency of circle,square,triangle, e.g. 1,2,1 (default: every combination equally often)"
    )
    seed: int = setting(0, "seed of the data and noise streams")
    mixed_precision: str = setting("no", "accelerate mixed precision", choices=("no", "fp16", "bf16"))
    text_encoder: str = setting("minilm", "'minilm' (default), a HF folder or a T5 .safetensors (with a tokenizer next to it)")
    log_every: int = setting(20, "steps between log lines")
    time_limit: float = setting(
        0.0,
        "minutes after which the run saves and stops, wherever it is (0: no limit); distillation shares them out "
        "over its rounds, each annealed to its end",
    )
    data_workers: int = setting(0, "processes that build the batches ahead of the training step (0: the training process)")

    def check_run(self) -> None:
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1; received batch={self.batch}.")
        if not (self.time_limit >= 0 and math.isfinite(self.time_limit)) or self.data_workers < 0:
            raise ValueError(
                f"Need time_limit >= 0 (minutes; 0: none) and data_workers >= 0; received {self.time_limit}, {self.data_workers}."
            )
        if not 0 <= self.image_fraction < 1:
            raise ValueError("image_fraction must be in [0, 1).")
        if self.lr_decay not in ("constant", "cosine", "linear"):
            raise ValueError(f"lr_decay must be 'constant', 'cosine' or 'linear'; received {self.lr_decay!r}.")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be no, fp16 or bf16; received {self.mixed_precision!r}.")
        if not (self.lr > 0 and math.isfinite(self.lr)) or self.warmup < 0 or not 0 <= self.adam_beta2 < 1:
            raise ValueError(
                f"Need lr > 0, warmup >= 0 and 0 <= adam_beta2 < 1; received {self.lr}, {self.warmup}, {self.adam_beta2}."
            )
        if self.frame_skip is not None and self.frame_skip < 1:
            raise ValueError(f"frame_skip must be >= 1; received {self.frame_skip}.")


def default_frame_skip(stage: StageConfig, data: str) -> int:
    """Source frames per training frame so that clips play at the stage's frame rate (see
    :func:`frame_skip_for`)."""
    return frame_skip_for(stage.fps, data)


def frame_skip_for(fps: float, data: str) -> int:
    """Source frames per frame of a clip at ``fps``: the shapes renderer's reference rate over
    ``fps`` (base at 4 fps: 2; SR stages at 8 fps: 1); 1 for video folders (their clips are taken
    at the files' own rate)."""
    if data.startswith("shapes"):
        from .data.shapes import REFERENCE_FPS

        return max(1, round(REFERENCE_FPS / fps))
    return 1


@dataclass(kw_only=True)
class TrainConfig(RunConfig):
    stage: StageConfig
    out: str = setting("runs/stage", "output folder (state.safetensors, stage.safetensors, log.jsonl, samples/)")
    steps: int = setting(1000, "train up to this step (a resumed run continues to it)")
    ema_decay: float = setting(0.999, "EMA decay of the exported weights")
    min_snr_gamma: float | None = setting(None, "min-SNR-gamma loss weighting (default: plain v-MSE, the paper)")
    text_dropout: float = setting(0.1, "probability of dropping the text (classifier-free guidance)")
    aug_t_max: float = setting(0.5, "noise conditioning augmentation: largest level (time of the cosine)")
    aug_p_clean: float = setting(0.1, "noise conditioning augmentation: probability of a clean condition")
    continuation_mix: tuple[float, float, float, float] = setting(
        (0.5, 0.3, 0.1, 0.1), "base with continuation: fractions none,prefix,first+last,sparse (e.g. 0.75,0.15,0.05,0.05)"
    )
    max_known: int = setting(8, "base with continuation: most known frames of a prefix item")
    tsr_interpolate_fraction: float = setting(0.5, "TSR: fraction of items in the (N-1)*m+1 frame convention")
    checkpoint_every: int = setting(200, "steps between resumable checkpoints (0: only at the end)")
    sample_every: int = setting(0, "steps between sample GIFs (0: never)")
    binding_every: int = setting(0, "base: log the fast text-binding diagnostic (z of each word, log-SNR -8..-5) every N steps")
    grad_checkpointing: bool = setting(False, "recompute activations in the backward pass (less memory)")
    init_from: str | None = setting(None, "start a new run from the weights of this stage file (same role and network)")
    sample_prompts: tuple[str, ...] = setting(
        ("a red circle moving right quickly", "a blue square moving up slowly", "a yellow triangle moving left quickly"),
        "prompts of the sample GIFs",
        cli=False,
    )

    def __post_init__(self) -> None:
        s = self.stage
        self.check_run()
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0; received steps={self.steps}.")
        if not 0 <= self.text_dropout < 1:
            raise ValueError("text_dropout must be in [0, 1).")
        if self.frame_skip is None:
            self.frame_skip = default_frame_skip(s, self.data)
        role = get_role(s.role)
        role.check_training(self)
        if self.crop:
            m = role.crop_multiple(s)
            if self.crop > min(s.height, s.width) or self.crop % m:
                raise ValueError(f"crop must be <= {min(s.height, s.width)} and a multiple of {m}; received {self.crop}.")
        if abs(sum(self.continuation_mix) - 1) > 1e-6:
            raise ValueError(f"continuation_mix must sum to 1; received {self.continuation_mix}.")
        if self.binding_every and (role.takes_video or not s.text_dim):
            raise ValueError("binding_every (the text-binding diagnostic) is for base stages with text conditioning.")

    def to_json(self) -> str:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["stage"] = self.stage.to_dict()
        return json.dumps(d, sort_keys=True, default=list)

    @classmethod
    def from_json(cls, s: str) -> TrainConfig:
        d = json.loads(s)
        d["stage"] = StageConfig.from_dict(d["stage"])
        d["continuation_mix"] = tuple(d["continuation_mix"])
        d["shape_mix"] = tuple(d.get("shape_mix", ()))
        d["sample_prompts"] = tuple(d["sample_prompts"])
        return cls(**d)


# --- batches ------------------------------------------------------------------------------------


def build_batch(cfg: TrainConfig, source, index0: int, batch: int, image_source=None) -> dict:
    """Items ``index0 .. index0 + batch - 1``: tensors for the stage plus their captions.

    Returns ``x`` (B, 3, T, H, W) targets, the role's inputs (``cascade.roles``: ``low`` for SR
    stages, ``known`` / ``known_mask`` for a base with continuation), ``video_mask`` (B,) and
    ``captions`` (B lists of T for packed images, else B strings)."""
    s = cfg.stage
    role = get_role(s.role)
    frames = cfg.clip_frames or s.frames
    rng = np.random.default_rng([cfg.seed, index0, 99])
    n_img = int(round(batch * cfg.image_fraction))
    image_source = image_source or source
    xs, captions, vmask = [], [], []
    for i in range(batch):
        idx = index0 + i
        if i >= batch - n_img:  # packed independent images: T stills with T captions
            ims = [image_source.image(idx * frames + j, size=s.width) for j in range(frames)]
            video = torch.stack([frames_to_video(im[None]) for im, _ in ims], dim=1)[:, :, 0]
            captions.append([c for _, c in ims])
            vmask.append(0.0)
        else:
            u8, cap = role.training_clip(cfg, source, idx, frames, rng)
            video = frames_to_video(u8)
            captions.append(cap)
            vmask.append(1.0)
        if cfg.crop:
            top, left = (int(v) for v in rng.integers(0, s.width - cfg.crop + 1, size=2))
            video = video[..., top : top + cfg.crop, left : left + cfg.crop]
        xs.append(video)
    x = torch.stack(xs)
    return {"x": x, "video_mask": torch.tensor(vmask), "captions": captions, **role.training_inputs(cfg, x, rng)}


def _batch_at(cfg: TrainConfig, source, image_source, world: int, rank: int, step: int) -> dict:
    return build_batch(cfg, source, (step * world + rank) * cfg.batch, cfg.batch, image_source)


def flatten_captions(captions: list) -> list[str]:
    """Batch captions -> one caption per text row: packed-image items carry a list (one caption per
    frame), so when any item does, every video item's caption is repeated per frame (B*T rows)."""
    if not any(isinstance(c, list) for c in captions):
        return list(captions)
    t = len(next(c for c in captions if isinstance(c, list)))
    return [p for c in captions for p in (c if isinstance(c, list) else [c] * t)]


class _StepBatches(torch.utils.data.Dataset):
    """Batch ``start + i`` of a deterministic step -> batch function (for worker processes)."""

    def __init__(self, make, start: int, stop: int):
        self.make, self.start, self.stop = make, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, i: int):
        return self.make(self.start + i)


def step_batches(make, start: int, stop: int, workers: int = 0):
    """The batches ``make(step)`` of steps ``start .. stop - 1`` in order: built in this process, or
    ahead of the training step by ``workers`` processes. A batch depends only on its step, so both
    give the same batches (and a resumed run the ones it would have had)."""
    if not workers:
        return (make(i) for i in range(start, stop))
    import multiprocessing

    ctx = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
    loader = torch.utils.data.DataLoader(
        _StepBatches(make, start, stop), batch_size=None, num_workers=workers, prefetch_factor=4, multiprocessing_context=ctx
    )
    return iter(loader)


def training_loop(tr, target: int, logf, hooks=()) -> dict:
    """The loop every trainer runs up to step ``target``: ``tr.train_step`` on batches built ahead
    (``tr._batch_maker``), a log line every ``log_every`` steps, a checkpoint every
    ``checkpoint_every``, ``hooks`` (``(every, fn)``: ``fn()`` on the main process every ``every``
    steps; 0: never), and a stop (logged, then saved by the caller) at ``time_limit``. Returns the
    last log record."""
    cfg = tr.cfg
    t0, recs, last = time.time(), [], {}
    stop_at = deadline(cfg.time_limit)
    batches = step_batches(tr._batch_maker(), tr.step, target, cfg.data_workers)
    try:
        while tr.step < target:
            recs.append(tr.train_step(next(batches)))
            out_of_time = time.monotonic() >= stop_at
            if out_of_time or tr.step % cfg.log_every == 0 or tr.step == target:
                last = tr._log(logf, recs, time.time() - t0)
                recs, t0 = [], time.time()
            if out_of_time:
                log.info("time limit of %g min reached at step %d of %d: saving and stopping", cfg.time_limit, tr.step, target)
                break
            if cfg.checkpoint_every and tr.step % cfg.checkpoint_every == 0:
                tr.save()
            for every, fn in hooks:
                if every and tr.step % every == 0 and tr.acc.is_main_process:
                    fn()
    finally:
        del batches  # ends the data workers
    return last


def deadline(minutes: float) -> float:
    """``time.monotonic()`` at which a run of ``minutes`` stops (``inf`` for 0: no limit)."""
    return time.monotonic() + minutes * 60 if minutes else math.inf


def conditioning_for(stage: StageConfig, batch: dict, aug_logsnr: torch.Tensor, generator: torch.Generator) -> dict:
    """Network keyword arguments (``cond``, ``aug_logsnr``) for a batch, with noise augmentation
    drawn from ``generator`` (the role builds them, as it does at sampling time)."""
    return get_role(stage.role).condition(
        stage, batch, aug_logsnr, lambda video: augment_condition(video, aug_logsnr, generator=generator)
    )


# --- the optimisation step ------------------------------------------------------------------------


class Optimiser:
    """The one optimisation step of training and distillation: AdamW, a linear warm-up then a
    constant, cosine or linear schedule over ``total`` steps, gradient clipping, and a skipped
    update on a non-finite loss, under an ``accelerate`` Accelerator (CPU, GPUs, DDP)."""

    def __init__(self, cfg: RunConfig, net: torch.nn.Module, accelerator, total: int):
        self.cfg, self.acc, self.total = cfg, accelerator, total
        self.model = net
        self.opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, betas=(0.9, cfg.adam_beta2), weight_decay=cfg.weight_decay)

    def prepare(self) -> None:
        """Hand the network and optimiser to accelerate (after any state was loaded into them)."""
        self.model, self.opt = self.acc.prepare(self.model, self.opt)

    def learning_rate(self, step: int) -> float:
        cfg = self.cfg
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        done = min(1.0, (step - cfg.warmup) / max(1, self.total - cfg.warmup))
        if cfg.lr_decay == "cosine":
            return cfg.lr * 0.5 * (1 + math.cos(math.pi * done))
        if cfg.lr_decay == "linear":
            return cfg.lr * (1 - done)
        return cfg.lr

    def step(self, loss: torch.Tensor, step: int) -> bool:
        """Backward, clip, update at the scheduled rate; ``False`` (no update) for a non-finite loss."""
        self.acc.backward(loss)
        if not torch.isfinite(loss):
            self.opt.zero_grad(set_to_none=True)
            return False
        if self.cfg.grad_clip:
            self.acc.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        lr = self.learning_rate(step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return True


# --- what every trainer shares -------------------------------------------------------------------


@torch.no_grad()
def update_ema(ema: torch.nn.Module, net: torch.nn.Module, decay: float, step: int) -> None:
    """EMA of the weights, with the usual warm-up of the decay (``(1 + step) / (10 + step)``)."""
    d = min(decay, (1 + step) / (10 + step))
    for pe, p in zip(ema.parameters(), net.parameters()):
        pe.lerp_(p.detach().float(), 1 - d)


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    """The optimiser's state as ``optim.{param}.{name}`` tensors, and its param groups as JSON."""
    osd = opt.state_dict()
    tensors = {f"optim.{idx}.{name}": torch.as_tensor(v) for idx, st in osd["state"].items() for name, v in st.items()}
    return tensors, json.dumps(osd["param_groups"])


def load_optimizer_tensors(opt: torch.optim.Optimizer, sd: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict = {"state": {}, "param_groups": json.loads(meta["param_groups"])}
    for k, v in sd.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            state["state"].setdefault(int(idx), {})[name] = v
    opt.load_state_dict(state)


def trim_log(path: Path, step: int) -> None:
    """A resumed run continues its log: records of steps after the resumed state (written between
    the last checkpoint and the interruption) are dropped, so no step appears twice."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    keep = []
    for line in lines:
        try:
            s = json.loads(line).get("step", 0)
        except (json.JSONDecodeError, AttributeError):
            continue  # a line cut by the interruption
        if s <= step:
            keep.append(line)
    if len(keep) != len(lines):
        path.write_text("".join(x + "\n" for x in keep))
        log.info("%s: dropped %d record(s) after step %d (the resumed state)", path.name, len(lines) - len(keep), step)


# --- the trainer --------------------------------------------------------------------------------


class Trainer:
    def __init__(self, cfg: TrainConfig, *, accelerator=None, encoder=None):
        Accelerator = require_accelerate()

        self.cfg = cfg
        self.acc = accelerator or Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
        self.out = Path(cfg.out)
        self.encoder = encoder or load_text_encoder(cfg.text_encoder, device=self.acc.device)
        s = cfg.stage
        if s.text_dim and self.encoder.width != s.text_dim:
            raise ValueError(
                f"The stage is configured for {s.text_dim}-wide text but the text encoder {self.encoder.encoder_id} is "
                f"{self.encoder.width} wide: set text_dim={self.encoder.width} in the stage config."
            )
        from .data.sources import ImageFolderSource, make_source

        min_frames = ((cfg.clip_frames or s.frames) - 1) * cfg.frame_skip + 1
        self.source = make_source(cfg.data, seed=cfg.seed, min_frames=min_frames, looks=cfg.looks, shape_mix=cfg.shape_mix)
        self.image_source = ImageFolderSource(cfg.images, seed=cfg.seed) if cfg.images else None
        torch.manual_seed(cfg.seed)
        self.net = VideoUNet(s.unet)
        self.net.gradient_checkpointing = cfg.grad_checkpointing
        self.ema = copy.deepcopy(self.net).requires_grad_(False).eval()
        self.optim = Optimiser(cfg, self.net, self.acc, cfg.steps)
        self.opt = self.optim.opt
        self.step = 0
        self._resume()
        if self.step == 0 and cfg.init_from:
            self._init_from(cfg.init_from)
        self._origin = self._origin_of(cfg.init_from) if cfg.init_from else ""  # a fine-tune's provenance, for its notes
        self.optim.prepare()
        self.model, self.opt = self.optim.model, self.optim.opt
        self.ema.to(self.acc.device)
        self._bins = np.zeros((2, len(_LOSS_BINS) - 1))

    # -- state ------------------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.out / "state.safetensors"

    def _resume(self) -> None:
        if not self.state_path.exists():
            return
        from safetensors.torch import load_file

        meta = check_safetensors_file(self.state_path).get("__metadata__", {})
        if meta.get("format") != STATE_FORMAT:
            raise ValueError(f"{self.state_path} is not a training state written by this trainer.")
        saved = TrainConfig.from_json(meta["train_config"])
        if saved.stage.unet != self.cfg.stage.unet or saved.stage.role != self.cfg.stage.role:
            raise ValueError(
                f"{self.state_path} was written for a different stage configuration; use a new --out folder "
                "or the same configuration to resume."
            )
        sd = load_file(str(self.state_path))
        self.net.load_state_dict({k[6:]: v for k, v in sd.items() if k.startswith("model.")})
        self.ema.load_state_dict({k[4:]: v for k, v in sd.items() if k.startswith("ema.")})
        load_optimizer_tensors(self.opt, sd, meta)
        self.step = int(meta["step"])
        log.info("resumed %s at step %d", self.state_path, self.step)

    def _init_from(self, path: str) -> None:
        """Start from the weights of a stage file of the same role and network (e.g. to train a
        released stage further, or on a new noise schedule)."""
        from .stage import load_stage

        src = load_stage(path)
        s = self.cfg.stage
        # the architectural additions a fine-tune may make: modules that start as no-ops (zero-initialised
        # outputs), a frame-phase embedding and an attention pooling of the text
        additions = {"frame_phase": "frame_emb.", "text_attn_pool": "attn_pool."}
        added = [pre for f, pre in additions.items() if getattr(s.unet, f) and not getattr(src.config.unet, f)]
        same = replace(src.config.unet, **{f: getattr(s.unet, f) for f in additions}) == s.unet
        if src.config.role != s.role or not same:
            raise ValueError(
                f"--init-from {path} is a {src.config.describe()} with a different network than the {s.role} stage being "
                "trained: it must have the same role and U-Net configuration (use --config with its configuration)."
            )
        if src.config.is_distilled:
            raise ValueError(f"--init-from {path} is a distilled student; start from the undistilled stage.")
        sd = src.net.state_dict()
        for pre in added:
            sd.update({k: v for k, v in self.net.state_dict().items() if k.startswith(pre)})
            log.info("adding %s* (zero-initialised output) to the weights of %s", pre, path)
        self.net.load_state_dict(sd)
        self.ema.load_state_dict(sd)
        log.info("initialised from %s (%s)", path, src.config.notes or src.config.name)

    @staticmethod
    def _origin_of(path: str) -> str:
        """``, initialised from NAME (its notes)``; read from the file's header, also when resuming."""
        try:
            c = read_stage_config(path)
            start = c.notes or c.name
        except (OSError, ValueError):
            start = "?"
        return f", initialised from {Path(path).name} ({start})"

    def save(self) -> None:
        if not self.acc.is_main_process:
            return
        net = self.acc.unwrap_model(self.model)
        tensors = {f"model.{k}": v for k, v in net.state_dict().items()}
        tensors.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        opt_tensors, param_groups = optimizer_tensors(self.opt)
        tensors.update(opt_tensors)
        meta = {
            "format": STATE_FORMAT,
            "step": str(self.step),
            "train_config": self.cfg.to_json(),
            "param_groups": param_groups,
        }
        atomic_save_safetensors(tensors, self.state_path, meta)
        self.export(self.out / "stage.safetensors")

    def export(self, path, dtype: torch.dtype | None = None) -> Path:
        notes = f"trained {self.step} steps on {self.cfg.data}{self._origin}"
        Stage(self.cfg.stage.replace(notes=notes), self.ema).save(path, dtype=dtype)
        return Path(path)

    # -- one step ---------------------------------------------------------------------------------

    def _generator(self, step: int, salt: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.acc.process_index * 7919 + step * 31 + salt)

    def encode(self, captions) -> TextEmbedding:
        return self.encoder.encode(flatten_captions(captions))

    def make_batch(self, step: int) -> dict:
        return self._batch_maker()(step)

    def _batch_maker(self):
        """``step -> batch`` without the trainer (what data worker processes run)."""
        world, rank = self.acc.num_processes, self.acc.process_index
        return functools.partial(_batch_at, self.cfg, self.source, self.image_source, world, rank)

    def loss(self, batch: dict, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, s, dev = self.cfg, self.cfg.stage, self.acc.device
        g = self._generator(step)
        x = batch["x"]
        b = x.shape[0]
        text = self.encode(batch["captions"]) if s.text_dim else None
        if text is not None and cfg.text_dropout:
            rows = torch.rand(b, generator=g) < cfg.text_dropout
            if text.batch != b:
                rows = rows.repeat_interleave(text.batch // b)
            text = TextEmbedding(text.tokens, text.mask & ~rows[:, None], text.pooled * (~rows[:, None]).float(), text.encoder_id)
        kw: dict = {}
        if s.unet.aug_cond:
            lam = sample_aug_logsnr(b, s.schedule, generator=g, t_max=cfg.aug_t_max, p_clean=cfg.aug_p_clean)
            kw = conditioning_for(s, batch, lam, g)
        kw = {k: v.to(dev) for k, v in kw.items()}
        vm = batch["video_mask"].to(dev)
        with self.acc.autocast():
            per_sample, logsnr = v_loss(
                self.model,
                x.to(dev),
                schedule=s.schedule,
                generator=g,
                min_snr_gamma=cfg.min_snr_gamma,
                text=None if text is None else text.to(dev),
                video_mask=vm,
                **kw,
            )
        return per_sample, logsnr

    def train_step(self, batch: dict | None = None) -> float:
        """One optimisation step on ``batch`` (default: this step's batch, built here)."""
        cfg = self.cfg
        torch.manual_seed(self._generator(self.step, 1).initial_seed())  # dropout etc.
        batch = self.make_batch(self.step) if batch is None else batch
        self.model.train()
        try:
            per_sample, logsnr = self.loss(batch, self.step)
            loss = per_sample.mean()
            updated = self.optim.step(loss, self.step)
        except torch.OutOfMemoryError as e:
            raise MemoryError(
                f"Out of memory at batch {cfg.batch}: lower --batch, add --grad-checkpointing, use --mixed-precision bf16, "
                f"or train on fewer frames (--clip-frames) / smaller crops (--crop). ({e})"
            ) from None
        if updated:
            self._update_ema()
        else:
            log.warning("step %d: non-finite loss, skipping the update (logsnr %s)", self.step, logsnr.tolist())
        idx = np.clip(np.digitize(logsnr.detach().cpu().numpy(), _LOSS_BINS) - 1, 0, len(_LOSS_BINS) - 2)
        np.add.at(self._bins[0], idx, per_sample.detach().float().cpu().numpy())
        np.add.at(self._bins[1], idx, 1)
        self.step += 1
        return float(loss.detach())

    def learning_rate(self, step: int) -> float:
        """Linear warm-up, then constant or a cosine / linear decay that reaches 0 at ``cfg.steps``."""
        return self.optim.learning_rate(step)

    def _update_ema(self) -> None:
        update_ema(self.ema, self.acc.unwrap_model(self.model), self.cfg.ema_decay, self.step)

    # -- the loop ---------------------------------------------------------------------------------

    def run(self, steps: int | None = None) -> dict:
        cfg = self.cfg
        target = cfg.steps if steps is None else steps
        self.out.mkdir(parents=True, exist_ok=True)
        if self.acc.is_main_process:
            for name in ("state.safetensors", "stage.safetensors"):  # left by a save that was killed
                remove_stale_temporaries(self.out / name)
            self._trim_log()
        logf = open(self.out / "log.jsonl", "a") if self.acc.is_main_process else None  # noqa: SIM115 (closed below)
        try:
            hooks = [(cfg.sample_every, self.write_samples), (cfg.binding_every, lambda: self.log_binding(logf))]
            last = training_loop(self, target, logf, hooks)
        finally:
            if logf:
                logf.close()
            skipped = getattr(self.source, "skipped", None)
            if skipped:
                total = len(getattr(self.source, "items", [])) or "?"
                log.warning(
                    "%d of %s videos in %s were skipped (unreadable or too short), e.g. %s: %s",
                    len(skipped),
                    total,
                    cfg.data,
                    *next(iter(skipped.items())),
                )
        self.save()
        self.acc.wait_for_everyone()
        return last

    def _trim_log(self) -> None:
        trim_log(self.out / "log.jsonl", self.step)

    def _log(self, logf, losses, seconds) -> dict:
        by_level = {
            f"{lo:+.0f}..{hi:+.0f}": round(float(s / n), 5)
            for lo, hi, s, n in zip(_LOSS_BINS[:-1], _LOSS_BINS[1:], *self._bins)
            if n
        }
        rec = {
            "step": self.step,
            "loss": round(float(np.mean(losses)), 5) if losses else None,
            "lr": self.opt.param_groups[0]["lr"],
            "sec_per_step": round(seconds / max(1, len(losses)), 3),
            "loss_by_logsnr": by_level,
        }
        self._bins[:] = 0
        if logf:
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
            log.info("step %d loss %.4f (%.2fs/step)", self.step, rec["loss"] or float("nan"), rec["sec_per_step"])
        return rec

    def log_binding(self, logf) -> dict:
        """The fast text-binding diagnostic of the EMA weights (8 fixed clips, log-SNR -8 ... -5),
        appended to the log as ``{"step", "binding": {attribute: {mean, se, z}}}``."""
        from .binding import FAST_LEVELS, band_summary, stage_binding

        t0 = time.time()
        table = stage_binding(
            Stage(self.cfg.stage, self.ema), self.encoder, n=8, levels=FAST_LEVELS, frame_step=self.cfg.frame_skip
        )
        band = {k: {m: round(v[m], 6) for m in ("mean", "se", "z")} for k, v in band_summary(table).items()}
        rec = {"step": self.step, "binding": band, "binding_seconds": round(time.time() - t0, 1)}
        if logf:
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
        log.info("step %d text binding (z, -8..-5): %s", self.step, {k: round(v["z"], 1) for k, v in band.items()})
        return rec

    @torch.no_grad()
    def write_samples(self) -> Path | None:
        """A sample grid from the EMA weights (GIF) at the current step."""
        from .pipeline import SamplingOptions, generate, upsample
        from .run import DEFAULT_OPTIONS
        from .video_io import write_gif

        s = self.cfg.stage
        stage = Stage(s, self.ema)
        role = get_role(s.role)
        # the demo cascade's settings for this role (guidance, SR projection and noise augmentation),
        # so the GIFs show what the stage will make when it ships; a registered role of one's own
        # gets the library defaults
        default = DEFAULT_OPTIONS.get(s.role, SamplingOptions(guidance=0.0))
        opts = replace(default, steps=16, seed=0)
        prompts = list(self.cfg.sample_prompts)
        text = self.encoder.encode(prompts).to(self.acc.device) if s.text_dim else None
        if not role.takes_video:
            video = generate(stage, text, options=opts)
        else:
            batch = build_batch(
                self.cfg.__class__(**{**asdict(self.cfg), "stage": s, "image_fraction": 0.0}), self.source, 10**9, len(prompts)
            )
            text = self.encoder.encode([c if isinstance(c, str) else c[0] for c in batch["captions"]])
            video = upsample(stage, batch["low"], text, options=opts)
        grid = torch.cat(list(video.clamp(-1, 1)), dim=-1)  # side by side: (3, T, H, W*B)
        frames = video_to_frames(grid).cpu()
        return write_gif(self.out / "samples" / f"step_{self.step:07d}.gif", frames, fps=s.fps, scale=2)


def overfit_one_batch(cfg: TrainConfig, steps: int = 150, batch: int = 2, encoder=None) -> dict:
    """Sanity mode: train repeatedly on ONE batch and report a fixed probe loss (fixed noise and
    noise levels) before and after. A stage that can learn drives it down within a minute."""
    cfg = TrainConfig(
        **{
            **{f.name: getattr(cfg, f.name) for f in fields(cfg)},
            "batch": batch,
            "checkpoint_every": 0,
            "sample_every": 0,
            "warmup": 10,
            "text_dropout": 0.0,
            "ema_decay": 0.0,
        }
    )
    tr = Trainer(cfg, encoder=encoder)
    fixed = tr.make_batch(0)
    tr.make_batch = lambda step: fixed
    t_probe = torch.linspace(0.15, 0.85, batch)

    def probe() -> float:
        tr.model.eval()
        g = torch.Generator().manual_seed(12345)
        s = cfg.stage
        text = tr.encode(fixed["captions"]).to(tr.acc.device) if s.text_dim else None
        kw = {}
        if s.unet.aug_cond:
            kw = conditioning_for(s, fixed, torch.full((batch,), s.schedule.unshifted.logsnr(0.2).item()), g)
        with torch.no_grad():
            per, _ = v_loss(
                tr.model, fixed["x"], schedule=s.schedule, generator=g, t=t_probe, text=text, video_mask=fixed["video_mask"], **kw
            )
        return float(per.mean())

    before, t0 = probe(), time.time()
    for _ in range(steps):
        tr.train_step()
    after = probe()
    return {
        "probe_loss_before": before,
        "probe_loss_after": after,
        "ratio": before / max(after, 1e-12),
        "steps": steps,
        "seconds": time.time() - t0,
    }


def require_accelerate():
    """accelerate's ``Accelerator`` (training only: not a runtime requirement of the pack)."""
    try:
        from accelerate import Accelerator
    except ImportError:
        raise ImportError(
            "Training and distillation need Hugging Face accelerate: pip install -r requirements-train.txt "
            "(or pip install accelerate)."
        ) from None
    return Accelerator


def configure_threads() -> None:
    """Explicit CPU thread count (imagen-pytorch #302: an unbounded count hangs machines)."""
    n = int(os.environ.get("OMP_NUM_THREADS", "0")) or (os.cpu_count() or 1)
    torch.set_num_threads(max(1, n))
