"""A hand-written attribute detector for moving-shapes videos (no learned weights; spec §5.5).

Reads colour, shape, direction and speed from a video ``(T, H, W, 3)`` in [0, 1]:

* foreground = pixels far from the background colour; coverage = distance / full distance;
* colour: mean of the strongly covered pixels -> nearest palette colour;
* position: circular (torus) mean of the coverage per frame, unwrapped over time;
* direction / speed: least-squares slope of the trajectory (dominant axis, sign; magnitude);
* shape: area over bounding box of the object's mask (square ~1.0, circle ~0.79, triangle ~0.55),
  median over frames. The mask is the largest connected region of pixels more than half the
  object's contrast away from the video's own background (per row: the median over frames and
  columns), so that a dimmer object, a lighter or graded background, blur or grain (what a
  generator's output shows) do not change the reading. The first version measured a soft coverage
  against the dataset's fixed background: on ground truth dimmed by 20 % it read the shape right
  in 34 % of clips (chance), on ground truth with grain (sigma 0.05) in 58 %.
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
# triangle | circle | square: midpoints between the classes' median fills on ground truth
# (32 px: 0.556 / 0.790 / 1.0; 64 px: 0.525 / 0.791 / 1.0)
_FILL_SPLITS = (0.67, 0.90)
_MIN_CONTRAST = 0.15


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

    xs, ys = [], []
    for f in range(t):
        cx, cy = _circular_mean(cov[f], w, 0), _circular_mean(cov[f], h, 1)
        if cx is None or cy is None:
            continue
        xs.append(cx)
        ys.append(cy)
    if len(xs) < 2:
        return Detection(colour, None, None, None)
    fills = _fills(v)
    fill = float(np.median(fills)) if fills else float("nan")
    shape = None if not fills else "triangle" if fill < _FILL_SPLITS[0] else "circle" if fill < _FILL_SPLITS[1] else "square"
    frames = np.arange(len(xs), dtype=np.float64)
    vx = np.polyfit(frames, np.unwrap(np.array(xs) * 2 * np.pi) / (2 * np.pi), 1)[0]
    vy = np.polyfit(frames, np.unwrap(np.array(ys) * 2 * np.pi) / (2 * np.pi), 1)[0]
    if abs(vx) >= abs(vy):
        direction = "right" if vx > 0 else "left"
    else:
        direction = "down" if vy > 0 else "up"
    speed = "quickly" if max(abs(vx), abs(vy)) / frame_step > _SPEED_SPLIT else "slowly"
    return Detection(colour, shape, direction, speed, fill, (float(vx), float(vy)))


def _fills(v: np.ndarray) -> list[float]:
    """Per frame, the object's mask area over its bounding box (see the module's docstring)."""
    t, h, w, _ = v.shape
    bg = np.median(v.transpose(1, 0, 2, 3).reshape(h, t * w, 3), axis=1)  # (H, 3)
    dist = np.linalg.norm(v - bg[None, :, None], axis=-1)
    peak = float(np.percentile(dist, 99.5))
    if peak < _MIN_CONTRAST:
        return []
    mask = dist > 0.5 * peak
    out = []
    for f in range(t):
        m = mask[f].astype(np.float32)
        cx, cy = _circular_mean(m, w, 0), _circular_mean(m, h, 1)
        if cx is None or cy is None:
            continue
        centred = np.roll(mask[f], (int(round(h / 2 - cy * h)), int(round(w / 2 - cx * w))), axis=(0, 1))
        region = _largest_region(centred)
        if len(region) < 4:
            continue
        ys, xs = np.array(region).T
        out.append(len(region) / float((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)))
    return out


def _largest_region(mask: np.ndarray) -> list[tuple[int, int]]:
    """The largest 4-connected region of a boolean image, as its pixels."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    best: list[tuple[int, int]] = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        stack, region = [(int(y0), int(x0))], []
        while stack:
            y, x = stack.pop()
            region.append((y, x))
            for yy, xx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not seen[yy, xx]:
                    seen[yy, xx] = True
                    stack.append((yy, xx))
        if len(region) > len(best):
            best = region
    return best
