"""Frozen, validated configurations. Every field name ends up in checkpoint files: never rename one.

* :class:`UNetConfig` - the Video U-Net (one network for base, SSR and TSR, spec §2.5).
* :class:`StageConfig` - a cascade stage: its role, scale factors, native size, schedule,
  parameterization, text encoder, and distillation record.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .schedule import CosineSchedule, check_refine_from

__all__ = ["DistillationInfo", "StageConfig", "UNetConfig", "FORMAT_VERSION"]

FORMAT_VERSION = 1


def _levels(name: str, value, n: int) -> tuple:
    value = tuple(value)
    if len(value) != n:
        raise ValueError(f"UNetConfig.{name} needs one entry per level ({n} levels, from `channels`); received {value}.")
    return value


@dataclass(frozen=True)
class UNetConfig:
    """Video U-Net hyper-parameters. Per-level tuples have one entry per resolution level."""

    channels: tuple[int, ...] = (64, 128, 256)
    num_res_blocks: int | tuple[int, ...] = 2
    spatial_attn: tuple[bool, ...] = (False, True, True)
    cross_attn: tuple[bool, ...] = (False, True, True)
    temporal_attn: tuple[bool, ...] = (False, True, True)
    temporal_conv: bool = True
    in_channels: int = 3
    cond_channels: int = 0
    out_channels: int = 3
    text_dim: int = 0  # width of the text token embeddings; 0 = no text conditioning
    emb_dim: int = 0  # width of the per-frame conditioning vector; 0 = 4 * channels[0]
    aug_cond: bool = False  # conditioned on the noise-augmentation level of its conditioning
    guidance_cond: bool = False  # conditioned on the guidance weight w (guided-distilled students)
    head_dim: int = 32
    ff_mult: int = 2
    norm_groups: int = 8
    rel_pos_buckets: int = 32
    rel_pos_max_distance: int = 64
    dropout: float = 0.0
    # space-to-depth patching of the input (and depth-to-space of the output): a 32x32 stage with
    # patch_size=2 runs its first level at 16x16 on 4x the channels, about the cost of a 16 px net
    patch_size: int = 1
    # a per-frame embedding of the frame's phase in its window, t / (T - 1) in [0, 1], added to the
    # conditioning vector (videos only; zero-initialised). Relative position bias alone tells the
    # network the order of frames but not *when* a frame is in the clip, so a text-conditional
    # prediction at high noise cannot move ("a circle crossing to the right"); the phase is defined
    # for any frame count, so the stage still runs on other window lengths
    frame_phase: bool = False
    # heads of a learned attention pooling of the text tokens, added to the mean-pooled text vector
    # in the conditioning vector (0: mean pooling only, as before)
    text_attn_pool: int = 0
    # SR stages: a skip from the low-resolution video (the first out_channels conditioning channels,
    # already upsampled / frame-repeated to the output) around the network: it sees the noisy video
    # minus alpha * that video and its v-prediction gets -sigma * it added, so the network learns
    # only what the input does not already say (the residual), while the stage stays an ordinary
    # v-prediction model of the full video (samplers, guidance, distillation unchanged). With noise
    # augmentation the skip carries alpha_aug times the augmented input, its least-squares estimate
    # of the clean one.
    cond_skip: bool = False

    def __post_init__(self) -> None:
        n = len(self.channels)
        if n < 1 or any(int(c) <= 0 for c in self.channels):
            raise ValueError(f"UNetConfig.channels must be a non-empty list of positive widths; received {self.channels}.")
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        nrb = self.num_res_blocks
        nrb = (int(nrb),) * n if isinstance(nrb, int) else _levels("num_res_blocks", nrb, n)
        if any(b < 1 for b in nrb):
            raise ValueError(f"UNetConfig.num_res_blocks must be >= 1 per level; received {self.num_res_blocks}.")
        object.__setattr__(self, "num_res_blocks", tuple(int(b) for b in nrb))
        for name in ("spatial_attn", "cross_attn", "temporal_attn"):
            object.__setattr__(self, name, tuple(bool(b) for b in _levels(name, getattr(self, name), n)))
        for c in self.channels:
            if c % self.norm_groups:
                raise ValueError(
                    f"Every channel width must be divisible by norm_groups={self.norm_groups}; received channels {self.channels}."
                )
        for i, c in enumerate(self.channels):
            if (self.spatial_attn[i] or self.cross_attn[i] or self.temporal_attn[i]) and c % self.head_dim:
                raise ValueError(f"Level {i} has attention, so its width {c} must be divisible by head_dim={self.head_dim}.")
        if any(self.cross_attn) and self.text_dim <= 0:
            raise ValueError("cross_attn is enabled at some level, so text_dim must be > 0 (the text embedding width).")
        if self.in_channels < 1 or self.out_channels < 1 or self.cond_channels < 0:
            raise ValueError("in_channels and out_channels must be >= 1 and cond_channels >= 0.")
        if int(self.patch_size) != self.patch_size or self.patch_size < 1:
            raise ValueError(f"UNetConfig.patch_size must be a positive integer; received {self.patch_size}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); received {self.dropout}.")
        if (
            int(self.text_attn_pool) != self.text_attn_pool
            or self.text_attn_pool < 0
            or (self.text_attn_pool and not self.text_dim)
        ):
            raise ValueError(f"text_attn_pool is a number of heads >= 0 and needs text_dim > 0; received {self.text_attn_pool}.")
        if self.cond_skip and self.cond_channels < self.out_channels:
            raise ValueError(
                f"cond_skip adds the conditioning video to the output, so cond_channels ({self.cond_channels}) "
                f"must be >= out_channels ({self.out_channels})."
            )
        if self.rel_pos_buckets < 4 or self.rel_pos_max_distance < 2:
            raise ValueError("rel_pos_buckets must be >= 4 and rel_pos_max_distance >= 2.")

    @property
    def embedding_dim(self) -> int:
        return self.emb_dim or 4 * self.channels[0]

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this (the patch, then one halving per level below the first)."""
        return self.patch_size * 2 ** (len(self.channels) - 1)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        return cls(**_known_fields(cls, d, "UNetConfig"))


@dataclass(frozen=True)
class DistillationInfo:
    """What a distilled student was distilled for. ``steps``: the step counts it supports."""

    steps: tuple[int, ...] = (8,)
    guided: bool = True
    w_min: float = 0.0
    w_max: float = 8.0
    sampler: str = "distilled_stochastic"
    teacher: str = ""
    teacher_steps: int = 0
    consistency: bool = False  # distilled with the projection onto the SR input: sample it with consistency on
    # the student's grid (SamplingOptions.refine_from; 1 = uniform): every k-th time of its teacher's grid, or with
    # keep_jump (cascade.distill) the teacher's own refine_from
    refine_from: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(int(s) for s in self.steps))
        if not self.steps or any(s < 1 for s in self.steps):
            raise ValueError(f"DistillationInfo.steps must list positive step counts; received {self.steps}.")
        if not 0 <= self.w_min <= self.w_max:
            raise ValueError(f"DistillationInfo needs 0 <= w_min <= w_max; received {self.w_min}, {self.w_max}.")
        check_refine_from(self.refine_from)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["steps"] = list(self.steps)
        if not self.consistency:  # files distilled without it read as before, in older versions too
            del d["consistency"]
        if self.refine_from >= 1.0:  # likewise for a uniform grid
            del d["refine_from"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DistillationInfo:
        return cls(**_known_fields(cls, d, "DistillationInfo"))


@dataclass(frozen=True)
class StageConfig:
    """A cascade stage. ``frames``/``height``/``width`` are the native *output* size it was trained at
    (SR stages accept any size); ``spatial_factor`` / ``temporal_factor`` are SSR / TSR factors."""

    role: str  # a registered role (cascade.roles): base, ssr, tsr, or one a plug-in registers
    unet: UNetConfig
    frames: int = 16
    height: int = 32
    width: int = 32
    fps: float = 4.0
    spatial_factor: float = 1.0
    temporal_factor: int = 1
    continuation: bool = False  # base only: has known-frame + mask input channels (story mode)
    schedule: CosineSchedule = field(default_factory=CosineSchedule)
    parameterization: str = "v"
    text_encoder: str = ""
    text_dim: int = 0
    max_tokens: int = 64
    distillation: DistillationInfo | None = None
    name: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        from .roles import get_role

        role = get_role(self.role)  # an unknown role is refused here, naming the known ones
        if self.parameterization != "v":
            raise ValueError(
                f"Only v-prediction is supported (every Imagen Video stage uses it); received {self.parameterization!r}."
            )
        role.validate(self)
        if self.text_dim != self.unet.text_dim:
            raise ValueError(f"StageConfig.text_dim ({self.text_dim}) must equal unet.text_dim ({self.unet.text_dim}).")
        if self.frames < 1 or self.height < 1 or self.width < 1 or not self.fps > 0:
            raise ValueError("frames, height, width must be >= 1 and fps > 0.")
        m = self.unet.size_multiple
        if self.height % m or self.width % m:
            raise ValueError(f"height and width must be multiples of {m} for this U-Net; received {self.height}x{self.width}.")
        if self.distillation is not None and self.distillation.guided and not self.unet.guidance_cond:
            raise ValueError("A guided-distilled student must have unet.guidance_cond=True.")

    @property
    def is_distilled(self) -> bool:
        return self.distillation is not None

    def describe(self) -> str:
        from .roles import get_role

        what = get_role(self.role).describe(self)
        steps = self.distillation.steps if self.distillation else ()  # a tuple (DistillationInfo)
        d = f", distilled to {'/'.join(map(str, steps))} step{'' if steps == (1,) else 's'}" if steps else ""
        return f"{what} ({self.frames}f {self.width}x{self.height} @ {self.fps:g} fps{d})"

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["unet"] = self.unet.to_dict()
        d["schedule"] = self.schedule.to_dict()
        d["distillation"] = self.distillation.to_dict() if self.distillation else None
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> StageConfig:
        if not isinstance(d, dict):
            raise ValueError(f"A stage configuration is a JSON object; received {type(d).__name__}.")
        missing = [k for k in ("role", "unet") if k not in d]
        if missing:
            raise ValueError(f"The stage configuration lacks {', '.join(missing)} (see `python -m cascade info --json FILE`).")
        d = dict(_known_fields(cls, d, "StageConfig"))
        d["unet"] = UNetConfig.from_dict(d["unet"])
        d["schedule"] = CosineSchedule.from_dict(d.get("schedule") or {"logsnr_min": -20, "logsnr_max": 20})
        if d.get("distillation"):
            d["distillation"] = DistillationInfo.from_dict(d["distillation"])
        return cls(**d)

    def replace(self, **changes: Any) -> StageConfig:
        from dataclasses import replace

        return replace(self, **changes)


def _known_fields(cls, d: dict, what: str) -> dict:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"{what} has unknown fields {unknown}: the file was written by a newer version of this pack; update it.")
    return d
