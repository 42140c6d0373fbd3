"""Guided progressive distillation (Meng et al. 2023, as Imagen Video used it; spec §1.12-1.13).

Stage 1 (guidance): a student conditioned on the guidance weight w learns the teacher's guided
prediction ``(1 + w) x(c) - w x(null)`` for ``w ~ U[w_min, w_max]``: one network evaluation per
step afterwards instead of two.
Stage 2 (progressive): the w-conditioned student is halved round by round (N -> N/2) until the
target step count: each round a fresh student learns, in ONE DDIM step, what two DDIM steps of
the previous model do (the target is computed in fp32 by :func:`cascade.diffusion.distillation_target`).
With ``step_ratio`` k > 2 a round divides by k (N -> N/k) and its student learns k DDIM steps of its
teacher in one: fewer rounds, so less of the error each round adds (TRACT, Berthelot et al. 2023),
at k teacher evaluations per optimiser step instead of 2. ``init_student`` starts the first round
from an existing student (e.g. continue training an N-step student against the original teacher).
On a refine grid (``refine_from`` < 1: one step from pure noise to ``refine_from``, the rest uniform from
there), ``keep_jump`` keeps the teacher's first step as the student's and groups only the refining steps, and
``on_trajectory`` starts each student step from the state the teacher's own sampler reaches at that time,
not from a training clip noised to it: there the sampler's state is the first prediction's blur plus noise,
which noised training clips never show (a student trained on those learned nothing the grid does not give).

Works for base, SSR and TSR stages (the data and conditioning come from ``cascade.train``). Each
round writes a stage file whose metadata records what it was distilled for.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import read_stage_config
from .config import DistillationInfo, StageConfig
from .diffusion import VDenoiser, ddim_step, distillation_target, sample_aug_logsnr
from .guidance import ClassifierFreeGuidance
from .pipeline import Projected
from .roles import Role, get_role
from .schedule import check_refine_from, grid_times
from .stage import Stage, load_stage
from .text import TextEmbedding, load_text_encoder
from .train import (
    Optimiser,
    RunConfig,
    TrainConfig,
    build_batch,
    conditioning_for,
    deadline,
    default_frame_skip,
    flatten_captions,
    require_accelerate,
    setting,
)
from .unet import VideoUNet

__all__ = ["DistillConfig", "distill", "guided_student_from", "round_schedule", "student_indices"]

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class DistillConfig(RunConfig):
    """Guided progressive distillation of a teacher stage file; data and optimiser fields are
    :class:`~cascade.train.RunConfig`'s (each round anneals the rate linearly to 0, Salimans & Ho)."""

    teacher: str = setting("", "the undistilled stage file", cli_required=True)
    out: str = setting("runs/distill", "output folder (a student file per round, log.jsonl)", cli_required=True)
    w_min: float = setting(0.0, "smallest guidance weight w the student learns")
    w_max: float = setting(8.0, "largest guidance weight w the student learns")
    teacher_steps: int = setting(64, "the sampling grid progressive distillation starts from (e.g. 64)")
    target_steps: int = setting(
        8, "halve (or divide by step_ratio) down to this many steps (8; or 4, 2, 1); a student file is written per round"
    )
    guided_steps: int = setting(400, "optimiser steps of stage 1 (guidance distillation)")
    steps_per_round: int = setting(300, "optimiser steps per round")
    step_ratio: int = setting(
        2,
        "each round divides the step count by this: 2 is progressive distillation's halving; 4 or 8 make fewer, "
        "longer rounds whose student learns that many of its teacher's DDIM steps in one (TRACT, Berthelot et al. "
        "2023): e.g. --teacher-steps 16 --target-steps 2 --step-ratio 8 is one round from the teacher itself, "
        "without the error each halving adds",
    )
    init_student: str | None = setting(
        None,
        "start the first round's student from this student file (one this teacher was distilled into, e.g. an "
        "earlier run's N-step student) instead of from its teacher",
    )
    # the round schedule: no warm-up, a linear anneal to 0, Adam's usual beta2
    lr: float = setting(1e-4, "learning rate at the start of each round")
    warmup: int = setting(0, "linear warm-up steps of each round")
    lr_decay: str = setting("linear", "learning-rate schedule of each round", choices=("constant", "cosine", "linear"))
    adam_beta2: float = setting(0.999, "AdamW beta2")
    consistency: bool = setting(
        False,
        "SR stages: distil the sampler with the projection onto the input (SamplingOptions.consistency): the "
        "teacher's predictions and the student's are projected, so the student learns only what the input leaves "
        "open; sample the student with consistency on",
    )
    refine_from: float = setting(
        1.0,
        "the teacher's sampling grid (SamplingOptions.refine_from; 1 = uniform): below 1, one step from pure noise "
        "to that time, the others uniform from there; each round's student learns every step_ratio-th time of its "
        "teacher's grid and samples that grid",
    )
    keep_jump: bool = setting(
        False,
        "refine grids: each round's student keeps its teacher's first step (pure noise -> refine_from, one teacher "
        "step) and learns the refining steps in fewer: its grid is the refine grid at the same refine_from (8 -> 2 "
        "steps: 1 -> refine_from, then one step that learns the teacher's other 7); needs (teacher steps - 1) "
        "divisible by (student steps - 1) in every round",
    )
    on_trajectory: bool = setting(
        False,
        "each student step starts from the teacher's own sampler state at that time (DDIM from pure noise, with "
        "the projection when consistency is on), not from the training clip noised to it: what the student sees "
        "when it samples (on a refine grid, the first prediction's blur plus noise); costs the teacher's steps "
        "up to there per optimiser step; the student samples with DDIM",
    )
    data_weight: float = setting(
        0.0,
        "weight of a ground-truth term: each student prediction is also pulled toward the training clip itself "
        "(the same weighted x0 MSE; SinSR-style regularisation for SR students), so where its teacher's sample "
        "and the clip differ the student leans toward the clip; 0 = pure distillation",
    )
    images: str | None = setting(None, "not used by distillation (videos only)", cli=False)
    data_workers: int = setting(0, "not used by distillation (batches are built in the process)", cli=False)

    def __post_init__(self) -> None:
        self.check_run()
        if not self.teacher:
            raise ValueError("DistillConfig needs the teacher's stage file (teacher=...).")
        if not (self.data_weight >= 0 and math.isfinite(self.data_weight)):
            raise ValueError(f"data_weight must be a finite number >= 0 (0 = pure distillation); received {self.data_weight}.")
        if not 0 <= self.w_min <= self.w_max:
            raise ValueError(f"Need 0 <= w_min <= w_max; received {self.w_min}, {self.w_max}.")
        n, k = self.teacher_steps, self.step_ratio
        if k < 2 or not _is_power_of(k, 2):
            raise ValueError(f"step_ratio must be a power of two, at least 2; received {k}.")
        if n < 2 or self.target_steps < 1 or n % self.target_steps or not _is_power_of(n // self.target_steps, k):
            rounds = "two (halving rounds)" if k == 2 else f"step_ratio {k} (one round per division by {k})"
            raise ValueError(f"teacher_steps / target_steps must be a power of {rounds}; received {n} / {self.target_steps}.")
        check_refine_from(self.refine_from)
        if self.keep_jump:
            if self.refine_from >= 1.0:
                raise ValueError("keep_jump keeps a refine grid's first step; give refine_from below 1 (e.g. 0.2).")
            for m in round_schedule(n, self.target_steps, k):
                student_indices(m * k, m, keep_jump=True)  # raises where the grids do not nest


def student_indices(teacher_steps: int, student_steps: int, keep_jump: bool = False) -> list[int]:
    """Where each student step starts and ends on its teacher's grid (indices into its times, then the final 0):
    every k-th time (8 -> 4 steps: 0, 2, 4, 6, 8); with ``keep_jump`` (a refine grid) the teacher's first step
    stays a step and the refining steps are grouped (8 -> 2: 0, 1, 8; 16 -> 4: 0, 1, 6, 11, 16)."""
    n, m = teacher_steps, student_steps
    if not keep_jump:
        k = n // m
        return list(range(0, n + 1, k))
    if m == 1:
        return [0, n]
    if (n - 1) % (m - 1):
        raise ValueError(
            f"keep_jump: a {m}-step student's refining steps must each be a whole number of its {n}-step teacher's "
            f"({n - 1} refining steps into {m - 1}); choose other teacher_steps / target_steps / step_ratio."
        )
    r = (n - 1) // (m - 1)
    return [0, *range(1, n + 1, r)]


def round_schedule(teacher_steps: int, target_steps: int, step_ratio: int = 2) -> list[int]:
    """Student step counts of the rounds: 64, 8 -> [32, 16, 8]; with step ratio 4, 64, 4 -> [16, 4]."""
    out, n = [], teacher_steps
    while n > target_steps:
        n //= step_ratio
        out.append(n)
    return out


def student_refine_from(teacher_steps: int, refine_from: float, step_ratio: int, keep_jump: bool = False) -> float:
    """The grid of a round's student (``teacher_steps / step_ratio`` steps) as a ``refine_from``: every
    ``step_ratio``-th time of its teacher's grid (1 for a uniform teacher grid, or a 1-step student); with
    ``keep_jump``, the teacher's own ``refine_from``."""
    if refine_from >= 1.0 or teacher_steps // step_ratio < 2:
        return 1.0
    if keep_jump:
        return refine_from
    return float(grid_times(teacher_steps, refine_from=refine_from)[step_ratio])


def _is_power_of(n: int, k: int) -> bool:
    while n > 1 and n % k == 0:
        n //= k
    return n == 1


def guided_student_config(cfg: StageConfig) -> StageConfig:
    """The teacher's configuration with the guidance input (``guidance_cond``) a student adds."""
    return cfg.replace(unet=cfg.unet.__class__(**{**cfg.unet.to_dict(), "guidance_cond": True}))


def guided_student_from(teacher: Stage) -> Stage:
    """A w-conditioned copy of ``teacher`` whose new guidance embedding starts at zero, so the
    student initially equals the teacher's conditional model."""
    scfg = guided_student_config(teacher.config)
    net = VideoUNet(scfg.unet)
    missing, unexpected = net.load_state_dict(teacher.net.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("guidance_emb.") for k in missing), (missing, unexpected)
    torch.nn.init.zeros_(net.guidance_emb.mlp[2].weight)
    torch.nn.init.zeros_(net.guidance_emb.mlp[2].bias)
    return Stage(scfg, net, source=teacher.source)


class _Distiller:
    def __init__(self, cfg: DistillConfig, encoder=None):
        Accelerator = require_accelerate()

        from .data.sources import make_source

        self.cfg = cfg
        self.acc = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
        self.teacher = load_stage(cfg.teacher, device=self.acc.device)
        tcfg = self.teacher.config
        if tcfg.is_distilled:
            raise ValueError(f"{cfg.teacher} is already distilled; distil from the original (undistilled) stage.")
        self.role = get_role(tcfg.role)
        if cfg.consistency and type(self.role).projection is Role.projection:
            raise ValueError(
                f"consistency=True distils the projection onto an SR stage's input; {tcfg.describe()} has none. "
                "Leave it off (--no-consistency)."
            )
        self.encoder = encoder or load_text_encoder(cfg.text_encoder, device=self.acc.device)
        if tcfg.text_dim and self.encoder.width != tcfg.text_dim:
            raise ValueError(
                f"The teacher needs {tcfg.text_dim}-wide text; {self.encoder.encoder_id} is {self.encoder.width} wide."
            )
        # distil on clips at the teacher's frame rate (the rate it was trained on)
        frame_skip = cfg.frame_skip if cfg.frame_skip is not None else default_frame_skip(tcfg, cfg.data)
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
        self.source = make_source(cfg.data, seed=cfg.seed + 1, min_frames=min_frames, looks=cfg.looks, shape_mix=cfg.shape_mix)
        self._check_init_student()
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.schedule = tcfg.schedule
        self.stop_at = deadline(cfg.time_limit)

    def _check_init_student(self) -> None:
        path = self.cfg.init_student
        if path is None:
            return
        if not Path(path).is_file():
            raise FileNotFoundError(f"init_student {path} does not exist; give a student file, or leave it out.")
        scfg, tcfg = read_stage_config(path), self.teacher.config
        want = guided_student_config(tcfg).unet
        if not scfg.is_distilled or scfg.unet != want:
            raise ValueError(
                f"init_student {path} ({scfg.describe()}) is not a student of {self.cfg.teacher} ({tcfg.describe()}): "
                "its network must be the teacher's with the guidance input. Give one of this teacher's students."
            )
        if scfg.distillation.teacher != Path(self.cfg.teacher).name:
            log.warning(
                "init_student %s was distilled from %s, not %s", path, scfg.distillation.teacher, Path(self.cfg.teacher).name
            )

    def init_student(self) -> Stage | None:
        """The first round's starting point (``init_student``), or None: the round starts from its teacher."""
        return load_stage(self.cfg.init_student, device=self.acc.device) if self.cfg.init_student else None

    def round_seconds(self, rounds_left: int) -> float:
        """This round's share of what is left of ``time_limit``, ``rounds_left`` counting it (``inf`` without one)."""
        if not self.cfg.time_limit:
            return math.inf
        return max(0.0, self.stop_at - time.monotonic()) / max(1, rounds_left)

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
        # consistency: the role's projection onto the batch's input (affine, so the student's loss
        # differentiates through it); projecting the student too matters: unprojected, its loss is
        # dominated (about 50x, demo TSR) by the teacher's own distance to its input, which sampling removes
        project = self.role.projection(self.teacher.config, data) if self.cfg.consistency else _unchanged
        return data["x"].to(self.acc.device), text, kw, w.to(self.acc.device), g, project

    def _optimise(self, student: Stage, steps: int, loss_fn, tag: str, seconds: float = math.inf) -> None:
        """``steps`` optimiser steps, or as many as fit in ``seconds`` (counted from the speed of the
        first steps, so that the round's rate schedule still anneals to its end)."""
        net = student.net.train().requires_grad_(True)
        optim = Optimiser(self.cfg, net, self.acc, steps)  # a fresh optimiser and schedule per round
        optim.prepare()
        t0, losses = time.time(), []
        start, probe = time.monotonic(), min(steps, 10)
        step = 0
        while step < optim.total:
            with self.acc.autocast():
                loss = loss_fn(optim.model, step)
            if not optim.step(loss, step):
                log.warning("%s step %d: non-finite loss, skipping the update", tag, step + 1)
            losses.append(float(loss.detach()))
            step += 1
            if step == probe and math.isfinite(seconds):
                fit = int(seconds / ((time.monotonic() - start) / probe))
                if fit < steps:
                    optim.total = max(probe, fit)
                    log.info("%s: %d of %d steps fit in the %.0f s of this round's time limit", tag, optim.total, steps, seconds)
            if (step % self.cfg.log_every == 0 or step == optim.total) and self.acc.is_main_process and losses:
                rec = {
                    "round": tag,
                    "step": step,
                    "of": optim.total,
                    "loss": float(np.mean(losses)),
                    "sec_per_step": (time.time() - t0) / len(losses),
                }
                log.info("%s step %d loss %.5f (%.2fs/step)", tag, step, rec["loss"], rec["sec_per_step"])
                with open(self.out / "log.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")
                losses, t0 = [], time.time()
        student.net = self.acc.unwrap_model(optim.model).eval().requires_grad_(False)

    # -- stage 1 ----------------------------------------------------------------------------------

    def guided(self, seconds: float = math.inf) -> Stage:
        student = guided_student_from(self.teacher)
        teacher_den = self.teacher.denoiser()
        self.teacher.net.eval().requires_grad_(False)

        def loss_fn(model, step):
            x, text, kw, w, g, project = self.batch(step, salt=1)
            t = torch.rand(x.shape[0], generator=g)
            s = self.schedule.vesigma(t).to(x.device).clamp(min=self.schedule.sigma_min)
            x_t = x + s.reshape(-1, 1, 1, 1, 1) * torch.randn(x.shape, generator=g).to(x)
            with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
                target = project(self._guided_batch(teacher_den, x_t, s, text, w, kw))
            pred = project(VDenoiser(model, self.schedule)(x_t, s, text=text, guidance=w, **kw))
            return _weighted_x_mse(pred, target, s)

        self._optimise(student, self.cfg.guided_steps, loss_fn, "guided", seconds)
        return student

    def _guided_batch(self, den, x_t, s, text, w, kw):
        """Teacher guidance with a per-sample w (and per-frame text for packed images)."""
        null = TextEmbedding.null(text.batch, text.width, device=x_t.device) if text is not None else None
        return ClassifierFreeGuidance(den, text, null, w)(x_t, s, **kw)

    # -- stage 2 ----------------------------------------------------------------------------------

    def progressive(
        self,
        teacher: Stage,
        n_student: int,
        seconds: float = math.inf,
        init: Stage | None = None,
        refine_from: float = 1.0,
    ) -> Stage:
        """A round: a student with ``n_student`` steps learns, per step, ``step_ratio`` DDIM steps of
        ``teacher`` (which had ``n_student * step_ratio`` on the grid ``refine_from``); it starts as a
        copy of ``init`` or of ``teacher``."""
        k, c = self.cfg.step_ratio, self.cfg
        # the teacher's grid, then 0: the student's step i goes from times[idx[i]] to times[idx[i + 1]]
        # (idx[i] = i k; with keep_jump, the first step is the teacher's first)
        times = torch.cat([grid_times(n_student * k, refine_from=refine_from), torch.zeros(1, dtype=torch.float64)])
        idx = student_indices(n_student * k, n_student, keep_jump=c.keep_jump)
        start = init if init is not None else teacher
        student = Stage(teacher.config, copy.deepcopy(start.net), source=teacher.source)
        t_den = VDenoiser(teacher.net.eval().requires_grad_(False), self.schedule)

        def sigma(t: torch.Tensor, b: int, device) -> torch.Tensor:
            t = t.expand(b) if t.dim() == 0 else t
            return torch.where(t > 0, self.schedule.vesigma(t).float(), torch.zeros(b)).to(device)

        def loss_fn(model, step):
            x, text, kw, w, g, project = self.batch(step, salt=100 + n_student)
            b = x.shape[0]
            if c.keep_jump or c.on_trajectory:
                # one student step for the whole batch (its teacher path has its own length)
                i = int(torch.randint(0, n_student, (1,), generator=g))
                sig = [sigma(times[j], b, x.device) for j in range(idx[i], idx[i + 1] + 1)]
            else:
                i = n_student - torch.randint(1, n_student + 1, (b,), generator=g)  # the student's step, 0 = the first
                # the student's step t -> t_next is k of the teacher's: t_j = times[i k + j], j = 0 .. k
                sig = [sigma(times[i * k + j], b, x.device) for j in range(k + 1)]
            den = Projected(t_den, project)
            cond = dict(text=text, guidance=w, **kw)
            if c.on_trajectory:  # the teacher's sampler from pure noise to this step's start
                x_t = x + sigma(times[0], b, x.device).reshape(-1, 1, 1, 1, 1) * torch.randn(x.shape, generator=g).to(x)
                with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
                    for j in range(idx[i]):
                        s_j, s_n = sigma(times[j], b, x.device), sigma(times[j + 1], b, x.device)
                        x_t = ddim_step(x_t.float(), den(x_t, s_j, **cond).float(), s_j, s_n)
                x_t = x_t.to(x)
            else:
                x_t = x + sig[0].reshape(-1, 1, 1, 1, 1) * torch.randn(x.shape, generator=g).to(x)
            with torch.no_grad(), torch.autocast(x.device.type, enabled=False):  # the target in fp32
                target = distillation_target(den, x_t, *sig, **cond)
            pred = project(VDenoiser(model, self.schedule)(x_t, sig[0], **cond))
            loss = _weighted_x_mse(pred, target, sig[0])
            if c.data_weight:
                loss = loss + c.data_weight * _weighted_x_mse(pred, x, sig[0])
            return loss

        self._optimise(student, self.cfg.steps_per_round, loss_fn, f"{n_student}-step", seconds)
        return student

    def save(self, student: Stage, steps: int, refine_from: float = 1.0) -> Path:
        c = self.cfg
        info = DistillationInfo(
            steps=(steps,),
            guided=True,
            w_min=c.w_min,
            w_max=c.w_max,
            sampler="ddim" if c.on_trajectory else "distilled_stochastic",
            teacher=Path(c.teacher).name,
            teacher_steps=c.teacher_steps,
            consistency=c.consistency,
            refine_from=refine_from,
        )
        cfg = student.config.replace(distillation=info, name=f"{self.teacher.config.name}-distilled-{steps}step")
        path = self.out / f"student_{steps}step.safetensors"
        if self.acc.is_main_process:
            Stage(cfg, student.net).save(path)
        self.acc.wait_for_everyone()
        return path


def _unchanged(x0: torch.Tensor) -> torch.Tensor:
    """The projection of a batch without ``consistency``."""
    return x0


def _weighted_x_mse(pred: torch.Tensor, target: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """x-space MSE weighted by 1 + SNR = 1 + 1/s^2: exactly the MSE of the implied v prediction
    (bounded at both ends of the schedule; spec §1.3)."""
    per = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    return (per * (1.0 + s.float().reshape(-1) ** -2)).mean()


def distill(cfg: DistillConfig, encoder=None) -> list[Path]:
    """Run stage 1 then the rounds (halving, or dividing by ``step_ratio``); resume by skipping rounds whose
    student file exists."""
    d = _Distiller(cfg, encoder)
    rounds = round_schedule(cfg.teacher_steps, cfg.target_steps, cfg.step_ratio)
    written = []
    guided_path = d.out / f"student_{cfg.teacher_steps}step.safetensors"
    if guided_path.exists() and read_stage_config(guided_path).unet.guidance_cond:
        current = load_stage(guided_path, device=d.acc.device)
        log.info("resuming from %s", guided_path)
    else:
        current = d.guided(d.round_seconds(1 + len(rounds)))
        written.append(d.save(current, cfg.teacher_steps, cfg.refine_from))
    refine = cfg.refine_from  # the grid of this round's teacher
    for i, n in enumerate(rounds):
        path = d.out / f"student_{n}step.safetensors"
        student_refine = student_refine_from(n * cfg.step_ratio, refine, cfg.step_ratio, cfg.keep_jump)
        if path.exists():
            current = load_stage(path, device=d.acc.device)
        else:
            init = d.init_student() if i == 0 else None
            current = d.progressive(current, n, d.round_seconds(len(rounds) - i), init=init, refine_from=refine)
            written.append(d.save(current, n, student_refine))
        refine = student_refine
    return written
