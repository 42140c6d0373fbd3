"""docs/icon.png: the pack's icon for the Comfy Registry (400 x 400), from the demo cascade.

    python docs/make_icon.py

Three prompts of the demo vocabulary through the whole cascade (base -> TSR x2 -> SSR x2); each row
shows three moments of one video, so the icon is what the pack makes: shapes moving as told.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cascade.run import load_demo_cascade  # noqa: E402

PROMPTS = ["a red circle moving right quickly", "a yellow square moving left slowly", "a blue triangle moving right slowly"]
SIZE, GAP = 400, 4


def main() -> None:
    from PIL import Image

    cascade = load_demo_cascade()
    tile = (SIZE - 4 * GAP) // 3
    icon = Image.new("RGB", (SIZE, SIZE), (96, 100, 112))
    for row, prompt in enumerate(PROMPTS):
        frames, _ = cascade(prompt, seed=row + 1)
        for col, t in enumerate((0, len(frames) // 2, len(frames) - 1)):
            img = Image.fromarray((frames[t].numpy() * 255 + 0.5).clip(0, 255).astype("uint8"))
            icon.paste(img.resize((tile, tile), Image.NEAREST), (GAP + col * (tile + GAP), GAP + row * (tile + GAP)))
    out = ROOT / "docs" / "icon.png"
    icon.save(out)
    print("wrote", out)


if __name__ == "__main__":
    main()
