"""The attribute detector's accuracy on ground-truth clips under what a generator's output shows
(grain, blur, a lighter background, a dimmer object, all at once), at the base's and the final
size: 150 clips each.

    python benchmarks/detector_robustness.py
"""

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cascade.data.detector import detect  # noqa: E402
from cascade.data.shapes import all_attributes, render_clip  # noqa: E402

rng = np.random.default_rng(7)
pool = all_attributes("all")


def blur(v):
    k = np.array([0.25, 0.5, 0.25], np.float32)
    v = np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), 1, v)
    return np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), 2, v)


perturb = {
    "clean": lambda v, r: v,
    "noise.05": lambda v, r: np.clip(v + r.normal(0, 0.05, v.shape), 0, 1),
    "blur": lambda v, r: blur(v),
    "bg+.15": lambda v, r: np.clip(v + 0.15 * (np.abs(v - v[0, 0, 0]).sum(-1, keepdims=True) < 0.05), 0, 1),
    "dim.8": lambda v, r: v * 0.8,
    "all": lambda v, r: np.clip(blur(v * 0.85 + 0.08) + r.normal(0, 0.04, v.shape), 0, 1),
}
for size, frames, step in ((32, 16, 2), (64, 32, 1)):
    for name, f in perturb.items():
        hits = {k: 0 for k in ("colour", "shape", "direction", "speed")}
        n = 150
        r2 = np.random.default_rng(3)
        for _ in range(n):
            a = pool[int(rng.integers(len(pool)))]
            v = render_clip(a, frames=frames, size=size, rng=rng, frame_step=step).astype(np.float32) / 255
            d = detect(f(v, r2).astype(np.float32), frame_step=step)
            for k, x, y in zip(hits, d.as_tuple(), a.as_tuple()):
                hits[k] += x == y
        print(size, name, {k: round(v / n, 2) for k, v in hits.items()})
