"""Core ComfyUI samplers on the demo base stage: how close each lands to a 128-step DDIM solution.

Runs in ComfyUI's Python with ComfyUI importable (no server needed):

    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfy/python benchmarks/core_samplers.py

For 8, 16 and 32 steps, guided (w = 4, dynamic thresholding, the base's default) and unguided
(w = 0, no thresholding: a smooth ODE), the PSNR of each sampler's 8-frame 32x32 video against the
same seed sampled with 128 DDIM steps. Writes benchmarks/results/core_samplers.{json,md}.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, os.environ["COMFYUI_PATH"])
sys.path.insert(0, str(ROOT / "tests"))

import comfy.options  # noqa: E402

comfy.options.enable_args_parsing(False)
import comfy.cli_args  # noqa: E402

comfy.cli_args.args.cpu = not torch.cuda.is_available()
import comfy.samplers  # noqa: E402
from packimport import load_pack  # noqa: E402

SAMPLERS = ["ddim (ours)", "euler", "dpmpp_2m", "uni_pc", "lms", "res_multistep", "euler_ancestral"]
PROMPT = "a red circle moving right slowly"


def main() -> None:
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "2"))))
    pack = load_pack()
    nodes = pack.NODE_CLASS_MAPPINGS
    model = nodes["ImagenVideoModelLoader"]().load("demo_base_16f_32px.safetensors")[0]
    enc = nodes["ImagenVideoTextEncoderLoader"]().load("all-MiniLM-L6-v2 (embedded)")[0]
    cond = nodes["ImagenVideoTextEncode"]().encode(enc, PROMPT)[0]

    def run(steps, name, w, th):
        kw = {} if name == "ddim (ours)" else {"sampler": comfy.samplers.sampler_object(name)}
        out = nodes["ImagenVideoSampler"]().sample(
            model, cond, 8, 32, 32, 4.0, 7, steps, w, "ddim", thresholding=th, show_animation=False, **kw
        )
        return out["result"][0]

    def psnr(a, b):
        return 10 * math.log10(1 / max(float((a - b).pow(2).mean()), 1e-12))

    rows = []
    for w, th in ((4.0, "dynamic"), (0.0, "none")):
        ref = run(128, "ddim (ours)", w, th)
        for steps in (8, 16, 32):
            row = {"guidance": w, "thresholding": th, "steps": steps}
            row.update({name: round(psnr(run(steps, name, w, th), ref), 1) for name in SAMPLERS})
            rows.append(row)
            print(row, flush=True)
    out = ROOT / "benchmarks" / "results"
    (out / "core_samplers.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = [
        "PSNR (dB) against 128 DDIM steps, same seed (euler_ancestral is stochastic: its distance is its sample's).",
        "",
        "| w, thresholding | steps | " + " | ".join(SAMPLERS) + " |",
        "|---|---|" + "---|" * len(SAMPLERS),
    ]
    for r in rows:
        lines.append(
            f"| {r['guidance']:g}, {r['thresholding']} | {r['steps']} | " + " | ".join(f"{r[n]:.1f}" for n in SAMPLERS) + " |"
        )
    (out / "core_samplers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
