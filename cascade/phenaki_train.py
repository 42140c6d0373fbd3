"""Training of Phenaki's two models (``python -m cascade train --stage cvivit|maskgit``).

* ``cvivit``: the tokenizer, on clips of ``frames`` frames (``1 + n * temporal_patch``) and, for a
  fraction ``image_fraction`` of the steps, on single frames (joint image-video training: an image
  is one token step); loss: reconstruction MSE (FSQ has no codebook terms).
* ``maskgit``: the transformer, on the tokens of a *tokenizer file* (frozen; its id is recorded in
  the transformer file, so a pair that does not belong together is refused later), with the
  cosine masking schedule and text dropout; ``continuation_fraction`` of the items keep the tokens
  of their first ``k`` token steps given (``k`` random), as a story's continuation has them.

Everything the diffusion stages' trainer has: ``accelerate`` (CPU, GPUs, DDP, mixed precision),
AdamW with warm-up and decay, gradient clipping, EMA of the exported weights, resumable state
(``state.safetensors``, never a pickle), ``log.jsonl`` (continued, not duplicated, on resume),
the model file after every checkpoint, and sample pictures.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from .checkpoint import atomic_save_safetensors, check_safetensors_file, remove_stale_temporaries
from .cvivit import CViViT, CViViTConfig, reconstruction_loss
from .frames import frames_to_video, video_to_frames
from .maskgit import MaskGIT, MaskGITConfig, masking_loss
from .phenaki import PhenakiInfo, load_tokenizer, save_tokenizer, save_transformer
from .text import load_text_encoder
from .train import (
    Optimiser,
    RunConfig,
    frame_skip_for,
    load_optimizer_tensors,
    optimizer_tensors,
    require_accelerate,
    setting,
    training_loop,
    trim_log,
    update_ema,
)

__all__ = ["PHENAKI_MODELS", "PhenakiTrainConfig", "PhenakiTrainer"]

log = logging.getLogger(__name__)

PHENAKI_MODELS = ("cvivit", "maskgit")
STATE_FORMAT = "phenaki-train-state"


@dataclass(kw_only=True)
class PhenakiTrainConfig(RunConfig):
    model: str = setting("cvivit", "which Phenaki model: cvivit (the tokenizer) or maskgit (the transformer)", cli=False)
    out: str = setting("runs/phenaki", "output folder (state.safetensors, the model file, log.jsonl, samples/)")
    steps: int = setting(1000, "train up to this step (a resumed run continues to it)")
    frames: int = setting(17, "frames per clip: 1 + n * temporal_patch")
    size: int = setting(32, "frame size (the tokenizer's image_size)")
    fps: float = setting(4.0, "frame rate of the clips (the diffusion base's: 4 fps)")
    ema_decay: float = setting(0.999, "EMA decay of the exported weights")
    checkpoint_every: int = setting(200, "steps between resumable checkpoints (0: only at the end)")
    sample_every: int = setting(0, "steps between sample pictures (0: never)")
    tokenizer: str | None = setting(None, "maskgit: the tokenizer file whose tokens it learns")
    continuation_fraction: float = setting(0.25, "maskgit: fraction of items whose first token steps are given")
    text_dropout: float = setting(0.1, "maskgit: probability of dropping the text (classifier-free guidance)")
    dim: int = setting(0, "model width (0: 128 for cvivit, 256 for maskgit)")
    depth: int = setting(0, "maskgit: transformer blocks (0: 6); cvivit: blocks per spatial/temporal stack (0: 2)")
    patch_size: int = setting(4, "cvivit: patch side")
    temporal_patch: int = setting(2, "cvivit: frames per tubelet")
    fsq_levels: str = setting("7,5,5,5", "cvivit: FSQ levels per latent channel (odd), comma-separated")
    quantiser: str = setting(
        "fsq", "cvivit: fsq (finite scalar levels) or vq (a learned codebook, Phenaki's)", choices=("fsq", "vq")
    )
    vq_codes: int = setting(1024, "cvivit with --quantiser vq: codebook entries")

    def __post_init__(self) -> None:
        self.check_run()
        if self.model not in PHENAKI_MODELS:
            raise ValueError(f"Phenaki model must be one of {PHENAKI_MODELS}; received {self.model!r}.")
        if self.steps < 0 or self.checkpoint_every < 0 or self.sample_every < 0:
            raise ValueError("steps, checkpoint_every and sample_every must be >= 0.")
        if self.model == "maskgit" and not self.tokenizer:
            raise ValueError("Training the maskgit transformer needs --tokenizer: the tokenizer file whose tokens it learns.")
        if not 0.0 <= self.continuation_fraction <= 1.0 or not 0.0 <= self.text_dropout < 1.0:
            raise ValueError("continuation_fraction must be in [0, 1] and text_dropout in [0, 1).")
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0; received {self.fps}.")
        if self.model == "cvivit":
            self.cvivit_config().steps(self.frames)  # clear error for a frame count the tokenizer cannot take

    def cvivit_config(self) -> CViViTConfig:
        d = self.depth or 2
        return CViViTConfig(
            image_size=self.size,
            patch_size=self.patch_size,
            temporal_patch=self.temporal_patch,
            dim=self.dim or 128,
            spatial_depth=d,
            temporal_depth=d,
            fsq_levels=tuple(int(v) for v in str(self.fsq_levels).split(",")),
            quantiser=self.quantiser,
            vq_codes=self.vq_codes,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> PhenakiTrainConfig:
        d = json.loads(s)
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in fields(cls)}})


def _clips_at(cfg: PhenakiTrainConfig, source, frame_skip: int, world: int, rank: int, step: int):
    b = cfg.batch
    index0 = (step * world + rank) * b
    rng = np.random.default_rng([cfg.seed, step, 5])
    frames = 1 if cfg.model == "cvivit" and rng.random() < cfg.image_fraction else cfg.frames
    clips, caps = [], []
    for i in range(b):
        u8, cap = source.clip(index0 + i, frames=frames, size=cfg.size, frame_step=frame_skip)
        clips.append(frames_to_video(u8))
        caps.append(cap)
    return torch.stack(clips), caps


class PhenakiTrainer:
    def __init__(self, cfg: PhenakiTrainConfig, *, accelerator=None, encoder=None):
        Accelerator = require_accelerate()
        from .data.sources import make_source

        self.cfg = cfg
        self.acc = accelerator or Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
        self.out = Path(cfg.out)
        self.frame_skip = cfg.frame_skip or frame_skip_for(cfg.fps, cfg.data)
        self.source = make_source(
            cfg.data, seed=cfg.seed, min_frames=(cfg.frames - 1) * self.frame_skip + 1, looks=cfg.looks, shape_mix=cfg.shape_mix
        )
        torch.manual_seed(cfg.seed)
        self.encoder = None
        if cfg.model == "cvivit":
            self.net: torch.nn.Module = CViViT(cfg.cvivit_config())
        else:
            self.tokenizer, self.tokenizer_id = load_tokenizer(cfg.tokenizer)
            self.tokenizer.to(self.acc.device)
            tc = self.tokenizer.config
            if tc.image_size != cfg.size:
                raise ValueError(f"The tokenizer {cfg.tokenizer} takes {tc.image_size} px frames; --size is {cfg.size}.")
            tc.steps(cfg.frames)
            self.encoder = encoder or load_text_encoder(cfg.text_encoder, device=self.acc.device)
            self.net = MaskGIT(
                MaskGITConfig(
                    codebook_size=tc.codebook_size,
                    grid=tc.grid,
                    dim=cfg.dim or 256,
                    depth=cfg.depth or 6,
                    text_dim=self.encoder.width,
                    text_dropout=cfg.text_dropout,
                )
            )
        self.ema = copy.deepcopy(self.net).requires_grad_(False).eval()
        self.optim = Optimiser(cfg, self.net, self.acc, cfg.steps)
        self.step = 0
        self._resume()
        self.optim.prepare()
        self.model, self.opt = self.optim.model, self.optim.opt
        self.ema.to(self.acc.device)

    # -- files ------------------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.out / "state.safetensors"

    @property
    def model_path(self) -> Path:
        return self.out / ("tokenizer.safetensors" if self.cfg.model == "cvivit" else "transformer.safetensors")

    def _resume(self) -> None:
        if not self.state_path.exists():
            return
        from safetensors.torch import load_file

        meta = check_safetensors_file(self.state_path).get("__metadata__", {})
        if meta.get("format") != STATE_FORMAT:
            raise ValueError(f"{self.state_path} is not a Phenaki training state; use a new --out folder.")
        saved = PhenakiTrainConfig.from_json(meta["train_config"])
        if saved.model != self.cfg.model or meta.get("net_config") != json.dumps(self.net.config.to_dict(), sort_keys=True):
            raise ValueError(
                f"{self.state_path} was written for another {saved.model} configuration; use a new --out folder or the same settings."
            )
        sd = load_file(str(self.state_path))
        self.net.load_state_dict({k[6:]: v for k, v in sd.items() if k.startswith("model.")})
        self.ema.load_state_dict({k[4:]: v for k, v in sd.items() if k.startswith("ema.")})
        load_optimizer_tensors(self.optim.opt, sd, meta)
        self.step = int(meta["step"])
        log.info("resumed %s at step %d", self.state_path, self.step)

    def save(self) -> None:
        if not self.acc.is_main_process:
            return
        tensors = {f"model.{k}": v for k, v in self.acc.unwrap_model(self.model).state_dict().items()}
        tensors.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        opt_tensors, groups = optimizer_tensors(self.opt)
        tensors.update(opt_tensors)
        meta = {
            "format": STATE_FORMAT,
            "step": str(self.step),
            "train_config": self.cfg.to_json(),
            "net_config": json.dumps(self.net.config.to_dict(), sort_keys=True),
            "param_groups": groups,
        }
        atomic_save_safetensors(tensors, self.state_path, meta)
        self.export(self.model_path)

    def export(self, path, dtype: torch.dtype | None = None) -> Path:
        if self.cfg.model == "cvivit":
            save_tokenizer(path, self.ema, dtype=dtype)
        else:
            info = PhenakiInfo(
                tokenizer_id=self.tokenizer_id,
                tokenizer_config=self.tokenizer.config,
                text_encoder=self.encoder.encoder_id,
                max_tokens=32,
                fps=self.cfg.fps,
                steps=self.tokenizer.config.steps(self.cfg.frames),
            )
            save_transformer(path, self.ema, info, dtype=dtype)
        return Path(path)

    # -- one step ---------------------------------------------------------------------------------

    def _generator(self, step: int, salt: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.acc.process_index * 7919 + step * 31 + salt)

    def make_batch(self, step: int) -> tuple[torch.Tensor, list[str]]:
        """Clips ``(B, 3, T, H, W)`` and captions; a cvivit image step has ``T = 1``."""
        return self._batch_maker()(step)

    def _batch_maker(self):
        """``step -> batch`` without the trainer (what data worker processes run)."""
        return functools.partial(
            _clips_at, self.cfg, self.source, self.frame_skip, self.acc.num_processes, self.acc.process_index
        )

    def loss(self, x: torch.Tensor, captions: list[str], step: int) -> tuple[torch.Tensor, dict]:
        dev = self.acc.device
        x = x.to(dev)
        if self.cfg.model == "cvivit":
            recon, idx = self.model(x)
            mse, stats = reconstruction_loss(recon, idx, x, self.acc.unwrap_model(self.model).quantiser_loss)
            return mse, {**stats, "frames": int(x.shape[2])}
        g = self._generator(step)
        with torch.no_grad():
            ids = self.tokenizer.tokenize(x)
        b, s = ids.shape[:2]
        given = None
        if self.cfg.continuation_fraction > 0 and s > 1:
            k = torch.randint(1, s, (b,), generator=g)
            cont = torch.rand(b, generator=g) < self.cfg.continuation_fraction
            steps = torch.arange(s)[None] < torch.where(cont, k, torch.zeros_like(k))[:, None]  # (B, S)
            given = steps[:, :, None, None].expand_as(ids).to(dev)
        text = self.encoder.encode(captions).to(dev)
        return masking_loss(self.model, ids, text, generator=g, given=given)

    def train_step(self, batch: tuple | None = None) -> dict:
        """One optimisation step on ``batch`` (default: this step's batch, built here)."""
        torch.manual_seed(self._generator(self.step, 1).initial_seed())
        x, caps = self.make_batch(self.step) if batch is None else batch
        self.model.train()
        loss, stats = self.loss(x, caps, self.step)
        if self.optim.step(loss, self.step):
            update_ema(self.ema, self.acc.unwrap_model(self.model), self.cfg.ema_decay, self.step)
        else:
            log.warning("step %d: non-finite loss, skipping the update", self.step)
        self.step += 1
        return {"loss": float(loss.detach()), **stats}

    # -- the loop ---------------------------------------------------------------------------------

    def run(self, steps: int | None = None) -> dict:
        cfg = self.cfg
        target = cfg.steps if steps is None else steps
        self.out.mkdir(parents=True, exist_ok=True)
        if self.acc.is_main_process:
            for path in (self.state_path, self.model_path):
                remove_stale_temporaries(path)
            trim_log(self.out / "log.jsonl", self.step)
        logf = open(self.out / "log.jsonl", "a") if self.acc.is_main_process else None  # noqa: SIM115 (closed below)
        try:
            last = training_loop(self, target, logf, [(cfg.sample_every, self.write_samples)])
        finally:
            if logf:
                logf.close()
        self.save()
        self.acc.wait_for_everyone()
        return last

    def _log(self, logf, recs: list[dict], seconds: float) -> dict:
        keys = sorted({k for r in recs for k in r})
        rec = {"step": self.step, **{k: round(float(np.mean([r[k] for r in recs if k in r])), 5) for k in keys}}
        rec["lr"] = self.opt.param_groups[0]["lr"]
        rec["sec_per_step"] = round(seconds / max(1, len(recs)), 3)
        if logf:
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
            log.info("step %d loss %.4f (%.2fs/step)", self.step, rec.get("loss", float("nan")), rec["sec_per_step"])
        return rec

    @torch.no_grad()
    def write_samples(self) -> Path:
        """``samples/step_N.png``: cvivit: ground truth over reconstruction of 4 fixed clips;
        maskgit: 4 videos sampled from fixed captions of the data (seed 0)."""
        from PIL import Image

        from .video_io import to_uint8

        x, caps = self.make_batch(10**6)  # fixed items, outside the training stream's start
        x = x[:4].to(self.acc.device)
        if self.cfg.model == "cvivit":
            rows = torch.cat([x, self.ema(x)[0].clamp(-1, 1)])
        else:
            from .phenaki import Phenaki

            ph = Phenaki(self.tokenizer, self.ema, PhenakiInfo(self.tokenizer_id, self.tokenizer.config), self.tokenizer_id)
            rows = ph.generate(self.encoder.encode(caps[:4]).to(self.acc.device), self.cfg.frames, seed=0)
        strips = [np.concatenate(list(to_uint8(video_to_frames(v.cpu()))), axis=1) for v in rows]
        path = self.out / "samples" / f"step_{self.step}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(strips, axis=0)).save(path)
        (path.with_suffix(".txt")).write_text("\n".join(caps[:4]) + "\n")
        return path
