"""How SR stages (and the continuation base) see their conditioning video (spec §1.6).

* SSR: antialiased bilinear resize of the low-resolution video to the output size, by any factor.
* TSR: each output frame repeats the nearest earlier input frame; a mask channel marks output
  frames that land exactly on an input frame. Two frame-count conventions: the paper's ``N*m``
  (``"imagen"``) and the ``(N-1)*m + 1`` that frame interpolators produce (``"interpolate"``).
* Base continuation: known frames (zeros elsewhere) + the known-frame mask.

Consistency projections (``SamplingOptions.consistency``) pull an SR stage's denoised prediction
onto what its input already determines, at every sampling step:

* SSR (:func:`ssr_project`): iterative back-projection (Irani & Peleg): add the upsampled error
  between the input and the prediction resized to the input's size, so that the output, resized
  back down, is the input; before that, where the input is flat (its range over 3x3 pixels is
  small), the prediction is replaced by the upsampled input, softly (weight ``exp(-(r / tau)^2)``
  for a range ``r``): a flat area stays flat instead of keeping the faint grain a network's last
  step leaves in it.
* TSR (:func:`tsr_project`): the output frames that land on input frames become the input frames
  (the error there is interpolated linearly in time over the frames between them, where the
  network's error is correlated), and between two input frames, a pixel that both of them agree on
  takes their linear blend, softly (weight ``exp(-(d / tau)^2)`` for a difference ``d``): what does
  not move is copied, the network draws what moves. With a motion search (``motion_search`` pixels),
  where they disagree in place the two frames are matched along the displacement they agree on best
  (symmetric block matching), and a moving object both show is copied too; the network draws what
  neither shows (what appears or disappears) and what the search cannot match.

Videos are ``(B, C, T, H, W)`` in [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "TSR_MODES",
    "check_motion_search",
    "fit_video",
    "MotionMatch",
    "known_frames_condition",
    "motion_compensated_pairs",
    "resize_video",
    "ssr_project",
    "ssr_projector",
    "tsr_condition",
    "tsr_project",
    "tsr_projector",
    "tsr_input_indices",
    "tsr_output_frames",
]

TSR_MODES = ("imagen", "interpolate")


def _check_video(video: torch.Tensor, what: str = "video") -> None:
    if video.ndim != 5:
        raise ValueError(f"The {what} must be (B, C, T, H, W); received shape {tuple(video.shape)}.")
    if min(video.shape) < 1:
        raise ValueError(f"The {what} is empty: shape {tuple(video.shape)}.")


def resize_video(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of every frame to ``size = (H, W)``."""
    _check_video(video)
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ValueError(f"The target size must be positive; received {h}x{w}.")
    b, c, t, _, _ = video.shape
    if video.shape[-2:] == (h, w):
        return video
    frames = video.transpose(1, 2).reshape(b * t, c, *video.shape[-2:])
    out = F.interpolate(frames.float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return out.to(video.dtype).reshape(b, t, c, h, w).transpose(1, 2)


def fit_video(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``video`` (B, C, T, h, w) centre-cropped to the aspect ratio of ``size = (H, W)`` and resized
    to it (antialiased), as image-to-video nodes fit a picture to the frame."""
    _check_video(video)
    h, w = video.shape[-2:]
    th, tw = int(size[0]), int(size[1])
    if h * tw > w * th:  # too tall: crop rows
        ch = max(1, round(w * th / tw))
        top = (h - ch) // 2
        video = video[..., top : top + ch, :]
    elif h * tw < w * th:  # too wide: crop columns
        cw = max(1, round(h * tw / th))
        left = (w - cw) // 2
        video = video[..., left : left + cw]
    return resize_video(video, (th, tw))


def tsr_output_frames(n: int, factor: int, mode: str = "imagen") -> int:
    """Number of output frames for ``n`` input frames."""
    _check_tsr(n, factor, mode)
    return n * factor if mode == "imagen" else (n - 1) * factor + 1


def tsr_input_indices(n_out: int, factor: int) -> torch.Tensor:
    """For each output frame, the input frame it repeats (nearest earlier): ``i // factor``."""
    return torch.arange(n_out) // factor


def tsr_condition(video: torch.Tensor, factor: int, mode: str = "imagen") -> torch.Tensor:
    """``(B, 3, N, H, W)`` -> ``(B, 4, N', H, W)``: repeated frames and the known-frame mask."""
    _check_video(video)
    n = video.shape[2]
    n_out = tsr_output_frames(n, factor, mode)
    idx = tsr_input_indices(n_out, factor).to(video.device)
    rep = video.index_select(2, idx)
    known = (torch.arange(n_out, device=video.device) % factor == 0).to(video.dtype)
    mask = known.reshape(1, 1, n_out, 1, 1).expand(video.shape[0], 1, n_out, *video.shape[-2:])
    return torch.cat([rep, mask], dim=1)


def known_frames_condition(known: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Base-continuation conditioning: ``known (B, 3, T, H, W)`` zeroed where ``mask (B, T)`` is 0,
    plus the mask as a 4th channel."""
    _check_video(known, "known-frame video")
    b, _, t, h, w = known.shape
    if tuple(mask.shape) != (b, t):
        raise ValueError(f"The known-frame mask must be (B, T) = ({b}, {t}); received {tuple(mask.shape)}.")
    m = mask.to(known.dtype).reshape(b, 1, t, 1, 1)
    return torch.cat([known * m, m.expand(b, 1, t, h, w)], dim=1)


def _check_tsr(n: int, factor: int, mode: str) -> None:
    if mode not in TSR_MODES:
        raise ValueError(f"Unknown frame-count mode {mode!r}; choose {TSR_MODES[0]!r} (N*m) or {TSR_MODES[1]!r} ((N-1)*m+1).")
    if isinstance(factor, bool) or int(factor) != factor or factor < 1:
        raise ValueError(f"The temporal multiplier must be an integer >= 1; received {factor!r}.")
    if n < 1 or (mode == "interpolate" and n < 2 and factor > 1):
        raise ValueError(
            f"Temporal super-resolution in {mode!r} mode needs at least {1 if mode == 'imagen' else 2} input frames; received {n}."
        )


SSR_BACK_PROJECTIONS = 3
# chosen on 16 clips the evaluation does not use (seed 99; docs/measurements.md): 0 / 0.02 / 0.05 / 0.1 gave 40.80 / 41.07 /
# 41.08 / 41.08 dB at 16 steps and grain in flat areas of 1.5 / 0.023 / 0.020 / 0.016 8-bit levels; 0.05
# ([-1, 1] units, about 6 levels) leaves any texture with more contrast than that to the network
SSR_FLAT_TAU = 0.05
# chosen on clips the evaluation does not use: 0.1 / 0.2 / 0.4 / 0.8 gave slow motion 41.0 / 41.4 / 42.7 /
# 43.9 dB against blending's 44.1, seen motion 38.6 / 38.5 / 38.1 / 36.6 dB (docs/measurements.md)
TSR_AGREEMENT_TAU = 0.8
# motion-compensated agreement (motion_search > 0): where two input frames disagree in place, the weight
# exp(-(d / tau)^2) of their blend along the displacement they agree on best; chosen on 16 seed-99 clips per
# set that the evaluation does not use (docs/measurements.md)
TSR_MOTION_TAU = 0.2
# a clear match takes precedence over the in-place agreement: a displacement of at least TSR_CLEAR_MOTION
# px whose patch agrees TSR_CLEAR_RATIO times better than along any shorter one, over a patch with texture
# (standard deviation over it, summed over channels, above TSR_CLEAR_TEXTURE; two flat patches agree along
# any displacement). Shorter motion stays with the in-place blend, which is near exact below a pixel or
# so. Chosen on 16 seed-99 clips per set that the evaluation does not use (docs/measurements.md)
TSR_CLEAR_MOTION = 1.5
TSR_CLEAR_RATIO = 4.0
TSR_CLEAR_TEXTURE = 0.03
MAX_MOTION_SEARCH = 8.0  # pixels: the search tries (4 * r + 1)^2 displacements


def check_motion_search(radius: float) -> None:
    """``motion_search`` is a distance in pixels in [0, MAX_MOTION_SEARCH] (0: no motion search)."""
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not 0 <= radius <= MAX_MOTION_SEARCH:
        raise ValueError(
            f"motion_search is a distance in pixels from 0 (copy only what does not move) to {MAX_MOTION_SEARCH:g}; "
            f"received {radius!r}."
        )


def ssr_project(
    x0: torch.Tensor, low: torch.Tensor, iterations: int = SSR_BACK_PROJECTIONS, tau: float = SSR_FLAT_TAU
) -> torch.Tensor:
    """Back-project ``x0 (B, C, T, H, W)`` onto the low-resolution ``low (B, C, T, h, w)``: after it,
    ``resize_video(x0, (h, w))`` is close to ``low`` (exactly in the limit of iterations). With
    ``tau > 0``, where ``low`` is flat (range ``r`` over its 3x3 neighbourhood, all channels) ``x0``
    first moves to the upsampled ``low`` by ``exp(-(r / tau)^2)``."""
    return ssr_projector(low, tuple(x0.shape[-2:]), iterations, tau)(x0)


def ssr_projector(
    low: torch.Tensor, size: tuple[int, int], iterations: int = SSR_BACK_PROJECTIONS, tau: float = SSR_FLAT_TAU
) -> Callable[[torch.Tensor], torch.Tensor]:
    """:func:`ssr_project` onto ``low`` for predictions of ``size = (H, W)``, with what depends on
    ``low`` alone (the flat-area weight and the upsampled input) computed once, for every step."""
    flat = up = None
    if tau > 0:
        b, c, t, h, w = low.shape
        frames = low.transpose(1, 2).reshape(b * t, c, h, w)
        spread = (F.max_pool2d(frames, 3, 1, 1) + F.max_pool2d(-frames, 3, 1, 1)).amax(1, keepdim=True)
        flat = F.interpolate(torch.exp(-((spread / tau) ** 2)), size=size, mode="nearest")
        flat = flat.reshape(b, t, 1, *size).transpose(1, 2)
        up = resize_video(low, size)

    def project(x0: torch.Tensor) -> torch.Tensor:
        if flat is not None:
            x0 = x0 + flat.to(x0.dtype) * (up.to(x0.dtype) - x0)
        for _ in range(int(iterations)):
            x0 = x0 + resize_video(low - resize_video(x0, low.shape[-2:]), x0.shape[-2:])
        return x0

    return project


def _between(n_out: int, factor: int, n_in: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each output frame: the input frames before and after it and its weight towards the later
    one (frames past the last input frame hold it: weight 0)."""
    t = torch.arange(n_out, device=device)
    before = (t // factor).clamp(max=n_in - 1)
    after = (before + 1).clamp(max=n_in - 1)
    w = torch.where(after > before, (t - before * factor).float() / factor, torch.zeros(()))
    return before, after, w


def _pixel_grid(frames: torch.Tensor) -> torch.Tensor:
    """``grid_sample``'s grid of the pixel centres of ``frames (K, C, H, W)``: ``(K, H, W, 2)``."""
    k, _, h, w = frames.shape
    ys = (2 * torch.arange(h, device=frames.device, dtype=frames.dtype) + 1) / h - 1
    xs = (2 * torch.arange(w, device=frames.device, dtype=frames.dtype) + 1) / w - 1
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).expand(k, h, w, 2)


def _shifted(frames: torch.Tensor, grid: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``frames (K, C, H, W)`` sampled at ``p + shift[k]`` (pixels, ``(K, 2)`` as x, y; ``grid`` from
    :func:`_pixel_grid`), bilinear, edges held."""
    k, _, h, w = frames.shape
    scale = torch.tensor([2.0 / w, 2.0 / h], device=frames.device, dtype=frames.dtype)
    grid = grid + (shift.to(frames.dtype) * scale).reshape(k, 1, 1, 2)
    return F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)


class MotionMatch(NamedTuple):
    """What :func:`motion_compensated_pairs` found per pixel: the two frames sampled along the best
    displacement, and where that match is clear (a bool ``(K, 1, H, W)``; see ``TSR_CLEAR_MOTION``)."""

    a: torch.Tensor
    b: torch.Tensor
    clear: torch.Tensor


def motion_compensated_pairs(
    a: torch.Tensor, b: torch.Tensor, w: torch.Tensor, radius: float, step: float = 0.5, patch: int = 7
) -> MotionMatch:
    """Bilateral motion search (frame-rate up-conversion's symmetric block matching): for frames
    ``a``, ``b`` ``(K, C, H, W)`` and the time ``w[k]`` in (0, 1) of the frame to make between them,
    find per pixel the displacement ``d`` (from ``a`` to ``b``, every ``step`` px up to ``radius``
    in x and y) along which ``a(p - w d)`` and ``b(p + (1 - w) d)`` agree best over a ``patch``
    x ``patch`` neighbourhood (ties go to the shorter ``d``), and return those two samplings and where
    the match is clear: ``|d|`` at least ``TSR_CLEAR_MOTION`` px, its patch cost at most
    1 / ``TSR_CLEAR_RATIO`` of the best shorter displacement's, over a patch of ``a`` with texture. With
    ``d = 0`` only (``radius`` 0) they are ``a`` and ``b`` (what does not move) and nothing is clear."""
    if radius <= 0:
        return MotionMatch(a, b, torch.zeros_like(a[:, :1], dtype=torch.bool))
    n = int(math.floor(radius / step))
    offsets = torch.arange(-n, n + 1, dtype=a.dtype, device=a.device) * step
    wk = w.to(a.dtype).reshape(-1, 1)
    grid = _pixel_grid(a)
    pool = lambda v: F.avg_pool2d(v, patch, 1, patch // 2, count_include_pad=False)  # noqa: E731
    best = best_a = best_b = best_raw = long = short = None
    for dy in offsets:
        for dx in offsets:
            d = torch.stack([dx, dy]).reshape(1, 2)
            sa, sb = _shifted(a, grid, -wk * d), _shifted(b, grid, (1 - wk) * d)
            raw = pool(((sa - sb) ** 2).sum(1, keepdim=True))
            is_long = math.hypot(float(dx), float(dy)) >= TSR_CLEAR_MOTION
            if not is_long:
                short = raw if short is None else torch.minimum(short, raw)
            cost = raw + 1e-4 * float(dx**2 + dy**2)  # ties (flat areas): the shorter displacement
            if best is None:
                best, best_a, best_b, best_raw = cost, sa, sb, raw
                long = torch.full_like(raw, is_long, dtype=torch.bool)
            else:
                better = cost < best
                best = torch.where(better, cost, best)
                best_a, best_b = torch.where(better, sa, best_a), torch.where(better, sb, best_b)
                best_raw = torch.where(better, raw, best_raw)
                long = torch.where(better, is_long, long)
    texture = (pool(best_a**2) - pool(best_a) ** 2).clamp(min=0).sum(1, keepdim=True)
    clear = long & (short > TSR_CLEAR_RATIO * best_raw) & (texture > TSR_CLEAR_TEXTURE**2)
    return MotionMatch(best_a, best_b, clear)


def tsr_project(
    x0: torch.Tensor, low: torch.Tensor, factor: int, tau: float = TSR_AGREEMENT_TAU, motion_radius: float = 0.0
) -> torch.Tensor:
    """Project a TSR prediction ``x0 (B, C, N', H, W)`` onto its input ``low (B, C, N, H, W)``,
    whose frame ``i`` is output frame ``i * factor`` (both frame-count modes)."""
    return tsr_projector(low, factor, tau, motion_radius)(x0)


def tsr_projector(
    low: torch.Tensor, factor: int, tau: float = TSR_AGREEMENT_TAU, motion_radius: float = 0.0
) -> Callable[[torch.Tensor], torch.Tensor]:
    """:func:`tsr_project` onto ``low``, with what depends on ``low`` alone (the blend of the input
    frames around each inserted frame and where they agree) computed once per output length. With
    ``motion_radius`` > 0 (pixels), where the two input frames disagree in place (weight ``1 - agree``)
    the prediction is then pulled to their blend along the displacement they agree on best
    (:func:`motion_compensated_pairs`; weight ``exp(-(d / TSR_MOTION_TAU)^2)`` for their difference
    ``d`` there), so a moving object they both show is copied at its place in between. Where that match
    is clear (a long displacement that agrees far better than any short one) it takes precedence: its
    weight replaces the in-place blend's instead of taking what that left, which matters where an object
    is close in colour to what it moves over."""
    made: dict = {}

    def parts(n_out: int, like: torch.Tensor):
        key = (n_out, like.device, like.dtype)
        if key not in made:
            lo = low.to(like)
            bsz, c, n, h, w_ = lo.shape
            if (n - 1) * factor >= n_out:
                raise ValueError(
                    f"{n} input frames at x{factor} need at least {(n - 1) * factor + 1} output frames; received {n_out}."
                )
            before, after, w = _between(n_out, factor, n, like.device)
            a, b = lo[:, :, before], lo[:, :, after]
            wv = w.to(like.dtype).reshape(1, 1, -1, 1, 1)
            pulls = []  # (weight, target) pairs, applied in turn
            if tau > 0:
                agree = torch.exp(-(((a - b).abs().amax(1, keepdim=True) / tau) ** 2))
                agree = agree * (after > before).to(like.dtype).reshape(1, 1, -1, 1, 1)  # only between two input frames
                pulls.append((agree, (1 - wv) * a + wv * b))
                inner = ((after > before) & (w > 0)).nonzero().flatten()
                if motion_radius > 0 and len(inner):
                    flat = lambda v: v[:, :, inner].transpose(1, 2).reshape(-1, c, h, w_)  # noqa: E731
                    sa, sb, clear = motion_compensated_pairs(flat(a), flat(b), w[inner].repeat(bsz), motion_radius)
                    back = lambda v: v.reshape(bsz, len(inner), v.shape[1], h, w_).transpose(1, 2)  # noqa: E731
                    sa, sb, clear, wi = back(sa), back(sb), back(clear), wv[:, :, inner]
                    weight, target = torch.zeros_like(agree), torch.zeros_like(a)  # nothing outside the inserted frames
                    moved = torch.exp(-(((sa - sb).abs().amax(1, keepdim=True) / TSR_MOTION_TAU) ** 2))
                    # a clear match takes precedence over the in-place blend; otherwise it takes what that left
                    weight[:, :, inner] = torch.where(clear, moved, moved * (1 - agree[:, :, inner]))
                    target[:, :, inner] = (1 - wi) * sa + wi * sb
                    pulls.append((weight, target))
            made[key] = (lo, before, after, wv, pulls)
        return made[key]

    def project(x0: torch.Tensor) -> torch.Tensor:
        lo, before, after, w, pulls = parts(x0.shape[2], x0)
        err = lo - x0[:, :, ::factor][:, :, : lo.shape[2]]
        x0 = x0 + (1 - w) * err[:, :, before] + w * err[:, :, after]
        for weight, target in pulls:
            x0 = x0 + weight * (target - x0)
        return x0

    return project
