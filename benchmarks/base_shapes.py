"""Which shapes does the base draw right, per way of sampling it? (the measurement behind the story's continuity miss)

    python benchmarks/base_shapes.py [--per-shape 32] [--prompt-seed 77] [--seed 500] [--variants default,student,...]

The default cascade's story misses are squares: the detector reads a square scene as a circle, already in the base's
32 px output. This benchmark generates each shape's prompts (seen combinations, canonical captions) with the base
alone, sampled several ways, and reads the shape of every video with the detector. The prompts and seeds are not the
evaluation's (its prompt seed is 1234), so a sampler chosen here is not chosen on the evaluation's videos.

Variants (``--variants``, comma-separated): ``default`` (the teacher as the cascade samples it: DDIM, 32 steps,
w = 0), ``ancestral`` (Imagen Video's ancestral sampler, gamma 0.3, 32 steps), ``stochastic`` (the distilled
sampler's DDIM-then-renoise steps, 32 steps), ``stochastic16``, ``student`` (the 8-step student as the fast path
samples it). ``--candidate FILE`` adds ``candidate``: another base stage file (a fine-tune, say), sampled like
``default``, on the same prompts and seeds. Writes benchmarks/results/base_shapes.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cascade.data.detector import detect  # noqa: E402
from cascade.data.shapes import SHAPES  # noqa: E402
from cascade.evaluate import EvalConfig, _Evaluator, _prompts  # noqa: E402
from cascade.frames import video_to_frames  # noqa: E402
from cascade.run import DEFAULT_OPTIONS, FAST_FILES, FAST_OPTIONS  # noqa: E402
from cascade.samplers import Sampler  # noqa: E402
from cascade.stage import load_stage  # noqa: E402

_D = DEFAULT_OPTIONS["base"]
VARIANTS = {
    "default": ("base", _D, "teacher, DDIM, 32 steps (the default cascade)"),
    "ancestral": ("base", replace(_D, sampler=Sampler("ancestral", {"gamma": 0.3})), "teacher, ancestral gamma 0.3, 32 steps"),
    "stochastic": (
        "base",
        replace(_D, sampler=Sampler("distilled_stochastic")),
        "teacher, stochastic (distilled sampler), 32 steps",
    ),
    "stochastic16": (
        "base",
        replace(_D, steps=16, sampler=Sampler("distilled_stochastic")),
        "teacher, stochastic (distilled sampler), 16 steps",
    ),
    "student": (FAST_FILES["base"], FAST_OPTIONS["base"], "8-step student, distilled sampler (the fast path)"),
}


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def measure(variants: list[str], per_shape: int, prompt_seed: int, seed: int, candidate: str | None = None) -> dict:
    ev = _Evaluator(EvalConfig(models=str(ROOT / "models" / "imagen_video"), parts=("base",)))
    table = dict(VARIANTS)
    if candidate:
        ev.stages["candidate"] = load_stage(candidate)
        table["candidate"] = ("candidate", _D, f"{Path(candidate).name}, DDIM, 32 steps (as the default cascade)")
    pool = _prompts("seen", 64 * per_shape, prompt_seed)
    attrs = [a for s in SHAPES for a in [b for b in pool if b.shape == s][:per_shape]]
    rows = []
    for name in variants:
        key, opts, label = table[name]
        t0 = time.time()
        videos = ev.base_videos(ev.stage(key), attrs, opts, seed)
        step = ev.frame_step(key)
        read = [detect(video_to_frames(v).numpy(), frame_step=step).as_tuple() for v in videos]
        row = {"variant": name, "label": label, "seconds": round(time.time() - t0, 1)}
        for s in SHAPES:
            read_as = Counter(str(r[1]) for r, a in zip(read, attrs, strict=True) if a.shape == s)
            row[s] = read_as[s] / sum(read_as.values())
            row[f"{s}_read_as"] = dict(read_as)
        row["all_four"] = sum(r == a.as_tuple() for r, a in zip(read, attrs, strict=True)) / len(attrs)
        rows.append(row)
        print(f"{label}: " + ", ".join(f"{s} {_pct(row[s])}" for s in SHAPES) + f", all four {_pct(row['all_four'])}", flush=True)
    return {"per_shape": per_shape, "prompt_seed": prompt_seed, "seed": seed, "rows": rows}


def write(res: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "base_shapes.json").write_text(json.dumps(res, indent=1))
    n = res["per_shape"]
    lines = [
        f"The base alone, {n} prompts per shape (seen combinations, prompt seed {res['prompt_seed']}, sampling seed "
        f"{res['seed']}), shape read by the detector on the base's own output.",
        "",
        "| base, sampled as | " + " | ".join(SHAPES) + " | all four | s |",
        "|---|" + "---|" * (len(SHAPES) + 2),
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['label']} | " + " | ".join(_pct(r[s]) for s in SHAPES) + f" | {_pct(r['all_four'])} | {r['seconds']} |"
        )
    (out / "base_shapes.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-shape", type=int, default=32)
    ap.add_argument("--prompt-seed", type=int, default=77)
    ap.add_argument("--seed", type=int, default=500)
    ap.add_argument("--variants", default="default,ancestral,stochastic,student")
    ap.add_argument("--candidate", help="another base stage file, measured as the variant 'candidate'")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()
    variants = [v for v in a.variants.split(",") if v]
    if a.candidate:
        if not Path(a.candidate).is_file():
            ap.error(f"--candidate {a.candidate}: no such file")
        if "candidate" not in variants:
            variants.append("candidate")
    unknown = [v for v in variants if v not in VARIANTS and not (v == "candidate" and a.candidate)]
    if unknown or not variants:
        ap.error(f"unknown variant(s) {unknown or '(none)'}; choose from {', '.join(VARIANTS)}")
    if a.per_shape < 1:
        ap.error("--per-shape must be at least 1")
    write(measure(variants, a.per_shape, a.prompt_seed, a.seed, a.candidate), Path(a.out))


if __name__ == "__main__":
    main()
