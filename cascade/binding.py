"""Text-binding diagnostic: does a base stage use each word of its caption, and at which noise level?

For fixed ground-truth clips and fixed noise, the x0-MSE of the stage's denoiser with the true
caption is compared with the x0-MSE when one attribute's word is swapped (colour, shape, direction:
left<->right, up<->down, speed: slowly<->quickly), per log-SNR level. A positive difference means
the model relies on that word there: the wrong word makes its denoising worse. Each difference is
averaged over the clips, with its standard error (the clips are the independent units; the noise
is shared between the two captions, so the difference is paired).

Where a word *can* matter (issue 12, an exact Bayes-optimal denoiser for the shapes renderer): the
direction only at log-SNR -10 ... -5; from -4 on the noisy clip itself reveals it. So the go/no-go
signal for a new base is the ``direction`` column of the -8 ... -5 band (:data:`DIRECTION_BAND`).

``binding_table(denoise, ...)`` works on any denoiser ``denoise(z, logsnr, captions) -> x0`` (so a
test can plug in a denoiser whose answer is known); ``stage_denoiser(stage, encoder)`` wraps a
stage file. ``benchmarks/text_binding.py`` prints the full table; training logs the fast version
(``TrainConfig.binding_every``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import torch

from .data.shapes import COLOURS, SHAPES, Attributes, all_attributes, caption, crossing_start, render_clip
from .diffusion import x_from_v
from .frames import frames_to_video
from .schedule import alpha_sigma

__all__ = [
    "ATTRIBUTES",
    "alpha_sigma",
    "DIRECTION_BAND",
    "FULL_LEVELS",
    "FAST_LEVELS",
    "binding_table",
    "band_summary",
    "stage_denoiser",
    "swap",
    "CLIP_PATHS",
    "fixed_clips",
]

ATTRIBUTES = ("colour", "shape", "direction", "speed")
FULL_LEVELS = (-12.0, -10.0, -8.0, -7.0, -6.0, -5.0, -4.0, -3.0, -1.0, 1.0, 3.0)
FAST_LEVELS = (-8.0, -7.0, -6.0, -5.0)
DIRECTION_BAND = (-8.0, -5.0)
_OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up", "slowly": "quickly", "quickly": "slowly"}

Denoise = Callable[[torch.Tensor, torch.Tensor, list[str]], torch.Tensor]


def swap(attrs: Attributes, which: str) -> Attributes:
    """``attrs`` with one attribute replaced: direction and speed by their opposite, colour and
    shape by the next value of the vocabulary (deterministic)."""
    if which == "colour":
        names = list(COLOURS)
        return replace(attrs, colour=names[(names.index(attrs.colour) + 1) % len(names)])
    if which == "shape":
        return replace(attrs, shape=SHAPES[(SHAPES.index(attrs.shape) + 1) % len(SHAPES)])
    if which in ("direction", "speed"):
        return replace(attrs, **{which: _OPPOSITE[getattr(attrs, which)]})
    raise ValueError(f"Unknown attribute {which!r}; expected one of {ATTRIBUTES}.")


CLIP_PATHS = ("crossing", "torus")  # how a diagnostic clip's shape moves: across the frame, or from anywhere


def fixed_clips(
    n: int, *, frames: int, size: int, frame_step: int, seed: int = 0, path: str = "crossing"
) -> tuple[torch.Tensor, list[Attributes]]:
    """``n`` ground-truth clips ``(n, 3, T, H, W)`` in [-1, 1] over training combinations, spread
    over the pool (every colour, shape, direction and speed appears when n >= 24). ``path``:
    ``"crossing"`` (the shape crosses the frame in its direction, as most training clips do) or
    ``"torus"`` (it starts anywhere: the direction is then visible only in the motion itself)."""
    if path not in CLIP_PATHS:
        raise ValueError(f"path must be 'crossing' or 'torus'; received {path!r}.")
    pool = all_attributes("train")
    rng = np.random.default_rng([seed, 4242])
    order = rng.permutation(len(pool))
    attrs = [pool[int(i)] for i in order[:n]] if n <= len(pool) else [pool[int(rng.integers(len(pool)))] for _ in range(n)]
    clips = []
    for i, a in enumerate(attrs):
        rng = np.random.default_rng([seed, i, 77])
        start = crossing_start(a, frames=frames, frame_step=frame_step, rng=rng) if path == "crossing" else None
        clips.append(render_clip(a, frames=frames, size=size, rng=rng, frame_step=frame_step, start=start))
    x = torch.stack([frames_to_video(c) for c in clips])
    return x, attrs


@torch.no_grad()
def binding_table(
    denoise: Denoise,
    clips: torch.Tensor,
    attrs: Sequence[Attributes],
    *,
    levels: Sequence[float] = FULL_LEVELS,
    attributes: Sequence[str] = ATTRIBUTES,
    seed: int = 0,
    batch: int = 8,
) -> dict:
    """``{"levels": [...], "per_level": {level: {attr: {"mean", "se"}}}, "mse_true": {level: mse}}``:
    the rise of the x0-MSE when ``attr``'s word is swapped, at each log-SNR ``level``."""
    n = clips.shape[0]
    if n < 2:
        raise ValueError("The binding diagnostic needs at least 2 clips (the standard error is over clips).")
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(clips.shape, generator=g)  # the same noise for every level and caption
    true_caps = [caption(a, 0) for a in attrs]
    swapped = {k: [caption(swap(a, k), 0) for a in attrs] for k in attributes}
    diffs = {lv: {k: np.zeros(n) for k in attributes} for lv in levels}
    mse_true = {}
    for lv in levels:
        lam = torch.full((n,), float(lv))
        a, s = alpha_sigma(lam)
        z = a.reshape(-1, 1, 1, 1, 1) * clips + s.reshape(-1, 1, 1, 1, 1) * noise

        def per_clip(caps, z=z, lam=lam):
            out = []
            for i in range(0, n, batch):
                x0 = denoise(z[i : i + batch], lam[i : i + batch], caps[i : i + batch])
                out.append((x0.float() - clips[i : i + batch]).pow(2).mean(dim=(1, 2, 3, 4)))
            return torch.cat(out).numpy()

        base = per_clip(true_caps)
        mse_true[lv] = float(base.mean())
        for k in attributes:
            diffs[lv][k] = per_clip(swapped[k]) - base
    return {
        "levels": list(levels),
        "n": n,
        "mse_true": mse_true,
        "per_level": {lv: {k: _mean_se(d) for k, d in row.items()} for lv, row in diffs.items()},
        "_diffs": diffs,
    }


def _mean_se(d: np.ndarray) -> dict:
    return {"mean": float(d.mean()), "se": float(d.std(ddof=1) / np.sqrt(len(d)))}


def band_summary(table: dict, band: tuple[float, float] = DIRECTION_BAND) -> dict:
    """Per attribute: the per-clip difference averaged over the levels inside ``band``, its mean,
    standard error and ``z = mean / se`` (the go/no-go signal: direction z > 5)."""
    lv = [v for v in table["levels"] if band[0] <= v <= band[1]]
    if not lv:
        raise ValueError(f"No level of the table lies in the band {band}; levels: {table['levels']}.")
    out = {}
    for k in next(iter(table["_diffs"].values())):
        d = np.mean([table["_diffs"][v][k] for v in lv], axis=0)
        m = _mean_se(d)
        m["z"] = m["mean"] / m["se"] if m["se"] > 0 else (0.0 if m["mean"] == 0 else float("inf"))
        out[k] = m
    return out


def stage_denoiser(stage, encoder, *, aug_level: float = 0.0) -> Denoise:
    """``denoise(z, logsnr, captions) -> x0`` of a base stage, text encoded with ``encoder``; a
    continuation base gets no known frames (as in text-to-video sampling)."""
    from .conditioning import known_frames_condition

    if stage.role != "base":
        raise ValueError(f"The text-binding diagnostic is for base stages; received a {stage.config.describe()}.")
    net, cfg = stage.net, stage.config
    dev, dt = stage.device, stage.dtype

    def denoise(z: torch.Tensor, logsnr: torch.Tensor, caps: list[str]) -> torch.Tensor:
        b = z.shape[0]
        text = encoder.encode(list(caps)).to(dev)
        kw = {}
        if cfg.continuation:
            kw["cond"] = known_frames_condition(torch.zeros_like(z), torch.zeros(b, z.shape[2])).to(dev, dt)
        if cfg.unet.aug_cond:
            kw["aug_logsnr"] = cfg.schedule.unshifted.logsnr(torch.full((b,), float(aug_level))).to(dev)
        zz = z.to(dev, dt)
        v = net(zz, logsnr.to(dev), text=text, **kw).float().cpu()
        a, s = alpha_sigma(logsnr)
        return x_from_v(z, v, a.reshape(-1, 1, 1, 1, 1), s.reshape(-1, 1, 1, 1, 1))

    return denoise


def stage_binding(
    stage,
    encoder,
    *,
    n: int = 24,
    levels: Sequence[float] = FULL_LEVELS,
    seed: int = 0,
    frame_step: int = 2,
    path: str = "crossing",
) -> dict:
    """The diagnostic of a base stage on ``n`` fixed clips at its native size."""
    cfg = stage.config
    clips, attrs = fixed_clips(n, frames=cfg.frames, size=cfg.width, frame_step=frame_step, seed=seed, path=path)
    was = stage.net.training
    stage.net.eval()
    try:
        return binding_table(stage_denoiser(stage, encoder), clips, attrs, levels=levels, seed=seed)
    finally:
        stage.net.train(was)


def report(table: dict) -> str:
    """A markdown table: one row per level, one column per attribute (mean ± se, x 1e-3)."""
    attrs = list(next(iter(table["per_level"].values())))
    lines = [
        f"x0-MSE rise when the word is swapped (x 1e-3, mean ± standard error over {table['n']} clips)",
        "",
        "| log-SNR | MSE true caption | " + " | ".join(attrs) + " |",
        "|---|---|" + "---|" * len(attrs),
    ]
    for lv, row in table["per_level"].items():
        cells = " | ".join(f"{row[k]['mean'] * 1e3:+.2f} ± {row[k]['se'] * 1e3:.2f}" for k in attrs)
        lines.append(f"| {lv:+g} | {table['mse_true'][lv]:.4f} | {cells} |")
    band = band_summary(table) if any(DIRECTION_BAND[0] <= v <= DIRECTION_BAND[1] for v in table["levels"]) else None
    if band:
        lines += ["", f"Band {DIRECTION_BAND[0]:+g} ... {DIRECTION_BAND[1]:+g} (per-clip mean over its levels):", ""]
        lines += [f"- {k}: {v['mean'] * 1e3:+.2f} ± {v['se'] * 1e3:.2f} (x 1e-3), z = {v['z']:.1f}" for k, v in band.items()]
    return "\n".join(lines) + "\n"
