"""Seconds per video of the shipped demo cascade with its weights in fp32, bf16 and fp16, on this machine.

    python benchmarks/generate_precision.py [--rounds 3] [--threads 2] [--device cpu] [--precisions fp32,bf16]

What ``python -m cascade generate --precision`` (and the loader node's *precision*) changes: the
diffusion stages' weights and activations. For the default cascade (base 32 steps, TSR 8, SSR 8)
and the fast path (the students: 2, 1, 1 steps), each precision generates the same prompt with the
same seeds; rounds are interleaved (fp32, bf16, fp32, ...) so that a machine that slows down
over the run slows every precision alike, and the medians are compared as ratios to fp32 in this one
run. Beside the time: how far each precision's video lies from the fp32 video of the same seed
(mean and largest absolute difference in [0, 1] pixel values, and PSNR). Whether the CPU has the
bf16 instructions (AVX-512-BF16, AMX) decides whether bf16 is a gain; the script says which it found.
Results: ``benchmarks/results/generate_precision.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cascade.checks import PRECISIONS, check_device  # noqa: E402
from cascade.run import load_demo_cascade  # noqa: E402

PROMPT = "a red circle moving right quickly"


def cpu_flags() -> str:
    try:
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    found = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f", "avx2") if f in flags]
    return " ".join(found) or "none of avx2 / avx512 / amx"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precisions", help="comma list, fp32 first (default: fp32,bf16 on the CPU, fp32,bf16,fp16 on a GPU)")
    ap.add_argument("--paths", default="default,fast", help="comma list of: default, fast")
    ap.add_argument(
        "--channels-last",
        action="store_true",
        help="also time each precision with the stages' 2-D convolution weights in channels-last memory format "
        "(a measurement only: the pack does not do this yet)",
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "generate_precision"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = check_device(a.device)
    names = (a.precisions or ("fp32,bf16" if device.type == "cpu" else "fp32,bf16,fp16")).split(",")
    if names[0] != "fp32" or any(n not in PRECISIONS for n in names):
        raise SystemExit(f"--precisions: fp32 first, then any of {list(PRECISIONS)}; received {a.precisions!r}.")
    rows = []
    paths = a.paths.split(",")
    if not paths or any(p not in ("default", "fast") for p in paths):
        raise SystemExit(f"--paths: default and/or fast; received {a.paths!r}.")
    for path in paths:
        fast = path == "fast"
        cascades = {n: load_demo_cascade(fast=fast, device=device, dtype=PRECISIONS[n]) for n in names}
        if a.channels_last:
            for n in names:
                c = cascades[f"{n}+channels-last"] = load_demo_cascade(fast=fast, device=device, dtype=PRECISIONS[n])
                for stage in (c.base, c.tsr, c.ssr):
                    for m in stage.net.modules():
                        if isinstance(m, torch.nn.Conv2d):
                            m.to(memory_format=torch.channels_last)
        for c in cascades.values():
            c(PROMPT, seed=100)  # warm-up: first-call allocations and kernel choices
        times: dict[str, list[float]] = {n: [] for n in cascades}
        videos: dict[str, list[torch.Tensor]] = {n: [] for n in cascades}
        for r in range(a.rounds):
            for n in cascades:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                frames, _ = cascades[n](PROMPT, seed=r)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[n].append(time.perf_counter() - t0)
                videos[n].append(frames.float())
        ref = statistics.median(times["fp32"])
        for n in cascades:
            diff = torch.cat([(v - w).abs().flatten() for v, w in zip(videos[n], videos["fp32"], strict=True)])
            mse = float((diff**2).mean())
            rows.append(
                {
                    "path": path,
                    "precision": n,
                    "seconds_per_video": round(statistics.median(times[n]), 3),
                    "min": round(min(times[n]), 3),
                    "max": round(max(times[n]), 3),
                    "vs_fp32": round(statistics.median(times[n]) / ref, 3),
                    "mean_abs_diff_vs_fp32": round(float(diff.mean()), 5),
                    "max_abs_diff_vs_fp32": round(float(diff.max()), 4),
                    "psnr_vs_fp32_db": None if mse == 0 else round(10 * math.log10(1.0 / mse), 2),
                }
            )
            print(rows[-1], flush=True)
    info = {
        "device": str(device),
        "threads": a.threads,
        "rounds": a.rounds,
        "cpu": platform.processor() or platform.machine(),
        "cpu_flags": cpu_flags(),
        "torch": torch.__version__,
        "prompt": PROMPT,
        "rows": rows,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(info, indent=1))
    lines = [
        "# Seconds per video by weight precision",
        "",
        f"`python benchmarks/generate_precision.py {' '.join(sys.argv[1:])}`; "
        f"torch {torch.__version__}, {a.threads} threads, CPU flags: {info['cpu_flags']}. Medians of {a.rounds} "
        "interleaved rounds (min - max); the difference is to the fp32 video of the same seed, pixels in [0, 1].",
        "",
        "| path | precision | s per video | vs fp32 | mean / max abs. difference | PSNR vs fp32 |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        psnr = "identical" if r["psnr_vs_fp32_db"] is None else f"{r['psnr_vs_fp32_db']:.1f} dB"
        lines.append(
            f"| {r['path']} | {r['precision']} | {r['seconds_per_video']:.2f} ({r['min']:.2f} - {r['max']:.2f}) | "
            f"{r['vs_fp32']:.2f}x | {r['mean_abs_diff_vs_fp32']:.4f} / {r['max_abs_diff_vs_fp32']:.3f} | {psnr} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
