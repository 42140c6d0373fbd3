"""Overlapping windows (frames) and tiles (pixels) fused at every denoising step.

:class:`WindowedDenoiser` wraps a denoiser so that a long or large video is denoised piece by
piece with bounded memory: each piece sees its slice of the state and of every conditioning
tensor, and the x0 predictions are blended with linear ramps in the overlaps at *every* step
(MultiDiffusion / Gen-L-Video / AnimateDiff context windows), so no seams appear.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch

__all__ = ["WindowedDenoiser", "window_starts", "ramp_weights"]


def window_starts(length: int, window: int, overlap: int) -> list[int]:
    """Start indices of windows of size ``window`` covering ``[0, length)`` with at least
    ``overlap`` shared entries between neighbours; the last window ends exactly at ``length``."""
    if window <= 0 or length <= window:
        return [0]
    if not 0 <= overlap < window:
        raise ValueError(f"The overlap ({overlap}) must be >= 0 and smaller than the window ({window}).")
    stride = window - overlap
    starts = list(range(0, length - window, stride))
    starts.append(length - window)
    return starts


def ramp_weights(size: int, overlap: int, first: bool, last: bool) -> torch.Tensor:
    """1 in the middle, linear ramps over ``overlap`` entries at the inner edges."""
    w = torch.ones(size)
    if overlap > 0:
        ramp = torch.arange(1, overlap + 1, dtype=torch.float32) / (overlap + 1)
        n = min(overlap, size)
        if not first:
            w[:n] = torch.minimum(w[:n], ramp[:n])
        if not last:
            w[size - n :] = torch.minimum(w[size - n :], ramp[:n].flip(0))
    return w


class WindowedDenoiser:
    """``dims``: ``{axis: (window, overlap)}`` over the video axes 2 (frames), 3 (H), 4 (W).

    Tensor keyword arguments with the same size as the state on a windowed axis (e.g. ``cond``)
    are sliced with it; everything else is passed through. ``on_eval`` is called after every
    piece (for progress bars and Cancel).
    """

    def __init__(self, denoise: Callable, dims: dict[int, tuple[int, int]], on_eval: Callable[[], None] | None = None):
        self.denoise, self.dims, self.on_eval = denoise, dims, on_eval

    def plan(self, shape) -> list[tuple[tuple[int, slice, torch.Tensor], ...]]:
        per_axis = []
        for axis, (window, overlap) in self.dims.items():
            length = shape[axis]
            starts = window_starts(length, window, overlap)
            size = min(window, length) if window > 0 else length
            per_axis.append(
                [
                    (axis, slice(s, s + size), ramp_weights(size, min(overlap, size - 1), i == 0, i == len(starts) - 1))
                    for i, s in enumerate(starts)
                ]
            )
        return list(itertools.product(*per_axis))

    def count(self, shape) -> int:
        return len(self.plan(shape))

    def __call__(self, x: torch.Tensor, sigma, **cond) -> torch.Tensor:
        pieces = self.plan(x.shape)
        if len(pieces) == 1 and all(sl.stop - sl.start == x.shape[ax] for ax, sl, _ in pieces[0]):
            out = self.denoise(x, sigma, **cond)
            if self.on_eval:
                self.on_eval()
            return out
        acc = torch.zeros_like(x, dtype=torch.float32)
        wsum = torch.zeros([1, 1, *x.shape[2:]], dtype=torch.float32, device=x.device)
        for piece in pieces:
            idx = [slice(None)] * x.ndim
            weight = torch.ones([1] * x.ndim)
            for axis, sl, w in piece:
                idx[axis] = sl
                weight = weight * w.reshape([-1 if d == axis else 1 for d in range(x.ndim)])
            sub = {k: self._slice(v, x.shape, piece) for k, v in cond.items()}
            x0 = self.denoise(x[tuple(idx)], sigma, **sub).float()
            weight = weight.to(x.device)
            acc[tuple(idx)] += x0 * weight
            wsum[(slice(None), slice(None), *idx[2:])] += weight
            if self.on_eval:
                self.on_eval()
        return acc / wsum

    @staticmethod
    def _slice(v, shape, piece):
        if not isinstance(v, torch.Tensor) or v.ndim != len(shape):
            return v
        idx = [slice(None)] * v.ndim
        for axis, sl, _ in piece:
            if v.shape[axis] == shape[axis]:
                idx[axis] = sl
        return v[tuple(idx)]
