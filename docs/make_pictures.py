"""Makes the README's pictures with the committed demo cascade: ``python docs/make_pictures.py``.

* ``docs/cascade_<n>.gif``: the full cascade (base -> TSR x2 -> SSR x2) for a few prompts;
* ``docs/cascade_strip.png``: per prompt, every 4th frame of the base (top) and of the final video;
* ``docs/fast_strip.png``: the same prompts through the distilled students (``--fast``: only this one);
* ``docs/phenaki_strip.png`` (``--phenaki``: only this one): every 2nd frame of the demo Phenaki's
  17-frame clips for the same prompts, at its default settings.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cascade.frames import video_to_frames  # noqa: E402
from cascade.pipeline import generate  # noqa: E402
from cascade.run import load_demo_cascade  # noqa: E402
from cascade.video_io import to_uint8, write_gif  # noqa: E402

PROMPTS = [
    "a red circle moving right quickly",
    "a blue square moving up slowly",
    "a yellow triangle moving left quickly",
    "a white circle moving down slowly",
]


def _u8(video: torch.Tensor) -> np.ndarray:
    """(1, 3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8."""
    return to_uint8(video_to_frames(video))


def strip(frames: np.ndarray, every: int, size: int) -> np.ndarray:
    from PIL import Image

    picks = frames[::every]
    row = np.concatenate([np.asarray(Image.fromarray(f).resize((size, size), Image.NEAREST)) for f in picks], axis=1)
    return row


def phenaki_strip() -> None:
    from PIL import Image

    from cascade.demo import PHENAKI_DEMO_DIR, PHENAKI_DEMO_FILES
    from cascade.phenaki import PhenakiOptions, load_phenaki
    from cascade.text import load_text_encoder

    ph = load_phenaki(*[PHENAKI_DEMO_DIR / PHENAKI_DEMO_FILES[k] for k in ("tokenizer", "transformer")])
    enc, o = load_text_encoder("minilm"), PhenakiOptions()
    frames = ph.tokenizer.config.frames(ph.info.steps)
    rows = []
    for i, prompt in enumerate(PROMPTS):
        v = ph.generate(enc.encode([prompt]), frames, steps=o.steps, w=o.w, temperature=o.temperature, seed=i)
        rows.append(strip(_u8(v), 2, 64))
    gap = np.full((4, rows[0].shape[1], 3), 255, dtype=np.uint8)
    path = ROOT / "docs" / "phenaki_strip.png"
    Image.fromarray(np.concatenate([x for r in rows for x in (r, gap)], axis=0)).save(path)
    print("wrote", path)


def main() -> None:
    from PIL import Image

    if "--phenaki" in sys.argv[1:]:
        phenaki_strip()
        return
    out = ROOT / "docs"
    for fast in (True,) if "--fast" in sys.argv[1:] else (False, True):  # --fast: only the students' strip
        cascade = load_demo_cascade(fast=fast)
        rows = []
        for i, prompt in enumerate(PROMPTS):
            frames, fps = cascade(prompt, seed=i)
            final = (frames * 255).round().byte().numpy()
            base = _u8(generate(cascade.base, cascade.encoder.encode([prompt]), options=replace(cascade.options["base"], seed=i)))
            if not fast:
                write_gif(out / f"cascade_{i}.gif", final, fps=fps, scale=2)
            rows.append(strip(base, 2, 64))
            rows.append(strip(final, 4, 64))
        gap = np.full((4, rows[0].shape[1], 3), 255, dtype=np.uint8)
        img = np.concatenate([x for r in rows for x in (r, gap)], axis=0)
        Image.fromarray(img).save(out / ("fast_strip.png" if fast else "cascade_strip.png"))
        print("wrote", out / ("fast_strip.png" if fast else "cascade_strip.png"))


if __name__ == "__main__":
    main()
