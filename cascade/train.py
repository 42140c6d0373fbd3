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
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from .checkpoint import atomic_save_safetensors, check_safetensors_file, read_stage_config
from .conditioning import resize_video, tsr_condition
from .config import StageConfig
from .diffusion import augment_condition, sample_aug_logsnr, v_loss
from .stage import Stage
from .text import TextEmbedding, load_text_encoder
from .unet import VideoUNet

__all__ = ["TrainConfig", "Trainer", "build_batch", "conditioning_for", "flatten_captions"]

log = logging.getLogger(__name__)
STATE_FORMAT = "imagen-video-train-state"
_LOSS_BINS = np.linspace(-20, 20, 9)


@dataclass
class TrainConfig:
    stage: StageConfig
    data: str = "shapes"
    images: str | None = None
    out: str = "runs/stage"
    steps: int = 1000
    batch: int = 8
    lr: float = 3e-4
    warmup: int = 200
    lr_decay: str = "constant"  # after warm-up: "constant", or "cosine" down to 0 at `steps`
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    min_snr_gamma: float | None = None  # None: plain v-MSE (the paper); e.g. 5.0 for min-SNR weighting
    text_dropout: float = 0.1
    image_fraction: float = 0.0
    frame_skip: int = 1
    clip_frames: int = 0  # frames per training item; 0 = the stage's native frame count
    crop: int = 0  # SSR / TSR: train on random spatial crops of this output size; 0 = whole frames
    aug_t_max: float = 0.5
    aug_p_clean: float = 0.1
    continuation_mix: tuple[float, float, float, float] = (0.5, 0.3, 0.1, 0.1)  # none, prefix, first+last, sparse
    max_known: int = 8
    tsr_interpolate_fraction: float = 0.5
    checkpoint_every: int = 200
    sample_every: int = 0
    binding_every: int = 0  # base: log the fast text-binding diagnostic (cascade.binding) every N steps; 0 = never
    log_every: int = 20
    seed: int = 0
    mixed_precision: str = "no"
    text_encoder: str = "minilm"
    grad_checkpointing: bool = False
    init_from: str | None = None  # a stage file whose weights start a new run (fine-tuning); ignored when resuming
    sample_prompts: tuple[str, ...] = field(
        default=("a red circle moving right quickly", "a blue square moving up slowly", "a yellow triangle moving left quickly")
    )

    def __post_init__(self) -> None:
        s = self.stage
        if self.batch < 1 or self.steps < 0:
            raise ValueError(f"batch must be >= 1 and steps >= 0; received batch={self.batch}, steps={self.steps}.")
        if not 0 <= self.image_fraction < 1 or not 0 <= self.text_dropout < 1:
            raise ValueError("image_fraction and text_dropout must be in [0, 1).")
        if s.role == "tsr" and self.image_fraction:
            raise ValueError("A TSR stage cannot learn from still images: set image_fraction=0.")
        frames = self.clip_frames or s.frames
        if s.role == "tsr" and frames % s.temporal_factor:
            raise ValueError(f"TSR training clips need a multiple of the factor {s.temporal_factor} frames; received {frames}.")
        if self.crop:
            if s.role == "base":
                raise ValueError("crop is for SR stages (fully convolutional); a base stage trains on whole frames.")
            m = s.unet.size_multiple * (round(s.spatial_factor) if s.role == "ssr" else 1)
            if self.crop > min(s.height, s.width) or self.crop % m:
                raise ValueError(f"crop must be <= {min(s.height, s.width)} and a multiple of {m}; received {self.crop}.")
        if s.role == "ssr" and s.width / s.spatial_factor != int(s.width / s.spatial_factor):
            raise ValueError(f"The SSR output width {s.width} must be divisible by its factor {s.spatial_factor}.")
        if abs(sum(self.continuation_mix) - 1) > 1e-6:
            raise ValueError(f"continuation_mix must sum to 1; received {self.continuation_mix}.")
        if self.lr_decay not in ("constant", "cosine"):
            raise ValueError(f"lr_decay must be 'constant' or 'cosine'; received {self.lr_decay!r}.")
        if self.binding_every and (s.role != "base" or not s.text_dim):
            raise ValueError("binding_every (the text-binding diagnostic) is for base stages with text conditioning.")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be no, fp16 or bf16; received {self.mixed_precision!r}.")

    def to_json(self) -> str:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["stage"] = self.stage.to_dict()
        return json.dumps(d, sort_keys=True, default=list)

    @classmethod
    def from_json(cls, s: str) -> TrainConfig:
        d = json.loads(s)
        d["stage"] = StageConfig.from_dict(d["stage"])
        d["continuation_mix"] = tuple(d["continuation_mix"])
        d["sample_prompts"] = tuple(d["sample_prompts"])
        return cls(**d)


# --- batches ------------------------------------------------------------------------------------


def _to_video(u8: np.ndarray) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` -> float ``(3, T, H, W)`` in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(u8)).permute(3, 0, 1, 2).float() / 127.5 - 1.0


def _known_mask(rng: np.random.Generator, frames: int, mix, max_known: int) -> torch.Tensor:
    kind = rng.choice(4, p=np.asarray(mix, dtype=np.float64))
    m = torch.zeros(frames)
    if kind == 1:
        m[: int(rng.integers(1, min(max_known, frames - 1) + 1))] = 1
    elif kind == 2:
        m[0] = m[-1] = 1
    elif kind == 3:
        m[torch.from_numpy(rng.random(frames) < 0.25)] = 1
    return m


def build_batch(cfg: TrainConfig, source, index0: int, batch: int, image_source=None) -> dict:
    """Items ``index0 .. index0 + batch - 1``: tensors for the stage plus their captions.

    Returns ``x`` (B, 3, T, H, W) targets, ``cond`` / ``known_mask`` where the role has them,
    ``video_mask`` (B,), ``captions`` (B lists of T for packed images, else B strings)."""
    s = cfg.stage
    frames = cfg.clip_frames or s.frames
    rng = np.random.default_rng([cfg.seed, index0, 99])
    n_img = int(round(batch * cfg.image_fraction))
    image_source = image_source or source
    xs, captions, vmask = [], [], []
    for i in range(batch):
        idx = index0 + i
        if i >= batch - n_img:  # packed independent images: T stills with T captions
            ims = [image_source.image(idx * frames + j, size=s.width) for j in range(frames)]
            video = torch.stack([_to_video(im[None]) for im, _ in ims], dim=1)[:, :, 0]
            captions.append([c for _, c in ims])
            vmask.append(0.0)
        elif s.role == "tsr":
            interp = rng.random() < cfg.tsr_interpolate_fraction
            n = frames - (s.temporal_factor - 1) if interp else frames
            u8, cap = source.clip(idx, frames=n, size=s.width, frame_step=cfg.frame_skip)
            video = _to_video(u8)
            captions.append(cap)
            vmask.append(1.0)
            if interp:  # pad to the batch length by repeating the last frame (its loss is real data too)
                video = torch.cat([video, video[:, -1:].expand(-1, s.temporal_factor - 1, -1, -1)], dim=1)
        else:
            u8, cap = source.clip(idx, frames=frames, size=s.width, frame_step=cfg.frame_skip)
            video = _to_video(u8)
            captions.append(cap)
            vmask.append(1.0)
        if cfg.crop:
            top, left = (int(v) for v in rng.integers(0, s.width - cfg.crop + 1, size=2))
            video = video[..., top : top + cfg.crop, left : left + cfg.crop]
        xs.append(video)
    x = torch.stack(xs)
    out = {"x": x, "video_mask": torch.tensor(vmask), "captions": captions}
    if s.role == "ssr":
        low = resize_video(x, (round(x.shape[-2] / s.spatial_factor), round(x.shape[-1] / s.spatial_factor)))
        out["low"] = low
    elif s.role == "tsr":
        out["low"] = x[:, :, :: s.temporal_factor]
    elif s.continuation:
        out["known_mask"] = torch.stack([_known_mask(rng, x.shape[2], cfg.continuation_mix, cfg.max_known) for _ in range(batch)])
    return out


def flatten_captions(captions: list) -> list[str]:
    """Batch captions -> one caption per text row: packed-image items carry a list (one caption per
    frame), so when any item does, every video item's caption is repeated per frame (B*T rows)."""
    if not any(isinstance(c, list) for c in captions):
        return list(captions)
    t = len(next(c for c in captions if isinstance(c, list)))
    return [p for c in captions for p in (c if isinstance(c, list) else [c] * t)]


def conditioning_for(stage: StageConfig, batch: dict, aug_logsnr: torch.Tensor, generator: torch.Generator) -> dict:
    """Network keyword arguments (``cond``, ``aug_logsnr``) for a batch, with noise augmentation."""
    x = batch["x"]
    if stage.role == "ssr":
        up = resize_video(batch["low"], x.shape[-2:])
        return {"cond": augment_condition(up, aug_logsnr, generator=generator), "aug_logsnr": aug_logsnr}
    if stage.role == "tsr":
        low = augment_condition(batch["low"], aug_logsnr, generator=generator)
        return {"cond": tsr_condition(low, stage.temporal_factor, "imagen"), "aug_logsnr": aug_logsnr}
    if stage.continuation:
        from .conditioning import known_frames_condition

        known = augment_condition(x, aug_logsnr, generator=generator)
        return {"cond": known_frames_condition(known, batch["known_mask"]), "aug_logsnr": aug_logsnr}
    return {}


# --- the trainer --------------------------------------------------------------------------------


class Trainer:
    def __init__(self, cfg: TrainConfig, *, accelerator=None, encoder=None):
        from accelerate import Accelerator

        self.cfg = cfg
        self.acc = accelerator or Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
        self.out = Path(cfg.out)
        self.encoder = encoder or load_text_encoder(cfg.text_encoder, device="cpu")
        s = cfg.stage
        if s.text_dim and self.encoder.width != s.text_dim:
            raise ValueError(
                f"The stage is configured for {s.text_dim}-wide text but the text encoder {self.encoder.encoder_id} is "
                f"{self.encoder.width} wide: set text_dim={self.encoder.width} in the stage config."
            )
        from .data.sources import ImageFolderSource, make_source

        min_frames = ((cfg.clip_frames or s.frames) - 1) * cfg.frame_skip + 1
        self.source = make_source(cfg.data, seed=cfg.seed, min_frames=min_frames)
        self.image_source = ImageFolderSource(cfg.images, seed=cfg.seed) if cfg.images else None
        torch.manual_seed(cfg.seed)
        self.net = VideoUNet(s.unet)
        self.net.gradient_checkpointing = cfg.grad_checkpointing
        self.ema = copy.deepcopy(self.net).requires_grad_(False).eval()
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
        self.step = 0
        self._resume()
        if self.step == 0 and cfg.init_from:
            self._init_from(cfg.init_from)
        self._origin = self._origin_of(cfg.init_from) if cfg.init_from else ""  # a fine-tune's provenance, for its notes
        self.model, self.opt = self.acc.prepare(self.net, self.opt)
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
        opt_state = {"state": {}, "param_groups": json.loads(meta["param_groups"])}
        for k, v in sd.items():
            if k.startswith("optim."):
                _, idx, name = k.split(".", 2)
                opt_state["state"].setdefault(int(idx), {})[name] = v
        self.opt.load_state_dict(opt_state)
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
        osd = self.opt.state_dict()
        for idx, st in osd["state"].items():
            for name, v in st.items():
                tensors[f"optim.{idx}.{name}"] = torch.as_tensor(v)
        meta = {
            "format": STATE_FORMAT,
            "step": str(self.step),
            "train_config": self.cfg.to_json(),
            "param_groups": json.dumps(osd["param_groups"]),
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
        world, rank, b = self.acc.num_processes, self.acc.process_index, self.cfg.batch
        return build_batch(self.cfg, self.source, (step * world + rank) * b, b, self.image_source)

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

    def train_step(self) -> float:
        cfg = self.cfg
        torch.manual_seed(self._generator(self.step, 1).initial_seed())  # dropout etc.
        batch = self.make_batch(self.step)
        self.model.train()
        try:
            per_sample, logsnr = self.loss(batch, self.step)
            loss = per_sample.mean()
            self.acc.backward(loss)
        except torch.OutOfMemoryError as e:
            raise RuntimeError(
                f"Out of memory at batch {cfg.batch}: lower --batch, add --grad-checkpointing, use --mixed-precision bf16, "
                f"or train on fewer frames (--clip-frames) / smaller crops (--crop). ({e})"
            ) from None
        if not torch.isfinite(loss):
            log.warning("step %d: non-finite loss, skipping the update (logsnr %s)", self.step, logsnr.tolist())
            self.opt.zero_grad(set_to_none=True)
        else:
            if cfg.grad_clip:
                self.acc.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            lr = self.learning_rate(self.step)
            for group in self.opt.param_groups:
                group["lr"] = lr
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            self._update_ema()
        idx = np.clip(np.digitize(logsnr.detach().cpu().numpy(), _LOSS_BINS) - 1, 0, len(_LOSS_BINS) - 2)
        np.add.at(self._bins[0], idx, per_sample.detach().float().cpu().numpy())
        np.add.at(self._bins[1], idx, 1)
        self.step += 1
        return float(loss.detach())

    def learning_rate(self, step: int) -> float:
        """Linear warm-up, then constant or a cosine decay that reaches 0 at ``cfg.steps``."""
        cfg = self.cfg
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        if cfg.lr_decay == "cosine":
            span = max(1, cfg.steps - cfg.warmup)
            return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup) / span)))
        return cfg.lr

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        net = self.acc.unwrap_model(self.model)
        for pe, p in zip(self.ema.parameters(), net.parameters()):
            pe.lerp_(p.detach().float(), 1 - decay)

    # -- the loop ---------------------------------------------------------------------------------

    def run(self, steps: int | None = None) -> dict:
        cfg = self.cfg
        target = cfg.steps if steps is None else steps
        self.out.mkdir(parents=True, exist_ok=True)
        logf = open(self.out / "log.jsonl", "a") if self.acc.is_main_process else None  # noqa: SIM115 (closed below)
        t0, losses, last = time.time(), [], {}
        try:
            while self.step < target:
                losses.append(self.train_step())
                if self.step % cfg.log_every == 0 or self.step == target:
                    last = self._log(logf, losses, time.time() - t0)
                    losses, t0 = [], time.time()
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save()
                if cfg.sample_every and self.step % cfg.sample_every == 0 and self.acc.is_main_process:
                    self.write_samples()
                if cfg.binding_every and self.step % cfg.binding_every == 0 and self.acc.is_main_process:
                    self.log_binding(logf)
        finally:
            if logf:
                logf.close()
        self.save()
        self.acc.wait_for_everyone()
        return last

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
        from .pipeline import SamplingOptions, generate, upsample_spatial, upsample_temporal
        from .video_io import write_gif

        s = self.cfg.stage
        stage = Stage(s, self.ema)
        opts = SamplingOptions(steps=16, guidance=3.0 if s.role == "base" else 1.0, seed=0)
        prompts = list(self.cfg.sample_prompts)
        text = self.encoder.encode(prompts).to(self.acc.device) if s.text_dim else None
        if s.role == "base":
            video = generate(stage, text, options=opts)
        else:
            batch = build_batch(
                self.cfg.__class__(**{**asdict(self.cfg), "stage": s, "image_fraction": 0.0}), self.source, 10**9, len(prompts)
            )
            text = self.encoder.encode([c if isinstance(c, str) else c[0] for c in batch["captions"]])
            fn = upsample_spatial if s.role == "ssr" else upsample_temporal
            video = fn(stage, batch["low"], text, options=opts)
        grid = torch.cat(list(video.clamp(-1, 1)), dim=-1)  # side by side: (3, T, H, W*B)
        frames = ((grid.permute(1, 2, 3, 0) + 1) / 2).cpu()
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


def configure_threads() -> None:
    """Explicit CPU thread count (imagen-pytorch #302: an unbounded count hangs machines)."""
    n = int(os.environ.get("OMP_NUM_THREADS", "0")) or (os.cpu_count() or 1)
    torch.set_num_threads(max(1, n))
