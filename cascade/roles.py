"""What a stage *is*: one :class:`Role` per kind of stage, defined once and looked up by name.

A role says which conditioning channels its network takes, what its configuration must satisfy,
how it describes itself, what frame rate its output has, how training builds its inputs and its
condition from a clip, and how sampling builds the condition from the user's input. Training
(``cascade.train``), sampling (``cascade.pipeline``), the configuration checks
(``StageConfig``), the CLI and the nodes all ask the role; none of them tests role names.

Adding a kind of stage is one new module that subclasses :class:`Role` and calls
:func:`register_role` (see ``tests/test_roles.py`` for a toy role trained and sampled end to end).
The three roles of Imagen Video's cascade are defined here: ``base`` (text -> video, optionally
with known-frame channels for continuation), ``ssr`` (spatial super-resolution) and ``tsr``
(temporal super-resolution).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from .conditioning import known_frames_condition, resize_video, ssr_projector, tsr_condition, tsr_projector

if TYPE_CHECKING:  # pragma: no cover
    from .config import StageConfig

__all__ = [
    "BaseRole",
    "Role",
    "SpatialSRRole",
    "TemporalSRRole",
    "get_role",
    "output_fps",
    "register_role",
    "require_role",
    "role_names",
]

Augment = Callable[[torch.Tensor], torch.Tensor]  # video -> its noise-augmented copy


class Role:
    """The behaviour of one kind of stage. Subclass it and :func:`register_role` an instance."""

    name: str = ""
    title: str = ""  # for messages: "spatial super-resolution (SSR)"
    takes_video: bool = True  # SR-like stages transform an input video; a base makes one from text
    aug_cond: bool = True  # the network is conditioned on the noise-augmentation level of its input

    # -- configuration --------------------------------------------------------------------------

    def cond_channels(self, cfg: StageConfig) -> int:
        """Channels concatenated to the noisy input."""
        raise NotImplementedError

    def validate(self, cfg: StageConfig) -> None:
        """Raise ``ValueError`` when ``cfg`` is not a valid stage of this role."""
        expected = self.cond_channels(cfg)
        if cfg.unet.cond_channels != expected:
            extra = " with continuation" if cfg.continuation else ""
            raise ValueError(
                f"A {self.name} stage{extra} needs unet.cond_channels={expected}; received {cfg.unet.cond_channels}."
            )
        if cfg.continuation:
            raise ValueError("continuation (known-frame channels) is a base-stage option.")
        if self.aug_cond and not cfg.unet.aug_cond:
            raise ValueError(
                f"{self.title or self.name} stages are conditioned on their noise-augmentation level: set unet.aug_cond=True."
            )

    def describe(self, cfg: StageConfig) -> str:
        """Short kind, e.g. ``"SSR x2"``."""
        return self.name

    def output_fps(self, cfg: StageConfig, fps: float, multiplier: int | None = None) -> float:
        """Frame rate of this stage's output for an input at ``fps``."""
        return float(fps)

    def build_network(self, cfg: StageConfig) -> torch.nn.Module:
        from .unet import VideoUNet

        return VideoUNet(cfg.unet)

    # -- training ------------------------------------------------------------------------------

    def check_training(self, tcfg) -> None:
        """Refuse training settings this role cannot use (``tcfg``: a :class:`cascade.train.TrainConfig`)."""
        if tcfg.crop and not self.takes_video:
            raise ValueError(f"crop is for SR stages (fully convolutional); a {self.name} stage trains on whole frames.")

    def crop_multiple(self, cfg: StageConfig) -> int:
        return cfg.unet.size_multiple

    def training_clip(self, tcfg, source, index: int, frames: int, rng: np.random.Generator):
        """One training clip ``(uint8 (T, H, W, 3), caption)`` of ``frames`` frames."""
        return source.clip(index, frames=frames, size=tcfg.stage.width, frame_step=tcfg.frame_skip)

    def training_inputs(self, tcfg, x: torch.Tensor, rng: np.random.Generator) -> dict:
        """What the stage's input is for target videos ``x`` (B, 3, T, H, W): ``{"low": ...}`` etc."""
        return {}

    def condition(self, cfg: StageConfig, inputs: dict, aug_logsnr: torch.Tensor, augment: Augment) -> dict:
        """Network keyword arguments (``cond``, ``aug_logsnr``) from ``inputs`` (training: from
        :meth:`training_inputs`; sampling: built by ``cascade.pipeline``). ``augment`` noises a video
        at ``aug_logsnr`` (training draws from a generator, sampling uses per-frame seeded noise)."""
        return {}

    def projection(self, cfg: StageConfig, inputs: dict) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """``x0 -> x0`` pulled onto what the input (``inputs``, as for :meth:`condition`) determines,
        for ``SamplingOptions.consistency``; ``None`` when the role has none."""
        return None


class BaseRole(Role):
    name = "base"
    title = "base (text-to-video)"
    takes_video = False
    aug_cond = False
    CONTINUATION_CHANNELS = 4  # known frames (3) + known-frame mask (1)

    def cond_channels(self, cfg):
        return self.CONTINUATION_CHANNELS if cfg.continuation else 0

    def validate(self, cfg):
        if cfg.unet.cond_channels != self.cond_channels(cfg):
            extra = " with continuation" if cfg.continuation else ""
            raise ValueError(
                f"A base stage{extra} needs unet.cond_channels={self.cond_channels(cfg)}; received {cfg.unet.cond_channels}."
            )

    def describe(self, cfg):
        return "base"

    def training_inputs(self, tcfg, x, rng):
        if not tcfg.stage.continuation:
            return {}
        masks = [_known_mask(rng, x.shape[2], tcfg.continuation_mix, tcfg.max_known) for _ in range(x.shape[0])]
        return {"known": x, "known_mask": torch.stack(masks)}

    def condition(self, cfg, inputs, aug_logsnr, augment):
        if not cfg.continuation:
            return {}
        return {"cond": known_frames_condition(augment(inputs["known"]), inputs["known_mask"]), "aug_logsnr": aug_logsnr}


def _known_mask(rng: np.random.Generator, frames: int, mix, max_known: int) -> torch.Tensor:
    """Training mixture of known frames: none, a prefix, first and last, or sparse."""
    kind = rng.choice(4, p=np.asarray(mix, dtype=np.float64))
    m = torch.zeros(frames)
    if kind == 1:
        m[: int(rng.integers(1, min(max_known, frames - 1) + 1))] = 1
    elif kind == 2:
        m[0] = m[-1] = 1
    elif kind == 3:
        m[torch.from_numpy(rng.random(frames) < 0.25)] = 1
    return m


class SpatialSRRole(Role):
    name = "ssr"
    title = "spatial super-resolution (SSR)"

    def cond_channels(self, cfg):
        return 3

    def validate(self, cfg):
        super().validate(cfg)
        if not cfg.spatial_factor > 1:
            raise ValueError(f"An SSR stage needs spatial_factor > 1; received {cfg.spatial_factor}.")

    def describe(self, cfg):
        return f"SSR x{cfg.spatial_factor:g}"

    def crop_multiple(self, cfg):
        return cfg.unet.size_multiple * round(cfg.spatial_factor)

    def check_training(self, tcfg):
        super().check_training(tcfg)
        s = tcfg.stage
        if s.width / s.spatial_factor != int(s.width / s.spatial_factor):
            raise ValueError(f"The SSR output width {s.width} must be divisible by its factor {s.spatial_factor}.")

    def training_inputs(self, tcfg, x, rng):
        f = tcfg.stage.spatial_factor
        return {"low": resize_video(x, (round(x.shape[-2] / f), round(x.shape[-1] / f))), "size": tuple(x.shape[-2:])}

    def condition(self, cfg, inputs, aug_logsnr, augment):
        up = resize_video(inputs["low"], inputs["size"])  # the same tensor when it already has the size
        return {"cond": augment(up), "aug_logsnr": aug_logsnr}

    def projection(self, cfg, inputs):
        if "source" in inputs:  # built by upsample_spatial: the unpadded input and the output's size before padding
            src, (h, w) = inputs["source"], inputs["crop"]
        elif tuple(inputs["low"].shape[-2:]) != tuple(inputs["size"]):  # training inputs (distillation): low-res clips
            src, (h, w) = inputs["low"], inputs["size"]
        else:  # an input already at the output size (e.g. pipeline.transform): nothing to project onto
            return None

        made = {}  # the projector onto src, per device and dtype: its input-only parts computed once

        def project(x0):
            key = (x0.device, x0.dtype)
            if key not in made:
                made[key] = ssr_projector(src.to(x0), (h, w))
            out = x0.clone()
            out[..., :h, :w] = made[key](x0[..., :h, :w])
            return out

        return project


class TemporalSRRole(Role):
    name = "tsr"
    title = "temporal super-resolution (TSR)"

    def cond_channels(self, cfg):
        return 4

    def validate(self, cfg):
        super().validate(cfg)
        f = cfg.temporal_factor
        if not (isinstance(f, int) and not isinstance(f, bool) and f >= 2):
            raise ValueError(f"A TSR stage needs an integer temporal_factor >= 2; received {f}.")

    def describe(self, cfg):
        return f"TSR x{cfg.temporal_factor}"

    def output_fps(self, cfg, fps, multiplier=None):
        return float(fps) * (cfg.temporal_factor if multiplier is None else multiplier)

    def check_training(self, tcfg):
        super().check_training(tcfg)
        s = tcfg.stage
        if tcfg.image_fraction:
            raise ValueError("A TSR stage cannot learn from still images: set image_fraction=0.")
        frames = tcfg.clip_frames or s.frames
        if frames % s.temporal_factor:
            raise ValueError(f"TSR training clips need a multiple of the factor {s.temporal_factor} frames; received {frames}.")

    def training_clip(self, tcfg, source, index, frames, rng):
        f = tcfg.stage.temporal_factor
        interp = rng.random() < tcfg.tsr_interpolate_fraction
        u8, cap = super().training_clip(tcfg, source, index, frames - (f - 1) if interp else frames, rng)
        if interp:  # pad to the batch length by repeating the last frame (its loss is real data too)
            u8 = np.concatenate([u8, np.repeat(u8[-1:], f - 1, axis=0)], axis=0)
        return u8, cap

    def training_inputs(self, tcfg, x, rng):
        return {"low": x[:, :, :: tcfg.stage.temporal_factor]}

    def condition(self, cfg, inputs, aug_logsnr, augment):
        cond = tsr_condition(augment(inputs["low"]), cfg.temporal_factor, inputs.get("mode", "imagen"))
        return {"cond": cond, "aug_logsnr": aug_logsnr}

    def projection(self, cfg, inputs):
        return tsr_projector(inputs["low"], cfg.temporal_factor, motion_radius=inputs.get("motion_search", 0.0))


_REGISTRY: dict[str, Role] = {}


def register_role(role: Role, *, replace: bool = False) -> Role:
    """Make ``role`` known by its name (configurations, stage files, training and sampling find it)."""
    if not role.name or not role.name.isidentifier():
        raise ValueError(f"A role needs a name that is an identifier; received {role.name!r}.")
    if role.name in _REGISTRY and not replace:
        raise ValueError(f"A role named {role.name!r} is already registered.")
    _REGISTRY[role.name] = role
    return role


def unregister_role(name: str) -> None:
    _REGISTRY.pop(name, None)


def role_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_role(name: str) -> Role:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"Unknown stage role {name!r}; expected one of {role_names()}.") from None


def require_role(stage, role: str, what: str) -> None:
    """Refuse a stage of another role, naming the file, what it is and what to connect instead."""
    cfg = stage.config
    if cfg.role != role:
        title = get_role(role).title
        raise ValueError(
            f"{what} needs a {title} model, but {stage.source or cfg.name or 'the model'} is a {cfg.describe()} stage. "
            f"Load a {role} stage file."
        )


def output_fps(cfg: StageConfig, fps: float, multiplier: int | None = None) -> float:
    """The frame rate a stage outputs for input at ``fps`` (TSR: ``fps x multiplier``; others keep it)."""
    if not (isinstance(fps, (int, float)) and not isinstance(fps, bool) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number; received {fps!r}.")
    return get_role(cfg.role).output_fps(cfg, float(fps), multiplier)


for _role in (BaseRole(), SpatialSRRole(), TemporalSRRole()):
    register_role(_role)
