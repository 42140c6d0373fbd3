"""Guided progressive distillation (Meng et al. 2023, as Imagen Video used it; spec §1.12-1.13).

Stage 1 (guidance): a student conditioned on the guidance weight w learns the teacher's guided
prediction ``(1 + w) x(c) - w x(null)`` for ``w ~ U[w_min, w_max]``: one network evaluation per
step afterwards instead of two.
Stage 2 (progressive): the w-conditioned student is halved round by round (N -> N/2) until the
target step count: each round a fresh student learns, in ONE DDIM step, what two DDIM steps of
the previous model do (the target is computed in fp32 by :func:`cascade.diffusion.distillation_target`).

Works for base, SSR and TSR stages (the data and conditioning come from ``cascade.train``). Each
round writes a stage file whose metadata records what it was distilled for.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import read_stage_config
from .config import DistillationInfo
from .diffusion import VDenoiser, distillation_target, sample_aug_logsnr
from .stage import Stage, load_stage
from .text import TextEmbedding, load_text_encoder
from .train import TrainConfig, build_batch, conditioning_for, flatten_captions
from .unet import VideoUNet

__all__ = ["DistillConfig", "distill", "guided_student_from", "round_schedule"]

log = logging.getLogger(__name__)


@dataclass
class DistillConfig:
    teacher: str
    out: str = "runs/distill"
    data: str = "shapes"
    w_min: float = 0.0
    w_max: float = 8.0
    teacher_steps: int = 64  # the grid stage 2 starts from (the teacher's sampling steps)
    target_steps: int = 8  # halve down to this; students of every round are written
    guided_steps: int = 400  # optimiser steps of stage 1
    steps_per_round: int = 300
    batch: int = 8
    lr: float = 1e-4
    grad_clip: float = 1.0
    frame_skip: int | None = None  # None: the demo training recipe's for the teacher's role (base 2, SR 1)
    clip_frames: int = 0
    crop: int = 0
    image_fraction: float = 0.0
    seed: int = 0
    mixed_precision: str = "no"
    text_encoder: str = "minilm"
    log_every: int = 20

    def __post_init__(self) -> None:
        if not 0 <= self.w_min <= self.w_max:
            raise ValueError(f"Need 0 <= w_min <= w_max; received {self.w_min}, {self.w_max}.")
        n = self.teacher_steps
        if n < 2 or self.target_steps < 1 or n % self.target_steps or (n // self.target_steps) & (n // self.target_steps - 1):
            raise ValueError(
                f"teacher_steps / target_steps must be a power of two (halving rounds); received {n} / {self.target_steps}."
            )


def round_schedule(teacher_steps: int, target_steps: int) -> list[int]:
    """Student step counts of the progressive rounds: 64, 8 -> [32, 16, 8]."""
    out, n = [], teacher_steps
    while n > target_steps:
        n //= 2
        out.append(n)
    return out


def guided_student_from(teacher: Stage) -> Stage:
    """A w-conditioned copy of ``teacher`` whose new guidance embedding starts at zero, so the
    student initially equals the teacher's conditional model."""
    cfg = teacher.config
    scfg = cfg.replace(unet=cfg.unet.__class__(**{**cfg.unet.to_dict(), "guidance_cond": True}))
    net = VideoUNet(scfg.unet)
    missing, unexpected = net.load_state_dict(teacher.net.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("guidance_emb.") for k in missing), (missing, unexpected)
    torch.nn.init.zeros_(net.guidance_emb.mlp[2].weight)
    torch.nn.init.zeros_(net.guidance_emb.mlp[2].bias)
    return Stage(scfg, net, source=teacher.source)


class _Distiller:
    def __init__(self, cfg: DistillConfig, encoder=None):
        from accelerate import Accelerator

        from .data.sources import make_source

        self.cfg = cfg
        self.acc = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
        self.teacher = load_stage(cfg.teacher, device=self.acc.device)
        tcfg = self.teacher.config
        if tcfg.is_distilled:
            raise ValueError(f"{cfg.teacher} is already distilled; distil from the original (undistilled) stage.")
        self.encoder = encoder or load_text_encoder(cfg.text_encoder)
        if tcfg.text_dim and self.encoder.width != tcfg.text_dim:
            raise ValueError(
                f"The teacher needs {tcfg.text_dim}-wide text; {self.encoder.encoder_id} is {self.encoder.width} wide."
            )
        frame_skip = cfg.frame_skip
        if frame_skip is None:  # distil on the clips the teacher was trained on
            from .demo import demo_train_config

            frame_skip = demo_train_config(tcfg.role).frame_skip
        self.data_cfg = TrainConfig(
            stage=tcfg,
            data=cfg.data,
            batch=cfg.batch,
            frame_skip=frame_skip,
            clip_frames=cfg.clip_frames,
            crop=cfg.crop,
            image_fraction=cfg.image_fraction,
            seed=cfg.seed,
            text_dropout=0.0,
        )
        min_frames = ((cfg.clip_frames or tcfg.frames) - 1) * frame_skip + 1
        self.source = make_source(cfg.data, seed=cfg.seed + 1, min_frames=min_frames)
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.schedule = tcfg.schedule

    def batch(self, step: int, salt: int):
        world, rank, b = self.acc.num_processes, self.acc.process_index, self.cfg.batch
        index0 = ((salt * 1_000_000 + step) * world + rank) * b
        data = build_batch(self.data_cfg, self.source, index0, b)
        g = torch.Generator().manual_seed(self.cfg.seed * 7_777_777 + salt * 100_003 + step * 13 + rank)
        text = None
        if self.teacher.config.text_dim:
            text = self.encoder.encode(flatten_captions(data["captions"])).to(self.acc.device)
        kw = {}
        if self.teacher.config.unet.aug_cond:
            lam = sample_aug_logsnr(b, self.schedule, generator=g)
            kw = conditioning_for(self.teacher.config, data, lam, g)
        kw = {k: v.to(self.acc.device) for k, v in kw.items()}
        kw["video_mask"] = data["video_mask"].to(self.acc.device)
        w = self.cfg.w_min + (self.cfg.w_max - self.cfg.w_min) * torch.rand(b, generator=g)
        return data["x"].to(self.acc.device), text, kw, w.to(self.acc.device), g

    def _optimise(self, student: Stage, steps: int, loss_fn, tag: str) -> None:
        net = student.net.train().requires_grad_(True)
        opt = torch.optim.Adam(net.parameters(), lr=self.cfg.lr)
        model, opt = self.acc.prepare(net, opt)
        t0, losses = time.time(), []
        for step in range(steps):
            lr = self.cfg.lr * (1 - step / max(1, steps))  # linear anneal to 0 within the round (Salimans & Ho)
            for group in opt.param_groups:
                group["lr"] = lr
            with self.acc.autocast():
                loss = loss_fn(model, step)
            self.acc.backward(loss)
            if self.cfg.grad_clip:
                self.acc.clip_grad_norm_(model.parameters(), self.cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if (step + 1) % self.cfg.log_every == 0 and self.acc.is_main_process:
                rec = {
                    "round": tag,
                    "step": step + 1,
                    "loss": float(np.mean(losses)),
                    "sec_per_step": (time.time() - t0) / len(losses),
                }
                log.info("%s step %d loss %.5f (%.2fs/step)", tag, step + 1, rec["loss"], rec["sec_per_step"])
                with open(self.out / "log.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")
                losses, t0 = [], time.time()
        student.net = self.acc.unwrap_model(model).eval().requires_grad_(False)

    # -- stage 1 ----------------------------------------------------------------------------------

    def guided(self) -> Stage:
        student = guided_student_from(self.teacher)
        teacher_den = self.teacher.denoiser()
        self.teacher.net.eval().requires_grad_(False)

        def loss_fn(model, step):
            x, text, kw, w, g = self.batch(step, salt=1)
            t = torch.rand(x.shape[0], generator=g)
            s = self.schedule.vesigma(t).to(x.device).clamp(min=self.schedule.sigma_min)
            x_t = x + s.reshape(-1, 1, 1, 1, 1) * torch.randn(x.shape, generator=g).to(x)
            with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
                target = self._guided_batch(teacher_den, x_t, s, text, w, kw)
            pred = VDenoiser(model, self.schedule)(x_t, s, text=text, guidance=w, **kw)
            return _weighted_x_mse(pred, target, s)

        self._optimise(student, self.cfg.guided_steps, loss_fn, "guided")
        return student

    def _guided_batch(self, den, x_t, s, text, w, kw):
        """Teacher guidance with a per-sample w (and per-frame text for packed images)."""
        b = x_t.shape[0]
        null = TextEmbedding.null(text.batch, text.width, device=x_t.device) if text is not None else None
        both = TextEmbedding.concat([text, null]) if text is not None else None
        kw2 = {k: torch.cat([v, v]) for k, v in kw.items()}
        x0 = den(torch.cat([x_t, x_t]), torch.cat([s, s]), text=both, **kw2)
        wb = w.reshape(-1, 1, 1, 1, 1)
        return x0[:b] + wb * (x0[:b] - x0[b:])

    # -- stage 2 ----------------------------------------------------------------------------------

    def progressive(self, teacher: Stage, n_student: int) -> Stage:
        student = Stage(teacher.config, copy.deepcopy(teacher.net), source=teacher.source)
        t_den = VDenoiser(teacher.net.eval().requires_grad_(False), self.schedule)

        def loss_fn(model, step):
            x, text, kw, w, g = self.batch(step, salt=100 + n_student)
            b = x.shape[0]
            i = torch.randint(1, n_student + 1, (b,), generator=g).double()
            t, t_mid, t_next = i / n_student, (i - 0.5) / n_student, (i - 1) / n_student
            s, s_mid = self.schedule.vesigma(t).float(), self.schedule.vesigma(t_mid).float()
            s_next = torch.where(t_next > 0, self.schedule.vesigma(t_next).float(), torch.zeros(b))
            s, s_mid, s_next = (v.to(x.device) for v in (s, s_mid, s_next))
            x_t = x + s.reshape(-1, 1, 1, 1, 1) * torch.randn(x.shape, generator=g).to(x)
            with torch.no_grad(), torch.autocast(x.device.type, enabled=False):  # the target in fp32
                target = distillation_target(t_den, x_t, s, s_mid, s_next, text=text, guidance=w, **kw)
            pred = VDenoiser(model, self.schedule)(x_t, s, text=text, guidance=w, **kw)
            return _weighted_x_mse(pred, target, s)

        self._optimise(student, self.cfg.steps_per_round, loss_fn, f"{n_student}-step")
        return student

    def save(self, student: Stage, steps: int) -> Path:
        c = self.cfg
        info = DistillationInfo(
            steps=(steps,),
            guided=True,
            w_min=c.w_min,
            w_max=c.w_max,
            sampler="distilled_stochastic",
            teacher=Path(c.teacher).name,
            teacher_steps=c.teacher_steps,
        )
        cfg = student.config.replace(distillation=info, name=f"{self.teacher.config.name}-distilled-{steps}step")
        path = self.out / f"student_{steps}step.safetensors"
        if self.acc.is_main_process:
            Stage(cfg, student.net).save(path)
        self.acc.wait_for_everyone()
        return path


def _weighted_x_mse(pred: torch.Tensor, target: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """x-space MSE weighted by 1 + SNR = 1 + 1/s^2: exactly the MSE of the implied v prediction
    (bounded at both ends of the schedule; spec §1.3)."""
    per = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    return (per * (1.0 + s.float().reshape(-1) ** -2)).mean()


def distill(cfg: DistillConfig, encoder=None) -> list[Path]:
    """Run stage 1 then the halving rounds; resume by skipping rounds whose student file exists."""
    d = _Distiller(cfg, encoder)
    written = []
    guided_path = d.out / f"student_{cfg.teacher_steps}step.safetensors"
    if guided_path.exists() and read_stage_config(guided_path).unet.guidance_cond:
        current = load_stage(guided_path, device=d.acc.device)
        log.info("resuming from %s", guided_path)
    else:
        current = d.guided()
        written.append(d.save(current, cfg.teacher_steps))
    for n in round_schedule(cfg.teacher_steps, cfg.target_steps):
        path = d.out / f"student_{n}step.safetensors"
        if path.exists():
            current = load_stage(path, device=d.acc.device)
            continue
        current = d.progressive(current, n)
        written.append(d.save(current, n))
    return written
