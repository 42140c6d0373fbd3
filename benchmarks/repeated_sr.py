"""What the paper's 7-stage layout does when the demo SR stages are applied again beyond their
training resolution and frame rate (example workflow `imagen_video_paper_7_stages.json`:
base -> TSR -> SSR -> SSR -> TSR -> TSR -> SSR, 16 frames 32x32 at 4 fps -> 128 frames 256x256 at 32 fps).

The shapes renderer draws any clip at any size and frame rate, so every level of the chain has a
ground truth. Starting from ground-truth base-level clips (so that only the SR stages are
measured), each stage's output is compared at its own level with the ground truth and with what a
user gets from plain interpolation at the same sizes (bicubic for SSR, linear blending for TSR,
chained the same way):

* PSNR against the ground truth at that level;
* sharpness: mean gradient magnitude relative to the ground truth's (1 = as sharp; < 1 blurred; > 1 = noise or
  ringing the ground truth does not have);
* consistency: the output brought back to the level's input (downsampled / every other frame) vs
  that input (PSNR);
* edges: the mean gradient within 3 px of the ground truth's edges relative to the ground truth's there:
  a blur hardly moves it (a 3x3 box blur: 0.97), overshoot, ringing or texture at the edges raise it
  (bicubic's ringing on a 2x downscaled frame: 1.19);
* grain: the mean gradient where the ground truth is flat, in 8-bit levels of the frames as a video file
  holds them (the ground truth's is 0; most of a sharpness above 1 can be grain too faint to see);
* flicker: mean absolute frame-to-frame change of the output minus the ground truth's (0 = none added).

    python benchmarks/repeated_sr.py --clips 4 --out benchmarks/results/repeated_sr
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cascade.conditioning import resize_video  # noqa: E402
from cascade.data.shapes import Attributes, all_attributes, render_clip  # noqa: E402
from cascade.demo import DEMO_DIR, DEMO_FILES  # noqa: E402
from cascade.frames import frames_to_video  # noqa: E402
from cascade.metrics import bicubic_upscale, psnr  # noqa: E402
from cascade.pipeline import upsample_spatial, upsample_temporal  # noqa: E402
from cascade.run import DEFAULT_OPTIONS  # noqa: E402
from cascade.stage import load_stage  # noqa: E402
from cascade.text import load_text_encoder  # noqa: E402

CHAIN = ("tsr", "ssr", "ssr", "tsr", "tsr", "ssr")  # after the base, as in the paper (Fig. 6)


def level_sizes(chain=CHAIN, frames=16, size=32, step=2.0):
    """(frames, size, frame_step) of each level; frame_step: the renderer's reference frames (8 fps)
    per frame, so the base at 4 fps has 2 and every TSR halves it."""
    out = [(frames, size, step)]
    for s in chain:
        frames, size, step = (frames * 2, size, step / 2) if s == "tsr" else (frames, size * 2, step)
        out.append((frames, size, step))
    return out


def render(attrs: list[Attributes], frames: int, size: int, step: int, seed: int) -> torch.Tensor:
    vids = []
    for i, a in enumerate(attrs):
        rng = np.random.default_rng([seed, i])
        start = (float(rng.random()), float(rng.random()))
        # the same start, radius and motion at every level: only size and frame rate differ
        r = float(rng.uniform(0.11, 0.17))
        vids.append(frames_to_video(render_clip(a, frames=frames, size=size, rng=rng, frame_step=step, start=start, radius=r)))
    return torch.stack(vids)


def blend_up(low: torch.Tensor) -> torch.Tensor:
    """Linear blending in the 'imagen' frame convention (N -> 2N): each input frame, then the mean
    with the next one (the last frame repeated)."""
    nxt = torch.cat([low[:, :, 1:], low[:, :, -1:]], dim=2)
    mid = (low + nxt) / 2
    return torch.stack([low, mid], dim=3).flatten(2, 3)


def sharpness(v: torch.Tensor) -> float:
    dx = (v[..., :, 1:] - v[..., :, :-1]).abs().mean()
    dy = (v[..., 1:, :] - v[..., :-1, :]).abs().mean()
    return float(dx + dy)


def _grad(v: torch.Tensor) -> torch.Tensor:
    """|d/dx| + |d/dy| of every pixel but the last row and column, ``(B, C, T, H - 1, W - 1)``."""
    dx = (v[..., :, 1:] - v[..., :, :-1]).abs()[..., :-1, :]
    dy = (v[..., 1:, :] - v[..., :-1, :]).abs()[..., :, :-1]
    return dx + dy


def near_edges(gt: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """Pixels within ``radius`` of an edge of the ground truth ``gt`` in [0, 1], (B, 1, T, H - 1, W - 1)."""
    edge = (_grad(gt).amax(1, keepdim=True) > 1e-3).float()
    k = 2 * radius + 1
    return torch.nn.functional.max_pool3d(edge, (1, k, k), 1, (0, radius, radius)) > 0


def edges_and_grain(v: torch.Tensor, gt: torch.Tensor) -> tuple[float, float]:
    """Of ``v`` and ``gt`` in [0, 1]: the mean gradient near the ground truth's edges relative to the
    ground truth's (overshoot, ringing or texture at the edges raise it; a blur hardly lowers it), and
    the grain: the mean gradient, in 8-bit levels of the frames as a video file stores them, where the
    ground truth is flat (0 for it)."""
    near = near_edges(gt).expand(-1, v.shape[1], -1, -1, -1)
    g, g_gt = _grad(v), _grad(gt)
    edges = float(g[near].mean() / g_gt[near].mean())
    grain = float(_grad(torch.round(v * 255))[~near].mean())
    return edges, grain


def flicker(v: torch.Tensor) -> float:
    return float((v[:, :, 1:] - v[:, :, :-1]).abs().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--stages", type=int, default=len(CHAIN), help="how many SR stages of the chain to run")
    ap.add_argument("--steps", type=int, default=8, help="sampling steps of every SR stage (the workflow's 8)")
    ap.add_argument("--models", default=str(DEMO_DIR))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--consistency", choices=("on", "off"), help="projection onto each stage's input (default: the demo cascade's, on)"
    )
    ap.add_argument("--out", default="benchmarks/results/repeated_sr")
    a = ap.parse_args()
    torch.manual_seed(0)
    pool = all_attributes("train")
    attrs = [pool[(i * 11) % len(pool)] for i in range(a.clips)]
    stages = {r: load_stage(Path(a.models) / DEMO_FILES[r], role=r) for r in ("tsr", "ssr")}
    text = load_text_encoder().encode([f"a {x.colour} {x.shape} moving {x.direction} {x.speed}" for x in attrs])
    levels = level_sizes()[: a.stages + 1]
    u = lambda v: ((v + 1) / 2).clamp(0, 1)  # noqa: E731
    ours = base = render(attrs, *levels[0], a.seed)
    rows = []
    for k, role in enumerate(CHAIN[: a.stages]):
        frames, size, step = levels[k + 1]
        gt = render(attrs, frames, size, step, a.seed)
        t0 = time.time()
        opts = replace(DEFAULT_OPTIONS[role], steps=a.steps, seed=a.seed + k)
        if a.consistency:
            opts = replace(opts, consistency=a.consistency == "on")
        if role == "tsr":
            out = upsample_temporal(stages["tsr"], ours, text, options=opts)
            simple = blend_up(base)
            back_ours, back_simple, inp = out[:, :, ::2], simple[:, :, ::2], ours
        else:
            out = upsample_spatial(stages["ssr"], ours, text, size=(size, size), options=opts)
            simple = bicubic_upscale(base, (size, size))
            back_ours, back_simple, inp = resize_video(out, ours.shape[-2:]), resize_video(simple, base.shape[-2:]), ours
        secs = time.time() - t0
        g_sharp, g_flick = sharpness(u(gt)), flicker(u(gt))
        (e_ours, n_ours), (e_simple, n_simple) = edges_and_grain(u(out), u(gt)), edges_and_grain(u(simple), u(gt))
        row = {
            "stage": k + 1,
            "role": role,
            "frames": frames,
            "size": size,
            "ours": {
                "psnr": psnr(u(out), u(gt)),
                "sharpness": sharpness(u(out)) / g_sharp,
                "edges": e_ours,
                "grain_8bit": n_ours,
                "consistency_psnr": psnr(u(back_ours), u(inp)),
                "flicker_added": flicker(u(out)) - g_flick,
            },
            "interpolation": {
                "psnr": psnr(u(simple), u(gt)),
                "sharpness": sharpness(u(simple)) / g_sharp,
                "edges": e_simple,
                "grain_8bit": n_simple,
                "consistency_psnr": psnr(u(back_simple), u(base)),
                "flicker_added": flicker(u(simple)) - g_flick,
            },
            "seconds": round(secs, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        ours, base = out, simple
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps({"clips": a.clips, "steps": a.steps, "rows": rows}, indent=1))
    lines = [
        "| stage | level | PSNR ours / interp. | sharpness ours / interp. | edges ours / interp. | grain (8-bit levels) ours / interp. "
        "| consistency ours / interp. | flicker added ours / interp. |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        o, i = r["ours"], r["interpolation"]
        lines.append(
            f"| {r['stage']} {r['role'].upper()} | {r['frames']} f {r['size']} px | {o['psnr']:.2f} / {i['psnr']:.2f} dB | "
            f"{o['sharpness']:.2f} / {i['sharpness']:.2f} | {o['edges']:.2f} / {i['edges']:.2f} | "
            f"{o['grain_8bit']:.3f} / {i['grain_8bit']:.3f} | {o['consistency_psnr']:.1f} / {i['consistency_psnr']:.1f} dB | "
            f"{o['flicker_added']:+.4f} / {i['flicker_added']:+.4f} |"
        )
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
