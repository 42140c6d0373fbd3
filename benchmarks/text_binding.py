"""Text-binding diagnostic of a base stage file: how much the denoising loss rises when one word of
the caption (colour, shape, direction, speed) is swapped, per log-SNR level, with standard errors.

    python benchmarks/text_binding.py [STAGE.safetensors ...] [--clips 24] [--out benchmarks/results/text_binding.md]

Fixed clips and fixed noise (``cascade.binding``), so two files are compared on the same inputs.
The go/no-go signal for a base: the direction column in the -8 ... -5 band, > 5 standard errors.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout: the pack's library  # noqa: E402

from cascade import binding  # noqa: E402
from cascade.demo import DEMO_DIR, DEMO_FILES  # noqa: E402
from cascade.stage import load_stage  # noqa: E402
from cascade.text import load_text_encoder  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stages", nargs="*", default=[str(DEMO_DIR / DEMO_FILES["base"])])
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frame-step", type=int, default=2, help="reference frames per base frame (the demo base: 2)")
    p.add_argument(
        "--paths",
        nargs="+",
        default=list(binding.CLIP_PATHS),
        choices=binding.CLIP_PATHS,
        help="clip paths: the shape crosses the frame in its direction (most training clips), or starts anywhere",
    )
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "text_binding.md"))
    a = p.parse_args()
    enc = load_text_encoder("minilm")
    text, data = (
        ["# Text-binding diagnostic", "", f"Command: `python benchmarks/text_binding.py {' '.join(sys.argv[1:])}`", ""],
        {},
    )
    for path in a.stages:
        stage = load_stage(path)
        for clip_path in a.paths:
            t0 = time.time()
            table = binding.stage_binding(stage, enc, n=a.clips, seed=a.seed, frame_step=a.frame_step, path=clip_path)
            band = binding.band_summary(table)
            text += [
                f"## {Path(path).name}, {clip_path} clips ({stage.config.notes or stage.config.name})",
                "",
                binding.report(table),
                f"({time.time() - t0:.0f} s)",
                "",
            ]
            data[f"{path} [{clip_path}]"] = {"per_level": {str(k): v for k, v in table["per_level"].items()}, "band_-8_-5": band}
            print(f"{Path(path).name} [{clip_path}]: direction z = {band['direction']['z']:.1f} in -8..-5", flush=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(text))
    out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    print(out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
