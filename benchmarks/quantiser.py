"""FSQ vs a VQ codebook for the C-ViViT tokenizer: the same network, data, seed and steps.

    python benchmarks/quantiser.py [--steps 400] [--batch 8] [--codes 875]

Trains one tokenizer per quantiser (FSQ levels 7-5-5-5 = 875 codes; VQ with 875 l2-normalised
codes of dimension 8, codebook + 0.25 x commitment loss, as ViT-VQGAN / Phenaki) and measures on
held-out ground-truth clips: reconstruction PSNR, the share of the codebook the clips use, the
codes' perplexity (exp of the entropy of their use), and seconds per training step.
Writes benchmarks/results/quantiser.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cascade.data.shapes import render_clip  # noqa: E402
from cascade.evaluate import _prompts  # noqa: E402
from cascade.frames import frames_to_video  # noqa: E402
from cascade.metrics import psnr  # noqa: E402
from cascade.phenaki import load_tokenizer  # noqa: E402
from cascade.phenaki_train import PhenakiTrainConfig, PhenakiTrainer  # noqa: E402


def held_out_clips(n: int, frames: int, size: int) -> torch.Tensor:
    rng = np.random.default_rng(12345)  # clips the training stream does not draw
    return torch.stack(
        [frames_to_video(render_clip(a, frames=frames, size=size, rng=rng, frame_step=2)) for a in _prompts("seen", n, 99)]
    )


def measure(path: Path, clips: torch.Tensor) -> dict:
    tok, _ = load_tokenizer(path)
    with torch.no_grad():
        ids = torch.cat([tok.tokenize(clips[i : i + 8]) for i in range(0, len(clips), 8)])
        recon = torch.cat([tok.detokenize(ids[i : i + 8]) for i in range(0, len(ids), 8)])
    counts = torch.bincount(ids.flatten(), minlength=tok.config.codebook_size).double()
    p = counts / counts.sum()
    entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
    u = lambda v: ((v + 1) / 2).clamp(0, 1)  # noqa: E731
    return {
        "psnr": psnr(u(recon), u(clips)),
        "codes_used": int((counts > 0).sum()),
        "codebook_size": tok.config.codebook_size,
        "perplexity": float(np.exp(entropy)),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--codes", type=int, default=875)
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()
    clips = held_out_clips(a.clips, 17, 32)
    res = {"steps": a.steps, "batch": a.batch, "n_clips": a.clips}
    with tempfile.TemporaryDirectory() as tmp:
        for q in ("fsq", "vq"):
            cfg = PhenakiTrainConfig(
                model="cvivit",
                out=f"{tmp}/{q}",
                steps=a.steps,
                batch=a.batch,
                lr=5e-4,
                warmup=100,
                checkpoint_every=0,
                log_every=50,
                image_fraction=0.1,
                quantiser=q,
                vq_codes=a.codes,
            )
            tr = PhenakiTrainer(cfg)
            t0 = time.perf_counter()
            tr.run()
            res[q] = {
                "seconds_per_step": (time.perf_counter() - t0) / a.steps,
                **measure(Path(tmp) / q / "tokenizer.safetensors", clips),
            }
            print(q, res[q], flush=True)
    out = Path(a.out)
    (out / "quantiser.json").write_text(json.dumps(res, indent=1) + "\n")
    rows = [
        f"C-ViViT tokenizers trained {a.steps} steps (batch {a.batch}, same seed and data) and measured on {a.clips} held-out clips "
        "of 17 frames 32x32:",
        "",
        "| quantiser | codes | PSNR | codes used | perplexity | s / step |",
        "|---|---|---|---|---|---|",
    ]
    for q, name in (("fsq", "FSQ 7-5-5-5"), ("vq", f"VQ, {a.codes} x 8 (l2-normalised)")):
        r = res[q]
        rows.append(
            f"| {name} | {r['codebook_size']} | {r['psnr']:.2f} dB | {r['codes_used']} ({100 * r['codes_used'] / r['codebook_size']:.0f} %) "
            f"| {r['perplexity']:.0f} | {r['seconds_per_step']:.2f} |"
        )
    (out / "quantiser.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
