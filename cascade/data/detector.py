"""A hand-written attribute detector for moving-shapes videos (no learned weights; spec §5.5).

Reads colour, shape, direction and speed from a video ``(T, H, W, 3)`` in [0, 1]:

* foreground = pixels far from the background colour; coverage = distance / full distance;
* colour: mean of the strongly covered pixels -> nearest palette colour;
* position: circular (torus) mean of the coverage per frame, unwrapped over time;
* direction / speed: least-squares slope of the trajectory (dominant axis, sign; magnitude);
* shape: coverage area over its bounding box (square ~1.0, circle ~0.79, triangle ~0.5),
  measured after centring the object, median over frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .shapes import BACKGROUND, COLOURS, SPEEDS

__all__ = ["Detection", "detect"]

_BG = np.array(BACKGROUND, dtype=np.float32)
_PALETTE = {k: np.array(v, dtype=np.float32) for k, v in COLOURS.items()}
_SPEED_SPLIT = math.sqrt(SPEEDS["slowly"] * SPEEDS["quickly"])
_FILL_SPLITS = (0.64, 0.90)  # triangle | circle | square


@dataclass(frozen=True)
class Detection:
    colour: str | None
    shape: str | None
    direction: str | None
    speed: str | None
    fill: float = float("nan")
    velocity: tuple[float, float] = (float("nan"), float("nan"))

    def as_tuple(self) -> tuple:
        return (self.colour, self.shape, self.direction, self.speed)


def _circular_mean(weights: np.ndarray, axis_len: int, axis: int) -> float | None:
    w = weights.sum(axis=axis)  # profile along the other axis
    total = w.sum()
    if total <= 1e-6:
        return None
    ang = 2 * np.pi * (np.arange(axis_len) + 0.5) / axis_len
    c, s = (w * np.cos(ang)).sum() / total, (w * np.sin(ang)).sum() / total
    return (math.atan2(s, c) / (2 * np.pi)) % 1.0


def detect(video: np.ndarray, *, frame_step: int = 1) -> Detection:
    """``video``: ``(T, H, W, 3)`` float in [0, 1] (or uint8). ``frame_step``: reference frames per
    video frame (2 for the base stage's half rate), used to read the speed."""
    v = np.asarray(video)
    v = v.astype(np.float32) / 255.0 if v.dtype == np.uint8 else v.astype(np.float32)
    t, h, w, _ = v.shape
    dist = np.linalg.norm(v - _BG, axis=-1)  # (T, H, W)
    strong = dist > 0.5 * dist.max() if dist.max() > 0.15 else np.zeros_like(dist, dtype=bool)
    if strong.sum() < 1:
        return Detection(None, None, None, None)
    mean = v[strong].mean(axis=0)
    colour = min(_PALETTE, key=lambda k: float(np.linalg.norm(_PALETTE[k] - mean)))
    full = float(np.linalg.norm(_PALETTE[colour] - _BG))
    cov = np.clip(dist / full, 0.0, 1.0)
    cov = np.where(cov > 0.15, cov, 0.0)  # ignore faint noise

    xs, ys, fills = [], [], []
    for f in range(t):
        cx, cy = _circular_mean(cov[f], w, 0), _circular_mean(cov[f], h, 1)
        if cx is None or cy is None:
            continue
        xs.append(cx)
        ys.append(cy)
        centred = np.roll(cov[f], (int(round(h / 2 - cy * h)), int(round(w / 2 - cx * w))), axis=(0, 1))
        width, height = centred.max(axis=0).sum(), centred.max(axis=1).sum()
        if width * height > 0:
            fills.append(centred.sum() / (width * height))
    if len(xs) < 2:
        return Detection(colour, None, None, None)
    fill = float(np.median(fills))
    shape = "triangle" if fill < _FILL_SPLITS[0] else ("circle" if fill < _FILL_SPLITS[1] else "square")
    frames = np.arange(len(xs), dtype=np.float64)
    vx = np.polyfit(frames, np.unwrap(np.array(xs) * 2 * np.pi) / (2 * np.pi), 1)[0]
    vy = np.polyfit(frames, np.unwrap(np.array(ys) * 2 * np.pi) / (2 * np.pi), 1)[0]
    if abs(vx) >= abs(vy):
        direction = "right" if vx > 0 else "left"
    else:
        direction = "down" if vy > 0 else "up"
    speed = "quickly" if max(abs(vx), abs(vy)) / frame_step > _SPEED_SPLIT else "slowly"
    return Detection(colour, shape, direction, speed, fill, (float(vx), float(vy)))
