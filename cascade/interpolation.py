"""What a user has instead of an SR stage, for the evaluation to beat: Lanczos resampling (an image
editor's best plain upscaler) and motion-compensated frame interpolation with optical flow (the
simple form of what RIFE/FILM-style interpolators do), plus the object-position error of the
inserted frames.

The flow baseline needs OpenCV (``pip install -r requirements-eval.txt``); it is used by the
evaluation only, never by a stage. Everything here works on videos ``(B, 3, T, H, W)`` in
``[-1, 1]``, like the rest of the library.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "flow_interpolate",
    "lanczos_resize",
    "lanczos_weights",
    "object_positions",
    "position_error",
    "require_cv2",
]


def lanczos_weights(n_in: int, n_out: int, a: int = 3) -> torch.Tensor:
    """``(n_out, n_in)`` resampling matrix of the Lanczos-``a`` filter (pixel centres aligned as in
    ``align_corners=False``; edges replicated; widened by the ratio when shrinking, so it also
    anti-aliases). Rows sum to 1."""
    if n_in < 1 or n_out < 1 or a < 1:
        raise ValueError(f"lanczos_weights needs sizes >= 1 and a >= 1; received {n_in}, {n_out}, {a}.")
    scale = n_in / n_out
    support = a * max(1.0, scale)
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        x = (i + 0.5) * scale - 0.5  # the output pixel centre in input coordinates
        lo, hi = math.floor(x - support) + 1, math.floor(x + support)
        for j in range(lo, hi + 1):
            d = (x - j) / max(1.0, scale)
            if abs(d) >= a:
                continue
            k = 1.0 if d == 0 else a * math.sin(math.pi * d) * math.sin(math.pi * d / a) / (math.pi * d) ** 2
            w[i, min(max(j, 0), n_in - 1)] += k
    return (w / w.sum(dim=1, keepdim=True)).float()


def lanczos_resize(video: torch.Tensor, size: tuple[int, int], a: int = 3) -> torch.Tensor:
    """Every frame of ``video`` (B, 3, T, h, w) resized to ``size`` with the separable Lanczos-``a``
    filter (Lanczos-3 is what image editors and PIL call *Lanczos*). Values may overshoot the
    input range slightly, as with any Lanczos; clamp for display."""
    h, w = video.shape[-2:]
    wy = lanczos_weights(h, int(size[0]), a).to(video.device, video.dtype)
    wx = lanczos_weights(w, int(size[1]), a).to(video.device, video.dtype)
    return torch.einsum("yh,bcthw,xw->bctyx", wy, video, wx)


def require_cv2():
    """OpenCV, or a clear error saying how to get it (the flow baseline is evaluation-only)."""
    try:
        import cv2  # noqa: PLC0415
    except ImportError as e:
        raise ImportError(
            "The optical-flow interpolation baseline needs OpenCV, an evaluation-only dependency: "
            "pip install -r requirements-eval.txt (opencv-python-headless). The stages themselves do not need it."
        ) from e
    return cv2


def _gray_u8(frame: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` in [-1, 1] -> ``(H, W)`` uint8 luma (BT.601)."""
    rgb = ((frame.float().clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).cpu().numpy()
    return np.clip(rgb @ np.array([0.299, 0.587, 0.114]) + 0.5, 0, 255).astype(np.uint8)


def _warp(frame: np.ndarray, flow: np.ndarray, cv2) -> np.ndarray:
    """Backward warp: ``out(x) = frame(x + flow(x))`` (bilinear; edges replicated)."""
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(frame, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def flow_interpolate(low: torch.Tensor, factor: int, *, winsize: int = 7, levels: int = 2) -> torch.Tensor:
    """The ``factor - 1`` frames between each pair of consecutive frames of ``low`` (B, 3, N, H, W),
    in order (the ``(N-1)*f + 1`` convention, like :func:`cascade.metrics.blend_frames`), by
    motion-compensated interpolation: Farneback optical flow both ways between the two frames, the
    flow from the in-between time t to each frame approximated from them (as in Super SloMo:
    ``F_t0 = -(1-t) t F_01 + t^2 F_10``, ``F_t1 = (1-t)^2 F_01 - t (1-t) F_10``), both frames
    warped to t and mixed ``(1-t) : t``."""
    cv2 = require_cv2()
    if int(factor) != factor or factor < 2:
        raise ValueError(f"flow_interpolate needs an integer factor >= 2; received {factor!r}.")
    b, c, n = low.shape[:3]
    if c != 3 or n < 2:
        raise ValueError(f"flow_interpolate needs (B, 3, N >= 2, H, W) frames; received {tuple(low.shape)}.")
    params = dict(pyr_scale=0.5, levels=levels, winsize=winsize, iterations=3, poly_n=5, poly_sigma=1.1, flags=0)
    out = torch.empty(b, 3, (n - 1) * (factor - 1), *low.shape[-2:], dtype=low.dtype)
    for i in range(b):
        rgb = [low[i, :, k].float().permute(1, 2, 0).cpu().numpy() for k in range(n)]
        gray = [_gray_u8(low[i, :, k]) for k in range(n)]
        o = 0
        for k in range(n - 1):
            f01 = cv2.calcOpticalFlowFarneback(gray[k], gray[k + 1], None, **params)
            f10 = cv2.calcOpticalFlowFarneback(gray[k + 1], gray[k], None, **params)
            for j in range(1, factor):
                t = j / factor
                ft0 = -(1 - t) * t * f01 + t * t * f10
                ft1 = (1 - t) ** 2 * f01 - t * (1 - t) * f10
                mid = (1 - t) * _warp(rgb[k], ft0, cv2) + t * _warp(rgb[k + 1], ft1, cv2)
                out[i, :, o] = torch.from_numpy(np.ascontiguousarray(mid)).permute(2, 0, 1).to(low.dtype)
                o += 1
    return out.to(low.device)


def _background(background, height: int, dtype) -> torch.Tensor:
    """One RGB triple, or two (a vertical gradient, as ``render_clip`` draws it), as a tensor that
    broadcasts against ``(B, 3, T, H, W)``."""
    bg = torch.tensor(background, dtype=dtype)
    if bg.shape == (2, 3):
        ramp = torch.linspace(0.0, 1.0, height, dtype=dtype)
        return (bg[0][:, None] * (1 - ramp) + bg[1][:, None] * ramp).reshape(1, 3, 1, height, 1)
    if bg.shape != (3,):
        raise ValueError(f"background must be one RGB triple or two (a gradient); received shape {tuple(bg.shape)}.")
    return bg.reshape(1, 3, 1, 1, 1)


def object_positions(
    video: torch.Tensor, background: tuple, contrast: torch.Tensor | None = None, level: float = 0.6
) -> torch.Tensor:
    """``(B, T, 2)`` position (x, y in pixels) of the solid object in each frame of ``video``
    (B, 3, T, H, W) in [-1, 1] on a plain ``background`` (RGB in [0, 1], or two: a vertical
    gradient): the circular mean (the
    shapes wrap around the borders) of the pixels whose distance from the background is at least
    ``level`` of the object's ``contrast`` (its colour's distance from the background; per video,
    ``(B,)``; default: the largest distance in each video). A faded or ghosted object (two
    half-visible copies, as linear blending makes) has no such pixels: NaN for that frame."""
    v = (video.float().clamp(-1, 1) + 1) / 2
    dist = (v - _background(background, v.shape[-2], v.dtype)).norm(dim=1)  # (B, T, H, W)
    if contrast is None:
        contrast = dist.flatten(1).amax(dim=1)
    thr = (level * contrast.to(dist.dtype)).reshape(-1, 1, 1, 1)
    wgt = (dist >= thr).to(dist.dtype)
    h, w = wgt.shape[-2:]

    def circular(profile: torch.Tensor, length: int) -> torch.Tensor:  # (B, T, L) -> (B, T)
        ang = 2 * math.pi * (torch.arange(length, dtype=profile.dtype) + 0.5) / length
        cs, sn = (profile * ang.cos()).sum(-1), (profile * ang.sin()).sum(-1)
        return (torch.atan2(sn, cs) / (2 * math.pi) % 1.0) * length - 0.5

    x, y = circular(wgt.sum(-2), w), circular(wgt.sum(-1), h)
    empty = wgt.sum(dim=(-2, -1)) <= 0
    pos = torch.stack([x, y], dim=-1)
    return torch.where(empty[..., None], torch.full_like(pos, float("nan")), pos)


def position_error(pred: torch.Tensor, target: torch.Tensor, background: tuple) -> float:
    """Mean distance in pixels (on the torus) between the solid object in ``pred`` and in
    ``target`` (:func:`object_positions`, with the target's contrast for both), frame by frame,
    both ``(B, 3, T, H, W)`` in [-1, 1]. A frame of ``pred`` with no solid object (faded, ghosted,
    missing) counts as the largest possible distance, half the diagonal."""
    h, w = target.shape[-2:]
    bg = _background(background, h, torch.float32)
    contrast = (((target.float().clamp(-1, 1) + 1) / 2) - bg).norm(dim=1).flatten(1).amax(dim=1)
    a, b = object_positions(pred, background, contrast), object_positions(target, background, contrast)
    d = (a - b).abs()
    d = torch.minimum(d, torch.tensor([w, h], dtype=d.dtype) - d)  # wrap around
    dist = d.norm(dim=-1)
    dist = torch.where(torch.isnan(a).any(-1), torch.full_like(dist, 0.5 * math.hypot(w, h)), dist)
    return float(dist[~torch.isnan(b).any(-1)].mean())
