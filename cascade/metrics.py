"""Metrics of the evaluation: PSNR / SSIM, prompt adherence read by the detector, and the
interpolation baselines a user has instead of an SR stage (bicubic, frame repetition, blending)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .data.detector import detect
from .data.shapes import Attributes
from .frames import video_to_frames

__all__ = [
    "ATTRS",
    "adherence",
    "blend_frames",
    "bicubic_upscale",
    "merge_adherence",
    "psnr",
    "repeat_frames",
    "score_detections",
    "ssim",
]

ATTRS = ("colour", "shape", "direction", "speed")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of videos in [0, 1] (averaged MSE over everything)."""
    mse = F.mse_loss(a.float(), b.float()).item()
    return float(10 * np.log10(1.0 / max(mse, 1e-12)))


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM (Gaussian window 7, sigma 1.5) over frames and channels of ``(B, 3, T, H, W)`` in [0, 1]."""
    x = a.float().transpose(1, 2).reshape(-1, 1, *a.shape[-2:])
    y = b.float().transpose(1, 2).reshape(-1, 1, *b.shape[-2:])
    g = torch.exp(-((torch.arange(7) - 3) ** 2) / (2 * 1.5**2))
    w = (g[:, None] * g[None]) / (g.sum() ** 2)
    w = w[None, None]

    def blur(z):
        return F.conv2d(z, w, padding=3)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def adherence(videos: torch.Tensor, attrs: list[Attributes], frame_step: int) -> dict:
    """Detector accuracy for ``videos`` (B, 3, T, H, W) in [-1, 1]."""
    return score_detections([detect(video_to_frames(v).numpy(), frame_step=frame_step).as_tuple() for v in videos], attrs)


def score_detections(read: list[tuple], attrs: list[Attributes]) -> dict:
    """Per attribute and all four: the fraction of detections (``Detection.as_tuple()``) that match ``attrs``."""
    if len(read) != len(attrs):
        raise ValueError(f"{len(read)} detections for {len(attrs)} prompts.")
    hits = {k: 0 for k in ATTRS}
    all_ok = 0
    for d, a in zip(read, attrs):
        ok = [x == y for x, y in zip(d, a.as_tuple())]
        for k, o in zip(ATTRS, ok):
            hits[k] += o
        all_ok += all(ok)
    n = len(attrs)
    return {**{k: hits[k] / n for k in ATTRS}, "all": all_ok / n, "n": n}


def merge_adherence(parts: list[dict]) -> dict:
    n = sum(p["n"] for p in parts)
    return {**{k: sum(p[k] * p["n"] for p in parts) / n for k in (*ATTRS, "all")}, "n": n}


def bicubic_upscale(low: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Every frame of ``low`` (B, 3, T, h, w) resized to ``size`` with bicubic interpolation."""
    b, c, t = low.shape[:3]
    frames = low.transpose(1, 2).reshape(b * t, c, *low.shape[-2:])
    up = F.interpolate(frames, size=tuple(size), mode="bicubic", align_corners=False)
    return up.reshape(b, t, c, *up.shape[-2:]).transpose(1, 2)


def _inserted(low: torch.Tensor, factor: int, weight) -> torch.Tensor:
    """The frames between consecutive frames of ``low`` (the ``(N-1)*f + 1`` convention), in order:
    ``weight(j / f) `` mixes frame k (1 - a) with frame k + 1 (a) for the j-th inserted frame."""
    out = []
    for k in range(low.shape[2] - 1):
        for j in range(1, factor):
            a = weight(j / factor)
            out.append(low[:, :, k] * (1 - a) + low[:, :, k + 1] * a)
    return torch.stack(out, dim=2)


def repeat_frames(low: torch.Tensor, factor: int) -> torch.Tensor:
    """Frame repetition: each inserted frame repeats the input frame before it."""
    return _inserted(low, factor, lambda a: 0.0)


def blend_frames(low: torch.Tensor, factor: int) -> torch.Tensor:
    """Linear blending: each inserted frame mixes its two neighbours by its position between them."""
    return _inserted(low, factor, lambda a: a)


def inserted_indices(n_out: int, factor: int) -> list[int]:
    """Indices of the inserted (not input) frames of an ``(N-1)*f + 1`` video."""
    return [i for i in range(n_out) if i % factor]
