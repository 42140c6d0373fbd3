"""docs/extend_strip.png: video extension with the demo base (what imagen_video_extend_video.json does).

    python docs/make_extend_picture.py

Row 1: a clip of "a green square moving right slowly" (16 base frames, every 2nd shown). Row 2: its
last 4 frames given as start_images to a second clip with the prompt "a green square moving down
slowly" (the 4 given frames, then the new ones). Row 3: the second prompt alone (no known frames).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cascade.frames import video_to_frames  # noqa: E402
from cascade.pipeline import generate, known_frames  # noqa: E402
from cascade.run import load_demo_cascade  # noqa: E402
from cascade.video_io import to_uint8  # noqa: E402


def main() -> None:
    from PIL import Image

    c = load_demo_cascade()
    opts = c.options["base"]
    first = generate(c.base, c.encoder.encode(["a green square moving right slowly"]), options=opts.for_stage(1, "base"))
    known, mask = known_frames(16, 32, 32, start=first[:, :, -4:])
    second_text = c.encoder.encode(["a green square moving down slowly"])
    cont = generate(
        c.base,
        second_text,
        options=opts.for_stage(2, "base").__class__(**{**opts.__dict__, "seed": 2, "aug_level": 0.2}),
        known=known,
        known_mask=mask,
        paste_known=True,
    )
    alone = generate(c.base, second_text, options=opts.for_stage(2, "base"))
    rows = []
    for v in (first, cont, alone):
        f = to_uint8(video_to_frames(v))[::2]
        rows.append(np.concatenate([np.asarray(Image.fromarray(x).resize((64, 64), Image.NEAREST)) for x in f], axis=1))
    gap = np.full((4, rows[0].shape[1], 3), 255, dtype=np.uint8)
    img = np.concatenate([x for r in rows for x in (r, gap)][:-1], axis=0)
    Image.fromarray(img).save(ROOT / "docs" / "extend_strip.png")
    print("wrote", ROOT / "docs" / "extend_strip.png")


if __name__ == "__main__":
    main()
