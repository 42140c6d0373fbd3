"""Where does a base stage decide the direction of motion? (the measurement behind the shifted schedule)

    python benchmarks/motion_commitment.py [--model FILE] [--samples 16] [--logsnrs=-20,-7,-5,-3.7,-2]

Ground-truth clips of quickly moving shapes are noised to a start log-SNR (the same noise levels for every
model, whatever its schedule) and sampled from there (DDIM, guidance w, 16 steps), once with the true caption and once with the direction word
flipped (left <-> right, up <-> down). The detector then reads the direction of each result:

* "keeps the clip's direction" high with the flipped caption: at that noise level the noisy input already fixes
  the motion, the caption no longer can;
* "follows the caption" high with the flipped caption: the model still decides the motion from the text there.

A stage decides its motion between the highest start where the clip still wins and the lowest where the caption
does. Writes benchmarks/results/motion_commitment_<model>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cascade.conditioning import known_frames_condition  # noqa: E402
from cascade.data.detector import detect  # noqa: E402
from cascade.data.shapes import Attributes, all_attributes, caption, render_clip  # noqa: E402
from cascade.demo import DEMO_DIR, DEMO_FILES  # noqa: E402
from cascade.frames import frames_to_video, video_to_frames  # noqa: E402
from cascade.guidance import ClassifierFreeGuidance, Thresholding  # noqa: E402
from cascade.samplers import sample_ddim  # noqa: E402
from cascade.stage import load_stage  # noqa: E402
from cascade.text import TextEmbedding, load_text_encoder  # noqa: E402

FLIP = {"left": "right", "right": "left", "up": "down", "down": "up"}


def measure(model: str, samples: int, logsnrs: list[float], w: float, steps: int, seed: int) -> dict:
    stage = load_stage(model, role="base")
    cfg = stage.config
    enc = load_text_encoder(cfg.text_encoder)
    rng = np.random.default_rng(seed)
    pool = [a for a in all_attributes("train") if a.speed == "quickly"]
    attrs = [pool[i] for i in rng.permutation(len(pool))[:samples]]
    gt = torch.stack([frames_to_video(render_clip(a, frames=cfg.frames, size=cfg.width, rng=rng, frame_step=2)) for a in attrs])
    b = len(attrs)
    extra = {}
    if cfg.continuation:  # no known frames
        extra = {"cond": known_frames_condition(torch.zeros_like(gt), torch.zeros(b, cfg.frames)), "aug_logsnr": torch.zeros(b)}
    rows = []
    for lam in logsnrs:
        t = float(cfg.schedule.t_from_logsnr(torch.tensor(lam, dtype=torch.float64)))
        row = {"start_logsnr": lam, "start_t": round(t, 4)}
        for name in ("true", "flipped"):
            dirs = [a.direction if name == "true" else FLIP[a.direction] for a in attrs]
            text = enc.encode([caption(Attributes(a.colour, a.shape, d, a.speed), 0) for a, d in zip(attrs, dirs)])
            den = Thresholding(ClassifierFreeGuidance(stage.denoiser(), text, TextEmbedding.null(b, cfg.text_dim), w), "dynamic")
            sigmas = cfg.schedule.sigmas(steps, t_max=t)
            g = torch.Generator().manual_seed(seed)
            x = gt + sigmas[0] * torch.randn(gt.shape, generator=g)
            with torch.no_grad():
                out = sample_ddim(den, x, sigmas, extra_args=extra).clamp(-1, 1)
            got = [detect(video_to_frames(v).numpy(), frame_step=2).direction for v in out]
            row[f"{name}_caption_keeps_clip"] = sum(g_ == a.direction for g_, a in zip(got, attrs)) / b
            row[f"{name}_caption_follows_caption"] = sum(g_ == d for g_, d in zip(got, dirs)) / b
        rows.append(row)
        print(row, flush=True)
    return {"model": str(model), "samples": b, "guidance": w, "steps": steps, "schedule": cfg.schedule.to_dict(), "rows": rows}


def report(r: dict) -> str:
    lines = [
        f"Model `{Path(r['model']).name}` (schedule {r['schedule']}), {r['samples']} quickly moving clips, "
        f"DDIM {r['steps']} steps from the start, w = {r['guidance']:g}.",
        "",
        "| start log-SNR | start t (its schedule) | true caption: direction right | flipped caption: clip's direction kept | flipped caption: caption's direction |",
        "|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        lines.append(
            f"| {row['start_logsnr']:+.1f} | {row['start_t']:.3f} | {100 * row['true_caption_keeps_clip']:.0f} % | "
            f"{100 * row['flipped_caption_keeps_clip']:.0f} % | {100 * row['flipped_caption_follows_caption']:.0f} % |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(DEMO_DIR / DEMO_FILES["base"]))
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--logsnrs", default="-20,-7,-5,-3.7,-2", help="start noise levels (log-SNR; -20 = pure noise)")
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    r = measure(a.model, a.samples, [float(s) for s in a.logsnrs.split(",")], a.guidance, a.steps, a.seed)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"motion_commitment_{Path(a.model).stem}"
    (out / f"{stem}.json").write_text(json.dumps(r, indent=1))
    (out / f"{stem}.md").write_text(report(r))
    print(report(r))


if __name__ == "__main__":
    main()
